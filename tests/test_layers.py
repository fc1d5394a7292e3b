"""Which backbone layer: one chosen hidden state (`--text_layer`, `--speech_layer`) or every one with a learned
softmax weighting (`--layer_weighting`), cached in float16 with its size reported and checked against the disk."""

import json
import logging

import numpy as np
import pytest
import torch
from audio_files import voiced_tone
from corpora import write_kemdy20
from datasets import Dataset
from train_script import run_main
from transformers import AutoModel, AutoTokenizer, pipeline

import hyfuser.cache
from configuration_hyfuser import EMOTION_LABELS, HyFusERConfig
from modeling_hyfuser import HyFusERForEmotionRecognition, HyFusERLayerWeighting, HyFusERTextLSTM
from processing_hyfuser import HyFusERProcessor

SEQUENCE_LENGTH = 8
LAYERS = 3
"""Hidden states of each tiny backbone: the embedding output and two layers."""
TEXT = "정말 너무 화가 나요"


@pytest.fixture(scope="module")
def kemdy20(tmp_path_factory):
    return write_kemdy20(tmp_path_factory.mktemp("corpus"))


def test_a_chosen_layer_is_that_hidden_state_of_the_backbone(tiny_backbones):
    processor = HyFusERProcessor.from_backbones(
        tiny_backbones.text, tiny_backbones.speech, sequence_length=SEQUENCE_LENGTH, text_layer=1, speech_layer=0
    )
    audio = voiced_tone(16_000, 0.6, 200.0, seed=1)
    features = processor(text=[TEXT], audio=[audio], scale=False)
    tokens = AutoTokenizer.from_pretrained(tiny_backbones.text)(
        [TEXT], padding="max_length", max_length=SEQUENCE_LENGTH, truncation=True, return_tensors="pt"
    )
    with torch.no_grad():
        text_states = AutoModel.from_pretrained(tiny_backbones.text)(**tokens, output_hidden_states=True).hidden_states
    torch.testing.assert_close(features["text_features"], text_states[1])
    assert not torch.allclose(features["text_features"], text_states[-1])
    frames = processor.speech_frames(processor.load_audio(audio))
    speech = AutoModel.from_pretrained(tiny_backbones.speech)
    values = processor.feature_extractor(audio, sampling_rate=16_000, return_tensors="pt").input_values
    with torch.no_grad():
        torch.testing.assert_close(frames, speech(values, output_hidden_states=True).hidden_states[0][0])


def test_a_layer_the_backbone_does_not_have_is_refused(tiny_backbones):
    message = r"speech_layer=3 is out of range: the backbone has 3 hidden states \(indices -3..2\)"
    with pytest.raises(ValueError, match=message):
        HyFusERProcessor.from_backbones(tiny_backbones.text, tiny_backbones.speech, speech_layer=3)


def test_layer_weighting_keeps_every_layer_and_the_model_learns_their_softmax_weights(tiny_backbones):
    processor = HyFusERProcessor.from_backbones(
        tiny_backbones.text, tiny_backbones.speech, sequence_length=SEQUENCE_LENGTH, layer_weighting=True
    )
    audios = [voiced_tone(16_000, 0.5, 200.0), voiced_tone(16_000, 1.5, 150.0)]
    features = processor(text=[TEXT, "너무 기뻐요"], audio=audios, scale=False)
    assert features["text_features"].shape == (2, LAYERS, SEQUENCE_LENGTH, 32)
    assert features["speech_features"].shape == (2, LAYERS, SEQUENCE_LENGTH, 32)
    last_layer = HyFusERProcessor.from_backbones(tiny_backbones.text, tiny_backbones.speech, sequence_length=8)
    single = last_layer(text=[TEXT], audio=audios[:1], scale=False)
    torch.testing.assert_close(features["speech_features"][:1, -1], single["speech_features"])

    weighting = HyFusERLayerWeighting(LAYERS)
    torch.testing.assert_close(weighting(features["text_features"]), features["text_features"].mean(1))  # equal
    with torch.no_grad():
        weighting.layer_weights.copy_(torch.tensor([-1e4, 1e4, -1e4]))
    torch.testing.assert_close(weighting(features["text_features"]), features["text_features"][:, 1])

    config = HyFusERConfig(**processor.model_config_fields(), intermediate_size=16)
    assert (config.layer_weighting, config.text_num_layers, config.speech_num_layers) == (True, LAYERS, LAYERS)
    with pytest.raises(ValueError, match="only HyFusERForEmotionRecognition adapts other features"):
        HyFusERTextLSTM(config)
    model = HyFusERForEmotionRecognition(config)
    scaled = processor.fit_scaler([(features["text_features"], features["speech_features"])]).scale(
        features["text_features"], features["speech_features"]
    )
    model(*scaled, labels=torch.tensor([0, 1])).loss.backward()
    assert model.speech_layer_weighting.layer_weights.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"\(speech_num_layers, sequence_length, speech_feature_size\)"):
        model(scaled[0], scaled[1][:, -1])


@pytest.mark.parametrize(
    ("flags", "layers"),
    [(["--speech_layer", "1", "--text_layer", "1"], None), (["--layer_weighting", "true"], LAYERS)],
    ids=["middle-layer", "layer-weighting"],
)
def test_layer_choice_trains_through_train_py_reports_the_cache_size_and_serves(
    flags, layers, tiny_backbones, kemdy20, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="hyfuser")
    output_dir, cache_dir = tmp_path / "out", tmp_path / "cache"
    run_main([
        "--dataset", "kemdy", "--kemdy20_dir", str(kemdy20), "--text_backbone", tiny_backbones.text,
        "--speech_backbone", tiny_backbones.speech, "--sequence_length", str(SEQUENCE_LENGTH),
        "--config_overrides", "intermediate_size=16,num_hidden_layers=1", "--num_train_epochs", "1",
        "--per_device_train_batch_size", "4", "--cache_dir", str(cache_dir), "--output_dir", str(output_dir),
        "--report_to", "none", "--save_strategy", "no", "--load_best_model_at_end", "false",
        "--early_stopping_patience", "0", "--disable_tqdm", "true", *flags,
    ])  # fmt: skip
    per_utterance = 2 * (layers or 1) * SEQUENCE_LENGTH * 32 * 2  # modalities x layers x positions x width x float16
    assert f"Feature cache: {per_utterance:,} bytes" in caplog.text
    cached = Dataset.from_file(str(next((cache_dir / "features").glob("train-*.arrow"))))
    assert cached.features["speech_features"].dtype == "float16"
    assert np.asarray(cached[0]["speech_features"]).shape == ((layers,) if layers else ()) + (SEQUENCE_LENGTH, 32)

    config = json.loads((output_dir / "config.json").read_text())
    assert config["layer_weighting"] == bool(layers)
    saved = json.loads((output_dir / "processor_config.json").read_text())
    assert (saved["text_layer"], saved["speech_layer"], saved["layer_weighting"]) == (
        (-1, -1, True) if layers else (1, 1, False)
    )
    classifier = pipeline(model=str(output_dir), trust_remote_code=True, device="cpu")
    result = classifier({"text": TEXT, "audio": {"array": voiced_tone(16_000, 0.9, 170.0), "sampling_rate": 16_000}})
    assert sorted(emotion["label"] for emotion in result) == sorted(EMOTION_LABELS)
    assert sum(emotion["score"] for emotion in result) == pytest.approx(1.0, abs=1e-5)


def test_a_cache_larger_than_the_free_disk_is_refused_before_extracting(
    tiny_backbones, kemdy20, tmp_path, monkeypatch
):
    from hyfuser.splits import build_paper_dataset

    processor = HyFusERProcessor.from_backbones(
        tiny_backbones.text, tiny_backbones.speech, sequence_length=SEQUENCE_LENGTH, layer_weighting=True
    )
    splits = build_paper_dataset(kemdy20_dir=kemdy20, seed=42)
    per_utterance = hyfuser.cache.cache_bytes_per_utterance(processor)
    assert per_utterance == 2 * LAYERS * SEQUENCE_LENGTH * 32 * 2
    free = per_utterance * (len(splits["train"]) + len(splits["validation"])) - 1
    monkeypatch.setattr(hyfuser.cache.shutil, "disk_usage", lambda path: type("Usage", (), {"free": free}))
    with pytest.raises(ValueError, match=r"the feature cache needs about .* GiB for \d+ utterances .* free"):
        hyfuser.cache.cache_features(splits, processor, tmp_path)
    assert not list((tmp_path / "features").glob("*.arrow"))  # nothing extracted
