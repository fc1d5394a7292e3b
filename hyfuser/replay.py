"""KEMDy20 session replay: a session's utterances laid out again as one dialogue recording, its timeline predicted
through the pipeline, and the prediction compared with the annotation utterance by utterance, for both speakers.

KEMDy20 ships each utterance as a file of its own, with its `Wav` start and end in the annotation
(`hyfuser.corpora.kemdy20_annotated_times`). `build_session_recording` places each kept utterance (`load_kemdy20`'s
rows) at its annotated start: scripts one after another, `SCRIPT_GAP_SECONDS` apart, each keeping its own utterances'
spacing; where an utterance would start before the same speaker's previous one ends it starts at that end, and the
two speakers' overlapping utterances are mixed. The recording is written as 32-bit float, so a segment reads back
exactly its utterance's samples and its prediction is the utterance's alone.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from audio_hyfuser import load_audio
from hyfuser.corpora import kemdy20_annotated_times, load_kemdy20
from timeline_hyfuser import Segment, plot_timeline, write_csv, write_jsonl

logger = logging.getLogger(__name__)

SCRIPT_GAP_SECONDS = 1.0
"""Silence between two scripts of a session in the replayed recording."""
COMPARISON_COLUMNS = ("id", "speaker", "start", "end", "annotated", "predicted", "score", "match", "reason")


def build_session_recording(
    root: str | os.PathLike, session: str, path: str | os.PathLike, sampling_rate: int
) -> tuple[list[Segment], list[dict[str, Any]]]:
    """Write session `session` ("Sess01") of the KEMDy20 root `root` to `path` as one recording at `sampling_rate`;
    return its segments (time order, with text and speaker) and the annotated row of each (id, speaker, label)."""
    dataset = load_kemdy20(root)
    names = dataset.features["label"].names
    rows = [row for row in dataset if row["session"] == session]
    if not rows:
        sessions = sorted(set(dataset["session"]))
        raise ValueError(f"KEMDy20 root {os.fspath(root)!r} has no kept utterances of {session!r}; it has {sessions}")
    times = kemdy20_annotated_times(root)
    scripts: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        start, _ = times[row["id"]]
        if start is None:
            raise ValueError(f"KEMDy20 annotation of {row['id']!r}: no Wav start time, which a replay places it by")
        scripts[row["id"].split("_")[1]].append({**row, "annotated_start": start})
    placed, clock = [], 0.0
    for script in sorted(scripts):
        items = sorted(scripts[script], key=lambda item: item["annotated_start"])
        origin, speaker_end, script_end = items[0]["annotated_start"], {}, clock
        for item in items:
            waveform = load_audio(item["audio"], sampling_rate)
            start_sample = round((clock + item["annotated_start"] - origin) * sampling_rate)
            start_sample = max(start_sample, speaker_end.get(item["speaker"], 0))
            speaker_end[item["speaker"]] = start_sample + len(waveform)
            placed.append((start_sample, waveform, item))
            script_end = max(script_end, (start_sample + len(waveform)) / sampling_rate)
        clock = script_end + SCRIPT_GAP_SECONDS
    placed.sort(key=lambda entry: entry[0])
    recording = np.zeros(max(start + len(waveform) for start, waveform, _ in placed), dtype=np.float32)
    segments, annotated = [], []
    for start, waveform, item in placed:
        recording[start : start + len(waveform)] += waveform
        # Times to the sample (1/16000 s): reading a segment back takes exactly these samples.
        times = (start / sampling_rate, (start + len(waveform)) / sampling_rate)
        segments.append(Segment(*times, item["text"], item["speaker"]))
        annotated.append({"id": item["id"], "speaker": item["speaker"], "label": names[item["label"]]})
    soundfile.write(path, recording, sampling_rate, subtype="FLOAT")
    return segments, annotated


def compare(records: Sequence[Mapping[str, Any]], annotated: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per utterance: its annotated and predicted emotion and whether they agree (a segment without a label,
    `reason` given, counts as a miss)."""
    return [
        {
            "id": row["id"],
            "speaker": row["speaker"],
            "start": record["start"],
            "end": record["end"],
            "annotated": row["label"],
            "predicted": record["label"],
            "score": record["score"],
            "match": record["label"] == row["label"],
            "reason": record.get("reason"),
        }
        for record, row in zip(records, annotated, strict=True)
    ]


def accuracy_by_speaker(comparison: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float | int]]:
    """Per speaker (and `all`): utterances, matches and their ratio."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for row in comparison:
        groups[row["speaker"]].append(row["match"])
        groups["all"].append(row["match"])
    return {
        speaker: {"utterances": len(matches), "matches": sum(matches), "accuracy": sum(matches) / len(matches)}
        for speaker, matches in sorted(groups.items(), key=lambda item: (item[0] == "all", item[0]))
    }


def write_comparison_csv(comparison: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
    with open(path, "w", newline="", encoding="utf-8-sig") as file:
        writer = csv.DictWriter(file, COMPARISON_COLUMNS)
        writer.writeheader()
        writer.writerows({**row, "reason": row["reason"] or ""} for row in comparison)


def write_timeline(records: Sequence[Mapping[str, Any]], output_dir: str | os.PathLike, stem: str) -> list[Path]:
    """`<stem>.timeline.jsonl`, `.csv` and `.png` under `output_dir`; their paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = [output_dir / f"{stem}.timeline.{suffix}" for suffix in ("jsonl", "csv", "png")]
    for write, path in zip((write_jsonl, write_csv, plot_timeline), paths):
        write(records, path)
    return paths


def replay_session(
    classifier, root: str | os.PathLike, session: str, output_dir: str | os.PathLike, batch_size: int = 8
) -> dict[str, dict[str, float | int]]:
    """Replay `session` through `classifier` (the HyFusER pipeline): writes `<session>.wav`, its timeline files and
    `<session>.comparison.csv` under `output_dir`, and returns `accuracy_by_speaker`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    recording = output_dir / f"{session}.wav"
    segments, annotated = build_session_recording(root, session, recording, classifier.processor.sampling_rate)
    # Tuples: the pipeline's remote code has its own copy of timeline_hyfuser, whose Segment is another class.
    given = [(segment.start, segment.end, segment.text, segment.speaker) for segment in segments]
    records = classifier({"audio": str(recording), "segments": given}, batch_size=batch_size)
    write_timeline(records, output_dir, session)
    comparison = compare(records, annotated)
    write_comparison_csv(comparison, output_dir / f"{session}.comparison.csv")
    return accuracy_by_speaker(comparison)
