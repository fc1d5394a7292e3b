#!/usr/bin/env python
"""Run the paper's model comparison (Table 5 on KEMDy19 + KEMDy20, Table 6 on AI-Hub 263) in one command.

Every model of `modeling_hyfuser.TRAINABLE_MODELS` trains on the same cached features (the frozen backbones run once
for all models, folds and seeds); every model of `COMPOSED_MODELS` is evaluated from two trained members' probabilities
without training of its own. Each finished run is written to `output_dir/runs/`, so a killed run resumes where it
stopped. At the end `output_dir` receives `results.json`, `results.md` (next to the paper's numbers),
`comparison.png` (Fig. 8), `scaling.png` (Fig. 4) and one `confusion_<model>.png` per model (Fig. 7).

    # the paper's random 8:2 split, every model, one seed, on all local GPUs
    accelerate launch reproduce.py --dataset kemdy --kemdy19_dir KEMDy19 --kemdy20_dir KEMDy20_v1_1 \
        --output_dir outputs/comparison-kemdy

    # speaker-independent: 5-fold cross-validation over whole sessions
    accelerate launch reproduce.py ... --protocol session_cv --folds 5

Inside every split, a model-selection set is held out of the training rows (whole sessions under session_cv): early
stopping, the restored checkpoint and the weighted ensemble's weight are chosen on it, and the validation rows are
only ever scored.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
import transformers
from datasets import Dataset, DatasetDict, concatenate_datasets
from transformers import HfArgumentParser, TrainingArguments, set_seed

import features_hyfuser
from arguments_hyfuser import CORPUS_DIRECTORIES, BackboneArguments, CorpusArguments, recipe_defaults
from configuration_hyfuser import EMOTION_LABELS, HyFusERConfig
from data_hyfuser import (
    build_paper_dataset,
    selection_split,
    session_folds,
)
from demo_hyfuser import DEMO_DEFAULTS, prepare_demo
from features_hyfuser import (
    FEATURE_COLUMNS,
    PAPER_TRAINING_DEFAULTS,
    cache_features,
    fit_scaler_on_cache,
    model_config,
    place_backbones,
    train_on_features,
    trainer_dataset,
    transcribe_corpus,
)
from metrics_hyfuser import (
    choose_ensemble_weight,
    fused_logits,
    per_class_report,
    prediction_metrics,
    save_confusion_matrix,
)
from modeling_hyfuser import COMPOSED_MODELS, TRAINABLE_MODELS, ComposedModel
from processing_hyfuser import FeatureStatistics, HyFusERProcessor

logger = logging.getLogger(__name__)

PROTOCOLS = ("paper", "session_cv")
"""`paper`: the random stratified 8:2 split; `session_cv`: K-fold cross-validation grouped by (corpus, session)."""

REPORTED_METRICS = ("accuracy", "precision_weighted", "recall_weighted", "f1_weighted", "f1_macro")
"""Every run's metrics in `results.json`, on the fused prediction."""

TABLE_COLUMNS = {
    "accuracy": "Accuracy (%)",
    "recall_weighted": "Recall (Weighted)",
    "precision_weighted": "Precision (Weighted)",
    "f1_weighted": "F1-Score (Weighted)",
}
"""The paper's Table 5/6 columns, in its order (accuracy in percent there, the others as fractions)."""

PAPER_ROWS = {
    "text_lstm": "LSTM (Text)",
    "speech_cnn": "CNN (Speech)",
    "average_ensemble": "Single modality average ensemble",
    "weighted_average_ensemble": "Single modality weighted average ensemble",
    "bicma": "Bidirectional Cross Modal Attention",
    "kohmt": "KoHMT",
    "hyfuser": "HyFusER",
}
"""The paper's row name of each model it reports, in its order; other models follow under their own names."""


def _paper_row(accuracy: float, recall: float, precision: float, f1: float) -> dict[str, float]:
    return {"accuracy": accuracy, "recall_weighted": recall, "precision_weighted": precision, "f1_weighted": f1}


PAPER_RESULTS: dict[str, dict[str, dict[str, float]]] = {
    # Table 5: KEMDy19 + KEMDy20, random 8:2 split
    "kemdy": {
        "text_lstm": _paper_row(0.5922, 0.5922, 0.6278, 0.6046),
        "speech_cnn": _paper_row(0.5185, 0.5185, 0.6243, 0.5584),
        "average_ensemble": _paper_row(0.6085, 0.6085, 0.6660, 0.6292),
        "weighted_average_ensemble": _paper_row(0.6100, 0.6100, 0.6638, 0.6292),
        "bicma": _paper_row(0.6408, 0.6408, 0.6604, 0.6419),
        "kohmt": _paper_row(0.6562, 0.6562, 0.6739, 0.6628),
        "hyfuser": _paper_row(0.6783, 0.6783, 0.6890, 0.6823),
    },
    # Table 6: AI-Hub 263, random 8:2 split
    "aihub": {
        "text_lstm": _paper_row(0.7038, 0.7038, 0.7086, 0.7039),
        "speech_cnn": _paper_row(0.5638, 0.5638, 0.5958, 0.5703),
        "average_ensemble": _paper_row(0.7052, 0.7052, 0.7232, 0.7075),
        "weighted_average_ensemble": _paper_row(0.7152, 0.7152, 0.7247, 0.7164),
        "bicma": _paper_row(0.7763, 0.7763, 0.7827, 0.7770),
        "kohmt": _paper_row(0.7745, 0.7745, 0.7780, 0.7744),
        "hyfuser": _paper_row(0.7977, 0.7977, 0.7975, 0.7975),
    },
}
"""The paper's reported numbers (accuracy as a fraction here), per `--dataset`."""


@dataclass
class ReproduceArguments(CorpusArguments, BackboneArguments):
    """The shared corpus and backbone arguments, plus the protocol and which models to compare."""

    protocol: str = field(
        default="paper",
        metadata={
            "help": "'paper': the random stratified 8:2 split. 'session_cv': --folds-fold cross-validation over "
            "whole (corpus, session) groups, so no speaker is on both sides (KEMDy only).",
            "choices": PROTOCOLS,
        },
    )
    folds: int = field(default=5, metadata={"help": "Folds of --protocol session_cv."})
    seeds: int = field(
        default=1, metadata={"help": "Training seeds per model and split: --seed, --seed + 1, ... (the split stays)."}
    )
    models: str = field(
        default="all",
        metadata={"help": "'all', or comma-separated model names; composed models train their members first."},
    )
    selection_fraction: float = field(
        default=0.1,
        metadata={
            "help": "Share of each split's training rows (sessions under session_cv) held out as the model-selection "
            "set: early stopping, the restored checkpoint and the weighted ensemble's weight are chosen on it."
        },
    )

    def model_names(self) -> list[str]:
        """The models to report, checked against the registries."""
        known = [*TRAINABLE_MODELS, *COMPOSED_MODELS]
        names = known if self.models == "all" else [name.strip() for name in self.models.split(",")]
        unknown = [name for name in names if name not in known]
        if unknown or not names:
            raise ValueError(f"--models: unknown {unknown}; choose 'all' or among {known}")
        if (self.feature_mode != "paper" or self.layer_weighting) and names != ["hyfuser"]:
            raise ValueError(
                "--feature_mode native and --layer_weighting give features only HyFusER takes: use --models hyfuser"
            )
        return names


def parse_arguments(argv: list[str]) -> tuple[ReproduceArguments, TrainingArguments]:
    """The paper's training settings as defaults (the demo's under `--dataset demo`, then `--recipe`'s, as in
    train.py), then the checks that need no data."""
    dataset = HfArgumentParser(ReproduceArguments, add_help=False).parse_known_args(argv)[0].dataset
    parser = HfArgumentParser((ReproduceArguments, TrainingArguments))
    parser.set_defaults(**PAPER_TRAINING_DEFAULTS, output_dir="outputs/comparison")
    parser.set_defaults(use_cpu=not torch.accelerator.is_available())
    if dataset == "demo":
        parser.set_defaults(**DEMO_DEFAULTS)
    parser.set_defaults(**recipe_defaults(argv))
    args, training_args = parser.parse_args_into_dataclasses(argv)
    args.check_directories()
    if args.protocol == "session_cv" and args.dataset == "aihub":
        raise ValueError(
            "--protocol session_cv needs speaker sessions, and AI-Hub 263 has no speaker or session ids: "
            "use --protocol paper for AI-Hub"
        )
    args.model_names()
    return args, training_args


@dataclass(frozen=True)
class Split:
    """One train/validation split: the rows fitted on, the model-selection rows and the validation rows."""

    fold: int | None
    fit: list[int]
    selection: list[int]
    validation: list[int]


@dataclass(frozen=True)
class Run:
    """One model on one split with one training seed."""

    model: str
    fold: int | None
    seed: int

    @property
    def name(self) -> str:
        fold = "" if self.fold is None else f"-fold{self.fold}"
        return f"{self.model}{fold}-seed{self.seed}"


def load_rows(args: ReproduceArguments) -> tuple[Dataset, int, str | None, str | None]:
    """Every used row (after the paper's preprocessing) with the number of rows of the paper's training split first,
    and the backbones (the demo's own when none are named)."""
    text_backbone, speech_backbone = args.text_backbone, args.speech_backbone
    if args.dataset == "demo":
        demo = prepare_demo(Path(args.cache_dir) / "demo", cue=args.demo_cue)
        corpora = {"kemdy20_dir": demo.train_dir}
        text_backbone, speech_backbone = text_backbone or demo.backbones.text, speech_backbone or demo.backbones.speech
    else:
        corpora = {name: getattr(args, name) for name in CORPUS_DIRECTORIES[args.dataset] if getattr(args, name)}
    splits, report = build_paper_dataset(
        **corpora,
        seed=args.split_seed,
        multi_label=args.multi_label,
        kemdy19_rows=args.kemdy19_rows,
        label_source=args.label_source,
        return_report=True,
    )
    logger.info("Paper preprocessing:\n%s", report)
    # The used rows are the same whatever the split; the paper's split keeps its training rows first.
    rows = concatenate_datasets([splits["train"], splits["validation"]])
    return rows, len(splits["train"]), text_backbone, speech_backbone


def plan_splits(rows: Dataset, paper_train_rows: int, args: ReproduceArguments) -> list[Split]:
    """The paper's split, or one split per session fold, each with its model-selection set carved from training."""
    if args.protocol == "paper":
        validations = [list(range(paper_train_rows, len(rows)))]
        folds, carve_by = [None], "random"
    else:
        validations = session_folds(rows, args.folds, seed=args.split_seed)
        folds, carve_by = list(range(args.folds)), "session"
    splits = []
    for fold, validation in zip(folds, validations):
        held_out = set(validation)
        train = [index for index in range(len(rows)) if index not in held_out]
        fit, selection = selection_split(rows, train, carve_by, args.selection_fraction, seed=args.split_seed)
        splits.append(Split(fold, fit, selection, validation))
    return splits


def plan_runs(models: Sequence[str], splits: Sequence[Split], seeds: Sequence[int]) -> list[Run]:
    """Every run, split by split and seed by seed: the trainable models (with the members the composed ones need,
    each trained once) before the composed models."""
    members = [member for model in models if model in COMPOSED_MODELS for member in COMPOSED_MODELS[model].members]
    trained = [name for name in TRAINABLE_MODELS if name in models or name in members]
    composed = [name for name in models if name in COMPOSED_MODELS]
    return [Run(model, split.fold, seed) for split in splits for seed in seeds for model in [*trained, *composed]]


def compose(
    composed: ComposedModel,
    selection: Sequence[np.ndarray],
    validation: Sequence[np.ndarray],
    selection_labels: np.ndarray,
) -> tuple[np.ndarray, float]:
    """A composed model's validation log-probabilities from its two members' log-probabilities, and the first
    member's weight: chosen on the model-selection set when the model is weighted, else 0.5."""
    weight = 0.5
    if composed.weighted:
        weight = choose_ensemble_weight(*(np.exp(log_probs) for log_probs in selection), selection_labels)
    first, second = (np.exp(log_probs) for log_probs in validation)
    return np.log(weight * first + (1 - weight) * second), weight


def _sessions(rows: Dataset, indices: Sequence[int]) -> list[str] | None:
    """The sorted "corpus/session" names of `rows[indices]`; None for a corpus without sessions (AI-Hub 263)."""
    selected = rows.select(indices)
    if any(session is None for session in selected["session"]):
        return None
    return sorted({f"{corpus}/{session}" for corpus, session in zip(selected["corpus"], selected["session"])})


RESULT_SETTINGS = (
    "dataset", "demo_cue", "kemdy19_dir", "kemdy20_dir", "aihub_dir", "protocol", "folds", "selection_fraction",
    "text_backbone", "speech_backbone", "sequence_length", "config_overrides", "initializer", "early_stopping_patience",
    "split_seed",
    "multi_label", "kemdy19_rows", "label_source", "learning_rate", "num_train_epochs", "max_steps",
    "per_device_train_batch_size", "gradient_accumulation_steps", "weight_decay", "optim", "lr_scheduler_type",
    "warmup_steps", "metric_for_best_model",
)  # fmt: skip
"""Arguments that change a run's result: finished runs are only reused under the same values (models and seeds may
be added)."""


class RunStore:
    """`output_dir/runs/<run>.json` (the record) and `<run>.npz` (log-probabilities); a record exists only once its
    run has finished, so a restarted reproduction skips exactly those."""

    def __init__(self, output_dir: Path):
        self.folder = output_dir / "runs"

    def check_settings(self, args: ReproduceArguments, training_args: TrainingArguments, write: bool) -> None:
        """Refuse to mix finished runs made with different `RESULT_SETTINGS`; record them for the next invocation."""
        values = {name: getattr(args if hasattr(args, name) else training_args, name) for name in RESULT_SETTINGS}
        settings = {name: str(getattr(value, "value", value)) for name, value in values.items()}  # enums by value
        path = self.folder / "settings.json"
        if path.exists() and any(self.folder.glob("*.npz")):  # settings of a run that finished nothing do not bind
            earlier = json.loads(path.read_text())
            changed = {
                name: (earlier.get(name), value) for name, value in settings.items() if earlier.get(name) != value
            }
            if changed:
                raise ValueError(
                    f"{self.folder} holds runs made with other settings {changed} (earlier, now): choose another "
                    "--output_dir or repeat those settings"
                )
        elif write:
            self.folder.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(settings, indent=2))

    def record_path(self, run: Run) -> Path:
        return self.folder / f"{run.name}.json"

    def finished(self, run: Run) -> bool:
        return self.record_path(run).exists()

    def save(self, run: Run, record: dict, log_probs: dict[str, np.ndarray]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        arrays = self.folder / f"{run.name}.npz"
        np.savez(arrays.with_suffix(".tmp.npz"), **log_probs)
        os.replace(arrays.with_suffix(".tmp.npz"), arrays)
        temporary = self.record_path(run).with_suffix(".tmp")
        temporary.write_text(json.dumps(record, indent=2))
        os.replace(temporary, self.record_path(run))

    def record(self, run: Run) -> dict:
        return json.loads(self.record_path(run).read_text())

    def log_probs(self, run: Run) -> dict[str, np.ndarray]:
        with np.load(self.folder / f"{run.name}.npz") as arrays:
            return dict(arrays)


def run_record(run: Run, rows: Dataset, split: Split, validation_log_probs: np.ndarray) -> dict:
    """What `results.json` says of one run, plus the sessions on each side so anyone can check the split."""
    labels = np.asarray(rows.select(split.validation)["label"])
    return {
        "model": run.model,
        "fold": run.fold,
        "seed": run.seed,
        "validation_sessions": _sessions(rows, split.validation),
        "n_validation": len(split.validation),
        "metrics": prediction_metrics(labels, validation_log_probs.argmax(-1)),
        "training_sessions": _sessions(rows, split.fit),
        "selection_sessions": _sessions(rows, split.selection),
        "n_training": len(split.fit),
        "n_selection": len(split.selection),
    }


def summarize(records: Sequence[dict], models: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean, sample standard deviation (0 for a single run) and count of every metric of every model."""
    summary = {}
    for model in models:
        values = {metric: [record["metrics"][metric] for record in records if record["model"] == model]
                  for metric in REPORTED_METRICS}  # fmt: skip
        summary[model] = {
            metric: {
                "mean": float(np.mean(scores)),
                "std": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
                "n": len(scores),
            }
            for metric, scores in values.items()
        }
    return summary


def results_markdown(dataset: str, protocol: str, summary: dict) -> str:
    """Table 5's (Table 6's for AI-Hub) layout: measured mean ± std next to the paper's number for the same row."""
    paper = PAPER_RESULTS.get(dataset, {})
    table = "Table 6" if dataset == "aihub" else "Table 5"
    order = [model for model in PAPER_ROWS if model in summary] + [
        model for model in summary if model not in PAPER_ROWS
    ]

    def cell(model: str, metric: str) -> str:
        scale, digits = (100, 2) if metric == "accuracy" else (1, 4)
        measured = summary[model][metric]
        text = f"{scale * measured['mean']:.{digits}f} ± {scale * measured['std']:.{digits}f}"
        if metric in paper.get(model, {}):
            text += f" (paper {scale * paper[model][metric]:.{digits}f})"
        return text

    header = ["Model", *TABLE_COLUMNS.values(), "F1-Score (Macro)"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for model in order:
        name = f"{PAPER_ROWS[model]} (`{model}`)" if model in PAPER_ROWS else f"`{model}`"
        cells = [cell(model, metric) for metric in [*TABLE_COLUMNS, "f1_macro"]]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    runs = ", ".join(f"{model} {summary[model]['accuracy']['n']}" for model in order)
    reference = f"In parentheses: the paper's {table}." if paper else "The paper reports nothing on this dataset."
    split = {
        "paper": "the random stratified 8:2 split (speakers on both sides)",
        "session_cv": "session cross-validation (no session on both sides of a fold)",
    }[protocol]
    return "\n".join(
        [
            f"# Model comparison: `{dataset}`, {split}",
            "",
            f"Measured: mean ± sample std over runs (folds x seeds; runs per model: {runs}), on validation rows only. "
            + reference,
            "",
            *lines,
            "",
        ]
    )


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_comparison(summary: dict, path: Path) -> None:
    """Fig. 8: the four metrics of every model as grouped bars, with the standard deviation over runs as error bars."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(max(8, 1.6 * len(summary)), 5))
    width = 0.8 / len(summary)
    positions = np.arange(len(TABLE_COLUMNS))
    for offset, (model, metrics) in enumerate(summary.items()):
        means = [metrics[metric]["mean"] for metric in TABLE_COLUMNS]
        errors = [metrics[metric]["std"] for metric in TABLE_COLUMNS]
        axes.bar(positions + offset * width, means, width, yerr=errors, capsize=3, label=PAPER_ROWS.get(model, model))
    axes.set_xticks(positions + width * (len(summary) - 1) / 2, ["Accuracy", "Recall", "Precision", "F1-Score"])
    axes.set_ylim(0, 1)
    axes.set_ylabel("score (weighted)")
    axes.set_title("Comparison of performance metrics across models")
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)


def plot_scaling(processor: HyFusERProcessor, train_features: Dataset, path: Path) -> None:
    """Fig. 4: the per-dimension means of the text and the speech training features before and after the joint
    scaler (fitted on the same rows): apart before, both centred on 0 after."""
    statistics = {name: FeatureStatistics() for name in FEATURE_COLUMNS}
    # Row by row: native features have a length of their own; every layer's positions count with layer weighting.
    for row in train_features.with_format("numpy", columns=list(FEATURE_COLUMNS)):
        for name in FEATURE_COLUMNS:
            statistics[name].update(row[name])
    before = [statistics[name].mean for name in FEATURE_COLUMNS]
    after = processor.scale(*before)
    plt = _pyplot()
    figure, panels = plt.subplots(1, 2, figsize=(12, 4), sharey=False)
    for axes, means, title in zip(panels, (before, after), ("Before scaling", "After joint standard scaling")):
        for values, label in zip(means, ("text (KoELECTRA)", "speech (HuBERT)")):
            axes.plot(values, label=label, linewidth=0.8)
        axes.set_title(title)
        axes.set_xlabel("feature dimension")
        axes.set_ylabel("mean over training positions")
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)


def setup_logging(training_args: TrainingArguments) -> None:
    """Progress and our steps at INFO on the main process; libraries follow --log_level / --log_level_replica."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    library_level = training_args.get_process_log_level()
    for our_logger in (logger, features_hyfuser.logger):
        our_logger.setLevel(min(logging.INFO, library_level) if training_args.should_log else library_level)
    datasets.utils.logging.set_verbosity(library_level)
    transformers.utils.logging.set_verbosity(library_level)


def train_member(
    run: Run,
    split: Split,
    features: Dataset,
    processor: HyFusERProcessor,
    config: HyFusERConfig,
    args: ReproduceArguments,
    training_args: TrainingArguments,
) -> dict[str, np.ndarray]:
    """Train one model on the split's fit rows, stopping early on its selection rows, and return the restored best
    model's log-probabilities on the selection and validation rows. Its checkpoints are removed afterwards."""
    run_dir = Path(training_args.output_dir) / "runs" / run.name
    with training_args.main_process_first(desc="clearing an unfinished run"):
        if training_args.process_index == 0:
            shutil.rmtree(run_dir, ignore_errors=True)
    set_seed(run.seed)
    trainer, selection = train_on_features(
        TRAINABLE_MODELS[run.model](config),
        dataclasses.replace(training_args, output_dir=str(run_dir), seed=run.seed),
        processor,
        features.select(split.fit),
        features.select(split.selection),
        early_stopping_patience=args.early_stopping_patience,
    )
    validation = trainer.predict(trainer_dataset(features.select(split.validation)), metric_key_prefix="validation")
    trainer.save_metrics("validation", validation.metrics)
    if trainer.is_world_process_zero():
        for checkpoint in run_dir.glob("checkpoint-*"):
            shutil.rmtree(checkpoint)
    return {
        "selection": fused_logits(selection.predictions),
        "validation": fused_logits(validation.predictions),
    }


def write_reports(
    output_dir: Path,
    args: ReproduceArguments,
    runs: Sequence[Run],
    store: RunStore,
    rows: Dataset,
    splits: list[Split],
) -> dict:
    """results.json, results.md, comparison.png and confusion_<model>.png from the finished runs."""
    models = args.model_names()
    reported = [run for run in runs if run.model in models]
    records = [store.record(run) for run in reported]
    summary = summarize(records, models)
    results = {
        "dataset": args.dataset,
        "protocol": args.protocol,
        "folds": args.folds if args.protocol == "session_cv" else None,
        "seeds": sorted({run.seed for run in runs}),
        "runs": [
            {key: record[key] for key in ("model", "fold", "seed", "validation_sessions", "n_validation", "metrics")}
            for record in records
        ],
        "summary": summary,
    }
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    (output_dir / "results.md").write_text(results_markdown(args.dataset, args.protocol, summary))
    plot_comparison(summary, output_dir / "comparison.png")
    split_of = {split.fold: split for split in splits}
    names, labels = list(EMOTION_LABELS), np.asarray(rows["label"])
    for model in models:
        matrix = np.zeros((len(names), len(names)), dtype=int)
        for run in reported:
            if run.model == model:
                predictions = store.log_probs(run)["validation"].argmax(-1)
                truth = labels[split_of[run.fold].validation]
                matrix += np.asarray(per_class_report(truth, predictions, names)["confusion_matrix"]["matrix"])
        save_confusion_matrix(matrix.tolist(), names, output_dir / f"confusion_{model}.png")
    return results


def main(argv: list[str] | None = None) -> None:
    args, training_args = parse_arguments(sys.argv[1:] if argv is None else argv)
    setup_logging(training_args)
    output_dir = Path(training_args.output_dir)

    # 1. Data: every used row once; the splits and the runs, and which of them finished before
    with training_args.main_process_first(desc="dataset preparation"):
        rows, paper_train_rows, text_backbone, speech_backbone = load_rows(args)
    processor = HyFusERProcessor.from_backbones(
        text_backbone,
        speech_backbone,
        sequence_length=args.sequence_length,
        asr_model=args.asr_model,
        **args.feature_options(),
    )
    if args.transcripts == "asr":  # before the splits, which index the rows the recognizer heard words in
        paper_train_ids = rows["id"][:paper_train_rows]
        with training_args.main_process_first(desc="transcription"):
            rows = transcribe_corpus(
                DatasetDict(all=rows), processor, args.cache_dir, batch_size=args.extraction_batch_size
            )["all"]
        heard = set(rows["id"])
        paper_train_rows = sum(row_id in heard for row_id in paper_train_ids)
    splits = plan_splits(rows, paper_train_rows, args)
    seeds = [training_args.seed + offset for offset in range(args.seeds)]
    runs = plan_runs(args.model_names(), splits, seeds)
    store = RunStore(output_dir)
    with training_args.main_process_first(desc="checking earlier runs"):
        store.check_settings(args, training_args, write=training_args.process_index == 0)
    finished = {run for run in runs if store.finished(run)}
    logger.info(
        "%d runs planned, %d finished earlier (skipped), %d to go", len(runs), len(finished), len(runs) - len(finished)
    )

    # 2. Features of every used row, extracted once for all models, splits and seeds, each process its share on its
    # own device
    place_backbones(processor, training_args.device, args.extraction_dtype)
    features = cache_features(
        DatasetDict(all=rows), processor, args.cache_dir, batch_size=args.extraction_batch_size
    )["all"]
    config = model_config(processor, text_backbone, speech_backbone, args.config_overrides, args.initializer)

    # 3. The runs, split by split; the joint scaler is fitted on each split's fit rows
    labels = np.asarray(rows["label"])
    split_of = {split.fold: split for split in splits}
    scaler_split: Split | None = None
    for number, run in enumerate(runs, start=1):
        split = split_of[run.fold]
        progress = f"[run {number}/{len(runs)}] model={run.model} fold={run.fold} seed={run.seed}"
        if run in finished:
            logger.info("%s: finished earlier, skipped", progress)
            continue
        logger.info("%s (%d left after this one)", progress, sum(later not in finished for later in runs[number:]))
        if run.model in COMPOSED_MODELS:
            if training_args.process_index != 0:
                continue
            composed = COMPOSED_MODELS[run.model]
            members = [store.log_probs(Run(member, run.fold, run.seed)) for member in composed.members]
            validation, weight = compose(
                composed,
                [member["selection"] for member in members],
                [member["validation"] for member in members],
                labels[split.selection],
            )
            record = {**run_record(run, rows, split, validation), "first_member_weight": weight}
            store.save(run, record, {"validation": validation})
            continue
        if scaler_split is not split:
            fit_scaler_on_cache(processor, features.select(split.fit))
            scaler_split = split
        log_probs = train_member(run, split, features, processor, config, args, training_args)
        if training_args.process_index == 0:
            store.save(run, run_record(run, rows, split, log_probs["validation"]), log_probs)

    if training_args.process_index != 0:
        return

    # 4. Reports: results.json and results.md, Fig. 8, Fig. 7 per model, Fig. 4 on the first split's training rows
    results = write_reports(output_dir, args, runs, store, rows, splits)
    if scaler_split is not splits[0]:
        fit_scaler_on_cache(processor, features.select(splits[0].fit))
    plot_scaling(processor, features.select(splits[0].fit), output_dir / "scaling.png")
    logger.info(
        "Wrote results.json, results.md and the figures to %s:\n%s",
        output_dir,
        results_markdown(args.dataset, args.protocol, results["summary"]),
    )


if __name__ == "__main__":
    main()
