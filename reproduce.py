#!/usr/bin/env python
"""Run the paper's model comparison (Table 5 on KEMDy19 + KEMDy20, Table 6 on AI-Hub 263) in one command.

Every model of `modeling_hyfuser.TRAINABLE_MODELS` trains on the same cached features (the frozen backbones run once
for all models, folds and seeds) with the paper's global batch of 32 however many processes run; every model of
`COMPOSED_MODELS` is evaluated from two trained members' probabilities without training of its own, its second
member trained from a seed of its own. The linear probes of `PROBE_MODELS`, the floor the others should reach, are
fitted on the pooled features without the `Trainer`, once per split (they draw no random numbers). Each finished run is written to `output_dir/runs/`, so a killed run resumes
where it stopped, and a rerun into the same folder with any setting that changes a result is refused.

At the end `output_dir` receives `results.json` (every run's metrics, per-class recall, confusion matrix and learning
curve; per model the summary, the collapsed runs and HyFusER paired against it), `results.md` (the protocol and the
tables, next to the paper's numbers), `comparison.png` (Fig. 8), `scaling.png` (Fig. 4), one `confusion_<model>.png`
per model (Fig. 7), and the reproduction record: `env.json` (code, packages, machine, command), `folds.json` (the
row ids of every split) and `predictions/<run>.csv` (each run's validation probabilities).

    # the paper's random 8:2 split, every model, one seed, on all local GPUs
    accelerate launch reproduce.py --dataset kemdy --kemdy19_dir KEMDy19 --kemdy20_dir KEMDy20_v1_1 \
        --output_dir outputs/comparison-kemdy

    # speaker-independent: 5-fold cross-validation over whole sessions
    accelerate launch reproduce.py ... --protocol session_cv --folds 5

    # results.md and the figures again, from results.json alone
    python reproduce.py --render outputs/comparison-kemdy

By default (`--selection held_out`) a model-selection set is held out of each split's training rows (whole sessions
under session_cv): early stopping, the restored checkpoint and the weighted ensemble's weight are chosen on it, and
the validation rows are only ever scored. `--selection validation` chooses them on the scored validation rows, as
the paper did: optimistic, and labelled so in results.md. The reporting itself lives in `hyfuser/comparison.py`.
"""

from __future__ import annotations

import csv
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
from transformers import HfArgumentParser, TrainerState, TrainingArguments, set_seed

from configuration_hyfuser import EMOTION_LABELS, HyFusERConfig
from hyfuser.arguments import (
    CORPUS_DIRECTORIES,
    BackboneArguments,
    CorpusArguments,
    batch_description,
    derive_train_batch_size,
    recipe_defaults,
    use_global_batch,
)
from hyfuser.cache import FEATURE_COLUMNS, cache_features, fit_scaler_on_cache, transcribe_corpus
from hyfuser.comparison import analyse, collapse_reasons, render
from hyfuser.corpora import build_paper_dataset, selection_split, session_folds
from hyfuser.demo import DEMO_DEFAULTS, prepare_demo
from hyfuser.environment import environment_record
from hyfuser.feed import STREAMING_WORKERS, trainer_dataset
from hyfuser.metrics import accuracy, choose_ensemble_weight, fused_logits, per_class_report, prediction_metrics
from hyfuser.probes import fit_linear_probe
from hyfuser.training import (
    PAPER_TRAINING_DEFAULTS,
    model_config,
    place_backbones,
    predict_log_probabilities,
    train_on_features,
)
from modeling_hyfuser import COMPOSED_MODELS, PROBE_MODELS, TRAINABLE_MODELS, ComposedModel
from processing_hyfuser import HyFusERProcessor
from scaling_hyfuser import FeatureStatistics

logger = logging.getLogger(__name__)

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
        if self.protocol == "session_cv" and self.dataset == "aihub":
            raise ValueError(
                "--protocol session_cv needs speaker sessions, and AI-Hub 263 has no speaker or session ids: "
                "use --protocol paper for AI-Hub"
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
    dataset = HfArgumentParser(ReproduceArguments, add_help=False).parse_known_args(argv)[0].dataset
    parser = HfArgumentParser((ReproduceArguments, TrainingArguments))
    parser.set_defaults(**PAPER_TRAINING_DEFAULTS, output_dir="outputs/comparison")
    use_global_batch(parser)
    parser.set_defaults(use_cpu=not torch.accelerator.is_available())
    # Used only when the features stream from the cache on disk (--features_on_device).
    parser.set_defaults(dataloader_num_workers=STREAMING_WORKERS)
    if dataset == "demo":
        parser.set_defaults(**DEMO_DEFAULTS)
    parser.set_defaults(**recipe_defaults(argv))
    args, training_args = parser.parse_args_into_dataclasses(argv)
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


def setup_logging(training_args: TrainingArguments) -> None:
    """Progress and our steps at INFO on the main process; libraries follow --log_level / --log_level_replica."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    library_level = training_args.get_process_log_level()
    for our_logger in (logger, logging.getLogger("hyfuser")):
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
) -> tuple[dict[str, np.ndarray], dict]:
    """Train one model on the split's fit rows, stopping early on its selection rows; return the restored best
    model's log-probabilities on the selection and validation rows (and each head's on validation, for a two-headed
    model) and its learning curve. Its checkpoints are removed afterwards."""
    run_dir = Path(training_args.output_dir) / "runs" / run.name
    with training_args.main_process_first(desc="clearing an unfinished run"):
        if training_args.process_index == 0:
            shutil.rmtree(run_dir, ignore_errors=True)
    set_seed(run.training_seed)
    trainer, selection = train_on_features(
        TRAINABLE_MODELS[run.model](config),
        dataclasses.replace(training_args, output_dir=str(run_dir), seed=run.training_seed),
        processor,
        features.select(split.fit),
        features.select(split.selection),
        early_stopping_patience=args.early_stopping_patience,
        features_on_device=args.features_on_device,
        features_memory_share=args.features_memory_share,
    )
    validation = trainer.predict(trainer_dataset(features.select(split.validation)), metric_key_prefix="validation")
    trainer.save_metrics("validation", validation.metrics)
    if trainer.is_world_process_zero():
        for checkpoint in run_dir.glob("checkpoint-*"):
            shutil.rmtree(checkpoint)
    log_probs = {"selection": fused_logits(selection.predictions), "validation": fused_logits(validation.predictions)}
    if isinstance(validation.predictions, tuple):  # (logits, text_logits, speech_logits)
        log_probs["validation_text_head"], log_probs["validation_speech_head"] = validation.predictions[1:3]
    return log_probs, learning_curve(trainer.state)


def compose_run(run: Run, store: RunStore, selection_labels: np.ndarray) -> tuple[dict[str, np.ndarray], dict]:
    """A composed model's log-probabilities from its members' stored ones (each member is one of its heads), and
    what its record adds: the members' runs and seeds and the first member's weight."""
    members = member_runs(run)
    stored = [store.log_probs(member) for member in members]
    validation, weight = compose(
        COMPOSED_MODELS[run.model],
        [member["selection"] for member in stored],
        [member["validation"] for member in stored],
        selection_labels,
    )
    log_probs = {
        "validation": validation,
        "validation_text_head": stored[0]["validation"],
        "validation_speech_head": stored[1]["validation"],
    }
    extra = {
        "members": [{"run": member.name, "model": member.model, "training_seed": member.training_seed}
                    for member in members],
        "first_member_weight": weight,
        "learning_curve": None,
    }  # fmt: skip
    return log_probs, extra


def fit_probe(
    run: Run, split: Split, features: Dataset, processor: HyFusERProcessor, config: HyFusERConfig
) -> tuple[dict[str, np.ndarray], dict]:
    """Fit one linear probe on the split's fit rows, its L2 penalty chosen on the selection rows; return its
    log-probabilities on the selection and validation rows, and what its record adds: the chosen penalty."""
    probe = PROBE_MODELS[run.model](config)
    l2 = fit_linear_probe(probe, processor, features.select(split.fit), features.select(split.selection))
    log_probs = {
        name: predict_log_probabilities(probe, processor, features.select(indices))
        for name, indices in (("selection", split.selection), ("validation", split.validation))
    }
    return log_probs, {"probe_l2": l2, "learning_curve": None}


def scaling_means(processor: HyFusERProcessor, train_features: Dataset) -> dict[str, dict[str, list[float]]]:
    """Fig. 4's data: the per-dimension means of the text and the speech training features before and after the
    joint scaler (fitted on the same rows)."""
    statistics = {name: FeatureStatistics() for name in FEATURE_COLUMNS}
    # Row by row: native features have a length of their own; every layer's positions count with layer weighting.
    for row in train_features.with_format("numpy", columns=list(FEATURE_COLUMNS)):
        for name in FEATURE_COLUMNS:
            statistics[name].update(row[name])
    before = [statistics[name].mean for name in FEATURE_COLUMNS]
    after = processor.scale(*before)
    return {
        stage: {modality: np.asarray(means).tolist() for modality, means in zip(("text", "speech"), values)}
        for stage, values in (("before", before), ("after", after))
    }


def write_folds(path: Path, rows: Dataset, splits: Sequence[Split]) -> None:
    """folds.json: the row ids of every split's fit, selection and validation sets."""
    ids = rows["id"]
    folds = []
    for split in splits:
        parts = {part: [ids[index] for index in getattr(split, part)] for part in ("fit", "selection", "validation")}
        folds.append({"fold": split.fold, **parts})
    path.write_text(json.dumps(folds, indent=2, ensure_ascii=False))


def write_predictions(folder: Path, run: Run, rows: Dataset, split: Split, validation_log_probs: np.ndarray) -> None:
    """predictions/<run>.csv: id, true label, predicted label and the probability of every emotion, per validation
    row."""
    folder.mkdir(parents=True, exist_ok=True)
    validation = rows.select(split.validation)
    probabilities = np.exp(validation_log_probs)
    with open(folder / f"{run.name}.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "label", "prediction", *EMOTION_LABELS])
        for row_id, label, row in zip(validation["id"], validation["label"], probabilities):
            values = [f"{probability:.6f}" for probability in row]
            writer.writerow([row_id, EMOTION_LABELS[label], EMOTION_LABELS[int(row.argmax())], *values])


def results_document(
    args: ReproduceArguments, seeds: Sequence[int], splits: Sequence[Split], records: Sequence[dict], scaling: dict
) -> dict:
    """results.json: the protocol, every reported run's record, the analysis of `hyfuser.comparison.analyse` and the
    data of Fig. 4, everything `hyfuser.comparison.render` needs."""
    return {
        "dataset": args.dataset,
        "protocol": args.protocol,
        "selection": args.selection,
        "selection_fraction": args.selection_fraction,
        "split_seed": args.split_seed,
        "folds": args.folds if args.protocol == "session_cv" else None,
        "seeds": list(seeds),
        "member_seed_offset": MEMBER_SEED_OFFSET,
        "labels": list(EMOTION_LABELS),
        "splits": [
            {"fold": split.fold, "n_fit": len(split.fit), "n_selection": len(split.selection),
             "n_validation": len(split.validation)}
            for split in splits
        ],  # fmt: skip
        **analyse(records, args.model_names()),
        "runs": list(records),
        "scaling": scaling,
    }


def render_directory(output_dir: Path) -> None:
    """`--render`: results.md and the figures of a finished comparison, from its results.json alone."""
    render(output_dir, json.loads((output_dir / "results.json").read_text()))
    logger.info("Rendered results.md and the figures in %s from its results.json", output_dir)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args, training_args = parse_arguments(argv)
    setup_logging(training_args)
    if args.render:
        render_directory(Path(args.render))
        return
    output_dir = Path(training_args.output_dir)
    code_directory = Path(__file__).resolve().parent
    environment = environment_record(code_directory, training_args.world_size, ["reproduce.py", *argv])
    logger.info("Effective train batch %s", batch_description(args.global_train_batch_size, training_args))

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
        settings = result_settings(args, training_args, training_args.world_size)
        store.check_settings(settings, write=training_args.process_index == 0)
    finished = {run for run in runs if store.finished(run)}
    logger.info(
        "%d runs planned, %d finished earlier (skipped), %d to go", len(runs), len(finished), len(runs) - len(finished)
    )

    # 2. Features of every used row, extracted once for all models, splits and seeds, each process its share on its
    # own device
    place_backbones(processor, training_args.device, args.extraction_dtype)
    features = cache_features(
        DatasetDict(all=rows),
        processor,
        args.cache_dir,
        batch_size=args.extraction_batch_size,
        rebuild=args.rebuild_cache,
    )["all"]
    config = model_config(processor, text_backbone, speech_backbone, args.config_overrides, args.initializer)

    # 3. The runs, split by split; the joint scaler is fitted on each split's fit rows
    labels = np.asarray(rows["label"])
    split_of = {split.fold: split for split in splits}
    scaler_split: Split | None = None
    for number, run in enumerate(runs, start=1):
        split = split_of[run.fold]
        progress = f"[run {number}/{len(runs)}] model={run.model} fold={run.fold} seed={run.training_seed}"
        if run in finished:
            logger.info("%s: finished earlier, skipped", progress)
            continue
        logger.info("%s (%d left after this one)", progress, sum(later not in finished for later in runs[number:]))
        if run.model in COMPOSED_MODELS:
            if training_args.process_index == 0:
                log_probs, extra = compose_run(run, store, labels[split.selection])
                store.save(run, {**run_record(run, rows, split, log_probs), **extra}, log_probs)
            continue
        if scaler_split is not split:
            fit_scaler_on_cache(processor, features.select(split.fit))
            scaler_split = split
        if run.model in PROBE_MODELS:
            if training_args.process_index == 0:
                log_probs, extra = fit_probe(run, split, features, processor, config)
                store.save(run, {**run_record(run, rows, split, log_probs), **extra}, log_probs)
            continue
        log_probs, curve = train_member(run, split, features, processor, config, args, training_args)
        if training_args.process_index == 0:
            store.save(run, {**run_record(run, rows, split, log_probs), "learning_curve": curve}, log_probs)

    if training_args.process_index != 0:
        return

    # 4. Reports: results.json, results.md and the figures; the reproduction record (env.json, folds.json, every
    # run's predictions); Fig. 4 on the first split's fit rows
    if scaler_split is not splits[0]:
        fit_scaler_on_cache(processor, features.select(splits[0].fit))
    records = [
        store.record(reported_run(model, split.fold, seed))
        for split in splits
        for seed in seeds
        for model in args.model_names()
        if model not in PROBE_MODELS or seed == seeds[0]
    ]
    results = results_document(args, seeds, splits, records, scaling_means(processor, features.select(splits[0].fit)))
    (output_dir / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    render(output_dir, results)
    (output_dir / "env.json").write_text(json.dumps(environment, indent=2))
    write_folds(output_dir / "folds.json", rows, splits)
    for run in runs:
        validation = store.log_probs(run)["validation"]
        write_predictions(output_dir / "predictions", run, rows, split_of[run.fold], validation)
    logger.info(
        "Wrote results.json, results.md, the figures, env.json, folds.json and predictions/ to %s:\n%s",
        output_dir,
        (output_dir / "results.md").read_text(encoding="utf-8"),
    )


if __name__ == "__main__":
    main()
