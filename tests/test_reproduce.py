"""reproduce.py: the session folds, the model-selection set, the ensemble weight, and the whole comparison through its
command line on the fixture corpora (tiny backbones, a tiny model for one epoch, two folds), killed and resumed.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datasets import concatenate_datasets

from corpora import write_aihub263, write_kemdy19, write_kemdy20
from data_hyfuser import build_paper_dataset, selection_split, session_folds
from modeling_hyfuser import COMPOSED_MODELS, TRAINABLE_MODELS
from reproduce import PAPER_RESULTS, compose, main, parse_arguments, results_markdown
from test_train import DROPOUT_OVERRIDES, OVERRIDES, run

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURE_SESSIONS = {"KEMDy19/Sess01", "KEMDy19/Sess02", "KEMDy20/Sess01", "KEMDy20/Sess02", "KEMDy20/Sess17"}
"""Every (corpus, session) of the fixture KEMDy corpora that keeps a used row (tests/corpora.py)."""
RESULT_KEYS = {"dataset", "protocol", "folds", "seeds", "runs", "summary"}
RUN_KEYS = {"model", "fold", "seed", "validation_sessions", "n_validation", "metrics"}
METRICS = {"accuracy", "precision_weighted", "recall_weighted", "f1_weighted", "f1_macro"}
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


def test_session_cv_on_aihub_fails_with_a_clear_message():
    with pytest.raises(ValueError, match="AI-Hub 263 has no speaker or session ids: use --protocol paper"):
        parse_arguments(["--dataset", "aihub", "--aihub_dir", "x", "--protocol", "session_cv"])
    with pytest.raises(ValueError, match="--models: unknown \\['lstm'\\]"):
        parse_arguments(["--kemdy20_dir", "x", "--models", "hyfuser,lstm"])


def test_results_markdown_puts_the_paper_s_numbers_next_to_the_measured_ones():
    measured = {metric: {"mean": 0.5, "std": 0.01, "n": 5} for metric in METRICS}
    table = results_markdown("kemdy", "session_cv", {"hyfuser": measured, "newcomer": measured})
    assert "| HyFusER (`hyfuser`) | 50.00 ± 1.00 (paper 67.83) | 0.5000 ± 0.0100 (paper 0.6783) |" in table
    assert "| `newcomer` | 50.00 ± 1.00 | 0.5000 ± 0.0100 |" in table
    assert "Table 6" in results_markdown("aihub", "paper", {"hyfuser": measured})
    assert PAPER_RESULTS["aihub"]["hyfuser"]["accuracy"] == 0.7977


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
    return [*TRAINABLE_MODELS, *COMPOSED_MODELS]


def check_schema(results: dict, folds: int | None, seeds: list[int]) -> None:
    assert results.keys() == RESULT_KEYS
    assert (results["folds"], results["seeds"]) == (folds, seeds)
    assert results["summary"].keys() == set(all_models())
    for statistics in results["summary"].values():
        assert statistics.keys() == METRICS
        assert all(stat.keys() == {"mean", "std", "n"} for stat in statistics.values())
        assert {stat["n"] for stat in statistics.values()} == {(folds or 1) * len(seeds)}
    assert len(results["runs"]) == len(all_models()) * (folds or 1) * len(seeds)
    for entry in results["runs"]:
        assert entry.keys() == RUN_KEYS and entry["metrics"].keys() == METRICS
        assert all(0 <= value <= 1 for value in entry["metrics"].values())


@pytest.mark.slow
def test_session_cv_runs_every_model_on_disjoint_session_folds(session_cv):
    output_dir, log = session_cv
    results = json.loads((output_dir / "results.json").read_text())
    assert (results["dataset"], results["protocol"]) == ("kemdy", "session_cv")
    check_schema(results, folds=2, seeds=[42])

    fold_sessions = {entry["fold"]: set(entry["validation_sessions"]) for entry in results["runs"]}
    assert fold_sessions[0].isdisjoint(fold_sessions[1]) and fold_sessions[0] | fold_sessions[1] == FIXTURE_SESSIONS
    for record_file in (output_dir / "runs").glob("*-seed*.json"):
        record = json.loads(record_file.read_text())
        training = set(record["training_sessions"]) | set(record["selection_sessions"])
        assert training.isdisjoint(record["validation_sessions"]), record_file.name
        assert training | set(record["validation_sessions"]) == FIXTURE_SESSIONS
        assert record["selection_sessions"] and set(record["training_sessions"]).isdisjoint(
            record["selection_sessions"]
        )

    assert len(EXTRACTION.findall(log)) == 1, log[-3000:]
    assert re.search(r"\[run 1/\d+\] model=\w+ fold=0 seed=42 \(\d+ left after this one\)", log)
    figures = {"comparison.png", "scaling.png", *(f"confusion_{model}.png" for model in all_models())}
    assert all((output_dir / name).stat().st_size > 0 for name in figures)
    table = (output_dir / "results.md").read_text()
    assert "(paper 67.83)" in table and "Table 5" in table


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
    nothing is extracted again, and the results equal those of the uninterrupted comparison."""
    output_dir = tmp_path / "resumed"
    command = [sys.executable, *session_cv_arguments, "--output_dir", str(output_dir)]
    run_until_second_run_starts(command, hf_home)
    assert not (output_dir / "results.json").exists()

    log = run(command, hf_home).stdout
    assert re.search(r"\[run 1/\d+\] model=\w+ fold=0 seed=42: finished earlier, skipped", log), log[-3000:]
    assert "1 finished earlier (skipped)" in log
    assert not EXTRACTION.search(log)
    expected = json.loads((session_cv[0] / "results.json").read_text())
    assert json.loads((output_dir / "results.json").read_text()) == expected


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
