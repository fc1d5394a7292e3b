"""Serving: `pipeline(...)` against the bare backbones (`pipeline_over_backbones`), and against the same pipeline on
`export_onnx.py`'s directories (`onnx_speedup`, `onnx_int8_speedup`)."""

from __future__ import annotations

import importlib
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import pipeline

from benchmarks.sections.common import (
    SAMPLING_RATE,
    Settings,
    korean_texts,
    log,
    save_random_hyfuser,
    side_by_side,
    write_utterances,
)
from hyfuser.tiny_backbones import BackbonePaths


def bench_pipeline(settings: Settings, backbones: BackbonePaths, workdir: Path) -> dict[str, Any]:
    """End-to-end `pipeline(...)` over the two bare backbone forwards, on the same items.

    Numerator: `pipeline(model=saved_dir, trust_remote_code=True)` called on `pipeline_items` dicts of (Korean text,
    wav path) with `batch_size=pipeline_items`: audio decoding, feature extraction, tokenization, both backbones,
    interpolation, scaling, the fusion model and postprocessing. Denominator: ELECTRA on the same batch tokenized
    and padded to `sequence_length` (126) and HuBERT on each utterance's normalised waveform alone, unpadded, which
    is the least work that yields HyFusER's features. The fusion model alone is timed too: 1 + its share is the floor.
    """
    log("pipeline: saving a Table 3 HyFusER with random weights and loading it through pipeline()")
    save_dir = save_random_hyfuser(backbones, workdir / "hyfuser")
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
    save_dir = save_random_hyfuser(backbones, workdir / "onnx_source")
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
