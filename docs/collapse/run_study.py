#!/usr/bin/env python
"""The collapse study of docs/collapse/README.md: why a model sometimes never leaves chance, and why one whose loss
still falls gets stopped.

Every experiment is one `reproduce.py` comparison (session cross-validation, several seeds) on a variant of the demo
corpus, with one suspect flipped: a flag of reproduce.py where one exists, else a patch of the model or the batches
that lives here and nowhere else. `report` gathers the finished runs (accuracy, collapse flags, where and why each
stopped) and a logistic-regression probe on the mean-pooled cached features of the same folds into results.json and
results.md next to this file.

    python docs/collapse/run_study.py run demo/baseline demo/pre_norm ...   # or `run all`
    python docs/collapse/run_study.py report

Runs resume (reproduce.py skips finished ones); the features are extracted once per corpus, before any training, so
every run reads a warm cache.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPOSITORY))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from datasets import DatasetDict  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from transformers import AutoTokenizer, TrainerCallback  # noqa: E402

import hyfuser.cache  # noqa: E402
import hyfuser.feed  # noqa: E402
import hyfuser.reproduction  # noqa: E402
import hyfuser.training  # noqa: E402
import modeling_hyfuser  # noqa: E402
from configuration_hyfuser import EMOTION_LABELS  # noqa: E402
from hyfuser.demo import cached_demo  # noqa: E402
from hyfuser.run_setup import build_processor, load_corpora, prepare_corpus, setup_logging  # noqa: E402
from hyfuser.runs import parse_arguments, plan_splits, used_rows  # noqa: E402
from modeling_hyfuser import _masked_mean  # noqa: E402

HERE = Path(__file__).resolve().parent

CORPORA = {
    "demo": ["--dataset", "demo"],
    "text126": ["--dataset", "demo", "--demo_cue", "text", "--sequence_length", "126"],
    "demo_2folds": ["--dataset", "demo", "--folds", "2"],
}
"""The corpus variants: the demo as it ships (a third of the items cued in the text only, a third in the speech only,
a third in both; 32 positions per modality), its text-only variant (every clip the same neutral whisper) at the
paper's 126 positions, where ~100 of each text's positions are padding, and the demo under the 2 folds of the issue's
incident (4 sessions fitted, 1 for selection, 3-4 validated)."""

PROTOCOL = ["--protocol", "session_cv", "--folds", "5", "--num_train_epochs", "15", "--early_stopping_patience", "0"]
"""5-fold session cross-validation (8 sessions: 6 fitted, 1 selection, 1-2 validation). Every run trains 15 epochs
without stopping and records, after each epoch, the selection-set and the validation accuracy (`ValidationCurve`), so
the paper's patience 3, or any other, is replayed exactly from the one run (stopping never changes the epochs before
it). 15, not 30, epochs: the CPU budget; the demo's HyFusER stops by epoch 16 at patience 3 when it learns."""

DEMO_WIDTH = "intermediate_size=64"
"""--dataset demo's own --config_overrides, repeated where an experiment overrides more."""


def text_lengths(tokenizer, features, sequence_length: int) -> list[int]:
    """Each row's real text tokens ([CLS] and [SEP] included) among the `sequence_length` positions the processor
    pads its text to: the cache keeps the features, not the padding mask."""
    inputs = tokenizer(list(features["text"]), truncation=True, max_length=sequence_length)
    return [len(ids) for ids in inputs["input_ids"]]


# --------------------------------------------------------------------------------------------------------------------
# Suspects that are no flag of reproduce.py: patches applied for one experiment only


@contextlib.contextmanager
def _replaced(owner: object, name: str, value: object) -> Iterator[None]:
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def _pre_norm_forward(self, hidden_states, key_value_states=None, attention_mask=None, output_attentions=False):
    """HyFusEREncoderLayer as a pre-norm block: LayerNorm before attention (queries and keys/values alike) and before
    the feed-forward, the residual stream itself never normalised."""
    normed_keys = None if key_value_states is None else self.layer_norm(key_value_states)
    attention_output, weights = self.attention(
        self.layer_norm(hidden_states), normed_keys, attention_mask=attention_mask, output_attentions=output_attentions
    )
    hidden_states = hidden_states + self.dropout(attention_output)
    hidden_states = hidden_states + self.dropout(self.feed_forward(self.final_layer_norm(hidden_states)))
    return hidden_states, weights


@contextlib.contextmanager
def pre_norm(corpus_argv: list[str]) -> Iterator[None]:
    with _replaced(modeling_hyfuser.HyFusEREncoderLayer, "forward", _pre_norm_forward):
        yield


def _text_lstm_masked_forward(self, text_features, speech_features=None, labels=None, text_attention_mask=None):
    """HyFusERTextLSTM pooling over the real tokens only (the LSTM reads left to right, so its states at real tokens
    never see the padding after them)."""
    states, _ = self.lstm(self._check_features("text_features", text_features))
    return self._one_head_output(self.classifier(self.dropout(_masked_mean(states, text_attention_mask))), labels)


@contextlib.contextmanager
def masked_text(corpus_argv: list[str]) -> Iterator[None]:
    """Give every batch the text's padding mask (recomputed from the transcripts with the backbone's tokenizer, as the
    processor pads them): HyFusER keeps padding out of its attention keys and its pooling, as with
    `--feature_mode native`; the text LSTM out of its pooling."""
    args, _ = parse_arguments([*corpus_argv, "--models", "text_lstm"])
    demo = cached_demo(args.cache_dir, cue=args.demo_cue)
    tokenizer = AutoTokenizer.from_pretrained(demo.backbones.text)
    positions = np.arange(args.sequence_length)
    original_collate = hyfuser.feed.collate_scaled_features

    def trainer_dataset(features):
        masks = [(positions < length).astype(np.int64) for length in text_lengths(tokenizer, features, positions.size)]
        with_mask = features.add_column("text_attention_mask", masks)
        columns = [*hyfuser.cache.FEATURE_COLUMNS, "label", "text_attention_mask"]
        return with_mask.select_columns(columns).with_format("torch")

    def collate(examples, processor):
        batch = original_collate(examples, processor)
        batch["text_attention_mask"] = torch.stack([example["text_attention_mask"] for example in examples])
        return batch

    with contextlib.ExitStack() as stack:
        stack.enter_context(_replaced(hyfuser.feed, "trainer_dataset", trainer_dataset))
        stack.enter_context(_replaced(hyfuser.reproduction, "trainer_dataset", trainer_dataset))
        stack.enter_context(_replaced(hyfuser.feed, "collate_scaled_features", collate))
        stack.enter_context(_replaced(modeling_hyfuser.HyFusERTextLSTM, "forward", _text_lstm_masked_forward))
        yield


@dataclass(frozen=True)
class Suspect:
    """One switch: reproduce.py flags on top of the corpus's, and a patch (None: none)."""

    argv: tuple[str, ...] = ()
    patch: Callable[[list[str]], contextlib.AbstractContextManager] | None = None
    what: str = ""


SUSPECTS = {
    "baseline": Suspect(what="the paper's recipe (demo: lr 1e-3, constant, post-norm, normal(0, 0.02), Eq. 9 loss)"),
    "warmup": Suspect(
        ("--lr_scheduler_type", "constant_with_warmup", "--warmup_steps", "0.1"),
        what="linear warm-up over the first 10% of the steps, then constant",
    ),
    "pre_norm": Suspect(patch=pre_norm, what="pre-norm encoder layers and cross-modal steps"),
    "glorot_init": Suspect(("--initializer", "glorot_uniform"), what="Glorot-uniform linear layers (Keras's default)"),
    "head_losses": Suspect(
        ("--config_overrides", f"{DEMO_WIDTH},use_modality_losses=true"),
        what="each head's own cross-entropy added to Eq. 9's",
    ),
    "lr1e-4": Suspect(("--learning_rate", "1e-4"), what="the paper's learning rate"),
    "masked": Suspect(patch=masked_text, what="text padding masked out of pooling (and HyFusER's attention keys)"),
}

EXPERIMENTS = {
    "demo/baseline": (("hyfuser", 3), ("text_lstm", 1)),
    "text126/baseline": (("text_lstm", 1),),
    "text126/masked": (("text_lstm", 1),),
    "text126/glorot_init": (("text_lstm", 1),),
    "demo/pre_norm": (("hyfuser", 1),),
    "demo/warmup": (("hyfuser", 1),),
    "demo/head_losses": (("hyfuser", 1),),
    "demo/glorot_init": (("hyfuser", 3),),
    "demo_2folds/baseline": (("hyfuser", 1), ("text_lstm", 1)),
    "demo_2folds/glorot_init": (("hyfuser", 1),),
    "demo/lr1e-4": (("hyfuser", 1),),
}
"""Every experiment, `corpus/suspect`, as the models it trains, each with its seeds per fold (the first seed, 42, is
every experiment's, so a suspect's runs pair with the baseline's on the same fold and seed)."""


def corpus_argv(corpus: str, cache_dir: str) -> list[str]:
    return [*PROTOCOL, *CORPORA[corpus], "--cache_dir", cache_dir, "--disable_tqdm", "true", "--report_to", "none"]


def experiment_argv(name: str, models: str, seeds: int, cache_dir: str, output_dir: str) -> list[str]:
    corpus, suspect = name.split("/")
    return [
        *corpus_argv(corpus, cache_dir),
        "--models",
        models,
        "--seeds",
        str(seeds),
        *SUSPECTS[suspect].argv,
        "--output_dir",
        str(Path(output_dir) / name),
    ]


def reproduce(argv: list[str]) -> None:
    """`python reproduce.py <argv>`, in this process, so that an experiment's patches apply to it."""
    args, training_args = parse_arguments(argv)
    setup_logging(training_args)
    hyfuser.reproduction.run_comparison(args, training_args, ["reproduce.py", *argv])


def run_experiment(name: str, cache_dir: str, output_dir: str) -> None:
    corpus, suspect = name.split("/")
    extract(corpus, cache_dir)  # a warm cache before the first run
    patch = SUSPECTS[suspect].patch
    for models, seeds in EXPERIMENTS[name]:
        argv = experiment_argv(name, models, seeds, cache_dir, output_dir)
        print(f"== {name}: reproduce.py {' '.join(argv)}", flush=True)
        started = time.time()
        with contextlib.ExitStack() as stack:
            stack.enter_context(recording_validation_curves())
            if patch:
                stack.enter_context(patch(corpus_argv(corpus, cache_dir)))
            reproduce(argv)
        print(f"== {name} {models}: {time.time() - started:.0f} s", flush=True)


class ValidationCurve(TrainerCallback):
    """After each evaluation on the selection set, the validation accuracy of the same weights, written to
    `<run>/validation_curve.json`. It is recorded, never used to choose anything; evaluating draws no random numbers,
    so the run trains exactly as without it."""

    def __init__(self, validation, collate):
        self.validation, self.collate, self.curve = validation, collate, []

    def on_evaluate(self, args, state, control, model=None, metrics=None, **kwargs):
        was_training, predictions, labels = model.training, [], []
        model.eval()
        with torch.no_grad():
            for start in range(0, len(self.validation), 64):
                rows = range(start, min(start + 64, len(self.validation)))
                batch = self.collate([self.validation[index] for index in rows])
                labels += batch.pop("labels").tolist()
                predictions += model(**batch).logits.argmax(-1).tolist()
        model.train(was_training)
        self.curve.append(
            {
                "epoch": state.epoch,
                "selection_accuracy": metrics["eval_accuracy"],
                "validation_accuracy": float(np.mean(np.array(predictions) == np.array(labels))),
                "validation_predictions": predictions,
            }
        )
        (Path(args.output_dir) / "validation_curve.json").write_text(json.dumps(self.curve))


@contextlib.contextmanager
def recording_validation_curves() -> Iterator[None]:
    """Every run of reproduce.py records its `ValidationCurve`."""
    current = {}
    original_member, original_trainer = hyfuser.reproduction.train_member, hyfuser.training.Trainer

    def train_member(run, split, features, *args, **kwargs):
        current["validation"] = hyfuser.feed.trainer_dataset(features.select(split.validation))
        return original_member(run, split, features, *args, **kwargs)

    class RecordingTrainer(original_trainer):
        def __init__(self, *args, callbacks=None, **kwargs):
            curve = ValidationCurve(current["validation"], kwargs["data_collator"])
            super().__init__(*args, callbacks=[*(callbacks or []), curve], **kwargs)

    with (
        _replaced(hyfuser.reproduction, "train_member", train_member),
        _replaced(hyfuser.training, "Trainer", RecordingTrainer),
    ):
        yield


# --------------------------------------------------------------------------------------------------------------------
# The features, the folds and the linear probe


def extract(corpus: str, cache_dir: str):
    """reproduce.py's rows, folds and cached features (extracted here if absent) of `corpus`."""
    args, _ = parse_arguments([*corpus_argv(corpus, cache_dir), "--models", "text_lstm"])
    demo = prepare_corpus(args)
    rows, paper_train_rows = used_rows(load_corpora(args, demo)[0])
    processor = build_processor(args, args, demo, "cpu")
    splits = plan_splits(rows, paper_train_rows, args)
    features = hyfuser.cache.cache_features(DatasetDict(all=rows), processor, args.cache_dir)["all"]
    return args, processor, splits, features


def pooled_features(corpus: str, cache_dir: str) -> tuple[dict[str, np.ndarray], np.ndarray, list, dict]:
    """Mean-pooled unscaled features per row (text over all positions and over the real tokens only, speech, both),
    the labels, the folds, and the scale statistics the issue quotes."""
    args, processor, splits, features = extract(corpus, cache_dir)
    arrays = features.with_format("numpy", columns=list(hyfuser.cache.FEATURE_COLUMNS))[:]
    text, speech = arrays["text_features"].astype(np.float32), arrays["speech_features"].astype(np.float32)
    lengths = np.array(text_lengths(processor.tokenizer, features, args.sequence_length))
    mask = (np.arange(args.sequence_length)[None, :] < lengths[:, None]).astype(np.float32)[..., None]
    pooled = {
        "text": text.mean(1),
        "text_real_tokens": (text * mask).sum(1) / mask.sum(1),
        "speech": speech.mean(1),
    }
    pooled["both"] = np.concatenate([pooled["text"], pooled["speech"]], axis=1)
    # The model sees jointly scaled features: the pooled spread after the scaler fitted on the first fold's rows.
    hyfuser.cache.fit_scaler_on_cache(processor, features.select(splits[0].fit))
    scaled_text, scaled_speech = processor.scale(text, speech)
    statistics = {
        "real_token_fraction": float(lengths.mean() / args.sequence_length),
        "pooled_std_per_dim_scaled": {
            "text": float(scaled_text.mean(1).std(0).mean()),
            "speech": float(scaled_speech.mean(1).std(0).mean()),
        },
        "position_std_per_dim_scaled": {
            "text": float(scaled_text.reshape(-1, text.shape[-1]).std(0).mean()),
            "speech": float(scaled_speech.reshape(-1, speech.shape[-1]).std(0).mean()),
        },
    }
    return pooled, np.asarray(features["label"]), splits, statistics


def linear_probe(pooled: dict[str, np.ndarray], labels: np.ndarray, splits: list) -> dict[str, list[float]]:
    """Validation accuracy per fold of a logistic regression (standardised inputs, L2, C=1, no tuning) fitted on the
    fold's fit rows, for each pooled input."""
    accuracies = {}
    for name, inputs in pooled.items():
        accuracies[name] = []
        for split in splits:
            scaler = StandardScaler().fit(inputs[split.fit])
            probe = LogisticRegression(max_iter=2000).fit(scaler.transform(inputs[split.fit]), labels[split.fit])
            validation = scaler.transform(inputs[split.validation])
            accuracies[name].append(float(probe.score(validation, labels[split.validation])))
    return accuracies


# --------------------------------------------------------------------------------------------------------------------
# The report

COLLAPSE_SHARE = 0.6
"""A run collapsed when some class has zero recall on its validation rows or one class takes more than this share of
its predictions."""

STILL_FALLING = 0.02
"""A stopped run's training loss was still falling when its last epoch's is this much (nats) below three epochs
before."""


STOPPING_RULES = {"patience3": (3, 1), "patience3_from_epoch8": (3, 8), "patience10": (10, 1), "none": (0, 1)}
"""Early-stopping rules replayed on each run's curves: (patience, the first epoch it may stop at); 'patience3' is the
paper's (Table 3), 'none' trains all epochs. Each restores its best selection-set epoch, as the Trainer does."""


def replay(selection: list[float], patience: int, first_stop: int) -> tuple[int, int]:
    """(epochs trained, restored epoch), both 1-based, of EarlyStoppingCallback(patience) with the Trainer's best
    checkpoint: a strictly better selection accuracy resets the count; the first best epoch is restored."""
    best, best_epoch, waited = -math.inf, 0, 0
    for epoch, accuracy in enumerate(selection, start=1):
        if accuracy > best:
            best, best_epoch, waited = accuracy, epoch, 0
        else:
            waited += 1
        if patience and waited >= patience and epoch >= first_stop:
            return epoch, best_epoch
    return len(selection), best_epoch


def _collapse(predictions: np.ndarray, truth: np.ndarray) -> dict[str, bool]:
    recalls = [(predictions[truth == label] == label).mean() for label in range(len(EMOTION_LABELS))]
    largest_share = np.bincount(predictions, minlength=len(EMOTION_LABELS)).max() / len(predictions)
    return {"zero_recall_class": bool(min(recalls) == 0.0), "dominant_class": bool(largest_share > COLLAPSE_SHARE)}


def run_summary(run_dir: Path, record: dict, truth: np.ndarray) -> dict:
    """One run under every stopping rule: epochs trained, the restored epoch, its validation accuracy and collapse
    flags, and whether the rule stopped it while its training loss still fell."""
    with np.load(run_dir.parent / f"{run_dir.name}.npz") as arrays:
        restored_predictions = arrays["validation"].argmax(-1)
    curve = json.loads((run_dir / "validation_curve.json").read_text())
    selection = [point["selection_accuracy"] for point in curve]
    history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    rules = {}
    for rule, (patience, first_stop) in STOPPING_RULES.items():
        epochs, restored = replay(selection, patience, first_stop)
        predictions = np.array(curve[restored - 1]["validation_predictions"])
        rules[rule] = {
            "epochs": epochs,
            "restored_epoch": restored,
            "accuracy": curve[restored - 1]["validation_accuracy"],
            **_collapse(predictions, truth),
            "stopped_while_loss_fell": 3 < epochs < len(losses)
            and losses[epochs - 4] - losses[epochs - 1] > STILL_FALLING,
        }
    # The replay checked against the real run: 'none' is what reproduce.py trained and restored.
    restored = curve[rules["none"]["restored_epoch"] - 1]["validation_predictions"]
    if not np.array_equal(np.array(restored), restored_predictions):
        raise RuntimeError(f"{run_dir.name}: the replayed restore is not the restored model")
    return {
        "model": record["model"],
        "fold": record["fold"],
        "seed": record["seed"],
        "n_selection": record["n_selection"],
        "rules": rules,
        "selection_curve": selection,
        "validation_curve": [point["validation_accuracy"] for point in curve],
        "train_loss_curve": losses,
    }


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}


def summarize_experiment(name: str, output_dir: Path, labels: np.ndarray, splits: list) -> dict | None:
    folder = output_dir / name / "runs"
    if not folder.exists():
        return None
    validation_of = {split.fold: split.validation for split in splits}
    runs = []
    for record_path in sorted(folder.glob("*.json")):
        if record_path.name != "settings.json":
            record = json.loads(record_path.read_text())
            runs.append(run_summary(record_path.with_suffix(""), record, labels[validation_of[record["fold"]]]))
    models = {}
    for model in dict.fromkeys(run["model"] for run in runs):
        own = [run for run in runs if run["model"] == model]
        models[model] = {"n": len(own)}
        for rule in STOPPING_RULES:
            accuracies = [run["rules"][rule]["accuracy"] for run in own]
            models[model][rule] = {
                "accuracy": _mean_std(accuracies),
                "worst": min(accuracies),
                "collapsed": sum(
                    run["rules"][rule]["zero_recall_class"] or run["rules"][rule]["dominant_class"] for run in own
                ),
                "zero_recall_class": sum(run["rules"][rule]["zero_recall_class"] for run in own),
                "dominant_class": sum(run["rules"][rule]["dominant_class"] for run in own),
                "epochs": _mean_std([run["rules"][rule]["epochs"] for run in own]),
                "stopped_while_loss_fell": sum(run["rules"][rule]["stopped_while_loss_fell"] for run in own),
            }
    return {"suspect": SUSPECTS[name.split("/")[1]].what, "models": models, "runs": runs}


def cpu_model() -> str:
    lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), "unknown")


def report(cache_dir: str, output_dir: str) -> None:
    results = {"cpu": cpu_model(), "protocol": " ".join(PROTOCOL), "corpora": {}, "experiments": {}}
    for corpus in CORPORA:
        pooled, labels, splits, statistics = pooled_features(corpus, cache_dir)
        probe = linear_probe(pooled, labels, splits)
        results["corpora"][corpus] = {
            "argv": CORPORA[corpus],
            "rows": len(labels),
            "linear_probe": {name: {**_mean_std(values), "folds": values} for name, values in probe.items()},
            **statistics,
        }
        for name in EXPERIMENTS:
            if name.startswith(f"{corpus}/"):
                summary = summarize_experiment(name, Path(output_dir), labels, splits)
                if summary:
                    results["experiments"][name] = summary
    add_paired_baselines(results)
    (HERE / "results.json").write_text(json.dumps(results, indent=1))
    (HERE / "results.md").write_text(results_markdown(results))
    print((HERE / "results.md").read_text())


def add_paired_baselines(results: dict) -> None:
    """Beside each suspect, its corpus's baseline on the same (fold, seed) runs, per stopping rule: a paired
    comparison."""
    for name, experiment in results["experiments"].items():
        corpus, suspect = name.split("/")
        baseline = results["experiments"].get(f"{corpus}/baseline")
        if suspect == "baseline" or baseline is None:
            continue
        for model, row in experiment["models"].items():
            own = {(run["fold"], run["seed"]) for run in experiment["runs"] if run["model"] == model}
            paired = [run for run in baseline["runs"] if run["model"] == model and (run["fold"], run["seed"]) in own]
            if len(paired) == len(own):
                row["paired_baseline"] = {
                    rule: _mean_std([run["rules"][rule]["accuracy"] for run in paired]) for rule in STOPPING_RULES
                }


def results_markdown(results: dict) -> str:
    lines = [f"# Collapse study: measured ({results['protocol']}; CPU: {results['cpu']})", ""]
    for corpus, facts in results["corpora"].items():
        probe = facts["linear_probe"]
        lines += [
            f"## `{corpus}`: reproduce.py {' '.join(facts['argv'])}",
            "",
            f"{facts['rows']} rows; real tokens {facts['real_token_fraction']:.0%} of the text positions; pooled "
            f"per-dimension std after the joint scaler: text {facts['pooled_std_per_dim_scaled']['text']:.3f}, speech "
            f"{facts['pooled_std_per_dim_scaled']['speech']:.3f} (per position: "
            f"{facts['position_std_per_dim_scaled']['text']:.3f}, "
            f"{facts['position_std_per_dim_scaled']['speech']:.3f}).",
            "",
            "Linear probe (logistic regression on mean-pooled features, same folds): "
            + ", ".join(f"{name} {value['mean']:.3f} ± {value['std']:.3f}" for name, value in probe.items()),
            "",
            "| experiment | model | runs | stopping | accuracy | baseline, same runs | worst | collapsed "
            "(zero-recall class / one class > 60%) | epochs | stopped while loss fell |",
            "|" + " --- |" * 10,
        ]
        for name, experiment in results["experiments"].items():
            if not name.startswith(f"{corpus}/"):
                continue
            for model, row in experiment["models"].items():
                for rule in STOPPING_RULES:
                    cells = row[rule]
                    paired = row.get("paired_baseline", {}).get(rule)
                    paired = f"{paired['mean']:.3f} ± {paired['std']:.3f}" if paired else ""
                    lines.append(
                        f"| {name.split('/')[1]} | {model} | {row['n']} | {rule} | {cells['accuracy']['mean']:.3f} ± "
                        f"{cells['accuracy']['std']:.3f} | {paired} | {cells['worst']:.3f} | {cells['collapsed']} "
                        f"({cells['zero_recall_class']} / "
                        f"{cells['dominant_class']}) | "
                        f"{cells['epochs']['mean']:.1f} | {cells['stopped_while_loss_fell']} |"
                    )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "report"))
    parser.add_argument("experiments", nargs="*", help=f"'all' or among {list(EXPERIMENTS)}")
    parser.add_argument("--cache_dir", default=str(REPOSITORY / "outputs" / "collapse-cache"))
    parser.add_argument("--output_dir", default=str(REPOSITORY / "outputs" / "collapse"))
    options = parser.parse_intermixed_args()
    # The models are tiny: intra-op threads only contend with each other (and with whatever else runs).
    torch.set_num_threads(1)
    if options.command == "report":
        report(options.cache_dir, options.output_dir)
        return
    names = list(EXPERIMENTS) if options.experiments in ([], ["all"]) else options.experiments
    for name in names:
        if name not in EXPERIMENTS:
            parser.error(f"unknown experiment {name!r}; choose among {list(EXPERIMENTS)}")
    for name in names:
        run_experiment(name, options.cache_dir, options.output_dir)


if __name__ == "__main__":
    main()
