"""Audio-only input: a speech recognizer (a tiny random multilingual Whisper in HF layout, offline) writes the text
side, the pipeline returns its transcript with the prediction, and `train.py --transcripts asr` trains on such
transcripts."""

import json
import re
import shutil
from pathlib import Path

import pytest
from audio_files import write_tone
from corpora import write_kemdy20
from datasets import Dataset
from test_processing_hyfuser import global_random_state
from train_script import run_main
from transformers import AutoTokenizer, pipeline

from configuration_hyfuser import DEFAULT_ASR_MODEL, EMOTION_LABELS
from hyfuser.tiny_backbones import build_tiny_asr_model
from processing_hyfuser import HyFusERProcessor


@pytest.fixture(scope="module")
def asr_model(tmp_path_factory) -> str:
    return str(build_tiny_asr_model(tmp_path_factory.mktemp("asr")))


@pytest.fixture(scope="module")
def deaf_asr_model(asr_model, tmp_path_factory) -> str:
    """The tiny recognizer with every ordinary token suppressed: only special tokens are left, so it hears no words."""
    directory = Path(shutil.copytree(asr_model, tmp_path_factory.mktemp("deaf_asr") / "asr"))
    tokenizer = AutoTokenizer.from_pretrained(directory)
    generation_config = json.loads((directory / "generation_config.json").read_text())
    generation_config["suppress_tokens"] = sorted(set(range(len(tokenizer))) - set(tokenizer.all_special_ids))
    (directory / "generation_config.json").write_text(json.dumps(generation_config))
    return str(directory)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("asr_audio")
    return [
        str(write_tone(folder / "one.wav", sampling_rate=16_000, seconds=1.1, frequency=190.0, seed=4)),
        str(write_tone(folder / "two.wav", sampling_rate=44_100, seconds=0.7, frequency=240.0, seed=5)),
    ]


def recognized(asr_model: str, clip: str, classifier) -> str:
    """What the recognizer hears, asked directly, the way the processor asks it (16 kHz, Korean, transcribe)."""
    recognizer = pipeline("automatic-speech-recognition", model=asr_model, device="cpu")
    waveform = classifier.processor.load_audio(clip)
    result = recognizer(
        {"raw": waveform, "sampling_rate": 16_000}, generate_kwargs={"language": "korean", "task": "transcribe"}
    )
    return result["text"].strip()


def test_audio_alone_is_transcribed_and_the_transcript_comes_back_with_the_prediction(classifier, asr_model, clips):
    result = classifier({"audio": clips[0]}, asr_model=asr_model)
    transcript = recognized(asr_model, clips[0], classifier)
    assert transcript  # the tiny recognizer always hears something
    assert result["transcript"] == transcript
    assert sorted(emotion["label"] for emotion in result["emotions"]) == sorted(EMOTION_LABELS)
    # The prediction is the one for that text with that audio.
    assert result["emotions"] == classifier({"text": transcript, "audio": clips[0]})


def test_a_batch_may_mix_inputs_with_and_without_text(classifier, asr_model, clips):
    inputs = [{"text": "정말 너무 화가 나요", "audio": clips[0]}, {"audio": clips[1]}]
    batched = classifier(inputs, asr_model=asr_model, batch_size=2)
    one_by_one = [classifier(item, asr_model=asr_model) for item in inputs]
    assert isinstance(batched[0], list)  # given text: the usual list of emotions
    assert batched[1]["transcript"] == one_by_one[1]["transcript"] == recognized(asr_model, clips[1], classifier)
    for together, alone in zip([batched[0], batched[1]["emotions"]], [one_by_one[0], one_by_one[1]["emotions"]]):
        scores = {emotion["label"]: emotion["score"] for emotion in together}
        assert scores == pytest.approx({emotion["label"]: emotion["score"] for emotion in alone}, abs=1e-5)


def test_audio_the_recognizer_hears_no_words_in_is_named_by_its_index_or_skipped(classifier, deaf_asr_model, clips):
    inputs = [{"text": "정말 너무 화가 나요", "audio": clips[0]}, {"audio": clips[1]}]
    error = f"inputs[1]: the speech recognizer {deaf_asr_model!r} heard no words; give the text"
    with pytest.raises(ValueError, match=f"^{re.escape(error)}$"):
        classifier(inputs, asr_model=deaf_asr_model, batch_size=2)
    results = classifier(inputs, asr_model=deaf_asr_model, batch_size=2, errors="skip")
    assert results[1] == {"index": 1, "error": error}
    alone = {emotion["label"]: emotion["score"] for emotion in classifier(inputs[0])}
    assert {emotion["label"]: emotion["score"] for emotion in results[0]} == pytest.approx(alone, abs=1e-5)


def test_audio_alone_without_a_loadable_recognizer_is_refused_clearly(classifier, clips):
    assert classifier.processor.asr_model == DEFAULT_ASR_MODEL
    message = f"the speech recognizer '{DEFAULT_ASR_MODEL}' cannot be loaded (?s:.*) Offline, it must be a local"
    with pytest.raises(ValueError, match=message):
        classifier({"audio": clips[0]})  # the default Whisper is not in this offline cache
    classifier.processor.asr_model = None
    try:
        with pytest.raises(ValueError, match=r"has no speech recognizer \(asr_model=None\)"):
            classifier({"audio": clips[0]})
    finally:
        classifier.processor.asr_model = DEFAULT_ASR_MODEL


def test_train_py_trains_on_asr_transcripts_and_its_model_transcribes_with_the_same_recognizer(
    tiny_backbones, asr_model, clips, tmp_path
):
    kemdy20 = write_kemdy20(tmp_path / "corpus")
    output_dir, cache_dir = tmp_path / "out", tmp_path / "cache"
    run_main([
        "--dataset", "kemdy", "--kemdy20_dir", str(kemdy20), "--text_backbone", tiny_backbones.text,
        "--speech_backbone", tiny_backbones.speech, "--sequence_length", "8",
        "--config_overrides", "intermediate_size=16,num_hidden_layers=1", "--num_train_epochs", "1",
        "--per_device_train_batch_size", "4", "--cache_dir", str(cache_dir), "--output_dir", str(output_dir),
        "--report_to", "none", "--save_strategy", "no", "--load_best_model_at_end", "false",
        "--early_stopping_patience", "0", "--disable_tqdm", "true",
        "--transcripts", "asr", "--asr_model", asr_model,
    ])  # fmt: skip
    cached = Dataset.from_file(str(next((cache_dir / "features").glob("train-*.arrow"))))
    transcripts = Dataset.from_file(str(next((cache_dir / "transcripts").glob("train-*.arrow"))))
    assert cached["text"] == transcripts["text"]  # the features are those of the recognizer's text ...
    assert cached["text"] != cached["raw_text"]  # ... not of the corpus's transcripts
    assert json.loads((output_dir / "processor_config.json").read_text())["asr_model"] == asr_model

    served = pipeline(model=str(output_dir), trust_remote_code=True, device="cpu")
    result = served({"audio": clips[0]})  # no asr_model=: the one it was trained with
    assert result["transcript"] == recognized(asr_model, clips[0], served)


def test_loading_and_running_the_recognizer_leave_the_global_random_state_alone(tiny_backbones, asr_model, clips):
    """`train.py --transcripts asr` transcribes in the process that then trains (and Whisper may sample when greedy
    decoding fails its checks): the dropout masks must not depend on whether the transcripts were cached."""
    processor = HyFusERProcessor.from_backbones(tiny_backbones.text, tiny_backbones.speech, asr_model=asr_model)
    before = global_random_state()
    assert processor.transcribe([processor.load_audio(clip) for clip in clips])
    assert global_random_state() == before
