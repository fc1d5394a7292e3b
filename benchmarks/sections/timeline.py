"""Timeline of a long recording: the peak memory and the speed of `pipeline(...)`'s timeline of a
30-minute recording with a transcript (`timeline_peak_mb`, `timeline_seconds_per_audio_hour`), each in a fresh
process, against a 3-minute one: a bounded window of audio means the same peak for both.

The recording is written in one-minute blocks (it never sits in this process's memory either); its transcript has a
2.5 s segment every 3 s (600 segments in 30 minutes), classified `batch_size` at a time. The model is a random
HyFusER over the tiny backbones: what grows with the recording's length is the audio, not the model, and the tiny
backbones let 30 minutes run in about a minute on two cores. The decoded 30 minutes alone would take 115 MB (float32).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from benchmarks.sections.common import (
    SAMPLING_RATE,
    Settings,
    korean_texts,
    log,
    memory_mb,
    reset_peak_rss,
    run_child,
    save_random_hyfuser,
)
from hyfuser.tiny_backbones import BackbonePaths

SEGMENT_SECONDS, SEGMENT_EVERY_SECONDS = 2.5, 3.0
TIMELINE_BATCH_SIZE = 8
RECORDING_MINUTES = {"short": 3, "long": 30}


def write_recording(path: Path, minutes: int) -> list[tuple[float, float, str]]:
    """A 16 kHz PCM recording of noise, written a minute at a time, and its transcript's segments."""
    rng = np.random.default_rng(0)
    with soundfile.SoundFile(path, "w", SAMPLING_RATE, 1, subtype="PCM_16") as file:
        for _ in range(minutes):
            file.write((0.1 * rng.standard_normal(60 * SAMPLING_RATE)).astype(np.float32))
    starts = np.arange(0.0, minutes * 60 - SEGMENT_SECONDS, SEGMENT_EVERY_SECONDS)
    texts = korean_texts(len(starts))
    return [(float(start), float(start) + SEGMENT_SECONDS, text) for start, text in zip(starts, texts)]


def child_timeline(arguments: dict[str, Any]) -> dict[str, Any]:
    """Peak RSS increase of one timeline call over the RSS just before it, the pipeline loaded and warmed."""
    from transformers import pipeline

    classifier = pipeline(model=arguments["model_dir"], trust_remote_code=True, device="cpu")
    warmup = [tuple(segment) for segment in arguments["segments"][:TIMELINE_BATCH_SIZE]]
    classifier({"audio": arguments["audio"], "segments": warmup}, batch_size=TIMELINE_BATCH_SIZE)
    segments = [tuple(segment) for segment in arguments["segments"]]
    baseline = memory_mb("VmRSS")
    reset_peak_rss()
    start = time.perf_counter()
    records = classifier({"audio": arguments["audio"], "segments": segments}, batch_size=TIMELINE_BATCH_SIZE)
    seconds = time.perf_counter() - start
    peak = memory_mb("VmHWM")
    assert len(records) == len(segments) and all(record["label"] for record in records)
    return {"baseline_rss_mb": baseline, "peak_rss_mb": peak, "increase_mb": peak - baseline, "seconds": seconds}


def bench_timeline(settings: Settings, backbones: BackbonePaths, workdir: Path) -> dict[str, Any]:
    model_dir = save_random_hyfuser(backbones, workdir / "timeline_hyfuser")
    results = {}
    for name, minutes in RECORDING_MINUTES.items():
        audio = workdir / f"timeline_{name}.wav"
        segments = write_recording(audio, minutes)
        log(f"timeline: {minutes} min, {len(segments)} segments, batch_size {TIMELINE_BATCH_SIZE}, fresh process")
        arguments = {"model_dir": str(model_dir), "audio": str(audio), "segments": segments}
        results[name] = {"minutes": minutes, "segments": len(segments), **run_child("timeline", arguments)}
        audio.unlink()
        log(
            f"timeline: {minutes} min: peak +{results[name]['increase_mb']:.0f} MB in {results[name]['seconds']:.0f} s"
        )
    long = results["long"]
    return {
        "timeline_peak_mb": long["increase_mb"],
        "timeline_seconds_per_audio_hour": long["seconds"] / (long["minutes"] / 60),
        "backbones": "tiny",
        "batch_size": TIMELINE_BATCH_SIZE,
        "segment_seconds": SEGMENT_SECONDS,
        **results,
    }
