"""The model comparison's runs (`reproduce.py`): its arguments, the splits and the runs it plans, the store of finished
runs that lets a killed comparison resume (and refuses to mix settings), and what each run records."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, concatenate_datasets
from transformers import TrainerState, TrainingArguments

from configuration_hyfuser import EMOTION_LABELS
from hyfuser.arguments import (
    CORPORA,
    BackboneArguments,
    CorpusArguments,
    derive_train_batch_size,
    parse_command_line,
)
from hyfuser.comparison import collapse_reasons
from hyfuser.metrics import accuracy, choose_ensemble_weight, per_class_report, prediction_metrics
from hyfuser.splits import selection_split, session_folds
from modeling_hyfuser import COMPOSED_MODELS, PROBE_MODELS, TRAINABLE_MODELS, ComposedModel

PROTOCOLS = ("paper", "session_cv")
"""`paper`: the random stratified 8:2 split; `session_cv`: K-fold cross-validation grouped by (corpus, session)."""

SELECTIONS = ("held_out", "validation")
"""Where early stopping, the restored checkpoint and the ensemble weight are chosen: on rows held out of training, or
on the scored validation rows (the paper's protocol, optimistic)."""

MEMBER_SEED_OFFSET = 1000
"""A composed model's second member trains with its seed + this, so its two members never start from the same random
draw nor see the same batch order. Larger than any `--seeds`, so it never repeats another run's seed."""


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
        default=1,
        metadata={
            "help": f"Training seeds per model and split: --seed, --seed + 1, ... (the split stays); at most "
            f"{MEMBER_SEED_OFFSET}, the offset of a composed model's second member's seed."
        },
    )
    models: str = field(
        default="all",
        metadata={
            "help": "'all', or comma-separated model names; composed models train their members first. "
            f"{', '.join(PROBE_MODELS)} are linear probes on the pooled features, the floor of the others."
        },
    )
    selection: str = field(
        default="held_out",
        metadata={
            "help": "Where early stopping, the restored checkpoint and the weighted ensemble's weight are chosen. "
            "'held_out': on a model-selection set carved out of each split's training rows (--selection_fraction); "
            "the validation rows are only scored. 'validation': on the validation rows that are then scored, the "
            "paper's own protocol, which flatters every number (results.md says so).",
            "choices": SELECTIONS,
        },
    )
    selection_fraction: float = field(
        default=0.1,
        metadata={
            "help": "With --selection held_out, the share of each split's training rows (sessions under session_cv) "
            "held out as the model-selection set, between 0 and 1 (exclusive)."
        },
    )
    render: str | None = field(
        default=None,
        metadata={
            "help": "Only rebuild results.md and the figures of this finished output directory from its "
            "results.json: no data, no training."
        },
    )

    def model_names(self) -> list[str]:
        """The models to report, checked against the registries."""
        known = [*TRAINABLE_MODELS, *PROBE_MODELS, *COMPOSED_MODELS]
        names = known if self.models == "all" else [name.strip() for name in self.models.split(",")]
        unknown = [name for name in names if name not in known]
        if unknown or not names:
            raise ValueError(f"--models: unknown {unknown}; choose 'all' or among {known}")
        if (self.feature_mode != "paper" or self.layer_weighting) and names != ["hyfuser"]:
            raise ValueError(
                "--feature_mode native and --layer_weighting give features only HyFusER takes: use --models hyfuser"
            )
        return names

    def check_protocol(self) -> None:
        """Refuse settings that cannot make a comparison, before any data is read."""
        corpus = CORPORA[self.dataset]
        if self.protocol == "session_cv" and not corpus.sessions:
            raise ValueError(
                f"--protocol session_cv needs speaker sessions, and {corpus.title} has no speaker or session ids: "
                f"use --protocol paper for {corpus.title}"
            )
        if self.selection == "held_out" and not 0 < self.selection_fraction < 1:
            raise ValueError(
                f"--selection_fraction {self.selection_fraction}: the held-out selection set needs a share between 0 "
                "and 1; to choose on the validation rows as the paper did, use --selection validation"
            )
        if not 1 <= self.seeds <= MEMBER_SEED_OFFSET:
            raise ValueError(f"--seeds {self.seeds}: choose between 1 and {MEMBER_SEED_OFFSET}")
        self.model_names()


NOT_RESULT_SETTINGS = (
    # Which runs to make: every finished run is stored under its model, fold and seed, so models and seeds may be
    # added to a comparison (--seed shifts the seeds, and with them the runs' names).
    "models", "seeds", "seed",
    # Where things go and what the invocation does besides training.
    "output_dir", "render", "run_name", "project", "trackio_space_id", "trackio_bucket_id", "trackio_static_space_id",
    "report_to", "push_to_hub", "hub_token", "hub_private_repo", "hub_model_id", "hub_strategy", "hub_always_push",
    "hub_revision", "do_train", "do_eval", "do_predict",
    # Logging and progress: what is printed, not what is learned (the logged train loss itself is in the guard).
    "log_level", "log_level_replica", "log_on_each_node", "disable_tqdm", "skip_memory_metrics",
    "include_num_input_tokens_seen",
    # The feature cache is keyed by what the features depend on, and every utterance runs through the backbones
    # alone, so neither its place nor the extraction batch changes a feature.
    "cache_dir", "extraction_batch_size",
    # Checkpoint files on disk: the best checkpoint is always kept, and an unfinished run is restarted from scratch.
    "save_total_limit", "save_on_each_node", "save_only_model", "enable_jit_checkpoint", "resume_from_checkpoint",
    # How data reaches the model and memory is managed: batches and their order come from the sampler alone.
    "dataloader_num_workers", "dataloader_pin_memory", "dataloader_persistent_workers", "dataloader_prefetch_factor",
    "dataloader_multiprocessing_context", "torch_empty_cache_steps", "features_on_device", "features_memory_share",
    # The launch: the process count is recorded instead (`num_processes`); a timeout changes no number.
    "local_rank", "ddp_timeout",
)  # fmt: skip
"""Arguments of `ReproduceArguments` and `TrainingArguments` that cannot change a result: every other one is a result
setting, so a flag added to either dataclass is guarded unless it is listed here."""


def result_setting_names() -> list[str]:
    """Every argument that can change a result: all fields of the two argument dataclasses but
    `NOT_RESULT_SETTINGS`, then the process count."""
    arguments = (ReproduceArguments, TrainingArguments)
    names = [argument.name for dataclass_type in arguments for argument in dataclasses.fields(dataclass_type)]
    return [*(name for name in names if name not in NOT_RESULT_SETTINGS), "num_processes"]


def result_settings(args: ReproduceArguments, training_args: TrainingArguments, num_processes: int) -> dict[str, str]:
    """The values of `result_setting_names()` as strings (enums by value), as `settings.json` keeps them."""
    values = {
        name: getattr(args if hasattr(args, name) else training_args, name)
        for name in result_setting_names()
        if name != "num_processes"
    }
    values["num_processes"] = num_processes
    return {name: str(getattr(value, "value", value)) for name, value in values.items()}


def parse_arguments(argv: list[str]) -> tuple[ReproduceArguments, TrainingArguments]:
    """The paper's training settings as defaults (the demo's under `--dataset demo`, then `--recipe`'s, as in
    train.py), the per-device batch derived from the global one, then the checks that need no data (none for
    `--render`)."""
    args, training_args = parse_command_line(
        (ReproduceArguments, TrainingArguments), argv, output_dir="outputs/comparison"
    )
    if args.render:
        return args, training_args
    args.check_directories()
    args.check_protocol()
    derive_train_batch_size(args.global_train_batch_size, training_args)
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
    """One model on one split with one training seed: the run's `seed`, offset for a second member."""

    model: str
    fold: int | None
    seed: int
    member_position: int = 0
    """1 for a run trained as a composed model's second member, 0 otherwise."""

    @property
    def training_seed(self) -> int:
        return self.seed + self.member_position * MEMBER_SEED_OFFSET

    @property
    def name(self) -> str:
        fold = "" if self.fold is None else f"-fold{self.fold}"
        member = f"-member{self.member_position + 1}" if self.member_position else ""
        return f"{self.model}{fold}-seed{self.seed}{member}"


def own_member_position(model: str) -> int:
    """The member position of a trainable model's own run: second (1) for a model that the registry only composes
    as a second member (`speech_cnn`, `kohmt_speech`), so that one run is both its row and that member; else 0."""
    positions = [position for composed in COMPOSED_MODELS.values() for position, member in enumerate(composed.members)
                 if member == model]  # fmt: skip
    return min(positions, default=0)


def reported_run(model: str, fold: int | None, seed: int) -> Run:
    """The run that stands for `model` on one split and seed in the results."""
    return Run(model, fold, seed, own_member_position(model) if model in TRAINABLE_MODELS else 0)


def member_runs(run: Run) -> list[Run]:
    """The trained runs a composed model's run combines, first member first."""
    members = COMPOSED_MODELS[run.model].members
    return [Run(member, run.fold, run.seed, position) for position, member in enumerate(members)]


def used_rows(paper_splits: DatasetDict) -> tuple[Dataset, int]:
    """Every used row once, the paper's training split first, and the number of rows of that split: the used rows
    (after the paper's preprocessing) are the same whatever the split."""
    return concatenate_datasets([paper_splits["train"], paper_splits["validation"]]), len(paper_splits["train"])


def plan_splits(rows: Dataset, paper_train_rows: int, args: ReproduceArguments) -> list[Split]:
    """The paper's split, or one split per session fold, each with its model-selection set: carved from training
    (`--selection held_out`), or the validation rows themselves (`--selection validation`)."""
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
        if args.selection == "validation":
            splits.append(Split(fold, train, validation, validation))
            continue
        fit, selection = selection_split(rows, train, carve_by, args.selection_fraction, seed=args.split_seed)
        splits.append(Split(fold, fit, selection, validation))
    return splits


def plan_runs(models: Sequence[str], splits: Sequence[Split], seeds: Sequence[int]) -> list[Run]:
    """Every run, split by split and seed by seed: the trained runs the reported models need (each trained once, in
    registry order), the probes (under the first seed only: they draw no random numbers), then the composed models."""
    composed = [name for name in models if name in COMPOSED_MODELS]
    runs = []
    for split in splits:
        for seed in seeds:
            needed = {reported_run(name, split.fold, seed) for name in models if name in TRAINABLE_MODELS}
            needed |= {member for name in composed for member in member_runs(Run(name, split.fold, seed))}
            runs += sorted(needed, key=lambda run: (list(TRAINABLE_MODELS).index(run.model), run.member_position))
            runs += [Run(name, split.fold, seed) for name in models if name in PROBE_MODELS and seed == seeds[0]]
            runs += [Run(name, split.fold, seed) for name in composed]
    return runs


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


class RunStore:
    """`output_dir/runs/<run>.json` (the record) and `<run>.npz` (log-probabilities); a record exists only once its
    run has finished, so a restarted reproduction skips exactly those."""

    def __init__(self, output_dir: Path):
        self.folder = output_dir / "runs"

    def check_settings(self, settings: dict[str, str], write: bool) -> None:
        """Refuse to mix finished runs made with other `result_settings`; record them for the next invocation."""
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


def prediction_record(labels: np.ndarray, log_probs: dict[str, np.ndarray]) -> dict:
    """A run's validation metrics (each head's accuracy too, where `log_probs` has the heads), per-class recall,
    confusion matrix and why it counts as collapsed, if it does."""
    names = list(EMOTION_LABELS)
    predictions = log_probs["validation"].argmax(-1)
    metrics = prediction_metrics(labels, predictions)
    for head in ("text_head", "speech_head"):
        if f"validation_{head}" in log_probs:
            metrics[f"{head}_accuracy"] = accuracy(labels, log_probs[f"validation_{head}"].argmax(-1))
    report = per_class_report(labels, predictions, names)
    matrix = report["confusion_matrix"]["matrix"]
    return {
        "metrics": metrics,
        "per_class_recall": {name: report["per_class"][name]["recall"] for name in names},
        "confusion_matrix": matrix,
        "collapse": collapse_reasons(matrix, names),
    }


def run_record(run: Run, rows: Dataset, split: Split, log_probs: dict[str, np.ndarray]) -> dict:
    """What `results.json` says of one run, with the sessions on each side so anyone can check the split."""
    return {
        "model": run.model,
        "fold": run.fold,
        "seed": run.seed,
        "member_position": run.member_position,
        "training_seed": run.training_seed,
        "n_fit": len(split.fit),
        "n_selection": len(split.selection),
        "n_validation": len(split.validation),
        **prediction_record(np.asarray(rows.select(split.validation)["label"]), log_probs),
        "fit_sessions": _sessions(rows, split.fit),
        "selection_sessions": _sessions(rows, split.selection),
        "validation_sessions": _sessions(rows, split.validation),
    }


def learning_curve(state: TrainerState) -> dict:
    """Selection accuracy and train loss at every logged epoch, the epochs run and the epoch restored at the end."""
    evaluations = [entry for entry in state.log_history if "eval_accuracy" in entry]
    best = [entry["epoch"] for entry in evaluations if entry["step"] == state.best_global_step]
    return {
        "epochs_run": state.epoch,
        "best_epoch": best[0] if best else None,
        "selection_accuracy": [{"epoch": entry["epoch"], "accuracy": entry["eval_accuracy"]} for entry in evaluations],
        "train_loss": [
            {"epoch": entry["epoch"], "loss": entry["loss"]} for entry in state.log_history if "loss" in entry
        ],
    }
