"""transformers' own common tests (`ModelTesterMixin`, `ConfigTester`), from the installed version's source release.

The wheel ships no tests, so the first run downloads the source distribution of exactly the installed version with
pip into `$HYFUSER_CACHE` (default `~/.cache/hyfuser`) and keeps its top-level `tests/*.py` as the package
`transformers_tests`; later runs import them from there. The source release leaves out three modules those files
import, so they are written here as the smallest stand-ins that say what is missing:

- `exporters/test_export.py`: `ExportTesterMixin`, the `torch.export` tests. Not shipped, so they do not run.
- `generation/test_utils.py`: `GenerationTesterMixin`. HyFusER classifies and never generates.
- `utils/test_configuration_utils.py`: `config_common_kwargs`, every generic field of the installed
  `PretrainedConfig` at a value other than its default, which `ConfigTester` checks a config keeps. Built from the
  installed class at import time, and refused if that class has a field it does not know a value for.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

import transformers

PACKAGE = "transformers_tests"

NON_DEFAULT_VALUES = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "architectures": ["BertModel"],
    "id2label": {0: "label"},
    "label2id": {"label": "0"},
    "problem_type": "regression",
}
"""A value other than the default for each generic `PretrainedConfig` field a model config must keep."""

NOT_CONFIG_ARGUMENTS = {"is_encoder_decoder", "transformers_version", "name_or_path"}
"""`PretrainedConfig` attributes that are bookkeeping or architecture, not arguments every config takes."""

STAND_INS = {
    "exporters/test_export.py": (
        '"""Stand-in: the source release lacks tests/exporters, so the torch.export tests do not run."""\n\n\n'
        "class ExportTesterMixin:\n    pass\n"
    ),
    "generation/test_utils.py": (
        '"""Stand-in: the source release lacks tests/generation; HyFusER never generates."""\n\n\n'
        "class GenerationTesterMixin:\n    pass\n"
    ),
    "utils/test_configuration_utils.py": (
        '"""Stand-in: the source release lacks tests/utils; see HyFusER\'s tests/transformers_common.py."""\n\n'
        "from transformers_common import generic_config_kwargs\n\n"
        "config_common_kwargs = generic_config_kwargs()\n"
    ),
}
"""The modules the release's test files import but the release lacks, by path in the package, and their text."""


def generic_config_kwargs() -> dict:
    """`NON_DEFAULT_VALUES`, checked against the installed `PretrainedConfig`: it must name every generic field."""
    base = transformers.PretrainedConfig()
    fields = {name.lstrip("_") for name in vars(base) if not name.endswith("_internal") and name != "_post_init_done"}
    unknown = fields - NOT_CONFIG_ARGUMENTS - NON_DEFAULT_VALUES.keys()
    if unknown:
        raise RuntimeError(
            f"transformers {transformers.__version__}'s PretrainedConfig has fields {sorted(unknown)} that "
            "tests/transformers_common.py NON_DEFAULT_VALUES gives no value for"
        )
    for name, value in NON_DEFAULT_VALUES.items():
        if name != "dtype" and getattr(base, name) == value:
            raise RuntimeError(f"NON_DEFAULT_VALUES[{name!r}] is PretrainedConfig's default, so it tests nothing")
    return dict(NON_DEFAULT_VALUES)


def cache_root() -> Path:
    return Path(os.environ.get("HYFUSER_CACHE", Path.home() / ".cache" / "hyfuser"))


def _download_tests(destination: Path) -> None:
    """Download transformers' source release with pip and keep its top-level tests, plus the stand-ins."""
    version = transformers.__version__
    with tempfile.TemporaryDirectory(dir=destination.parent) as scratch:
        scratch = Path(scratch)
        command = [sys.executable, "-m", "pip", "download", f"transformers=={version}", "--no-deps",
                   "--no-binary", ":all:", "--quiet", "--dest", str(scratch)]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        archives = list(scratch.glob("transformers-*.tar.gz"))
        if result.returncode or len(archives) != 1:
            raise RuntimeError(
                f"could not download the source release of transformers {version} ({' '.join(command)}):\n"
                f"{result.stdout}{result.stderr}"
            )
        package = scratch / PACKAGE
        package.mkdir()
        with tarfile.open(archives[0]) as archive:
            for member in archive.getmembers():
                parts = Path(member.name).parts
                if member.isfile() and len(parts) == 3 and parts[1] == "tests" and parts[2].endswith(".py"):
                    (package / parts[2]).write_bytes(archive.extractfile(member).read())
        if not (package / "test_modeling_common.py").is_file():
            raise RuntimeError(f"transformers {version}'s source release has no tests/test_modeling_common.py")
        for relative, text in {"__init__.py": "", **STAND_INS}.items():
            path = package / relative
            path.parent.mkdir(exist_ok=True)
            (path.parent / "__init__.py").touch()
            path.write_text(text)
        try:
            package.rename(destination)  # atomic: a concurrent run either finds the whole package or none
        except OSError:
            if not (destination / "test_modeling_common.py").is_file():
                raise


def import_common_tests() -> tuple[ModuleType, ModuleType]:
    """`test_modeling_common` and `test_configuration_common` of the installed transformers version."""
    root = cache_root() / f"transformers-{transformers.__version__}"
    destination = root / PACKAGE
    if not (destination / "test_modeling_common.py").is_file():
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(destination, ignore_errors=True)
        _download_tests(destination)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    modeling = importlib.import_module(f"{PACKAGE}.test_modeling_common")
    configuration = importlib.import_module(f"{PACKAGE}.test_configuration_common")
    return modeling, configuration
