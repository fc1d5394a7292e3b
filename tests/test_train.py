"""train.py through its real command line: training on the fixture corpora, saving, serving, feature cache, two
processes, early stopping and resuming. Plus in-process checks of the argument defaults and the metrics.

Every run uses the tiny backbones and a tiny HyFusER (sequence length 8, one layer), so each CLI run costs mostly
interpreter start-up. The fixture KEMDy corpora give 18 training and 2 validation utterances: with a global batch of
6 that is 3 optimisation steps per epoch, in one process (batch 6) or two (3 each).
"""

import functools
import json
import logging
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from corpora import KEMDY19_SEGMENTS, write_aihub263, write_kemdy19, write_kemdy20
from datasets import Dataset, concatenate_datasets
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from train_script import TRAIN
from transformers import EvalPrediction

from configuration_hyfuser import DEFAULT_SPEECH_BACKBONE, DEFAULT_TEXT_BACKBONE, EMOTION_LABELS
from hyfuser.cache import FEATURE_COLUMNS
from hyfuser.metrics import METRIC_TITLES, compute_metrics, per_class_report
from hyfuser.run_setup import load_corpora
from hyfuser.splits import build_paper_dataset
from modeling_hyfuser import HyFusERForEmotionRecognition
from processing_hyfuser import HyFusERProcessor

REPO_ROOT = Path(__file__).resolve().parent.parent
parse_arguments = TRAIN["parse_arguments"]
STEPS_PER_EPOCH = 3
"""18 training utterances / global batch 6, on any number of processes that divides it."""

OVERRIDES = "intermediate_size=16,num_hidden_layers=1,hidden_dropout_prob=0,attention_dropout=0"
"""A tiny HyFusER. Without dropout, training is a function of the data order alone (no dropout masks drawn), which is
what lets the resume test compare weights exactly."""

SAVED_FILES = {
    "model.safetensors", "config.json", "processor_config.json", "README.md", "all_results.json",
    "train_results.json", "eval_results.json", "classification_report.json", "dataset_report.json",
    "confusion_matrix.png", "trainer_state.json", "configuration_hyfuser.py", "modeling_hyfuser.py",
    "processing_hyfuser.py", "pipeline_hyfuser.py",
}  # fmt: skip


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("corpora")
    return write_kemdy19(folder), write_kemdy20(folder)


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory) -> Path:
    """Keeps the remote-code module cache that `trust_remote_code` writes out of the user's HF_HOME."""
    return tmp_path_factory.mktemp("hf_home")


@pytest.fixture(scope="module")
def train_args(tiny_backbones, corpora) -> list[str]:
    """Arguments shared by every CLI run: fixture KEMDy corpora, tiny backbones, a tiny model, quiet output."""
    kemdy19, kemdy20 = corpora
    return [
        "--dataset", "kemdy", "--kemdy19_dir", str(kemdy19), "--kemdy20_dir", str(kemdy20),
        "--text_backbone", tiny_backbones.text, "--speech_backbone", tiny_backbones.speech,
        "--sequence_length", "8", "--config_overrides", OVERRIDES,
        "--global_train_batch_size", "6", "--per_device_eval_batch_size", "4", "--disable_tqdm", "true",
    ]  # fmt: skip


def run(
    command: list[str], hf_home: Path, cwd: Path = REPO_ROOT, returncode: int = 0
) -> subprocess.CompletedProcess:
    """Run `command`, fail with its output unless it exits with `returncode`, and return it (stdout and stderr
    merged)."""
    environment = {**os.environ, "HF_HOME": str(hf_home), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        command, cwd=cwd, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600
    )
    assert result.returncode == returncode, result.stdout[-6000:]
    return result


def train(arguments: list[str], hf_home: Path) -> str:
    """`python train.py <arguments>`; returns its output."""
    return run([sys.executable, "train.py", *arguments], hf_home).stdout


def trainer_state(output_dir: Path) -> dict:
    return json.loads((output_dir / "trainer_state.json").read_text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory, train_args, hf_home) -> tuple[Path, Path, str]:
    """One two-epoch run: (output_dir, feature cache dir, log). Later tests compare against it."""
    output_dir = tmp_path_factory.mktemp("run") / "hyfuser"
    cache_dir = tmp_path_factory.mktemp("cache")
    arguments = ["--cache_dir", str(cache_dir), "--output_dir", str(output_dir), "--num_train_epochs", "2"]
    return output_dir, cache_dir, train([*train_args, *arguments], hf_home)


# --------------------------------------------------------------------------------------------------------------------
# Arguments and metrics (in process)


def test_paper_defaults_apply_unless_the_user_sets_them():
    _, data_args, training_args = parse_arguments(["--dataset", "kemdy", "--kemdy20_dir", "KEMDy20"])
    assert data_args.split_by == "random"
    assert (training_args.optim, training_args.weight_decay, training_args.lr_scheduler_type) == (
        "adamw_torch_fused", 0.0, "constant"
    )  # Adam at a fixed rate (Table 3)
    assert training_args.max_grad_norm == 0.0  # Keras's Adam does not clip
    assert training_args.learning_rate == 1e-4
    assert training_args.per_device_train_batch_size == 32
    assert training_args.num_train_epochs == 30
    assert (training_args.eval_strategy, training_args.save_strategy) == ("epoch", "epoch")
    assert training_args.load_best_model_at_end and training_args.metric_for_best_model == "accuracy"
    assert training_args.ddp_find_unused_parameters is False
    assert training_args.output_dir == "outputs/hyfuser-kemdy"

    model_args, _, training_args = parse_arguments(
        ["--dataset", "kemdy", "--kemdy20_dir", "KEMDy20", "--learning_rate", "3e-4", "--sequence_length", "64"]
    )
    assert training_args.learning_rate == 3e-4 and model_args.sequence_length == 64


def test_the_paper_s_data_is_the_default_dataset_and_the_demo_brings_its_own_settings():
    model_args, data_args, training_args = parse_arguments(["--kemdy20_dir", "KEMDy20"])
    assert data_args.dataset == "kemdy"
    assert (model_args.text_backbone, model_args.speech_backbone) == (DEFAULT_TEXT_BACKBONE, DEFAULT_SPEECH_BACKBONE)
    assert model_args.sequence_length == 126 and model_args.config_overrides is None

    model_args, data_args, training_args = parse_arguments(["--dataset", "demo"])
    assert model_args.text_backbone is None and model_args.speech_backbone is None  # the demo writes its own
    assert training_args.learning_rate == 1e-3 and model_args.sequence_length == 32
    assert model_args.config_overrides == "intermediate_size=64"
    assert training_args.output_dir == "demo_output"


def printed_defaults(argv: list[str], capsys, monkeypatch) -> dict[str, str]:
    """`train.py <argv> --help`, parsed into {flag: the "(default: ...)" argparse prints for it}."""
    monkeypatch.setenv("COLUMNS", "1000")  # one line per help text, so no value is wrapped
    with pytest.raises(SystemExit) as exit_info:
        parse_arguments([*argv, "--help"])
    assert exit_info.value.code == 0
    options = capsys.readouterr().out.split("\noptions:\n", 1)[1]
    defaults = {}
    for entry in re.split(r"\n  (?=--)", options):
        printed = re.search(r"\(default: (.*)\)$", " ".join(entry.split()))
        if printed:
            defaults[entry.split()[0].rstrip(",")] = printed.group(1)
    return defaults


def test_help_shows_the_paper_s_defaults_and_the_demo_s_only_under_dataset_demo(capsys, monkeypatch):
    paper = printed_defaults([], capsys, monkeypatch)
    assert paper["--learning_rate"] == "0.0001" and paper["--sequence_length"] == "126"
    assert (paper["--global_train_batch_size"], paper["--num_train_epochs"]) == ("32", "30")
    assert paper["--per_device_train_batch_size"] == "None"  # derived from the global batch and the device count
    assert paper["--text_backbone"] == DEFAULT_TEXT_BACKBONE and paper["--config_overrides"] == "None"
    assert paper["--output_dir"] == "outputs/hyfuser-kemdy"

    demo = printed_defaults(["--dataset", "demo"], capsys, monkeypatch)
    assert demo["--learning_rate"] == "0.001" and demo["--sequence_length"] == "32"
    assert demo["--config_overrides"] == "intermediate_size=64" and demo["--text_backbone"] == "None"
    assert demo["--output_dir"] == "demo_output"
    # Everything else is the paper's.
    changed = {"--learning_rate", "--sequence_length", "--config_overrides", "--text_backbone", "--speech_backbone",
               "--output_dir"}  # fmt: skip
    assert {flag: value for flag, value in demo.items() if flag not in changed} == {
        flag: value for flag, value in paper.items() if flag not in changed
    }


def test_the_paper_s_global_batch_is_split_over_accumulation_steps_unless_the_per_device_batch_is_given(caplog):
    paper = ["--dataset", "kemdy", "--kemdy20_dir", "KEMDy20"]
    _, _, training_args = parse_arguments([*paper, "--gradient_accumulation_steps", "4"])
    assert training_args.per_device_train_batch_size == 8  # 8 x 1 device x 4 steps = 32
    with pytest.raises(ValueError, match=r"--global_train_batch_size 32 cannot be split over 1 device\(s\) x 3 "):
        parse_arguments([*paper, "--gradient_accumulation_steps", "3"])
    _, _, training_args = parse_arguments([*paper, "--gradient_accumulation_steps", "3",
                                           "--per_device_train_batch_size", "5"])  # fmt: skip
    assert training_args.per_device_train_batch_size == 5  # explicit wins: an effective batch of 15, logged by main()
    _, _, training_args = parse_arguments([*paper, "--global_train_batch_size", "6"])
    assert training_args.per_device_train_batch_size == 6


def test_a_dataset_without_its_directory_is_refused():
    with pytest.raises(ValueError, match="--kemdy19_dir and/or --kemdy20_dir"):
        parse_arguments(["--dataset", "kemdy"])


def test_kemdy19_rows_flag_selects_the_rows_and_logs_them_beside_table_4(corpora, caplog):
    kemdy19, kemdy20 = map(str, corpora)
    _, data_args, _ = parse_arguments(["--kemdy19_dir", kemdy19, "--kemdy20_dir", kemdy20])
    assert data_args.kemdy19_rows == "speaker"
    _, data_args, _ = parse_arguments(
        ["--kemdy19_dir", kemdy19, "--kemdy20_dir", kemdy20, "--kemdy19_rows", "listener"]
    )
    with caplog.at_level(logging.INFO):
        _, report = load_corpora(data_args, None)
    assert report.loads[0].options["rows"] == "listener"
    assert report.loads[0].skipped["own segment (speaker label)"] == len(KEMDY19_SEGMENTS)
    assert "Table 4 collected" in caplog.text and "KEMDy19 (rows='listener'" in caplog.text


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--split_by", "session", "--split_seed", "7", "--multi_label", "first"],
         {"split_by": "session", "seed": 7, "multi_label": "first"}),
        (["--dataset", "aihub", "--label_source", "majority"], {"label_source": "majority"}),
    ],
    ids=["kemdy_session_split_seed_7_first_label", "aihub_majority_labels"],
)  # fmt: skip
def test_every_data_flag_reaches_the_loaders(corpora, tmp_path, flags, expected):
    """The splits `load_corpora` builds from the flags equal `build_paper_dataset` called with those values."""
    kemdy19, kemdy20 = map(str, corpora)
    aihub = str(write_aihub263(tmp_path))
    directories = ["--aihub_dir", aihub] if "aihub" in flags else ["--kemdy19_dir", kemdy19, "--kemdy20_dir", kemdy20]
    _, data_args, _ = parse_arguments([*flags, *directories])
    splits, report = load_corpora(data_args, None)
    corpus = {"aihub_dir": aihub} if "aihub" in flags else {"kemdy19_dir": kemdy19, "kemdy20_dir": kemdy20}
    direct = build_paper_dataset(**corpus, **expected)
    for name in ("train", "validation"):
        assert splits[name]["id"] == direct[name]["id"], name
    assert {key: value for key, value in report.to_dict().items() if key in ("split_by", "seed")} == {
        "split_by": expected.get("split_by", "random"), "seed": expected.get("seed", 42)
    }


def test_metrics_report_each_head_next_to_the_fusion():
    labels = np.array([0, 1, 2, 3])
    right, wrong = np.eye(7)[labels], np.eye(7)[(labels + 1) % 7]
    metrics = compute_metrics(EvalPrediction(predictions=(right, right, wrong), label_ids=labels))
    assert metrics.keys() == METRIC_TITLES.keys()
    assert metrics["accuracy"] == metrics["f1_weighted"] == metrics["f1_macro"] == 1.0
    assert metrics["text_head_accuracy"] == 1.0 and metrics["speech_head_accuracy"] == 0.0


# --------------------------------------------------------------------------------------------------------------------
# The CLI end to end


@pytest.mark.slow
def test_cli_trains_and_saves_a_directory_that_a_fresh_process_serves(trained, corpora, hf_home, tmp_path):
    output_dir, _, log = trained
    assert "Extracting train features for 18 utterances" in log
    assert "KEMDy19 load report" in log and "KEMDy20 load report" in log  # rows read, kept and skipped, logged
    assert SAVED_FILES <= {path.name for path in output_dir.iterdir()}
    results = json.loads((output_dir / "all_results.json").read_text())
    for name in METRIC_TITLES:
        assert 0.0 <= results[f"eval_{name}"] <= 1.0
    report = json.loads((output_dir / "classification_report.json").read_text())
    assert report["confusion_matrix"]["labels"] == list(EMOTION_LABELS)
    assert np.asarray(report["confusion_matrix"]["matrix"]).sum() == 2  # the two validation utterances
    assert "## Limitations" in (output_dir / "README.md").read_text()
    # The joint scaler saw the 18 training utterances only: 18 x (text, speech) x sequence length 8.
    assert json.loads((output_dir / "processor_config.json").read_text())["scaler_count"] == 18 * 2 * 8

    # A fresh interpreter in another directory: the code comes from the saved directory.
    audio = next((corpora[1] / "wav" / "Session01").glob("*.wav"))
    script = (
        "import json\n"
        "from transformers import pipeline\n"
        f"classifier = pipeline(model={str(output_dir)!r}, trust_remote_code=True)\n"
        f"print(json.dumps(classifier({{'text': '정말 너무 화가 나요', 'audio': {str(audio)!r}}}, top_k=1)))\n"
    )
    output = run([sys.executable, "-c", script], hf_home, cwd=tmp_path).stdout
    prediction = json.loads(output.strip().splitlines()[-1])
    assert prediction[0]["label"] in EMOTION_LABELS


@pytest.mark.slow
def test_second_run_with_the_same_settings_reuses_the_feature_cache(trained, train_args, hf_home, tmp_path):
    reference_dir, cache_dir, reference_log = trained
    cached = sorted((cache_dir / "features").iterdir())
    log = train([*train_args, "--cache_dir", str(cache_dir), "--output_dir", str(tmp_path / "again"),
                 "--num_train_epochs", "1", "--features_on_device", "never"], hf_home)  # fmt: skip
    assert "Extracting" not in log
    assert "Reusing cached train features" in log and "Reusing cached validation features" in log
    assert sorted((cache_dir / "features").iterdir()) == cached
    # The first run held its features in memory (they fit); this one streamed them with loader workers, to the
    # same first epoch.
    assert "of cached features onto cpu" in reference_log and "Streaming" not in reference_log
    assert "Streaming the cached features from disk: 2 loader workers" in log
    first_epoch = Path(f"checkpoint-{STEPS_PER_EPOCH}") / "model.safetensors"
    reference = load_file(reference_dir / first_epoch)
    for name, tensor in load_file(tmp_path / "again" / first_epoch).items():
        assert torch.equal(tensor, reference[name]), name


@pytest.mark.slow
def test_a_cut_short_cache_file_stops_the_run_naming_it_and_rebuild_cache_re_extracts_that_split(
    trained, train_args, hf_home, tmp_path
):
    cache_dir = tmp_path / "cache"
    shutil.copytree(trained[1], cache_dir)
    damaged = next((cache_dir / "features").glob("train-*.arrow"))
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    validation = {path: path.stat().st_mtime_ns for path in (cache_dir / "features").glob("validation-*")}
    arguments = [*train_args, "--cache_dir", str(cache_dir), "--output_dir", str(tmp_path / "out"),
                 "--num_train_epochs", "1"]  # fmt: skip

    log = run([sys.executable, "train.py", *arguments], hf_home, returncode=1).stdout
    # The run ends on the cache's own error, not on pyarrow's failure to read the file, and claims no reuse.
    assert "pyarrow" not in log and "OSError" not in log and "Reusing cached train features" not in log
    error = log[log.rindex("Traceback (most recent call last)") :].splitlines()
    final = error[next(index for index, line in enumerate(error) if line.startswith("hyfuser.cache.")) :]
    assert final[0] == "hyfuser.cache.FeatureCacheError: cached features failed their check, so they were not used:"
    assert final[1].startswith(f"  {damaged}: size mismatch: ")
    assert final[2] == ("Run again with --rebuild_cache to re-extract the train features (the validation features "
                        "passed the check and are reused).")  # fmt: skip

    log = train([*arguments, "--rebuild_cache"], hf_home)
    assert "Extracting train features" in log and "Extracting validation features" not in log
    assert "Reusing cached validation features" in log
    assert {path: path.stat().st_mtime_ns for path in (cache_dir / "features").glob("validation-*")} == validation
    assert (tmp_path / "out" / "model.safetensors").is_file()


def feature_cache(cache_dir: Path) -> dict[str, Dataset]:
    """Each split of a feature cache written by any number of processes, its shards read back in row order."""
    shards = sorted((cache_dir / "features").glob("*.arrow"))
    return {
        split: concatenate_datasets([Dataset.from_file(str(path)) for path in shards if path.name.startswith(split)])
        for split in ("train", "validation")
    }


def readme_multi_node_command(port: int) -> tuple[list[str], list[str]]:
    """docs/training.md's two-machine `accelerate launch` at a smaller size: (launcher, train.py arguments).

    Its launch options become 2 processes on this machine (its other options are kept as written), and its
    train.py arguments are kept, for the tests' own arguments to follow them (later flags win)."""
    guide = (REPO_ROOT / "docs/training.md").read_text()
    command = re.search(r"^accelerate launch --multi_gpu (?:.*\\\n)*.*$", guide, re.M)
    assert command, "docs/training.md's several-machines section has no `accelerate launch --multi_gpu` command"
    words = shlex.split(command.group(0).replace("\\\n", " "))
    smaller = {"--num_machines": "1", "--num_processes": "2", "--machine_rank": "0",
               "--main_process_ip": "127.0.0.1", "--main_process_port": str(port)}  # fmt: skip
    options = words[2 : words.index("train.py")]
    assert set(smaller) <= set(options), options
    options = [smaller.get(previous, word) for previous, word in zip(["", *options], options)]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", *options,
                "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
    return launcher, words[words.index("train.py") + 1 :]


@pytest.mark.slow
def test_two_process_gloo_run_shards_extraction_and_matches_one_process(trained, train_args, hf_home, tmp_path):
    """docs/training.md's two-machine launch at a small size (2 CPU processes over gloo), against the single-process
    `trained` run of the same settings."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    output_dir, cache_dir = tmp_path / "ddp", tmp_path / "cache"
    launcher, readme_arguments = readme_multi_node_command(port)
    log = run(
        [*launcher, "train.py", *readme_arguments, *train_args, "--cache_dir", str(cache_dir),
         "--output_dir", str(output_dir), "--num_train_epochs", "2", "--log_level_replica", "info"],
        hf_home,
    ).stdout  # fmt: skip
    # Each rank extracts its half of each split into its own shard; nobody reuses anything.
    for split, rows, halves in (("train", 18, (9, 9)), ("validation", 2, (1, 1))):
        for shard, half in enumerate(halves, start=1):
            assert f"Extracting {split} features for {half} utterances (shard {shard} of 2, of {rows})" in log, log[-6000:]
    assert "Reusing" not in log
    assert log.count("Effective train batch 6: 3 per device x 2 device(s) x 1 gradient accumulation step(s)") == 2

    # The merged cache is the single-process one: same rows in the same order, same features up to float16 rounding.
    one_process, two_processes = feature_cache(trained[1]), feature_cache(cache_dir)
    for split in ("train", "validation"):
        assert two_processes[split]["id"] == one_process[split]["id"]
        assert two_processes[split]["label"] == one_process[split]["label"]
        for column in FEATURE_COLUMNS:
            np.testing.assert_allclose(
                two_processes[split].with_format("numpy")[column], one_process[split].with_format("numpy")[column],
                rtol=2e-3, atol=2e-3,
            )  # fmt: skip

    # The global batch stays 6: the same optimizer steps, and without dropout the same weights up to float sums.
    assert trainer_state(output_dir)["global_step"] == trainer_state(trained[0])["global_step"] == 2 * STEPS_PER_EPOCH
    last_checkpoint = Path(f"checkpoint-{2 * STEPS_PER_EPOCH}") / "model.safetensors"
    reference = load_file(trained[0] / last_checkpoint)
    for name, tensor in load_file(output_dir / last_checkpoint).items():
        torch.testing.assert_close(tensor, reference[name], rtol=1e-4, atol=1e-5, msg=name)
    saved = [{path.name for path in folder.iterdir()} for folder in (output_dir, trained[0])]
    assert saved[0] == saved[1]

    # One process reuses the two-process cache (training precision is not part of it) and records its bf16 training.
    log = train([*train_args, "--cache_dir", str(cache_dir), "--output_dir", str(tmp_path / "reused"),
                 "--num_train_epochs", "1", "--bf16", "true"], hf_home)  # fmt: skip
    assert "Extracting" not in log and "Reusing cached train features" in log
    card = " ".join((tmp_path / "reused" / "README.md").read_text().split())
    assert "Precision: bf16 mixed precision" in card and "backbones run in float32" in card


@pytest.mark.slow
def test_early_stopping_after_three_flat_epochs_restores_the_best_epoch(train_args, hf_home, tmp_path):
    # At lr 1e-7 the weights move but no prediction flips, so validation accuracy stays flat: epoch 1 stays best and
    # patience 3 stops the run after epoch 4 of 30.
    # The backbones run in bfloat16 here (a cache of its own), which the model card records.
    output_dir = tmp_path / "early"
    train([*train_args, "--cache_dir", str(tmp_path / "cache"), "--output_dir", str(output_dir),
           "--learning_rate", "1e-7", "--num_train_epochs", "30", "--extraction_dtype", "bfloat16"], hf_home)  # fmt: skip
    assert "backbones run in bfloat16" in " ".join((output_dir / "README.md").read_text().split())
    state = trainer_state(output_dir)
    accuracies = [entry["eval_accuracy"] for entry in state["log_history"] if "eval_accuracy" in entry]
    assert len(accuracies) == 4 and len(set(accuracies)) == 1  # the best epoch, then 3 without improvement
    assert state["epoch"] == 4 and state["global_step"] == 4 * STEPS_PER_EPOCH
    best = output_dir / f"checkpoint-{STEPS_PER_EPOCH}"
    assert Path(state["best_model_checkpoint"]).name == best.name

    final = load_file(output_dir / "model.safetensors")
    for name, tensor in load_file(best / "model.safetensors").items():
        assert torch.equal(final[name], tensor), name
    last = load_file(output_dir / f"checkpoint-{4 * STEPS_PER_EPOCH}" / "model.safetensors")
    assert any(not torch.equal(final[name], tensor) for name, tensor in last.items())


@pytest.mark.slow
def test_run_stopped_after_a_checkpoint_resumes_to_the_same_step_count_and_weights(
    trained, train_args, hf_home, tmp_path
):
    reference_dir, cache_dir, _ = trained
    output_dir = tmp_path / "resumed"
    arguments = [*train_args, "--cache_dir", str(cache_dir), "--output_dir", str(output_dir)]
    # The first attempt dies after epoch 1 of 2 (max_steps stops it right after the epoch's checkpoint).
    train([*arguments, "--num_train_epochs", "2", "--max_steps", str(STEPS_PER_EPOCH)], hf_home)
    checkpoint = output_dir / f"checkpoint-{STEPS_PER_EPOCH}"
    log = train([*arguments, "--num_train_epochs", "2", "--resume_from_checkpoint", str(checkpoint)], hf_home)
    assert "Extracting" not in log

    steps = [trainer_state(folder)["global_step"] for folder in (output_dir, reference_dir)]
    assert steps == [2 * STEPS_PER_EPOCH] * 2
    # Epoch 2, trained after the restart (optimizer, scheduler, RNG and data order restored), equals the reference.
    last_checkpoint = Path(f"checkpoint-{2 * STEPS_PER_EPOCH}") / "model.safetensors"
    reference = load_file(reference_dir / last_checkpoint)
    for name, tensor in load_file(output_dir / last_checkpoint).items():
        torch.testing.assert_close(tensor, reference[name], msg=name)


# --------------------------------------------------------------------------------------------------------------------
# Same command, same weights: a warm cache or a kill and resume changes nothing, and checkpoints hold what trains

DROPOUT_OVERRIDES = OVERRIDES.replace("dropout_prob=0,attention_dropout=0", "dropout_prob=0.3,attention_dropout=0.3")
"""The tiny HyFusER with dropout: every training step draws masks from the global generator, so a random number drawn
by anything else in the process (loading a backbone, saving a checkpoint) would change the weights."""

DETERMINISM_EPOCHS = 4
"""Checkpoints every epoch. Loading the backbones once drew random numbers at a process's first checkpoint save, so a
run stopped after epoch 2 and resumed diverged from epoch 4 on: four epochs show it."""

KILL_AT_STEP = """
import os, runpy, signal, sys
from transformers import Trainer, TrainerCallback

class KillAtStep(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == {step}:
            os.kill(os.getpid(), signal.SIGKILL)

build_trainer = Trainer.__init__

def build_trainer_that_dies(self, *args, **kwargs):
    build_trainer(self, *args, **kwargs)
    self.add_callback(KillAtStep())

Trainer.__init__ = build_trainer_that_dies
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
"""`python -c KILL_AT_STEP train.py ...`: train.py, killed without any clean-up right after optimizer step `step`."""


@pytest.fixture(scope="module")
def dropout_args(train_args) -> list[str]:
    """The CLI runs' arguments with dropout, every epoch trained and kept (no early stop, no checkpoint deleted)."""
    arguments = [DROPOUT_OVERRIDES if argument == OVERRIDES else argument for argument in train_args]
    return [*arguments, "--num_train_epochs", str(DETERMINISM_EPOCHS), "--early_stopping_patience", "0",
            "--save_total_limit", str(DETERMINISM_EPOCHS)]  # fmt: skip


@pytest.fixture(scope="module")
def cold_run(tmp_path_factory, dropout_args, hf_home) -> tuple[Path, Path]:
    """One uninterrupted run that extracts its own features: (output_dir, feature cache dir)."""
    output_dir, cache_dir = tmp_path_factory.mktemp("cold") / "hyfuser", tmp_path_factory.mktemp("cold_cache")
    log = train([*dropout_args, "--cache_dir", str(cache_dir), "--output_dir", str(output_dir)], hf_home)
    assert "Extracting train features" in log
    return output_dir, cache_dir


def saved_weights(output_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The weights of the final model ("final") and of every checkpoint (by folder name)."""
    folders = {"final": output_dir, **{folder.name: folder for folder in output_dir.glob("checkpoint-*")}}
    return {name: load_file(folder / "model.safetensors") for name, folder in folders.items()}


@pytest.mark.slow
def test_a_warm_feature_cache_trains_bit_for_bit_the_weights_of_a_cold_one(cold_run, dropout_args, hf_home, tmp_path):
    cold_dir, cache_dir = cold_run
    log = train([*dropout_args, "--cache_dir", str(cache_dir), "--output_dir", str(tmp_path / "warm")], hf_home)
    assert "Extracting" not in log and "Reusing cached train features" in log
    cold, warm = saved_weights(cold_dir), saved_weights(tmp_path / "warm")
    assert warm.keys() == cold.keys() and len(cold) == 1 + DETERMINISM_EPOCHS
    for folder, weights in cold.items():
        for name, tensor in weights.items():
            assert torch.equal(warm[folder][name], tensor), f"{folder}: {name}"


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_to_the_weights_of_the_uninterrupted_run(
    cold_run, dropout_args, hf_home, tmp_path
):
    reference_dir, cache_dir = cold_run
    output_dir = tmp_path / "killed"
    arguments = [*dropout_args, "--cache_dir", str(cache_dir), "--output_dir", str(output_dir)]
    killed_at = 2 * STEPS_PER_EPOCH + 1  # one step into epoch 3
    code = KILL_AT_STEP.replace("{step}", str(killed_at))
    run([sys.executable, "-c", code, "train.py", *arguments], hf_home, returncode=-signal.SIGKILL)
    assert sorted(folder.name for folder in output_dir.glob("checkpoint-*")) == [
        f"checkpoint-{STEPS_PER_EPOCH}", f"checkpoint-{2 * STEPS_PER_EPOCH}"
    ]
    train([*arguments, "--resume_from_checkpoint", str(output_dir / f"checkpoint-{2 * STEPS_PER_EPOCH}")], hf_home)
    assert trainer_state(output_dir)["global_step"] == DETERMINISM_EPOCHS * STEPS_PER_EPOCH
    reference, resumed = saved_weights(reference_dir), saved_weights(output_dir)
    assert resumed.keys() == reference.keys()
    for folder, weights in reference.items():
        for name, tensor in weights.items():
            torch.testing.assert_close(resumed[folder][name], tensor, rtol=0, atol=1e-6, msg=f"{folder}: {name}")


@pytest.mark.slow
def test_checkpoints_hold_what_trains_and_name_the_backbones_instead_of_copying_them(
    cold_run, tiny_backbones, corpora
):
    output_dir, _ = cold_run
    model_weights = load_file(output_dir / "model.safetensors").keys()
    checkpoints = sorted(output_dir.glob("checkpoint-*"))
    assert len(checkpoints) == DETERMINISM_EPOCHS
    for checkpoint in checkpoints:
        files = {path.relative_to(checkpoint).as_posix() for path in checkpoint.rglob("*") if path.is_file()}
        assert not any(file.startswith(("text_backbone/", "speech_backbone/")) for file in files), files
        assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json",
                "processor_config.json", "tokenizer.json", "tokenizer_config.json"} <= files  # fmt: skip
        for weights_file in checkpoint.rglob("*.safetensors"):  # HyFusER's own weights, no backbone tensor
            assert load_file(weights_file).keys() == model_weights, weights_file
        saved = json.loads((checkpoint / "processor_config.json").read_text())
        assert (saved["text_backbone"], saved["speech_backbone"]) == (tiny_backbones.text, tiny_backbones.speech)
        assert saved["scaler_count"] == 18 * 2 * 8

    # A checkpoint's processor loads the backbones it names and gives the self-contained final directory's features.
    assert (output_dir / "text_backbone" / "model.safetensors").is_file()
    audio = next((corpora[1] / "wav" / "Session01").glob("*.wav"))
    inputs = {"text": "정말 너무 화가 나요", "audio": str(audio)}
    final = HyFusERProcessor.from_pretrained(output_dir)(**inputs)
    for name, value in HyFusERProcessor.from_pretrained(checkpoints[0])(**inputs).items():
        torch.testing.assert_close(value, final[name], rtol=0, atol=0, msg=name)


@pytest.mark.slow
def test_demo_generates_its_corpus_trains_and_serves_held_out_items(hf_home, tmp_path):
    # One epoch instead of up to 30: this checks the path (generated KEMDy20 corpus read by the real loader, tiny
    # backbones, pipeline on held-out items), not the accuracy, which `make demo` shows.
    log = train(["--dataset", "demo", "--num_train_epochs", "1", "--cache_dir", str(tmp_path / "cache"),
                 "--output_dir", str(tmp_path / "demo"), "--disable_tqdm", "true"], hf_home)  # fmt: skip
    assert "Extracting train features for 672 utterances" in log  # 7 emotions x 120, 8:2
    table = log[log.index("Held-out demo items") :]
    assert sum(line.split()[:1] in (["text"], ["speech"], ["both"]) for line in table.splitlines()) == 42
    for row in ("fused (Eq. 9)", "text-centric head alone", "speech-centric head alone"):
        assert row in table
    assert SAVED_FILES <= {path.name for path in (tmp_path / "demo").iterdir()}


# --------------------------------------------------------------------------------------------------------------------
# Every paper default, and metrics worked out by hand (in process)


def test_every_paper_default_is_what_the_parser_gives():
    """Table 3 and Section 5.1 as the parser resolves them when the user sets nothing."""
    model_args, data_args, training_args = parse_arguments(["--dataset", "kemdy", "--kemdy20_dir", "KEMDy20"])
    # Adam: AdamW with no weight decay, Keras's epsilon and betas, no clipping, a constant 1e-4 and no warm-up.
    assert training_args.optim == "adamw_torch_fused"
    assert training_args.weight_decay == 0.0
    assert training_args.adam_epsilon == 1e-7
    assert (training_args.adam_beta1, training_args.adam_beta2) == (0.9, 0.999)
    assert training_args.max_grad_norm == 0.0
    assert training_args.learning_rate == 1e-4
    assert training_args.lr_scheduler_type == "constant"
    assert (training_args.warmup_steps, training_args.gradient_accumulation_steps) == (0, 1)
    # Batch 32, up to 30 epochs, evaluated and checkpointed every epoch.
    assert training_args.per_device_train_batch_size == training_args.per_device_eval_batch_size == 32
    assert training_args.num_train_epochs == 30
    assert training_args.eval_strategy == training_args.save_strategy == "epoch"
    # Early stopping: patience 3 on validation accuracy, the best epoch restored.
    assert model_args.early_stopping_patience == 3
    assert training_args.metric_for_best_model == "accuracy" and training_args.greater_is_better is True
    assert training_args.load_best_model_at_end is True
    # Seeds of the model initialisation and of the downsampling and 8:2 split.
    assert training_args.seed == 42 and data_args.split_seed == 42
    assert data_args.split_by == "random"


def test_metrics_equal_values_worked_out_by_hand():
    """Imbalanced, imperfect predictions; class 3 is never predicted, classes 4-6 occur nowhere.

    truth      0 0 0 0 1 1 2 2 2 3
    fused      0 0 1 2 1 1 2 2 0 0
    per class  0: P 2/4 R 2/4 F1 1/2;  1: P 2/3 R 2/2 F1 4/5;  2: P 2/3 R 2/3 F1 2/3;  3: P 0 R 0 F1 0
    supports   4, 2, 3, 1 (weights of the weighted averages; macro averages the 4 classes that occur)
    """
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 3])
    fused = np.array([0, 0, 1, 2, 1, 1, 2, 2, 0, 0])
    text_head = np.array([0, 0, 0, 0, 1, 0, 0, 0, 0, 0])  # 5 of 10 right
    speech_head = np.array([6, 6, 6, 6, 6, 6, 2, 6, 6, 3])  # 2 of 10 right
    rng = np.random.default_rng(0)

    def scores_with_argmax(predicted):  # random scores whose largest entry is the prediction
        scores = rng.uniform(-1.0, 0.0, size=(len(predicted), 7))
        scores[np.arange(len(predicted)), predicted] = 1.0
        return scores

    metrics = compute_metrics(
        EvalPrediction(predictions=tuple(map(scores_with_argmax, (fused, text_head, speech_head))), label_ids=labels)
    )
    expected = {
        "accuracy": 6 / 10,
        "precision_weighted": (4 * 1 / 2 + 2 * 2 / 3 + 3 * 2 / 3 + 1 * 0) / 10,
        "recall_weighted": (4 * 2 / 4 + 2 * 2 / 2 + 3 * 2 / 3 + 1 * 0) / 10,
        "f1_weighted": (4 * 1 / 2 + 2 * 4 / 5 + 3 * 2 / 3 + 1 * 0) / 10,
        "f1_macro": (1 / 2 + 4 / 5 + 2 / 3 + 0) / 4,
        "text_head_accuracy": 5 / 10,
        "speech_head_accuracy": 2 / 10,
    }
    assert metrics.keys() == expected.keys()
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-12), name


def test_per_class_report_and_confusion_matrix_equal_counts_by_hand():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 3])
    predictions = np.array([0, 0, 1, 2, 1, 1, 2, 2, 0, 0])
    report = per_class_report(labels, predictions, list(EMOTION_LABELS))
    matrix = np.zeros((7, 7), dtype=int)
    matrix[0, [0, 0, 1, 2]] = [2, 2, 1, 1]  # rows: truth; angry: 2 right, 1 as disgust, 1 as fear
    matrix[1, 1], matrix[2, 2], matrix[2, 0], matrix[3, 0] = 2, 2, 1, 1
    assert report["confusion_matrix"]["labels"] == list(EMOTION_LABELS)
    assert report["confusion_matrix"]["matrix"] == matrix.tolist()
    per_class = report["per_class"]
    assert [per_class[name]["support"] for name in EMOTION_LABELS] == [4, 2, 3, 1, 0, 0, 0]
    assert per_class["angry"]["precision"] == pytest.approx(2 / 4) and per_class["angry"]["recall"] == pytest.approx(2 / 4)
    assert per_class["disgust"]["f1-score"] == pytest.approx(4 / 5)
    assert per_class["fear"]["precision"] == pytest.approx(2 / 3)
    assert per_class["happy"]["precision"] == per_class["happy"]["recall"] == 0.0


# --------------------------------------------------------------------------------------------------------------------
# The training glue, in process: scaler, collator and final evaluation of a real `train.main()` run

GLUE_EPOCHS = 4
GLUE_PATIENCE = 2
GLUE_LEARNING_RATE = "3e-3"
"""At this rate the fixture AI-Hub model's validation accuracy stays flat while its loss moves: epoch 1 stays best,
patience 2 stops the run after epoch 3 of 4, and the best checkpoint and the last one give different validation
losses."""


def run_main_in_process(tmp_path_factory, tiny_backbones) -> SimpleNamespace:
    """`train.main()` on the fixture AI-Hub 263 corpus, recording every batch the model trains on."""
    corpus = write_aihub263(tmp_path_factory.mktemp("aihub"))
    root = tmp_path_factory.mktemp("glue")
    argv = [
        "train.py", "--dataset", "aihub", "--aihub_dir", str(corpus),
        "--text_backbone", tiny_backbones.text, "--speech_backbone", tiny_backbones.speech,
        "--sequence_length", "8", "--config_overrides", OVERRIDES, "--num_train_epochs", str(GLUE_EPOCHS),
        "--learning_rate", GLUE_LEARNING_RATE, "--early_stopping_patience", str(GLUE_PATIENCE),
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4",
        "--cache_dir", str(root / "cache"), "--output_dir", str(root / "out"), "--disable_tqdm", "true",
        "--report_to", "none", "--save_backbones", "false",
    ]  # fmt: skip
    training_batches = []
    forward = HyFusERForEmotionRecognition.forward

    @functools.wraps(forward)
    def recording_forward(self, *args, **kwargs):
        if self.training:
            training_batches.append({name: value.detach().clone() for name, value in kwargs.items() if value is not None})
        return forward(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", argv)
        patch.setattr(HyFusERForEmotionRecognition, "forward", recording_forward)
        TRAIN["main"]()
    splits = build_paper_dataset(aihub_dir=corpus, seed=42)
    caches = {
        split: Dataset.from_file(str(next((root / "cache" / "features").glob(f"{split}-*.arrow")))).with_format("numpy")[:]
        for split in ("train", "validation")
    }
    return SimpleNamespace(output_dir=root / "out", splits=splits, caches=caches, training_batches=training_batches)


def check_scaler_is_fitted_on_the_training_split_only(glue_run):
    saved = json.loads((glue_run.output_dir / "processor_config.json").read_text())
    train_rows = len(glue_run.splits["train"])
    assert len(glue_run.caches["train"]["label"]) == train_rows
    assert saved["scaler_count"] == train_rows * 2 * 8  # rows x (text, speech) x sequence length
    positions = np.concatenate(
        [glue_run.caches["train"][column].astype(np.float64).reshape(-1, 32) for column in FEATURE_COLUMNS]
    )
    np.testing.assert_allclose(saved["scaler_mean"], positions.mean(axis=0), rtol=0, atol=1e-9)
    np.testing.assert_allclose(saved["scaler_std"], positions.std(axis=0), rtol=0, atol=1e-9)


def check_training_batches_are_the_scaled_cached_features_of_every_training_row(glue_run):
    processor = HyFusERProcessor.from_pretrained(glue_run.output_dir)
    cache = glue_run.caches["train"]
    expected = dict(zip(FEATURE_COLUMNS, processor.scale(*(torch.from_numpy(cache[c]) for c in FEATURE_COLUMNS))))
    rows = len(cache["label"])
    first_epoch = glue_run.training_batches[: math.ceil(rows / 4)]
    seen_rows = []
    for batch in first_epoch:
        for row in range(len(batch["labels"])):
            # Which cached row is this? The nearest one in text features; then every field must match it.
            distances = (expected["text_features"] - batch["text_features"][row]).flatten(1).abs().amax(1)
            index = int(distances.argmin())
            for column in FEATURE_COLUMNS:
                torch.testing.assert_close(batch[column][row], expected[column][index], atol=1e-6, rtol=0)
            assert batch["labels"][row] == cache["label"][index]
            seen_rows.append(index)
    assert sorted(seen_rows) == list(range(rows))  # one epoch sees every training row once


def check_final_evaluation_uses_the_restored_best_checkpoint(glue_run):
    state = json.loads((glue_run.output_dir / "trainer_state.json").read_text())
    best, last = Path(state["best_model_checkpoint"]), glue_run.output_dir / f"checkpoint-{state['global_step']}"
    steps_per_epoch = math.ceil(len(glue_run.splits["train"]) / 4)
    assert best.name == f"checkpoint-{steps_per_epoch}"  # epoch 1 ...
    assert state["global_step"] == (1 + GLUE_PATIENCE) * steps_per_epoch  # ... then `patience` epochs, then stop
    assert (best / "processor_config.json").is_file()  # every checkpoint carries its processor and scaler
    processor = HyFusERProcessor.from_pretrained(glue_run.output_dir)
    cache = glue_run.caches["validation"]
    features = processor.scale(*(torch.from_numpy(cache[column]) for column in FEATURE_COLUMNS))
    labels = torch.from_numpy(cache["label"])

    def validation_loss(checkpoint: Path) -> float:
        model = HyFusERForEmotionRecognition.from_pretrained(checkpoint).eval()
        with torch.no_grad():
            return model(*features, labels=labels).loss.item()

    assert "train_loss" in json.loads((glue_run.output_dir / "train_results.json").read_text())
    with torch.no_grad():
        best_predictions = HyFusERForEmotionRecognition.from_pretrained(best).eval()(*features).logits.argmax(-1)
    class_report = json.loads((glue_run.output_dir / "classification_report.json").read_text())
    matrix = np.zeros((7, 7), dtype=int)
    np.add.at(matrix, (labels.numpy(), best_predictions.numpy()), 1)
    assert class_report["confusion_matrix"]["matrix"] == matrix.tolist()  # the best model's predictions, counted
    evaluated = json.loads((glue_run.output_dir / "eval_results.json").read_text())["eval_loss"]
    assert abs(validation_loss(last) - validation_loss(best)) > 1e-3
    assert evaluated == pytest.approx(validation_loss(best), abs=1e-5)
    final = load_file(glue_run.output_dir / "model.safetensors")
    for name, tensor in load_file(best / "model.safetensors").items():
        assert torch.equal(final[name], tensor), name


def check_model_card_header_holds_the_validation_metrics_and_the_stage_counts(glue_run):
    card = ModelCard.load(glue_run.output_dir / "README.md")
    evaluated = json.loads((glue_run.output_dir / "eval_results.json").read_text())
    assert card.data.language == "ko" and "custom_code" in card.data.tags
    assert {result.metric_type: result.metric_value for result in card.data.eval_results} == {
        name: round(evaluated[f"eval_{name}"], 4) for name in METRIC_TITLES
    }
    report = json.loads((glue_run.output_dir / "dataset_report.json").read_text())
    train_rows = sum(report["stages"]["train"].values())
    assert train_rows == len(glue_run.splits["train"])
    assert f"| total | {sum(report['stages']['loaded'].values())} |" in card.text


def check_reports_and_log_account_for_every_row(glue_run, log: str):
    validation_rows = len(glue_run.splits["validation"])
    class_report = json.loads((glue_run.output_dir / "classification_report.json").read_text())
    assert class_report["confusion_matrix"]["labels"] == list(EMOTION_LABELS)
    assert np.asarray(class_report["confusion_matrix"]["matrix"]).sum() == validation_rows
    assert sum(class_report["per_class"][name]["support"] for name in EMOTION_LABELS) == validation_rows
    assert (glue_run.output_dir / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data_report = json.loads((glue_run.output_dir / "dataset_report.json").read_text(encoding="utf-8"))
    assert (data_report["split_by"], data_report["seed"]) == ("random", 42)
    assert [load["corpus"] for load in data_report["loads"]] == ["AI-Hub 263"]
    assert "Loaded:\nAI-Hub 263 load report" in log  # rows read, kept and skipped by reason
    assert "Paper preprocessing:\nAI-Hub 263 (label_source='situation'): rows per emotion after each stage" in log
    assert f"Saved the model, processor, code, model card and reports to {glue_run.output_dir}" in log


def check_backbones_are_referenced_not_copied_when_told(glue_run, backbones):
    """`--save_backbones false`: the directory names the local backbones instead of carrying copies."""
    assert not (glue_run.output_dir / "text_backbone").exists()
    saved = json.loads((glue_run.output_dir / "processor_config.json").read_text())
    config = json.loads((glue_run.output_dir / "config.json").read_text())
    assert saved["text_backbone"] == config["text_backbone"] == backbones.text
    assert saved["speech_backbone"] == config["speech_backbone"] == backbones.speech


def test_train_main_fits_on_train_only_trains_on_scaled_batches_evaluates_the_best_checkpoint_and_reports(
    tmp_path_factory, tiny_backbones, caplog, capsys
):
    """One in-process `train.py` run checked six ways. One test rather than six sharing a fixture, so that a tool
    asking which tests reach `main()` (mutation testing) gets every check."""
    caplog.set_level(logging.INFO, logger="train")
    glue_run = run_main_in_process(tmp_path_factory, tiny_backbones)
    check_reports_and_log_account_for_every_row(glue_run, caplog.text)
    check_backbones_are_referenced_not_copied_when_told(glue_run, tiny_backbones)
    assert "Held-out demo items" not in capsys.readouterr().out  # the demo's own step stays the demo's
    assert not (glue_run.output_dir.parent / "cache" / "demo").exists()
    check_scaler_is_fitted_on_the_training_split_only(glue_run)
    check_training_batches_are_the_scaled_cached_features_of_every_training_row(glue_run)
    check_final_evaluation_uses_the_restored_best_checkpoint(glue_run)
    check_model_card_header_holds_the_validation_metrics_and_the_stage_counts(glue_run)


@pytest.mark.slow
def test_gradient_checkpointing_flag_trains_the_same_weights(trained, train_args, hf_home, tmp_path):
    """`--gradient_checkpointing` end to end: the run succeeds with HyFusER's blocks checkpointed (a model that cannot
    checkpoint fails the run) and, recomputation changing nothing, ends at the weights of the same run without it."""
    output_dir, cache_dir, _ = trained
    arguments = ["--cache_dir", str(cache_dir), "--output_dir", str(tmp_path / "checkpointed"), "--num_train_epochs", "2"]
    train([*train_args, *arguments, "--gradient_checkpointing"], hf_home)
    checkpointed, plain = (load_file(folder / "model.safetensors") for folder in (tmp_path / "checkpointed", output_dir))
    assert checkpointed.keys() == plain.keys()
    for name, weight in plain.items():
        torch.testing.assert_close(checkpointed[name], weight, rtol=1e-5, atol=1e-6, msg=name)
