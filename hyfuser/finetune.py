"""Fine-tuning the backbones end to end (LoRA adapters or the top layers) with HyFusER on top, and saving the result as
the same kind of directory as a frozen-backbone run.

With frozen backbones (the paper's protocol) HyFusER trains on cached features. Here raw text and audio go through
trainable copies of the backbones on every step, then through the processor's own feature path: the same hidden
state, the same linear interpolation of the speech frames to `sequence_length`, and the same joint scaler, fitted once
on the frozen backbones' features of the training split and then held fixed. Held fixed because the scaler defines
HyFusER's inputs: refitting it as the backbones move would shift those inputs under the fusion model at every refit,
and the processor saved with the model must apply exactly what training applied, which one fixed scaler makes true.

At save time LoRA adapters are merged into the backbone weights, and the backbones are written in standard Hugging
Face layout inside the directory, so serving it needs neither `peft` nor anything of this module.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from backbones_hyfuser import _receptive_field_and_stride
from hyfuser.checkpoint import save_hyfuser
from modeling_hyfuser import HyFusEROutput
from processing_hyfuser import HyFusERProcessor

logger = logging.getLogger(__name__)

FINETUNE_MODES: tuple[str, ...] = ("none", "lora", "top_layers")
"""`--finetune` values: the paper's frozen backbones, low-rank adapters on their attention projections, or their top
layers trained outright."""

DEFAULT_LORA_TARGETS: tuple[str, ...] = ("query", "key", "value", "q_proj", "k_proj", "v_proj", "out_proj")
"""The attention projections of both backbone families: BERT/ELECTRA/RoBERTa name theirs `query`, `key`, `value`;
HuBERT, wav2vec2, WavLM and data2vec-audio `q_proj`, `k_proj`, `v_proj`, `out_proj`."""

TRAINING_ONLY_SETTINGS: dict[str, Any] = {"layerdrop": 0.0, "apply_spec_augment": False}
"""Backbone config values set while fine-tuning, where the backbone has them, and restored before saving. LayerDrop
skips random layers, whose parameters then get no gradient, which distributed training refuses; SpecAugment masks
frames with a learned vector, features neither the fixed scaler was fitted on nor serving ever sees."""


@dataclass
class FinetuneArguments:
    """Whether and how the backbones train with HyFusER (`hyfuser.finetune`)."""

    finetune: str = field(
        default="none",
        metadata={
            "help": "'none': the paper's frozen backbones (features cached once, HyFusER alone trains). 'lora': "
            "low-rank adapters on the attention projections of both backbones (needs `pip install .[finetune]`), "
            "merged into the backbone weights when the model is saved. 'top_layers': the top --finetune_layers "
            "layers of each backbone train, everything below them stays frozen. Both run the backbones on every "
            "step, from raw audio and text.",
            "choices": FINETUNE_MODES,
        },
    )
    finetune_layers: int = field(
        default=2,
        metadata={
            "help": "With --finetune top_layers: how many layers of each backbone train, counted down from the layer "
            "whose hidden state is the feature (--text_layer/--speech_layer; the last by default)."
        },
    )
    lora_rank: int = field(default=8, metadata={"help": "With --finetune lora: the adapters' rank r."})
    lora_alpha: float = field(
        default=16,
        metadata={"help": "With --finetune lora: the adapters' scaling numerator (each adds alpha / r * B A)."},
    )
    lora_dropout: float = field(
        default=0.05, metadata={"help": "With --finetune lora: dropout on the adapters' inputs while training."}
    )
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(DEFAULT_LORA_TARGETS),
        metadata={
            "help": "With --finetune lora: the names of the linear layers that get adapters, matched in both "
            "backbones (each name must occur in at least one). The default is every attention projection: "
            "query/key/value in the text backbone, q_proj/k_proj/v_proj/out_proj in the speech backbone."
        },
    )
    backbone_learning_rate: float = field(
        default=1e-5,
        metadata={
            "help": "Learning rate of the backbones' trainable parameters (adapters or top layers); HyFusER's own "
            "is --learning_rate. The default is an order below the paper's 1e-4."
        },
    )
    backbone_gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "Recompute the backbones' layer activations in the backward pass instead of keeping them."},
    )

    def __post_init__(self):
        if self.finetune not in FINETUNE_MODES:
            raise ValueError(f"finetune must be one of {FINETUNE_MODES}, got {self.finetune!r}")
        for name in ("finetune_layers", "lora_rank"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if self.lora_alpha <= 0 or self.backbone_learning_rate <= 0:
            raise ValueError(
                f"lora_alpha ({self.lora_alpha}) and backbone_learning_rate ({self.backbone_learning_rate}) must be "
                "positive"
            )
        if not self.lora_target_modules:
            raise ValueError("lora_target_modules names no module")


def import_peft():
    """The `peft` package, which only `--finetune lora` needs (an optional extra, not a core dependency)."""
    try:
        import peft
    except ImportError as error:
        raise ImportError(
            "--finetune lora needs the `peft` package: pip install '.[finetune]' (or pip install peft)"
        ) from error
    return peft


def encoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    """A backbone's stack of encoder layers: `encoder.layer` (BERT, ELECTRA, RoBERTa) or `encoder.layers` (HuBERT,
    wav2vec2, WavLM, data2vec-audio)."""
    encoder = getattr(model, "encoder", None)
    for name in ("layer", "layers"):
        if isinstance(getattr(encoder, name, None), nn.ModuleList):
            return getattr(encoder, name)
    raise ValueError(f"cannot fine-tune a {type(model).__name__}: it has no encoder.layer or encoder.layers stack")


def feeding_layers(model: PreTrainedModel, hidden_state: int) -> list[nn.Module]:
    """The encoder layers that compute hidden state `hidden_state` (0 the embeddings, -1 the last layer's): those
    below it. Layers above the feature never reach the loss, so they are never trained."""
    layers = encoder_layers(model)
    return list(layers)[: range(len(layers) + 1)[hidden_state]]


def check_supported(processor: HyFusERProcessor) -> None:
    """Refuse, with the reason, the processor settings end-to-end training does not cover yet."""
    if processor.feature_mode != "paper":
        raise ValueError(
            f"fine-tuning the backbones needs feature_mode='paper' (fixed-length features); this processor's is "
            f"{processor.feature_mode!r}"
        )
    if processor.layer_weighting:
        raise ValueError("fine-tuning the backbones needs one hidden state per backbone, not layer_weighting")
    if processor.speech_backbone_model.config.model_type == "whisper":
        raise ValueError("fine-tuning a Whisper speech backbone is not supported: use a wav2vec2-style one (HuBERT)")
    processor.scaler_statistics()  # fitted on the frozen backbones' training features before the backbones move


def prepare_backbones(processor: HyFusERProcessor, args: FinetuneArguments) -> tuple[nn.Module, nn.Module]:
    """Trainable copies of `processor`'s (text, speech) backbones, set up for `args.finetune`.

    The processor keeps its frozen backbones, the ones its scaler was fitted with. `lora` wraps each copy in a
    `peft` LoRA model with adapters on `args.lora_target_modules` of the layers that feed the feature; `top_layers`
    trains the top `args.finetune_layers` of those layers and freezes everything else (embeddings, the speech
    backbone's convolutional front end, the layers below). `TRAINING_ONLY_SETTINGS` apply while training.
    """
    if args.finetune not in ("lora", "top_layers"):
        raise ValueError(f"prepare_backbones fine-tunes with 'lora' or 'top_layers', not {args.finetune!r}")
    check_supported(processor)
    targets = {name: 0 for name in args.lora_target_modules}
    prepared = []
    for kind, frozen, feature_layer in (
        ("text", processor.text_backbone_model, processor.text_layer),
        ("speech", processor.speech_backbone_model, processor.speech_layer),
    ):
        model = copy.deepcopy(frozen)
        for key, value in TRAINING_ONLY_SETTINGS.items():
            if hasattr(model.config, key):
                setattr(model.config, key, value)
        model.requires_grad_(False)
        front_end = getattr(model, "feature_extractor", None)
        if hasattr(front_end, "_freeze_parameters"):
            # What the models' own freeze_feature_encoder calls: otherwise, in training mode, the front end marks its
            # output as requiring grad and every step keeps a graph through the frozen convolutions.
            front_end._freeze_parameters()
        layers = feeding_layers(model, feature_layer)
        if not layers:
            raise ValueError(f"the {kind} feature is the embedding output ({kind}_layer=0): no layer feeds it")
        if args.backbone_gradient_checkpointing:
            model.activation_checkpointing_enable({"use_reentrant": False})
        if args.finetune == "top_layers":
            if args.finetune_layers > len(layers):
                raise ValueError(
                    f"finetune_layers={args.finetune_layers}, but {len(layers)} layers of the {kind} backbone "
                    "feed its feature"
                )
            for layer in layers[-args.finetune_layers :]:
                layer.requires_grad_(True)
        else:
            model = _with_lora(model, layers, args, targets)
        prepared.append(model)
    if unmatched := [name for name, matches in targets.items() if args.finetune == "lora" and not matches]:
        raise ValueError(f"lora_target_modules {unmatched} name no linear layer of either backbone's encoder layers")
    return prepared[0], prepared[1]


def _with_lora(model: PreTrainedModel, layers: list[nn.Module], args: FinetuneArguments, targets: dict[str, int]):
    """`model` as a `peft` model with LoRA adapters on the linear layers of `layers` named in `targets` (whose
    counts of matches it increases)."""
    peft = import_peft()
    inside = {id(module) for layer in layers for module in layer.modules()}
    names = []
    for name, module in model.named_modules():
        short = name.rsplit(".", 1)[-1]
        if id(module) in inside and isinstance(module, nn.Linear) and short in targets:
            names.append(name)
            targets[short] += 1
    if not names:
        raise ValueError(
            f"no linear layer in the encoder layers of the {type(model).__name__} backbone is named in "
            f"lora_target_modules {sorted(targets)}: each backbone needs adapters on at least one"
        )
    config = peft.LoraConfig(
        r=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, target_modules=names
    )
    return peft.get_peft_model(model, config)


def trainable_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters() if parameter.requires_grad)


def hidden_state(model: nn.Module, layer: int, **inputs: torch.Tensor) -> torch.Tensor:
    """Hidden state `layer` of a backbone, as `HyFusERProcessor` selects it, with gradients."""
    output = model(**inputs, output_hidden_states=layer != -1)
    return output.last_hidden_state if layer == -1 else output.hidden_states[layer]


class EndToEndHyFusER(nn.Module):
    """HyFusER over trainable backbones: raw token ids and waveform values in, HyFusER's output out.

    The backbones come from `prepare_backbones`; the features they give are, for the same backbone weights, the
    processor's (`backbone_features` equals `processor.encode`), scaled with the processor's fixed scaler. Each
    utterance's waveform runs through the speech backbone alone, unpadded, as in the processor: HuBERT-base's group
    norm would make padded batches change the frames.
    """

    accepts_loss_kwargs = False
    """The loss is HyFusER's batch mean, as with cached features: the `Trainer` passes no `num_items_in_batch`."""

    def __init__(self, fusion_model: PreTrainedModel, processor: HyFusERProcessor, args: FinetuneArguments):
        super().__init__()
        processor.check_compatible(fusion_model.config)
        self.fusion_model = fusion_model
        self.text_backbone, self.speech_backbone = prepare_backbones(processor, args)
        self.processor = processor
        self.finetune_args = args
        for modality, (mean, std) in zip(("text", "speech"), processor.scaler_statistics()):
            # Not persistent: the scaler is the processor's, saved with it; checkpoints need not repeat it.
            self.register_buffer(f"{modality}_mean", torch.from_numpy(mean), persistent=False)
            self.register_buffer(f"{modality}_std", torch.from_numpy(std), persistent=False)
        logger.info(
            "Fine-tuning the backbones (%s): %s trainable text backbone and %s speech backbone parameters",
            args.finetune, f"{trainable_parameters(self.text_backbone):,}",
            f"{trainable_parameters(self.speech_backbone):,}",
        )  # fmt: skip

    def backbone_features(
        self,
        input_ids: torch.Tensor,
        text_attention_mask: torch.Tensor,
        input_values: torch.Tensor,
        speech_attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unscaled (text_features, speech_features), (batch, sequence_length, hidden), of an `EndToEndCollator`
        batch."""
        text_inputs = {"input_ids": input_ids, "attention_mask": text_attention_mask}
        if token_type_ids is not None:
            text_inputs["token_type_ids"] = token_type_ids
        text = hidden_state(self.text_backbone, self.processor.text_layer, **text_inputs)
        speech = [
            self.processor.interpolate_frames(self._speech_frames(values[None, :length]))
            for values, length in zip(input_values, speech_attention_mask.sum(-1).tolist())
        ]
        return text, torch.stack(speech)

    def _speech_frames(self, values: torch.Tensor) -> torch.Tensor:
        """(frames, hidden) of one utterance's (1, samples) waveform values."""
        return hidden_state(self.speech_backbone, self.processor.speech_layer, input_values=values)[0]

    def forward(self, labels: torch.Tensor | None = None, **inputs: torch.Tensor) -> HyFusEROutput:
        """HyFusER's output on an `EndToEndCollator` batch: its `labels` and the inputs of `backbone_features`."""
        text, speech = self.backbone_features(**inputs)
        text = (text.float() - self.text_mean) / self.text_std
        speech = (speech.float() - self.speech_mean) / self.speech_std
        return self.fusion_model(text, speech, labels=labels)

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, **kwargs) -> None:
        """The `Trainer`'s `--gradient_checkpointing`: HyFusER's own encoder layers (the backbones' are
        `FinetuneArguments.backbone_gradient_checkpointing`)."""
        self.fusion_model.activation_checkpointing_enable(activation_checkpointing_kwargs, **kwargs)


class EndToEndCollator:
    """Raw rows (`text`, `audio`: anything `load_audio` reads, `label`) -> an `EndToEndHyFusER` batch.

    Text is tokenized as `HyFusERProcessor.encode_text` does (`tokenize`: padded or truncated to `sequence_length`);
    each waveform becomes its `speech_input_values`, as in `speech_frames`, zero-padded to the batch's longest,
    with `speech_attention_mask` marking its samples. A clip too long for one pass of the speech backbone (the
    processor would window it) is refused, naming the row.
    """

    def __init__(self, processor: HyFusERProcessor):
        self.processor = processor
        self.receptive_field, self.stride = _receptive_field_and_stride(processor.speech_backbone_model.config)
        self.max_frames = max(1, round(processor.speech_window_seconds * processor.sampling_rate / self.stride))

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        processor = self.processor
        texts, speech = [], []
        for index, row in enumerate(rows):
            what = f"row {row['id']!r}" if "id" in row else f"row {index} of the batch"
            try:
                texts.append(processor.check_text(row["text"]))
                speech.append(processor.speech_input_values(processor.load_audio(row["audio"])))
            except ValueError as error:
                raise ValueError(f"{what}: {error}") from error
            if (frames := (len(speech[-1]) - self.receptive_field) // self.stride + 1) > self.max_frames:
                raise ValueError(
                    f"{what}: its audio gives {frames} speech frames, more than one pass of the speech backbone takes "
                    f"({self.max_frames}, speech_window_seconds={processor.speech_window_seconds}); fine-tuning runs "
                    "each clip in one pass: raise the processor's speech_window_seconds or leave the clip out"
                )
        batch = dict(processor.tokenize(texts))
        batch["text_attention_mask"] = batch.pop("attention_mask")
        lengths = [len(values) for values in speech]
        batch["input_values"] = torch.zeros(len(speech), max(lengths))
        batch["speech_attention_mask"] = torch.zeros(len(speech), max(lengths), dtype=torch.long)
        for row, (values, length) in enumerate(zip(speech, lengths)):
            batch["input_values"][row, :length] = torch.from_numpy(values)
            batch["speech_attention_mask"][row, :length] = 1
        if "label" in rows[0]:
            batch["labels"] = torch.tensor([row["label"] for row in rows], dtype=torch.long)
        return batch


def finetune_description(end_to_end: EndToEndHyFusER) -> dict[str, Any]:
    """What was fine-tuned and how, for the model card: the mode and its settings, the backbones' learning rate, and
    per backbone the layers that train (indices into its encoder stack), the adapted modules (LoRA) and the count of
    trainable parameters."""
    args = end_to_end.finetune_args
    description: dict[str, Any] = {
        "finetune": args.finetune,
        "backbone_learning_rate": args.backbone_learning_rate,
        "backbone_gradient_checkpointing": args.backbone_gradient_checkpointing,
    }
    if args.finetune == "lora":
        description.update(lora_rank=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout)
    else:
        description["finetune_layers"] = args.finetune_layers
    for kind in ("text", "speech"):
        model = getattr(end_to_end, f"{kind}_backbone")
        base = model.get_base_model() if args.finetune == "lora" else model
        trained = [
            index
            for index, layer in enumerate(encoder_layers(base))
            if any(parameter.requires_grad for parameter in layer.parameters())
        ]
        backbone = {"layers": trained, "trainable_parameters": trainable_parameters(model)}
        if args.finetune == "lora":
            backbone["modules"] = sorted(
                {name.rsplit(".", 1)[-1] for name in model.peft_config["default"].target_modules}
            )
        description[f"{kind}_backbone"] = backbone
    return description


def merged_backbone(backbone: nn.Module, frozen: PreTrainedModel) -> PreTrainedModel:
    """A standalone copy of a fine-tuned backbone: LoRA adapters merged into its weights, the config values
    `TRAINING_ONLY_SETTINGS` changed put back as `frozen` (the backbone it started from) has them."""
    model = copy.deepcopy(backbone)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    for key in TRAINING_ONLY_SETTINGS:
        if hasattr(model.config, key):
            setattr(model.config, key, getattr(frozen.config, key))
    return model.eval().requires_grad_(False)


def merge_and_save(end_to_end: EndToEndHyFusER, output_dir: str | os.PathLike) -> dict[str, Any]:
    """Write `end_to_end` as an ordinary HyFusER directory (`save_hyfuser`) whose `text_backbone/` and
    `speech_backbone/` are the fine-tuned backbones, adapters merged, in standard layout (no `peft` keys: `AutoModel`
    loads them, and `pipeline(trust_remote_code=True)` serves the directory, without `peft`), with its processor and
    the scaler training applied. The processor in memory keeps its frozen backbones. Returns `finetune_description`.
    """
    processor = end_to_end.processor
    text = merged_backbone(end_to_end.text_backbone, processor.text_backbone_model)
    speech = merged_backbone(end_to_end.speech_backbone, processor.speech_backbone_model)
    saved = copy.deepcopy(processor).use_backbones(text, speech)  # a deep copy leaves the backbones behind
    save_hyfuser(output_dir, end_to_end.fusion_model, saved, save_backbones=True)
    logger.info("Saved the fine-tuned backbones, merged, with HyFusER to %s", output_dir)
    return finetune_description(end_to_end)
