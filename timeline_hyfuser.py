"""Emotion over a whole recording: its segments, each segment's audio read alone, and one record per segment.

Segments come from a transcript (`read_transcript`: SRT or WebVTT), from the caller (`segments_from`), or from a speech
recognizer's timestamps (`recognized_segments`). `iter_segment_audio` reads each segment's frames from the file and
nothing else, so a long recording never sits in memory whole: at most one segment (`MAX_SEGMENT_SECONDS`) or one
recognizer window (`RECOGNIZER_WINDOW_SECONDS`) at a time. `timeline_records` pairs segments with predictions, and
`write_jsonl`, `write_csv` and `plot_timeline` write them out.

Audio is made mono and resampled by the processor's own `downmix` and `resample` (audio_hyfuser.py), as `load_audio`
makes a whole file's, so a segment gives the same waveform as its utterance cut into a file of its own.
"""

from __future__ import annotations

import codecs
import csv
import html
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, Union

import numpy as np
import soundfile

try:
    from .audio_hyfuser import downmix, resample
except ImportError:
    from audio_hyfuser import downmix, resample

logger = logging.getLogger(__name__)

MIN_SEGMENT_SECONDS = 0.25
"""Shorter segments get a `reason` instead of a label. A quarter second is about 12 frames of HuBERT (25 ms receptive
field, 20 ms stride) and one or two syllables of Korean speech (4 to 7 per second): a backchannel ("네") or a click,
with too little prosody for the speech side and too few words for the text side."""
MAX_SEGMENT_SECONDS = 30.0
"""Longer segments get a `reason` instead of a label (split them), so that reading a segment holds at most this much
audio. It is Whisper's window, and about as much speech as the text side's 126 tokens (the paper's) hold."""
RECOGNIZER_WINDOW_SECONDS = 30.0
"""`recognized_segments` gives the recognizer this much audio at a time: Whisper's input window."""
TIMESTAMP_RESOLUTION_SECONDS = 0.02
"""Whisper's timestamp step: a recognized segment ending within one step of its window's end was cut by the window."""
SPEAKER_NAME = re.compile(r"^\s*(?P<name>[^\W\d_][\w.'-]*(?: [\w.'-]+)?)\s*:\s+(?P<text>.*)$")
SPEAKER_NAME_CHARACTERS = 32
"""A cue text that starts with a speaker's name: one or two words of at most `SPEAKER_NAME_CHARACTERS` in all, the
first starting with a letter, then ': ' ("상담사: 네", "Speaker 1: hi"). Longer openings ending in a colon are text."""
HANGUL_FONTS = ("NanumGothic", "Noto Sans CJK KR", "Malgun Gothic", "AppleGothic")
"""Fonts with Hangul, which `plot_timeline` falls back on for speaker names where one is installed (matplotlib's own
font has none)."""
UNLABELLED_COLOUR, UNLABELLED_HEIGHT = "0.75", 0.04
"""How `plot_timeline` draws segments without a label: grey ticks along the bottom of their row."""

AudioFile = Union[str, os.PathLike, IO[bytes]]
"""A recording: a path of a file that libsndfile reads and can seek in (wav, flac, ogg, mp3), or such a file opened in
binary mode."""


@dataclass(frozen=True)
class Segment:
    """A stretch of a recording, in seconds from its start, with what is said in it and, if known, by whom."""

    start: float
    end: float
    text: str
    speaker: str | None = None

    @property
    def seconds(self) -> float:
        return self.end - self.start


# ---------------------------------------------------------------------------------------------------------------------
# Segments


_TIME = r"(?:(\d+):)?([0-5]\d):([0-5]\d)[,.](\d{3})"
_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}(?:\s+.*)?$")
_TAG = re.compile(r"<[^>]*>|\{\\[^}]*\}")
"""Markup inside cue text: WebVTT/SRT tags (<i>, <c.x>, <00:01.000>, <font ...>) and SSA overrides ({\\an8})."""
_VOICE = re.compile(r"<v(?:\.[^\s>]+)*[ \t]+([^>]+)>")


def read_transcript(path: str | os.PathLike) -> list[Segment]:
    """The cues of an SRT (`.srt`) or WebVTT (`.vtt`) file, UTF-8, as segments in seconds.

    A cue's speaker is its WebVTT voice (`<v Name>`) or a leading `Name: ` in its text (`SPEAKER_NAME`); markup is
    removed and a cue's lines are joined with spaces. Cues must come in time order, each ending after it starts and
    after the previous cue ends, except that two different named speakers may overlap (people talk over each other).
    A malformed file raises a ValueError naming the file, the line, the cue and what is wrong.
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in (".srt", ".vtt"):
        raise ValueError(f"transcript {path!r}: expected an .srt or .vtt file, got {suffix or 'no suffix'!r}")
    try:
        with open(path, "rb") as file:
            data = file.read().removeprefix(codecs.BOM_UTF8)
    except OSError as error:
        raise ValueError(f"transcript {path!r} cannot be read: {error.strerror or error}") from error
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ValueError(f"transcript {path!r}, line {line}: not UTF-8 ({error.reason}); save it as UTF-8") from error
    lines = content.splitlines()
    cues = list(_webvtt_cues(path, lines) if suffix == ".vtt" else _srt_cues(path, lines))
    segments = [_cue_segment(path, *cue) for cue in cues]
    _check_timing(segments, [f"transcript {path!r}, line {line} (cue {cue})" for line, cue, _, _ in cues])
    return segments


def segments_from(value: Any) -> list[Segment]:
    """Segments from a transcript path (`read_transcript`), or a list of `(start, end, text)` or
    `(start, end, text, speaker)` tuples, `{"start", "end", "text"[, "speaker"]}` dicts or `Segment`s, in seconds and
    in time order (as `read_transcript` checks them). A bad item raises a ValueError naming it (`segments[3]: ...`)."""
    if isinstance(value, (str, os.PathLike)):
        return read_transcript(value)
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        raise ValueError(
            f"segments must be a transcript path or a list of (start, end, text[, speaker]) items, got "
            f"{type(value).__name__}"
        )
    segments = [_segment(item, f"segments[{index}]") for index, item in enumerate(value)]
    _check_timing(segments, [f"segments[{index}]" for index in range(len(segments))])
    return segments


def skip_reason(segment: Segment) -> str | None:
    """Why `segment` gets no label (too short, too long, no words), or None if it is classified."""
    if segment.seconds < MIN_SEGMENT_SECONDS:
        return f"shorter than {MIN_SEGMENT_SECONDS} s (MIN_SEGMENT_SECONDS)"
    if segment.seconds > MAX_SEGMENT_SECONDS:
        return f"longer than {MAX_SEGMENT_SECONDS} s (MAX_SEGMENT_SECONDS): split it"
    if not segment.text.strip():
        return "no text"
    return None


def _srt_cues(path: str, lines: list[str]) -> Iterator[tuple[int, int, re.Match, list[str]]]:
    """(timing line number, cue number, timing match, text lines) of each SRT cue."""
    for number, (first, block) in enumerate(_blocks(lines), start=1):
        timing_line = 1 if block[0].strip().isdigit() and len(block) > 1 else 0
        match = _TIMING.match(block[timing_line])
        if match is None:
            what = "a cue number or " if timing_line == 0 else ""
            raise ValueError(
                f"transcript {path!r}, line {first + timing_line} (cue {number}): expected {what}a "
                f"'HH:MM:SS,mmm --> HH:MM:SS,mmm' line, got {block[timing_line]!r}"
            )
        yield first + timing_line, number, match, block[timing_line + 1 :]


def _webvtt_cues(path: str, lines: list[str]) -> Iterator[tuple[int, int, re.Match, list[str]]]:
    """(timing line number, cue number, timing match, text lines) of each WebVTT cue; NOTE, STYLE and REGION
    blocks and the header are skipped."""
    if not lines or not re.match(r"WEBVTT(?:[ \t]|$)", lines[0]):
        raise ValueError(f"transcript {path!r}, line 1: a WebVTT file starts with 'WEBVTT', got {lines[:1]!r}")
    number = 0
    for first, block in _blocks(lines):
        if first == 1 or re.match(r"(?:NOTE|STYLE|REGION)(?:[ \t]|$)", block[0]):
            continue
        number += 1
        timing_line = 0 if "-->" in block[0] or len(block) == 1 else 1  # an optional cue identifier comes first
        match = _TIMING.match(block[timing_line])
        if match is None:
            raise ValueError(
                f"transcript {path!r}, line {first + timing_line} (cue {number}): expected a "
                f"'[HH:]MM:SS.mmm --> [HH:]MM:SS.mmm' line, got {block[timing_line]!r}"
            )
        yield first + timing_line, number, match, block[timing_line + 1 :]


def _blocks(lines: list[str]) -> Iterator[tuple[int, list[str]]]:
    """(1-based number of its first line, lines) of each run of non-blank lines."""
    block: list[str] = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            block.append(line)
        elif block:
            yield number - len(block), block
            block = []
    if block:
        yield len(lines) + 1 - len(block), block


def _cue_segment(path: str, line: int, cue: int, timing: re.Match, text_lines: list[str]) -> Segment:
    start, end = (_seconds(*timing.groups()[offset : offset + 4]) for offset in (0, 4))
    voices = {voice.strip() for text_line in text_lines for voice in _VOICE.findall(text_line)}
    if len(voices) > 1:
        raise ValueError(
            f"transcript {path!r}, line {line} (cue {cue}): one cue names several speakers ({', '.join(sorted(voices))})"
            "; give each its own cue"
        )
    text = html.unescape(" ".join(_TAG.sub("", text_line) for text_line in text_lines)).strip()
    speaker = voices.pop() if voices else None
    if speaker is None:
        named = SPEAKER_NAME.match(text)
        if named is not None and len(named["name"]) <= SPEAKER_NAME_CHARACTERS:
            speaker, text = named["name"], named["text"].strip()
    return Segment(start, end, text, speaker)


def _seconds(hours: str | None, minutes: str, seconds: str, milliseconds: str) -> float:
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(milliseconds) / 1000


def _segment(item: Any, what: str) -> Segment:
    """One caller-given segment, checked."""
    if isinstance(item, Segment):
        fields = (item.start, item.end, item.text, item.speaker)
    elif isinstance(item, Mapping):
        unknown = set(item) - {"start", "end", "text", "speaker"}
        missing = {"start", "end", "text"} - set(item)
        if unknown or missing:
            raise ValueError(
                f"{what}: a segment dict has the keys start, end, text and optionally speaker; "
                f"{'missing ' + ', '.join(sorted(missing)) if missing else 'unknown ' + ', '.join(sorted(unknown))}"
            )
        fields = (item["start"], item["end"], item["text"], item.get("speaker"))
    elif isinstance(item, Sequence) and not isinstance(item, str) and len(item) in (3, 4):
        fields = (*item, None)[:4]
    else:
        raise ValueError(f"{what}: expected (start, end, text[, speaker]), a dict or a Segment, got {item!r}")
    start, end, text, speaker = fields
    for name, time in (("start", start), ("end", end)):
        if isinstance(time, (bool, np.bool_)) or not isinstance(time, (int, float, np.integer, np.floating)):
            raise ValueError(f"{what}: {name} must be a number of seconds, got {time!r}")
        if not math.isfinite(time) or time < 0:
            raise ValueError(f"{what}: {name} must be a finite number of seconds >= 0, got {time!r}")
    if not isinstance(text, str):
        raise ValueError(f"{what}: text must be a str, got {type(text).__name__}")
    if speaker is not None and not isinstance(speaker, str):
        raise ValueError(f"{what}: speaker must be a str or None, got {type(speaker).__name__}")
    return Segment(float(start), float(end), text, speaker)


def _check_timing(segments: list[Segment], names: list[str]) -> None:
    """Each segment ends after it starts, starts no earlier than the one before, and does not overlap an earlier one
    unless both name different speakers."""
    ends: dict[str | None, float] = {}  # the latest end of each speaker's segments so far (None: unnamed ones)
    for index, segment in enumerate(segments):
        if segment.end <= segment.start:
            raise ValueError(f"{names[index]}: ends at {segment.end} s, not after its start at {segment.start} s")
        if index and segment.start < segments[index - 1].start:
            raise ValueError(
                f"{names[index]}: starts at {segment.start} s, before the previous one ({segments[index - 1].start} s);"
                " segments must be in time order"
            )
        blocking = ends.values() if segment.speaker is None else (ends.get(segment.speaker, 0.0), ends.get(None, 0.0))
        latest = max(blocking, default=0.0)
        if segment.start < latest:
            raise ValueError(
                f"{names[index]}: starts at {segment.start} s, before an earlier segment ends at {latest} s; only "
                "segments of two different named speakers may overlap"
            )
        ends[segment.speaker] = max(ends.get(segment.speaker, 0.0), segment.end)


# ---------------------------------------------------------------------------------------------------------------------
# Audio


def iter_segment_audio(audio_file: AudioFile, segments: Iterable[Segment], sampling_rate: int) -> Iterator[np.ndarray]:
    """Each segment's audio as a float32 mono waveform at `sampling_rate`, read from the file alone (seek, then read
    its frames): what the processor's `load_audio` gives for the segment cut into a file of its own.

    The file is opened (and a file that cannot be read is an error) here; segments are read one at a time as the
    result is iterated, so memory holds one segment: pass only those `skip_reason` accepts (at most
    `MAX_SEGMENT_SECONDS` each). A segment's first frame is its start times the file's rate, rounded, and likewise its
    end; an end past the recording's end is cut there (with a warning), a start at or past it is an error.
    """
    file, what = _open_audio(audio_file)
    return _segment_waveforms(file, what, segments, sampling_rate)


def _segment_waveforms(
    file: soundfile.SoundFile, what: str, segments: Iterable[Segment], sampling_rate: int
) -> Iterator[np.ndarray]:
    with file:
        for index, segment in enumerate(segments):
            start, stop = (round(time * file.samplerate) for time in (segment.start, segment.end))
            if start >= file.frames:
                raise ValueError(
                    f"{what}: segment {index} ({segment.start}-{segment.end} s) starts at or after the recording's "
                    f"end ({file.frames / file.samplerate} s)"
                )
            if stop > file.frames:
                logger.warning(
                    f"{what}: segment {index} ({segment.start}-{segment.end} s) ends after the recording "
                    f"({file.frames / file.samplerate} s); it is cut there"
                )
            yield _read_frames(file, start, min(stop, file.frames), sampling_rate, f"{what}, segment {index}")


def recognized_segments(
    audio_file: AudioFile,
    recognize: Callable[[np.ndarray], list[Mapping[str, Any]]],
    sampling_rate: int,
    window_seconds: float = RECOGNIZER_WINDOW_SECONDS,
) -> list[Segment]:
    """The segments a speech recognizer hears in a whole recording, read `window_seconds` at a time, in seconds from
    the recording's start (to the millisecond).

    `recognize` takes a float32 mono waveform at `sampling_rate` (at most `window_seconds` long) and returns its
    timestamped chunks in the format of transformers' speech-recognition pipeline with `return_timestamps=True`:
    `[{"timestamp": (start, end), "text": str}, ...]`, seconds from the waveform's start, `end` None where the
    recognizer heard no end. As in Whisper's own long-form decoding, a chunk that runs into the end of a window (no
    end, or an end within `TIMESTAMP_RESOLUTION_SECONDS` of it) is dropped and the next window starts where it
    starts, so no segment is cut by a window; one that fills a whole window is kept as it is. Chunks are clipped to
    their window and to after the previous chunk; chunks without words are dropped.
    """
    segments = []
    file, what = _open_audio(audio_file)
    with file:
        window = max(1, round(window_seconds * file.samplerate))
        offset = 0
        while offset < file.frames:
            stop = min(offset + window, file.frames)
            waveform = _read_frames(file, offset, stop, sampling_rate, f"{what}, {offset / file.samplerate} s on")
            duration, last = (stop - offset) / file.samplerate, stop == file.frames
            previous_end, resume = 0.0, None
            for chunk in recognize(waveform):
                start, end = chunk["timestamp"]
                start = previous_end if start is None else max(float(start), previous_end)
                if not last and (end is None or end >= duration - TIMESTAMP_RESOLUTION_SECONDS):
                    resume = min(start, duration)
                    if resume > 0:
                        break
                end = duration if end is None else min(float(end), duration)
                if end <= start:
                    continue
                previous_end = end
                if chunk["text"].strip():
                    times = (round(offset / file.samplerate + time, 3) for time in (start, end))
                    segments.append(Segment(*times, chunk["text"].strip()))
            advance = round(resume * file.samplerate) if resume else stop - offset
            offset += max(1, min(advance, stop - offset))
    return segments


def _open_audio(audio_file: AudioFile) -> tuple[soundfile.SoundFile, str]:
    """An open, seekable `soundfile.SoundFile` of `audio_file`, and how errors name it. A file libsndfile cannot read,
    or cannot seek in, is a ValueError that says to convert it."""
    name = os.fspath(audio_file) if isinstance(audio_file, (str, os.PathLike)) else getattr(audio_file, "name", None)
    what = f"audio file {name!r}" if name is not None else f"audio file object {type(audio_file).__name__}"
    if isinstance(audio_file, (str, os.PathLike)) and not os.path.exists(audio_file):
        raise ValueError(f"{what} does not exist")
    try:
        file = soundfile.SoundFile(audio_file)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        reason = getattr(error, "error_string", error)
        raise ValueError(
            f"{what} cannot be read as audio ({reason}): convert it to wav or flac, e.g. "
            "`ffmpeg -i recording.m4a recording.flac`"
        ) from error
    if not file.seekable():
        file.close()
        raise ValueError(
            f"{what} cannot be read piece by piece: it does not allow seeking (a pipe or a stream). Save it to a wav "
            "or flac file first, e.g. `ffmpeg -i - recording.flac`"
        )
    return file, what


def _read_frames(file: soundfile.SoundFile, start: int, stop: int, sampling_rate: int, what: str) -> np.ndarray:
    """Frames [start, stop) of `file`, mono float32 at `sampling_rate`, made as the processor's `load_audio` makes a
    whole file's."""
    file.seek(start)
    frames = file.read(stop - start, dtype="float32", always_2d=True)
    return resample(downmix(frames), file.samplerate, sampling_rate, what)


# ---------------------------------------------------------------------------------------------------------------------
# Records and their files


def timeline_records(
    segments: Sequence[Segment], predictions: Sequence[Sequence[Mapping[str, Any]]]
) -> list[dict[str, Any]]:
    """One record per segment: `{"start", "end", "text", "label", "score", "scores"}` (times in seconds, `scores` by
    label in label order), with `"speaker"` when any segment names one, and `"reason"` (label, score and scores None)
    where `skip_reason` refuses a segment.

    `predictions` holds the pipeline's outputs (lists of `{"label", "score"}`) for the segments `skip_reason` accepts,
    in order.
    """
    classified = [index for index, segment in enumerate(segments) if skip_reason(segment) is None]
    if len(predictions) != len(classified):
        raise ValueError(
            f"got {len(predictions)} predictions for the {len(classified)} segments that skip_reason accepts (of "
            f"{len(segments)}): give one per accepted segment, in order"
        )
    prediction_of = dict(zip(classified, predictions))
    named = any(segment.speaker is not None for segment in segments)
    records = []
    for index, segment in enumerate(segments):
        record: dict[str, Any] = {"start": segment.start, "end": segment.end}
        if named:
            record["speaker"] = segment.speaker
        record.update(text=segment.text, label=None, score=None, scores=None)
        if index in prediction_of:
            scores = {emotion["label"]: float(emotion["score"]) for emotion in prediction_of[index]}
            record["label"] = max(scores, key=scores.get)
            record.update(score=scores[record["label"]], scores=dict(sorted(scores.items())))
        else:
            record["reason"] = skip_reason(segment)
        records.append(record)
    return records


def write_jsonl(records: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """One JSON object per line, UTF-8 (Hangul as is)."""
    with open(path, "w", encoding="utf-8") as file:
        for record in records:
            file.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_csv(records: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """A table of the records: start, end, [speaker,] text, label, score, reason, then a `score_<label>` column per
    label. UTF-8 with a byte-order mark, which spreadsheet programs need to show Hangul."""
    labels = sorted({label for record in records for label in record.get("scores") or {}})
    columns = [name for name in ("start", "end", "speaker", "text", "label", "score", "reason") if _has(records, name)]
    with open(path, "w", newline="", encoding="utf-8-sig") as file:
        writer = csv.writer(file)
        writer.writerow(columns + [f"score_{label}" for label in labels])
        for record in records:
            scores = record.get("scores") or {}
            writer.writerow(
                ["" if record.get(name) is None else record[name] for name in columns]
                + [scores.get(label, "") for label in labels]
            )


def _has(records: Sequence[Mapping[str, Any]], name: str) -> bool:
    return name not in ("speaker", "reason") or any(name in record for record in records)


def plot_timeline(records: Sequence[Mapping[str, Any]], path: str | os.PathLike | IO[bytes]) -> None:
    """A PNG of the timeline, written to `path` (a file, or a binary file object such as `io.BytesIO`): each segment a
    bar over its time, coloured by its emotion, as high as its score; one row per speaker when records name speakers;
    unlabelled segments as grey ticks along the bottom. Each emotion of the model keeps its colour from one plot to the
    next."""
    from matplotlib.figure import Figure  # no pyplot: no global state, safe in a web server's threads
    from matplotlib.font_manager import fontManager
    from matplotlib.patches import Patch

    speakers = list(dict.fromkeys(record.get("speaker") for record in records)) or [None]
    labels = sorted(
        {label for record in records for label in record.get("scores") or {}}
    )  # the model's: fixed colours
    installed = {font.name for font in fontManager.ttflist}
    fonts = ["DejaVu Sans", *(font for font in HANGUL_FONTS if font in installed)]
    colours = {label: f"C{index % 10}" for index, label in enumerate(labels)}
    figure = Figure(figsize=(12, 0.6 + 1.6 * len(speakers)), layout="constrained")
    rows = figure.subplots(len(speakers), 1, sharex=True, squeeze=False)[:, 0]
    for axes, speaker in zip(rows, speakers):
        own = [record for record in records if record.get("speaker") == speaker]
        for label in [*labels, None]:  # one bar call per emotion, unlabelled segments last
            bars = [record for record in own if record.get("label") == label]
            if bars:
                axes.bar(
                    [record["start"] for record in bars],
                    [UNLABELLED_HEIGHT if label is None else record["score"] for record in bars],
                    [record["end"] - record["start"] for record in bars],
                    align="edge",
                    color=colours.get(label, UNLABELLED_COLOUR),
                )
        axes.set_ylim(0, 1)
        axes.set_ylabel("score" if speaker is None else f"{speaker}\nscore", fontfamily=fonts)
    rows[-1].set_xlabel("time (s)")
    handles = [Patch(color=colours[label], label=label) for label in labels]
    if any(record.get("label") is None for record in records):
        handles.append(Patch(color=UNLABELLED_COLOUR, label="no label"))
    if handles:
        rows[0].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    figure.savefig(path, format="png", dpi=100)
