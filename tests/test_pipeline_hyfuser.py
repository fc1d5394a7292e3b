"""The saved checkpoint and the `multimodal-emotion-recognition` pipeline, as users load and call them."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile
import torch
from audio_files import voiced_tone, write_tone
from safetensors.torch import load_file, save_file
from transformers import AutoFeatureExtractor, AutoModel, AutoProcessor, AutoTokenizer, pipeline

from pipeline_hyfuser import TASK

ITEM_TEXTS = ["정말 너무 화가 나서 참을 수가 없어요", "오늘 날씨가 좋아서 기분이 좋네요", "그 소식을 듣고 깜짝 놀랐어"]


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory):
    """The three rates the acceptance names: 8 kHz mono, 16 kHz mono and 44.1 kHz stereo, in different formats."""
    directory = tmp_path_factory.mktemp("pipeline_audio")
    return [
        write_tone(directory / "narrowband.wav", sampling_rate=8_000, seconds=1.2, frequency=180.0, seed=1),
        write_tone(directory / "wideband.flac", sampling_rate=16_000, seconds=0.8, frequency=260.0, seed=2),
        write_tone(directory / "studio.wav", sampling_rate=44_100, seconds=1.5, frequency=220.0, channels=2, seed=3),
    ]


def expected_probabilities(model, processor, text, audio) -> dict[str, np.ndarray]:
    """What the pipeline must return, computed step by step with the processor and the model."""
    features = processor(text=[text], audio=[audio])
    with torch.no_grad():
        output = model(features["text_features"], features["speech_features"])
    return {
        "score": output.logits.softmax(-1)[0].numpy(),
        "text_score": output.text_logits.softmax(-1)[0].numpy(),
        "speech_score": output.speech_logits.softmax(-1)[0].numpy(),
    }


def as_vector(result: list[dict], key: str, labels: list[str]) -> np.ndarray:
    by_label = {emotion["label"]: emotion[key] for emotion in result}
    return np.array([by_label[label] for label in labels])


def test_saved_directory_is_self_contained(saved_model_dir):
    names = {path.name for path in saved_model_dir.iterdir()}
    assert {"model.safetensors", "config.json", "processor_config.json"} <= names
    assert {"configuration_hyfuser.py", "modeling_hyfuser.py", "processing_hyfuser.py", "pipeline_hyfuser.py"} <= names
    config = json.loads((saved_model_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_hyfuser.HyFusERForEmotionRecognition"
    assert config["auto_map"]["AutoModelForSequenceClassification"] == "modeling_hyfuser.HyFusERForEmotionRecognition"
    assert config["custom_pipelines"][TASK]["impl"] == "pipeline_hyfuser.HyFusERPipeline"
    processor_config = json.loads((saved_model_dir / "processor_config.json").read_text())
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_hyfuser.HyFusERProcessor"


def test_fresh_offline_process_elsewhere_loads_every_auto_class(saved_model_dir, tiny_model, tiny_processor, audio_files, tmp_path):
    """No checkout on sys.path, another working directory, no network, and an empty HF cache."""
    script = textwrap.dedent(
        """
        import json, sys
        from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoProcessor, pipeline
        directory, text, audio = sys.argv[1:4]
        assert not any(name.endswith("hyfuser") for name in sys.modules)
        config = AutoConfig.from_pretrained(directory, trust_remote_code=True)
        model = AutoModel.from_pretrained(directory, trust_remote_code=True)
        classifier_model = AutoModelForSequenceClassification.from_pretrained(directory, trust_remote_code=True)
        processor = AutoProcessor.from_pretrained(directory, trust_remote_code=True)
        classifier = pipeline(model=directory, trust_remote_code=True, device="cpu")
        print(json.dumps({
            "classes": [type(config).__name__, type(model).__name__, type(classifier_model).__name__,
                        type(processor).__name__, type(classifier).__name__],
            "result": classifier({"text": text, "audio": audio}),
        }))
        """
    )
    environment = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "HF_MODULES_CACHE")}
    environment.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    completed = subprocess.run(
        [sys.executable, "-c", script, str(saved_model_dir), ITEM_TEXTS[0], str(audio_files[2])],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    loaded = json.loads(completed.stdout.strip().splitlines()[-1])
    assert loaded["classes"] == [
        "HyFusERConfig", "HyFusERForEmotionRecognition", "HyFusERForEmotionRecognition",
        "HyFusERProcessor", "HyFusERPipeline",
    ]
    labels = [tiny_model.config.id2label[i] for i in range(tiny_model.config.num_labels)]
    expected = expected_probabilities(tiny_model, tiny_processor, ITEM_TEXTS[0], str(audio_files[2]))["score"]
    np.testing.assert_allclose(as_vector(loaded["result"], "score", labels), expected, atol=1e-5)


@pytest.mark.parametrize("file_index", [0, 1, 2], ids=["8kHz_wav", "16kHz_flac", "44.1kHz_stereo_wav"])
def test_audio_files_at_any_rate_give_the_step_by_step_result(classifier, tiny_model, tiny_processor, audio_files, file_index):
    audio = str(audio_files[file_index])
    result = classifier({"text": ITEM_TEXTS[file_index], "audio": audio})
    labels = [emotion["label"] for emotion in result]
    assert sorted(labels) == sorted(tiny_model.config.id2label.values())
    scores = [emotion["score"] for emotion in result]
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1.0) < 1e-5
    expected = expected_probabilities(tiny_model, tiny_processor, ITEM_TEXTS[file_index], audio)["score"]
    np.testing.assert_allclose(as_vector(result, "score", labels), expected[[tiny_model.config.label2id[l] for l in labels]], atol=1e-6)


def test_numpy_and_dict_audio_equal_the_file(classifier, audio_files):
    path = audio_files[0]
    samples, rate = soundfile.read(path, dtype="float32")
    from_file = classifier({"text": ITEM_TEXTS[0], "audio": str(path)})
    from_dict = classifier({"text": ITEM_TEXTS[0], "audio": {"array": samples, "sampling_rate": rate}})
    from_numpy = classifier({"text": ITEM_TEXTS[0], "audio": samples}, sampling_rate=rate)
    for other in (from_dict, from_numpy):
        assert [e["label"] for e in other] == [e["label"] for e in from_file]
        np.testing.assert_allclose([e["score"] for e in other], [e["score"] for e in from_file], atol=1e-6)


def test_batch_of_four_equals_one_by_one(classifier, audio_files):
    """Different lengths and rates in one batch: no zero-padding may leak into HuBERT."""
    items = [
        {"text": ITEM_TEXTS[0], "audio": str(audio_files[0])},
        {"text": ITEM_TEXTS[1], "audio": str(audio_files[1])},
        {"text": ITEM_TEXTS[2], "audio": str(audio_files[2])},
        {"text": "괜찮아요", "audio": {"array": voiced_tone(16_000, 2.3, 150.0, seed=9), "sampling_rate": 16_000}},
    ]
    batched = classifier(items, batch_size=4)
    one_by_one = [classifier(item) for item in items]
    assert len(batched) == 4
    for together, alone in zip(batched, one_by_one):
        assert [e["label"] for e in together] == [e["label"] for e in alone]
        np.testing.assert_allclose([e["score"] for e in together], [e["score"] for e in alone], atol=1e-5)


def test_top_k_keeps_the_most_likely_emotions(classifier, audio_files):
    item = {"text": ITEM_TEXTS[1], "audio": str(audio_files[1])}
    everything = classifier(item)
    assert classifier(item, top_k=3) == everything[:3]
    assert len(classifier(item, top_k=1)) == 1


def test_return_modalities_reports_each_direction_like_table_2(classifier, tiny_model, tiny_processor, audio_files):
    audio = str(audio_files[1])
    result = classifier({"text": ITEM_TEXTS[1], "audio": audio}, return_modalities=True)
    labels = [emotion["label"] for emotion in result]
    expected = expected_probabilities(tiny_model, tiny_processor, ITEM_TEXTS[1], audio)
    order = [tiny_model.config.label2id[label] for label in labels]
    for key in ("score", "text_score", "speech_score"):
        np.testing.assert_allclose(as_vector(result, key, labels), expected[key][order], atol=1e-6)
    # Eq. 9: the ensemble is the mean of the two directions.
    np.testing.assert_allclose(
        as_vector(result, "score", labels),
        (as_vector(result, "text_score", labels) + as_vector(result, "speech_score", labels)) / 2,
        atol=1e-6,
    )


def test_calibrated_scores_are_the_fused_output_over_the_temperature_and_raw_ones_stay_available(
    classifier, tiny_model, tiny_processor, audio_files
):
    audio = str(audio_files[1])
    features = tiny_processor(text=[ITEM_TEXTS[1]], audio=[audio])
    with torch.no_grad():
        output = tiny_model(features["text_features"], features["speech_features"])
    log_probs = output.logits[0].double()
    config = classifier.model.config
    assert config.calibration_temperature == 1.0  # a model saved without a temperature: calibrated is raw
    config.calibration_temperature = 2.5
    try:
        calibrated = classifier({"text": ITEM_TEXTS[1], "audio": audio}, return_modalities=True)
        raw = classifier({"text": ITEM_TEXTS[1], "audio": audio}, return_modalities=True, calibrated=False)
    finally:
        config.calibration_temperature = 1.0
    labels = list(config.id2label.values())
    calibrated_scores, raw_scores = as_vector(calibrated, "score", labels), as_vector(raw, "score", labels)
    np.testing.assert_allclose(calibrated_scores, (log_probs / 2.5).softmax(-1).numpy(), atol=1e-6)
    np.testing.assert_allclose(raw_scores, log_probs.softmax(-1).numpy(), atol=1e-6)
    assert calibrated_scores.sum() == pytest.approx(1.0, abs=1e-9) and raw_scores.sum() == pytest.approx(1.0, abs=1e-9)
    assert calibrated_scores.argmax() == raw_scores.argmax() and calibrated[0]["label"] == raw[0]["label"]
    assert calibrated_scores.max() < raw_scores.max()  # T > 1 softens
    for key in ("text_score", "speech_score"):  # the heads stay raw
        np.testing.assert_array_equal(as_vector(calibrated, key, labels), as_vector(raw, key, labels))
    with pytest.raises(ValueError, match="calibrated must be True or False"):
        classifier({"text": ITEM_TEXTS[1], "audio": audio}, calibrated="yes")


@pytest.mark.parametrize(
    "bad_input, message",
    [
        ("just a string", "dict with an 'audio' key"),
        ({"text": "소리가 없어요"}, "dict with an 'audio' key"),
    ],
)
def test_malformed_pipeline_input_is_rejected(classifier, bad_input, message):
    with pytest.raises(ValueError, match=message):
        classifier(bad_input)


def test_invalid_top_k_is_rejected(classifier, audio_files):
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        classifier({"text": ITEM_TEXTS[0], "audio": str(audio_files[0])}, top_k=0)


def test_misspelled_option_is_refused_not_ignored(classifier, audio_files):
    with pytest.raises(TypeError, match="unknown multimodal-emotion-recognition pipeline option.*return_modality"):
        classifier({"text": "정말 화가 나요", "audio": str(audio_files[0])}, return_modality=True)


def test_pipeline_equals_features_computed_without_the_processor(classifier, tiny_backbones, tiny_model, tiny_processor, audio_files):
    """Tokenizer and backbones called directly, HuBERT frames put on 16 positions with `numpy.interp`, and the saved
    scaler applied by hand: the pipeline's probabilities must be these."""
    text, path = ITEM_TEXTS[1], audio_files[1]  # the 16 kHz file: no resampling involved
    length = tiny_model.config.sequence_length
    tokens = AutoTokenizer.from_pretrained(tiny_backbones.text)(
        [text], padding="max_length", truncation=True, max_length=length, return_tensors="pt"
    )
    waveform, rate = soundfile.read(path, dtype="float32")
    assert rate == 16_000
    extractor = AutoFeatureExtractor.from_pretrained(tiny_backbones.speech)
    input_values = extractor(waveform, sampling_rate=rate, return_tensors="pt").input_values
    with torch.no_grad():
        text_features = AutoModel.from_pretrained(tiny_backbones.text)(**tokens).last_hidden_state[0].numpy()
        frames = AutoModel.from_pretrained(tiny_backbones.speech)(input_values).last_hidden_state[0].numpy()
    positions = np.linspace(0, len(frames) - 1, length)
    speech_features = np.stack(
        [np.interp(positions, np.arange(len(frames)), frames[:, dimension]) for dimension in range(frames.shape[1])],
        axis=1,
    )
    mean, std = np.array(tiny_processor.scaler_mean), np.array(tiny_processor.scaler_std)
    scaled = [torch.tensor((features - mean) / std, dtype=torch.float32)[None] for features in (text_features, speech_features)]
    with torch.no_grad():
        expected = tiny_model(*scaled).logits.softmax(-1)[0].numpy()

    result = classifier({"text": text, "audio": str(path)})
    labels = [tiny_model.config.id2label[index] for index in range(tiny_model.config.num_labels)]
    np.testing.assert_allclose(as_vector(result, "score", labels), expected, atol=1e-5)


def test_directory_saved_in_the_old_layout_still_loads_and_predicts_the_same(saved_model_dir, classifier, audio_files, tmp_path):
    """Before the renames, saved directories held `text_encoder/` and `speech_encoder/`, `processor_config.json` keys
    `text_encoder` / `speech_encoder`, and weights named `text_to_speech.*` (Step 1) and `speech_to_text.*` (Step 2)."""
    old = shutil.copytree(saved_model_dir, tmp_path / "old-layout")
    for modality in ("text", "speech"):
        (old / f"{modality}_backbone").rename(old / f"{modality}_encoder")
    processor_config = json.loads((old / "processor_config.json").read_text())
    for modality in ("text", "speech"):
        del processor_config[f"{modality}_backbone"]
        processor_config[f"{modality}_encoder"] = f"./{modality}_encoder"
    (old / "processor_config.json").write_text(json.dumps(processor_config))
    renames = {"text_queries_speech.": "text_to_speech.", "speech_queries_text.": "speech_to_text."}
    weights = {}
    for name, tensor in load_file(old / "model.safetensors").items():
        prefix = next((new for new in renames if name.startswith(new)), None)
        weights[renames[prefix] + name[len(prefix) :] if prefix else name] = tensor
    assert any(name.startswith("text_to_speech.") for name in weights)
    save_file(weights, old / "model.safetensors", metadata={"format": "pt"})

    processor = AutoProcessor.from_pretrained(old, trust_remote_code=True)
    assert (processor.text_backbone, processor.speech_backbone) == ("./text_encoder", "./speech_encoder")
    old_classifier = pipeline(model=str(old), trust_remote_code=True, device="cpu")
    item = {"text": ITEM_TEXTS[2], "audio": str(audio_files[2])}
    expected, result = classifier(item, return_modalities=True), old_classifier(item, return_modalities=True)
    assert [emotion["label"] for emotion in result] == [emotion["label"] for emotion in expected]
    for key in ("score", "text_score", "speech_score"):
        np.testing.assert_allclose([e[key] for e in result], [e[key] for e in expected], atol=1e-6)


def test_pipeline_over_an_unfitted_processor_is_refused_at_construction(tiny_model, tiny_backbones):
    from pipeline_hyfuser import HyFusERPipeline
    from processing_hyfuser import HyFusERProcessor

    unfitted = HyFusERProcessor.from_backbones(
        tiny_backbones.text, tiny_backbones.speech, sequence_length=tiny_model.config.sequence_length
    )
    with pytest.raises(ValueError, match="scaler is not fitted"):
        HyFusERPipeline(model=tiny_model, processor=unfitted)


BATCH = 64


@pytest.fixture(scope="module")
def mixed_batch(tmp_path_factory):
    """64 inputs: good ones cycling through four distinct short (text, audio) pairs and, at `bad`'s indices, bad
    ones. Returns (inputs, the four good pairs, {bad index: words its error must contain})."""
    directory = tmp_path_factory.mktemp("mixed_batch")
    garbage = directory / "garbage.wav"
    garbage.write_bytes(b"this is not audio")
    files = [
        write_tone(directory / "narrowband.wav", sampling_rate=8_000, seconds=0.3, frequency=180.0, seed=1),
        write_tone(directory / "wideband.flac", sampling_rate=16_000, seconds=0.25, frequency=260.0, seed=2),
        write_tone(directory / "studio.wav", sampling_rate=44_100, seconds=0.35, frequency=220.0, channels=2, seed=3),
    ]
    good = [{"text": text, "audio": str(path)} for text, path in zip(ITEM_TEXTS, files)]
    array = {"array": voiced_tone(22_050, 0.3, 170.0, seed=7), "sampling_rate": 22_050}
    good.append({"text": "괜찮아요", "audio": array})
    nan_clip = voiced_tone(16_000, 0.5, seed=8)
    nan_clip[100] = np.nan
    bad = {
        5: ({"text": ITEM_TEXTS[0], "audio": str(garbage)}, [str(garbage), "cannot be read as audio"]),
        11: ({"text": "", "audio": str(files[1])}, ["empty or whitespace-only text ''", str(files[1])]),
        20: ({"text": ITEM_TEXTS[1], "audio": {"array": nan_clip, "sampling_rate": 16_000}}, ["NaN or inf"]),
        29: ({"text": ITEM_TEXTS[2], "audio": np.full(800, np.inf, dtype=np.float32)}, ["NaN or inf"]),
        37: ({"text": ITEM_TEXTS[0], "audio": {"array": np.zeros(0), "sampling_rate": 16_000}}, ["zero length"]),
        44: ({"text": ITEM_TEXTS[1], "audio": str(directory / "missing.wav")}, ["missing.wav' does not exist"]),
        52: ({"text": ITEM_TEXTS[2], "audio": np.zeros((2, 2, 800), dtype=np.float32)}, ["has 3 dimensions"]),
        58: ({"text": "   ", "audio": array}, ["empty or whitespace-only text '   '"]),
        63: ("정말 화가 나요", ["must be a dict with an 'audio' key"]),
    }
    inputs = [bad[index][0] if index in bad else good[index % len(good)] for index in range(BATCH)]
    return inputs, good, {index: words for index, (_, words) in bad.items()}


@pytest.mark.parametrize(
    "batch_size, lazily", [(1, False), (8, False), (8, True)], ids=["unbatched", "batched", "batched_generator"]
)
def test_bad_input_in_a_long_call_is_named_by_its_index_and_file(classifier, mixed_batch, batch_size, lazily):
    inputs, _, bad = mixed_batch
    first = min(bad)
    pattern = rf"^inputs\[{first}\]: audio file '.*garbage\.wav' cannot be read as audio"
    with pytest.raises(ValueError, match=pattern):
        results = classifier((item for item in inputs) if lazily else inputs, batch_size=batch_size)
        list(results)  # a generator's results come lazily


def test_skipped_bad_inputs_leave_a_record_in_place_and_the_rest_predicted_as_alone(classifier, mixed_batch):
    inputs, good, bad = mixed_batch
    results = classifier(inputs, batch_size=5, errors="skip")  # 5: batches that 64 does not divide evenly
    assert len(results) == BATCH
    records = {index: result for index, result in enumerate(results) if isinstance(result, dict)}
    assert sorted(records) == sorted(bad)
    for index, record in records.items():
        assert record["index"] == index and record["error"].startswith(f"inputs[{index}]: ")
        for words in bad[index]:
            assert words in record["error"]
    alone = [classifier(item) for item in good]
    for index, result in enumerate(results):
        if index not in bad:
            expected = alone[index % len(good)]
            assert [emotion["label"] for emotion in result] == [emotion["label"] for emotion in expected]
            np.testing.assert_allclose([e["score"] for e in result], [e["score"] for e in expected], atol=1e-5)


def test_a_single_bad_input_is_refused_as_before_or_recorded_when_skipped(classifier):
    bad = {"text": " ", "audio": voiced_tone(16_000, 0.3)}
    with pytest.raises(ValueError, match=r"^empty or whitespace-only text ' '$"):
        classifier(bad, sampling_rate=16_000)
    assert classifier(bad, sampling_rate=16_000, errors="skip") == {
        "index": None, "error": "empty or whitespace-only text ' '"
    }


def test_unknown_errors_mode_is_refused(classifier, audio_files):
    with pytest.raises(ValueError, match=r"errors must be one of \('raise', 'skip'\), got 'ignore'"):
        classifier({"text": ITEM_TEXTS[0], "audio": str(audio_files[0])}, errors="ignore")
