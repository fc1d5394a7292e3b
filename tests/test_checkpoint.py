"""The one list of shipped files: every save copies exactly it, and the installed top-level modules are exactly it."""

import re
from pathlib import Path

import tomllib

from hyfuser.checkpoint import ONNX_SHIPPED_FILES, SHIPPED_FILES

REPO_ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {"train.py", "reproduce.py", "export_onnx.py", "app.py", "timeline.py"}


def test_a_saved_directory_holds_exactly_the_shipped_files(saved_model_dir):
    assert sorted(path.name for path in saved_model_dir.glob("*.py")) == sorted(SHIPPED_FILES)


def test_the_root_holds_only_shipped_modules_and_commands():
    assert {path.name for path in REPO_ROOT.glob("*.py")} == {*SHIPPED_FILES, *ONNX_SHIPPED_FILES, *COMMANDS}


def test_pip_installs_the_shipped_modules_at_the_top_level_and_the_rest_as_the_package():
    setuptools = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert sorted(f"{name}.py" for name in setuptools["py-modules"]) == sorted({*SHIPPED_FILES, *ONNX_SHIPPED_FILES})


def test_the_readme_layout_names_every_root_module_and_every_package_module():
    layout = (REPO_ROOT / "README.md").read_text().split("## Repository layout", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([\w/]+\.py)`", layout))
    modules = {path.name for path in REPO_ROOT.glob("*.py")} | {
        path.name for path in (REPO_ROOT / "hyfuser").glob("*.py") if path.name != "__init__.py"
    }
    assert modules - named == set()
    assert named - modules == set()


def test_modules_stay_within_the_sizes_the_layout_promises():
    """The processor composes its parts, train.py reads top to bottom, and no package or benchmark module sprawls."""

    def lines(path: Path) -> int:
        return len(path.read_text().splitlines())

    limits = {REPO_ROOT / "processing_hyfuser.py": 450, REPO_ROOT / "train.py": 300}
    limits |= {path: 500 for path in (REPO_ROOT / "hyfuser").glob("*.py")}
    limits |= {path: 400 for path in (REPO_ROOT / "benchmarks").rglob("*.py")}
    too_long = {path.relative_to(REPO_ROOT).as_posix(): lines(path) for path in limits if lines(path) > limits[path]}
    assert too_long == {}
