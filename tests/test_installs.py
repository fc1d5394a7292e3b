"""A fresh machine installs what the suite passed with: constraints.txt pins it, the Makefile installs with it, and
the README names it."""

import importlib.util
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

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
