"""Fine-tuning the backbones end to end (`train.py --finetune`) at real backbone sizes: a training step's time over
the frozen-backbone step (`finetune_step_over_frozen`) and the process's peak memory while it trains
(`finetune_peak_memory_mb`), for LoRA and for the top layers.

The frozen step is the paper's: HyFusER alone on features already cached. The fine-tuned step runs the batch's raw
text and audio through both backbones with gradients (`EndToEndHyFusER`). On a CPU the batch is small
(`FINETUNE_BATCH`), as fine-tuning would be there; the ratio is what carries over to a GPU, not the seconds.
"""

from __future__ import annotations

import gc
import importlib.util
import statistics
from pathlib import Path
from typing import Any

import torch

from benchmarks.sections.common import (
    Settings,
    korean_texts,
    log,
    memory_mb,
    random_fitted_processor,
    reset_peak_rss,
    timed,
    write_utterances,
)
from hyfuser.finetune import EndToEndCollator, EndToEndHyFusER, FinetuneArguments, trainable_parameters
from hyfuser.tiny_backbones import BackbonePaths
from hyfuser.training import model_config
from modeling_hyfuser import HyFusERForEmotionRecognition

FINETUNE_BATCH = 4
"""Utterances per measured step: the paper's batch of 32 through two real-size backbones with gradients would take
minutes a step on a 2-core CPU; a GPU run would use 32 (or 32 over several devices)."""
FINETUNE_MODES = ("top_layers", "lora")


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, Any]) -> None:
    optimizer.zero_grad(set_to_none=True)
    model(**batch).loss.backward()
    optimizer.step()


def measure_mode(
    mode: str, settings: Settings, processor, config, rows: list[dict[str, Any]], features: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """Step seconds, peak RSS (from the RSS before the model is built) and trainable parameters of one mode."""
    gc.collect()
    reset_peak_rss()
    torch.manual_seed(0)
    fusion = HyFusERForEmotionRecognition(config).train()
    if mode == "none":
        model, batch = fusion, {**features, "labels": torch.tensor([row["label"] for row in rows])}
    else:
        model = EndToEndHyFusER(fusion, processor, FinetuneArguments(finetune=mode)).train()
        batch = EndToEndCollator(processor)(rows)
    optimizer = torch.optim.AdamW([parameter for parameter in model.parameters() if parameter.requires_grad])
    for _ in range(settings.warmup):
        training_step(model, optimizer, batch)
    seconds = [timed(lambda: training_step(model, optimizer, batch)) for _ in range(settings.repeats)]
    return {
        "step_seconds": seconds,
        "median_step_seconds": statistics.median(seconds),
        "peak_rss_mb": memory_mb("VmHWM"),
        "trainable_parameters": trainable_parameters(model),
    }


def bench_finetune(settings: Settings, backbones: BackbonePaths, workdir: Path) -> dict[str, Any]:
    """Median step seconds of the frozen and the fine-tuned runs on the same batch, and each one's peak RSS (`--quick`
    runs it on the tiny backbones)."""
    processor = random_fitted_processor(backbones)
    texts = korean_texts(FINETUNE_BATCH)
    audio = write_utterances(workdir / "finetune_audio", FINETUNE_BATCH, settings.extraction_audio_seconds)
    rows = [{"text": text, "audio": path, "label": index % 7} for index, (text, path) in enumerate(zip(texts, audio))]
    config = model_config(processor)
    features = dict(processor(texts, audio))  # what the frozen run reads from its cache
    modes = ["none", *(mode for mode in FINETUNE_MODES if mode != "lora" or importlib.util.find_spec("peft"))]
    details: dict[str, Any] = {"batch": FINETUNE_BATCH, "audio_seconds": settings.extraction_audio_seconds,
                               "sequence_length": processor.sequence_length, "modes": {}}  # fmt: skip
    for mode in modes:
        log(f"finetune: {mode} steps, batch {FINETUNE_BATCH}")
        details["modes"][mode] = measure_mode(mode, settings, processor, config, rows, features)
    frozen = details["modes"]["none"]["median_step_seconds"]
    if "lora" not in modes:
        details["not_measured"] = {"lora": "peft is not installed (pip install '.[finetune]')"}
    return {
        "finetune_step_over_frozen": {
            mode: details["modes"][mode]["median_step_seconds"] / frozen for mode in modes if mode != "none"
        },
        "finetune_peak_memory_mb": {mode: details["modes"][mode]["peak_rss_mb"] for mode in modes},
        **details,
    }
