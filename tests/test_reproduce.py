"""reproduce.py: the session folds, the model-selection set, the ensemble weight, the members' seeds, the resume guard,
the statistics and the report; and the whole comparison through its command line on the fixture corpora (tiny
backbones, a tiny model for one epoch, two folds), killed and resumed, and rendered again from its results.json.
"""

import csv
import dataclasses
import enum
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from corpora import write_aihub263, write_kemdy19, write_kemdy20
from datasets import concatenate_datasets
from test_train import DROPOUT_OVERRIDES, OVERRIDES, run
from transformers import TrainingArguments, set_seed

from configuration_hyfuser import HyFusERConfig
from hyfuser.comparison import (
    PAPER_RESULTS,
    collapse_reasons,
    corrected_resampled_t_test,
    paired_comparison,
    results_markdown,
    summary_statistics,
)
from hyfuser.environment import RECORDED_PACKAGES
from hyfuser.reproduction import results_document
from hyfuser.runs import (
    MEMBER_SEED_OFFSET,
    NOT_RESULT_SETTINGS,
    ReproduceArguments,
    Run,
    RunStore,
    Split,
    compose,
    member_runs,
    parse_arguments,
    plan_runs,
    plan_splits,
    reported_run,
    result_settings,
)
from hyfuser.splits import build_paper_dataset, selection_split, session_folds
from modeling_hyfuser import COMPOSED_MODELS, PROBE_MODELS, TRAINABLE_MODELS
from reproduce import main

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURE_SESSIONS = {"KEMDy19/Sess01", "KEMDy19/Sess02", "KEMDy20/Sess01", "KEMDy20/Sess02", "KEMDy20/Sess17"}
"""Every (corpus, session) of the fixture KEMDy corpora that keeps a used row (tests/corpora.py)."""
RESULT_KEYS = {
    "dataset", "protocol", "selection", "selection_fraction", "split_seed", "folds", "seeds", "member_seed_offset",
    "labels", "splits", "models", "summary", "collapsed_runs", "paired", "runs", "scaling",
}  # fmt: skip
RUN_KEYS = {
    "model", "fold", "seed", "member_position", "training_seed", "n_fit", "n_selection", "n_validation", "metrics",
    "per_class_recall", "confusion_matrix", "collapse", "fit_sessions", "selection_sessions", "validation_sessions",
    "learning_curve",
}  # fmt: skip
COMPOSED_RUN_KEYS = {"members", "first_member_weight"}
PROBE_RUN_KEYS = {"probe_l2"}
METRICS = {"accuracy", "precision_weighted", "recall_weighted", "f1_weighted", "f1_macro"}
HEAD_METRICS = {"text_head_accuracy", "speech_head_accuracy"}
TWO_HEADED = {"hyfuser", "hyfuser_step_encoders", *COMPOSED_MODELS}
"""The models whose output has a text-centric and a speech-centric head (a composed model's: its members)."""
EXTRACTION = re.compile(r"Extracting all features for \d+ utterances")
"""The feature cache's log line when the backbones run (progress bars say "Extracting" too)."""


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("corpora")
    return {"kemdy19": write_kemdy19(folder), "kemdy20": write_kemdy20(folder), "aihub": write_aihub263(folder)}


@pytest.fixture(scope="module")
def kemdy_rows(corpora):
    splits = build_paper_dataset(corpora["kemdy19"], corpora["kemdy20"])
    return concatenate_datasets([splits["train"], splits["validation"]])


def sessions_of(rows, indices) -> set[str]:
    return {f"{rows[index]['corpus']}/{rows[index]['session']}" for index in indices}


# --------------------------------------------------------------------------------------------------------------------
# Folds, selection set, ensemble weight (in process)


def test_session_folds_put_every_session_in_exactly_one_validation_fold(kemdy_rows):
    folds = session_folds(kemdy_rows, 2, seed=0)
    assert sorted(index for fold in folds for index in fold) == list(range(len(kemdy_rows)))
    fold_sessions = [sessions_of(kemdy_rows, fold) for fold in folds]
    assert fold_sessions[0].isdisjoint(fold_sessions[1]) and fold_sessions[0] | fold_sessions[1] == FIXTURE_SESSIONS
    assert session_folds(kemdy_rows, 2, seed=0) == folds  # deterministic
    assert len(session_folds(kemdy_rows, 5, seed=0)) == 5  # one session each
    with pytest.raises(ValueError, match="between 2 and the number of sessions \\(5\\)"):
        session_folds(kemdy_rows, 6)


def test_session_folds_refuse_rows_without_sessions(corpora):
    splits = build_paper_dataset(aihub_dir=corpora["aihub"])
    with pytest.raises(ValueError, match="AI-Hub 263 rows have none"):
        session_folds(splits["train"], 2)


def test_the_selection_set_comes_from_the_training_rows_only(kemdy_rows):
    validation = session_folds(kemdy_rows, 2, seed=0)[0]
    train = [index for index in range(len(kemdy_rows)) if index not in set(validation)]
    fit, selection = selection_split(kemdy_rows, train, "session", 0.1, seed=0)
    assert sorted(fit + selection) == train and selection
    assert sessions_of(kemdy_rows, fit).isdisjoint(sessions_of(kemdy_rows, selection))

    fit, selection = selection_split(kemdy_rows, train, "random", 0.5, seed=0)
    assert sorted(fit + selection) == train and selection
    with pytest.raises(ValueError, match="holds out no row of"):
        selection_split(kemdy_rows, train, "random", 0.01)


def test_weighted_ensemble_weight_is_chosen_on_the_selection_set_never_on_validation():
    first, second = np.log([[0.6, 0.4]]), np.log([[0.05, 0.95]])
    # On the selection set the first member is right: w > 0.818 fixes the second's mistake, 0.85 is closest to 0.5.
    # On validation the second member is right, which a weight chosen there would favour.
    weighted, average = COMPOSED_MODELS["weighted_average_ensemble"], COMPOSED_MODELS["average_ensemble"]
    log_probs, weight = compose(weighted, [first, second], [first, second], np.array([0]))
    assert weight == 0.85
    np.testing.assert_allclose(np.exp(log_probs), [[0.85 * 0.6 + 0.15 * 0.05, 0.85 * 0.4 + 0.15 * 0.95]])
    log_probs, weight = compose(average, [first, second], [first, second], np.array([0]))
    assert weight == 0.5
    np.testing.assert_allclose(np.exp(log_probs), [[0.325, 0.675]])


def test_settings_that_cannot_make_a_comparison_fail_with_a_clear_message():
    with pytest.raises(ValueError, match="AI-Hub 263 has no speaker or session ids: use --protocol paper"):
        parse_arguments(["--dataset", "aihub", "--aihub_dir", "x", "--protocol", "session_cv"])
    with pytest.raises(ValueError, match="--models: unknown \\['lstm'\\]"):
        parse_arguments(["--kemdy20_dir", "x", "--models", "hyfuser,lstm"])
    with pytest.raises(ValueError, match="--selection_fraction 0.0: .* use --selection validation"):
        parse_arguments(["--kemdy20_dir", "x", "--selection_fraction", "0"])
    with pytest.raises(ValueError, match=f"--seeds {MEMBER_SEED_OFFSET + 1}: choose between 1 and"):
        parse_arguments(["--kemdy20_dir", "x", "--seeds", str(MEMBER_SEED_OFFSET + 1)])
    parse_arguments(["--kemdy20_dir", "x", "--selection", "validation", "--selection_fraction", "0"])  # unused


def test_the_global_batch_is_the_paper_s_32_split_over_devices_and_accumulation_steps():
    _, training_args = parse_arguments(["--kemdy20_dir", "x"])
    assert training_args.per_device_train_batch_size == 32  # one process, no accumulation
    _, training_args = parse_arguments(["--kemdy20_dir", "x", "--gradient_accumulation_steps", "4"])
    assert training_args.per_device_train_batch_size == 8
    with pytest.raises(ValueError, match=r"--global_train_batch_size 32 cannot be split over 1 device\(s\) x 3 "):
        parse_arguments(["--kemdy20_dir", "x", "--gradient_accumulation_steps", "3"])


def test_validation_selection_chooses_on_the_scored_rows_and_fits_on_all_training_rows(kemdy_rows):
    args, _ = parse_arguments(["--kemdy20_dir", "x", "--protocol", "session_cv", "--folds", "2"])
    held_out = plan_splits(kemdy_rows, 0, args)
    args.selection = "validation"
    paper = plan_splits(kemdy_rows, 0, args)
    for literal, careful in zip(paper, held_out):
        assert literal.validation == literal.selection == careful.validation
        assert sorted(literal.fit) == sorted(careful.fit + careful.selection)
        assert set(careful.selection).isdisjoint(careful.validation)


# --------------------------------------------------------------------------------------------------------------------
# Seeds of composed models' members


def test_composed_models_members_train_from_distinct_recorded_seeds_and_each_run_once():
    runs = plan_runs([*TRAINABLE_MODELS, *COMPOSED_MODELS], [plan_split(fold=0)], seeds=[42])
    assert len(runs) == len(set(runs))
    for name in COMPOSED_MODELS:
        first, second = member_runs(Run(name, 0, 42))
        assert (first.training_seed, second.training_seed) == (42, 42 + MEMBER_SEED_OFFSET)
        assert first in runs and second in runs and runs.index(second) < runs.index(Run(name, 0, 42))
    # hyfuser_separate's second member is kohmt_speech's own row; the seed ensemble needs a second HyFusER run
    assert reported_run("kohmt_speech", 0, 42) == member_runs(Run("hyfuser_separate", 0, 42))[1]
    assert [run.training_seed for run in runs if run.model == "hyfuser"] == [42, 42 + MEMBER_SEED_OFFSET]


def test_probes_run_once_per_split_under_the_first_seed_before_the_composed_models():
    splits = [plan_split(fold=0), plan_split(fold=1)]
    runs = plan_runs(["linear_probe", "hyfuser"], splits, seeds=[42, 43])
    assert [(run.model, run.fold, run.seed) for run in runs] == [
        ("hyfuser", 0, 42), ("linear_probe", 0, 42), ("hyfuser", 0, 43),
        ("hyfuser", 1, 42), ("linear_probe", 1, 42), ("hyfuser", 1, 43),
    ]  # fmt: skip
    with_composed = plan_runs(["hyfuser_separate", "linear_probe"], splits[:1], seeds=[42])
    assert [run.model for run in with_composed][-2:] == ["linear_probe", "hyfuser_separate"]


@pytest.mark.parametrize("name", list(COMPOSED_MODELS))
def test_composed_models_members_start_from_different_weights(name):
    """As `train_member` builds them: seeded with the member's training seed, then constructed."""
    config = HyFusERConfig(hidden_size=8, intermediate_size=8, sequence_length=4, num_hidden_layers=1)
    members = []
    for member in member_runs(Run(name, 0, 42)):
        set_seed(member.training_seed)
        members.append(TRAINABLE_MODELS[member.model](config).state_dict())
    shared = members[0].keys() & members[1].keys()
    equal = [key for key in shared if members[0][key].std() > 0 and members[0][key].equal(members[1][key])]
    assert not equal, f"tensors that start equal in both members: {equal}"


def plan_split(fold: int) -> Split:
    return Split(fold, fit=[0], selection=[1], validation=[2])


# --------------------------------------------------------------------------------------------------------------------
# The resume guard


def result_flags() -> list[str]:
    """Every argument of the two argument dataclasses that is not declared result-neutral, derived here on its own
    so that a flag added to either dataclass is covered without editing this test."""
    arguments = (ReproduceArguments, TrainingArguments)
    names = [argument.name for dataclass_type in arguments for argument in dataclasses.fields(dataclass_type)]
    return [name for name in names if name not in NOT_RESULT_SETTINGS]


def changed(value):
    """A value whose string differs from `value`'s, as the guard compares them."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, enum.Enum):
        return f"{value.value}-changed"
    return f"{value}-changed"  # strings, None, lists, dicts, config objects


@pytest.mark.parametrize("name", [*result_flags(), "num_processes"])
def test_a_rerun_with_any_result_setting_changed_is_refused_naming_it(name, tmp_path):
    args, training_args = parse_arguments(["--kemdy20_dir", "x", "--output_dir", str(tmp_path)])
    store = RunStore(tmp_path)
    store.check_settings(result_settings(args, training_args, 1), write=True)
    store.save(Run("hyfuser", None, 42), {"model": "hyfuser"}, {"validation": np.zeros((1, 7))})
    processes = 2 if name == "num_processes" else 1
    if name != "num_processes":
        target = args if hasattr(args, name) else training_args
        setattr(target, name, changed(getattr(target, name)))
    with pytest.raises(ValueError, match=rf"other settings \{{'{name}': "):
        store.check_settings(result_settings(args, training_args, processes), write=True)


def test_models_seeds_and_where_things_go_may_change_between_invocations(tmp_path):
    arguments = ["--kemdy20_dir", "x", "--output_dir", str(tmp_path)]
    store = RunStore(tmp_path)
    store.check_settings(result_settings(*parse_arguments(arguments), 1), write=True)
    store.save(Run("hyfuser", None, 42), {"model": "hyfuser"}, {"validation": np.zeros((1, 7))})
    others = ["--models", "hyfuser", "--seeds", "3", "--seed", "7", "--cache_dir", str(tmp_path / "elsewhere"),
              "--extraction_batch_size", "2", "--disable_tqdm", "true", "--save_total_limit", "5"]  # fmt: skip
    store.check_settings(result_settings(*parse_arguments([*arguments, *others]), 1), write=True)


# --------------------------------------------------------------------------------------------------------------------
# Statistics and the report (pure functions of run records)

LABELS = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


def test_summary_statistics_are_the_mean_the_sample_std_and_the_count():
    # mean (0.5 + 0.7 + 0.6) / 3 = 0.6; deviations -0.1, 0.1, 0 -> sum of squares 0.02 / (3 - 1) = 0.01 -> std 0.1
    summary = summary_statistics([0.5, 0.7, 0.6])
    assert summary["n"] == 3
    assert summary["mean"] == pytest.approx(0.6) and summary["std"] == pytest.approx(0.1)
    assert summary_statistics([0.8]) == {"mean": 0.8, "std": None, "n": 1}  # one run has no spread to estimate


def test_corrected_resampled_t_test_matches_the_hand_computation():
    # d = 0.02, 0.05, -0.01, 0.03, 0.01 (J = 5), n_test/n_train = 0.25:
    # mean 0.10 / 5 = 0.02; deviations 0, 0.03, -0.03, 0.01, -0.01 -> squares sum 0.002 -> s^2 = 0.002 / 4 = 0.0005;
    # corrected variance (1/5 + 0.25) * 0.0005 = 0.000225 -> sqrt 0.015 -> t = 0.02 / 0.015 = 4/3, dof 4.
    # With 4 dof, P(|T| <= t) = x (3 - x^2) / 2 for x = t / sqrt(t^2 + 4) = 2 / sqrt(13): 35 / (13 sqrt(13)).
    test = corrected_resampled_t_test([0.02, 0.05, -0.01, 0.03, 0.01], test_train_ratio=0.25)
    assert test["t"] == pytest.approx(4 / 3) and test["dof"] == 4
    assert test["p"] == pytest.approx(1 - 35 / (13 * math.sqrt(13)))  # 0.2533
    # Without the correction (ratio 0) it is the plain paired t-test: sqrt(0.0005 / 5) = 0.01, t = 2.
    assert corrected_resampled_t_test([0.02, 0.05, -0.01, 0.03, 0.01], 0.0)["t"] == pytest.approx(2.0)
    assert corrected_resampled_t_test([0.02], 0.25) == {"t": None, "dof": None, "p": None}
    assert corrected_resampled_t_test([0.02, 0.02], 0.25) == {"t": None, "dof": 1, "p": None}


def synthetic_record(model, fold, accuracy, heads=None, matrix=None, n_fit=80, n_validation=20, seed=42):
    """A run record as reproduce.py writes it, with the fields the analysis reads."""
    metrics = dict.fromkeys(METRICS, accuracy)
    if heads:
        metrics.update(text_head_accuracy=heads[0], speech_head_accuracy=heads[1])
    matrix = matrix or np.diag([3] * len(LABELS)).tolist()
    return {"model": model, "fold": fold, "seed": seed, "n_fit": n_fit, "n_validation": n_validation,
            "metrics": metrics, "confusion_matrix": matrix, "collapse": collapse_reasons(matrix, LABELS)}  # fmt: skip


def test_paired_comparison_pairs_runs_by_fold_and_seed():
    hyfuser = [synthetic_record("hyfuser", fold, accuracy) for fold, accuracy in enumerate([0.7, 0.6, 0.8, 0.5])]
    other = [synthetic_record("kohmt", fold, accuracy) for fold, accuracy in enumerate([0.6, 0.6, 0.9])]
    comparison = paired_comparison(hyfuser, other)  # fold 3 has no kohmt run: 3 pairs, differences 0.1, 0, -0.1
    assert (comparison["pairs"], comparison["wins"], comparison["ties"], comparison["losses"]) == (3, 1, 1, 1)
    assert comparison["mean_difference"] == pytest.approx(0.0) and comparison["test_train_ratio"] == 0.25
    assert comparison["t"] == pytest.approx(0.0, abs=1e-12) and comparison["p"] == pytest.approx(1.0)


def test_a_run_is_collapsed_when_a_present_class_is_never_recalled_or_one_class_takes_most_predictions():
    healthy = np.diag([3] * 7)
    assert collapse_reasons(healthy.tolist(), LABELS) == []
    unrecalled = healthy.copy()
    unrecalled[2] = [3, 0, 0, 0, 0, 0, 0]  # every fear row predicted angry
    assert collapse_reasons(unrecalled.tolist(), LABELS) == ["recall 0 for fear"]
    absent = healthy.copy()
    absent[2] = 0  # no fear row at all: nothing to recall
    assert collapse_reasons(absent.tolist(), LABELS) == []
    dominant = np.diag([1] * 7)
    dominant[:, 4] += 2  # every class keeps some recall, but neutral takes 6 x 2 + 3 = 15 of 21 predictions: 71%
    assert collapse_reasons(dominant.tolist(), LABELS) == ["neutral takes 71% of predictions"]


def comparison_results(records, models, *extra_arguments):
    args, _ = parse_arguments(["--kemdy20_dir", "x", "--protocol", "session_cv", "--folds", "2", *extra_arguments])
    args.models = ",".join(models)
    splits = [plan_split(fold) for fold in (0, 1)]
    return results_document(args, [42], splits, records, scaling={})


def test_results_markdown_states_the_protocol_and_puts_the_paper_s_numbers_next_to_the_measured_ones():
    records = [
        synthetic_record("hyfuser", 0, 0.5, heads=(0.4, 0.45)),
        synthetic_record("hyfuser", 1, 0.6, heads=(0.5, 0.55)),
        synthetic_record("kohmt", 0, 0.5),
        synthetic_record("kohmt", 1, 0.5),
    ]
    results = comparison_results(records, ["hyfuser", "kohmt"])
    table = results_markdown(results)
    assert "2-fold cross-validation over whole (corpus, session) groups" in table
    assert "- Selection: `held_out`:" in table and "| 0 | 1 | 1 | 1 |" in table
    assert "In parentheses: the paper's Table 5 number for the same row" in table and "not a like-for-like" in table
    assert "| HyFusER (`hyfuser`) | 55.00 ± 7.07 (paper 67.83) | 0.5500 ± 0.0707 (paper 0.6783) |" in table
    assert "| HyFusER (`hyfuser`) | 55.00 ± 7.07 | 45.00 ± 7.07 | 50.00 ± 7.07 |" in table  # each head alone
    assert "| KoHMT (`kohmt`) | 2 | +5.00 | 1 / 1 / 0 |" in table  # paired: a tie, then 10 points better
    assert results["summary"]["kohmt"].keys() == METRICS  # one head: no head accuracies

    single = comparison_results([synthetic_record("hyfuser", 0, 0.5)], ["hyfuser"], "--selection", "validation")
    table = results_markdown(single)
    assert "| HyFusER (`hyfuser`) | 50.00 (paper 67.83) |" in table and "±" not in table.split("## Results")[1]
    assert "`validation`, **optimistic**" in table
    assert "Table 6" in results_markdown({**single, "dataset": "aihub", "protocol": "paper", "folds": None})
    assert PAPER_RESULTS["aihub"]["hyfuser"]["accuracy"] == 0.7977


def test_results_markdown_counts_collapsed_runs_per_model():
    collapsed = np.zeros((7, 7), dtype=int)
    collapsed[:, 0] = 3  # everything predicted angry
    records = [
        synthetic_record("speech_cnn", 0, 0.14, matrix=collapsed.tolist()),
        synthetic_record("speech_cnn", 1, 0.9),
    ]
    results = comparison_results(records, ["speech_cnn"])
    assert results["collapsed_runs"] == {"speech_cnn": 1}
    table = results_markdown(results)
    assert "| CNN (Speech) (`speech_cnn`) | 1 of 2 |" in table
    reasons = "recall 0 for disgust, fear, happy, neutral, sad, surprise; angry takes 100% of predictions"
    assert f"- `speech_cnn` fold 0, seed 42: {reasons}." in table


# --------------------------------------------------------------------------------------------------------------------
# The command line end to end


@pytest.fixture(scope="module")
def small_run(tiny_backbones, tmp_path_factory) -> list[str]:
    """Tiny backbones and model, one epoch, quiet; the feature cache is shared by this module's runs."""
    return [
        "--text_backbone", tiny_backbones.text, "--speech_backbone", tiny_backbones.speech,
        "--sequence_length", "8", "--config_overrides", OVERRIDES, "--num_train_epochs", "1",
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--disable_tqdm", "true",
        "--cache_dir", str(tmp_path_factory.mktemp("cache")),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def session_cv_arguments(corpora, small_run) -> list[str]:
    return [
        "reproduce.py", "--dataset", "kemdy", "--kemdy19_dir", str(corpora["kemdy19"]),
        "--kemdy20_dir", str(corpora["kemdy20"]), "--protocol", "session_cv", "--folds", "2", "--models", "all",
        *small_run,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hf_home")


@pytest.fixture(scope="module")
def session_cv(session_cv_arguments, hf_home, tmp_path_factory) -> tuple[Path, str]:
    """One uninterrupted two-fold comparison of every model: (output_dir, log)."""
    output_dir = tmp_path_factory.mktemp("session_cv")
    log = run([sys.executable, *session_cv_arguments, "--output_dir", str(output_dir)], hf_home).stdout
    return output_dir, log


def all_models() -> list[str]:
    return [*TRAINABLE_MODELS, *PROBE_MODELS, *COMPOSED_MODELS]


def check_run(entry: dict) -> None:
    """One run's record: its keys, metrics (each head's for two-headed models), per-class recall and confusion matrix
    that agree, and its learning curve (one epoch here), or its members for a composed model."""
    composed, probe = entry["model"] in COMPOSED_MODELS, entry["model"] in PROBE_MODELS
    assert entry.keys() == RUN_KEYS | (COMPOSED_RUN_KEYS if composed else set()) | (PROBE_RUN_KEYS if probe else set())
    assert entry["metrics"].keys() == METRICS | (HEAD_METRICS if entry["model"] in TWO_HEADED else set())
    assert all(0 <= value <= 1 for value in entry["metrics"].values())
    matrix = np.asarray(entry["confusion_matrix"])
    assert matrix.sum() == entry["n_validation"]
    assert np.trace(matrix) / matrix.sum() == pytest.approx(entry["metrics"]["accuracy"])
    for label, row, correct in zip(LABELS, matrix, np.diag(matrix)):
        assert entry["per_class_recall"][label] == pytest.approx(correct / row.sum() if row.sum() else 0.0)
    assert entry["collapse"] == collapse_reasons(entry["confusion_matrix"], LABELS)
    assert entry["training_seed"] == entry["seed"] + MEMBER_SEED_OFFSET * entry["member_position"]
    if composed:
        assert entry["learning_curve"] is None
        first, second = entry["members"]
        assert first["training_seed"] != second["training_seed"]
        return
    if probe:
        assert entry["learning_curve"] is None and entry["seed"] == 42 and entry["probe_l2"] > 0
        return
    curve = entry["learning_curve"]
    assert (curve["epochs_run"], curve["best_epoch"]) == (1.0, 1.0)
    assert [point["epoch"] for point in curve["selection_accuracy"]] == [1.0]
    assert [point["epoch"] for point in curve["train_loss"]] == [1.0] and curve["train_loss"][0]["loss"] > 0


def check_schema(results: dict, folds: int | None, seeds: list[int]) -> None:
    # The probes draw no random numbers: one run per split, under the first seed.
    runs_per_model = {model: (folds or 1) * (1 if model in PROBE_MODELS else len(seeds)) for model in all_models()}
    assert results.keys() == RESULT_KEYS
    assert (results["folds"], results["seeds"], results["labels"]) == (folds, seeds, LABELS)
    assert set(results["models"]) == results["summary"].keys() == set(all_models())
    for model, statistics in results["summary"].items():
        assert statistics.keys() == METRICS | (HEAD_METRICS if model in TWO_HEADED else set())
        assert all(stat.keys() == {"mean", "std", "n"} for stat in statistics.values())
        assert {stat["n"] for stat in statistics.values()} == {runs_per_model[model]}
        assert all((stat["std"] is None) == (runs_per_model[model] == 1) for stat in statistics.values())
    assert len(results["runs"]) == sum(runs_per_model.values())
    for entry in results["runs"]:
        check_run(entry)
    assert results["paired"].keys() == set(all_models()) - {"hyfuser"}
    assert all(comparison["pairs"] == runs_per_model[model] for model, comparison in results["paired"].items())
    assert results["collapsed_runs"] == {
        model: sum(bool(entry["collapse"]) for entry in results["runs"] if entry["model"] == model)
        for model in all_models()
    }
    assert len(results["scaling"]["before"]["text"]) == len(results["scaling"]["after"]["speech"])


def check_reproduction_record(output_dir: Path, results: dict, planned_runs: int) -> None:
    """env.json, folds.json and one predictions file per run, consistent with results.json."""
    environment = json.loads((output_dir / "env.json").read_text())
    assert environment["packages"].keys() == set(RECORDED_PACKAGES) and environment["num_processes"] == 1
    assert re.fullmatch(r"[0-9a-f]{40}", environment["git"]["commit"])
    assert isinstance(environment["git"]["dirty"], bool)
    assert environment["command"][1:3] == ["reproduce.py", "--dataset"] and environment["cpu_model"]

    folds = json.loads((output_dir / "folds.json").read_text())
    for split, sizes in zip(folds, results["splits"]):
        assert [len(split[part]) for part in ("fit", "selection", "validation")] == [
            sizes["n_fit"], sizes["n_selection"], sizes["n_validation"]
        ]  # fmt: skip
        assert len({*split["fit"], *split["selection"], *split["validation"]}) == sum(
            len(split[part]) for part in ("fit", "selection", "validation")
        )

    predictions = sorted((output_dir / "predictions").glob("*.csv"))
    assert len(predictions) == planned_runs
    for entry in results["runs"]:
        name = Run(entry["model"], entry["fold"], entry["seed"], entry["member_position"]).name
        with open(output_dir / "predictions" / f"{name}.csv", encoding="utf-8") as file:
            rows = list(csv.DictReader(file))
        validation = next(split["validation"] for split in folds if split["fold"] == entry["fold"])
        assert [row["id"] for row in rows] == validation
        correct = sum(row["label"] == row["prediction"] for row in rows)
        assert correct / len(rows) == pytest.approx(entry["metrics"]["accuracy"])
        assert all(sum(float(row[label]) for label in LABELS) == pytest.approx(1, abs=1e-4) for row in rows)


@pytest.mark.slow
def test_session_cv_runs_every_model_on_disjoint_session_folds(session_cv):
    output_dir, log = session_cv
    results = json.loads((output_dir / "results.json").read_text())
    assert (results["dataset"], results["protocol"], results["selection"]) == ("kemdy", "session_cv", "held_out")
    check_schema(results, folds=2, seeds=[42])
    planned = len(re.findall(r"\[run \d+/\d+\]", log))
    check_reproduction_record(output_dir, results, planned)

    fold_sessions = {entry["fold"]: set(entry["validation_sessions"]) for entry in results["runs"]}
    assert fold_sessions[0].isdisjoint(fold_sessions[1]) and fold_sessions[0] | fold_sessions[1] == FIXTURE_SESSIONS
    for entry in results["runs"]:
        training = set(entry["fit_sessions"]) | set(entry["selection_sessions"])
        assert training.isdisjoint(entry["validation_sessions"])
        assert training | set(entry["validation_sessions"]) == FIXTURE_SESSIONS
        assert entry["selection_sessions"] and set(entry["fit_sessions"]).isdisjoint(entry["selection_sessions"])

    assert len(EXTRACTION.findall(log)) == 1, log[-3000:]
    assert "Effective train batch 4: 4 per device x 1 device(s)" in log
    assert re.search(r"\[run 1/\d+\] model=\w+ fold=0 seed=42 \(\d+ left after this one\)", log)
    assert re.search(rf"model=kohmt_speech fold=0 seed={42 + MEMBER_SEED_OFFSET} ", log)
    figures = {"comparison.png", "scaling.png", *(f"confusion_{model}.png" for model in all_models())}
    assert all((output_dir / name).stat().st_size > 0 for name in figures)
    table = (output_dir / "results.md").read_text()
    assert "(paper 67.83)" in table and "Table 5" in table and "## `hyfuser` against each model" in table


def test_the_committed_demo_comparison_renders_from_its_results_json_byte_for_byte(tmp_path):
    """docs/demo-comparison/results.md is what `reproduce.py --render` makes of the committed results.json alone."""
    committed = REPO_ROOT / "docs" / "demo-comparison"
    shutil.copy(committed / "results.json", tmp_path / "results.json")
    main(["--render", str(tmp_path)])
    assert (tmp_path / "results.md").read_bytes() == (committed / "results.md").read_bytes()


@pytest.mark.slow
def test_rendering_results_json_again_gives_the_same_results_md(session_cv, tmp_path):
    shutil.copy(session_cv[0] / "results.json", tmp_path / "results.json")
    main(["--render", str(tmp_path)])
    assert (tmp_path / "results.md").read_bytes() == (session_cv[0] / "results.md").read_bytes()
    assert {path.name for path in tmp_path.glob("*.png")} == {path.name for path in session_cv[0].glob("*.png")}


def run_until_second_run_starts(command: list[str], hf_home: Path) -> str:
    """Run a comparison and kill it as soon as it logs the start of its second run; returns its log."""
    environment = {**os.environ, "HF_HOME": str(hf_home), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    log = ""
    for line in process.stdout:
        log += line
        if "[run 2/" in line:
            process.kill()
            break
    process.wait(timeout=60)
    process.stdout.close()
    assert "[run 2/" in log, log[-3000:]
    return log


@pytest.mark.slow
def test_a_killed_comparison_resumes_skipping_finished_runs(session_cv, session_cv_arguments, hf_home, tmp_path):
    """Kill the comparison as soon as its second run starts, then run it again: the first run is not repeated,
    nothing is extracted again, and the results, folds and predictions equal those of the uninterrupted one."""
    output_dir = tmp_path / "resumed"
    command = [sys.executable, *session_cv_arguments, "--output_dir", str(output_dir)]
    run_until_second_run_starts(command, hf_home)
    assert not (output_dir / "results.json").exists()

    log = run(command, hf_home).stdout
    assert re.search(r"\[run 1/\d+\] model=\w+ fold=0 seed=42: finished earlier, skipped", log), log[-3000:]
    assert "1 finished earlier (skipped)" in log
    assert not EXTRACTION.search(log)
    uninterrupted = session_cv[0]
    for name in ("results.json", "results.md", "folds.json"):
        assert (output_dir / name).read_bytes() == (uninterrupted / name).read_bytes(), name
    for predictions in (uninterrupted / "predictions").glob("*.csv"):
        assert (output_dir / "predictions" / predictions.name).read_bytes() == predictions.read_bytes()


@pytest.mark.slow
def test_a_comparison_killed_and_rerun_on_a_warm_cache_repeats_the_uninterrupted_one_exactly(
    session_cv_arguments, hf_home, tmp_path
):
    """With dropout, every random number drawn in a process shows in the weights of the second epoch, which each run
    ends with here: the rerun, whose process reuses the features and so never runs the backbones, repeats the
    uninterrupted comparison (which extracted them) to the last bit of every run's log-probabilities."""
    arguments = [*session_cv_arguments, "--models", "text_lstm,hyfuser", "--config_overrides", DROPOUT_OVERRIDES,
                 "--num_train_epochs", "2", "--early_stopping_patience", "0", "--load_best_model_at_end", "false",
                 "--cache_dir", str(tmp_path / "cache")]  # fmt: skip
    reference_dir, output_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    assert EXTRACTION.search(run([sys.executable, *arguments, "--output_dir", str(reference_dir)], hf_home).stdout)
    command = [sys.executable, *arguments, "--output_dir", str(output_dir)]
    assert not EXTRACTION.search(run_until_second_run_starts(command, hf_home))
    run(command, hf_home)
    expected = json.loads((reference_dir / "results.json").read_text())
    assert json.loads((output_dir / "results.json").read_text()) == expected
    log_probs = sorted(path.name for path in (reference_dir / "runs").glob("*.npz"))
    assert log_probs == sorted(path.name for path in (output_dir / "runs").glob("*.npz")) and len(log_probs) == 4
    for name in log_probs:
        with np.load(reference_dir / "runs" / name) as reference, np.load(output_dir / "runs" / name) as rerun:
            for split in reference.files:
                assert np.array_equal(rerun[split], reference[split]), f"{name}: {split}"


@pytest.mark.slow
def test_runs_made_with_other_settings_are_not_mixed_in(session_cv, session_cv_arguments):
    output_dir = session_cv[0]
    with pytest.raises(ValueError, match=r"other settings \{'folds': \('2', '3'\)\}"):
        main([*session_cv_arguments[1:], "--folds", "3", "--output_dir", str(output_dir)])
    with pytest.raises(ValueError, match=r"other settings \{'max_grad_norm': \('0.0', '1.0'\)\}"):
        main([*session_cv_arguments[1:], "--max_grad_norm", "1.0", "--output_dir", str(output_dir)])


@pytest.mark.slow
def test_paper_protocol_on_aihub_repeats_each_model_with_several_seeds(corpora, small_run, hf_home, tmp_path):
    arguments = [
        "reproduce.py", "--dataset", "aihub", "--aihub_dir", str(corpora["aihub"]), "--seeds", "2",
        "--selection_fraction", "0.2", "--output_dir", str(tmp_path), *small_run,
    ]  # fmt: skip
    log = run([sys.executable, *arguments], hf_home).stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert (results["dataset"], results["protocol"]) == ("aihub", "paper")
    check_schema(results, folds=None, seeds=[42, 43])
    assert {entry["fold"] for entry in results["runs"]} == {None}
    assert {entry["validation_sessions"] for entry in results["runs"]} == {None}
    assert {entry["n_validation"] for entry in results["runs"]} == {7}  # the paper's 8:2 split of 36 rows
    assert "Table 6" in (tmp_path / "results.md").read_text() and "[run 2/" in log


@pytest.mark.slow
def test_validation_selection_runs_the_paper_s_literal_protocol_and_says_it_is_optimistic(
    corpora, small_run, hf_home, tmp_path
):
    arguments = [
        "reproduce.py", "--dataset", "aihub", "--aihub_dir", str(corpora["aihub"]), "--selection", "validation",
        "--models", "hyfuser,kohmt", "--output_dir", str(tmp_path), *small_run,
    ]  # fmt: skip
    run([sys.executable, *arguments], hf_home)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["splits"] == [{"fold": None, "n_fit": 29, "n_selection": 7, "n_validation": 7}]
    table = (tmp_path / "results.md").read_text()
    assert "**optimistic**" in table and "Here the protocol is the same" in table
    assert "| HyFusER (`hyfuser`) | " in table and " ± " not in table.split("| Model | Accuracy (%)")[1]
