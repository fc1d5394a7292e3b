"""`feature_mode="native"`: each text at its real token count and each utterance at its native speech frames,
cached at their own lengths, padded per batch, with masks through both encoders, both cross-modal steps and the
pooling, so that an item's prediction does not depend on the items it is batched with."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from audio_files import voiced_tone, write_tone
from corpora import write_kemdy20
from datasets import Dataset
from train_script import run_main
from transformers import pipeline

from configuration_hyfuser import EMOTION_LABELS, HyFusERConfig
from modeling_hyfuser import HyFusERForEmotionRecognition, HyFusERSpeechCNN
from processing_hyfuser import HyFusERProcessor

TEXTS = ["정말 화가 나요", "오늘은 너무 기뻐서 춤을 추고 싶어요", "무서워"]
SECONDS = [0.6, 1.7, 1.1]


@pytest.fixture(scope="module")
def native_processor(tiny_backbones):
    processor = HyFusERProcessor.from_backbones(
        tiny_backbones.text, tiny_backbones.speech, sequence_length=64, feature_mode="native"
    )
    audios = [voiced_tone(16_000, seconds, 140.0 + 30 * index, seed=index) for index, seconds in enumerate(SECONDS)]
    features = processor.encode_text(TEXTS), processor.encode_speech(audios)
    return processor.fit_scaler(zip(*features))


@pytest.fixture(scope="module")
def native_model(native_processor):
    torch.manual_seed(0)
    config = HyFusERConfig(**native_processor.model_config_fields(), intermediate_size=16, num_attention_heads=2)
    return HyFusERForEmotionRecognition(config).eval()


def test_features_keep_every_real_token_and_every_native_frame(native_processor, tiny_backbones):
    audios = [voiced_tone(16_000, seconds, 180.0) for seconds in SECONDS]
    features = native_processor(text=TEXTS, audio=audios, scale=False)
    tokens = [len(native_processor.tokenizer(text)["input_ids"]) for text in TEXTS]
    frames = [len(native_processor.speech_frames(audio)) for audio in audios]
    assert features["text_attention_mask"].sum(-1).tolist() == tokens
    assert features["speech_attention_mask"].sum(-1).tolist() == frames
    assert frames == [29, 84, 54]  # HuBERT's ~49 frames per second, not 64 interpolated positions
    assert features["speech_features"].shape == (3, 84, 32)
    # Each text's features are those of the text alone: padding in the backbone's batch is masked.
    alone = native_processor(text=TEXTS[:1], audio=audios[:1], scale=False)
    torch.testing.assert_close(features["text_features"][0, : tokens[0]], alone["text_features"][0], atol=1e-5, rtol=0)


def test_clips_beyond_the_frame_cap_are_interpolated_down_to_it(tiny_backbones):
    processor = HyFusERProcessor.from_backbones(
        tiny_backbones.text, tiny_backbones.speech, feature_mode="native", max_speech_frames=40
    )
    assert processor.speech_sequence(voiced_tone(16_000, 2.0, 180.0)).shape == (40, 32)
    assert processor.speech_sequence(voiced_tone(16_000, 0.5, 180.0)).shape == (24, 32)


def test_an_item_s_prediction_does_not_depend_on_its_batch(native_processor, native_model):
    audios = [voiced_tone(16_000, seconds, 150.0 + 25 * index, seed=index) for index, seconds in enumerate(SECONDS)]
    batch = native_processor(text=TEXTS, audio=audios)
    with torch.no_grad():
        together = native_model(**batch)
        for index in range(len(TEXTS)):
            alone = native_model(**native_processor(text=TEXTS[index : index + 1], audio=audios[index : index + 1]))
            for field in ("logits", "text_logits", "speech_logits"):
                torch.testing.assert_close(
                    getattr(together, field)[index], getattr(alone, field)[0], atol=1e-5, rtol=0
                )
        # Whatever the padding holds, it is never attended to nor pooled.
        for name in ("text", "speech"):
            padding = batch[f"{name}_attention_mask"] == 0
            assert padding.any()
            batch[f"{name}_features"] = batch[f"{name}_features"].masked_fill(padding[..., None], 1e4)
        torch.testing.assert_close(native_model(**batch).logits, together.logits, atol=1e-5, rtol=0)


def test_only_hyfuser_takes_native_features(native_model):
    assert native_model.config.feature_mode == "native"
    with pytest.raises(ValueError, match="only HyFusERForEmotionRecognition adapts other features"):
        HyFusERSpeechCNN(native_model.config)
    with pytest.raises(ValueError, match=r"feature_mode must be one of \('paper', 'native'\)"):
        HyFusERConfig(feature_mode="ragged")


@pytest.mark.slow
def test_native_mode_trains_caches_its_own_lengths_saves_and_serves_batch_independently_from_a_fresh_process(
    tiny_backbones, tmp_path
):
    kemdy20 = write_kemdy20(tmp_path / "corpus")
    output_dir, cache_dir = tmp_path / "out", tmp_path / "cache"
    run_main([
        "--dataset", "kemdy", "--kemdy20_dir", str(kemdy20), "--text_backbone", tiny_backbones.text,
        "--speech_backbone", tiny_backbones.speech, "--feature_mode", "native", "--sequence_length", "64",
        "--config_overrides", "intermediate_size=16,num_hidden_layers=1", "--num_train_epochs", "2",
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--cache_dir", str(cache_dir),
        "--output_dir", str(output_dir), "--report_to", "none", "--disable_tqdm", "true",
    ])  # fmt: skip
    cached = Dataset.from_file(str(next((cache_dir / "features").glob("train-*.arrow")))).with_format("numpy")
    lengths = {name: [len(row[name]) for row in cached] for name in ("text_features", "speech_features")}
    assert len(set(lengths["speech_features"])) > 1 and len(set(lengths["text_features"])) > 1  # variable lengths
    saved = json.loads((output_dir / "processor_config.json").read_text())
    assert saved["scaler_count"] == sum(lengths["text_features"]) + sum(lengths["speech_features"])  # no padding
    assert json.loads((output_dir / "config.json").read_text())["feature_mode"] == "native"

    clips = [
        str(write_tone(tmp_path / f"clip{index}.wav", seconds=seconds, frequency=170.0 + 20 * index, seed=index))
        for index, seconds in enumerate(SECONDS)
    ]
    items = [{"text": text, "audio": clip} for text, clip in zip(TEXTS, clips)]
    script = (
        "import json, sys\n"
        "from transformers import pipeline\n"
        f"classifier = pipeline(model={str(output_dir)!r}, trust_remote_code=True, device='cpu')\n"
        f"items = {items!r}\n"
        "batched = classifier(items, batch_size=3)\n"
        "alone = [classifier(item) for item in items]\n"
        "print(json.dumps([batched, alone]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-4000:]
    batched, alone = json.loads(result.stdout.strip().splitlines()[-1])
    for together, single in zip(batched, alone):
        assert sorted(emotion["label"] for emotion in together) == sorted(EMOTION_LABELS)
        scores = {emotion["label"]: emotion["score"] for emotion in together}
        np.testing.assert_allclose(
            [scores[emotion["label"]] for emotion in single], [emotion["score"] for emotion in single], atol=1e-5
        )


def test_native_pipeline_serves_in_process(tmp_path, native_processor, native_model):
    from hyfuser.checkpoint import save_hyfuser

    output_dir = save_hyfuser(tmp_path / "native", native_model, native_processor)
    classifier = pipeline(model=str(output_dir), trust_remote_code=True, device="cpu")
    audio = voiced_tone(16_000, 0.9, 200.0)
    result = classifier({"text": TEXTS[0], "audio": {"array": audio, "sampling_rate": 16_000}})
    with torch.no_grad():
        expected = native_model(**native_processor(text=TEXTS[:1], audio=[audio])).logits.softmax(-1)[0]
    scores = {emotion["label"]: emotion["score"] for emotion in result}
    np.testing.assert_allclose([scores[label] for label in EMOTION_LABELS], expected.numpy(), atol=1e-5)
