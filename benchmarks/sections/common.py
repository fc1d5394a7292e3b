"""What every section shares: its settings, progress, timing side by side, peak memory, child processes, and its
inputs (random-weight backbones in HF layout, synthetic utterances, cached features)."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch
from datasets import Array2D, Dataset, Features, Value
from datasets.arrow_writer import ArrowWriter

import hyfuser.cache
from configuration_hyfuser import HyFusERConfig
from hyfuser.checkpoint import save_hyfuser
from hyfuser.tiny_backbones import BackbonePaths, build_tiny_backbones
from modeling_hyfuser import HyFusERForEmotionRecognition
from processing_hyfuser import HyFusERProcessor
from scaling_hyfuser import FeatureStatistics

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH_SCRIPT = REPO_ROOT / "benchmarks" / "bench.py"
"""The command; a child process runs `bench.py --child KIND`."""
SAMPLING_RATE = 16_000
REAL_HIDDEN_SIZE = 768
KOELECTRA_BASE_V3_SIZES = {
    "vocab_size": 35_000,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
}
"""ELECTRA-base with KoELECTRA-base-v3's vocabulary (its hidden size and 512 positions are builder arguments)."""
HUBERT_BASE_SIZES = {
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "conv_dim": (512,) * 7,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
}
"""HuBERT-base: with the hidden size, every size the tiny builder sets, at `HubertConfig()`'s defaults."""
RESULT_PREFIX = "BENCH_RESULT "
"""Marks the line on which a child process prints its JSON result (its other output is progress)."""

SENTENCES = (
    "정말 너무 화가 나서 참을 수가 없어요",
    "오늘 날씨가 좋아서 기분이 좋네요",
    "그 소식을 듣고 깜짝 놀랐어",
    "혼자 집에 있으니까 조금 무서워요",
    "어제 친구랑 헤어져서 너무 슬퍼",
    "그냥 평소랑 똑같은 하루였어요",
)


@dataclass(frozen=True)
class Settings:
    """What one run measures. `FULL` gives the committed results; `QUICK` is the smoke test and says so."""

    repeats: int
    """Timed repeats per measurement, after `warmup` untimed ones; results are medians of per-repeat ratios."""
    warmup: int
    pipeline_items: int
    """Items in the pipeline batch (`batch_size` equals this)."""
    pipeline_audio_seconds: float
    train_batch_size: int
    matmul_size: int
    """n of the n x n x n fp32 matmul whose FLOP/s is the training reference."""
    extraction_backbones: str
    """"real" (ELECTRA-base, HuBERT-base) or "tiny" (the test backbones) for `extraction_rss_ratio`."""
    extraction_counts: tuple[int, int]
    extraction_audio_seconds: float
    extraction_batch_size: int
    long_audio_backbones: str
    long_audio_seconds: float
    shard_utterances: int
    """Utterances (real-size backbones) that 1 and then 2 single-thread processes extract for the shard speedup."""
    shard_repeats: int
    cache_check_utterances: int
    """Utterances, at the paper's (2, 126, 768) float16 each, in the cached split whose check is timed."""
    bf16_extraction_utterances: int
    """Utterances per timed bf16 / float32 extraction (one backbone batch)."""
    demo_epochs: int
    """Training epochs of the demo model whose predictions on bf16 and float32 features are compared."""
    onnx_backbones: str
    """"real" or "tiny" backbones behind the ONNX export that `onnx_speedup` times."""
    epoch_backbones: str
    """"real" or "tiny": the width of the features and model of the `epoch` section, and the backbones its
    checkpoints hold a processor of."""
    input_rows: int
    """Cached rows per timed pass through each data path for `input_rows_per_second_*`."""
    epoch_rows: tuple[int, int]
    """(training, evaluation) rows of the `epoch` section's training run."""
    epochs: int
    """Epochs of that run; the first is warm-up."""
    gpu_corpus_utterances: int
    """Utterances of the GPU check's synthetic corpus: KEMDy's size, 8:2 into about 8,300 training rows."""


FULL = Settings(
    repeats=7,
    warmup=1,
    pipeline_items=4,
    pipeline_audio_seconds=5.0,
    train_batch_size=32,
    matmul_size=2048,
    extraction_backbones="real",
    extraction_counts=(100, 1000),
    extraction_audio_seconds=1.0,
    extraction_batch_size=16,
    long_audio_backbones="real",
    long_audio_seconds=600.0,
    shard_utterances=32,
    shard_repeats=2,
    cache_check_utterances=1000,
    bf16_extraction_utterances=8,
    demo_epochs=30,
    onnx_backbones="real",
    epoch_backbones="real",
    input_rows=2048,
    epoch_rows=(256, 64),
    epochs=2,
    gpu_corpus_utterances=10_400,
)
QUICK = replace(
    FULL,
    repeats=3,
    pipeline_items=2,
    extraction_backbones="tiny",
    extraction_counts=(30, 300),
    long_audio_backbones="tiny",
    shard_utterances=4,
    shard_repeats=1,
    cache_check_utterances=100,
    bf16_extraction_utterances=2,
    demo_epochs=1,
    onnx_backbones="tiny",
    epoch_backbones="tiny",
    input_rows=256,
    epoch_rows=(64, 32),
)
"""The paper's training batch of 32 in both: a smaller batch would measure a different, less efficient workload."""


def log(message: str) -> None:
    """Progress on stderr, so that a child's stdout carries only its result."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def memory_mb(field: str) -> float:
    """`VmRSS` (now) or `VmHWM` (peak since start or the last `reset_peak_rss`) of this process, in MB."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s*(\d+) kB", status, flags=re.MULTILINE).group(1)) / 1024


def reset_peak_rss() -> None:
    """Make `VmHWM` start again from the current RSS (Linux >= 4.0), so the peak belongs to what follows."""
    Path("/proc/self/clear_refs").write_text("5")


class NeighbourMeter:
    """The share of this machine's CPU time that other processes (and the hypervisor, as steal) took since the last
    `share()`: what explains a slow repeat on a shared machine. 0 is an idle neighbourhood, 1 a saturated one."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self._last = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float]:
        """(wall seconds, busy CPU seconds of the machine, CPU seconds of this process)."""
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(
            int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
        )
        busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
        return time.perf_counter(), busy, sum(os.times()[:2])

    def share(self) -> float:
        (wall, busy, own), (last_wall, last_busy, last_own) = self._sample(), self._last
        self.restart()
        cpus = len(os.sched_getaffinity(0))
        return max(0.0, (busy - last_busy - (own - last_own)) / (cpus * max(wall - last_wall, 1e-9)))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable[[], Any], device: torch.device = torch.device("cpu")) -> float:
    synchronize(device)
    start = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - start


def side_by_side(functions: dict[str, Callable[[], Any]], repeats: int, warmup: int, label: str) -> dict[str, list]:
    """Seconds of each function per repeat, interleaved, alternating the order every repeat so that a slow drift of
    the machine (a neighbour starting work) lands on all of them alike; `others_cpu_share` says how busy the
    neighbours were during each repeat."""
    names = list(functions)
    times: dict[str, list[float]] = {name: [] for name in [*names, "others_cpu_share"]}
    neighbours = NeighbourMeter()
    for repeat in range(warmup + repeats):
        order = names if repeat % 2 == 0 else names[::-1]
        elapsed = {name: timed(functions[name]) for name in order}
        elapsed["others_cpu_share"] = neighbours.share()
        if repeat >= warmup:
            for name, seconds in elapsed.items():
                times[name].append(seconds)
        phase = "warm-up" if repeat < warmup else f"repeat {repeat - warmup + 1}/{repeats}"
        timings = ", ".join(f"{name} {elapsed[name]:.2f}s" for name in names)
        log(f"{label} {phase}: {timings} (others used {elapsed['others_cpu_share']:.0%} of the CPUs)")
    return times


def matmul_flops_per_second(size: int, device: torch.device, dtype: torch.dtype, repeats: int = 3) -> float:
    """Median FLOP/s of an n x n x n matmul: what this device's GEMM achieves right now."""
    left, right = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    seconds = [timed(lambda: left @ right, device) for _ in range(repeats + 1)][1:]
    return 2 * size**3 / statistics.median(seconds)


def build_backbones(root: Path) -> dict[str, BackbonePaths]:
    """Random-weight backbones in standard HF layout, loaded later through the product's own `from_pretrained` path.

    "tiny" is the tests' `build_tiny_backbones`. "real" is the same builder at the real ones' sizes: ELECTRA-base with
    KoELECTRA-v3's shape, its tokenizer (KoELECTRA's kind of cased Korean WordPiece) padded with unused entries to
    KoELECTRA-v3's 35,000, and HuBERT-base with hubert-base-ls960's feature-extractor settings.
    """
    tiny = build_tiny_backbones(root / "tiny", max_text_positions=512)
    real = build_tiny_backbones(
        root / "real", REAL_HIDDEN_SIZE, 512, text_sizes=KOELECTRA_BASE_V3_SIZES, speech_sizes=HUBERT_BASE_SIZES
    )
    return {"tiny": tiny, "real": real}


def write_utterances(directory: Path, count: int, seconds: float) -> list[str]:
    """`count` 16 kHz PCM wav files of noise. The backbones' cost depends only on the length, not on the sound."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = directory / f"utterance{index:05d}.wav"
        samples = (0.1 * rng.standard_normal(int(seconds * SAMPLING_RATE))).astype(np.float32)
        soundfile.write(path, samples, SAMPLING_RATE, subtype="PCM_16")
        paths.append(str(path))
    return paths


def korean_texts(count: int) -> list[str]:
    return [f"{SENTENCES[index % len(SENTENCES)]} ({index})" for index in range(count)]


def synthetic_cache(path: Path, rows: int, width: int) -> Dataset:
    """`rows` rows of random float16 features (`sequence_length` x `width` per modality) and labels in the layout
    `hyfuser.cache.cache_features` writes, memory-mapped back from an Arrow file as training reads the cache."""
    shape, dtype = (HyFusERConfig().sequence_length, width), hyfuser.cache.FEATURE_DTYPE
    schema = Features({name: Array2D(shape, dtype) for name in hyfuser.cache.FEATURE_COLUMNS})
    schema["label"] = Value("int64")
    block = min(rows, 256)  # the values repeat every `block` rows: what reading them costs does not depend on them
    rng = np.random.default_rng(0)
    columns = {name: rng.standard_normal((block, *shape), dtype=np.float32).astype(dtype)
               for name in hyfuser.cache.FEATURE_COLUMNS}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    with ArrowWriter(features=schema, path=str(path)) as writer:
        for start in range(0, rows, block):
            count = min(block, rows - start)
            labels = [row % HyFusERConfig().num_labels for row in range(start, start + count)]
            writer.write_batch({**{name: values[:count] for name, values in columns.items()}, "label": labels})
    return Dataset.from_file(str(path))


def random_fitted_processor(backbones: BackbonePaths) -> HyFusERProcessor:
    """A processor over `backbones` whose joint scaler is fitted on random features (the values do not matter)."""
    processor = HyFusERProcessor.from_backbones(backbones.text, backbones.speech)
    statistics_ = FeatureStatistics().update(np.random.default_rng(0).standard_normal((64, backbones.hidden_size)))
    return processor.set_scaler(statistics_)


def save_random_hyfuser(backbones: BackbonePaths, directory: Path) -> Path:
    """A Table 3 HyFusER as wide as `backbones` (768 on the real-size ones) with random weights (seed 0), saved by
    `save_hyfuser` with a `random_fitted_processor` and no copies of the backbones, for `pipeline(model=directory)`."""
    config = HyFusERConfig(
        hidden_size=backbones.hidden_size,
        intermediate_size=backbones.hidden_size,
        text_backbone=backbones.text,
        speech_backbone=backbones.speech,
    )
    torch.manual_seed(0)
    model = HyFusERForEmotionRecognition(config).eval()
    return save_hyfuser(directory, model, random_fitted_processor(backbones), save_backbones=False)


def run_child(
    kind: str, arguments: dict[str, Any], launcher: Sequence[str] = (), threads: int | None = None
) -> dict[str, Any]:
    """Run `bench.py`'s `CHILDREN[kind]` in a fresh interpreter (or the processes `launcher` starts), so that its
    peak RSS is its own; its progress goes to stderr. `threads` caps its torch threads (OMP_NUM_THREADS)."""
    command = [*(launcher or [sys.executable]), str(BENCH_SCRIPT), "--child", kind]
    command += ["--child-arguments", json.dumps(arguments)]
    environment = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    completed = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True, env=environment)
    line = next(line for line in reversed(completed.stdout.splitlines()) if line.startswith(RESULT_PREFIX))
    return json.loads(line.removeprefix(RESULT_PREFIX))


def goal_report(results: dict[str, Any], goals: dict[str, tuple[str, float]]) -> dict[str, dict[str, Any]]:
    """Each headline against its goal; a goal that a section declares not applicable on its machine says why."""
    not_applicable = {key: reason for details in results.get("details", {}).values()
                      for key, reason in details.get("not_applicable", {}).items()}  # fmt: skip
    report = {}
    for key, (direction, bound) in goals.items():
        if key not in results:
            continue
        value = results[key]
        report[key] = {"goal": f"{direction} {bound}", "met": value <= bound if direction == "<=" else value >= bound}
        if key in not_applicable:
            report[key].update(met=None, not_applicable=not_applicable[key])
    return report
