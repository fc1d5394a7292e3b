"""A fresh machine installs what the suite passed with: constraints.txt pins it, the Makefile installs with it, and
the README names it; and a plain `pip install .` installs the shipped modules and the package, metric included."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

from hyfuser.checkpoint import ONNX_SHIPPED_FILES, SHIPPED_FILES

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTED_EXTRAS = ("test", "onnx", "app")
"""The extras `make test` installs, all of which constraints.txt must pin."""


def _update_constraints():
    spec = importlib.util.spec_from_file_location("update_constraints", REPO_ROOT / ".ci" / "update_constraints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


update_constraints = _update_constraints()


def declared_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [Requirement(line) for line in [*project["dependencies"], *(r for x in TESTED_EXTRAS for r in extras[x])]]


def test_constraints_pin_every_declared_dependency_within_its_range():
    pins = update_constraints.read_constraints()
    for requirement in declared_requirements():
        name = update_constraints.canonical(requirement.name)
        assert name in pins, f"constraints.txt does not pin {requirement.name} (declared as {requirement})"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject.toml's {requirement}"
        )


def test_constraints_file_says_when_and_how_it_was_resolved():
    header = [line for line in (REPO_ROOT / "constraints.txt").read_text().splitlines() if line.startswith("#")]
    assert any("make constraints" in line for line in header)
    assert any(re.search(r"Resolved on \d{4}-\d{2}-\d{2} with Python 3\.\d+", line) for line in header)


def test_readme_names_the_pinned_versions_and_the_space_runs_the_pinned_gradio():
    pins = update_constraints.read_constraints()
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = update_constraints.BLOCK.search(readme)
    assert block, "README.md lost its tested-versions block"
    assert update_constraints.tested_versions_line(pins) in block.group(0)
    assert f"sdk_version: {pins['gradio']}" in readme.split("---\n")[1].splitlines()


@pytest.mark.parametrize("target", ["demo", "test", "app", "mutants"])
def test_every_install_of_the_pinned_targets_goes_through_the_constraints(target, tmp_path):
    """`make -n` prints the recipe a fresh clone runs: every package install in it names constraints.txt."""
    recipe = subprocess.run(
        ["make", "-n", target, f"VENV={tmp_path / '.venv'}"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    installs = [line for line in recipe.splitlines() if "pip install" in line and "--upgrade pip" not in line]
    assert installs, recipe
    for line in installs:
        assert "--constraint constraints.txt" in line, f"`make {target}` installs without the constraints: {line}"


def test_test_latest_installs_without_the_constraints_in_a_venv_of_its_own(tmp_path):
    recipe = subprocess.run(
        ["make", "-n", "test-latest", f"LATEST_VENV={tmp_path / 'latest'}"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert f"-m venv {tmp_path / 'latest'}" in recipe
    assert "constraints" not in recipe
    assert 'pytest -m "not slow"' in recipe


WHEEL_FOLDERS = ("hyfuser", "metrics")
"""The folders a wheel is built from, beside the root files: the package, and the `evaluate` module that
pyproject.toml maps into it."""


def pip(*arguments: str) -> None:
    """Run pip offline with this interpreter; a failure shows pip's output."""
    command = [sys.executable, "-m", "pip", *arguments, "--no-index", "--no-cache-dir", "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}{result.stderr}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip install .` builds, built offline with this environment's setuptools from a copy of the
    sources (a build writes `build/` and `*.egg-info` into the tree it builds)."""
    source = tmp_path_factory.mktemp("source")
    for path in REPO_ROOT.iterdir():
        if path.is_file():
            shutil.copy2(path, source)
    for folder in WHEEL_FOLDERS:
        shutil.copytree(REPO_ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path_factory.mktemp("wheels")
    pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(wheels), str(source))
    (built,) = wheels.glob("*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_holds_exactly_the_shipped_modules_and_the_package_with_its_metric_module(wheel):
    names = [name for name in zipfile.ZipFile(wheel).namelist() if ".dist-info/" not in name]
    assert {name.split("/")[0] for name in names} == {*SHIPPED_FILES, *ONNX_SHIPPED_FILES, "hyfuser"}
    metric_folder = REPO_ROOT / "metrics" / "emotion_metrics"
    package = {f"hyfuser/{path.name}" for path in (REPO_ROOT / "hyfuser").glob("*.py")}
    package |= {f"hyfuser/emotion_metrics/{path.name}" for path in metric_folder.iterdir() if path.is_file()}
    assert {name for name in names if name.startswith("hyfuser/")} == package


@pytest.mark.slow
def test_a_plain_install_loads_its_own_copy_of_the_metric_outside_the_repository(wheel, tmp_path):
    site = tmp_path / "site"
    pip("install", "--no-deps", "--target", str(site), str(wheel))
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "import hyfuser.metrics as metrics\n"
        "result = metrics.emotion_metrics().compute(\n"
        "    predictions=[0, 1, 1], references=[0, 1, 2], label_names=['angry', 'happy', 'sad']\n"
        ")\n"
        "print(json.dumps({\n"
        "    'sys_path': [str(Path(entry).resolve()) for entry in sys.path],\n"
        "    'module': metrics.__file__, 'metric_path': str(metrics.EMOTION_METRICS_PATH), 'result': result,\n"
        "}))\n"
    )
    environment = {
        **os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
    }  # fmt: skip
    process = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300
    )
    assert process.returncode == 0, process.stderr
    found = json.loads(process.stdout.splitlines()[-1])

    assert str(REPO_ROOT) not in found["sys_path"]
    assert Path(found["module"]).resolve() == site.resolve() / "hyfuser" / "metrics.py"
    assert Path(found["metric_path"]) == site.resolve() / "hyfuser" / "emotion_metrics"
    result = found["result"]
    # Predictions [0, 1, 1] for references [0, 1, 2]: per class precision 1, 1/2, 0 and recall 1, 1, 0, each class
    # one reference, so the weighted and macro F1 are both the mean of 1, 2/3 and 0.
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["precision_weighted"] == pytest.approx(1 / 2)
    assert result["recall_weighted"] == pytest.approx(2 / 3)
    assert result["f1_weighted"] == pytest.approx(5 / 9)
    assert result["f1_macro"] == pytest.approx(5 / 9)
    assert result["confusion_matrix"] == {
        "labels": ["angry", "happy", "sad"], "matrix": [[1, 0, 0], [0, 1, 0], [0, 1, 0]]
    }  # fmt: skip
