"""The model comparison from the corpus to the reports, what `reproduce.py` runs: the front half every run shares
(`hyfuser.run_setup`), then every planned run (`hyfuser.runs`) trained, fitted or composed, and `results.json`,
`results.md`, the figures (`hyfuser.comparison`) and the reproduction record written."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict
from transformers import TrainingArguments, set_seed

from configuration_hyfuser import EMOTION_LABELS, HyFusERConfig
from hyfuser.arguments import batch_description
from hyfuser.cache import FEATURE_COLUMNS, cache_features, fit_scaler_on_cache
from hyfuser.comparison import analyse, render
from hyfuser.environment import environment_record
from hyfuser.feed import trainer_dataset
from hyfuser.metrics import fused_logits
from hyfuser.probes import fit_linear_probe
from hyfuser.run_setup import build_processor, load_corpora, prepare_corpus, with_transcripts
from hyfuser.runs import (
    MEMBER_SEED_OFFSET,
    ReproduceArguments,
    Run,
    RunStore,
    Split,
    compose,
    learning_curve,
    member_runs,
    plan_runs,
    plan_splits,
    reported_run,
    result_settings,
    run_record,
    used_rows,
)
from hyfuser.training import model_config, predict_log_probabilities, train_on_features
from modeling_hyfuser import COMPOSED_MODELS, PROBE_MODELS, TRAINABLE_MODELS
from processing_hyfuser import HyFusERProcessor
from scaling_hyfuser import FeatureStatistics

logger = logging.getLogger(__name__)

CODE_DIRECTORY = Path(__file__).resolve().parent.parent
"""The repository whose code runs the comparison, as `env.json` records it."""


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


def run_comparison(args: ReproduceArguments, training_args: TrainingArguments, command: list[str]) -> None:
    """The whole comparison into --output_dir; `command` is the invocation `env.json` records."""
    output_dir = Path(training_args.output_dir)
    environment = environment_record(CODE_DIRECTORY, training_args.world_size, command)
    logger.info("Effective train batch %s", batch_description(args.global_train_batch_size, training_args))

    # 1. Data: every used row once; the splits and the runs, and which of them finished before. The transcripts come
    # before the splits, which index the rows the recognizer heard words in.
    with training_args.main_process_first(desc="dataset preparation"):
        demo = prepare_corpus(args)
        paper_splits, _ = load_corpora(args, demo)
    processor = build_processor(args, args, demo, training_args.device)
    rows, paper_train_rows = used_rows(with_transcripts(paper_splits, processor, args, training_args))
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
    features = cache_features(
        DatasetDict(all=rows),
        processor,
        args.cache_dir,
        batch_size=args.extraction_batch_size,
        rebuild=args.rebuild_cache,
    )["all"]
    config = model_config(processor, args.config_overrides, args.initializer)

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

