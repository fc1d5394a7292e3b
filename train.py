#!/usr/bin/env python
"""Train and evaluate HyFusER on pre-extracted KoELECTRA + HuBERT features with the Hugging Face `Trainer`.

The paper's protocol (Yi, Kwak, Shin, *Applied Sciences* 2025, Sections 4-5, Table 3) is the default: the frozen
backbones run once per utterance, the features are jointly standard-scaled with statistics of the training split, and
HyFusER trains with Adam at lr 1e-4, batch 32, for up to 30 epochs, evaluating every epoch, stopping early after 3
epochs without a better validation accuracy and restoring the best epoch. The output directory is self-contained:
weights, config, processor with its scaler, remote code, backbones (when local), model card, metrics and confusion
matrix; `pipeline(model=output_dir, trust_remote_code=True)` serves it.

    # offline demo: generated Korean corpus, tiny random backbones, about a minute on a 2-core CPU
    python train.py --dataset demo --output_dir demo_output

    # the paper: KEMDy19 + KEMDy20, one or several GPUs (each extracts its share of the features; the batch stays 32)
    accelerate launch train.py --dataset kemdy --kemdy19_dir KEMDy19 --kemdy20_dir KEMDy20_v1_1 \
        --output_dir outputs/hyfuser-kemdy

    # continue a killed run
    accelerate launch train.py ... --resume_from_checkpoint outputs/hyfuser-kemdy/checkpoint-780
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
from datasets import DatasetDict
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from transformers import HfArgumentParser, TrainingArguments, set_seed
from transformers.trainer_utils import PredictionOutput

from backbones_hyfuser import SPEECH_BACKBONE_SUBFOLDER, TEXT_BACKBONE_SUBFOLDER
from configuration_hyfuser import EMOTION_LABELS
from hyfuser.arguments import (
    BackboneArguments,
    CorpusArguments,
    batch_description,
    derive_train_batch_size,
    effective_batch_size,
    recipe_defaults,
    training_devices,
    use_global_batch,
)
from hyfuser.cache import FEATURE_DTYPE, cache_features, fit_scaler_on_cache, transcribe_corpus
from hyfuser.checkpoint import save_hyfuser
from hyfuser.corpora import KEMDY19_ROWS, SPLITS, PaperDatasetReport, build_paper_dataset
from hyfuser.demo import DEMO_DEFAULTS, DemoCorpus, demo_predictions_table, prepare_demo
from hyfuser.feed import STREAMING_WORKERS
from hyfuser.metrics import METRIC_TITLES, fused_logits, per_class_report, save_confusion_matrix
from hyfuser.training import PAPER_TRAINING_DEFAULTS, model_config, place_backbones, train_on_features
from modeling_hyfuser import (
    COMPOSED_MODELS,
    MODEL_DESCRIPTIONS,
    PROBE_MODELS,
    TRAINABLE_MODELS,
    HyFusERForEmotionRecognition,
)
from processing_hyfuser import HyFusERProcessor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Corpus:
    """One `--dataset` choice: everything the script does or says differently for it."""

    title: str
    """How the model card names the training data."""
    source: str
    """The model card's sentence on where the data comes from."""
    output_dir: str
    """Default `--output_dir`."""
    loader_arguments: Callable[[DataTrainingArguments, DemoCorpus | None], dict[str, Any]]
    """`build_paper_dataset` keyword arguments that select it."""
    label_policy: Callable[[DataTrainingArguments], str]
    """The model card's description of its labels."""
    parser_defaults: dict[str, Any] = field(default_factory=dict)
    """Defaults it changes on top of the paper's."""
    limitation: str = ""
    """An extra line for the model card's limitations."""


CORPORA: dict[str, Corpus] = {
    "kemdy": Corpus(
        title="KEMDy19 + KEMDy20",
        source="KEMDy19 + KEMDy20 (ETRI), merged",
        output_dir="outputs/hyfuser-kemdy",
        loader_arguments=lambda args, demo: {
            "kemdy19_dir": args.kemdy19_dir,
            "kemdy20_dir": args.kemdy20_dir,
            "kemdy19_rows": args.kemdy19_rows,
        },
        label_policy=lambda args: f"KEMDy 'Total Evaluation' emotion; rater ties (';') policy: `{args.multi_label}`; "
        f"KEMDy19 rows: `{args.kemdy19_rows}` ({KEMDY19_ROWS[args.kemdy19_rows]})",
    ),
    "aihub": Corpus(
        title="AI-Hub 263",
        source="AI-Hub 263, 감정 분류를 위한 대화 음성 데이터셋",
        output_dir="outputs/hyfuser-aihub",
        loader_arguments=lambda args, demo: {"aihub_dir": args.aihub_dir},
        label_policy=lambda args: f"AI-Hub 263 label source: `{args.label_source}`",
    ),
    "demo": Corpus(
        title="offline demo",
        source="generated Korean sentences and synthetic voices written in the KEMDy20 layout (`hyfuser/demo.py`)",
        output_dir="demo_output",
        loader_arguments=lambda args, demo: {"kemdy20_dir": demo.train_dir},
        label_policy=lambda args: "single generated label per item",
        parser_defaults=DEMO_DEFAULTS,
        limitation="**This is the offline demo**: random tiny backbones and synthetic data. It shows that the code "
        "works end to end and nothing about real emotion recognition.",
    ),
}
"""Every corpus `--dataset` can name."""


@dataclass
class ModelArguments(BackboneArguments):
    """Which model, its backbones and HyFusER architecture, and whether the backbones are saved with it."""

    model: str = field(
        default="hyfuser",
        metadata={
            "help": "The model to train on the cached features (the paper's Tables 5/6 rows): "
            + "; ".join(f"'{name}': {description}" for name, description in MODEL_DESCRIPTIONS.items())
            + f". {', '.join(COMPOSED_MODELS)} compose trained runs of their members, and reproduce.py fits the "
            "linear probes; neither is trained here.",
            "choices": (*TRAINABLE_MODELS, *COMPOSED_MODELS, *PROBE_MODELS),
        },
    )
    save_backbones: bool | None = field(
        default=None,
        metadata={
            "help": "Copy the frozen backbones into output_dir (true) or reference them by Hub id/path (false). "
            "Unset (None), they are copied when they are local directories, which will not exist where the model "
            "is loaded."
        },
    )

    def __post_init__(self):
        if self.model in COMPOSED_MODELS:
            composed = COMPOSED_MODELS[self.model]
            raise ValueError(
                f"--model {self.model} is not trained: it composes trained runs of --model {composed.members[0]} and "
                f"--model {composed.members[1]} with {composed.model_class.__name__}.from_members "
                "(the comparison runner, reproduce.py, does both)"
            )
        if self.model in PROBE_MODELS:
            raise ValueError(
                f"--model {self.model} is not trained by the Trainer: reproduce.py --models {self.model} fits it "
                "(hyfuser.probes.fit_linear_probe, full-batch L-BFGS on the pooled features)"
            )


@dataclass
class DataTrainingArguments(CorpusArguments):
    """Which corpus, which labels, which split, and where the feature cache lives."""

    split_by: str = field(
        default="random",
        metadata={
            "help": "'random': random 8:2 utterance split as the paper's, stratified by label (our choice; the paper "
            "gives only the ratio; speakers appear on both sides). "
            "'session': hold out whole KEMDy sessions (about a fifth of them), a speaker-independent validation set.",
            "choices": SPLITS,
        },
    )


def build_parser(dataset: str, recipe: dict[str, Any] | None = None) -> HfArgumentParser:
    """The command-line parser, whose defaults are the paper's values (or the demo's), then those of the `recipe`
    (`recipe_defaults`), wherever the user sets nothing.

    Setting them as parser defaults, rather than patching the parsed arguments, lets every explicit flag win and
    makes `--help` show the values that will really be used. Some depend on `--dataset` (the output directory, the
    demo's settings).
    """
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments))
    corpus = CORPORA[dataset]
    parser.set_defaults(**PAPER_TRAINING_DEFAULTS, output_dir=corpus.output_dir)
    use_global_batch(parser)
    # Used only when the features stream from the cache on disk (--features_on_device).
    parser.set_defaults(dataloader_num_workers=STREAMING_WORKERS)
    # Without a GPU, the processes of `accelerate launch --multi_gpu` or `torchrun` only join one gloo DDP run when
    # use_cpu is set; otherwise each of them trains alone on all the data.
    parser.set_defaults(use_cpu=not torch.accelerator.is_available())
    parser.set_defaults(**corpus.parser_defaults)
    parser.set_defaults(**(recipe or {}))
    # TrainingArguments' own help names its default ('loss'), which the paper's replaces.
    parser._option_string_actions["--metric_for_best_model"].help = (
        "Metric compared across evaluations to pick the checkpoint restored at the end and to stop early."
    )
    return parser


def parse_arguments(argv: list[str]) -> tuple[ModelArguments, DataTrainingArguments, TrainingArguments]:
    """Read `--dataset` first (the defaults depend on it), then parse everything and check that the chosen corpus
    has its directories."""
    dataset = HfArgumentParser(DataTrainingArguments, add_help=False).parse_known_args(argv)[0].dataset
    parser = build_parser(dataset, recipe_defaults(argv))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(argv)
    data_args.check_directories()
    derive_train_batch_size(model_args.global_train_batch_size, training_args)
    return model_args, data_args, training_args


def precision(training_args: TrainingArguments) -> str:
    """The training precision as the model card states it."""
    if training_args.bf16:
        return "bf16 mixed precision (autocast; float32 weights and optimizer)"
    if training_args.fp16:
        return "fp16 mixed precision (autocast; float32 weights and optimizer)"
    return "float32"


def setup_logging(training_args: TrainingArguments) -> None:
    """Our steps (this script and the feature cache) log at INFO on the main process; libraries follow --log_level /
    --log_level_replica."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    library_level = training_args.get_process_log_level()
    our_level = min(logging.INFO, library_level) if training_args.should_log else library_level
    for our_logger in (logger, logging.getLogger("hyfuser")):
        our_logger.setLevel(our_level)
    datasets.utils.logging.set_verbosity(library_level)
    transformers.utils.logging.set_verbosity(library_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


def load_corpora(data_args: DataTrainingArguments, demo: DemoCorpus | None) -> tuple[DatasetDict, PaperDatasetReport]:
    """The paper's train/validation DatasetDict (Section 5.1 preprocessing; logs the Table 4 counts) and its count
    and load report."""
    splits, report = build_paper_dataset(
        **CORPORA[data_args.dataset].loader_arguments(data_args, demo),
        seed=data_args.split_seed,
        split_by=data_args.split_by,
        multi_label=data_args.multi_label,
        label_source=data_args.label_source,
        return_report=True,
    )
    for load in report.loads:
        logger.info("Loaded:\n%s", load)
    logger.info("Paper preprocessing:\n%s", report)
    return splits, report


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _backbone_description(backbone: str, output_dir: Path, subfolder: str) -> str:
    """How the card names a backbone: a local path means nothing to readers elsewhere, so name the copy saved here."""
    if (output_dir / subfolder).is_dir():
        return f"`{subfolder}/` (saved with the model, from the local backbone `{Path(backbone).name}`)"
    return f"`{backbone}`"


def model_card_data(
    model_title: str, corpus: Corpus, data_args: DataTrainingArguments, metrics: dict[str, float]
) -> ModelCardData:
    """The card's YAML header: language, library, tags, and the validation metrics as Hub evaluation results."""
    return ModelCardData(
        model_name=f"{model_title} ({corpus.title})",
        language="ko",
        library_name="transformers",
        tags=["hyfuser", "emotion-recognition", "multimodal", "speech", "text", "custom_code"],
        metrics=["accuracy", "f1"],
        eval_results=[
            EvalResult(
                task_type="audio-classification",
                task_name="Multimodal (text + speech) emotion recognition",
                dataset_type=data_args.dataset,
                dataset_name=corpus.title,
                dataset_split=f"validation ({data_args.split_by} split, seed {data_args.split_seed})",
                metric_type=metric,
                metric_name=title,
                metric_value=round(metrics[f"eval_{metric}"], 4),
            )
            for metric, title in METRIC_TITLES.items()
            if f"eval_{metric}" in metrics
        ],
    )


def write_model_card(
    output_dir: Path,
    data_args: DataTrainingArguments,
    training_args: TrainingArguments,
    model: HyFusERForEmotionRecognition,
    data_report: PaperDatasetReport,
    prediction: PredictionOutput,
    class_report: dict,
) -> None:
    """README.md for the Hub: data, label policy, split, training setup, metrics, intended use and limitations."""
    corpus, config = CORPORA[data_args.dataset], model.config
    name = next(name for name, model_class in TRAINABLE_MODELS.items() if type(model).__name__ == model_class.__name__)
    title = "HyFusER" if name == "hyfuser" else name
    description = MODEL_DESCRIPTIONS[name]
    text_backbone = _backbone_description(config.text_backbone, output_dir, TEXT_BACKBONE_SUBFOLDER)
    speech_backbone = _backbone_description(config.speech_backbone, output_dir, SPEECH_BACKBONE_SUBFOLDER)
    header, rows = data_report.stage_table()
    metric_rows = [
        [title, f"{prediction.metrics[f'eval_{name}']:.4f}"]
        for name, title in METRIC_TITLES.items()
        if f"eval_{name}" in prediction.metrics
    ]
    per_class = class_report["per_class"]
    class_rows = [
        [name, *(f"{per_class[name][key]:.4f}" for key in ("precision", "recall", "f1-score")),
         int(per_class[name]["support"])]
        for name in EMOTION_LABELS
    ]  # fmt: skip
    split = (
        "random 8:2 utterance split as the paper's, stratified by label (our choice; speakers appear on both sides, "
        "so scores are optimistic for unseen speakers)"
        if data_args.split_by == "random"
        else "whole sessions held out (~20%): speaker-independent validation"
    )
    limitation = f"\n- {corpus.limitation}" if corpus.limitation else ""
    feature_lengths = (
        f"text keeps its real tokens (at most {config.sequence_length}) and speech the backbone's native frames, "
        "padded per batch and masked"
        if config.feature_mode == "native"
        else f"text padded/truncated to {config.sequence_length} tokens, speech frames linearly interpolated to "
        f"{config.sequence_length}"
    )
    scaling = (
        "Joint standard scaling (Eqs. 4-6)"
        if config.text_feature_size == config.speech_feature_size
        else "Standard scaling of each modality on its own (the backbones' widths differ)"
    )
    table_4 = (
        ", with each column of the paper's Table 4 beside the stage it counts (its \"collected\" column equals its "
        "\"final\" one for every class but neutral, so it counts rows after the duplicate and syllable filters, not "
        "as loaded)"
        if data_report.compares_to_table_4
        else ""
    )
    body = f"""
# {title} ({corpus.title})

{description}, from the HyFusER repository (Yi, Kwak, Shin, *Applied Sciences* 2025, 15, 1053). It recognises seven
emotions ({", ".join(EMOTION_LABELS)}) from Korean text and speech, on frozen {text_backbone} and {speech_backbone}
features. {model.num_parameters():,} trainable parameters.

```python
from transformers import pipeline

classifier = pipeline(model="path/to/this/directory", trust_remote_code=True)
classifier({{"text": "정말 너무 화가 나요", "audio": "utterance.wav"}}, top_k=3, return_modalities=True)
```

## Training data

Corpus: {corpus.source}. Preprocessing as the paper's Section 5.1: merge, drop duplicate texts and texts under two
Hangul syllables, downsample neutral to the largest other class. Rows per emotion left after each stage{table_4}:

{_markdown_table(header, rows)}

- Labels: {corpus.label_policy(data_args)}.
- Split: {split}; seed {data_args.split_seed}.
- Loader report (rows read, kept and skipped by reason): `dataset_report.json`.

## Training procedure

- Features: frozen backbones run once per utterance; {feature_lengths}; hidden size {config.hidden_size}; backbones
  run in {data_args.extraction_dtype}; cached as {FEATURE_DTYPE}.
- {scaling} fitted on the training split only; stored with the processor.
- Architecture (Table 3): {config.num_hidden_layers} layers, {config.num_attention_heads} attention head(s),
  feed-forward {config.intermediate_size}, ReLU, LayerNorm eps {config.layer_norm_eps}, dropout
  {config.hidden_dropout_prob}.
- Optimiser: Adam (`{training_args.optim.value}`, weight decay {training_args.weight_decay}), learning rate
  {training_args.learning_rate} ({training_args.lr_scheduler_type.value}), batch {effective_batch_size(training_args)}
  ({training_args.per_device_train_batch_size} per device x {training_devices(training_args)} device(s) x
  {training_args.gradient_accumulation_steps} accumulation step(s)), up to {training_args.num_train_epochs:g} epochs,
  early stopping on validation `{training_args.metric_for_best_model}`; best checkpoint restored; seed
  {training_args.seed}.
- Precision: {precision(training_args)}.

## Evaluation (validation split, best checkpoint)

{_markdown_table(["metric", "value"], metric_rows)}

{_markdown_table(["emotion", "precision", "recall", "F1", "support"], class_rows)}

![Confusion matrix](confusion_matrix.png)

All numbers: `all_results.json`, `eval_results.json`, `classification_report.json`.

## Intended use

Research on Korean multimodal emotion recognition, and a starting point for fine-tuning on similar data (short
utterances of acted or elicited dialogue, 16 kHz speech with its transcript).

## Limitations

- Trained on acted/elicited dialogue from a few dozen to a few hundred speakers; spontaneous speech, other dialects,
  other languages, noisy channels and long recordings are out of distribution.
- Seven categorical emotions only; mixed or ambiguous emotions are forced into one class, and rare classes (disgust,
  fear) are recognised least reliably.
- With the random split, validation speakers also occur in training, so scores overestimate unseen-speaker accuracy.
- Needs both modalities: a transcript (from a person or an ASR system, whose errors degrade the text side) and audio.
- Not for decisions about people (hiring, policing, health, surveillance): emotion labels are annotators' perceptions,
  not ground truth about anyone's state.{limitation}
"""
    card_data = model_card_data(title, corpus, data_args, prediction.metrics)
    ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}").save(output_dir / "README.md")


def publish(output_dir: Path, repo_id: str, training_args: TrainingArguments) -> None:
    """Upload the finished directory, without the training checkpoints, to `repo_id` with the Trainer's hub token and
    revision (Trainer.push_to_hub would re-save the model and processor over it and replace the model card)."""
    HfApi(token=training_args.hub_token).upload_folder(
        repo_id=repo_id,
        folder_path=output_dir,
        commit_message="End of training",
        revision=training_args.hub_revision,
        ignore_patterns=["_*", "checkpoint-*"],
    )


def main() -> None:
    # 1. Arguments and logging
    model_args, data_args, training_args = parse_arguments(sys.argv[1:])
    setup_logging(training_args)
    logger.info("Training/evaluation parameters %s", training_args)
    logger.info("Effective train batch %s", batch_description(model_args.global_train_batch_size, training_args))

    # 2. Data: the corpora through the paper's preprocessing (the demo first writes its corpus and backbones)
    with training_args.main_process_first(desc="dataset preparation"):
        demo = None
        if data_args.dataset == "demo":
            demo = prepare_demo(Path(data_args.cache_dir) / "demo", cue=data_args.demo_cue)
        raw_datasets, data_report = load_corpora(data_args, demo)

    if demo:
        # The demo's tensors are tiny, so intra-op threads buy nothing, while on a busy CPU their synchronisation can
        # make every step far slower (3 epochs: 3 s with one thread, 175 s with two, next to two busy processes).
        torch.set_num_threads(1)

    # 3. Processor: tokenizer + feature extractor of the two frozen backbones, which run on this process's device
    text_backbone = model_args.text_backbone or demo.backbones.text
    speech_backbone = model_args.speech_backbone or demo.backbones.speech
    processor = HyFusERProcessor.from_backbones(
        text_backbone,
        speech_backbone,
        sequence_length=model_args.sequence_length,
        asr_model=data_args.asr_model,
        **model_args.feature_options(),
    )
    place_backbones(processor, training_args.device, data_args.extraction_dtype)
    if data_args.transcripts == "asr":
        with training_args.main_process_first(desc="transcription"):
            raw_datasets = transcribe_corpus(
                raw_datasets, processor, data_args.cache_dir, batch_size=data_args.extraction_batch_size
            )

    # 4. Features: backbones run once per utterance, into the on-disk cache (each process extracts its share)
    features = cache_features(
        raw_datasets,
        processor,
        data_args.cache_dir,
        batch_size=data_args.extraction_batch_size,
        rebuild=data_args.rebuild_cache,
    )

    # 5. Joint scaler on the training split only
    fit_scaler_on_cache(processor, features["train"])

    # 6. Model, seeded right before it is built, so that its initial weights depend on the seed alone, whatever ran
    # before (loading, extracting and saving leave the global generators as they were anyway)
    set_seed(training_args.seed)
    config = model_config(
        processor, text_backbone, speech_backbone, model_args.config_overrides, model_args.initializer
    )
    model = TRAINABLE_MODELS[model_args.model](config)

    # 7. Train, then evaluate the restored best model: fused and per-head metrics
    trainer, prediction = train_on_features(
        model,
        training_args,
        processor,
        features["train"],
        features["validation"],
        early_stopping_patience=model_args.early_stopping_patience,
        resume_from_checkpoint=training_args.resume_from_checkpoint,
        features_on_device=data_args.features_on_device,
        features_memory_share=data_args.features_memory_share,
    )

    if not trainer.is_world_process_zero():
        return

    # 8. Save a self-contained directory, plus model card, per-class report and confusion matrix
    output_dir = Path(training_args.output_dir)
    save_hyfuser(output_dir, trainer.model, processor, save_backbones=model_args.save_backbones)
    names = list(EMOTION_LABELS)
    class_report = per_class_report(prediction.label_ids, fused_logits(prediction.predictions).argmax(-1), names)
    (output_dir / "classification_report.json").write_text(json.dumps(class_report, indent=2))
    (output_dir / "dataset_report.json").write_text(json.dumps(data_report.to_dict(), indent=2, ensure_ascii=False))
    save_confusion_matrix(class_report["confusion_matrix"]["matrix"], names, output_dir / "confusion_matrix.png")
    write_model_card(output_dir, data_args, training_args, trainer.model, data_report, prediction, class_report)
    logger.info("Saved the model, processor, code, model card and reports to %s", output_dir)

    # 9. Publish the final directory
    if training_args.push_to_hub:
        publish(output_dir, trainer.hub_model_id, training_args)

    # 10. Demo: serve the saved directory on held-out items
    if demo:
        print(demo_predictions_table(output_dir, demo))


if __name__ == "__main__":
    main()
