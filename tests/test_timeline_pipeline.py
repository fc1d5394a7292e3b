"""The pipeline's timeline of a long recording: a transcript's or a caller's segments, or the recognizer's
timestamped ones, each predicted as its utterance alone."""

import math

import numpy as np
import pytest
import soundfile
import test_timeline

from hyfuser.tiny_backbones import build_tiny_asr_model
from timeline_hyfuser import MIN_SEGMENT_SECONDS, Segment

recording = test_timeline.recording  # the three-minute dialogue, built once per module
write_srt, write_vtt = test_timeline.write_srt, test_timeline.write_vtt
RECORD_KEYS = {"start", "end", "text", "label", "score", "scores"}


def scores_of(emotions: list[dict]) -> dict[str, float]:
    return {emotion["label"]: emotion["score"] for emotion in emotions}


@pytest.mark.parametrize("rate", ["native", "other_rate"])
def test_a_transcript_gives_one_record_per_utterance_predicted_as_the_utterance_alone(
    recording,
    classifier,
    tmp_path,
    rate,
):
    audio, alone, write = (
        (recording.native, recording.alone, write_srt)
        if rate == "native"
        else (recording.other_rate, recording.alone_other_rate, write_vtt)
    )
    transcript = write(tmp_path / f"dialogue.{write.__name__[-3:]}", recording.segments)
    records = classifier({"audio": str(audio), "transcript": str(transcript)}, batch_size=8)
    assert soundfile.info(audio).duration > 170 and len(records) == len(recording.segments) == 98
    expected = classifier(
        [{"text": segment.text, "audio": str(path)} for segment, path in zip(recording.segments, alone)]
    )
    for record, segment, emotions in zip(records, recording.segments, expected, strict=True):
        assert set(record) == RECORD_KEYS | {"speaker"}
        assert abs(record["start"] - segment.start) <= 0.05 and abs(record["end"] - segment.end) <= 0.05
        assert (record["speaker"], record["text"]) == (segment.speaker, segment.text)
        assert record["label"] == emotions[0]["label"]
        assert record["scores"].keys() == scores_of(emotions).keys()
        np.testing.assert_allclose(
            [record["scores"][label] for label in sorted(record["scores"])],
            [scores_of(emotions)[label] for label in sorted(record["scores"])],
            atol=1e-5,
        )
        assert record["score"] == max(record["scores"].values())


def test_caller_segments_too_short_or_without_words_come_back_with_a_reason(recording, classifier):
    first, second = recording.segments[:2]
    backchannel = (first.end + 0.01, first.end + 0.01 + MIN_SEGMENT_SECONDS / 2, "네")
    wordless = {"start": second.end, "end": second.end + 0.3, "text": " "}
    segments = [(first.start, first.end, first.text), backchannel, (second.start, second.end, second.text), wordless]
    records = classifier({"audio": str(recording.native), "segments": segments})
    assert [record["label"] is None for record in records] == [False, True, False, True]
    assert "MIN_SEGMENT_SECONDS" in records[1]["reason"] and records[3]["reason"] == "no text"
    alone = classifier(
        [{"text": segment.text, "audio": str(path)} for segment, path in zip((first, second), recording.alone)]
    )
    for record, emotions in zip(records[::2], alone):
        assert "reason" not in record and "speaker" not in record
        np.testing.assert_allclose(
            [record["scores"][label] for label in sorted(record["scores"])],
            [scores_of(emotions)[label] for label in sorted(record["scores"])],
            atol=1e-5,
        )
    assert records[1]["scores"] is None and records[1]["score"] is None


def test_a_segment_whose_audio_is_bad_is_named(classifier, tmp_path):
    path = tmp_path / "nan.wav"
    samples = np.zeros(16_000 * 3, dtype=np.float32)
    samples[16_000:32_000] = np.nan
    soundfile.write(path, samples, 16_000, subtype="FLOAT")
    segments = [(0.0, 0.9, "조용해요"), (1.0, 2.0, "안 들려요")]
    with pytest.raises(ValueError, match=r"nan.wav', segment 1 contains NaN or inf"):
        classifier({"audio": str(path), "segments": segments}, errors="skip")


@pytest.fixture(scope="module")
def timestamped_asr_model(tmp_path_factory) -> str:
    return str(build_tiny_asr_model(tmp_path_factory.mktemp("asr-timestamps"), timestamps=True))


def test_without_a_transcript_the_recognizer_segments_are_used_and_records_are_well_formed(
    recording,
    classifier,
    timestamped_asr_model,
):
    duration = soundfile.info(recording.native).duration
    records = classifier({"audio": str(recording.native)}, timeline=True, asr_model=timestamped_asr_model)
    windows = math.ceil(duration / 30)
    assert len(records) >= windows  # the tiny recognizer hears a few chunks in every window
    labels = set(classifier.model.config.id2label.values())
    chunks = classifier.processor.recognize_chunks(
        classifier.processor.load_audio(str(recording.native))[: 30 * 16_000], timestamped_asr_model
    )
    assert records[0]["start"] == pytest.approx(chunks[0]["timestamp"][0], abs=1e-3)
    for previous, record in zip([None, *records], records):
        assert RECORD_KEYS <= set(record) <= RECORD_KEYS | {"reason"} and record["text"].strip()
        assert 0 <= record["start"] < record["end"] <= duration + 1e-3
        assert previous is None or previous["end"] <= record["start"]
        if record["label"] is None:
            assert record["reason"] and record["score"] is None and record["scores"] is None
        else:
            assert record["label"] in labels and set(record["scores"]) == labels
            assert sum(record["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    assert any(record["label"] is not None for record in records)


def test_the_default_tiny_recognizer_is_unchanged_by_the_timestamped_variant(tmp_path):
    plain = build_tiny_asr_model(tmp_path / "plain")
    assert "<|0.00|>" not in (plain / "tokenizer.json").read_text(encoding="utf-8")
    timestamped = build_tiny_asr_model(tmp_path / "timestamped", timestamps=True)
    vocab = (timestamped / "tokenizer.json").read_text(encoding="utf-8")
    assert "<|0.00|>" in vocab and "<|30.00|>" in vocab


@pytest.mark.parametrize(
    "inputs, options, message",
    [
        ({"audio": "x.wav", "transcript": "x.srt", "segments": []}, {}, "at most one of transcript, segments"),
        ({"audio": "x.wav", "text": "안녕"}, {"timeline": True}, "'text' is one utterance's"),
        ({"audio": "x.wav", "segments": []}, {"top_k": 1}, "takes no top_k"),
        ({"audio": np.zeros(16_000), "segments": []}, {}, "reads its audio from a file"),
        ({"audio": "missing.wav", "segments": [(0.0, 1.0, "말")]}, {}, "does not exist"),
        ({"audio": "x.wav", "segments": [(1.0, 0.5, "말")]}, {}, r"segments\[0\]: ends at 0.5 s"),
    ],
)
def test_bad_timeline_inputs_are_named(classifier, inputs, options, message):
    with pytest.raises(ValueError, match=message):
        classifier(inputs, **options)


def test_single_utterances_are_unchanged(recording, classifier):
    segment: Segment = recording.segments[0]
    emotions = classifier({"text": segment.text, "audio": str(recording.alone[0])})
    assert isinstance(emotions, list) and {"label", "score"} <= set(emotions[0])
