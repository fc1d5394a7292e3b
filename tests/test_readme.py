"""README.md and the documents under docs/ (and benchmarks/README.md), executed: their fenced shell commands and
Python snippets run against the real code.

Commands are read from the documents themselves, so an edited command is the one that runs. Training commands run as
written, with the corpus directories replaced by the fixture corpora and small-size flags appended (tiny backbones,
a tiny model, one epoch); Python snippets run on a tiny saved model and real audio files. What cannot run here is
named in `NOT_RUN` with its reason and checked as far as it can be offline. A block or command that is neither run
nor listed fails `test_every_fenced_block_is_run_or_listed`, so the documents cannot drift from the code unnoticed.
"""

import ast
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from audio_files import write_tone
from corpora import write_aihub263, write_kemdy19, write_kemdy20
from test_train import OVERRIDES, run

from configuration_hyfuser import EMOTION_LABELS
from hyfuser.arguments import CORPORA

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCUMENT_PATHS = [
    REPO_ROOT / "README.md",
    *sorted((REPO_ROOT / "docs").rglob("*.md")),
    REPO_ROOT / "benchmarks/README.md",
]
DOCUMENTS = {path.relative_to(REPO_ROOT).as_posix(): path.read_text(encoding="utf-8") for path in DOCUMENT_PATHS}
"""Every document whose fenced blocks run here, by path, README first: a later document's training command may
continue a run that the README's command started."""
GUIDE = ["README.md", *(name for name in DOCUMENTS if name.startswith("docs/") and name.count("/") == 1)]
"""The user's guide, whose inline `--flags` are all `train.py`'s (the study and benchmark write-ups have their own)."""
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
SHELL = "bash"

NOT_RUN = {
    "make demo": "builds .venv with pip from a package index (the demo's own command runs in test_train.py)",
    "make test": "builds .venv with pip from a package index, then runs this very suite",
    "make test-latest": "builds .venv-latest with pip from a package index, then runs this very suite's fast tests",
    "make constraints": "resolves every dependency afresh from a package index and rewrites constraints.txt and README",
    "make mutants": "builds .venv with pip from a package index, then runs the fast tests against each mutant (~15 min)",
    "make bench": "builds .venv with pip from a package index, then benchmarks at real size (~23 min)",
    "pytest -m": "runs this very suite's fast tests",
    "hf upload": "uploads to the Hugging Face Hub: needs the network and a login",
    "python reproduce.py": "trains every model on every split; tests/test_reproduce.py runs it on the fixture corpora",
    "python benchmarks/bench.py": "benchmarks at real size (~23 min for all, minutes per section); tests/test_bench.py "
    "runs `--quick`",
    "python docs/collapse/run_study.py": "every experiment of the collapse study: about an hour of training runs, "
    "whose report docs/collapse/results.md is committed",
    "accelerate launch": "the two-machine launch (a bare `accelerate launch train.py` runs below); tests/test_train.py "
    "runs it at a smaller size, 2 gloo processes on one machine",
    "make app": "builds .venv with pip from a package index, then serves until stopped",
    "python app.py": "serves until stopped; tests/test_app.py parses its flags and serves it to a browser",
    "python export_onnx.py": "needs a trained directory; tests/test_onnx.py runs the same command on the fixture one",
    "python timeline.py": "needs a trained directory and a recording or KEMDy20; tests/test_replay.py runs its main() "
    "with the same flags on the fixture model, a generated recording and the generated KEMDy20 layout",
}
"""Commands, by their first two words, that only get an offline check: `make -n` or the program's `--help`."""

NOT_CODE = {"bibtex": "a citation", "text": "a directory layout"}
"""Fenced languages that are not meant to be run."""

CORPUS_FLAGS = {"--kemdy19_dir": write_kemdy19, "--kemdy20_dir": write_kemdy20, "--aihub_dir": write_aihub263}
"""A training command's corpus directories, whatever the document writes there, become these fixture corpora."""

LAUNCHERS = {
    ("python",): [sys.executable],
    ("accelerate", "launch"): [
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
    ],
}  # fmt: skip
"""How each launcher of `train.py` runs here: this interpreter, and accelerate as one CPU process."""


def fenced_blocks(documents: list[str] | None = None) -> list[tuple[str, str]]:
    """(language, text) of every fenced block of `documents` (default: all), in document order."""
    texts = [DOCUMENTS[name] for name in documents or DOCUMENTS]
    return [(match.group(1), match.group(2)) for text in texts for match in FENCE.finditer(text)]


def shell_commands(documents: list[str] | None = None) -> list[list[str]]:
    """Every command of the documents' shell blocks as words, continuation lines joined and comments dropped."""
    commands = []
    for language, text in fenced_blocks(documents):
        if language == SHELL:
            for line in text.replace("\\\n", " ").splitlines():
                if words := shlex.split(line, comments=True):
                    commands.append(words)
    return commands


def train_launcher(words: list[str]) -> tuple[str, ...] | None:
    """The launcher of a `train.py` command (`("python",)`, `("accelerate", "launch")`), else None."""
    for launcher in LAUNCHERS:
        if tuple(words[: len(launcher)]) == launcher and words[len(launcher) : len(launcher) + 1] == ["train.py"]:
            return launcher
    return None


def python_snippets() -> list[str]:
    return [text for language, text in fenced_blocks() if language == "python"]


def test_every_fenced_block_is_run_or_listed():
    for name in DOCUMENTS:
        languages = {language for language, _ in fenced_blocks([name])}
        assert languages <= {SHELL, "python", *NOT_CODE}, f"{name}: a fenced block in an unknown language: {languages}"
        for words in shell_commands([name]):
            if train_launcher(words) is None:
                assert " ".join(words[:2]) in NOT_RUN, f"{name}: a command neither run nor listed in NOT_RUN: {words}"
    listed = {" ".join(words[:2]) for words in shell_commands()}
    assert set(NOT_RUN) <= listed, f"NOT_RUN lists commands no document has any more: {set(NOT_RUN) - listed}"
    for snippet in python_snippets():
        assert snippet.splitlines()[0] in SNIPPET_CHECKS, f"a Python snippet without a check:\n{snippet}"


# --------------------------------------------------------------------------------------------------------------------
# Shell commands


def listed_commands(key: str) -> list[list[str]]:
    return [words for words in shell_commands() if " ".join(words[:2]) == key]


def readme_flags() -> set[str]:
    """The `train.py` flags the documents name: in their training commands and as inline code (`--bf16`) in the
    user's guide."""
    inline = " ".join(re.findall(r"`(--[^`\n]+)`", " ".join(FENCE.sub("", DOCUMENTS[name]) for name in GUIDE)))
    commands = " ".join(" ".join(words) for words in shell_commands() if train_launcher(words))
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_]*", f"{inline} {commands}"))


@pytest.mark.parametrize("key", [key for key in NOT_RUN if key.startswith("make ")])
def test_make_commands_exist_with_the_variables_the_readme_sets(key, tmp_path):
    """`make -n` (print, do not run) with fresh venvs: the target exists, builds its venv where it is told and takes
    the documents' Makefile variables."""
    makefile_variables = set(re.findall(r"^(\w+) \?=", (REPO_ROOT / "Makefile").read_text(), re.MULTILINE))
    venvs = [f"{name}={tmp_path / name.lower()}" for name in ("VENV", "LATEST_VENV", "RESOLVE_VENV")]
    for words in listed_commands(key):
        dry_run = subprocess.run(
            ["make", "-n", *words[1:], *venvs],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60,
        )  # fmt: skip
        assert dry_run.returncode == 0, dry_run.stdout
        assert re.search(rf"-m venv {re.escape(str(tmp_path))}/", dry_run.stdout), dry_run.stdout
        for name, value in (word.split("=", 1) for word in words[2:] if "=" in word):
            if name in makefile_variables:
                assert value in dry_run.stdout, f"{name}={value} does not reach the recipe:\n{dry_run.stdout}"


def test_hf_upload_command_uses_options_the_installed_cli_has():
    commands = listed_commands("hf upload")
    assert commands, "no document shows an `hf upload` command any more: drop it from NOT_RUN"
    hf = Path(sys.executable).parent / "hf"
    usage = subprocess.run([hf, "upload", "--help"], stdout=subprocess.PIPE, text=True, timeout=60, check=True).stdout
    for words in commands:
        for option in (word for word in words if word.startswith("--")):
            assert option in usage, f"`hf upload` has no {option}"


@pytest.mark.slow
def test_help_commands_explain_every_flag_the_readme_names(tmp_path):
    helps = [words for words in shell_commands() if train_launcher(words) and "--help" in words]
    assert helps, "no document shows a `train.py --help`"
    flags = readme_flags()
    for words in helps:
        launcher = train_launcher(words)
        command = [*LAUNCHERS[launcher], "train.py", *words[len(launcher) + 1 :]]
        usage = run(command, tmp_path).stdout
        assert usage.startswith("usage: train.py")
        assert not {flag for flag in flags if f" {flag} " not in usage}, "flags the documents name but --help lacks"


@pytest.mark.slow
@pytest.mark.parametrize("key", [key for key in NOT_RUN if key.startswith("python ")])
def test_listed_programs_take_every_option_their_commands_pass(key, tmp_path):
    """The program's own `--help`: each option a listed command of it passes is one the program takes."""
    usage = run([sys.executable, *key.split()[1:], "--help"], tmp_path).stdout
    assert usage.startswith("usage: "), usage
    for words in listed_commands(key):
        for option in (word.split("=", 1)[0] for word in words if word.startswith("--")):
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", usage), f"{key} takes no {option}: {words}"


SMALL_RUN = [
    "--sequence_length", "8", "--config_overrides", OVERRIDES, "--num_train_epochs", "1",
    "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--disable_tqdm", "true",
]  # fmt: skip
"""Appended to every documented training command (later flags win): a tiny model for one epoch."""


def flag_value(arguments: list[str], flag: str, default: str | None = None) -> str | None:
    """The value of the last `flag` in `arguments`, as argparse takes it."""
    values = [arguments[index + 1] for index, word in enumerate(arguments[:-1]) if word == flag]
    return values[-1] if values else default


@pytest.mark.slow
def test_training_commands_run_as_written_on_fixture_corpora(tiny_backbones, tmp_path_factory):
    """Each documented training command, in document order, in one working directory, so a later command can
    continue from an earlier one's checkpoint. A bare `...` stands for the arguments of the run whose output it
    continues."""
    corpora_dir = tmp_path_factory.mktemp("corpora")
    corpora = {flag: str(write(corpora_dir)) for flag, write in CORPUS_FLAGS.items()}
    workdir, hf_home = tmp_path_factory.mktemp("workdir"), tmp_path_factory.mktemp("hf_home")
    small = [
        *SMALL_RUN, "--text_backbone", tiny_backbones.text, "--speech_backbone", tiny_backbones.speech,
        "--cache_dir", str(tmp_path_factory.mktemp("cache")),
    ]  # fmt: skip
    runs: dict[str, list[str]] = {}  # output_dir -> the documented arguments of the run that wrote it
    trainings = [words for words in shell_commands() if train_launcher(words) and "--help" not in words]
    assert trainings, "no document shows a training command"
    for words in trainings:
        launcher = train_launcher(words)
        arguments = words[len(launcher) + 1 :]
        checkpoint = flag_value(arguments, "--resume_from_checkpoint")
        if checkpoint is not None:
            # The documented step number is an example: continue from the checkpoint that earlier run really wrote,
            # for one more epoch than it trained.
            continued = str(Path(checkpoint).parent)
            assert continued in runs, f"{words} continues {continued}, which no earlier documented command writes"
            checkpoints = sorted((workdir / continued).glob("checkpoint-*"), key=lambda path: int(path.name[11:]))
            arguments[arguments.index(checkpoint)] = str(checkpoints[-1])
            arguments = [part for word in arguments for part in (runs[continued] if word == "..." else [word])]
        arguments = [corpora.get(previous, word) for previous, word in zip(["", *arguments], arguments)]
        assert "..." not in arguments, f"a `...` this test cannot fill in: {words}"
        extra = ["--num_train_epochs", "2"] if checkpoint is not None else []
        log = run([*LAUNCHERS[launcher], str(REPO_ROOT / "train.py"), *arguments, *small, *extra], hf_home, workdir)
        dataset = flag_value(arguments, "--dataset")
        output_dir = flag_value(arguments, "--output_dir", CORPORA[dataset].output_dir)
        runs[output_dir] = words[len(launcher) + 1 :]

        saved = workdir / output_dir
        saved_files = {path.name for path in saved.iterdir()}
        assert {"model.safetensors", "eval_results.json", "processor_config.json"} <= saved_files
        report = json.loads((saved / "dataset_report.json").read_text())
        assert report["split_by"] == flag_value(arguments, "--split_by", "random")
        assert {load["root"] for load in report["loads"]} == {
            corpora[flag] for flag in CORPUS_FLAGS if flag in arguments
        }, log.stdout[-3000:]
        state = json.loads((saved / "trainer_state.json").read_text())
        if checkpoint is not None:
            steps = int(Path(arguments[arguments.index("--resume_from_checkpoint") + 1]).name[11:])
            assert state["global_step"] == 2 * steps  # the second epoch, after the checkpoint of the first
        else:
            assert state["epoch"] == 1


# --------------------------------------------------------------------------------------------------------------------
# Python snippets


def pipeline_results_match_the_readme(namespace: dict, results: list[tuple[ast.expr, object]]) -> None:
    """Every `classifier(...)` call of the snippet: all seven emotions or `top_k`, most likely first, the per-direction
    scores with `return_modalities`, and batched results (any `batch_size`) equal to one-by-one results.

    The pipeline ignores keywords it does not know, so a misspelt one would pass unnoticed: each keyword the snippet
    uses must be one whose effect is checked here."""
    classifier = namespace["classifier"]
    calls = [(node, result) for node, result in results if isinstance(node, ast.Call)]
    assert calls
    for node, result in calls:
        keywords = {keyword.arg: ast.literal_eval(keyword.value) for keyword in node.keywords}
        assert keywords.keys() <= {"top_k", "return_modalities", "batch_size"}, f"unchecked keywords: {keywords}"
        one_item_keywords = {name: value for name, value in keywords.items() if name != "batch_size"}
        inputs = eval(compile(ast.Expression(node.args[0]), "<README>", "eval"), namespace)  # noqa: S307
        batch = isinstance(inputs, list)
        per_item = result if batch else [result]
        assert len(per_item) == (len(inputs) if batch else 1)
        for item, emotions in zip(inputs if batch else [inputs], per_item):
            assert len(emotions) == keywords.get("top_k", len(EMOTION_LABELS))
            assert {emotion["label"] for emotion in emotions} <= set(EMOTION_LABELS)
            scores = [emotion["score"] for emotion in emotions]
            assert scores == sorted(scores, reverse=True)
            if keywords.get("return_modalities"):
                assert all({"text_score", "speech_score"} <= emotion.keys() for emotion in emotions)
            if batch:
                one_by_one = classifier(item, **one_item_keywords)
                assert [emotion["label"] for emotion in emotions] == [emotion["label"] for emotion in one_by_one]
                torch.testing.assert_close(scores, [emotion["score"] for emotion in one_by_one])
            if len(emotions) == len(EMOTION_LABELS):
                assert sum(scores) == pytest.approx(1.0)


def model_outputs_match_the_readme(namespace: dict, results: list[tuple[ast.expr, object]]) -> None:
    """Features of one utterance are (1, sequence_length, hidden_size) per modality, and `logits.softmax(-1)` is the
    average of the two directions' probabilities (Eq. 9)."""
    processor, model, features, output = (namespace[name] for name in ("processor", "model", "features", "output"))
    assert type(model).__name__ == "HyFusERForEmotionRecognition"
    shape = (1, processor.sequence_length, model.config.hidden_size)
    assert features["text_features"].shape == features["speech_features"].shape == shape
    probabilities = results[-1][1]
    ensemble = (output.text_logits.softmax(-1) + output.speech_logits.softmax(-1)) / 2
    torch.testing.assert_close(probabilities, ensemble)
    assert probabilities.shape == (1, len(EMOTION_LABELS))


SNIPPET_CHECKS = {
    "from transformers import pipeline": pipeline_results_match_the_readme,
    "from transformers import AutoModel, AutoProcessor": model_outputs_match_the_readme,
}
"""Each documented Python snippet, by its first line, and what its results must satisfy."""


@pytest.fixture(scope="module")
def snippet_inputs(saved_model_dir, tmp_path_factory) -> tuple[dict[str, str], dict]:
    """(text replacements, predefined names) that let the documented snippets run here."""
    folder = tmp_path_factory.mktemp("audio")
    utterance = write_tone(folder / "utterance.wav", seconds=1.0, frequency=180.0)
    thanks = write_tone(folder / "thanks.wav", sampling_rate=44_100, seconds=0.7, frequency=240.0, seed=1)
    replacements = {
        '"path/to/output_dir"': repr(str(saved_model_dir)),
        '"utterance.wav"': repr(str(utterance)),
        '"thanks.wav"': repr(str(thanks)),
    }
    item = {"text": "정말 고마워요", "audio": str(thanks)}
    items = [{"text": "아 진짜 너무 화가 나서 못 참겠어", "audio": str(utterance)}, item]
    return replacements, {"items": items, "item": item}


@pytest.mark.parametrize("index", range(len(python_snippets())))
def test_python_snippet_runs_and_its_results_are_what_the_readme_says(index, snippet_inputs):
    snippet = python_snippets()[index]
    replacements, names = snippet_inputs
    for placeholder, value in replacements.items():
        snippet = snippet.replace(placeholder, value)
    namespace, results = dict(names), []
    for statement in ast.parse(snippet).body:
        if isinstance(statement, ast.Expr):
            value = eval(compile(ast.Expression(statement.value), "<README>", "eval"), namespace)  # noqa: S307
            results.append((statement.value, value))
        else:
            exec(compile(ast.Module([statement], []), "<README>", "exec"), namespace)  # noqa: S102
    SNIPPET_CHECKS[python_snippets()[index].splitlines()[0]](namespace, results)
