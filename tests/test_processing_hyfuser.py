"""HyFusERProcessor on the tiny real backbones: audio loading, feature extraction, joint scaling, saving, bad input."""

import copy
import json
import pickle
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from audio_files import write_tone
from datasets.fingerprint import Hasher
from transformers import AutoProcessor

from configuration_hyfuser import HyFusERConfig
from hyfuser.tiny_backbones import build_tiny_backbones
from processing_hyfuser import HyFusERProcessor
from scaling_hyfuser import FeatureStatistics

SEQUENCE_LENGTH = 16
RATE = 16_000
TEXTS = ["오늘 정말 기분이 좋아요!", "왜 그랬어?", "그냥 그래요. 별일 없었어요."]


def tone(seconds: float, rate: int, frequency: float = 440.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * frequency * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(np.float32)


def dominant_frequency(waveform: np.ndarray, rate: int) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(waveform))) * rate / len(waveform))


def global_random_state() -> bytes:
    """The state of the global generators training draws from (Python's, NumPy's, torch's), as one comparable value."""
    return pickle.dumps((random.getstate(), np.random.get_state(), torch.get_rng_state().numpy()))


@pytest.fixture(scope="module")
def processor(tiny_backbones) -> HyFusERProcessor:
    """Unfitted; tests that change it work on a `copy.deepcopy`."""
    return HyFusERProcessor.from_backbones(tiny_backbones.text, tiny_backbones.speech, sequence_length=SEQUENCE_LENGTH)


@pytest.fixture(scope="module")
def fitted(processor) -> HyFusERProcessor:
    fitted = copy.deepcopy(processor)
    features = processor(TEXTS, [noise(1.0, seed) for seed in range(len(TEXTS))], scale=False)
    return fitted.fit_scaler([(features["text_features"], features["speech_features"])])


# ---------------------------------------------------------------------------------------------------------------
# Construction and features


def test_defaults_come_from_config(tiny_backbones):
    processor = HyFusERProcessor.from_backbones(tiny_backbones.text, tiny_backbones.speech)
    assert processor.sequence_length == HyFusERConfig().sequence_length
    assert processor.hidden_size == tiny_backbones.hidden_size


def test_features_are_float32_batch_by_sequence_length_by_hidden(processor):
    single = processor(text=TEXTS[0], audio=noise(1.0), sampling_rate=RATE, scale=False)
    batch = processor(text=TEXTS[:2], audio=[noise(1.0), noise(2.5)], sampling_rate=RATE, scale=False)
    for features, size in ((single, 1), (batch, 2)):
        for name in ("text_features", "speech_features"):
            assert features[name].dtype == torch.float32
            assert tuple(features[name].shape) == (size, SEQUENCE_LENGTH, 32)


def test_batch_result_independent_of_batch_composition(processor):
    clips = [noise(0.7, 1), noise(2.3, 2), noise(1.1, 3)]
    batch = processor(TEXTS, clips, sampling_rate=RATE, scale=False)
    for index, (text, clip) in enumerate(zip(TEXTS, clips)):
        alone = processor(text, clip, sampling_rate=RATE, scale=False)
        torch.testing.assert_close(batch["text_features"][index], alone["text_features"][0], atol=1e-5, rtol=0)
        torch.testing.assert_close(batch["speech_features"][index], alone["speech_features"][0], atol=1e-5, rtol=0)


def test_dataset_columns_are_accepted_like_lists(processor, tmp_path):
    """datasets 5.x returns a `Column` for `dataset["text"]`, not a list."""
    import datasets

    paths = [str(write_tone(tmp_path / f"{index}.wav", seconds=0.5 + index / 4, seed=index)) for index in range(2)]
    table = datasets.Dataset.from_dict({"text": TEXTS[:2], "audio": paths})
    from_columns = processor(table["text"], table["audio"], scale=False)
    from_lists = processor(list(TEXTS[:2]), paths, scale=False)
    for name in ("text_features", "speech_features"):
        torch.testing.assert_close(from_columns[name], from_lists[name], rtol=0, atol=0)


def test_text_is_truncated_to_sequence_length_tokens(processor):
    long_text = "가나다라마바사아자차카타파하" * 3
    assert len(processor.tokenizer(long_text)["input_ids"]) > SEQUENCE_LENGTH
    longer = long_text + " 더 긴 꼬리"
    torch.testing.assert_close(processor.encode_text([long_text]), processor.encode_text([longer]))


def test_interpolation_keeps_endpoints_and_spaces_positions_evenly(processor):
    frames = torch.arange(5, dtype=torch.float32)[:, None].repeat(1, 3)
    resized = processor.interpolate_frames(frames)
    expected = torch.linspace(0, 4, SEQUENCE_LENGTH)[:, None].repeat(1, 3)
    torch.testing.assert_close(resized, expected)


def test_features_can_enter_autograd(processor):
    features = processor(TEXTS[0], noise(0.5), sampling_rate=RATE, scale=False)
    layer = torch.nn.Linear(32, 1)
    (layer(features["text_features"]).sum() + layer(features["speech_features"]).sum()).backward()
    assert layer.weight.grad is not None


# ---------------------------------------------------------------------------------------------------------------
# Audio loading


def test_resamples_8k_16k_and_44k_stereo(processor, tmp_path):
    stereo = np.stack([tone(1.0, 44_100), tone(1.0, 44_100)], axis=1)
    files = {8_000: ("a.wav", tone(1.0, 8_000)), 16_000: ("b.flac", tone(1.0, 16_000)), 44_100: ("c.wav", stereo)}
    for rate, (name, waveform) in files.items():
        soundfile.write(tmp_path / name, waveform, rate)
        loaded = processor.load_audio(tmp_path / name)
        assert loaded.dtype == np.float32 and loaded.ndim == 1
        assert abs(len(loaded) - RATE) <= 1, rate
        assert dominant_frequency(loaded, RATE) == pytest.approx(440.0, abs=1.0), rate


def test_1khz_tone_at_44_1khz_is_the_same_1khz_tone_at_16khz(processor, tmp_path):
    """Against the known signal: sample n of the output must be sin(2 pi 1000 n / 16000), at the same amplitude."""
    soundfile.write(tmp_path / "tone.wav", tone(2.0, 44_100, frequency=1_000.0), 44_100, subtype="FLOAT")
    loaded = processor.load_audio(tmp_path / "tone.wav")
    assert len(loaded) == 2 * RATE
    assert dominant_frequency(loaded, RATE) == pytest.approx(1_000.0, abs=0.5)
    expected = 0.5 * np.sin(2 * np.pi * 1_000.0 * np.arange(2 * RATE) / RATE)
    interior = slice(RATE // 10, -RATE // 10)  # the filter's edge transients stay out
    np.testing.assert_allclose(loaded[interior], expected[interior], atol=1e-3)


def test_reads_ogg_vorbis(processor, tmp_path):
    soundfile.write(tmp_path / "d.ogg", tone(1.0, 22_050), 22_050, format="OGG", subtype="VORBIS")
    loaded = processor.load_audio(str(tmp_path / "d.ogg"))
    assert abs(len(loaded) - RATE) <= 1
    assert dominant_frequency(loaded, RATE) == pytest.approx(440.0, abs=1.0)


def test_downmixes_channels_first_and_channels_last_alike(processor):
    left, right = tone(0.5, RATE, 440.0), tone(0.5, RATE, 660.0)
    mono = (left + right) / 2
    np.testing.assert_allclose(processor.load_audio(np.stack([left, right]), RATE), mono, atol=1e-7)
    np.testing.assert_allclose(processor.load_audio(np.stack([left, right], axis=1), RATE), mono, atol=1e-7)


def test_dict_audio_carries_its_own_sampling_rate(processor):
    waveform = tone(1.0, 8_000)
    from_dict = processor.load_audio({"array": waveform, "sampling_rate": 8_000, "path": None}, sampling_rate=44_100)
    np.testing.assert_array_equal(from_dict, processor.load_audio(waveform, sampling_rate=8_000))


def test_raw_array_without_rate_is_taken_at_extractor_rate(processor):
    waveform = noise(0.5)
    np.testing.assert_array_equal(processor.load_audio(waveform), waveform)


def test_integer_pcm_is_scaled_to_unit_range(processor):
    pcm = np.array([0, 16384, -32768], dtype=np.int16)
    np.testing.assert_array_equal(processor.load_audio(pcm, RATE), np.array([0.0, 0.5, -1.0], dtype=np.float32))


# ---------------------------------------------------------------------------------------------------------------
# Long and short audio


@contextmanager
def speech_input_lengths(processor: HyFusERProcessor) -> Iterator[list[int]]:
    """The length in samples of every input the speech backbone sees inside the block."""
    lengths = []
    handle = processor.speech_backbone_model.register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(kwargs["input_values"].shape[-1]), with_kwargs=True
    )
    try:
        yield lengths
    finally:
        handle.remove()


def test_ten_minute_clip_runs_in_windows(processor):
    clip = noise(600.0)
    with speech_input_lengths(processor) as lengths:
        frames = processor.speech_frames(clip)
    assert frames.shape == ((len(clip) - 400) // 320 + 1, 32)  # the frame count of one unwindowed pass
    assert len(lengths) > 20 and max(lengths) == (1500 - 1) * 320 + 400  # 30 s windows of 1500 frames
    features = processor.interpolate_frames(frames)
    assert features.shape == (SEQUENCE_LENGTH, 32) and torch.isfinite(features).all()


def test_clip_shorter_than_window_runs_in_one_unpadded_pass(processor):
    clip = noise(4.0)
    with speech_input_lengths(processor) as lengths:
        processor.speech_frames(clip)
    assert lengths == [len(clip)]


def test_windowed_frames_match_each_window_run_alone(processor):
    windowed = copy.deepcopy(processor)
    windowed.speech_window_seconds, windowed.speech_window_overlap_seconds = 1.0, 0.4  # 50-frame windows, hop 30
    windowed.feature_extractor.do_normalize = False  # so that a window run alone sees the same samples
    clip = noise(3.3)
    frames = windowed.speech_frames(clip)
    assert len(frames) == 164
    # windows start at frames 0, 30, 60, 90 and 114 (the last one ends with the clip); cuts fall mid-overlap
    first_window = windowed.speech_frames(clip[: 49 * 320 + 400])
    last_window = windowed.speech_frames(clip[114 * 320 : 163 * 320 + 400])  # a window ends with the last frame
    torch.testing.assert_close(frames[:40], first_window[:40])
    torch.testing.assert_close(frames[127:], last_window[127 - 114 :])


def test_audio_shorter_than_receptive_field_is_zero_padded_to_one_frame(processor):
    frames = processor.speech_frames(noise(0.005))  # 80 samples < 400
    assert frames.shape == (1, 32)
    # The normalised samples, then zeros after them up to the 400-sample receptive field, in one HuBERT pass.
    values = processor.feature_extractor(noise(0.005), sampling_rate=RATE, return_tensors="np").input_values[0]
    padded = torch.from_numpy(np.pad(values, (0, 400 - len(values))))[None]
    with torch.no_grad():
        expected = processor.speech_backbone_model(input_values=padded).last_hidden_state[0]
    torch.testing.assert_close(frames, expected)
    features = processor.encode_speech([noise(0.005)])[0]
    torch.testing.assert_close(features, frames.expand(SEQUENCE_LENGTH, -1))


def test_one_frame_windows_compute_each_frame_from_its_own_samples(tiny_backbones):
    """With a window of one frame (20 ms) and no overlap, frame i is HuBERT run on samples [320 i, 320 i + 400)."""
    processor = HyFusERProcessor.from_backbones(
        tiny_backbones.text, tiny_backbones.speech, speech_window_seconds=0.02, speech_window_overlap_seconds=0.0
    )
    waveform = noise(0.1)
    frames = processor.speech_frames(waveform)
    values = processor.feature_extractor(waveform, sampling_rate=RATE, return_tensors="np").input_values[0]
    assert frames.shape == ((len(values) - 400) // 320 + 1, 32)
    for index in range(len(frames)):
        samples = torch.from_numpy(values[320 * index : 320 * index + 400])[None]
        with torch.no_grad():
            expected = processor.speech_backbone_model(input_values=samples).last_hidden_state[0, 0]
        torch.testing.assert_close(frames[index], expected, msg=f"frame {index}")


# ---------------------------------------------------------------------------------------------------------------
# Joint scaling


def test_streaming_scaler_matches_one_shot_statistics(processor):
    rng = np.random.default_rng(0)
    batches = []
    for size, dtype in ((3, np.float16), (1, np.float32), (5, np.float16), (2, np.float32)):
        text = (rng.normal(4.0, 2.0, (size, SEQUENCE_LENGTH, 32))).astype(dtype)
        speech = (rng.normal(-0.5, 0.3, (size, SEQUENCE_LENGTH, 32))).astype(dtype)
        batches.append((text, speech))
    fitted = copy.deepcopy(processor).fit_scaler(batches)
    concatenated = [np.concatenate([text, speech], axis=1) for text, speech in batches]  # X = concat(X_T, X_S)
    everything = np.concatenate(concatenated).astype(np.float64).reshape(-1, 32)
    np.testing.assert_allclose(fitted.scaler_mean, everything.mean(axis=0), atol=1e-5, rtol=0)
    np.testing.assert_allclose(fitted.scaler_std, everything.std(axis=0), atol=1e-5, rtol=0)
    assert fitted.scaler_count == len(everything)


def test_statistics_merged_from_shards_equal_one_pass():
    rng = np.random.default_rng(1)
    shards = [rng.normal(1e4, 1e-2, (n, 8)).astype(np.float32) for n in (5000, 3, 700)]  # large offset, tiny spread
    merged = FeatureStatistics()
    for shard in shards:
        merged.merge(FeatureStatistics().update(shard))
    everything = np.concatenate(shards).astype(np.float64)
    np.testing.assert_allclose(merged.mean, everything.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(merged.std, everything.std(axis=0), rtol=1e-6)


def test_statistics_of_one_row_merge_and_empty_statistics_refuse_to_report():
    rows = np.arange(12, dtype=np.float32).reshape(4, 3)
    merged = FeatureStatistics().merge(FeatureStatistics().update(rows[:1])).merge(FeatureStatistics())
    merged.merge(FeatureStatistics().update(rows[1:]))
    np.testing.assert_allclose(merged.mean, rows.mean(axis=0))
    assert merged.count == 4
    with pytest.raises(ValueError, match="^no features were added to these statistics$"):
        FeatureStatistics().mean  # noqa: B018
    with pytest.raises(ValueError, match="^cannot combine features of hidden size 2 with hidden size 3$"):
        merged.merge(FeatureStatistics().update(np.ones((1, 2))))


def test_fitting_on_nothing_is_refused(processor):
    with pytest.raises(ValueError, match=r"^fit_scaler got no features: pass an iterable of \(text_features, "):
        copy.deepcopy(processor).fit_scaler([])


def test_scale_uses_one_mean_and_std_for_both_modalities(fitted):
    text, speech = np.full((1, 2, 32), 3.0, np.float32), np.full((1, 2, 32), 3.0, np.float32)
    scaled_text, scaled_speech = fitted.scale(text, speech)
    expected = (3.0 - np.float32(fitted.scaler_mean)) / np.float32(fitted.scaler_std)
    np.testing.assert_allclose(scaled_text[0, 0], expected, rtol=1e-6)
    np.testing.assert_array_equal(scaled_text, scaled_speech)
    scaled_tensor, _ = fitted.scale(torch.from_numpy(text), torch.from_numpy(speech))
    assert isinstance(scaled_tensor, torch.Tensor) and scaled_tensor.dtype == torch.float32


def test_scaled_training_features_have_zero_mean_and_unit_std(fitted):
    features = fitted(TEXTS, [noise(1.0, seed) for seed in range(len(TEXTS))], scale=False)
    scaled = fitted(text=TEXTS, audio=[noise(1.0, seed) for seed in range(len(TEXTS))], sampling_rate=RATE)
    both = torch.cat([scaled["text_features"], scaled["speech_features"]], dim=1).reshape(-1, 32).double()
    torch.testing.assert_close(both.mean(0), torch.zeros(32, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(both.std(0, correction=0), torch.ones(32, dtype=torch.float64), atol=1e-4, rtol=0)
    assert not torch.equal(features["text_features"], scaled["text_features"])


def test_constant_dimension_is_centred_not_divided_by_zero(processor):
    features = np.random.default_rng(2).normal(size=(4, SEQUENCE_LENGTH, 32)).astype(np.float32)
    features[..., 0] = 7.0
    scaler = copy.deepcopy(processor).fit_scaler([(features, features)])
    scaled, _ = scaler.scale(features, features)
    assert np.isfinite(scaled).all() and np.all(scaled[..., 0] == 0.0)
    shifted = features.copy()
    shifted[..., 0] = 9.5  # unseen values of the constant dimension: centred, divided by 1
    assert np.all(scaler.scale(shifted, shifted)[0][..., 0] == 2.5)


def test_scale_returns_float32_whatever_the_input_precision(fitted):
    features = np.random.default_rng(3).normal(size=(2, SEQUENCE_LENGTH, 32))
    for dtype in (np.float16, np.float64):
        scaled = fitted.scale(features.astype(dtype), features.astype(dtype))
        assert [array.dtype for array in scaled] == [np.float32, np.float32], dtype


def test_unfitted_processor_refuses_to_scale(processor):
    message = (
        r"^this HyFusERProcessor's scaler is not fitted: call processor.fit_scaler\(...\) on the unscaled training "
        r"features \(processor\(..., scale=False\)\) first, or pass scale=False$"
    )
    with pytest.raises(ValueError, match=message):
        processor(text=TEXTS[0], audio=noise(0.5), sampling_rate=RATE)


@pytest.mark.parametrize("missing", ["text", "audio"])
def test_text_and_audio_are_both_required(processor, missing):
    inputs = {"text": TEXTS[0], "audio": noise(0.5), "sampling_rate": RATE, "scale": False}
    del inputs[missing]
    with pytest.raises(ValueError, match="^HyFusERProcessor needs both text= and audio=$"):
        processor(**inputs)


def test_return_tensors_np_gives_numpy_arrays(processor):
    features = processor(text=TEXTS[0], audio=noise(0.5), sampling_rate=RATE, scale=False, return_tensors="np")
    assert all(isinstance(features[name], np.ndarray) for name in ("text_features", "speech_features"))


# ---------------------------------------------------------------------------------------------------------------
# Serialisation


def test_save_and_reload_is_exact(fitted, tmp_path):
    fitted.save_pretrained(tmp_path, save_backbones=False)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["auto_map"]["AutoProcessor"] == "processing_hyfuser.HyFusERProcessor"
    assert (tmp_path / "processing_hyfuser.py").is_file() and (tmp_path / "configuration_hyfuser.py").is_file()
    reloaded = HyFusERProcessor.from_pretrained(tmp_path)
    for name in ("scaler_mean", "scaler_std", "scaler_count", "sequence_length", "text_backbone", "speech_backbone"):
        assert getattr(reloaded, name) == getattr(fitted, name), name
    inputs = {"text": TEXTS[1], "audio": noise(0.8), "sampling_rate": RATE}
    for name, value in fitted(**inputs).items():
        torch.testing.assert_close(reloaded(**inputs)[name], value, atol=0, rtol=0)


def test_saved_backbones_make_directory_self_contained(fitted, tiny_backbones, tmp_path):
    backbones = shutil.copytree(Path(tiny_backbones.text).parent, tmp_path / "backbones")
    original = HyFusERProcessor.from_backbones(
        str(backbones / "text"),
        str(backbones / "speech"),
        sequence_length=SEQUENCE_LENGTH,
        scaler_mean=fitted.scaler_mean,
        scaler_std=fitted.scaler_std,
        scaler_count=fitted.scaler_count,
    )
    inputs = {"text": TEXTS[2], "audio": noise(1.3), "sampling_rate": RATE}
    expected = original(**inputs)
    original.save_pretrained(tmp_path / "saved", save_backbones=True)
    shutil.rmtree(backbones)
    assert str(backbones) not in (tmp_path / "saved" / "processor_config.json").read_text()

    loaded = AutoProcessor.from_pretrained(tmp_path / "saved", trust_remote_code=True)
    for name, value in expected.items():
        torch.testing.assert_close(loaded(**inputs)[name], value, atol=0, rtol=0)
    loaded.save_pretrained(tmp_path / "resaved")  # backbones come along by default
    assert (tmp_path / "resaved" / "speech_backbone" / "config.json").is_file()
    # Told not to copy them, it names the copies it was loaded from, by absolute path.
    loaded.save_pretrained(tmp_path / "referencing", save_backbones=False)
    assert not (tmp_path / "referencing" / "text_backbone").exists()
    saved = json.loads((tmp_path / "referencing" / "processor_config.json").read_text())
    assert saved["text_backbone"] == str((tmp_path / "saved" / "text_backbone").resolve())
    referencing = HyFusERProcessor.from_pretrained(tmp_path / "referencing")
    for name, value in expected.items():
        torch.testing.assert_close(referencing(**inputs)[name], value, atol=0, rtol=0)
    # Where the directory it came from is no local directory (a Hub repo, or gone), no name can point inside it.
    shutil.rmtree(tmp_path / "saved")
    with pytest.raises(ValueError, match=r"'./text_backbone' lives inside .*, which is not a local directory"):
        loaded.save_pretrained(tmp_path / "broken", save_backbones=False)


def test_backbones_are_referenced_by_hub_id_or_absolute_path(processor, monkeypatch):
    monkeypatch.chdir(Path(processor.text_backbone).parent)
    relative = HyFusERProcessor(processor.tokenizer, processor.feature_extractor, "text", "org/speech")
    assert relative.backbone_references() == (processor.text_backbone, "org/speech")


def test_only_local_backbones_are_copied_by_default(processor, tmp_path):
    from_hub = HyFusERProcessor(processor.tokenizer, processor.feature_extractor, "org/text", "org/speech")
    assert not from_hub.has_local_backbones() and processor.has_local_backbones()
    from_hub.save_pretrained(tmp_path / "hub")  # stores the ids; nothing is downloaded
    assert json.loads((tmp_path / "hub" / "processor_config.json").read_text())["text_backbone"] == "org/text"
    assert not (tmp_path / "hub" / "text_backbone").exists()
    processor.save_pretrained(tmp_path / "local")
    assert json.loads((tmp_path / "local" / "processor_config.json").read_text())["text_backbone"] == "./text_backbone"
    assert (tmp_path / "local" / "text_backbone" / "model.safetensors").is_file()


def test_push_to_hub_with_backbones_is_refused_before_writing(processor, tmp_path):
    with pytest.raises(ValueError, match="cannot upload the backbones: use push_to_hub"):
        processor.save_pretrained(tmp_path, push_to_hub=True)
    assert not any(tmp_path.iterdir())


def test_loading_saving_and_running_the_backbones_leave_the_global_random_state_alone(tiny_backbones, tmp_path):
    """Training draws its dropout masks from the global generators, in the process that may have extracted the
    features or saves a self-contained copy; building a backbone draws initial weights before its weights load."""
    torch.manual_seed(0)
    before = global_random_state()
    saved = HyFusERProcessor.from_backbones(tiny_backbones.text, tiny_backbones.speech, SEQUENCE_LENGTH)
    saved.save_pretrained(tmp_path, save_backbones=True)
    assert saved._backbones.speech is not None and global_random_state() == before
    extracting = HyFusERProcessor.from_backbones(tiny_backbones.text, tiny_backbones.speech, SEQUENCE_LENGTH)
    extracting(TEXTS[:2], [noise(0.5), noise(1.5, seed=1)], scale=False)
    assert extracting._backbones.speech is not None and global_random_state() == before


def test_fingerprint_is_unchanged_by_loading_backbones(tiny_backbones):
    processor = HyFusERProcessor.from_backbones(tiny_backbones.text, tiny_backbones.speech, SEQUENCE_LENGTH)
    before = Hasher.hash(processor)
    processor(text=TEXTS[0], audio=noise(0.5), sampling_rate=RATE, scale=False)
    assert processor._backbones.text is not None
    assert Hasher.hash(processor) == before


def test_backbones_stay_out_of_pickles_copies_and_to_dict(processor):
    processor.text_backbone_model  # noqa: B018 - make sure they are loaded
    # ~110 kB of tokenizer; a loaded HuBERT could not even be pickled (its weight-norm parametrization refuses)
    assert len(pickle.dumps(processor)) < 200_000
    assert "_backbones" not in processor.to_dict()
    assert copy.deepcopy(processor)._backbones.text is None
    clone = pickle.loads(pickle.dumps(processor))
    assert clone._backbones.text is None and clone.encode_text(TEXTS[:1]).shape == (1, SEQUENCE_LENGTH, 32)


def test_to_moves_backbones_and_returns_self(processor):
    moved = copy.deepcopy(processor)
    moved.text_backbone_model  # noqa: B018 - loaded before the move
    assert moved.to("meta") is moved and moved.device == torch.device("meta")
    assert moved.text_backbone_model.device.type == "meta" and moved.speech_backbone_model.device.type == "meta"


# ---------------------------------------------------------------------------------------------------------------
# Bad input


def test_empty_text_is_rejected(processor):
    with pytest.raises(ValueError, match=r"text\[1\]: empty or whitespace-only"):
        processor(text=["좋아", "   "], audio=[noise(0.5), noise(0.5)], sampling_rate=RATE, scale=False)


def test_non_string_text_is_rejected(processor):
    with pytest.raises(ValueError, match=r"text\[0\]: unsupported text type int"):
        processor(text=[3], audio=[noise(0.5)], sampling_rate=RATE, scale=False)


def test_zero_length_audio_is_rejected(processor):
    with pytest.raises(ValueError, match=r"audio\[1\]: audio array has zero length"):
        processor(text=TEXTS[:2], audio=[noise(0.5), np.zeros(0, np.float32)], sampling_rate=RATE, scale=False)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_audio_is_rejected(processor, bad):
    clip = noise(0.5)
    clip[10] = bad
    with pytest.raises(ValueError, match=r"audio\[0\]: audio array contains NaN or inf"):
        processor(text=TEXTS[0], audio=clip, sampling_rate=RATE, scale=False)


def test_missing_file_is_rejected(processor, tmp_path):
    with pytest.raises(ValueError, match=r"audio\[0\]: audio file '.*nowhere.wav' does not exist"):
        processor(text=TEXTS[0], audio=str(tmp_path / "nowhere.wav"), scale=False)


def test_unreadable_file_is_rejected(processor, tmp_path):
    (tmp_path / "garbage.wav").write_bytes(b"this is not audio")
    with pytest.raises(ValueError, match=r"audio\[0\]: audio file '.*garbage.wav' cannot be read as audio"):
        processor(text=TEXTS[0], audio=tmp_path / "garbage.wav", scale=False)


def test_unsupported_audio_type_is_rejected(processor):
    with pytest.raises(ValueError, match=r"audio\[0\]: unsupported audio type set"):
        processor(text=TEXTS[0], audio={0.1, 0.2}, scale=False)


def test_ambiguous_two_dimensional_audio_is_rejected(processor):
    with pytest.raises(ValueError, match=r"audio array of shape \(16, 8000\) is ambiguous"):
        processor.load_audio(np.zeros((16, 8000), np.float32), RATE)


def test_audio_dict_without_sampling_rate_is_rejected(processor):
    with pytest.raises(ValueError, match=r"audio dict \(path 'x.wav'\) needs 'array' and 'sampling_rate'"):
        processor.load_audio({"array": noise(0.5), "path": "x.wav"})


def test_mismatched_text_and_audio_lengths_are_rejected(processor):
    with pytest.raises(ValueError, match="got 2 texts but 1 audio items"):
        processor(text=TEXTS[:2], audio=[noise(0.5)], sampling_rate=RATE, scale=False)


@pytest.mark.parametrize("rate", [0, -8000, 22050.5, "16k"])
def test_invalid_sampling_rate_is_rejected(processor, rate):
    with pytest.raises(ValueError, match=r"audio\[0\]: audio array: sampling rate must be a positive whole number"):
        processor(text=TEXTS[0], audio=noise(0.5), sampling_rate=rate, scale=False)


def test_backbones_of_different_widths_are_scaled_per_modality(tiny_backbones, tmp_path):
    narrow = build_tiny_backbones(tmp_path, hidden_size=16)
    processor = HyFusERProcessor.from_backbones(tiny_backbones.text, narrow.speech, sequence_length=SEQUENCE_LENGTH)
    assert processor.feature_sizes == (32, 16)
    message = r"text backbone '.*text' has hidden size 32 but the speech backbone '.*speech' has hidden size 16"
    with pytest.raises(ValueError, match=message):  # no shared width for the models that need one
        processor.hidden_size
    features = processor(text=TEXTS[:2], audio=[noise(0.5), noise(0.7)], scale=False)
    text_features, speech_features = features["text_features"], features["speech_features"]
    processor.fit_scaler([(text_features, speech_features)])
    assert len(processor.scaler_mean) == 32 and len(processor.speech_scaler_mean) == 16
    assert processor.scaler_count == 2 * 2 * SEQUENCE_LENGTH
    scaled_text, scaled_speech = processor.scale(text_features, speech_features)
    for scaled in (scaled_text, scaled_speech):  # each modality standardised with its own statistics
        torch.testing.assert_close(scaled.mean(dim=(0, 1)), torch.zeros(scaled.shape[-1]), atol=1e-4, rtol=0)
    config = HyFusERConfig(hidden_size=16, text_feature_size=32, intermediate_size=16, sequence_length=SEQUENCE_LENGTH)
    processor.check_compatible(config)
    with pytest.raises(ValueError, match=r"HyFusERConfig.text_feature_size is 16 but the backbones .* \(32, 16\)"):
        processor.check_compatible(HyFusERConfig(hidden_size=16, intermediate_size=16, sequence_length=SEQUENCE_LENGTH))


def test_config_with_other_shape_is_rejected(processor):
    processor.check_compatible(HyFusERConfig(hidden_size=32, intermediate_size=32, sequence_length=SEQUENCE_LENGTH))
    with pytest.raises(ValueError, match=r"HyFusERConfig.text_feature_size is 768 but the backbones .* \(32, 32\)"):
        processor.check_compatible(HyFusERConfig(sequence_length=SEQUENCE_LENGTH))
    message = "HyFusERConfig.sequence_length is 126 but the processor's sequence_length is 16"
    with pytest.raises(ValueError, match=message):
        processor.check_compatible(HyFusERConfig(hidden_size=32, intermediate_size=32))
