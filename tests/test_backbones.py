"""Other backbone families than the paper's KoELECTRA + HuBERT: each one, as a tiny random model in standard HF layout,
trains through `train.py` and serves through the pipeline; backbones of different widths are projected and scaled
per modality."""

import json
import shutil

import numpy as np
import pytest
import torch
from audio_files import voiced_tone
from corpora import write_kemdy20
from safetensors.torch import load_file
from train_script import run_main
from transformers import Wav2Vec2FeatureExtractor, pipeline

from configuration_hyfuser import EMOTION_LABELS, HyFusERConfig
from hyfuser.tiny_backbones import build_tiny_speech_backbone, build_tiny_text_backbone
from modeling_hyfuser import HyFusERForEmotionRecognition, HyFusERTextLSTM
from processing_hyfuser import HyFusERProcessor

WIDE = 48
"""Width of the tiny WavLM: wider than the other backbones' 32, as WavLM-large's 1024 is wider than KoELECTRA's 768."""

FAMILIES = [
    ("electra", "wav2vec2"),
    ("electra", "wavlm"),
    ("electra", "data2vec-audio"),
    ("electra", "whisper"),
    ("roberta", "hubert"),
    ("bert", "hubert"),
]
"""(text family, speech family): every family once, each beside the paper's backbone of the other modality."""


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("families")


def backbone(backbone_dir, family: str, text: bool) -> str:
    path = backbone_dir / family
    if not path.exists():
        torch.manual_seed(0)
        if text:
            build_tiny_text_backbone(path, family)
        else:
            build_tiny_speech_backbone(path, family, WIDE if family == "wavlm" else 32)
    return str(path)


@pytest.fixture(scope="module")
def kemdy20(tmp_path_factory):
    return write_kemdy20(tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize(("text_family", "speech_family"), FAMILIES)
def test_each_backbone_family_trains_through_train_py_and_serves_through_the_pipeline(
    text_family, speech_family, backbone_dir, kemdy20, tmp_path
):
    text_backbone = backbone(backbone_dir, text_family, text=True)
    speech_backbone = backbone(backbone_dir, speech_family, text=False)
    output_dir = tmp_path / "out"
    run_main([
        "--dataset", "kemdy", "--kemdy20_dir", str(kemdy20),
        "--text_backbone", text_backbone, "--speech_backbone", speech_backbone, "--sequence_length", "8",
        "--config_overrides", "intermediate_size=16,num_hidden_layers=1", "--num_train_epochs", "1",
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4",
        "--cache_dir", str(tmp_path / "cache"), "--output_dir", str(output_dir), "--disable_tqdm", "true",
        "--report_to", "none", "--save_strategy", "no", "--load_best_model_at_end", "false",
        "--early_stopping_patience", "0",
    ])  # fmt: skip

    speech_width = WIDE if speech_family == "wavlm" else 32
    config = json.loads((output_dir / "config.json").read_text())
    widths = (config["hidden_size"], config["text_feature_size"], config["speech_feature_size"])
    assert widths == (32, 32, speech_width)
    weights = load_file(output_dir / "model.safetensors")
    saved_processor = json.loads((output_dir / "processor_config.json").read_text())
    if speech_width != 32:  # projected onto hidden_size, and each modality scaled with its own statistics
        assert weights["speech_projection.weight"].shape == (32, speech_width)
        assert (len(saved_processor["scaler_mean"]), len(saved_processor["speech_scaler_mean"])) == (32, speech_width)
    else:  # the paper's setting: no projection, one joint scaler
        assert not any("projection" in name for name in weights)
        assert saved_processor["speech_scaler_mean"] is None

    classifier = pipeline(model=str(output_dir), trust_remote_code=True, device="cpu")
    audio = voiced_tone(16_000, 1.3, 180.0, seed=1)
    result = classifier({"text": "정말 너무 화가 나요", "audio": {"array": audio, "sampling_rate": 16_000}})
    assert sorted(emotion["label"] for emotion in result) == sorted(EMOTION_LABELS)
    # The pipeline's scores are the trained model's on the processor's features.
    processor = HyFusERProcessor.from_pretrained(output_dir)
    model = HyFusERForEmotionRecognition.from_pretrained(output_dir).eval()
    features = processor(text=["정말 너무 화가 나요"], audio=[audio], sampling_rate=16_000)
    with torch.no_grad():
        expected = model(features["text_features"], features["speech_features"]).logits.softmax(-1)[0]
    scores = {emotion["label"]: emotion["score"] for emotion in result}
    np.testing.assert_allclose([scores[label] for label in EMOTION_LABELS], expected.numpy(), atol=1e-5)


def test_whisper_features_cover_the_audio_not_the_padding_of_its_30_second_window(backbone_dir):
    processor = HyFusERProcessor.from_backbones(
        backbone(backbone_dir, "electra", text=True), backbone(backbone_dir, "whisper", text=False)
    )
    one_second, long_clip = voiced_tone(16_000, 1.0, 200.0, seed=2), voiced_tone(16_000, 31.0, 200.0, seed=3)
    assert processor.speech_frames(one_second).shape == (50, 32)  # 50 frames per second, none for the padding
    frames = processor.speech_frames(long_clip)
    assert frames.shape == (1550, 32)  # a full 30 s window, then 1 s in a second one
    # The first window's frames are the 30 s clip's own: the tail does not leak into them.
    torch.testing.assert_close(frames[:1500], processor.speech_frames(long_clip[: 30 * 16_000]))


def test_only_hyfuser_projects_features_of_another_width():
    config = HyFusERConfig(hidden_size=32, intermediate_size=16, sequence_length=8, speech_feature_size=WIDE)
    model = HyFusERForEmotionRecognition(config)
    output = model(torch.randn(2, 8, 32), torch.randn(2, 8, WIDE))
    assert output.logits.shape == (2, len(EMOTION_LABELS))
    with pytest.raises(ValueError, match=r"speech_features must have shape \(batch_size, 8, 48\)"):
        model(torch.randn(2, 8, 32), torch.randn(2, 8, 32))
    with pytest.raises(ValueError, match="only HyFusERForEmotionRecognition adapts other features"):
        HyFusERTextLSTM(config)


def test_a_speech_backbone_without_a_frame_front_end_is_refused(backbone_dir, tmp_path):
    not_speech = shutil.copytree(backbone(backbone_dir, "bert", text=True), tmp_path / "bert")
    Wav2Vec2FeatureExtractor().save_pretrained(not_speech)  # loadable as a speech backbone, but a text encoder
    with pytest.raises(ValueError, match="is a 'bert' model: supported are wav2vec2-style encoders"):
        HyFusERProcessor.from_backbones(backbone(backbone_dir, "electra", text=True), str(not_speech))
