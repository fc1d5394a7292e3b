"""The model card that `train.py` writes next to a trained model (README.md for the Hub: data, label policy, split,
training setup, metrics, intended use and limitations) and its upload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from transformers import TrainingArguments
from transformers.trainer_utils import PredictionOutput

from backbones_hyfuser import SPEECH_BACKBONE_SUBFOLDER, TEXT_BACKBONE_SUBFOLDER
from configuration_hyfuser import EMOTION_LABELS
from hyfuser.arguments import CORPORA, Corpus, CorpusArguments, effective_batch_size, training_devices
from hyfuser.cache import FEATURE_DTYPE
from hyfuser.metrics import METRIC_TITLES
from hyfuser.splits import PaperDatasetReport
from hyfuser.tables import markdown_table
from modeling_hyfuser import MODEL_DESCRIPTIONS, TRAINABLE_MODELS, HyFusERForEmotionRecognition

CALIBRATION_TITLES = {
    "ece": "ECE (15 equal-width confidence bins)",
    "nll": "Negative log-likelihood (mean)",
    "brier": "Brier score (mean over rows)",
}
"""How the card titles the calibration metrics."""


def _training_precision(training_args: TrainingArguments) -> str:
    """The training precision as the model card states it."""
    if training_args.bf16:
        return "bf16 mixed precision (autocast; float32 weights and optimizer)"
    if training_args.fp16:
        return "fp16 mixed precision (autocast; float32 weights and optimizer)"
    return "float32"


def _backbone_description(backbone: str, output_dir: Path, subfolder: str) -> str:
    """How the card names a backbone: a local path means nothing to readers elsewhere, so name the copy saved here."""
    if (output_dir / subfolder).is_dir():
        return f"`{subfolder}/` (saved with the model, from the local backbone `{Path(backbone).name}`)"
    return f"`{backbone}`"


def model_card_data(
    model_title: str, corpus: Corpus, data_args: CorpusArguments, metrics: dict[str, float]
) -> ModelCardData:
    """The card's YAML header: language, library, tags, and the validation metrics as Hub evaluation results.
    `data_args` are train.py's: the corpus arguments and its `--split_by`."""
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
    data_args: CorpusArguments,
    training_args: TrainingArguments,
    model: HyFusERForEmotionRecognition,
    data_report: PaperDatasetReport,
    prediction: PredictionOutput,
    class_report: dict,
    calibration: dict | None = None,
    finetuned: dict[str, Any] | None = None,
) -> None:
    """README.md for the Hub: data, label policy, split, training setup, metrics, calibration, intended use and
    limitations. `data_args` are train.py's: the corpus arguments, its `--split_by` and `--calibration_fraction`;
    `calibration` is `hyfuser.calibration.calibrate_config`'s record (None: not calibrated); `finetuned` is
    `hyfuser.finetune.merge_and_save`'s description when the backbones trained with the model."""
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
    features = (
        f"Features: frozen backbones run once per utterance; {feature_lengths}; hidden size {config.hidden_size}; "
        f"backbones\n  run in {data_args.extraction_dtype}; cached as {FEATURE_DTYPE}."
        if finetuned is None
        else _finetuned_features(finetuned, feature_lengths, config.hidden_size, training_args.learning_rate)
    )
    backbones = f"{'frozen' if finetuned is None else 'fine-tuned'} {text_backbone} and {speech_backbone}"
    body = f"""
# {title} ({corpus.title})

{description}, from the HyFusER repository (Yi, Kwak, Shin, *Applied Sciences* 2025, 15, 1053). It recognises seven
emotions ({", ".join(EMOTION_LABELS)}) from Korean text and speech, on {backbones}
features. {model.num_parameters():,} trainable parameters.

```python
from transformers import pipeline

classifier = pipeline(model="path/to/this/directory", trust_remote_code=True)
classifier({{"text": "정말 너무 화가 나요", "audio": "utterance.wav"}}, top_k=3, return_modalities=True)
```

## Training data

Corpus: {corpus.source}. Preprocessing as the paper's Section 5.1: merge, drop duplicate texts and texts under two
Hangul syllables, downsample neutral to the largest other class. Rows per emotion left after each stage{table_4}:

{markdown_table(header, rows)}

- Labels: {corpus.label_policy(data_args)}.
- Split: {split}; seed {data_args.split_seed}.
- Loader report (rows read, kept and skipped by reason): `dataset_report.json`.

## Training procedure

- {features}
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
- Precision: {_training_precision(training_args)}.

## Evaluation (validation split, best checkpoint)

{markdown_table(["metric", "value"], metric_rows)}

{markdown_table(["emotion", "precision", "recall", "F1", "support"], class_rows)}

![Confusion matrix](confusion_matrix.png)

All numbers: `all_results.json`, `eval_results.json`, `classification_report.json`.

{calibration_section(calibration, data_args)}

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


def calibration_section(calibration: dict | None, data_args: CorpusArguments) -> str:
    """The card's calibration section: the temperature, the rows it was fitted on, and ECE/NLL/Brier before and
    after on the validation rows; or that the model is not calibrated."""
    if calibration is None:
        reason = (
            "`--calibration_fraction 0`"
            if not data_args.calibration_fraction
            else f"`--calibration_fraction {data_args.calibration_fraction:g}` held out no model-selection rows of "
            "two classes from this training split"
        )
        return (
            f"## Calibration\n\nNot calibrated ({reason}): `calibration_temperature` is 1, so the pipeline's scores "
            "are the model's raw probabilities."
        )
    rows = [
        [title, f"{calibration['before'][name]:.4f}", f"{calibration['after'][name]:.4f}"]
        for name, title in CALIBRATION_TITLES.items()
    ]
    return f"""## Calibration

Temperature scaling: `calibration_temperature` = {calibration['temperature']:.4f} (config.json), fitted by negative
log-likelihood on {calibration['calibration_rows']} model-selection rows held out of the training split
(`--calibration_fraction {data_args.calibration_fraction:g}`, never the validation rows, which chose the epoch). The
pipeline's `score` is softmax(logits / T), which keeps every prediction; `calibrated=False` gives the raw
probabilities. On the validation rows, lower is better:

{markdown_table(["metric", "before", "after"], rows)}

![Reliability diagram](reliability_diagram.png)"""


def _finetuned_features(
    finetuned: dict[str, Any], feature_lengths: str, hidden_size: int, learning_rate: float
) -> str:
    """The card's features bullet for backbones fine-tuned end to end: what trained, how, and both learning rates."""
    if finetuned["finetune"] == "lora":
        how = (
            f"LoRA adapters (rank {finetuned['lora_rank']}, alpha {finetuned['lora_alpha']:g}, dropout "
            f"{finetuned['lora_dropout']:g}) on {{modules}} of layers {{layers}}, merged into the saved weights"
        )
    else:
        how = "the top layers {layers} trained outright, everything else frozen"
    backbones = "; ".join(
        f"{kind} backbone: "
        + how.format(layers=finetuned[f"{kind}_backbone"]["layers"],
                     modules=", ".join(finetuned[f"{kind}_backbone"].get("modules", [])))
        + f" ({finetuned[f'{kind}_backbone']['trainable_parameters']:,} trainable parameters)"
        for kind in ("text", "speech")
    )  # fmt: skip
    return (
        f"Backbones fine-tuned end to end with the model (`--finetune {finetuned['finetune']}`) from raw text and "
        f"audio on every step; {backbones}. Backbone learning rate {finetuned['backbone_learning_rate']:g}, the "
        f"model's {learning_rate:g}; gradient checkpointing of the backbones "
        f"{'on' if finetuned['backbone_gradient_checkpointing'] else 'off'}. {feature_lengths}; hidden size "
        f"{hidden_size}. The scaler was fitted once on the frozen backbones' training features and held fixed."
    )


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
