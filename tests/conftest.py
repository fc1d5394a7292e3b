"""Session-wide fixtures: tiny real backbones, built once, under pytest's temporary directory.

The repo root is put on `sys.path` so the tests import the remote-code modules (`modeling_hyfuser`, ...) the way
`train.py` does; `tests/` is put there too so test modules share `corpora.py` and friends.
"""

import os
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
for path in (str(REPO_ROOT), str(TESTS_DIR)):
    if path not in sys.path:
        sys.path.insert(0, path)

# The tests never touch the network: fail fast instead of hanging on a Hub lookup.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from demo_hyfuser import TinyBackbones, build_tiny_backbones  # noqa: E402


@pytest.fixture(scope="session")
def tiny_backbones(tmp_path_factory) -> TinyBackbones:
    """Tiny random ELECTRA + HuBERT in standard HF layout (hidden size 32)."""
    return build_tiny_backbones(tmp_path_factory.mktemp("backbones"))
