"""Audio in the forms users already pass to other audio pipelines: encoded bytes, torch tensors, `datasets` items."""

import logging
import os

import numpy as np
import pytest
import soundfile
import torch
from audio_files import voiced_tone, write_tone
from datasets import Audio, Dataset

TEXT = "정말 너무 화가 나서 참을 수가 없어요"


def scores(result: list[dict]) -> np.ndarray:
    return np.array([emotion["score"] for emotion in sorted(result, key=lambda emotion: emotion["label"])])


@pytest.mark.parametrize(
    ("suffix", "rate", "channels"), [(".wav", 8_000, 1), (".flac", 16_000, 2), (".ogg", 22_050, 1), (".mp3", 44_100, 1)]
)
def test_encoded_file_bytes_give_the_files_result(classifier, tmp_path, suffix, rate, channels):
    path = write_tone(tmp_path / f"clip{suffix}", sampling_rate=rate, seconds=0.9, channels=channels, seed=4)
    from_bytes = classifier({"text": TEXT, "audio": path.read_bytes()})
    from_file = classifier({"text": TEXT, "audio": str(path)})
    np.testing.assert_array_equal(scores(from_bytes), scores(from_file))


def test_bytes_decode_to_the_files_waveform(tiny_processor, tmp_path):
    path = write_tone(tmp_path / "clip.flac", sampling_rate=16_000, seconds=0.5, seed=5)
    expected, _ = soundfile.read(path, dtype="float32")
    np.testing.assert_array_equal(tiny_processor.load_audio(path.read_bytes()), expected)


def test_one_bytes_clip_is_one_item_not_a_sequence_of_samples(tiny_processor, tmp_path):
    clip = write_tone(tmp_path / "clip.wav", seconds=0.5).read_bytes()
    features = tiny_processor(text=TEXT, audio=clip, scale=False)
    assert features["speech_features"].shape[0] == 1


def test_bad_bytes_get_the_same_error_as_a_bad_file(classifier, tmp_path):
    garbage = b"this is not audio"
    (tmp_path / "garbage.wav").write_bytes(garbage)
    with pytest.raises(ValueError, match=r"audio file '.*garbage.wav' cannot be read as audio: (.*)") as file_error:
        classifier({"text": TEXT, "audio": str(tmp_path / "garbage.wav")})
    with pytest.raises(ValueError, match=r"audio bytes \(17 bytes\) cannot be read as audio: (.*)") as bytes_error:
        classifier({"text": TEXT, "audio": garbage})
    reason = str(file_error.value).split("cannot be read as audio: ")[1]
    assert reason and str(bytes_error.value).endswith(f"cannot be read as audio: {reason}")


@pytest.mark.parametrize("layout", ["mono", "channels_first", "samples_first"])
def test_torch_tensor_gives_the_numpy_arrays_result(classifier, layout):
    mono = voiced_tone(8_000, seconds=0.8, seed=6)
    stereo = np.stack([mono, np.roll(mono, 3)])
    array = {"mono": mono, "channels_first": stereo, "samples_first": stereo.T.copy()}[layout]
    from_tensor = classifier({"text": TEXT, "audio": torch.from_numpy(array)}, sampling_rate=8_000)
    from_array = classifier({"text": TEXT, "audio": array}, sampling_rate=8_000)
    np.testing.assert_array_equal(scores(from_tensor), scores(from_array))


def test_undecoded_datasets_audio_items_give_the_files_result(classifier, tmp_path):
    """`Audio(decode=False)` yields {"bytes", "path"} dicts: from a file's bytes or, for a local file, its path."""
    paths = [str(write_tone(tmp_path / f"clip{index}.wav", 16_000, 0.6, 180.0 + 60 * index, seed=index))
             for index in range(2)]
    from_bytes = Dataset.from_dict({"audio": [{"bytes": open(path, "rb").read(), "path": None} for path in paths]})
    from_paths = Dataset.from_dict({"audio": paths})
    for dataset in (from_bytes, from_paths):
        items = [{"text": TEXT, "audio": row["audio"]} for row in dataset.cast_column("audio", Audio(decode=False))]
        expected = classifier([{"text": TEXT, "audio": path} for path in paths])
        for result, reference in zip(classifier(items), expected):
            np.testing.assert_array_equal(scores(result), scores(reference))


def test_decoded_datasets_audio_items_give_the_files_result(classifier, tmp_path):
    """A decoding `Audio` column yields torchcodec's `AudioDecoder` in datasets 4 and later."""
    try:
        from torchcodec.decoders import AudioDecoder  # noqa: F401
    except (ImportError, RuntimeError, OSError) as error:
        if os.environ.get("CI"):  # .ci/run installs torchcodec and the FFmpeg libraries: there, missing is a failure
            raise
        pytest.skip(f"decoding datasets audio needs torchcodec and the FFmpeg libraries: {error}")
    paths = [str(write_tone(tmp_path / f"clip{index}.flac", 22_050, 0.7, 200.0 + 50 * index, channels=2, seed=index))
             for index in range(2)]
    dataset = Dataset.from_dict({"audio": paths}).cast_column("audio", Audio())
    decoded = [row["audio"] for row in dataset]
    assert all(hasattr(item, "get_all_samples") for item in decoded)
    results = classifier([{"text": TEXT, "audio": item} for item in decoded])
    expected = classifier([{"text": TEXT, "audio": path} for path in paths])
    for result, reference in zip(results, expected):
        np.testing.assert_allclose(scores(result), scores(reference), rtol=0, atol=1e-6)


def test_raw_array_without_a_rate_warns_at_every_call_how_to_give_the_rate(classifier, caplog):
    """A 48 kHz array read as 16 kHz changes the prediction: the second call must warn again, not stay silent."""
    item = {"text": TEXT, "audio": voiced_tone(48_000, seconds=0.5, seed=7)}
    with caplog.at_level(logging.WARNING):
        classifier(item)
        classifier(item)
        classifier(item, sampling_rate=48_000)
        classifier({"text": TEXT, "audio": {"array": item["audio"], "sampling_rate": 48_000}})
    warnings = [record.getMessage() for record in caplog.records if "No sampling_rate given" in record.getMessage()]
    assert len(warnings) == 2
    assert "taken to be at 16000 Hz" in warnings[0]
    assert '{"array": waveform, "sampling_rate": 48000}' in warnings[0] and "sampling_rate=48000" in warnings[0]
