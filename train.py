#!/usr/bin/env python
"""Train and evaluate HyFusER on pre-extracted KoELECTRA + HuBERT features with the Hugging Face `Trainer`.

The paper's protocol (Yi, Kwak, Shin, *Applied Sciences* 2025, Sections 4-5, Table 3) is the default: the frozen
encoders run once per utterance, the features are jointly standard-scaled with statistics of the training split, and
HyFusER trains with Adam at lr 1e-4, batch 32, for up to 30 epochs, evaluating every epoch, stopping early after 3
epochs without a better validation accuracy and restoring the best epoch. The output directory is self-contained:
weights, config, processor with its scaler, remote code, encoders (when local), model card, metrics and confusion
matrix; `pipeline(model=output_dir, trust_remote_code=True)` serves it.

    # offline demo: generated Korean corpus, tiny random backbones, about a minute on a 2-core CPU
    python train.py --dataset demo --output_dir demo_output

    # the paper: KEMDy19 + KEMDy20, one or several GPUs
    accelerate launch train.py --dataset kemdy --kemdy19_dir KEMDy19 --kemdy20_dir KEMDy20_v1_1 \
        --output_dir outputs/hyfuser-kemdy

    # continue a killed run
    accelerate launch train.py ... --resume_from_checkpoint outputs/hyfuser-kemdy/checkpoint-780
"""

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import transformers
from datasets import Array2D, Dataset, DatasetDict
from datasets.fingerprint import Hasher
from huggingface_hub import HfApi, try_to_load_from_cache
from huggingface_hub.constants import HF_HOME
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)
from transformers import (
    EarlyStoppingCallback,
    EvalPrediction,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
    pipeline,
    set_seed,
)

import processing_hyfuser
from configuration_hyfuser import DEFAULT_SPEECH_BACKBONE, DEFAULT_TEXT_BACKBONE, EMOTION_LABELS, HyFusERConfig
from data_hyfuser import LABEL_SOURCES, MULTI_LABEL_POLICIES, SPLITS, build_paper_dataset, load_kemdy20
from demo_hyfuser import DEMO_CUES, DEMO_SEQUENCE_LENGTH, DemoCorpus, prepare_demo
from modeling_hyfuser import HyFusERForEmotionRecognition
from pipeline_hyfuser import save_hyfuser
from processing_hyfuser import HyFusERProcessor

logger = logging.getLogger(__name__)

DATASETS = ("demo", "kemdy", "aihub")

FEATURE_COLUMNS = ("text_features", "speech_features")

FEATURE_DTYPE = "float16"
"""Dtype of the on-disk feature cache: half the size of float32, and the scaler's inputs need no more precision."""

PAPER_TRAINING_DEFAULTS: dict[str, Any] = {
    # Table 3: Adam at a fixed learning rate. AdamW with zero weight decay is exactly Adam (TrainingArguments has no
    # plain "adam"), eps 1e-7 is Keras's default (Table 3 uses Keras's names), and "constant" keeps the rate fixed.
    # The fused kernel is the same update in one step instead of ~900 small ops (benchmarks/README.md).
    "optim": "adamw_torch_fused",
    "weight_decay": 0.0,
    "adam_epsilon": 1e-7,
    # Keras's Adam does not clip gradients; the Trainer's default would clip to norm 1.0.
    "max_grad_norm": 0.0,
    "learning_rate": 1e-4,
    "lr_scheduler_type": "constant",
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 32,
    "num_train_epochs": 30,
    # Table 3: early stopping and model checkpointing both monitor validation accuracy, checked every epoch.
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "logging_strategy": "epoch",
    "load_best_model_at_end": True,
    "metric_for_best_model": "accuracy",
    "greater_is_better": True,
    "save_total_limit": 2,
    # Every HyFusER parameter takes part in every forward pass.
    "ddp_find_unused_parameters": False,
}
"""TrainingArguments defaults replaced by the paper's; anything given on the command line still wins."""

DEMO_DEFAULTS: dict[str, Any] = {
    "text_backbone": None,
    "speech_backbone": None,
    "learning_rate": 1e-3,
    "sequence_length": DEMO_SEQUENCE_LENGTH,
    "config_overrides": "intermediate_size=64",
}
"""What --dataset demo changes on top of the paper's defaults: the tiny random backbones it writes (None until they
exist under --cache_dir), and, for a model over them and a ~700-item corpus to learn within a minute on a CPU, a 10x
learning rate and a narrower feed-forward (at lr 1e-4 it barely moves in 30 epochs)."""

METRIC_TITLES = {
    "accuracy": "Accuracy (fused, Eq. 9)",
    "precision_weighted": "Precision (weighted)",
    "recall_weighted": "Recall (weighted)",
    "f1_weighted": "F1 (weighted)",
    "f1_macro": "F1 (macro)",
    "text_head_accuracy": "Accuracy, text-centric head alone (Step 1)",
    "speech_head_accuracy": "Accuracy, speech-centric head alone (Step 2)",
}
"""What `compute_metrics` reports, as the model card titles it (Table 5's four metrics first)."""

DEFAULT_OUTPUT_DIRS = {"demo": "demo_output", "kemdy": "outputs/hyfuser-kemdy", "aihub": "outputs/hyfuser-aihub"}


@dataclass
class ModelArguments:
    """Backbones and HyFusER architecture."""

    text_backbone: str | None = field(
        default=DEFAULT_TEXT_BACKBONE,
        metadata={
            "help": "Frozen text encoder: a Hub id or a local directory in standard HF layout (tokenizer + ELECTRA-"
            "like model). The default is the paper's (Section 3.1); --dataset demo's default, None, stands for the "
            "tiny random ELECTRA it writes under --cache_dir."
        },
    )
    speech_backbone: str | None = field(
        default=DEFAULT_SPEECH_BACKBONE,
        metadata={
            "help": "Frozen speech encoder: a Hub id or a local directory in standard HF layout (feature extractor "
            "+ HuBERT-like model). The default is the paper's (Section 3.2); --dataset demo's default, None, stands "
            "for the tiny random HuBERT it writes under --cache_dir. Its hidden size must equal the text backbone's."
        },
    )
    sequence_length: int = field(
        default=HyFusERConfig().sequence_length,
        metadata={
            "help": "Positions per modality: text is padded/truncated to this many tokens and HuBERT frames are "
            "interpolated to it (Section 4.2). The default is Table 3's."
        },
    )
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "Override HyFusERConfig defaults (Table 3), as comma-separated key=value pairs, e.g. "
            "'num_hidden_layers=2,hidden_dropout_prob=0.2,use_modality_losses=true'. hidden_size always comes from "
            "the backbones and sequence_length from --sequence_length."
        },
    )
    early_stopping_patience: int = field(
        default=3,
        metadata={
            "help": "Stop after this many evaluations without a better --metric_for_best_model (Table 3: 3 epochs "
            "on validation accuracy). 0 disables early stopping."
        },
    )
    save_encoders: bool | None = field(
        default=None,
        metadata={
            "help": "Copy the frozen encoders into output_dir (true) or reference them by Hub id/path (false). "
            "Unset (None), they are copied when they are local directories, which will not exist where the model "
            "is loaded."
        },
    )


@dataclass
class DataTrainingArguments:
    """Which corpora, which labels, which split, and where the feature cache lives."""

    dataset: str = field(
        default="kemdy",
        metadata={
            "help": "'kemdy': KEMDy19 + KEMDy20 merged (the paper's Table 4/5 data; give --kemdy19_dir and/or "
            "--kemdy20_dir). 'aihub': AI-Hub 263 (Table 6; give --aihub_dir). 'demo': a small generated Korean "
            "corpus in the KEMDy20 layout with tiny random backbones, offline, followed by pipeline predictions on "
            "held-out demo items; it also changes the defaults of "
            + ", ".join(f"--{name}" for name in DEMO_DEFAULTS)
            + " (`--dataset demo --help` shows them).",
            "choices": DATASETS,
        },
    )
    kemdy19_dir: str | None = field(
        default=None,
        metadata={"help": "Root of KEMDy19 (holds annotation/Session01_F_res.csv ... and wav/Session01/...)."},
    )
    kemdy20_dir: str | None = field(
        default=None,
        metadata={"help": "Root of KEMDy20 v1.1 (holds annotation/Sess01_eval.csv ... and wav/Session01/...)."},
    )
    aihub_dir: str | None = field(
        default=None,
        metadata={"help": "Root of AI-Hub 263 (holds 4차년도.csv, 5차년도.csv, 5차년도_2차.csv and their wav folders)."},
    )
    split_by: str = field(
        default="random",
        metadata={
            "help": "'random': stratified 8:2 utterance split, as the paper (speakers appear on both sides). "
            "'session': hold out whole KEMDy sessions (about a fifth of them), a speaker-independent validation set.",
            "choices": SPLITS,
        },
    )
    split_seed: int = field(default=42, metadata={"help": "Seed of the neutral downsampling and the 8:2 split."})
    multi_label: str = field(
        default="drop",
        metadata={
            "help": "KEMDy rows whose raters tied (labels joined by ';'): 'drop' them or keep the 'first' label.",
            "choices": MULTI_LABEL_POLICIES,
        },
    )
    label_source: str = field(
        default="situation",
        metadata={
            "help": "AI-Hub 263 label: 'situation' (the scripted emotion, 상황) or 'majority' (>= 3 of 5 raters).",
            "choices": LABEL_SOURCES,
        },
    )
    cache_dir: str = field(
        default=os.path.join(HF_HOME, "hyfuser"),
        metadata={
            "help": "Where the feature cache (features/) and the generated demo corpus and backbones (demo/) live. "
            "Cached features are keyed by the backbones, the data and the processor settings, so a re-run, a "
            "resumed run or the other processes of a multi-process run reuse them."
        },
    )
    extraction_batch_size: int = field(
        default=16,
        metadata={"help": "Utterances per encoder call during feature extraction, and per write to the cache."},
    )


def build_parser(dataset: str) -> HfArgumentParser:
    """The command-line parser, whose defaults are the paper's values (or the demo's) wherever the user sets nothing.

    Setting them as parser defaults, rather than patching the parsed arguments, lets every explicit flag win and
    makes `--help` show the values that will really be used. Some depend on `--dataset` (the output directory, the
    demo's settings).
    """
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments))
    parser.set_defaults(**PAPER_TRAINING_DEFAULTS, output_dir=DEFAULT_OUTPUT_DIRS[dataset])
    # Without a GPU, the processes of `accelerate launch --multi_gpu` or `torchrun` only join one gloo DDP run when
    # use_cpu is set; otherwise each of them trains alone on all the data.
    parser.set_defaults(use_cpu=not torch.accelerator.is_available())
    if dataset == "demo":
        parser.set_defaults(**DEMO_DEFAULTS)
    # TrainingArguments' own help names its default ('loss'), which the paper's replaces.
    parser._option_string_actions["--metric_for_best_model"].help = (
        "Metric compared across evaluations to pick the checkpoint restored at the end and to stop early."
    )
    return parser


def parse_arguments(argv: list[str]) -> tuple[ModelArguments, DataTrainingArguments, TrainingArguments]:
    """Read `--dataset` first (the defaults depend on it), then parse everything and check that the chosen corpus
    has its directories."""
    dataset = HfArgumentParser(DataTrainingArguments, add_help=False).parse_known_args(argv)[0].dataset
    model_args, data_args, training_args = build_parser(dataset).parse_args_into_dataclasses(argv)
    if data_args.dataset == "kemdy" and not (data_args.kemdy19_dir or data_args.kemdy20_dir):
        raise ValueError("--dataset kemdy needs --kemdy19_dir and/or --kemdy20_dir")
    if data_args.dataset == "aihub" and not data_args.aihub_dir:
        raise ValueError("--dataset aihub needs --aihub_dir")
    return model_args, data_args, training_args


def setup_logging(training_args: TrainingArguments) -> None:
    """Our steps log at INFO on the main process; libraries follow --log_level / --log_level_replica."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    library_level = training_args.get_process_log_level()
    logger.setLevel(min(logging.INFO, library_level) if training_args.should_log else library_level)
    datasets.utils.logging.set_verbosity(library_level)
    transformers.utils.logging.set_verbosity(library_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


def load_corpora(data_args: DataTrainingArguments, demo: DemoCorpus | None) -> tuple[DatasetDict, dict]:
    """The paper's train/validation DatasetDict (Section 5.1 preprocessing; prints the Table 4 counts) and its
    JSON-ready count and load report."""
    corpora = {
        "demo": {"kemdy20_dir": demo.train_dir if demo else None},
        "kemdy": {"kemdy19_dir": data_args.kemdy19_dir, "kemdy20_dir": data_args.kemdy20_dir},
        "aihub": {"aihub_dir": data_args.aihub_dir},
    }[data_args.dataset]
    splits, report = build_paper_dataset(
        **corpora,
        seed=data_args.split_seed,
        split_by=data_args.split_by,
        multi_label=data_args.multi_label,
        label_source=data_args.label_source,
        return_report=True,
    )
    return splits, report.to_dict()


def _file_stamp(path: Path) -> tuple[int, int]:
    """Size and modification time: a file's identity for the cache key, without reading gigabytes of audio."""
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _backbone_key(name: str) -> Any:
    """A backbone's identity for the cache key: a local directory by its files' stamps; a Hub id by the cached
    snapshot it resolves to (the path holds the commit hash), so a new upstream revision re-extracts."""
    if os.path.isdir(name):
        return [(str(path), *_file_stamp(path)) for path in sorted(Path(name).rglob("*")) if path.is_file()]
    snapshot = try_to_load_from_cache(name, "config.json")
    return snapshot if isinstance(snapshot, str) else name


def feature_cache_key(split: Dataset, processor: HyFusERProcessor) -> str:
    """A fingerprint of everything the cached features depend on.

    That is the rows (ids, texts, labels, audio paths) and the audio files' stamps, both backbones, the processor's
    settings (sequence length, tokenizer, feature extractor, windowing) and the extraction code itself, so a change
    to any of them re-extracts instead of silently reusing stale features.
    """
    return Hasher.hash(
        {
            "rows": split.to_dict(),
            "audio": [_file_stamp(Path(path)) for path in split["audio"]],
            "text_backbone": _backbone_key(processor.text_encoder),
            "speech_backbone": _backbone_key(processor.speech_encoder),
            "processor": Hasher.hash(processor),
            "code": Path(processing_hyfuser.__file__).read_bytes(),
            "dtype": FEATURE_DTYPE,
        }
    )


def _extract_batch(batch: dict[str, list], processor: HyFusERProcessor) -> dict[str, np.ndarray]:
    """Unscaled features of one batch, in the cache's compact dtype."""
    features = processor.extract_features(batch["text"], batch["audio"])
    return {name: features[name].numpy().astype(FEATURE_DTYPE) for name in FEATURE_COLUMNS}


def extract_features(
    raw_datasets: DatasetDict, processor: HyFusERProcessor, data_args: DataTrainingArguments
) -> DatasetDict:
    """Run the frozen encoders once per utterance, streaming the features into an on-disk cache (or reusing it).

    Single process on purpose: `datasets.map(num_proc>1)` can hang after torch has run (hf-notes §2), and in a
    multi-process run the caller lets the main process extract first while the others wait and then read the cache.
    """
    cache_dir = Path(data_args.cache_dir) / "features"
    cache_dir.mkdir(parents=True, exist_ok=True)
    shape = (processor.sequence_length, processor.hidden_size)
    features = DatasetDict()
    for name, split in raw_datasets.items():
        key = feature_cache_key(split, processor)
        cache_file = cache_dir / f"{name}-{key}.arrow"
        if cache_file.exists():
            logger.info("Reusing cached %s features from %s (no extraction)", name, cache_file)
        else:
            logger.info("Extracting %s features for %d utterances into %s", name, len(split), cache_file)
        schema = split.features.copy()
        schema.update({column: Array2D(shape, FEATURE_DTYPE) for column in FEATURE_COLUMNS})
        features[name] = split.map(
            _extract_batch,
            fn_kwargs={"processor": processor},
            batched=True,
            batch_size=data_args.extraction_batch_size,
            writer_batch_size=data_args.extraction_batch_size,
            features=schema,
            cache_file_name=str(cache_file),
            new_fingerprint=key,
            desc=f"Extracting {name} features",
        )
    return features


def fit_scaler(processor: HyFusERProcessor, train_features: Dataset, batch_size: int = 256) -> None:
    """Fit the joint scaler (Eqs. 4-6) on the training split only, streaming over the cached features."""
    batches = train_features.with_format("numpy", columns=list(FEATURE_COLUMNS)).iter(batch_size=batch_size)
    processor.fit_scaler((batch["text_features"], batch["speech_features"]) for batch in batches)
    logger.info("Joint scaler fitted on %d training feature positions", processor.scaler_count)


def collate_scaled_features(examples: list[dict[str, torch.Tensor]], processor: HyFusERProcessor) -> dict:
    """Stack cached float16 features into a float32 batch scaled with the training split's joint scaler.

    Scaling per batch rather than in the cache keeps one cache valid whichever split the scaler was fitted on.
    """
    text_features, speech_features = processor.scale(
        torch.stack([example["text_features"] for example in examples]),
        torch.stack([example["speech_features"] for example in examples]),
    )
    labels = torch.stack([example["label"] for example in examples])
    return {"text_features": text_features, "speech_features": speech_features, "labels": labels}


def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """The paper's metrics on the fused prediction (Table 5: accuracy, weighted P/R/F1), plus macro-F1 and the
    accuracy of each direction's head alone, which shows what fusion adds.

    Predictions are (logits, text_logits, speech_logits): `logits` is the log of the averaged probabilities (Eq. 9).
    """
    fused, text_head, speech_head = (np.argmax(logits, axis=-1) for logits in prediction.predictions)
    labels = prediction.label_ids
    precision, recall, f1, _ = precision_recall_fscore_support(labels, fused, average="weighted", zero_division=0)
    metrics = {
        "accuracy": accuracy_score(labels, fused),
        "precision_weighted": precision,
        "recall_weighted": recall,
        "f1_weighted": f1,
        "f1_macro": f1_score(labels, fused, average="macro", zero_division=0),
        "text_head_accuracy": accuracy_score(labels, text_head),
        "speech_head_accuracy": accuracy_score(labels, speech_head),
    }
    return {name: float(value) for name, value in metrics.items()}


def per_class_report(labels: np.ndarray, predictions: np.ndarray, names: list[str]) -> dict:
    """Per-emotion precision/recall/F1/support and the confusion matrix (rows: truth, columns: prediction)."""
    ids = list(range(len(names)))
    return {
        "per_class": classification_report(
            labels, predictions, labels=ids, target_names=names, output_dict=True, zero_division=0
        ),
        "confusion_matrix": {"labels": names, "matrix": confusion_matrix(labels, predictions, labels=ids).tolist()},
    }


def save_confusion_matrix(matrix: list[list[int]], names: list[str], path: Path) -> None:
    """A heatmap like the paper's Fig. 7, rendered without a display (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 7))
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=names).plot(ax=axes, cmap="Blues", values_format="d")
    axes.set_title("Confusion Matrix Heatmap with Emotions")
    axes.set_xlabel("Predicted emotion")
    axes.set_ylabel("True emotion")
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)


def _markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _encoder_description(backbone: str, output_dir: Path, subfolder: str) -> str:
    """How the card names an encoder: a local path means nothing to readers elsewhere, so name the copy saved here."""
    if (output_dir / subfolder).is_dir():
        return f"`{subfolder}/` (saved with the model, from the local backbone `{Path(backbone).name}`)"
    return f"`{backbone}`"


def write_model_card(
    output_dir: Path,
    data_args: DataTrainingArguments,
    training_args: TrainingArguments,
    model: HyFusERForEmotionRecognition,
    data_report: dict,
    metrics: dict[str, float],
    report: dict,
    best_checkpoint: str | None,
) -> None:
    """README.md for the Hub: data, label policy, split, training setup, metrics, intended use and limitations."""
    config = model.config
    text_encoder = _encoder_description(config.text_backbone, output_dir, processing_hyfuser.TEXT_ENCODER_SUBFOLDER)
    speech_encoder = _encoder_description(
        config.speech_backbone, output_dir, processing_hyfuser.SPEECH_ENCODER_SUBFOLDER
    )
    corpora = {"demo": "offline demo", "kemdy": "KEMDy19 + KEMDy20", "aihub": "AI-Hub 263"}
    sources = {
        "demo": "generated Korean sentences and synthetic voices written in the KEMDy20 layout (`demo_hyfuser.py`)",
        "kemdy": "KEMDy19 + KEMDy20 (ETRI), merged",
        "aihub": "AI-Hub 263, 감정 분류를 위한 대화 음성 데이터셋",
    }
    stages = data_report["stages"]
    stage_names = list(stages)
    count_rows = [[label, *(stages[stage][label] for stage in stage_names)] for label in EMOTION_LABELS]
    count_rows.append(["**total**", *(sum(stages[stage].values()) for stage in stage_names)])
    metric_rows = [[title, f"{metrics[f'eval_{name}']:.4f}"] for name, title in METRIC_TITLES.items()]
    class_rows = [
        [name, *(f"{report['per_class'][name][key]:.4f}" for key in ("precision", "recall", "f1-score")),
         int(report["per_class"][name]["support"])]
        for name in EMOTION_LABELS
    ]  # fmt: skip
    label_policy = {
        "demo": "single generated label per item",
        "kemdy": f"KEMDy 'Total Evaluation' emotion; rater ties (';') policy: `{data_args.multi_label}`; "
        "KEMDy19 speaker labels only (rows whose Segment ID gender matches the annotation file)",
        "aihub": f"AI-Hub 263 label source: `{data_args.label_source}`",
    }[data_args.dataset]
    split = (
        "stratified random 8:2 utterance split (paper parity; speakers appear on both sides, so scores are optimistic "
        "for unseen speakers)"
        if data_args.split_by == "random"
        else "whole sessions held out (~20%): speaker-independent validation"
    )
    card = f"""---
language: ko
library_name: transformers
tags:
- hyfuser
- emotion-recognition
- multimodal
- speech
- text
- custom_code
metrics:
- accuracy
- f1
---

# HyFusER ({corpora[data_args.dataset]})

HyFusER (Yi, Kwak, Shin, *Applied Sciences* 2025, 15, 1053) recognises seven emotions ({", ".join(EMOTION_LABELS)})
from Korean text and speech: frozen {text_encoder} and {speech_encoder} features, one transformer
encoder per modality, dual cross-modal attention (text queries speech, speech queries text) and the average of the two
heads' probabilities. {model.num_parameters():,} trainable parameters.

```python
from transformers import pipeline

classifier = pipeline(model="path/to/this/directory", trust_remote_code=True)
classifier({{"text": "정말 너무 화가 나요", "audio": "utterance.wav"}}, top_k=3, return_modalities=True)
```

## Training data

Corpus: {sources[data_args.dataset]}. Preprocessing as the paper's Section 5.1: merge, drop duplicate texts and texts
under two Hangul syllables, downsample neutral to the largest other class. Rows per emotion after each stage
("collected" and "used" are the columns of the paper's Table 4):

{_markdown_table(["emotion", *stage_names], count_rows)}

- Labels: {label_policy}.
- Split: {split}; seed {data_args.split_seed}.
- Loader report (rows read, kept and skipped by reason): `dataset_report.json`.

## Training procedure

- Features: frozen encoders run once per utterance; text padded/truncated to {config.sequence_length} tokens, HuBERT
  frames linearly interpolated to {config.sequence_length}; hidden size {config.hidden_size}; cached as
  {FEATURE_DTYPE}.
- Joint standard scaling (Eqs. 4-6) fitted on the training split only; stored with the processor.
- Architecture (Table 3): {config.num_hidden_layers} layers, {config.num_attention_heads} attention head(s),
  feed-forward {config.intermediate_size}, ReLU, LayerNorm eps {config.layer_norm_eps}, dropout
  {config.hidden_dropout_prob}.
- Optimiser: Adam (`{training_args.optim.value}`, weight decay {training_args.weight_decay}), learning rate
  {training_args.learning_rate} ({training_args.lr_scheduler_type.value}), batch {training_args.per_device_train_batch_size}
  per device x {training_args.world_size} process(es), up to {training_args.num_train_epochs:g} epochs, early stopping
  on validation `{training_args.metric_for_best_model}`; best checkpoint restored (`{best_checkpoint}`); seed
  {training_args.seed}.

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
  not ground truth about anyone's state.
"""
    if data_args.dataset == "demo":
        card += (
            "- **This is the offline demo**: random tiny backbones and synthetic data. It shows that the code works "
            "end to end and nothing about real emotion recognition.\n"
        )
    (output_dir / "README.md").write_text(card, encoding="utf-8")


def run_demo_predictions(output_dir: Path, demo: DemoCorpus) -> None:
    """Serve the saved directory with `pipeline` on the held-out demo items and print predictions next to the truth,
    and the fused accuracy next to each direction's head alone."""
    holdout = load_kemdy20(demo.holdout_dir)
    cues = {utterance.segment_id: utterance.cue for utterance in demo.holdout}
    item_cues = [cues[segment_id] for segment_id in holdout["id"]]
    classifier = pipeline(model=str(output_dir), trust_remote_code=True)
    inputs = [{"text": text, "audio": audio} for text, audio in zip(holdout["text"], holdout["audio"])]
    outputs = classifier(inputs, batch_size=8, return_modalities=True)

    names = holdout.features["label"].names
    truth = [names[label] for label in holdout["label"]]
    fused = [emotions[0]["label"] for emotions in outputs]
    text_head = [max(emotions, key=lambda emotion: emotion["text_score"])["label"] for emotions in outputs]
    speech_head = [max(emotions, key=lambda emotion: emotion["speech_score"])["label"] for emotions in outputs]

    print(f"\nHeld-out demo items, predicted by pipeline(model={str(output_dir)!r}, trust_remote_code=True):")
    print(f"{'cue':<7} {'truth':<9} {'fused':<18} {'text head':<10} {'speech head':<11} text")
    for index, emotions in enumerate(outputs):
        mark = "ok" if fused[index] == truth[index] else "--"
        prediction = f"{fused[index]} ({emotions[0]['score']:.2f}) {mark}"
        print(
            f"{item_cues[index]:<7} {truth[index]:<9} {prediction:<18} {text_head[index]:<10} "
            f"{speech_head[index]:<11} {holdout['text'][index]}"
        )
    groups = {"all": slice(None), **{f"{cue}-cued": np.array(item_cues) == cue for cue in DEMO_CUES}}
    print(f"\nHeld-out accuracy ({len(truth)} items; 'X-cued': only X carries the emotion, 'both-cued': both do)")
    print(f"{'':<26}" + "".join(f"{group:>13}" for group in groups))
    for name, predictions in (
        ("fused (Eq. 9)", fused), ("text-centric head alone", text_head), ("speech-centric head alone", speech_head)
    ):
        hits = np.array(predictions) == np.array(truth)
        print(f"{name:<26}" + "".join(f"{hits[members].mean():>13.3f}" for members in groups.values()))


def main() -> None:
    # 1. Arguments and logging
    model_args, data_args, training_args = parse_arguments(sys.argv[1:])
    setup_logging(training_args)
    logger.info("Training/evaluation parameters %s", training_args)

    if data_args.dataset == "demo":
        # The demo's tensors are tiny, so intra-op threads buy nothing, while on a busy CPU their synchronisation can
        # make every step far slower (3 epochs: 3 s with one thread, 175 s with two, next to two busy processes).
        torch.set_num_threads(1)

    # 2. Data: the corpora through the paper's preprocessing (the demo first writes its corpus and backbones)
    with training_args.main_process_first(desc="dataset preparation"):
        demo = prepare_demo(Path(data_args.cache_dir) / "demo") if data_args.dataset == "demo" else None
        raw_datasets, data_report = load_corpora(data_args, demo)

    # 3. Processor: tokenizer + feature extractor of the two frozen backbones
    text_backbone = model_args.text_backbone or demo.backbones.text
    speech_backbone = model_args.speech_backbone or demo.backbones.speech
    processor = HyFusERProcessor.from_backbones(
        text_backbone, speech_backbone, sequence_length=model_args.sequence_length
    )

    # 4. Features: encoders run once per utterance, into the on-disk cache (main process first, others reuse it)
    with training_args.main_process_first(desc="feature extraction"):
        features = extract_features(raw_datasets, processor, data_args)

    # 5. Joint scaler on the training split only
    fit_scaler(processor, features["train"])

    # 6. Model, seeded only now: loading the encoders draws random numbers, so seeding any earlier would make the
    # initial weights depend on whether this run found its features in the cache
    set_seed(training_args.seed)
    config = HyFusERConfig(
        hidden_size=processor.hidden_size,
        sequence_length=processor.sequence_length,
        text_backbone=text_backbone,
        speech_backbone=speech_backbone,
    )
    if model_args.config_overrides:
        config.update_from_string(model_args.config_overrides)
    processor.check_compatible(config)
    model = HyFusERForEmotionRecognition(config)

    # 7. Train
    columns = [*FEATURE_COLUMNS, "label"]
    patience = model_args.early_stopping_patience
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=features["train"].select_columns(columns).with_format("torch"),
        eval_dataset=features["validation"].select_columns(columns).with_format("torch"),
        data_collator=partial(collate_scaled_features, processor=processor),
        compute_metrics=compute_metrics,
        processing_class=processor,
        callbacks=[EarlyStoppingCallback(patience)] if patience else [],
    )
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()

    # 8. Evaluate the restored best model: fused and per-head metrics, per-class report, confusion matrix
    prediction = trainer.predict(trainer.eval_dataset, metric_key_prefix="eval")
    trainer.log_metrics("eval", prediction.metrics)
    trainer.save_metrics("eval", prediction.metrics)

    if not trainer.is_world_process_zero():
        return

    # 9. Save a self-contained directory, plus model card, reports and confusion matrix
    output_dir = Path(training_args.output_dir)
    save_hyfuser(output_dir, trainer.model, processor, save_encoders=model_args.save_encoders)
    names = list(EMOTION_LABELS)
    report = per_class_report(prediction.label_ids, prediction.predictions[0].argmax(-1), names)
    (output_dir / "classification_report.json").write_text(json.dumps(report, indent=2))
    (output_dir / "dataset_report.json").write_text(json.dumps(data_report, indent=2, ensure_ascii=False))
    save_confusion_matrix(report["confusion_matrix"]["matrix"], names, output_dir / "confusion_matrix.png")
    write_model_card(
        output_dir, data_args, training_args, trainer.model, data_report, prediction.metrics, report,
        trainer.state.best_model_checkpoint,
    )  # fmt: skip
    logger.info("Saved the model, processor, code, model card and reports to %s", output_dir)

    # 10. Publish the final directory through the Trainer's hub arguments (Trainer.push_to_hub would re-save the
    # model and processor over it and replace the model card)
    if training_args.push_to_hub:
        HfApi(token=training_args.hub_token).upload_folder(
            repo_id=trainer.hub_model_id,
            folder_path=output_dir,
            commit_message="End of training",
            revision=training_args.hub_revision,
            ignore_patterns=["_*", "checkpoint-*"],
        )

    # 11. Demo: serve the saved directory on held-out items
    if demo:
        run_demo_predictions(output_dir, demo)


if __name__ == "__main__":
    main()
