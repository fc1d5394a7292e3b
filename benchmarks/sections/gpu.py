"""The CUDA path, where there is a GPU: the pipeline, extraction of a corpus of KEMDy's size, the data paths, bf16
epochs and their MFU, and `train.py --bf16` on the same cache (`benchmarks/gpu_check.sh` runs it alone)."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import pipeline

import hyfuser.cache
import hyfuser.training
from benchmarks.sections.common import (
    REPO_ROOT,
    Settings,
    goal_report,
    korean_texts,
    log,
    save_random_hyfuser,
    side_by_side,
    write_utterances,
)
from benchmarks.sections.training import epoch_run, epoch_trainer, input_rates, measure_training
from configuration_hyfuser import EMOTION_LABELS
from hyfuser.arguments import BackboneArguments, CorpusArguments
from hyfuser.demo import DemoUtterance, write_kemdy20_corpus
from hyfuser.environment import cpu_model, gpu_name, read_cpuinfo
from hyfuser.splits import build_paper_dataset
from hyfuser.tiny_backbones import BackbonePaths
from processing_hyfuser import HyFusERProcessor

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
    save_dir = save_random_hyfuser(backbones, workdir / "gpu_hyfuser")
    classifier = pipeline(model=str(save_dir), trust_remote_code=True, device=device)
    items = [{"text": text, "audio": path} for text, path in zip(korean_texts(batch_size), paths)]
    pipeline_seconds = side_by_side({"pipeline": partial(classifier, items, batch_size=len(items))},
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
