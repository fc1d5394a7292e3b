"""The timeline of a long recording: transcripts, each segment's audio read alone, recognized segments, records.

The recording is a three-minute KEMDy20-style dialogue: the demo corpus's generated utterances of one session, two
speakers taking turns, placed on a millisecond grid with silences between them, so every boundary is known exactly.
"""

import csv
import functools
import json
import logging
import os
import re
import threading
import tracemalloc
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile
from matplotlib.image import imread
from scipy.signal import resample_poly

from hyfuser.demo import DEMO_SAMPLING_RATE, plan_demo_utterances, write_kemdy20_corpus
from timeline_hyfuser import (
    MAX_SEGMENT_SECONDS,
    MIN_SEGMENT_SECONDS,
    Segment,
    iter_segment_audio,
    plot_timeline,
    read_transcript,
    recognized_segments,
    segments_from,
    skip_reason,
    timeline_records,
    write_csv,
    write_jsonl,
)

PAUSE_SECONDS = 0.25
"""Silence that ends an utterance for `voice_activity`: longer than the demo voice's pauses between syllables."""
OTHER_RATE = 48_000
"""The rate of the recording's second copy: whole samples per millisecond, so its boundaries are exact too."""


@dataclass(frozen=True)
class Recording:
    """A dialogue recording at 16 kHz (mono, 16-bit) and at 48 kHz (stereo, float), each utterance also in a file of
    its own, and the transcript segments that place them."""

    native: Path
    other_rate: Path
    alone: list[Path]
    alone_other_rate: list[Path]
    samples: list[np.ndarray]  # each utterance's int16 samples
    segments: list[Segment]


def srt_time(seconds: float) -> str:
    milliseconds = round(seconds * 1000)
    hours, minutes, whole = milliseconds // 3_600_000, milliseconds // 60_000 % 60, milliseconds // 1000 % 60
    return f"{hours:02d}:{minutes:02d}:{whole:02d},{milliseconds % 1000:03d}"


def write_srt(path: Path, segments: list[Segment]) -> Path:
    cues = [
        f"{number}\n{srt_time(segment.start)} --> {srt_time(segment.end)}\n{segment.speaker}: {segment.text}\n"
        for number, segment in enumerate(segments, start=1)
    ]
    path.write_text("\n".join(cues), encoding="utf-8")
    return path


def write_vtt(path: Path, segments: list[Segment]) -> Path:
    cues = [
        f"{srt_time(segment.start).replace(',', '.')} --> {srt_time(segment.end).replace(',', '.')} align:start\n"
        f"<v {segment.speaker}>{segment.text}</v>\n"
        for segment in segments
    ]
    path.write_text("WEBVTT - a dialogue\n\nNOTE written by the test\n\n" + "\n".join(cues), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Recording:
    root = tmp_path_factory.mktemp("dialogue")
    rng = np.random.default_rng(23)
    utterances = plan_demo_utterances(14, 1, 1, rng, set())  # 98 utterances, one session, two speakers
    write_kemdy20_corpus(root / "corpus", utterances, rng)
    samples, segments, clock = [], [], 0
    for utterance in utterances:
        audio, _ = soundfile.read(root / "corpus" / "wav" / "Session01" / f"{utterance.segment_id}.wav", dtype="int16")
        audio = audio[: len(audio) - len(audio) % (DEMO_SAMPLING_RATE // 1000)]  # whole milliseconds
        clock += int(rng.integers(300, 1200))  # a silence of 0.3 to 1.2 s, in milliseconds
        speaker = utterance.segment_id.split("_")[2]
        end = clock + len(audio) * 1000 // DEMO_SAMPLING_RATE
        samples.append(audio)
        segments.append(Segment(clock / 1000, end / 1000, utterance.text, speaker))
        clock = end
    total = (clock + 500) * DEMO_SAMPLING_RATE // 1000
    native = np.zeros(total, dtype=np.int16)
    other_rate = np.zeros((total * OTHER_RATE // DEMO_SAMPLING_RATE, 2), dtype=np.float32)
    alone, alone_other_rate = [], []
    for index, (audio, segment) in enumerate(zip(samples, segments)):
        start = round(segment.start * DEMO_SAMPLING_RATE)
        native[start : start + len(audio)] = audio
        upsampled = resample_poly(audio / 32768, OTHER_RATE // DEMO_SAMPLING_RATE, 1).astype(np.float32)
        stereo = np.stack([upsampled, 0.5 * upsampled], axis=1)
        start = round(segment.start * OTHER_RATE)
        other_rate[start : start + len(stereo)] = stereo
        alone.append(root / f"utterance{index:03d}.wav")
        soundfile.write(alone[-1], audio, DEMO_SAMPLING_RATE, subtype="PCM_16")
        alone_other_rate.append(root / f"utterance{index:03d}-48k.wav")
        soundfile.write(alone_other_rate[-1], stereo, OTHER_RATE, subtype="FLOAT")
    soundfile.write(root / "dialogue.wav", native, DEMO_SAMPLING_RATE, subtype="PCM_16")
    soundfile.write(root / "dialogue-48k.wav", other_rate, OTHER_RATE, subtype="FLOAT")
    return Recording(root / "dialogue.wav", root / "dialogue-48k.wav", alone, alone_other_rate, samples, segments)


def test_the_recording_is_three_minutes_of_two_speakers(recording):
    assert 170 < soundfile.info(recording.native).duration < 200
    assert {segment.speaker for segment in recording.segments} == {"User001F", "User002M"}


@pytest.mark.parametrize("write", [write_srt, write_vtt], ids=["srt", "vtt"])
def test_a_transcript_gives_each_utterance_its_times_text_and_speaker(recording, tmp_path, write):
    path = write(tmp_path / f"dialogue.{write.__name__[-3:]}", recording.segments)
    assert read_transcript(path) == recording.segments
    assert segments_from(str(path)) == recording.segments


def test_each_segment_reads_exactly_its_utterance(recording, tiny_processor):
    rate = tiny_processor.sampling_rate
    waveforms = list(iter_segment_audio(recording.native, recording.segments, rate))
    assert len(waveforms) == len(recording.alone)
    for waveform, samples, alone in zip(waveforms, recording.samples, recording.alone):
        np.testing.assert_array_equal(waveform, samples / np.float32(32768))
        np.testing.assert_array_equal(waveform, tiny_processor.load_audio(str(alone)))


def test_at_another_rate_each_segment_is_its_utterance_resampled_alone(recording, tiny_processor):
    rate = tiny_processor.sampling_rate
    waveforms = iter_segment_audio(recording.other_rate, recording.segments, rate)
    for waveform, alone in zip(waveforms, recording.alone_other_rate, strict=True):
        stereo, _ = soundfile.read(alone, dtype="float32")
        np.testing.assert_array_equal(
            waveform, resample_poly(stereo.mean(axis=1), rate, OTHER_RATE).astype(np.float32)
        )
        np.testing.assert_array_equal(waveform, tiny_processor.load_audio(str(alone)))


def test_segments_of_a_flac_file_and_of_an_open_file_equal_the_wavs(recording, tmp_path):
    flac = tmp_path / "dialogue.flac"
    soundfile.write(flac, soundfile.read(recording.native, dtype="int16")[0], DEMO_SAMPLING_RATE, subtype="PCM_16")
    segments = recording.segments[::10]
    expected = list(iter_segment_audio(recording.native, segments, DEMO_SAMPLING_RATE))
    with open(flac, "rb") as file:
        for from_flac, from_object, wav in zip(
            iter_segment_audio(flac, segments, DEMO_SAMPLING_RATE),
            iter_segment_audio(file, segments, DEMO_SAMPLING_RATE),
            expected,
            strict=True,
        ):
            np.testing.assert_array_equal(from_flac, wav)
            np.testing.assert_array_equal(from_object, wav)


def test_segments_predict_as_each_utterance_alone(recording, classifier):
    segments = recording.segments[:12]
    rate = classifier.processor.sampling_rate
    inputs = [
        {"text": segment.text, "audio": {"array": waveform, "sampling_rate": rate}}
        for segment, waveform in zip(segments, iter_segment_audio(recording.other_rate, segments, rate))
    ]
    alone = [{"text": segment.text, "audio": str(path)} for segment, path in zip(segments, recording.alone_other_rate)]
    for from_recording, from_file in zip(classifier(inputs, batch_size=4), classifier(alone), strict=True):
        assert [emotion["label"] for emotion in from_recording] == [emotion["label"] for emotion in from_file]
        np.testing.assert_allclose(
            [emotion["score"] for emotion in from_recording], [emotion["score"] for emotion in from_file], atol=1e-5
        )


# ---------------------------------------------------------------------------------------------------------------------
# Recognized segments


def voice_activity(waveform: np.ndarray, cut_ends_at_the_end: bool = False) -> list[dict]:
    """A recognizer of the shape transformers' gives with `return_timestamps=True`: a chunk per run of non-zero
    samples (runs closer than `PAUSE_SECONDS` joined: the demo voice pauses between syllables). A run followed by less
    than `PAUSE_SECONDS` of silence is cut off by the end of the audio: like Whisper, it gets no end, or with
    `cut_ends_at_the_end` an end 10 ms before the audio's end."""
    voiced = np.flatnonzero(waveform)
    if voiced.size == 0:
        return []
    rate = DEMO_SAMPLING_RATE
    breaks = np.flatnonzero(np.diff(voiced) > PAUSE_SECONDS * rate)
    starts, ends = voiced[np.r_[0, breaks + 1]], voiced[np.r_[breaks, voiced.size - 1]] + 1
    cut_end = waveform.size / rate - 0.01 if cut_ends_at_the_end else None
    return [
        {
            "timestamp": (start / rate, cut_end if waveform.size - end < PAUSE_SECONDS * rate else end / rate),
            "text": "말",
        }
        for start, end in zip(starts, ends)
    ]


def voiced_extent(segment: Segment, samples: np.ndarray) -> tuple[float, float]:
    voiced = np.flatnonzero(samples)
    start = round(segment.start * DEMO_SAMPLING_RATE)
    return round((start + voiced[0]) / DEMO_SAMPLING_RATE, 3), round((start + voiced[-1] + 1) / DEMO_SAMPLING_RATE, 3)


@pytest.mark.parametrize("cut_ends_at_the_end", [False, True], ids=["no end", "end at the window's end"])
def test_recognized_segments_are_the_utterances_even_where_a_window_cuts_one(recording, cut_ends_at_the_end):
    expected = [voiced_extent(segment, samples) for segment, samples in zip(recording.segments, recording.samples)]
    # The first window ends in the middle of an utterance, which the recognizer hears without an end.
    window_seconds = sum(expected[15]) / 2
    recognize = functools.partial(voice_activity, cut_ends_at_the_end=cut_ends_at_the_end)
    recognized = recognized_segments(recording.native, recognize, DEMO_SAMPLING_RATE, window_seconds)
    np.testing.assert_allclose([(segment.start, segment.end) for segment in recognized], expected, atol=1e-3)
    assert {segment.text for segment in recognized} == {"말"}
    assert window_seconds * 5 < recognized[-1].end  # many windows


def test_a_recording_without_words_has_no_recognized_segments(tmp_path):
    path = tmp_path / "silence.wav"
    soundfile.write(path, np.zeros(DEMO_SAMPLING_RATE * 70, dtype=np.int16), DEMO_SAMPLING_RATE)
    heard = []

    def recognize(waveform):
        heard.append(len(waveform))
        return voice_activity(waveform)

    assert recognized_segments(path, recognize, DEMO_SAMPLING_RATE) == []
    assert heard == [30 * DEMO_SAMPLING_RATE, 30 * DEMO_SAMPLING_RATE, 10 * DEMO_SAMPLING_RATE]


def test_a_chunk_filling_a_whole_window_is_kept_and_the_next_window_follows_it(tmp_path):
    path = tmp_path / "hum.wav"
    soundfile.write(path, np.full(DEMO_SAMPLING_RATE * 50, 1000, dtype=np.int16), DEMO_SAMPLING_RATE)
    recognized = recognized_segments(path, voice_activity, DEMO_SAMPLING_RATE)
    assert [(segment.start, segment.end) for segment in recognized] == [(0.0, 30.0), (30.0, 50.0)]


# ---------------------------------------------------------------------------------------------------------------------
# Bounded memory


def test_reading_a_30_minute_recording_holds_one_segment_or_window_at_a_time(tmp_path):
    """30 minutes of 16 kHz 16-bit audio: 57.6 MB on disk, 115 MB decoded to float32. Reading 600 segments of 2.5 s,
    and the whole recording in recognizer windows of 30 s, peaks below 8 MB of traced allocations."""
    rate, minutes = 16_000, 30
    path = tmp_path / "long.wav"
    rng = np.random.default_rng(0)
    with soundfile.SoundFile(path, "w", rate, 1, subtype="PCM_16") as file:
        for _ in range(minutes):
            file.write(rng.integers(-3000, 3000, rate * 60, dtype=np.int16))
    assert path.stat().st_size > 57_000_000
    segments = [Segment(start, start + 2.5, "말") for start in np.arange(0.0, minutes * 60, 3.0)]
    peak_bound = 8_000_000
    tracemalloc.start()
    try:
        read = sum(len(waveform) for waveform in iter_segment_audio(path, segments, rate))
        segments_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        windows = []
        recognized_segments(path, lambda waveform: windows.append(len(waveform)) or [], rate)
        windows_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert read == len(segments) * 2.5 * rate
    assert sum(windows) == minutes * 60 * rate and max(windows) == 30 * rate
    assert segments_peak < peak_bound and windows_peak < peak_bound, (segments_peak, windows_peak)


# ---------------------------------------------------------------------------------------------------------------------
# Records and their files


@pytest.fixture(scope="module")
def records(recording, classifier) -> list[dict]:
    """The first utterances' records, plus a backchannel too short to classify and a cue without words."""
    segments = recording.segments[:6]
    backchannel = Segment(segments[2].end + 0.05, segments[2].end + 0.05 + MIN_SEGMENT_SECONDS / 2, "네", "User001F")
    wordless = Segment(segments[4].end, segments[4].end + 0.3, "", "User002M")
    segments = [*segments[:3], backchannel, *segments[3:5], wordless, segments[5]]
    classified = [segment for segment in segments if skip_reason(segment) is None]
    rate = classifier.processor.sampling_rate
    waveforms = iter_segment_audio(recording.native, classified, rate)
    predictions = classifier(
        [
            {"text": segment.text, "audio": {"array": waveform, "sampling_rate": rate}}
            for segment, waveform in zip(classified, waveforms)
        ]
    )
    return timeline_records(segments, predictions)


def test_records_carry_times_text_speaker_and_a_label_or_a_reason(records, classifier):
    labels = sorted(classifier.model.config.id2label.values())
    assert [record.get("reason") for record in records] == [
        None,
        None,
        None,
        f"shorter than {MIN_SEGMENT_SECONDS} s (MIN_SEGMENT_SECONDS)",
        None,
        None,
        "no text",
        None,
    ]
    for record in records:
        assert record["speaker"] in ("User001F", "User002M") and record["end"] > record["start"]
        if "reason" in record:
            assert record["label"] is record["score"] is record["scores"] is None
        else:
            assert list(record["scores"]) == labels
            assert sum(record["scores"].values()) == pytest.approx(1, abs=1e-5)
            assert record["score"] == max(record["scores"].values()) == record["scores"][record["label"]]


def test_jsonl_and_csv_hold_the_records(records, tmp_path):
    write_jsonl(records, tmp_path / "timeline.jsonl")
    lines = (tmp_path / "timeline.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == records
    assert records[0]["text"] in lines[0]  # Hangul as is, not escaped

    write_csv(records, tmp_path / "timeline.csv")
    with open(tmp_path / "timeline.csv", newline="", encoding="utf-8-sig") as file:
        rows = list(csv.DictReader(file))
    labels = list(records[0]["scores"])
    assert list(rows[0]) == ["start", "end", "speaker", "text", "label", "score", "reason"] + [
        f"score_{label}" for label in labels
    ]
    for row, record in zip(rows, records, strict=True):
        assert (float(row["start"]), float(row["end"]), row["speaker"], row["text"]) == (
            record["start"],
            record["end"],
            record["speaker"],
            record["text"],
        )
        if record["label"] is None:
            assert (row["label"], row["score"], row["reason"]) == ("", "", record["reason"])
            assert all(row[f"score_{label}"] == "" for label in labels)
        else:
            assert (row["label"], float(row["score"]), row["reason"]) == (record["label"], record["score"], "")
            assert [float(row[f"score_{label}"]) for label in labels] == list(record["scores"].values())


def test_csv_without_speakers_or_reasons_has_no_such_columns(records, tmp_path):
    anonymous = [
        {key: value for key, value in record.items() if key != "speaker"}
        for record in records
        if "reason" not in record
    ]
    write_csv(anonymous, tmp_path / "timeline.csv")
    with open(tmp_path / "timeline.csv", newline="", encoding="utf-8-sig") as file:
        header = next(csv.reader(file))
    assert header[:5] == ["start", "end", "text", "label", "score"] and "reason" not in header


def test_the_plot_has_a_row_per_speaker(records, tmp_path):
    plot_timeline(records, tmp_path / "speakers.png")
    anonymous = [{key: value for key, value in record.items() if key != "speaker"} for record in records]
    plot_timeline(anonymous, tmp_path / "one-row.png")
    assert (tmp_path / "speakers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    two_rows, one_row = imread(tmp_path / "speakers.png"), imread(tmp_path / "one-row.png")
    assert two_rows.shape[1] == one_row.shape[1] and two_rows.shape[0] > one_row.shape[0] * 1.5
    # the labelled segments are drawn in colour, not only axes and grey ticks
    colourful = np.ptp(two_rows[..., :3], axis=-1) > 0.3
    assert colourful.mean() > 0.01


def test_predictions_must_match_the_classified_segments(recording):
    with pytest.raises(ValueError, match=r"got 1 predictions for the 2 segments that skip_reason accepts \(of 3\)"):
        timeline_records([*recording.segments[:2], Segment(0, 0.1, "네")], [[{"label": "angry", "score": 1.0}]])


def test_segments_longer_than_the_maximum_are_refused_with_a_reason():
    assert skip_reason(Segment(0, MAX_SEGMENT_SECONDS + 1, "긴 이야기")).startswith(
        f"longer than {MAX_SEGMENT_SECONDS} s"
    )
    assert skip_reason(Segment(0, MIN_SEGMENT_SECONDS, "네")) is None


# ---------------------------------------------------------------------------------------------------------------------
# Transcripts and segment lists: speakers, markup, and bad ones


MARKED_UP_CUES = {
    ".vtt": (
        "\ufeffWEBVTT\n\nSTYLE\n::cue { color: white }\n\nintro\n00:01.000 --> 00:02.500\n"
        "<v.loud 김 선생>정말 <i>화가</i> 나요 &amp; 참을 수가</v>\n<v 김 선생>없어요</v>\n\n"
        "1:00:03.000 --> 1:00:04.000\n상담사: 그랬군요\n\n"
        "01:00:05.000 --> 01:00:06.000\n오늘 회의는 3:30에 해요\n",
        [
            Segment(1.0, 2.5, "정말 화가 나요 & 참을 수가 없어요", "김 선생"),
            Segment(3603.0, 3604.0, "그랬군요", "상담사"),
            Segment(3605.0, 3606.0, "오늘 회의는 3:30에 해요", None),  # a time, not a speaker
        ],
    ),
    ".srt": (
        "1\r\n00:00:01,000 --> 00:00:02,000\r\nSpeaker 1: <font color=red>hello</font>\r\nthere\r\n\r\n"
        "2\r\n00:00:01,500 --> 00:00:03,000\r\nSpeaker 2: {\\an8}hi\r\n\r\n"
        "3\r\n00:00:03,000 --> 00:00:03,100\r\n\r\n",
        [
            Segment(1.0, 2.0, "hello there", "Speaker 1"),
            Segment(1.5, 3.0, "hi", "Speaker 2"),  # two named speakers may talk at once
            Segment(3.0, 3.1, "", None),
        ],
    ),
}


@pytest.mark.parametrize("suffix", MARKED_UP_CUES)
def test_speakers_and_markup_of_cues(tmp_path, suffix):
    content, expected = MARKED_UP_CUES[suffix]
    path = tmp_path / f"cues{suffix}"
    path.write_text(content, encoding="utf-8")
    assert read_transcript(path) == expected


@pytest.mark.parametrize(
    ("suffix", "content", "message"),
    [
        (
            ".srt",
            "1\n00:00:01,000 --> 00:00:02,000\nhi\n\n2\n00:00:03.000 -> 00:00:04,000\nyes\n",
            r"line 6 \(cue 2\): expected a 'HH:MM:SS,mmm --> HH:MM:SS,mmm' line, got '00:00:03.000 -> 00:00:04,000'",
        ),
        (
            ".srt",
            "1\n00:00:01,000 --> 00:00:02,000\nhi\n\nstray words\n",
            r"line 5 \(cue 2\): expected a cue number or a 'HH:MM:SS,mmm --> HH:MM:SS,mmm' line, got 'stray words'",
        ),
        (
            ".srt",
            "1\n00:00:05,000 --> 00:00:04,000\nhi\n",
            r"line 2 \(cue 1\): ends at 4.0 s, not after its start at 5.0 s",
        ),
        (
            ".srt",
            "1\n00:00:01,000 --> 00:00:03,000\nA: hi\n\n2\n00:00:02,000 --> 00:00:04,000\nA: yes\n",
            r"line 6 \(cue 2\): starts at 2.0 s, before an earlier segment ends at 3.0 s",
        ),
        (
            ".srt",
            "1\n00:00:01,000 --> 00:00:03,000\nA: hi\n\n2\n00:00:02,000 --> 00:00:04,000\nyes\n",
            r"line 6 \(cue 2\): starts at 2.0 s, before an earlier segment ends at 3.0 s",
        ),
        (
            ".srt",
            "1\n00:00:05,000 --> 00:00:06,000\nA: hi\n\n2\n00:00:02,000 --> 00:00:04,000\nB: yes\n",
            r"line 6 \(cue 2\): starts at 2.0 s, before the previous one \(5.0 s\); segments must be in time order",
        ),
        (
            ".srt",
            "1\n00:75:00,000 --> 00:76:00,000\nhi\n",
            r"line 2 \(cue 1\): expected a 'HH:MM:SS,mmm --> HH:MM:SS,mmm' line, got '00:75:00,000 --> 00:76:00,000'",
        ),
        (".vtt", "1\n00:01.000 --> 00:02.000\nhi\n", r"line 1: a WebVTT file starts with 'WEBVTT', got \['1'\]"),
        (
            ".vtt",
            "WEBVTT\n\n00:01.000 --> 00:02.000\nhi\n\nid\n00:03.000 --> 00:0x.000\nyes\n",
            r"line 7 \(cue 2\): expected a '\[HH:\]MM:SS.mmm --> \[HH:\]MM:SS.mmm' line",
        ),
        (
            ".vtt",
            "WEBVTT\n\n00:01.000 --> 00:02.000\n<v A>hi</v> <v B>yes</v>\n",
            r"line 3 \(cue 1\): one cue names several speakers \(A, B\); give each its own cue",
        ),
        (".txt", "hello", r"expected an .srt or .vtt file, got '.txt'"),
    ],
)
def test_a_bad_transcript_names_its_file_line_and_cue(tmp_path, suffix, content, message):
    path = tmp_path / f"bad{suffix}"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^transcript '{re.escape(str(path))}'(, |: ){message}"):
        read_transcript(path)


def test_a_transcript_that_is_not_utf8_names_its_line(tmp_path):
    path = tmp_path / "cp949.srt"
    path.write_bytes("1\n00:00:01,000 --> 00:00:02,000\n정말 화가 나요\n".encode("cp949"))
    with pytest.raises(
        ValueError, match=rf"^transcript '{re.escape(str(path))}', line 3: not UTF-8 .*; save it as UTF-8"
    ):
        read_transcript(path)


def test_segment_lists_of_tuples_dicts_and_segments():
    given = [
        (0, 1.5, "안녕하세요"),
        {"start": 2, "end": 3, "text": "네", "speaker": "B"},
        Segment(3, 4.25, "좋아요", "A"),
    ]
    assert segments_from(given) == [
        Segment(0.0, 1.5, "안녕하세요"),
        Segment(2.0, 3.0, "네", "B"),
        Segment(3.0, 4.25, "좋아요", "A"),
    ]
    assert segments_from([(0, 2, "hi", "A"), (1, 3, "yes", "B")])[1].speaker == "B"


@pytest.mark.parametrize(
    ("segments", "message"),
    [
        ([(0, 1, "a"), (1, 2)], r"segments\[1\]: expected \(start, end, text\[, speaker\]\), a dict or a Segment"),
        ([{"start": 0, "end": 1, "txt": "a"}], r"segments\[0\]: .*missing text"),
        ([{"start": 0, "end": 1, "text": "a", "mood": "x"}], r"segments\[0\]: .*unknown mood"),
        ([(0, "1", "a")], r"segments\[0\]: end must be a number of seconds, got '1'"),
        ([(0, 1, "a"), (float("nan"), 2, "b")], r"segments\[1\]: start must be a finite number of seconds >= 0"),
        ([(-1, 1, "a")], r"segments\[0\]: start must be a finite number of seconds >= 0, got -1"),
        ([(0, 1, None)], r"segments\[0\]: text must be a str, got NoneType"),
        ([(0, 1, "a", 7)], r"segments\[0\]: speaker must be a str or None, got int"),
        ([(0, 2, "a"), (1, 3, "b", "B")], r"segments\[1\]: starts at 1.0 s, before an earlier segment ends at 2.0 s"),
        ({"start": 0, "end": 1, "text": "a"}, r"segments must be a transcript path or a list"),
    ],
)
def test_a_bad_segment_list_names_the_item(segments, message):
    with pytest.raises(ValueError, match=message):
        segments_from(segments)


# ---------------------------------------------------------------------------------------------------------------------
# Audio that cannot be read piece by piece


def test_audio_libsndfile_cannot_read_says_to_convert_it(tmp_path):
    path = tmp_path / "call.m4a"
    path.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(64))
    with pytest.raises(
        ValueError, match=rf"'{re.escape(str(path))}' cannot be read as audio \(.*\): convert it to wav or flac"
    ):
        iter_segment_audio(path, [Segment(0, 1, "a")], 16_000)
    with pytest.raises(ValueError, match=r"audio file '.*missing.wav' does not exist"):
        recognized_segments(tmp_path / "missing.wav", voice_activity, 16_000)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a named pipe")
def test_audio_that_cannot_seek_says_to_save_it_to_a_file(recording, tmp_path):
    pipe = tmp_path / "stream.wav"
    os.mkfifo(pipe)
    content = recording.alone[0].read_bytes()

    def feed():
        try:
            with open(pipe, "wb") as writer:
                writer.write(content)
        except BrokenPipeError:
            pass

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        with pytest.raises(
            ValueError, match=r"cannot be read piece by piece: it does not allow seeking .* wav or flac"
        ):
            iter_segment_audio(pipe, [Segment(0, 0.5, "a")], 16_000)
    finally:
        feeder.join(timeout=10)


def test_segments_beyond_the_recording(recording, caplog):
    duration = soundfile.info(recording.alone[0]).duration
    with caplog.at_level(logging.WARNING, logger="timeline_hyfuser"):
        (waveform,) = iter_segment_audio(recording.alone[0], [Segment(0.5, duration + 3, "a")], DEMO_SAMPLING_RATE)
    assert len(waveform) == len(recording.samples[0]) - DEMO_SAMPLING_RATE // 2
    assert "segment 0 (0.5-" in caplog.text and "ends after the recording" in caplog.text
    with pytest.raises(ValueError, match=r"segment 1 \(.*\) starts at or after the recording's end"):
        list(
            iter_segment_audio(
                recording.alone[0], [Segment(0, 0.5, "a"), Segment(duration, duration + 1, "b")], 16_000
            )
        )


def test_hangul_speaker_names_are_drawn_with_a_hangul_font(records, tmp_path):
    from matplotlib.font_manager import fontManager

    from timeline_hyfuser import HANGUL_FONTS

    if not {font.name for font in fontManager.ttflist} & set(HANGUL_FONTS):
        pytest.skip(f"none of {HANGUL_FONTS} is installed")
    korean = [
        {**record, "speaker": {"User001F": "상담사", "User002M": "내담자"}[record["speaker"]]} for record in records
    ]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Glyph .* missing")
        plot_timeline(korean, tmp_path / "korean.png")
