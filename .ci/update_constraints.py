"""Write constraints.txt from a freshly resolved environment, and the tested versions the README names from it.

`make constraints` resolves the core dependencies and the test, onnx and app extras with no constraints into a
throw-away virtual environment, then runs this with that environment's Python:

    python .ci/update_constraints.py RESOLVED_PYTHON

constraints.txt then pins every installed package to the version that was resolved, and the README's
tested-versions block and its Space front matter (`sdk_version`, the Gradio a Hugging Face Space runs) are
rewritten from it, so neither is ever typed by hand. `make demo`, `make test` and .ci/run install with
`--constraint constraints.txt`.
"""

from __future__ import annotations

import datetime
import json
import platform
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = REPO_ROOT / "constraints.txt"
README = REPO_ROOT / "README.md"
LEFT_OUT = {"hyfuser", "pip", "wheel"}
"""The project itself, and the installer's own tools, which the suite does not run with (setuptools it does: the
`test` extra needs it to build the wheel that tests/test_installs.py installs)."""
NAMED_IN_README = ("torch", "transformers", "datasets", "accelerate", "evaluate", "huggingface-hub", "gradio")
"""The packages whose versions the README's tested-versions line names, in that order."""
BLOCK = re.compile(r"(<!-- tested-versions -->\n).*?(<!-- /tested-versions -->)", re.DOTALL)
SDK_VERSION = re.compile(r"^sdk_version: .*$", re.MULTILINE)


def resolved_versions(python: str) -> dict[str, str]:
    """Name -> version of every distribution installed in `python`'s environment, the project itself excepted.

    A local version label (`2.13.0+cpu`) is dropped: `==2.13.0` admits the CPU and the CUDA builds alike, and which
    one to install is the Makefile's `TORCH` choice, not the constraints'.
    """
    listing = subprocess.run(
        [python, "-m", "pip", "list", "--format=json", "--exclude-editable"],
        check=True, stdout=subprocess.PIPE, text=True,
    ).stdout  # fmt: skip
    versions = {canonical(item["name"]): item["version"].split("+")[0] for item in json.loads(listing)}
    return {name: version for name, version in sorted(versions.items()) if name not in LEFT_OUT}


def canonical(name: str) -> str:
    """A distribution's name as package indexes compare it (PEP 503): `huggingface_hub` is `huggingface-hub`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_constraints(path: Path = CONSTRAINTS) -> dict[str, str]:
    """Name -> pinned version of a constraints file written by `write_constraints`."""
    pins = (line.split("==") for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return {name: version for name, version in pins}


def write_constraints(versions: dict[str, str], python_version: str, today: datetime.date) -> None:
    header = [
        "# Every package `make demo`, `make test` and .ci/run install, at the version the test suite passed with.",
        "# Written by `make constraints` (a fresh resolve of the core dependencies and the test, onnx and app extras);",
        "# do not edit by hand. pyproject.toml keeps the compatible ranges that library users install.",
        f"# Resolved on {today.isoformat()} with Python {python_version} on {platform.system()} {platform.machine()}.",
    ]
    CONSTRAINTS.write_text("\n".join([*header, *(f"{name}=={version}" for name, version in versions.items())]) + "\n")


def tested_versions_line(versions: dict[str, str]) -> str:
    """The README's sentence naming the tested versions of the packages users ask about first."""
    named = ", ".join(f"{name} {versions[name]}" for name in NAMED_IN_README)
    return f"Tested with {named} (every pin: `constraints.txt`)."


def update_readme(versions: dict[str, str]) -> None:
    readme = README.read_text(encoding="utf-8")
    if not BLOCK.search(readme):
        raise SystemExit(f"{README}: no <!-- tested-versions --> ... <!-- /tested-versions --> block to rewrite")
    readme = BLOCK.sub(lambda match: match.group(1) + tested_versions_line(versions) + "\n" + match.group(2), readme)
    readme = SDK_VERSION.sub(f"sdk_version: {versions['gradio']}", readme, count=1)
    README.write_text(readme, encoding="utf-8")


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python .ci/update_constraints.py RESOLVED_PYTHON")
    python = argv[0]
    python_version = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"], check=True, stdout=subprocess.PIPE,
        text=True,
    ).stdout.strip()  # fmt: skip
    versions = resolved_versions(python)
    write_constraints(versions, python_version, datetime.date.today())
    update_readme(versions)
    print(f"{CONSTRAINTS.name}: {len(versions)} packages pinned; README: {tested_versions_line(versions)}")


if __name__ == "__main__":
    main(sys.argv[1:])
