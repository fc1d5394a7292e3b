"""A checkpoint directory written before the package move loads and predicts the same with today's code."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from audio_files import write_tone
from transformers import pipeline

from hyfuser.checkpoint import SHIPPED_FILES, copy_shipped_files

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "saved-before-move"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """The three files the fixture's predictions were made on, written again byte for byte (the tones are seeded)."""
    directory = tmp_path_factory.mktemp("inputs")
    write_tone(directory / "narrowband.wav", 8_000, 1.2, 180.0, seed=1)
    write_tone(directory / "wideband.flac", 16_000, 0.8, 260.0, seed=2)
    write_tone(directory / "studio.wav", 44_100, 1.5, 220.0, channels=2, seed=3)
    return directory


def predictions(directory: Path, inputs: Path) -> list[list[dict]]:
    classifier = pipeline(model=str(directory), trust_remote_code=True, device="cpu")
    return [
        classifier({"text": item["text"], "audio": str(inputs / item["audio"])}, return_modalities=True, top_k=None)
        for item in EXPECTED["items"]
    ]


def assert_same_predictions(result: list[list[dict]]) -> None:
    for got, expected in zip(result, EXPECTED["predictions"], strict=True):
        got_by_label = {emotion["label"]: emotion for emotion in got}
        assert sorted(got_by_label) == sorted(emotion["label"] for emotion in expected)
        for emotion in expected:
            for key in ("score", "text_score", "speech_score"):
                np.testing.assert_allclose(got_by_label[emotion["label"]][key], emotion[key], atol=1e-5)


def test_the_directory_as_saved_still_loads_and_predicts_the_same(tmp_path, inputs):
    """Its own remote code, as a user who downloaded it long ago would run it."""
    assert_same_predictions(predictions(shutil.copytree(FIXTURE / "checkpoint", tmp_path / "checkpoint"), inputs))



def test_todays_shipped_code_loads_it_and_predicts_the_same(tmp_path, inputs):
    """The repo's shipped files in place of the old ones, as re-publishing the checkpoint with today's code does."""
    directory = shutil.copytree(FIXTURE / "checkpoint", tmp_path / "checkpoint")
    for old in directory.glob("*.py"):
        old.unlink()
    copy_shipped_files(directory, SHIPPED_FILES)
    assert_same_predictions(predictions(directory, inputs))
