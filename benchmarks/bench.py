#!/usr/bin/env python
"""HyFusER benchmarks: the cost of extraction, training and inference, as ratios against real-size backbones.

Absolute seconds depend on the machine and, on a shared one, on its neighbours; a ratio of two things measured side
by side in the same run does not, so every headline number here is a ratio or a memory figure:

- `pipeline_over_backbones`: `pipeline(...)` on a batch of (Korean text, 5 s wav file) items over the two bare
  backbone forwards on the same inputs. Goal <= 1.10.
- `train_gemm_fraction`: FLOP/s of the fusion model's training steps, run by the `Trainer` exactly as `train.py`
  configures it, over the FLOP/s of a large fp32 matmul measured around each step. Goal >= 0.5.
- `extraction_rss_ratio`: peak RSS of `hyfuser.cache.cache_features` over many synthetic utterances over that for ten
  times fewer, each in a fresh process. Goal <= 1.2.
- `long_audio_peak_mb`: peak RSS increase while extracting one 10-minute clip, over the loaded-model baseline.
- `extraction_shard_speedup`: wall time of `cache_features` over the same utterances with 2 processes of one thread
  each (`accelerate launch`, gloo) over 1 process of one thread. Goal <= 0.6.
- `extraction_bf16_speedup`: real-size backbone extraction in bfloat16 over float32 (autocast), timed side by side.
  Goal >= 1.5 where the CPU has bf16 matrix units (Intel AMX); elsewhere measured and reported as not applicable.
  `extraction_bf16_agreement`: top-1 agreement of a trained demo model on bf16 vs float32 features. Goal >= 0.99.
- `train_bf16_fraction`: FLOP/s of `--bf16` training steps over the FLOP/s of a large bf16 matmul. Goal >= 0.4.
- `cache_check_over_read`: the check of a cached split against its checksum file before reuse (hashing it) over one
  streaming read of the same split (the scaler's pass), at the paper's feature size.
- `onnx_speedup`, `onnx_int8_speedup`: the PyTorch pipeline's time over the same pipeline's on the `export_onnx.py`
  directory (fp32, and int8 weights), on the same items; top-1 agreement with PyTorch in the details. Goal for int8:
  >= 1.5. Skipped, with a one-line reason, where the `onnx` extra is not installed.
- `input_rows_per_second_streaming`, `input_rows_per_second_device`: cached rows per second to scaled batches ready
  on the training device, through the `Trainer`'s own data loader: streamed from the on-disk cache by `train.py`'s
  loader workers, or gathered from the features loaded once onto the device (on a CPU, into RAM).
  `input_device_over_streaming`, their ratio per repeat: goal >= 3.
- `checkpoint_bytes_per_save`, `checkpoint_backbone_bytes`: what one training checkpoint writes, and how much of it
  is copies of the frozen backbones. Goal: 0 backbone bytes.
- `epoch_compute_share`: forward and backward seconds over a training epoch's wall seconds (batches, evaluation and
  saving included), after a warm-up epoch. Reported on the CPU; the GPU check's goal is >= 0.9.

The backbones are the real architectures (ELECTRA-base with KoELECTRA-v3's vocabulary, HuBERT-base) with random
weights, written to a temporary directory in Hugging Face layout so that the real loading path runs and nothing is
downloaded. See `benchmarks/README.md` for the definitions and the committed results.

    python benchmarks/bench.py            # full run (~23 min on 2 CPU cores), writes benchmarks/results.json
    python benchmarks/bench.py --quick    # smoke run: fewer repeats, tiny backbones for the memory keys
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_name, "1")

import numpy as np  # noqa: E402
import soundfile  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from accelerate import PartialState  # noqa: E402
from datasets import Array2D, Dataset, DatasetDict, Features, Value  # noqa: E402
from datasets.arrow_writer import ArrowWriter  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from transformers import (  # noqa: E402
    ElectraConfig,
    ElectraModel,
    HubertConfig,
    HubertModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    pipeline,
)

import hyfuser.cache  # noqa: E402
import hyfuser.feed  # noqa: E402
import hyfuser.training  # noqa: E402
from backbones_hyfuser import SPEECH_BACKBONE_SUBFOLDER, TEXT_BACKBONE_SUBFOLDER  # noqa: E402
from configuration_hyfuser import EMOTION_LABELS, HyFusERConfig  # noqa: E402
from hyfuser.arguments import BackboneArguments, CorpusArguments  # noqa: E402
from hyfuser.checkpoint import save_hyfuser  # noqa: E402
from hyfuser.corpora import build_paper_dataset  # noqa: E402
from hyfuser.demo import DemoUtterance, prepare_demo, write_kemdy20_corpus  # noqa: E402
from hyfuser.environment import cpu_matmul_capabilities, cpu_model, gpu_name, read_cpuinfo  # noqa: E402
from hyfuser.tiny_backbones import BackbonePaths, build_tiny_backbones  # noqa: E402
from modeling_hyfuser import HyFusERForEmotionRecognition  # noqa: E402
from processing_hyfuser import HyFusERProcessor  # noqa: E402
from scaling_hyfuser import FeatureStatistics  # noqa: E402

SAMPLING_RATE = 16_000
KOELECTRA_V3_VOCAB_SIZE = 35_000
GOALS = {
    "pipeline_over_backbones": ("<=", 1.10),
    "train_gemm_fraction": (">=", 0.5),
    "extraction_rss_ratio": ("<=", 1.2),
    "extraction_shard_speedup": ("<=", 0.6),
    "extraction_bf16_speedup": (">=", 1.5),
    "extraction_bf16_agreement": (">=", 0.99),
    "train_bf16_fraction": (">=", 0.4),
    "onnx_int8_speedup": (">=", 1.5),
    "input_device_over_streaming": (">=", 3.0),
    "checkpoint_backbone_bytes": ("<=", 0),
}
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


# --------------------------------------------------------------------------------------------------------------------
# Machine, memory and timing helpers
# --------------------------------------------------------------------------------------------------------------------


def describe_machine() -> dict[str, Any]:
    """Enough to tell two results.json files apart: CPU and its matmul capabilities, cores, memory, library versions,
    threads and load."""
    cpuinfo = read_cpuinfo()
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    memory_kb = re.search(r"^MemTotal:\s*(\d+) kB", meminfo, flags=re.MULTILINE)
    return {
        "cpu_model": cpu_model(cpuinfo),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_matmul": cpu_matmul_capabilities(cpuinfo),
        "memory_gb": round(int(memory_kb.group(1)) / 2**20, 1) if memory_kb else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cuda": gpu_name(),
        "load_average_at_start": os.getloadavg(),
    }


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


# --------------------------------------------------------------------------------------------------------------------
# Inputs: backbones in HF layout, synthetic utterances and cached features
# --------------------------------------------------------------------------------------------------------------------


def build_backbones(root: Path) -> dict[str, BackbonePaths]:
    """Random-weight backbones in standard HF layout, loaded later through the product's own `from_pretrained` path.

    "tiny" is the tests' `build_tiny_backbones`. "real" keeps its tokenizer (KoELECTRA's kind of cased Korean
    WordPiece, padded with unused entries to KoELECTRA-v3's 35,000) and feature extractor (hubert-base-ls960's
    settings), and swaps in ELECTRA-base with KoELECTRA-v3's shape and HuBERT-base (`HubertConfig()` defaults).
    """
    tiny = build_tiny_backbones(root / "tiny", max_text_positions=512)
    text_dir, speech_dir = root / "real" / "text", root / "real" / "speech"
    weights = shutil.ignore_patterns("model.safetensors", "config.json")
    shutil.copytree(tiny.text, text_dir, ignore=weights)
    shutil.copytree(tiny.speech, speech_dir, ignore=weights)
    tokenizer_file = text_dir / "tokenizer.json"
    tokenizer = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    vocab = tokenizer["model"]["vocab"]
    vocab.update({f"[unused{index}]": index for index in range(len(vocab), KOELECTRA_V3_VOCAB_SIZE)})
    tokenizer_file.write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    torch.manual_seed(0)
    text_config = ElectraConfig(
        vocab_size=KOELECTRA_V3_VOCAB_SIZE,
        embedding_size=768,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
    )
    ElectraModel(text_config).eval().save_pretrained(text_dir)
    HubertModel(HubertConfig()).eval().save_pretrained(speech_dir)
    return {"tiny": tiny, "real": BackbonePaths(text=str(text_dir), speech=str(speech_dir), hidden_size=768)}


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


# --------------------------------------------------------------------------------------------------------------------
# pipeline_over_backbones
# --------------------------------------------------------------------------------------------------------------------


def bench_pipeline(settings: Settings, backbones: BackbonePaths, workdir: Path) -> dict[str, Any]:
    """End-to-end `pipeline(...)` over the two bare backbone forwards, on the same items.

    Numerator: `pipeline(model=saved_dir, trust_remote_code=True)` called on `pipeline_items` dicts of (Korean text,
    wav path) with `batch_size=pipeline_items`: audio decoding, feature extraction, tokenization, both backbones,
    interpolation, scaling, the fusion model and postprocessing. Denominator: ELECTRA on the same batch tokenized
    and padded to `sequence_length` (126) and HuBERT on each utterance's normalised waveform alone, unpadded, which
    is the least work that yields HyFusER's features. The fusion model alone is timed too: 1 + its share is the floor.
    """
    log("pipeline: saving a Table 3 HyFusER with random weights and loading it through pipeline()")
    torch.manual_seed(0)
    model = HyFusERForEmotionRecognition(
        HyFusERConfig(text_backbone=backbones.text, speech_backbone=backbones.speech)
    ).eval()
    save_dir = save_hyfuser(workdir / "hyfuser", model, random_fitted_processor(backbones), save_backbones=False)
    classifier = pipeline(model=str(save_dir), trust_remote_code=True, device="cpu")
    processor = classifier.processor

    texts = korean_texts(settings.pipeline_items)
    paths = write_utterances(workdir / "pipeline_audio", settings.pipeline_items, settings.pipeline_audio_seconds)
    items = [{"text": text, "audio": path} for text, path in zip(texts, paths)]
    tokens = processor.tokenizer(
        texts, padding="max_length", truncation=True, max_length=processor.sequence_length, return_tensors="pt"
    )
    waveforms = [processor.load_audio(path) for path in paths]
    input_values = [
        processor.feature_extractor(waveform, sampling_rate=SAMPLING_RATE, return_tensors="pt").input_values
        for waveform in waveforms
    ]
    features = processor.encode(texts, waveforms)
    text_model, speech_model = processor.text_backbone_model, processor.speech_backbone_model
    fusion_model = classifier.model

    def backbones_alone() -> None:
        with torch.inference_mode():
            text_model(**tokens)
            for values in input_values:
                speech_model(input_values=values)

    def fusion_alone() -> None:
        with torch.no_grad():
            fusion_model(**features)

    times = side_by_side(
        {
            "pipeline": lambda: classifier(items, batch_size=len(items)),
            "backbones": backbones_alone,
            "fusion_model": fusion_alone,
        },
        settings.repeats,
        settings.warmup,
        "pipeline",
    )
    ratios = [whole / bare for whole, bare in zip(times["pipeline"], times["backbones"])]
    floors = [1 + fusion / bare for fusion, bare in zip(times["fusion_model"], times["backbones"])]
    return {
        "pipeline_over_backbones": statistics.median(ratios),
        "per_repeat_ratios": ratios,
        "fusion_model_floor": statistics.median(floors),
        "seconds": times,
        "items": settings.pipeline_items,
        "audio_seconds": settings.pipeline_audio_seconds,
        "text_tokens_padded_to": processor.sequence_length,
    }


# --------------------------------------------------------------------------------------------------------------------
# train_gemm_fraction (and the GPU's bf16 training MFU)
# --------------------------------------------------------------------------------------------------------------------


class _StepClock(TrainerCallback):
    """Times every Trainer step, counts the first (warm-up) step's FLOPs, and measures the reference matmul between
    steps, so that each step is bracketed by two reference measurements taken next to it."""

    def __init__(self, reference: Callable[[], float], device: torch.device):
        self.reference = reference
        self.device = device
        self.counter = FlopCounterMode(display=False)
        self.neighbours = NeighbourMeter()
        self.mark: float | None = None
        self.step_seconds: list[float] = []
        self.others_cpu_share: list[float] = []
        self.reference_flops_per_second: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            self.counter.__enter__()
            self.neighbours.restart()
            self.mark = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        synchronize(self.device)
        now = time.perf_counter()
        if state.global_step == 1:
            self.counter.__exit__(None, None, None)
        # From the end of the previous reference to now: data loading, collation, forward, backward, clipping, step.
        self.step_seconds.append(now - self.mark)
        self.others_cpu_share.append(self.neighbours.share())
        self.reference_flops_per_second.append(self.reference())
        log(
            f"training step {state.global_step}/{state.max_steps}: {self.step_seconds[-1]:.2f}s "
            f"(others used {self.others_cpu_share[-1]:.0%} of the CPUs)"
        )
        self.neighbours.restart()
        self.mark = time.perf_counter()


def measure_training(
    settings: Settings, backbones: BackbonePaths, workdir: Path, device: torch.device, bf16: bool = False
) -> dict[str, Any]:
    """Achieved FLOP/s of HyFusER training steps run by the `Trainer` as `train.py` sets it up, over the FLOP/s of
    a large matmul of the training dtype on the same device.

    Same optimizer, learning rate, gradient clipping and batch size (`hyfuser.training.PAPER_TRAINING_DEFAULTS`), same data
    path (float16 cached features, `hyfuser.feed.collate_scaled_features`); only evaluation, saving and logging are off.
    FLOPs are counted with `FlopCounterMode` over the first real step, which is then discarded as warm-up.
    """
    steps = settings.warmup + settings.repeats
    rows = settings.train_batch_size * steps
    name = f"{device.type}-{'bf16' if bf16 else 'fp32'}"
    dataset = synthetic_cache(workdir / "training_cache" / f"{name}.arrow", rows, HyFusERConfig().hidden_size)
    arguments = TrainingArguments(
        output_dir=str(workdir / "trainer"),
        **{
            **hyfuser.training.PAPER_TRAINING_DEFAULTS,
            "per_device_train_batch_size": settings.train_batch_size,
            "max_steps": steps,
            "eval_strategy": "no",
            "save_strategy": "no",
            "logging_strategy": "no",
            "load_best_model_at_end": False,
            "report_to": "none",
            "disable_tqdm": True,
            "use_cpu": device.type == "cpu",
            "bf16": bf16,
        },
    )
    dtype = torch.bfloat16 if bf16 else torch.float32
    # A GPU reaches its GEMM peak only on a larger product than two CPU cores do.
    reference_size = settings.matmul_size if device.type == "cpu" else 4 * settings.matmul_size
    clock = _StepClock(partial(matmul_flops_per_second, reference_size, device, dtype), device)
    torch.manual_seed(0)
    trainer = Trainer(
        model=HyFusERForEmotionRecognition(HyFusERConfig()),
        args=arguments,
        train_dataset=dataset.with_format("torch"),
        data_collator=partial(hyfuser.feed.collate_scaled_features, processor=random_fitted_processor(backbones)),
        callbacks=[clock],
    )
    trainer.train()
    flops = clock.counter.get_total_flops()
    achieved = [flops / seconds for seconds in clock.step_seconds[settings.warmup :]]
    # Step i is bracketed by the references measured right after steps i-1 and i.
    references = clock.reference_flops_per_second
    before, after = references[settings.warmup - 1 : -1], references[settings.warmup :]
    brackets = [(first + second) / 2 for first, second in zip(before, after)]
    fractions = [rate / reference for rate, reference in zip(achieved, brackets)]
    return {
        "fraction": statistics.median(fractions),
        "per_repeat_fractions": fractions,
        "flops_per_step": flops,
        "step_seconds": clock.step_seconds,
        "others_cpu_share": clock.others_cpu_share,
        "achieved_flops_per_second": achieved,
        "reference_flops_per_second": references,
        "reference_matmul": f"{reference_size}^3 {str(dtype).removeprefix('torch.')}",
        "batch_size": settings.train_batch_size,
        "optim": arguments.optim,
        "max_grad_norm": arguments.max_grad_norm,
    }


# --------------------------------------------------------------------------------------------------------------------
# Where an epoch's time goes: input_rows_per_second_*, checkpoint_*bytes, epoch_compute_share
# --------------------------------------------------------------------------------------------------------------------


class _EpochClock(TrainerCallback):
    """Each epoch's wall time from its start until its checkpoint is written (batches, steps, evaluation, saving) and
    the part spent in forward and backward passes; each mark follows a device synchronisation."""

    def __init__(self, device: torch.device):
        self.device = device
        self.epochs: list[dict[str, float]] = []

    def _now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.epoch_start, self.compute = self._now(), 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self.step_start = self._now()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.compute += self._now() - self.step_start

    def on_save(self, args, state, control, **kwargs):
        wall = self._now() - self.epoch_start
        share = self.compute / wall
        self.epochs.append({"wall_seconds": wall, "compute_seconds": self.compute, "compute_share": share})
        log(f"epoch {len(self.epochs)}: {wall:.1f}s, {share:.0%} of it in forward and backward passes")


def epoch_trainer(
    processor: HyFusERProcessor,
    splits: tuple[Dataset, Dataset],
    output_dir: Path,
    device: torch.device,
    settings: Settings,
    placement: str,
    workers: int = hyfuser.feed.STREAMING_WORKERS,
    bf16: bool = False,
) -> Trainer:
    """`hyfuser.training.feature_trainer` as `train.py` sets it up (the paper's settings, its loader workers) on
    `device`, for a Table 3 HyFusER as wide as `processor`'s features; no early stopping, so every epoch runs."""
    arguments = TrainingArguments(
        output_dir=str(output_dir),
        **{**hyfuser.training.PAPER_TRAINING_DEFAULTS, "num_train_epochs": settings.epochs, "report_to": "none",
           "disable_tqdm": True, "use_cpu": device.type == "cpu", "bf16": bf16, "dataloader_num_workers": workers},
    )  # fmt: skip
    torch.manual_seed(0)
    model = HyFusERForEmotionRecognition(
        HyFusERConfig(hidden_size=processor.hidden_size, intermediate_size=processor.hidden_size)
    )
    return hyfuser.training.feature_trainer(
        model, arguments, processor, *splits, early_stopping_patience=0, features_on_device=placement
    )


def input_rates(trainers: dict[str, Trainer], settings: Settings, device: torch.device) -> dict[str, Any]:
    """Cached rows per second to scaled batches ready on `device`, through each trainer's own training data loader
    (one pass over its rows per repeat, worker start-up included), side by side."""
    rows = {name: len(trainer.train_dataset) for name, trainer in trainers.items()}

    def one_pass(loader: Any) -> Callable[[], None]:
        def consume() -> None:
            for _ in loader:
                pass
            synchronize(device)

        return consume

    loaders = {name: one_pass(trainer.get_train_dataloader()) for name, trainer in trainers.items()}
    times = side_by_side(loaders, settings.repeats, settings.warmup, "input")
    rates = {name: [rows[name] / seconds for seconds in times[name]] for name in trainers}
    ratios = [device_rate / streamed for device_rate, streamed in zip(rates["device"], rates["streaming"])]
    return {
        "input_rows_per_second_streaming": statistics.median(rates["streaming"]),
        "input_rows_per_second_device": statistics.median(rates["device"]),
        "input_device_over_streaming": statistics.median(ratios),
        "input_rows_per_second": {name: statistics.median(values) for name, values in rates.items()},
        "input_per_repeat_rows_per_second": rates,
        "input_rows": rows,
        "input_others_cpu_share": times["others_cpu_share"],
    }


def checkpoint_bytes(checkpoint: Path) -> dict[str, Any]:
    """What one checkpoint holds: all its bytes, and those of frozen-backbone copies (the processor's backbone
    subfolders)."""
    files = {str(path.relative_to(checkpoint)): path.stat().st_size
             for path in sorted(checkpoint.rglob("*")) if path.is_file()}  # fmt: skip
    backbones = (TEXT_BACKBONE_SUBFOLDER, SPEECH_BACKBONE_SUBFOLDER)
    return {
        "checkpoint_bytes_per_save": sum(files.values()),
        "checkpoint_backbone_bytes": sum(size for name, size in files.items() if Path(name).parts[0] in backbones),
        "checkpoint_files": files,
    }


def epoch_run(trainer: Trainer, device: torch.device) -> dict[str, Any]:
    """Train for the trainer's epochs under an `_EpochClock`; the epochs after the first (warm-up) are reported."""
    clock = _EpochClock(device)
    trainer.add_callback(clock)
    trainer.train()
    measured = clock.epochs[1:] or clock.epochs
    checkpoints = Path(trainer.args.output_dir).glob("checkpoint-*")
    last = max(checkpoints, key=lambda path: int(path.name.rsplit("-", 1)[1]))
    return {
        "epoch_compute_share": statistics.median(epoch["compute_share"] for epoch in measured),
        "seconds_per_epoch": statistics.median(epoch["wall_seconds"] for epoch in measured),
        "epochs": clock.epochs,
        "epoch_rows": [len(trainer.train_dataset), len(trainer.eval_dataset)],
        "features_on_device": isinstance(trainer.train_dataset, hyfuser.feed.DeviceFeatures),
        **checkpoint_bytes(last),
    }


def bench_epoch(settings: Settings, backbones: BackbonePaths, workdir: Path) -> dict[str, Any]:
    """Where a training epoch's time goes on the CPU: rows per second through each data path (streamed with
    `train.py`'s workers, streamed in the training process, and gathered from the features loaded into RAM), then a
    short training run's forward/backward share and the size of its checkpoints."""
    device, processor = torch.device("cpu"), random_fitted_processor(backbones)
    cache, width = workdir / "epoch_cache", processor.hidden_size
    rows = synthetic_cache(cache / "input.arrow", settings.input_rows, width)
    splits = (rows, rows.select(range(settings.train_batch_size)))
    paths = {"streaming": ("never", hyfuser.feed.STREAMING_WORKERS), "streaming_in_process": ("never", 0),
             "device": ("always", hyfuser.feed.STREAMING_WORKERS)}  # fmt: skip
    trainers = {name: epoch_trainer(processor, splits, workdir / f"input_{name}", device, settings, placement, workers)
                for name, (placement, workers) in paths.items()}  # fmt: skip
    measured = input_rates(trainers, settings, device)
    del trainers
    train_rows, eval_rows = settings.epoch_rows
    splits = (synthetic_cache(cache / "train.arrow", train_rows, width),
              synthetic_cache(cache / "validation.arrow", eval_rows, width))  # fmt: skip
    log(f"epoch: {settings.epochs} epochs of {train_rows} rows on the CPU, evaluating {eval_rows}")
    measured |= epoch_run(epoch_trainer(processor, splits, workdir / "epoch_run", device, settings, "auto"), device)
    return {**measured, "backbones": settings.epoch_backbones, "streaming_workers": hyfuser.feed.STREAMING_WORKERS}


# --------------------------------------------------------------------------------------------------------------------
# extraction_rss_ratio and long_audio_peak_mb: each measurement in a fresh process
# --------------------------------------------------------------------------------------------------------------------


def run_child(kind: str, arguments: dict[str, Any], launcher: Sequence[str] = (), threads: int | None = None) -> dict[str, Any]:
    """Run `CHILDREN[kind]` in a fresh interpreter (or the processes `launcher` starts), so that its peak RSS is its
    own; its progress goes to stderr. `threads` caps its torch threads (OMP_NUM_THREADS)."""
    command = [*(launcher or [sys.executable]), str(Path(__file__).resolve()), "--child", kind]
    command += ["--child-arguments", json.dumps(arguments)]
    environment = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    completed = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True, env=environment)
    line = next(line for line in reversed(completed.stdout.splitlines()) if line.startswith(RESULT_PREFIX))
    return json.loads(line.removeprefix(RESULT_PREFIX))


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
    """Peak RSS increase of `processor(..., scale=False)` on each clip over the RSS just before it, the backbones loaded."""
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


# --------------------------------------------------------------------------------------------------------------------
# extraction_shard_speedup: the same utterances extracted by 1 and by 2 single-thread processes
# --------------------------------------------------------------------------------------------------------------------


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
            runs[processes].append(run_child("shard", {**arguments, "cache_dir": str(cache_dir)}, launcher, threads=1))
            log(f"shard: {count} utterances, {processes} process(es) of 1 thread: {runs[processes][-1]['seconds']:.1f}s")
    ratios = [two["seconds"] / one["seconds"] for one, two in zip(runs["1"], runs["2"])]
    return {
        "extraction_shard_speedup": statistics.median(ratios),
        "per_repeat_ratios": ratios,
        "utterances": count,
        "audio_seconds": settings.extraction_audio_seconds,
        "backbones": "real",
        "runs": runs,
    }


# --------------------------------------------------------------------------------------------------------------------
# cache_check_over_read: checking a cached split before reuse, against reading it once
# --------------------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------------------
# extraction_bf16_speedup, extraction_bf16_agreement and train_bf16_fraction
# --------------------------------------------------------------------------------------------------------------------


def demo_bf16_agreement(settings: Settings, workdir: Path) -> dict[str, Any]:
    """Top-1 agreement of a trained demo model between features its backbones extract in bfloat16 and in float32,
    on the demo's validation split (the items `train.py` held out)."""
    output_dir, cache_dir = workdir / "demo_model", workdir / "demo_cache"
    log(f"bf16: training the demo model ({settings.demo_epochs} epochs at most) with train.py")
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "train.py"), "--dataset", "demo", "--num_train_epochs",
         str(settings.demo_epochs), "--cache_dir", str(cache_dir), "--output_dir", str(output_dir),
         "--report_to", "none", "--disable_tqdm", "true", "--save_strategy", "epoch", "--save_total_limit", "1"],
        stdout=subprocess.DEVNULL, check=True, cwd=REPO_ROOT,
    )  # fmt: skip
    validation = build_paper_dataset(kemdy20_dir=prepare_demo(cache_dir / "demo").train_dir, seed=42)["validation"]
    classifier = pipeline(model=str(output_dir), trust_remote_code=True, device="cpu")
    processor, model = classifier.processor, classifier.model
    predictions = {}
    for dtype in (torch.float32, torch.bfloat16):
        processor.to(backbone_dtype=dtype)
        batches = []
        for start in range(0, len(validation), 32):
            rows = validation[start : start + 32]
            with torch.no_grad():
                batches.append(model(**processor(rows["text"], rows["audio"])).logits.argmax(-1))
        predictions[str(dtype).removeprefix("torch.")] = torch.cat(batches)
    agreement = (predictions["float32"] == predictions["bfloat16"]).double().mean().item()
    accuracy = (predictions["float32"] == torch.tensor(validation["label"])).double().mean().item()
    return {"agreement": agreement, "items": len(validation), "float32_accuracy": accuracy}


def bench_bf16(settings: Settings, backbones: BackbonePaths, workdir: Path) -> dict[str, Any]:
    """bf16 against float32: real-size extraction time and the predictions it leads to, and training efficiency."""
    machine = cpu_matmul_capabilities(read_cpuinfo())
    count = settings.bf16_extraction_utterances
    paths = write_utterances(workdir / "bf16_audio", count, settings.extraction_audio_seconds)
    texts = korean_texts(count)
    processor = HyFusERProcessor.from_backbones(backbones.text, backbones.speech)

    def extract(dtype: torch.dtype) -> Callable[[], Any]:
        return lambda: processor.to(backbone_dtype=dtype)(texts, paths, scale=False)

    times = side_by_side({"float32": extract(torch.float32), "bfloat16": extract(torch.bfloat16)},
                         settings.repeats, settings.warmup, "bf16 extraction")  # fmt: skip
    ratios = [fp32 / bf16 for fp32, bf16 in zip(times["float32"], times["bfloat16"])]
    agreement = demo_bf16_agreement(settings, workdir)
    log("bf16: training steps with --bf16")
    training = measure_training(settings, backbones, workdir, torch.device("cpu"), bf16=True)
    matmul = {name: matmul_flops_per_second(settings.matmul_size, torch.device("cpu"), dtype, settings.repeats)
              for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16))}  # fmt: skip
    not_applicable = {}
    if not machine["bf16_matrix_units"]:
        not_applicable["extraction_bf16_speedup"] = (
            f"the goal is set for CPUs with AMX; this one has no amx_bf16 flag (avx512_bf16: "
            f"{machine['avx512_bf16']}; its bf16 matmul runs at {matmul['bfloat16'] / matmul['float32']:.2f}x fp32)"
        )
    return {
        "extraction_bf16_speedup": statistics.median(ratios),
        "extraction_bf16_agreement": agreement["agreement"],
        "train_bf16_fraction": training["fraction"],
        "not_applicable": not_applicable,
        "per_repeat_speedups": ratios,
        "extraction_seconds": times,
        "extraction_utterances": count,
        "agreement": agreement,
        "matmul_flops_per_second": matmul,
        "bf16_over_fp32_matmul": matmul["bfloat16"] / matmul["float32"],
        "cpu_matmul": machine,
        "training": training,
    }


CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "extraction": child_extraction,
    "long-audio": child_long_audio,
    "shard": child_shard_extraction,
}


# --------------------------------------------------------------------------------------------------------------------
# GPU (only when one is present)
# --------------------------------------------------------------------------------------------------------------------

NOMINAL_BF16_FLOPS = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12), ("L4", 121e12))
"""Dense bf16 tensor-core peaks from the vendor data sheets, by device-name substring (first match wins)."""


GPU_GOALS = {"input_rows_per_second_device": (">=", 15_000), "epoch_compute_share": (">=", 0.9)}
"""The GPU check's goals; the CPU's figures of the same names have none."""


def synthetic_kemdy20_corpus(root: Path, count: int) -> Path:
    """`count` utterances in KEMDy20's layout for `train.py --dataset kemdy`: the demo's synthetic voices, a sentence
    of their own each, the emotions in turn (so downsampling drops no neutral row), over KEMDy20's 40 sessions."""
    sessions = 40
    utterances = []
    for index, text in enumerate(korean_texts(count)):
        session, number = index % sessions + 1, index // sessions + 1
        segment = f"Sess{session:02d}_script01_User{2 * session - 1:03d}F_{number:03d}"
        utterances.append(DemoUtterance(segment, EMOTION_LABELS[index % len(EMOTION_LABELS)], "both", text))
    write_kemdy20_corpus(root, utterances, np.random.default_rng(0))
    return root


def train_py_processor(backbones: BackbonePaths, device: torch.device) -> HyFusERProcessor:
    """The processor `train.py` builds over `backbones` with its default flags, on `device`: its features are cached
    under train.py's key, so a later `train.py` run on the same corpus and `--cache_dir` reuses them."""
    backbone_args, corpus_args = BackboneArguments(), CorpusArguments()
    processor = HyFusERProcessor.from_backbones(
        backbones.text, backbones.speech, sequence_length=backbone_args.sequence_length,
        asr_model=corpus_args.asr_model, **backbone_args.feature_options(),
    )  # fmt: skip
    return hyfuser.training.place_backbones(processor, device, corpus_args.extraction_dtype)


def bench_gpu(settings: Settings, backbones: BackbonePaths, workdir: Path) -> dict[str, Any]:
    """The CUDA path (`accelerated_path` on the GPU), where there is one."""
    if not torch.cuda.is_available():
        log("gpu: no CUDA device, skipped")
        return {"skipped": "torch.cuda.is_available() is False"}
    return accelerated_path(settings, backbones, workdir, torch.device("cuda"))


def accelerated_path(settings: Settings, backbones: BackbonePaths, workdir: Path, device: torch.device) -> dict:
    """On `device`: the pipeline with real-size backbones; a synthetic corpus of KEMDy's size through `cache_features`
    with both backbones there (extraction utterances/s); the data paths' rows/s, bf16 epochs and their
    forward/backward share on its cached features; bf16 training MFU against the nominal peak; and `train.py --bf16`
    on the same corpus, reusing that cache, with its backbones and features on the device."""
    name = gpu_name() if device.type == "cuda" else cpu_model(read_cpuinfo())
    peak = next((flops for key, flops in NOMINAL_BF16_FLOPS if key in name), None)
    log(f"gpu: {name}, nominal dense bf16 peak {f'{peak / 1e12:.0f} TFLOP/s' if peak else 'unknown'}")
    batch_size = settings.extraction_batch_size
    paths = write_utterances(workdir / "gpu_audio", batch_size, settings.extraction_audio_seconds)

    log(f"gpu: pipeline(device='{device}') on a Table 3 HyFusER with the real-size backbones")
    torch.manual_seed(0)
    model = HyFusERForEmotionRecognition(HyFusERConfig(text_backbone=backbones.text, speech_backbone=backbones.speech))
    save_dir = save_hyfuser(workdir / "gpu_hyfuser", model.eval(), random_fitted_processor(backbones), save_backbones=False)
    classifier = pipeline(model=str(save_dir), trust_remote_code=True, device=device)
    items = [{"text": text, "audio": path} for text, path in zip(korean_texts(batch_size), paths)]
    pipeline_seconds = side_by_side({"pipeline": lambda: classifier(items, batch_size=len(items))},
                                    settings.repeats, settings.warmup, "gpu pipeline")["pipeline"]  # fmt: skip
    placed_on = {
        "pipeline_backbones": str(classifier.processor.text_backbone_model.device),
        "pipeline_model": str(classifier.model.device),
    }
    del classifier

    log(f"gpu: {settings.gpu_corpus_utterances} synthetic utterances in KEMDy20's layout through cache_features")
    corpus = synthetic_kemdy20_corpus(workdir / "gpu_corpus", settings.gpu_corpus_utterances)
    splits = build_paper_dataset(kemdy20_dir=corpus)  # train.py's defaults: random 8:2 split, seed 42
    processor, cache_dir = train_py_processor(backbones, device), workdir / "gpu_cache"
    started = time.perf_counter()
    features = hyfuser.cache.cache_features(splits, processor, cache_dir, batch_size=batch_size)
    extraction_seconds = time.perf_counter() - started
    hyfuser.cache.fit_scaler_on_cache(processor, features["train"])
    cached = (features["train"], features["validation"])
    trainers = {path: epoch_trainer(processor, cached, workdir / f"gpu_input_{path}", device, settings, placement,
                                    bf16=True) for path, placement in (("streaming", "never"), ("device", "always"))}
    measured = input_rates(trainers, settings, device)
    del trainers
    log(f"gpu: {settings.epochs} bf16 epochs on {len(cached[0])} training rows")
    epochs = epoch_trainer(processor, cached, workdir / "gpu_epochs", device, settings, "auto", bf16=True)
    measured |= epoch_run(epochs, device)
    training = measure_training(settings, backbones, workdir, device, bf16=True)
    epoch_flops = training["flops_per_step"] / settings.train_batch_size * len(cached[0])

    log("gpu: train.py --dataset kemdy --bf16 true on the same corpus and cache")
    output_dir = workdir / "gpu_train_py"
    train_py = subprocess.run(
        [sys.executable, str(REPO_ROOT / "train.py"), "--dataset", "kemdy", "--kemdy20_dir", str(corpus),
         "--text_backbone", backbones.text, "--speech_backbone", backbones.speech, "--bf16", "true",
         "--num_train_epochs", str(settings.epochs), "--early_stopping_patience", "0", "--cache_dir", str(cache_dir),
         "--output_dir", str(output_dir), "--report_to", "none", "--disable_tqdm", "true"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=True, cwd=REPO_ROOT,
    ).stdout  # fmt: skip
    backbones_on = re.search(r"The frozen backbones run on (\S+) in (\w+)", train_py)
    features_on = re.search(r"Loaded [\d.]+ MiB of cached features onto (\S+)", train_py)
    placed_on["train_py_backbones"] = backbones_on.group(1) if backbones_on else None
    placed_on["train_py_features"] = features_on.group(1) if features_on else None
    train_results = json.loads((output_dir / "train_results.json").read_text())
    measured.update(
        device=name,
        nominal_bf16_flops=peak,
        train_mfu_bf16=statistics.median(training["achieved_flops_per_second"]) / peak if peak else None,
        epoch_mfu_bf16=epoch_flops / measured["seconds_per_epoch"] / peak if peak else None,
        extraction_utterances_per_second=sum(map(len, splits.values())) / extraction_seconds,
        extraction_seconds=extraction_seconds,
        pipeline_items_per_second=len(items) / statistics.median(pipeline_seconds),
        placed_on=placed_on,
        train_bf16_matmul_fraction=training["fraction"],
        train_py_bf16={
            "seconds_per_epoch": train_results["train_runtime"] / settings.epochs,
            "reused_the_cache": "Extracting" not in train_py,
            "eval_accuracy": json.loads((output_dir / "eval_results.json").read_text()).get("eval_accuracy"),
        },
        training=training,
    )
    return {**measured, "goals": goal_report(measured, GPU_GOALS)}


# --------------------------------------------------------------------------------------------------------------------
# onnx_speedup, onnx_int8_speedup
# --------------------------------------------------------------------------------------------------------------------


ONNX_EXTRA = ("onnx", "onnxruntime", "onnxscript")
"""The modules of pyproject.toml's `onnx` extra, which `export_onnx.py` and the ONNX pipeline need."""


def bench_onnx(settings: Settings, backbones: BackbonePaths, workdir: Path) -> dict[str, Any]:
    """The pipeline on PyTorch against the same pipeline on `export_onnx.py`'s directories, fp32 and int8.

    The three pipelines get the same `pipeline_items` (Korean text, wav file) items with `batch_size` equal to their
    number, timed side by side; each speed-up is the median of the per-repeat ratios torch time / ONNX time. The
    details report how often each ONNX pipeline's top emotion is PyTorch's and its largest probability difference.
    """
    try:
        for module in ONNX_EXTRA:
            importlib.import_module(module)
    except ModuleNotFoundError as error:
        reason = f"{error.name} is not installed (the onnx extra: pip install -e '.[onnx]')"
        log(f"onnx: skipped: {reason}")
        return {"skipped": reason}
    from export_onnx import export_onnx

    log("onnx: saving a Table 3 HyFusER with random weights and exporting it to ONNX (fp32, then int8)")
    # Table 3's sizes on the real backbones (intermediate size = hidden size = 768); the tiny ones are narrower.
    config = HyFusERConfig(
        hidden_size=backbones.hidden_size,
        intermediate_size=backbones.hidden_size,
        text_backbone=backbones.text,
        speech_backbone=backbones.speech,
    )
    torch.manual_seed(0)
    model = HyFusERForEmotionRecognition(config).eval()
    save_dir = save_hyfuser(workdir / "onnx_source", model, random_fitted_processor(backbones), save_backbones=False)
    export_seconds = {}
    directories = {}
    for name, quantize in (("onnx", None), ("onnx_int8", "int8")):
        started = time.perf_counter()
        directories[name] = export_onnx(save_dir, workdir / name, quantize=quantize)
        export_seconds[name] = time.perf_counter() - started
    classifiers = {"torch": pipeline(model=str(save_dir), trust_remote_code=True, device="cpu")}
    for name, directory in directories.items():
        classifiers[name] = pipeline(model=str(directory), trust_remote_code=True, device="cpu")

    texts = korean_texts(settings.pipeline_items)
    paths = write_utterances(workdir / "onnx_audio", settings.pipeline_items, settings.pipeline_audio_seconds)
    items = [{"text": text, "audio": path} for text, path in zip(texts, paths)]
    outputs = {name: classifier(items, batch_size=len(items)) for name, classifier in classifiers.items()}
    times = side_by_side(
        {name: partial(classifier, items, batch_size=len(items)) for name, classifier in classifiers.items()},
        settings.repeats,
        settings.warmup,
        "onnx",
    )

    def by_label(result: list[dict]) -> dict[str, float]:
        return {emotion["label"]: emotion["score"] for emotion in result}

    measured: dict[str, Any] = {"seconds": times, "export_seconds": export_seconds, "items": len(items),
                                "audio_seconds": settings.pipeline_audio_seconds, "backbones": settings.onnx_backbones}
    for name in directories:
        ratios = [torch_time / onnx_time for torch_time, onnx_time in zip(times["torch"], times[name])]
        agree = [ours[0]["label"] == theirs[0]["label"] for ours, theirs in zip(outputs[name], outputs["torch"])]
        differences = [
            abs(by_label(ours)[label] - score)
            for ours, theirs in zip(outputs[name], outputs["torch"])
            for label, score in by_label(theirs).items()
        ]
        measured[f"{name}_speedup"] = statistics.median(ratios)
        measured[f"{name}_per_repeat_speedups"] = ratios
        measured[f"{name}_top1_agreement"] = sum(agree) / len(agree)
        measured[f"{name}_max_probability_difference"] = max(differences)
    return measured


# --------------------------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------------------------


def bench_training(settings: Settings, backbones: dict[str, BackbonePaths], workdir: Path) -> dict[str, Any]:
    measured = measure_training(settings, backbones["real"], workdir, torch.device("cpu"))
    return {"train_gemm_fraction": measured["fraction"], **measured}


@dataclass(frozen=True)
class Section:
    """One independently runnable part of the benchmark: what it measures and which of its keys are headlines."""

    measure: Callable[[Settings, dict[str, BackbonePaths], Path], dict[str, Any]]
    headline_keys: tuple[str, ...]


SECTIONS: dict[str, Section] = {
    "pipeline": Section(lambda s, b, w: bench_pipeline(s, b["real"], w), ("pipeline_over_backbones",)),
    "training": Section(bench_training, ("train_gemm_fraction",)),
    "extraction": Section(
        lambda s, b, w: bench_extraction(s, b[s.extraction_backbones], w),
        ("extraction_rss_ratio", "cache_bytes_per_utterance"),
    ),
    "long_audio": Section(lambda s, b, w: bench_long_audio(s, b[s.long_audio_backbones], w), ("long_audio_peak_mb",)),
    "gpu": Section(lambda s, b, w: bench_gpu(s, b["real"], w), ()),
    "shard": Section(lambda s, b, w: bench_shard(s, b["real"], w), ("extraction_shard_speedup",)),
    "cache_check": Section(lambda s, b, w: bench_cache_check(s, w), ("cache_check_over_read",)),
    "bf16": Section(
        lambda s, b, w: bench_bf16(s, b["real"], w),
        ("extraction_bf16_speedup", "extraction_bf16_agreement", "train_bf16_fraction"),
    ),
    "onnx": Section(lambda s, b, w: bench_onnx(s, b[s.onnx_backbones], w), ("onnx_speedup", "onnx_int8_speedup")),
    "epoch": Section(
        lambda s, b, w: bench_epoch(s, b[s.epoch_backbones], w),
        ("input_rows_per_second_streaming", "input_rows_per_second_device", "input_device_over_streaming",
         "checkpoint_bytes_per_save", "checkpoint_backbone_bytes", "epoch_compute_share"),
    ),  # fmt: skip
}


def goal_report(results: dict[str, Any], goals: dict[str, tuple[str, float]] = GOALS) -> dict[str, dict[str, Any]]:
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


def run(settings: Settings, quick: bool, sections: list[str], previous: dict[str, Any]) -> dict[str, Any]:
    """Measure `sections` and merge them into `previous` (the existing results file, or {}).

    Each section's details record the machine and mode they were measured on, so that a file assembled from
    several `--only` runs still says where every figure comes from.
    """
    started = time.time()
    machine = describe_machine()
    results = {**previous, "details": dict(previous.get("details", {}))}
    with tempfile.TemporaryDirectory(prefix="hyfuser-bench-") as directory:
        workdir = Path(directory)
        log("building random-weight backbones in HF layout (ELECTRA-base/KoELECTRA-v3 shape, HuBERT-base, tiny)")
        backbones = build_backbones(workdir / "backbones")
        for name in sections:
            section_started = time.time()
            measured = SECTIONS[name].measure(settings, backbones, workdir)
            for key in SECTIONS[name].headline_keys:
                if "skipped" in measured:  # nothing measured: no figure from an earlier run stays
                    results.pop(key, None)
                else:
                    results[key] = measured[key]
            measured["machine"] = {**machine, "load_average_at_end": os.getloadavg()}
            measured["mode"] = "quick" if quick else "full"
            measured["wall_seconds"] = time.time() - section_started
            results["details"][name] = measured
    machine["load_average_at_end"] = os.getloadavg()
    modes = {results["details"][name]["mode"] for name in results["details"]}
    results.update(
        {
            "mode": modes.pop() if len(modes) == 1 else "mixed",
            "machine": machine,
            "settings": asdict(settings),
            "wall_seconds": time.time() - started,
        }
    )
    results["goals"] = goal_report(results)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (about 9 min on a busy 2-core machine): see QUICK")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to measure, merged into the existing --output file (default: all of "
        f"{', '.join(SECTIONS)})",
    )
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).resolve().parent / "results.json", help="where the JSON goes"
    )
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--child-arguments", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = CHILDREN[args.child](json.loads(args.child_arguments))
        if result is not None:  # one line from a multi-process child: its main process's
            print(RESULT_PREFIX + json.dumps(result), flush=True)
        return

    sections = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"--only: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    partial_run = set(sections) != set(SECTIONS)
    previous = json.loads(args.output.read_text()) if partial_run and args.output.exists() else {}
    results = run(QUICK if args.quick else FULL, args.quick, sections, previous)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    for key, goal in results["goals"].items():
        verdict = "not applicable here" if goal["met"] is None else "met" if goal["met"] else "MISSED"
        log(f"{key} = {results[key]:.3f} (goal {goal['goal']}: {verdict})")
    log(f"wrote {args.output} in {results['wall_seconds']:.0f}s")


if __name__ == "__main__":
    main()
