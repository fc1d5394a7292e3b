"""Feature extraction and its cache: peak memory over many utterances (`extraction_rss_ratio`) and over one long clip
(`long_audio_peak_mb`), each in a fresh process; 2 single-thread processes against 1 (`extraction_shard_speedup`);
and checking a cached split before reuse against reading it once (`cache_check_over_read`)."""

from __future__ import annotations

import socket
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from datasets import Array2D, Dataset, DatasetDict, Features, Value
from datasets.arrow_writer import ArrowWriter

import hyfuser.cache
from benchmarks.sections.common import (
    SENTENCES,
    Settings,
    korean_texts,
    log,
    memory_mb,
    reset_peak_rss,
    run_child,
    side_by_side,
    timed,
    write_utterances,
)
from configuration_hyfuser import HyFusERConfig
from hyfuser.tiny_backbones import BackbonePaths
from processing_hyfuser import HyFusERProcessor


def extraction_split(audio_dir: str, count: int) -> Dataset:
    """`count` (Korean text, wav path) rows shaped like a corpus split, from the wav files in `audio_dir`."""
    paths = sorted(str(path) for path in Path(audio_dir).glob("*.wav"))[:count]
    return Dataset.from_dict(
        {
            "id": [Path(path).stem for path in paths],
            "text": korean_texts(count),
            "audio": paths,
            "label": [index % 7 for index in range(count)],
        }
    )


def child_extraction(arguments: dict[str, Any]) -> dict[str, Any]:
    """Stream `count` utterances through `hyfuser.cache.cache_features` into a fresh on-disk cache.

    One batch is extracted first (loading the backbones and warming the allocator and kernels), then the peak RSS is
    reset, so the reported peak is that of the measured extraction, with the loaded models resident.
    """
    count, batch_size = arguments["count"], arguments["batch_size"]
    split = extraction_split(arguments["audio_dir"], count)
    processor = HyFusERProcessor.from_backbones(arguments["text"], arguments["speech"])
    cache = partial(hyfuser.cache.cache_features, processor=processor, cache_dir=arguments["cache_dir"],
                    batch_size=batch_size)  # fmt: skip
    cache(DatasetDict({"warmup": split.select(range(batch_size))}))
    baseline = memory_mb("VmRSS")
    reset_peak_rss()
    seconds = timed(lambda: cache(DatasetDict({"train": split})))
    peak = memory_mb("VmHWM")
    cache_files = list((Path(arguments["cache_dir"]) / "features").glob("train-*.arrow"))
    return {
        "count": count,
        "baseline_rss_mb": baseline,
        "peak_rss_mb": peak,
        "increase_mb": peak - baseline,
        "seconds": seconds,
        "utterances_per_second": count / seconds,
        "cache_bytes": sum(path.stat().st_size for path in cache_files),
    }


def bench_extraction(settings: Settings, backbones: BackbonePaths, workdir: Path) -> dict[str, Any]:
    """Peak RSS of extracting and caching the larger count of utterances over that of the smaller count."""
    small, large = settings.extraction_counts
    audio_dir = workdir / "extraction_audio"
    write_utterances(audio_dir, large, settings.extraction_audio_seconds)
    runs = {}
    for count in (small, large):
        log(f"extraction: {count} utterances of {settings.extraction_audio_seconds:g} s in a fresh process")
        runs[count] = run_child(
            "extraction",
            {
                "count": count,
                "batch_size": settings.extraction_batch_size,
                "audio_dir": str(audio_dir),
                "text": backbones.text,
                "speech": backbones.speech,
                "cache_dir": str(workdir / f"extraction_cache_{count}"),
            },
        )
        run = runs[count]
        log(f"extraction: {count} utterances peak {run['peak_rss_mb']:.0f} MB in {run['seconds']:.0f}s")
    return {
        "extraction_rss_ratio": runs[large]["peak_rss_mb"] / runs[small]["peak_rss_mb"],
        "increase_ratio": runs[large]["increase_mb"] / max(runs[small]["increase_mb"], 1.0),
        "cache_bytes_per_utterance": runs[large]["cache_bytes"] / large,
        "backbones": settings.extraction_backbones,
        "audio_seconds": settings.extraction_audio_seconds,
        "runs": {str(count): run for count, run in runs.items()},
    }


def child_long_audio(arguments: dict[str, Any]) -> dict[str, Any]:
    """Peak RSS increase of `processor(..., scale=False)` on each clip over the RSS just before it, the backbones
    loaded."""
    processor = HyFusERProcessor.from_backbones(arguments["text"], arguments["speech"])
    processor(SENTENCES[0], arguments["warmup"], scale=False)
    results = {}
    for name in ("window", "long"):
        baseline = memory_mb("VmRSS")
        reset_peak_rss()
        seconds = timed(lambda: processor(SENTENCES[0], arguments[name], scale=False))
        peak = memory_mb("VmHWM")
        results[name] = {
            "baseline_rss_mb": baseline,
            "peak_rss_mb": peak,
            "increase_mb": peak - baseline,
            "seconds": seconds,
        }
    return results


def bench_long_audio(settings: Settings, backbones: BackbonePaths, workdir: Path) -> dict[str, Any]:
    """One 10-minute clip, after a clip as long as one HuBERT window (the longest that runs in a single pass)."""
    window_seconds = HyFusERProcessor.from_backbones(backbones.text, backbones.speech).speech_window_seconds
    clips = {
        name: write_utterances(workdir / f"clip_{name}", 1, seconds)[0]
        for name, seconds in (("warmup", 1.0), ("window", window_seconds), ("long", settings.long_audio_seconds))
    }
    log(f"long audio: {settings.long_audio_seconds:g} s clip with the {settings.long_audio_backbones} HuBERT")
    result = run_child("long-audio", {"text": backbones.text, "speech": backbones.speech, **clips})
    increases = {name: result[name]["increase_mb"] for name in ("long", "window")}
    log(f"long audio: peak +{increases['long']:.0f} MB (a window-length clip: +{increases['window']:.0f} MB)")
    return {
        "long_audio_peak_mb": result["long"]["increase_mb"],
        "long_audio_peak_rss_mb": result["long"]["peak_rss_mb"],
        "backbones": settings.long_audio_backbones,
        "clip_seconds": settings.long_audio_seconds,
        "window_seconds": window_seconds,
        **result,
    }


def child_shard_extraction(arguments: dict[str, Any]) -> dict[str, Any] | None:
    """`cache_features` on one split in each process of this run (1 when started plain, N under `accelerate launch`),
    timed from a common start, after the backbones are loaded, to the end of the last process's shard."""
    torch.set_num_threads(1)
    state = PartialState(cpu=True)
    split = extraction_split(arguments["audio_dir"], arguments["count"])
    processor = HyFusERProcessor.from_backbones(arguments["text"], arguments["speech"])
    processor(split["text"][:1], split["audio"][:1], scale=False)  # loads the backbones, warms the kernels
    state.wait_for_everyone()
    start = time.perf_counter()
    hyfuser.cache.cache_features(
        DatasetDict({"train": split}), processor, arguments["cache_dir"], batch_size=arguments["batch_size"]
    )  # ends when every process has written its shard
    seconds = time.perf_counter() - start
    if not state.is_main_process:
        return None
    return {"processes": state.num_processes, "seconds": seconds, "threads_per_process": torch.get_num_threads()}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def bench_shard(settings: Settings, backbones: BackbonePaths, workdir: Path) -> dict[str, Any]:
    """Wall time of extracting the same utterances with 2 processes of one thread over 1 process of one thread."""
    count = settings.shard_utterances
    audio_dir = workdir / "shard_audio"
    write_utterances(audio_dir, count, settings.extraction_audio_seconds)
    arguments = {"count": count, "batch_size": settings.extraction_batch_size, "audio_dir": str(audio_dir),
                 "text": backbones.text, "speech": backbones.speech}  # fmt: skip
    runs: dict[str, list[dict[str, Any]]] = {"1": [], "2": []}
    for repeat in range(settings.shard_repeats):
        for processes in ("1", "2") if repeat % 2 == 0 else ("2", "1"):
            launcher = [] if processes == "1" else [
                sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", processes,
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", str(free_port()),
            ]  # fmt: skip
            cache_dir = workdir / f"shard_cache_{processes}_{repeat}"
            run = run_child("shard", {**arguments, "cache_dir": str(cache_dir)}, launcher, threads=1)
            runs[processes].append(run)
            log(f"shard: {count} utterances, {processes} process(es) of 1 thread: {run['seconds']:.1f}s")
    ratios = [two["seconds"] / one["seconds"] for one, two in zip(runs["1"], runs["2"])]
    return {
        "extraction_shard_speedup": statistics.median(ratios),
        "per_repeat_ratios": ratios,
        "utterances": count,
        "audio_seconds": settings.extraction_audio_seconds,
        "backbones": "real",
        "runs": runs,
    }


def bench_cache_check(settings: Settings, workdir: Path) -> dict[str, Any]:
    """`hyfuser.cache.cache_file_problem` (size, SHA-256 and rows against the checksum file) on one cache file of
    `cache_check_utterances` random utterances stored as the cache stores them, over one streaming read of it as
    `fit_scaler_on_cache` reads it, side by side (the file in the page cache for both, as on a re-run)."""
    config = HyFusERConfig()
    shape = (config.sequence_length, config.hidden_size)
    schema = Features({"label": Value("int64"), **{column: Array2D(shape, hyfuser.cache.FEATURE_DTYPE)
                                                  for column in hyfuser.cache.FEATURE_COLUMNS}})  # fmt: skip
    count, batch_size = settings.cache_check_utterances, settings.extraction_batch_size
    path = workdir / "cache_check" / "train-key-00000-of-00001.arrow"
    path.parent.mkdir(parents=True)
    log(f"cache_check: writing {count} utterances of {shape} x 2 {hyfuser.cache.FEATURE_DTYPE}")
    rng = np.random.default_rng(0)
    with ArrowWriter(features=schema, path=str(path), writer_batch_size=batch_size) as writer:
        for start in range(0, count, batch_size):
            rows = min(batch_size, count - start)
            writer.write_batch({"label": [0] * rows, **{
                column: rng.standard_normal((rows, *shape), dtype=np.float32).astype(hyfuser.cache.FEATURE_DTYPE)
                for column in hyfuser.cache.FEATURE_COLUMNS}})  # fmt: skip
        writer.finalize()
    write_seconds = timed(lambda: hyfuser.cache.write_checksum(path, count))

    def read_once() -> None:
        split = Dataset.from_file(str(path)).with_format("numpy", columns=list(hyfuser.cache.FEATURE_COLUMNS))
        for _ in split.iter(batch_size=256):
            pass

    def check() -> None:
        if problem := hyfuser.cache.cache_file_problem(path):
            raise RuntimeError(f"{path}: {problem}")

    seconds = side_by_side({"check": check, "read": read_once}, settings.repeats, settings.warmup, "cache_check")
    ratios = [checked / read for checked, read in zip(seconds["check"], seconds["read"])]
    megabytes = path.stat().st_size / 2**20
    return {
        "cache_check_over_read": statistics.median(ratios),
        "utterances": count,
        "file_megabytes": megabytes,
        "seconds": seconds,
        "check_megabytes_per_second": megabytes / statistics.median(seconds["check"]),
        "checksum_write_seconds": write_seconds,
    }
