#!/usr/bin/env python
"""Mutation testing: how many small bugs planted in HyFusER's code do the fast tests catch?

mutmut (the `mutants` extra) plants one change at a time (`<` for `<=`, `None` for a value, a dropped argument, ...)
in the functions listed in `GROUPS`, runs the fast tests (`-m "not slow"`) that call the changed function, and
records whether a test failed (killed) or all passed (survived). This script runs it once per group, from scratch,
and writes `benchmarks/mutants.md` (counts, and the diff of every mutant no test catches) and `mutants.json`.

Verdicts on survivors that no test can or should kill live in `benchmarks/mutants_equivalent.toml`, keyed by the
mutant ids the summary prints; they are merged into every new summary.

    make mutants                                  # = python benchmarks/mutants.py, all groups
    python benchmarks/mutants.py --group metrics  # one group, e.g. after writing a test for it
    python benchmarks/mutants.py --render         # only the summary again, e.g. after writing a verdict
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from mutants_summary import load_verdicts, render_markdown, summarize  # noqa: E402


@dataclass(frozen=True)
class Group:
    name: str
    source: str
    """The module file, relative to the repo root (`hyfuser/cache.py` for a module of the package)."""
    functions: tuple[str, ...]
    """`function` or `Class.method` names, fnmatch patterns allowed; `*` is the whole file."""
    tests: tuple[str, ...]
    """The test files that exercise it (only their fast tests run)."""


# What is mutated and which tests may kill it. Edit here when code moves between modules.
GROUPS = (
    Group("modeling", "modeling_hyfuser.py", ("*",), ("tests/test_modeling_hyfuser.py", "tests/test_baselines.py")),
    Group(
        "processor features",
        "processing_hyfuser.py",
        (
            "HyFusERProcessor.encode_text",
            "HyFusERProcessor.encode_speech",
            "HyFusERProcessor.speech_sequence",
            "HyFusERProcessor.collate",
            "HyFusERProcessor.encode",
            "HyFusERProcessor.__call__",
        ),
        ("tests/test_processing_hyfuser.py", "tests/test_pipeline_hyfuser.py"),
    ),
    Group(
        "backbone frames",
        "backbones_hyfuser.py",
        ("BackbonesMixin.interpolate_frames", "BackbonesMixin.speech_frames"),
        ("tests/test_processing_hyfuser.py", "tests/test_pipeline_hyfuser.py"),
    ),
    Group(
        "scaler",
        "scaling_hyfuser.py",
        (
            "FeatureStatistics.*",
            "ScalingMixin.fit_scaler",
            "ScalingMixin.set_scaler",
            "ScalingMixin.scale",
            "ScalingMixin.scaler_statistics",
            "_standardize",
        ),
        ("tests/test_processing_hyfuser.py", "tests/test_pipeline_hyfuser.py"),
    ),
    Group(
        "training glue: feature cache",
        "hyfuser/cache.py",
        ("*",),
        ("tests/test_training.py", "tests/test_train.py", "tests/test_layers.py"),
    ),
    Group("training glue: feed", "hyfuser/feed.py", ("*",), ("tests/test_training.py", "tests/test_train.py")),
    Group(
        "training glue: trainer",
        "hyfuser/training.py",
        ("*",),
        ("tests/test_training.py", "tests/test_train.py", "tests/test_baselines.py"),
    ),
    Group(
        "training glue: script",
        "train.py",
        ("parse_arguments", "main"),
        ("tests/test_train.py", "tests/test_baselines.py"),
    ),
    Group("training glue: run set-up", "hyfuser/run_setup.py", ("*",), ("tests/test_train.py",)),
    Group(
        "metrics",
        "hyfuser/metrics.py",
        ("compute_metrics", "prediction_metrics", "per_class_report", "fused_logits", "choose_ensemble_weight"),
        ("tests/test_train.py", "tests/test_baselines.py"),
    ),
)

REWRAPPED_DECORATORS = {"can_return_tuple", "property"}
"""mutmut 3 skips decorated functions (other than static and class methods); in its copy of the module, these
decorators are applied after the class instead, so the functions they decorate are mutated (`prepare_source`)."""

PYTEST_ARGS = (
    "-m", "not slow", "-p", "no:cacheprovider",
    # A fresh interpreter in another directory cannot find mutmut's settings, so the mutated code it loads fails.
    "--deselect", "tests/test_pipeline_hyfuser.py::test_fresh_offline_process_elsewhere_loads_every_auto_class",
)  # fmt: skip

WORK_DIR = REPO_ROOT / ".mutants"
"""One mutmut project per group (a copy of the repo's modules and tests), rebuilt on every run."""
SUMMARY_STEM = REPO_ROOT / "benchmarks" / "mutants"
SHARED_FILES = ("README.md", "docs/architecture.md", "docs/training.md", "metrics")
"""What the tests read besides the code: the documents whose tables and commands are checked against the code, and
the `evaluate` module that `hyfuser.metrics` loads from `metrics/`."""


# --------------------------------------------------------------------------------------------------------------------
# Functions of a module, as mutmut names them


def module_functions(source: str) -> dict[str, ast.FunctionDef]:
    """`function` and `Class.method` of the module's top level (what mutmut mutates) -> their nodes."""
    functions = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions[node.name] = node
        elif isinstance(node, ast.ClassDef):
            for child in node.body:
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    functions[f"{node.name}.{child.name}"] = child
    return functions


def qualname_of(mutant_name: str) -> str:
    """`train.x_fit_scaler__mutmut_3` -> `fit_scaler`, `m.xǁCǁf__mutmut_1` -> `C.f`."""
    key = mutant_name.partition("__mutmut_")[0].rpartition(".")[2]
    return key[2:].replace("ǁ", ".")


def selected_functions(group: Group, source: str) -> list[str]:
    """The group's functions that exist in `source`; a pattern that matches nothing is an error (moved code)."""
    functions = module_functions(source)
    selected = []
    for pattern in group.functions:
        matches = fnmatch.filter(functions, pattern)
        if not matches:
            raise SystemExit(f"{group.name}: no function {pattern!r} in {group.source}; update GROUPS in {__file__}")
        selected += [name for name in matches if name not in selected]
    return selected


def prepare_source(source: str, functions: list[str]) -> str:
    """The module as mutmut should see it, with every line where it was.

    Functions outside `functions` get `# pragma: no mutate block` on their `def` line, so mutmut leaves them as they
    are (no trampoline: `ProcessorMixin.from_pretrained` reads `__init__.__code__`, which a trampoline replaces).
    Selected functions whose decorators are all in `REWRAPPED_DECORATORS` lose them, one blank line per decorator,
    and get them back at the end of the module (`Class.f = can_return_tuple(Class.f)`), around the trampoline.
    """
    import libcst

    class Prepare(libcst.CSTTransformer):
        def __init__(self):
            self.scopes: list[libcst.CSTNode] = []
            self.rewraps: list[str] = []

        def visit_ClassDef(self, node: libcst.ClassDef) -> None:
            self.scopes.append(node)

        def visit_FunctionDef(self, node: libcst.FunctionDef) -> None:
            self.scopes.append(node)

        def leave_ClassDef(self, original: libcst.ClassDef, updated: libcst.ClassDef) -> libcst.ClassDef:
            self.scopes.pop()
            return updated

        def leave_FunctionDef(self, original: libcst.FunctionDef, updated: libcst.FunctionDef) -> libcst.FunctionDef:
            self.scopes.pop()
            if len(self.scopes) > 1 or any(isinstance(scope, libcst.FunctionDef) for scope in self.scopes):
                return updated  # nested: mutmut treats it as part of the enclosing function
            qualname = ".".join([*(scope.name.value for scope in self.scopes), updated.name.value])
            if qualname not in functions:
                comment = libcst.Comment("# pragma: no mutate block")
                header = updated.body.header.with_changes(whitespace=libcst.SimpleWhitespace("  "), comment=comment)
                return updated.with_changes(body=updated.body.with_changes(header=header))
            names = [d.decorator.value for d in updated.decorators if isinstance(d.decorator, libcst.Name)]
            if not names or len(names) != len(updated.decorators) or not set(names) <= REWRAPPED_DECORATORS:
                return updated
            wrapped = qualname
            for name in reversed(names):
                wrapped = f"{name}({wrapped})"
            self.rewraps.append(f"{qualname} = {wrapped}\n")
            blanks = [libcst.EmptyLine() for _ in names]
            return updated.with_changes(decorators=[], leading_lines=[*updated.leading_lines, *blanks])

    prepare = Prepare()
    code = libcst.parse_module(source).visit(prepare).code
    return code + "".join(prepare.rewraps)


# --------------------------------------------------------------------------------------------------------------------
# Running mutmut


def code_files() -> list[str]:
    """The root's modules and its packages' (`hyfuser/cache.py`), relative to the repo root."""
    packages = [init.parent for init in REPO_ROOT.glob("*/__init__.py")]
    paths = [*REPO_ROOT.glob("*.py"), *(path for package in packages for path in package.glob("*.py"))]
    return sorted(path.relative_to(REPO_ROOT).as_posix() for path in paths)


def prepare_project(group: Group, functions: list[str]) -> Path:
    """A fresh mutmut project for `group`: the repo's code files, tests, `SHARED_FILES` and pyproject.toml, plus
    mutmut's config."""
    project = WORK_DIR / group.name.replace(" ", "-").replace("+", "-")
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    modules = code_files()
    for name in modules:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, project / name)
    for name in ("tests", *SHARED_FILES):
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, project / name)
    target = project / group.source
    target.write_text(prepare_source(target.read_text(), functions))
    settings = {
        "source_paths": [group.source],
        # The other modules must sit next to the mutated one: mutmut's copy of the tests imports from there only.
        "also_copy": [*(name for name in modules if name != group.source), *SHARED_FILES],
        "pytest_add_cli_args": list(PYTEST_ARGS),
        "pytest_add_cli_args_test_selection": list(group.tests),
        "use_git_change_detection": False,
    }
    config = "\n[tool.mutmut]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
    (project / "pyproject.toml").write_text((REPO_ROOT / "pyproject.toml").read_text() + config)
    return project


def run_mutmut(group: Group, project: Path) -> None:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        environment[name] = "1"
    log = project / "mutmut.log"
    with log.open("w") as output:
        result = subprocess.run(
            [sys.executable, "-m", "mutmut", "run"], cwd=project, env=environment, stdout=output,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    if result.returncode != 0:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"{group.name}: mutmut failed (exit {result.returncode}); see {log}:\n{tail}")


def read_results(group: Group, project: Path) -> list[dict]:
    """Every mutant of the group's functions: name, function, status, and for the ones not killed, the diff."""
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code

    first_lines = function_first_lines((project / group.source).read_text())
    cwd = Path.cwd()
    os.chdir(project)  # mutmut reads its files relative to the project
    try:
        data = SourceFileMutationData(path=group.source)
        data.load()
        mutants = []
        for name, exit_code in data.exit_code_by_key.items():
            function = qualname_of(name)
            mutant = {"name": name, "function": function, "status": status_by_exit_code[exit_code]}
            if mutant["status"] != "killed":
                mutant["diff"] = get_diff_for_mutant(name, path=group.source)
                mutant["line"], mutant["change"] = changed_line(mutant["diff"], first_lines[function])
            mutants.append(mutant)
    finally:
        os.chdir(cwd)
    return sorted(mutants, key=lambda mutant: (mutant["function"], int(mutant["name"].rpartition("_")[2])))


def function_first_lines(source: str) -> dict[str, int]:
    """The line each function's code starts on as libcst renders it (comments above it included), which is where
    mutmut's diffs of that function count from. `source` is the prepared module, whose lines are the original's."""
    import libcst

    ends = {name: node.end_lineno for name, node in module_functions(source).items()}
    first_lines = {}
    for statement in libcst.parse_module(source).body:
        prefix, members = "", [statement]
        if isinstance(statement, libcst.ClassDef) and isinstance(statement.body, libcst.IndentedBlock):
            prefix, members = statement.name.value + ".", statement.body.body
        for node in members:
            if isinstance(node, libcst.FunctionDef):
                name = prefix + node.name.value
                first_lines[name] = ends[name] - libcst.Module([node]).code.strip().count("\n")
    return first_lines


def changed_line(diff: str, first_line: int) -> tuple[int, list[str]]:
    """The file line of a function diff's first change, and its changed lines as "- old" / "+ new", stripped."""
    line, first, changes = first_line, None, []
    for text in diff.splitlines()[2:]:
        if text.startswith("@@"):
            line = first_line + int(text.split()[1].lstrip("-").split(",")[0]) - 1
        elif text.startswith(("-", "+")):
            first = first or line
            changes.append(text[0] + " " + text[1:].strip())
            line += text.startswith("-")
        else:
            line += 1
    return first or first_line, changes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--group",
        choices=[group.name for group in GROUPS],
        action="append",
        help="run only this group (repeatable); the others keep their results from the last summary",
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help="run nothing: rewrite the summary from the last run's results with the current verdicts file",
    )
    args = parser.parse_args()
    verdicts = load_verdicts()
    summary_file = SUMMARY_STEM.with_suffix(".json")
    keep = args.group or args.render
    previous = json.loads(summary_file.read_text())["groups"] if keep and summary_file.exists() else {}
    results = {}
    for group in GROUPS:
        if args.render or (args.group and group.name not in args.group):
            if group.name in previous:
                results[group.name] = previous[group.name]
            continue
        source = (REPO_ROOT / group.source).read_text()
        functions = selected_functions(group, source)
        print(f"[mutants] {group.name}: {len(functions)} functions of {group.source}", file=sys.stderr, flush=True)
        group_start = time.monotonic()
        project = prepare_project(group, functions)
        run_mutmut(group, project)
        mutants = read_results(group, project)
        mutated = {mutant["function"] for mutant in mutants}
        results[group.name] = {
            "source": group.source,
            "tests": list(group.tests),
            "functions": functions,
            "unmutated": [name for name in functions if name not in mutated],
            "seconds": round(time.monotonic() - group_start),
            "mutants": mutants,
        }
        counts = Counter(mutant["status"] for mutant in mutants)
        print(f"[mutants] {group.name}: {dict(counts)}", file=sys.stderr, flush=True)
    summary = summarize(results, verdicts, PYTEST_ARGS)
    summary_file.write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    SUMMARY_STEM.with_suffix(".md").write_text(render_markdown(summary))
    print(f"[mutants] wrote {SUMMARY_STEM}.md and .json", file=sys.stderr)


if __name__ == "__main__":
    main()
