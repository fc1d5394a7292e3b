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

from hyfuser.tiny_backbones import BackbonePaths, build_tiny_backbones  # noqa: E402


@pytest.fixture(scope="session")
def tiny_backbones(tmp_path_factory) -> BackbonePaths:
    """Tiny random ELECTRA + HuBERT in standard HF layout (hidden size 32)."""
    return build_tiny_backbones(tmp_path_factory.mktemp("backbones"))


TINY_SEQUENCE_LENGTH = 16
"""Positions per modality in the tiny setup (the paper's 126 would only slow the tests down)."""


@pytest.fixture(scope="session")
def tiny_config(tiny_backbones):
    from configuration_hyfuser import HyFusERConfig

    return HyFusERConfig(
        hidden_size=tiny_backbones.hidden_size,
        intermediate_size=tiny_backbones.hidden_size,
        sequence_length=TINY_SEQUENCE_LENGTH,
        text_backbone=tiny_backbones.text,
        speech_backbone=tiny_backbones.speech,
    )


@pytest.fixture(scope="session")
def tiny_processor(tiny_backbones):
    """A processor over the tiny backbones whose joint scaler is fitted on a few real utterances."""
    from audio_files import voiced_tone

    from processing_hyfuser import HyFusERProcessor

    processor = HyFusERProcessor.from_backbones(
        tiny_backbones.text, tiny_backbones.speech, sequence_length=TINY_SEQUENCE_LENGTH
    )
    texts = ["정말 화가 나요", "너무 기뻐요", "무서워서 떨려요", "그냥 그래요"]
    audios = [voiced_tone(16_000, 0.5 + 0.25 * index, 150.0 + 40.0 * index, seed=index) for index in range(4)]
    features = processor(text=texts, audio=audios, scale=False)
    return processor.fit_scaler([(features["text_features"], features["speech_features"])])


@pytest.fixture(scope="session")
def tiny_model(tiny_config):
    import torch

    from modeling_hyfuser import HyFusERForEmotionRecognition

    torch.manual_seed(0)
    return HyFusERForEmotionRecognition(tiny_config).eval()


@pytest.fixture(scope="session")
def saved_model_dir(tmp_path_factory, tiny_model, tiny_processor):
    """A checkpoint written by `save_hyfuser`, the function training uses too."""
    from hyfuser.checkpoint import save_hyfuser

    return save_hyfuser(tmp_path_factory.mktemp("saved") / "hyfuser-tiny", tiny_model, tiny_processor)


@pytest.fixture(scope="module")
def classifier(saved_model_dir):
    """The pipeline over `saved_model_dir`, loaded as a user would; one per test module."""
    from transformers import pipeline

    return pipeline(model=str(saved_model_dir), trust_remote_code=True, device="cpu")
