"""bf16 against float32: real-size extraction time (`extraction_bf16_speedup`), the predictions it leads to
(`extraction_bf16_agreement`), and training efficiency (`train_bf16_fraction`)."""

from __future__ import annotations

import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import pipeline

from benchmarks.sections.common import (
    REPO_ROOT,
    Settings,
    korean_texts,
    log,
    matmul_flops_per_second,
    side_by_side,
    write_utterances,
)
from benchmarks.sections.training import measure_training
from hyfuser.demo import prepare_demo
from hyfuser.environment import cpu_matmul_capabilities, read_cpuinfo
from hyfuser.splits import build_paper_dataset
from hyfuser.tiny_backbones import BackbonePaths
from processing_hyfuser import HyFusERProcessor


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
