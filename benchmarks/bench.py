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
- `timeline_peak_mb`, `timeline_seconds_per_audio_hour`: peak RSS increase of the pipeline's timeline of a 30-minute
  recording with a transcript (600 segments, batches of 8, tiny backbones) over the loaded pipeline, in a fresh
  process, and its seconds per hour of audio; the details hold the same for 3 minutes. Bound: 64 MB.

The backbones are the real architectures (ELECTRA-base with KoELECTRA-v3's vocabulary, HuBERT-base) with random
weights, written to a temporary directory in Hugging Face layout so that the real loading path runs and nothing is
downloaded. See `benchmarks/README.md` for the definitions and the committed results. This file is the command (the
sections, the results file, the machine record); the measurements live in `benchmarks/sections/`, one module per
group of sections, with what they share in `common.py`.

    python benchmarks/bench.py                  # full run (~23 min on 2 CPU cores), writes benchmarks/results.json
    python benchmarks/bench.py --quick          # smoke run: fewer repeats, tiny backbones for the memory keys
    python benchmarks/bench.py --only training  # one section, merged into the existing results file
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_name, "1")

import torch  # noqa: E402
import transformers  # noqa: E402

from benchmarks.sections.bf16 import bench_bf16  # noqa: E402
from benchmarks.sections.common import (  # noqa: E402
    FULL,
    QUICK,
    RESULT_PREFIX,
    Settings,
    build_backbones,
    goal_report,
    log,
)
from benchmarks.sections.extraction import (  # noqa: E402
    bench_cache_check,
    bench_extraction,
    bench_long_audio,
    bench_shard,
    child_extraction,
    child_long_audio,
    child_shard_extraction,
)
from benchmarks.sections.finetune import bench_finetune  # noqa: E402
from benchmarks.sections.gpu import bench_gpu  # noqa: E402
from benchmarks.sections.serving import bench_onnx, bench_pipeline  # noqa: E402
from benchmarks.sections.timeline import bench_timeline, child_timeline  # noqa: E402
from benchmarks.sections.training import bench_epoch, bench_training  # noqa: E402
from hyfuser.environment import cpu_matmul_capabilities, cpu_model, gpu_name, read_cpuinfo  # noqa: E402
from hyfuser.tiny_backbones import BackbonePaths  # noqa: E402

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
    "timeline_peak_mb": ("<=", 64),
}


@dataclass(frozen=True)
class Section:
    """One independently runnable part of the benchmark: what it measures and which of its keys are headlines."""

    measure: Callable[[Settings, dict[str, BackbonePaths], Path], dict[str, Any]]
    headline_keys: tuple[str, ...]


SECTIONS: dict[str, Section] = {
    "pipeline": Section(lambda s, b, w: bench_pipeline(s, b["real"], w), ("pipeline_over_backbones",)),
    "training": Section(lambda s, b, w: bench_training(s, b["real"], w), ("train_gemm_fraction",)),
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
        (
            "input_rows_per_second_streaming",
            "input_rows_per_second_device",
            "input_device_over_streaming",
            "checkpoint_bytes_per_save",
            "checkpoint_backbone_bytes",
            "epoch_compute_share",
        ),
    ),  # fmt: skip
    "finetune": Section(
        lambda s, b, w: bench_finetune(s, b[s.finetune_backbones], w),
        ("finetune_step_over_frozen", "finetune_peak_memory_mb"),
    ),
    "timeline": Section(
        lambda s, b, w: bench_timeline(s, b["tiny"], w), ("timeline_peak_mb", "timeline_seconds_per_audio_hour")
    ),
}
CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any] | None]] = {
    "extraction": child_extraction,
    "long-audio": child_long_audio,
    "shard": child_shard_extraction,
    "timeline": child_timeline,
}
"""What `--child KIND` runs: a measurement that needs a fresh process (`common.run_child` starts it)."""


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


def run(settings: Settings, quick: bool, sections: list[str], previous: dict[str, Any]) -> dict[str, Any]:
    """Measure `sections` and merge them into `previous` (the existing results file, or {}).

    Each section's details record the machine, mode and wall seconds of the run that measured it, so that a file
    assembled from several `--only` runs still says where every figure comes from. The top-level `machine`,
    `settings` and `wall_seconds` belong to the last run of every section: a run of fewer leaves them as they were.
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
    modes = {results["details"][name]["mode"] for name in results["details"]}
    results["mode"] = modes.pop() if len(modes) == 1 else "mixed"
    if set(sections) == set(SECTIONS):
        machine["load_average_at_end"] = os.getloadavg()
        results.update(machine=machine, settings=asdict(settings), wall_seconds=time.time() - started)
    results["goals"] = goal_report(results, GOALS)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (about 9 min on a busy 2-core machine): 3 repeats, fewer items, and the tiny backbones for "
        "the extraction, long-audio, ONNX and epoch sections (QUICK in benchmarks/sections/common.py)",
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help="comma-separated sections to measure, merged into the existing --output file: their headline keys and "
        "details are replaced; the other sections' and the top-level machine, settings and wall_seconds (those of "
        f"the last run of every section) are kept (default: all of {', '.join(SECTIONS)}, into a fresh file)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(__file__).resolve().parent / "results.json",
        help="the JSON results file to write (default: benchmarks/results.json, the committed full run)",
    )
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--child-arguments", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = CHILDREN[args.child](json.loads(args.child_arguments))
        if result is not None:  # one line from a multi-process child: its main process's
            print(RESULT_PREFIX + json.dumps(result), flush=True)
        return

    started = time.time()
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
    log(f"wrote {args.output} in {time.time() - started:.0f}s")


if __name__ == "__main__":
    main()
