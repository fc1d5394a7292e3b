"""The on-disk feature cache that HyFusER trains on: the frozen backbones run once per utterance, their unscaled
features are stored as float16 arrow files keyed by everything they depend on (each with a checksum file that is
checked before the file is reused), the joint scaler is fitted on the cached training split, and training batches
are scaled as they are collated.

The training script, the benchmarks and any experiment runner share this module, so the features that one of them
caches are the features the others read, and they train with the same paper settings (`PAPER_TRAINING_DEFAULTS`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from datasets import Array2D, Array3D, Dataset, DatasetDict, concatenate_datasets
from datasets.fingerprint import Hasher
from huggingface_hub import try_to_load_from_cache
from transformers import EarlyStoppingCallback, PreTrainedModel, Trainer, TrainingArguments
from transformers.trainer_utils import PredictionOutput

import processing_hyfuser
from configuration_hyfuser import HyFusERConfig
from metrics_hyfuser import compute_metrics
from processing_hyfuser import BACKBONE_DTYPES, HyFusERProcessor

logger = logging.getLogger(__name__)

FEATURE_COLUMNS = ("text_features", "speech_features")
"""The processor's two outputs, one `Array2D` column each in the cache."""

FEATURE_DTYPE = "float16"
"""Dtype of the on-disk feature cache: half the size of float32, and the scaler's inputs need no more precision."""

PAPER_TRAINING_DEFAULTS: dict[str, Any] = {
    # Table 3: Adam at a fixed learning rate. AdamW with zero weight decay is exactly Adam (TrainingArguments has no
    # plain "adam"), eps 1e-7 is Keras's default (Table 3 uses Keras's names), and "constant" keeps the rate fixed.
    # The fused kernel is the same update in one step instead of ~900 small ops (benchmarks/README.md).
    "optim": "adamw_torch_fused",
    "weight_decay": 0.0,
    "adam_epsilon": 1e-7,
    # Keras's Adam does not clip gradients; the Trainer's default would clip to norm 1.0.
    "max_grad_norm": 0.0,
    "learning_rate": 1e-4,
    "lr_scheduler_type": "constant",
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 32,
    "num_train_epochs": 30,
    # Table 3: early stopping and model checkpointing both monitor validation accuracy, checked every epoch.
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "logging_strategy": "epoch",
    "load_best_model_at_end": True,
    "metric_for_best_model": "accuracy",
    "greater_is_better": True,
    "save_total_limit": 2,
    # Every HyFusER parameter takes part in every forward pass.
    "ddp_find_unused_parameters": False,
}
"""The paper's training protocol as `TrainingArguments` values: the training script's defaults (anything given on
the command line still wins) and the setting the benchmarks time."""

TRAINING_RECIPES: dict[str, dict[str, Any]] = {
    "paper": {},
    "stable": {"initializer": "glorot_uniform", "early_stopping_patience": 0},
}
"""What `--recipe` changes on top of the paper's training defaults (and the demo's), for every model alike; explicit
flags still win. 'paper' is Table 3 with transformers' initialisation. 'stable' starts every linear and convolution
from Keras's Glorot-uniform weights instead of normal(0, 0.02), which leaves the loss plateau of the first epochs
sooner, and trains every epoch, restoring the best one on the model-selection set, instead of stopping after 3 epochs
without improvement counted from epoch 1, which ends runs still on that plateau (docs/collapse/README.md)."""


def _file_stamp(path: Path) -> tuple[int, int]:
    """Size and modification time: a file's identity for the cache key, without reading gigabytes of audio."""
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _backbone_key(name: str) -> Any:
    """A backbone's identity for the cache key: a local directory by its files' stamps; a Hub id by the cached
    snapshot it resolves to (the path holds the commit hash), so a new upstream revision re-extracts."""
    if os.path.isdir(name):
        return [(str(path), *_file_stamp(path)) for path in sorted(Path(name).rglob("*")) if path.is_file()]
    snapshot = try_to_load_from_cache(name, "config.json")
    return snapshot if isinstance(snapshot, str) else name


def feature_cache_key(split: Dataset, processor: HyFusERProcessor) -> str:
    """A fingerprint of everything the cached features depend on.

    That is the rows (ids, texts, labels, audio paths) and the audio files' stamps, both backbones, the processor's
    settings (sequence length, tokenizer, feature extractor, windowing), the backbones' compute dtype (not their
    device, nor the number of processes that extract) and the extraction code itself, so a change
    to any of them re-extracts instead of silently reusing stale features.
    """
    return Hasher.hash(
        {
            "rows": split.to_dict(),
            "audio": [_file_stamp(Path(path)) for path in split["audio"]],
            "text_backbone": _backbone_key(processor.text_backbone),
            "speech_backbone": _backbone_key(processor.speech_backbone),
            "processor": Hasher.hash(processor),
            "code": Path(processing_hyfuser.__file__).read_bytes(),
            "dtype": FEATURE_DTYPE,
            "backbone_dtype": str(processor.backbone_dtype),
        }
    )


def transcribe_corpus(
    raw_datasets: DatasetDict, processor: HyFusERProcessor, cache_dir: str | os.PathLike, batch_size: int = 16
) -> DatasetDict:
    """Every split with its `text` replaced by what `processor.asr_model` hears in the audio: training on ASR
    transcripts, as the model will see them where users have recordings only.

    Transcripts are cached in `cache_dir/transcripts/<split>-<key>.arrow`, keyed by the rows, the audio files and the
    recognizer. Utterances in which the recognizer hears nothing are dropped, and their ids logged.
    """
    cache_dir = Path(cache_dir) / "transcripts"
    cache_dir.mkdir(parents=True, exist_ok=True)
    transcribed = DatasetDict()
    for name, split in raw_datasets.items():
        key = Hasher.hash(
            {
                "rows": split.to_dict(),
                "audio": [_file_stamp(Path(path)) for path in split["audio"]],
                "asr_model": _backbone_key(processor.asr_model),
                "asr_language": processor.asr_language,
            }
        )
        logger.info("Transcribing %s audio with %s (cache: %s)", name, processor.asr_model, cache_dir)
        heard = split.map(
            _transcribe_batch,
            fn_kwargs={"processor": processor},
            batched=True,
            batch_size=batch_size,
            cache_file_name=str(cache_dir / f"{name}-{key}.arrow"),
            new_fingerprint=key,
            desc=f"Transcribing {name}",
        )
        silent = [row["id"] for row in heard if not row["text"]]
        if silent:
            logger.warning("Dropped %d %s utterances the recognizer heard no words in: %s", len(silent), name, silent)
            heard = heard.filter(lambda row: bool(row["text"]))
        transcribed[name] = heard
    return transcribed


def _transcribe_batch(batch: dict[str, list], processor: HyFusERProcessor) -> dict[str, list[str]]:
    waveforms = [processor.load_audio(path) for path in batch["audio"]]
    return {"text": processor.recognize(waveforms, processor.asr_model)}


def _extract_batch(batch: dict[str, list], processor: HyFusERProcessor) -> dict[str, np.ndarray]:
    """Unscaled features of one batch, in the cache's compact dtype; with `feature_mode="native"` each item at its own
    length (the padding is added per training batch)."""
    if processor.feature_mode == "native":
        waveforms = [processor.load_audio(path) for path in batch["audio"]]
        return {
            "text_features": [states.numpy().astype(FEATURE_DTYPE) for states in processor.encode_text(batch["text"])],
            "speech_features": [frames.numpy().astype(FEATURE_DTYPE) for frames in processor.encode_speech(waveforms)],
        }
    features = processor(batch["text"], batch["audio"], scale=False)
    return {name: features[name].numpy().astype(FEATURE_DTYPE) for name in FEATURE_COLUMNS}



def model_config(
    processor: HyFusERProcessor,
    text_backbone: str,
    speech_backbone: str,
    config_overrides: str | None = None,
    initializer: str = "normal",
) -> HyFusERConfig:
    """The config of a model trained on `processor`'s features: the feature fields the processor decides (widths,
    lengths, mode), the backbones' names and the `initializer`, then `config_overrides` ("key=value,..."), checked
    against the processor."""
    config = HyFusERConfig(
        **processor.model_config_fields(),
        text_backbone=text_backbone,
        speech_backbone=speech_backbone,
        initializer=initializer,
    )
    if config_overrides:
        config.update_from_string(config_overrides)
    processor.check_compatible(config)
    return config

def place_backbones(processor: HyFusERProcessor, device: str | torch.device, dtype_name: str) -> HyFusERProcessor:
    """Run `processor`'s frozen backbones on this process's `device` (the one the Trainer reports, e.g. `cuda:3` on
    rank 3 of a node) in the compute dtype named `dtype_name` (a `BACKBONE_DTYPES` key)."""
    if dtype_name not in BACKBONE_DTYPES:
        raise ValueError(f"extraction dtype must be one of {list(BACKBONE_DTYPES)}, got {dtype_name!r}")
    logger.info("The frozen backbones run on %s in %s", device, dtype_name)
    return processor.to(device, backbone_dtype=BACKBONE_DTYPES[dtype_name])


def shard_files(cache_dir: Path, split_name: str, key: str, num_shards: int) -> list[Path]:
    """The files that `num_shards` processes write a split's features to, in row order."""
    return [cache_dir / f"{split_name}-{key}-{index:05d}-of-{num_shards:05d}.arrow" for index in range(num_shards)]


def _shard_sets(cache_dir: Path, split_name: str, key: str) -> list[list[Path]]:
    """Every set of shards of a split's cache that any of its files (data or checksum) names, complete or not."""
    counts = {int(match[1]) for path in cache_dir.glob(f"{split_name}-{key}-*-of-*.arrow*")
              if (match := re.search(r"-of-(\d+)\.arrow", path.name))}  # fmt: skip
    return [shard_files(cache_dir, split_name, key, count) for count in sorted(counts)]


class FeatureCacheError(RuntimeError):
    """Cached features that cannot be trusted: missing, cut short, changed since written, or never finished."""


def checksum_file(path: Path) -> Path:
    """Where the size, row count and SHA-256 of cache file `path` are recorded."""
    return path.with_name(path.name + ".checksum.json")


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def write_checksum(path: Path, rows: int) -> None:
    """Record the finished cache file `path`'s size, row count and SHA-256 beside it. The record is written under a
    temporary name and renamed, so it exists only once the data file is whole: a file without one is half-written."""
    record = {"bytes": path.stat().st_size, "rows": rows, "sha256": _sha256(path)}
    temporary = checksum_file(path).with_suffix(".tmp")
    temporary.write_text(json.dumps(record))
    os.replace(temporary, checksum_file(path))


def cache_file_problem(path: Path, hash_contents: bool = True) -> str | None:
    """What is wrong with cache file `path`, or None when it is as its checksum file recorded: there, of the same
    size, bytes and rows. Without `hash_contents` only its presence and size are checked."""
    if not path.exists():
        return "missing shard: other shards of the same set are there, this one is not"
    if not checksum_file(path).exists():
        return (
            f"missing checksum file {checksum_file(path).name}: the file is half-written (the run writing it "
            "stopped) or was written before the cache had checksums"
        )
    try:
        record = json.loads(checksum_file(path).read_text())
        written, digest = int(record["bytes"]), str(record["sha256"])
    except (ValueError, KeyError, TypeError):
        return f"unreadable checksum file {checksum_file(path).name}"
    size = path.stat().st_size
    if size != written:
        return f"size mismatch: {size:,} bytes on disk, {written:,} when written (cut short or overwritten)"
    if not hash_contents:
        return None
    if _sha256(path) != digest:
        return "checksum mismatch: same size, other bytes than when written (corrupted on disk or overwritten)"
    if (rows := Dataset.from_file(str(path)).num_rows) != record["rows"]:
        return f"row count mismatch: {rows} rows, {record['rows']} when written"
    return None


def verify_cache_files(files: list[Path]) -> dict[str, str]:
    """The problems of `files` (file name -> what is wrong), found by every process of the run together: each
    checks every file's presence and size and hashes only its share of them, and all get every problem found."""
    state = PartialState()
    started, hashed = time.perf_counter(), []
    problems = {}
    for index, path in enumerate(files):
        mine = index % state.num_processes == state.process_index
        if problem := cache_file_problem(path, hash_contents=mine):
            problems[str(path)] = problem
        elif mine:
            hashed.append(path.stat().st_size)
    if hashed:
        logger.info(
            "Checked cached features against their checksums: %d file(s), %.1f MiB hashed in %.2f s",
            len(hashed), sum(hashed) / 2**20, time.perf_counter() - started,
        )  # fmt: skip
    return {path: problem for found in gather_object([problems]) for path, problem in found.items()}


def _shared_storage_error(cache_dir: Path, what: str) -> RuntimeError:
    return RuntimeError(
        f"{what}: every process must see the same feature cache, so --cache_dir ({cache_dir}) must be on storage "
        "that every node mounts at that path (NFS, a cluster file system), not on a node's local disk"
    )


def _unusable_cache_error(failed: dict[str, dict[str, str]], reusable: list[str]) -> FeatureCacheError:
    """The error for the splits in `failed` (split -> file -> problem), naming the flag that re-extracts them."""
    reused = f" (the {', '.join(reusable)} features passed the check and are reused)" if reusable else ""
    return FeatureCacheError(
        "cached features failed their check, so they were not used:\n"
        + "".join(f"  {path}: {problem}\n" for problems in failed.values() for path, problem in problems.items())
        + f"Run again with --rebuild_cache to re-extract the {', '.join(failed)} features{reused}."
    )


def _reusable_shards(cache_dir: Path, keys: dict[str, str], rebuild: bool) -> dict[str, list[Path] | None]:
    """Each split's cached shards (split name -> its key in `keys`) if every file of its cache passes the check, or
    None when there is nothing to reuse. A split whose files fail it raises a `FeatureCacheError`, or with `rebuild`
    loses its files and is extracted again. Every process of the run gets the same answer."""
    state = PartialState()
    shard_sets = {name: _shard_sets(cache_dir, name, key) for name, key in keys.items()}
    files = {name: [file for shards in sets for file in shards] for name, sets in shard_sets.items()}
    # Decide together: a process that found the cache would otherwise skip the wait the extracting ones enter.
    seen = {
        name: sorted(path.name for file in split_files for path in (file, checksum_file(file)) if path.exists())
        for name, split_files in files.items()
    }
    if any(other != seen for other in gather_object([seen])):
        raise _shared_storage_error(cache_dir, "the processes of this run found different cached features")
    problems = verify_cache_files([file for split_files in files.values() for file in split_files])
    failed = {
        name: {str(file): problems[str(file)] for file in split_files if str(file) in problems}
        for name, split_files in files.items()
        if any(str(file) in problems for file in split_files)
    }
    if failed and not rebuild:
        raise _unusable_cache_error(failed, [name for name in files if files[name] and name not in failed])
    for name, split_problems in failed.items():
        logger.warning(
            "Re-extracting the %s features (--rebuild_cache); their cached files failed the check: %s",
            name, "; ".join(f"{path}: {problem}" for path, problem in split_problems.items()),
        )  # fmt: skip
        if state.is_local_main_process:  # each node's, in case the storage is not shared; the others wait
            for file in files[name]:
                file.unlink(missing_ok=True)
                checksum_file(file).unlink(missing_ok=True)
        shard_sets[name] = []
    state.wait_for_everyone()
    return {name: sets[0] if sets else None for name, sets in shard_sets.items()}


def cache_features(
    raw_datasets: DatasetDict,
    processor: HyFusERProcessor,
    cache_dir: str | os.PathLike,
    batch_size: int = 16,
    rebuild: bool = False,
) -> DatasetDict:
    """Run the frozen backbones once per utterance of every split, streaming the unscaled features into
    `cache_dir/features/<split>-<key>-<shard>-of-<shards>.arrow`, or reuse a complete set of such files.

    Every process of the run (`accelerate.PartialState`, one process when not launched) extracts its contiguous
    1/N of each split (`Dataset.shard`) into its own file; once all have finished, each reads the whole split back
    in row order (`concatenate_datasets`). The rows and their order are the same whatever N is, and so are the
    features up to float16 rounding, so a cache written by any number of processes is reused by any other.
    `batch_size` utterances go through the backbones, and to disk, at a time. Within a process extraction is
    sequential on purpose: `datasets.map(num_proc>1)` forks, and forked workers can hang once torch's thread pools
    have started.

    Each file gets a checksum file (`write_checksum`) once complete, and cached files are reused only when they match
    it (`cache_file_problem`). A split whose files do not (cut short, changed, never finished, a shard missing) stops
    the run with a `FeatureCacheError` naming each file and its problem; with `rebuild` its files are deleted and it
    is extracted again, while splits that pass are reused.
    """
    state = PartialState()
    cache_dir = Path(cache_dir) / "features"
    cache_dir.mkdir(parents=True, exist_ok=True)
    keys = {name: feature_cache_key(split, processor) for name, split in raw_datasets.items()}
    cached = _reusable_shards(cache_dir, keys, rebuild)

    check_cache_fits(processor, sum(len(split) for name, split in raw_datasets.items() if not cached[name]), cache_dir)
    shapes = processor.feature_shapes()
    for name, split in raw_datasets.items():
        if cached[name]:
            logger.info("Reusing cached %s features from %s (no extraction)", name, ", ".join(map(str, cached[name])))
            continue
        cached[name] = shard_files(cache_dir, name, keys[name], state.num_processes)
        shard = split.shard(num_shards=state.num_processes, index=state.process_index, contiguous=True)
        shard_file = cached[name][state.process_index]
        logger.info(
            "Extracting %s features for %d utterances (shard %d of %d, of %d) into %s",
            name, len(shard), state.process_index + 1, state.num_processes, len(split), shard_file,
        )  # fmt: skip
        schema = split.features.copy()
        schema.update({column: _array_feature(shapes[column]) for column in FEATURE_COLUMNS})
        extracted = shard.map(
            _extract_batch,
            fn_kwargs={"processor": processor},
            batched=True,
            batch_size=batch_size,
            writer_batch_size=batch_size,
            features=schema,
            cache_file_name=str(shard_file),
            load_from_cache_file=False,  # a file there was not checked: what is reused went through the check above
            new_fingerprint=f"{keys[name]}-{shard_file.stem}",
            desc=f"Extracting {name} features",
        )
        write_checksum(shard_file, len(extracted))
    state.wait_for_everyone()

    features = DatasetDict()
    for name, files in cached.items():
        if missing := [str(path) for file in files for path in (file, checksum_file(file)) if not path.exists()]:
            raise _shared_storage_error(cache_dir, f"this process cannot see {name} feature shards {missing}")
        features[name] = concatenate_datasets([Dataset.from_file(str(file)) for file in files])
        if len(features[name]):
            logger.info(
                "Cached %s features: %s bytes on disk per utterance, measured (%s)",
                name, f"{sum(file.stat().st_size for file in files) // len(features[name]):,}", cache_dir,
            )  # fmt: skip
    return features


def _array_feature(shape: tuple[int, ...]) -> Array2D | Array3D:
    return (Array2D if len(shape) == 2 else Array3D)(shape, FEATURE_DTYPE)


def cache_bytes_per_utterance(processor: HyFusERProcessor) -> int:
    """Bytes one utterance's features take in the cache (both modalities, `FEATURE_DTYPE`; every layer with
    `layer_weighting`). Native-length features have no fixed size: `cache_features` logs what they measured."""
    if processor.feature_mode == "native":
        raise ValueError("with feature_mode='native' the cache's size per utterance depends on each utterance's length")
    itemsize = np.dtype(FEATURE_DTYPE).itemsize
    return sum(int(np.prod(shape)) * itemsize for shape in processor.feature_shapes().values())


def check_cache_fits(processor: HyFusERProcessor, utterances: int, cache_dir: Path) -> None:
    """Log the cache's size per utterance and refuse, before extracting anything, when the `utterances` still to
    extract would not fit on `cache_dir`'s disk. With `feature_mode="native"` the size depends on each utterance's
    length, so only the measured size is logged, after extraction."""
    if processor.feature_mode == "native":
        return
    per_utterance = cache_bytes_per_utterance(processor)
    free = shutil.disk_usage(cache_dir).free
    logger.info(
        "Feature cache: %s bytes (%.1f KiB) per utterance, %s; %d utterances to extract need about %.1f MiB, "
        "%.1f MiB free in %s",
        f"{per_utterance:,}", per_utterance / 1024, processor.feature_shapes(), utterances,
        utterances * per_utterance / 2**20, free / 2**20, cache_dir,
    )  # fmt: skip
    if utterances * per_utterance > free:
        raise ValueError(
            f"the feature cache needs about {utterances * per_utterance / 2**30:.2f} GiB for {utterances} utterances "
            f"({per_utterance:,} bytes each, {processor.feature_shapes()}) but {cache_dir} has only "
            f"{free / 2**30:.2f} GiB free: free some space, choose another --cache_dir, or keep one layer instead "
            "of layer_weighting"
        )


def fit_scaler_on_cache(processor: HyFusERProcessor, train_features: Dataset, batch_size: int = 256) -> None:
    """Fit the joint scaler (Eqs. 4-6) on the cached training split only, in one streaming pass (with
    `feature_mode="native"`, over the real positions of each item: no padding is counted)."""
    if processor.feature_mode == "native":
        rows = train_features.with_format("numpy", columns=list(FEATURE_COLUMNS))
        batches = ((row["text_features"], row["speech_features"]) for row in rows)
    else:
        batches = train_features.with_format("numpy", columns=list(FEATURE_COLUMNS)).iter(batch_size=batch_size)
        batches = ((batch["text_features"], batch["speech_features"]) for batch in batches)
    processor.fit_scaler(batches)
    logger.info("Joint scaler fitted on %d training feature positions", processor.scaler_count)


def collate_scaled_features(examples: list[dict[str, torch.Tensor]], processor: HyFusERProcessor) -> dict:
    """Stack cached float16 features into a float32 batch scaled with the training split's joint scaler.

    Scaling per batch rather than in the cache keeps one cache valid whichever split the scaler was fitted on. With
    `feature_mode="native"` the batch is padded to its longest item and carries the attention masks.
    """
    labels = torch.stack([example["label"] for example in examples])
    if processor.feature_mode == "native":
        batch = dict(processor.pad_features(*([example[name] for example in examples] for name in FEATURE_COLUMNS)))
        batch["text_features"], batch["speech_features"] = processor.scale(
            batch["text_features"], batch["speech_features"]
        )
        return {**batch, "labels": labels}
    text_features, speech_features = processor.scale(
        torch.stack([example["text_features"] for example in examples]),
        torch.stack([example["speech_features"] for example in examples]),
    )
    return {"text_features": text_features, "speech_features": speech_features, "labels": labels}


def trainer_dataset(features: Dataset) -> Dataset:
    """Cached features and labels as torch tensors: the columns `collate_scaled_features` batches."""
    return features.select_columns([*FEATURE_COLUMNS, "label"]).with_format("torch")


class CheckpointProcessor:
    """The processor as the Trainer saves it with every checkpoint: settings, fitted scaler, tokenizer and feature
    extractor, with the frozen backbones named where they are (`HyFusERProcessor.backbone_references`), not copied.

    Copies would cost hundreds of MB and seconds per checkpoint, and a process that had not loaded the backbones
    yet would load them at its first save. What training ends with is saved by `save_hyfuser`, self-contained.
    """

    def __init__(self, processor: HyFusERProcessor):
        processor.backbone_references()  # refuse a processor checkpoints cannot name the backbones of, before training
        self.processor = processor

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> list[str]:
        return self.processor.save_pretrained(save_directory, save_backbones=False, **kwargs)


FEATURE_PLACEMENTS = ("auto", "always", "never")
"""`--features_on_device`: whether training reads the cached features from the device (`keep_features_on_device`)."""

_READ_ROWS = 512
"""Rows per read while loading a split onto the device: a few hundred MB of host memory at the paper's shape."""

STREAMING_WORKERS = 2
"""The training scripts' default `--dataloader_num_workers`: processes that read and collate the next batches from
the on-disk cache while the model trains, when the features stay on disk."""


class FeatureRow(NamedTuple):
    """An item of `DeviceFeatures`: which row of which store, for `collate_features` to gather."""

    store: DeviceFeatures
    index: int


class DeviceFeatures(torch.utils.data.Dataset):
    """A split of the feature cache and its labels, read once into tensors on `device` in the cache's dtype.

    Its items are row numbers (`FeatureRow`); `batch` gathers and scales rows where they are, so the `DataLoader`
    moves no features and batches cost a few kernels instead of a decode per row. Batches are value for value those
    of `collate_scaled_features` on the same rows, the masks of native-length features included.
    """

    def __init__(self, features: Dataset, processor: HyFusERProcessor, device: str | torch.device):
        self.device = torch.device(device)
        self.native = processor.feature_mode == "native"
        self.statistics = [tuple(torch.from_numpy(array).to(self.device) for array in pair)
                           for pair in processor.scaler_statistics()]  # fmt: skip
        self.labels = torch.as_tensor(np.asarray(features["label"], dtype=np.int64), device=self.device)
        self.values: dict[str, torch.Tensor] = {}
        self.spans: dict[str, list[tuple[int, int]]] = {}
        for name in FEATURE_COLUMNS:
            lengths = _row_lengths(features, name) if self.native else None
            self.values[name] = _read_column(features, name, lengths, self.device)
            if self.native:
                self.spans[name] = list(zip(np.cumsum([0, *lengths[:-1]]).tolist(), lengths))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> FeatureRow:
        return FeatureRow(self, index)

    @property
    def nbytes(self) -> int:
        return sum(tensor.nbytes for tensor in (self.labels, *self.values.values()))

    def batch(self, rows: Sequence[int]) -> dict[str, torch.Tensor]:
        """Rows `rows` as a float32 batch scaled with the joint scaler, and their labels."""
        index = torch.tensor(rows, dtype=torch.int64)
        if self.device.type == "cuda":  # copied from pinned memory, the rows do not wait for the queued steps
            index = index.pin_memory()
        index = index.to(self.device, non_blocking=True)
        batch = {}
        for name, (mean, std) in zip(FEATURE_COLUMNS, self.statistics):
            if self.native:
                batch[name], batch[name.replace("features", "attention_mask")] = self._padded(name, rows)
            else:
                batch[name] = self.values[name].index_select(0, index).float()
            batch[name].sub_(mean).div_(std)
        return {**batch, "labels": self.labels.index_select(0, index)}

    def _padded(self, name: str, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Native-length rows zero-padded to the longest, as float32, and their mask (1 real, 0 padding)."""
        spans = [self.spans[name][row] for row in rows]
        longest = max(length for _, length in spans)
        features = torch.zeros(len(rows), longest, self.values[name].shape[-1], device=self.device)
        mask = torch.zeros(len(rows), longest, dtype=torch.long, device=self.device)
        for row, (start, length) in enumerate(spans):
            features[row, :length] = self.values[name][start : start + length]
            mask[row, :length] = 1
        return features, mask


def _row_lengths(features: Dataset, name: str) -> list[int]:
    """Positions per row of a native-length feature column, read from the Arrow list offsets alone."""
    batches = features.with_format("arrow", columns=[name]).iter(batch_size=_READ_ROWS)
    return [length for table in batches for length in pc.list_value_length(_storage(table[name])).to_pylist()]


def _read_column(features: Dataset, name: str, lengths: list[int] | None, device: torch.device) -> torch.Tensor:
    """A feature column as one tensor on `device` in the cache's dtype, read in chunks straight from the Arrow
    buffers: (rows, *shape) for fixed shapes, (positions, width) of every row one after another for native ones."""
    shape = features.features[name].shape
    rows = (len(features), *shape) if lengths is None else (sum(lengths), shape[-1])
    values = torch.empty(rows, dtype=getattr(torch, FEATURE_DTYPE), device=device)
    filled = 0
    for table in features.with_format("arrow", columns=[name]).iter(batch_size=_READ_ROWS):
        flat = _storage(table[name])
        for _ in shape:
            flat = flat.flatten()
        chunk = torch.from_numpy(flat.to_numpy(zero_copy_only=False, writable=True)).view(-1, *rows[1:])
        values[filled : filled + len(chunk)] = chunk
        filled += len(chunk)
    return values


def _storage(column: pa.ChunkedArray) -> pa.Array:
    """The nested lists under an `Array2D`/`Array3D` column."""
    return column.combine_chunks().storage


def feature_bytes(features: Dataset) -> int:
    """About how many bytes `features`' feature columns hold (their Arrow buffers' share for its rows)."""
    table = features.data
    return sum(table.column(name).nbytes for name in FEATURE_COLUMNS) * len(features) // max(table.num_rows, 1)


def free_memory(device: torch.device) -> int | None:
    """Bytes free on `device` (the CPU's available RAM), or None where torch cannot tell."""
    if device.type == "cpu":
        return psutil.virtual_memory().available
    mem_get_info = getattr(getattr(torch, device.type, None), "mem_get_info", None)
    return mem_get_info(device)[0] if mem_get_info else None


def keep_features_on_device(
    splits: Sequence[Dataset], device: torch.device, placement: str = "auto", memory_share: float = 0.5
) -> bool:
    """Whether training keeps `splits`' features on `device` (`placement` "always"/"never"), or, with "auto", whether
    they fit in `memory_share` of the memory free there: on the CPU divided among this machine's processes, which
    each hold their own copy."""
    if placement not in FEATURE_PLACEMENTS:
        raise ValueError(f"features_on_device must be one of {FEATURE_PLACEMENTS}, got {placement!r}")
    if not 0 < memory_share <= 1:
        raise ValueError(f"features_memory_share must be in (0, 1], got {memory_share}")
    if placement != "auto":
        return placement == "always"
    needed, free = sum(map(feature_bytes, splits)), free_memory(device)
    if free is None:
        logger.info("Streaming the cached features: torch cannot tell how much memory is free on %s", device)
        return False
    sharing = int(os.environ.get("LOCAL_WORLD_SIZE", 1)) if device.type == "cpu" else 1
    budget = memory_share * free / sharing
    logger.info(
        "The cached features take %.1f MiB; %.0f%% of the %.1f MiB free on %s%s is %.1f MiB: %s",
        needed / 2**20, 100 * memory_share, free / 2**20, device,
        f" shared by {sharing} processes" if sharing > 1 else "", budget / 2**20,
        "loading them there" if needed <= budget else "streaming them from the cache",
    )  # fmt: skip
    return needed <= budget


def collate_features(examples: list[FeatureRow] | list[dict[str, torch.Tensor]], processor: HyFusERProcessor) -> dict:
    """The Trainer's collator for both paths: rows of a `DeviceFeatures` store are gathered where they lie, rows
    streamed from the cache go through `collate_scaled_features`."""
    if isinstance(examples[0], FeatureRow):
        return examples[0].store.batch([example.index for example in examples])
    return collate_scaled_features(examples, processor)


def feature_datasets(
    training_args: TrainingArguments,
    processor: HyFusERProcessor,
    splits: Sequence[Dataset],
    placement: str = "auto",
    memory_share: float = 0.5,
) -> tuple[TrainingArguments, list[DeviceFeatures | Dataset]]:
    """The Trainer's datasets for `splits` and the arguments its data loaders run with.

    On the device (`keep_features_on_device`) batches are gathered in the training process, so the loaders take no
    workers and pin nothing. Streamed, `--dataloader_num_workers` processes read and collate ahead, into pinned
    memory when training runs on an accelerator. The sampler, and so the order of the rows, is the same either way.
    """
    device = training_args.device
    if keep_features_on_device(splits, device, placement, memory_share):
        loaded = [DeviceFeatures(split, processor, device) for split in splits]
        logger.info("Loaded %.1f MiB of cached features onto %s", sum(part.nbytes for part in loaded) / 2**20, device)
        loader = {"dataloader_num_workers": 0, "dataloader_pin_memory": False, "dataloader_persistent_workers": False,
                  "dataloader_prefetch_factor": None}  # fmt: skip
    else:
        loaded = [trainer_dataset(split) for split in splits]
        loader = {"dataloader_pin_memory": training_args.dataloader_pin_memory and device.type != "cpu"}
        logger.info("Streaming the cached features from disk: %d loader workers", training_args.dataloader_num_workers)
    if any(getattr(training_args, key) != value for key, value in loader.items()):
        training_args = dataclasses.replace(training_args, **loader)
    return training_args, loaded


def feature_trainer(
    model: PreTrainedModel,
    training_args: TrainingArguments,
    processor: HyFusERProcessor,
    train_features: Dataset,
    eval_features: Dataset,
    early_stopping_patience: int = 3,
    features_on_device: str = "auto",
    features_memory_share: float = 0.5,
) -> Trainer:
    """The `Trainer` that `train_on_features` runs: batches scaled with `processor`'s fitted joint scaler, read from
    where `features_on_device` and `features_memory_share` put the features (`feature_datasets`), `eval_features`
    evaluated every time `training_args` says and early stopping after `early_stopping_patience` evaluations without
    improvement (0: never)."""
    training_args, (train_dataset, eval_dataset) = feature_datasets(
        training_args, processor, (train_features, eval_features), features_on_device, features_memory_share
    )
    return Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=partial(collate_features, processor=processor),
        compute_metrics=compute_metrics,
        processing_class=CheckpointProcessor(processor),
        callbacks=[EarlyStoppingCallback(early_stopping_patience)] if early_stopping_patience else [],
    )


def train_on_features(
    model: PreTrainedModel,
    training_args: TrainingArguments,
    processor: HyFusERProcessor,
    train_features: Dataset,
    eval_features: Dataset,
    early_stopping_patience: int = 3,
    resume_from_checkpoint: str | bool | None = None,
    features_on_device: str = "auto",
    features_memory_share: float = 0.5,
) -> tuple[Trainer, PredictionOutput]:
    """Train `model` on cached features with the `Trainer` and predict `eval_features` with the restored best model.

    Batches are scaled with `processor`'s fitted joint scaler; `eval_features` is evaluated every time
    `training_args` says, picks the checkpoint restored at the end and stops training after `early_stopping_patience`
    evaluations without improvement (0: never). Train and eval metrics and the trainer state go to `output_dir`;
    checkpoints hold the model, optimizer, scheduler, random states and the processor without its backbones
    (`CheckpointProcessor`). `features_on_device` and `features_memory_share` decide where batches are read from
    (`feature_trainer`).
    """
    trainer = feature_trainer(
        model, training_args, processor, train_features, eval_features, early_stopping_patience,
        features_on_device, features_memory_share,
    )  # fmt: skip
    train_result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()
    prediction = trainer.predict(trainer.eval_dataset, metric_key_prefix="eval")
    trainer.log_metrics("eval", prediction.metrics)
    trainer.save_metrics("eval", prediction.metrics)
    return trainer, prediction


PROBE_L2_GRID: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
"""The L2 penalties `fit_linear_probe` chooses among, weakest first: the coefficient of half the squared weight norm
next to the mean cross-entropy (scikit-learn's `C` is 1 / (penalty x rows))."""

PROBE_ITERATIONS = 500
"""The most L-BFGS iterations of one fit; it stops earlier once the gradient or the loss no longer changes."""


def _scaled_batches(features: Dataset, processor: HyFusERProcessor, batch_size: int) -> torch.utils.data.DataLoader:
    """Cached rows in order, in batches scaled exactly as training batches are."""
    return torch.utils.data.DataLoader(
        trainer_dataset(features),
        batch_size=batch_size,
        collate_fn=partial(collate_scaled_features, processor=processor),
    )


@torch.no_grad()
def predict_log_probabilities(
    model: PreTrainedModel, processor: HyFusERProcessor, features: Dataset, batch_size: int = 256
) -> np.ndarray:
    """`model`'s fused log-probabilities of the cached rows, (rows, num_labels), in evaluation mode."""
    model.eval()
    return np.concatenate(
        [
            model(batch["text_features"], batch["speech_features"]).logits.float().numpy()
            for batch in _scaled_batches(features, processor, batch_size)
        ]
    )


@torch.no_grad()
def _pooled_features(
    probe: PreTrainedModel, processor: HyFusERProcessor, features: Dataset, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """`probe.pool` of the scaled cached rows, in float64, and their labels."""
    pooled, labels = [], []
    for batch in _scaled_batches(features, processor, batch_size):
        pooled.append(probe.pool(batch["text_features"], batch["speech_features"]).double())
        labels.append(batch["labels"])
    return torch.cat(pooled), torch.cat(labels)


def _logistic_regression(
    inputs: torch.Tensor, labels: torch.Tensor, num_labels: int, l2: float, max_iterations: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias minimising mean cross-entropy + l2 / 2 x |weight|^2 (the bias is not penalised), by full-batch
    L-BFGS from zeros: a convex problem with one minimum, reached the same way on every run."""
    weight = torch.zeros(num_labels, inputs.shape[1], dtype=inputs.dtype, requires_grad=True)
    bias = torch.zeros(num_labels, dtype=inputs.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], max_iter=max_iterations, tolerance_grad=1e-9, tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )  # fmt: skip

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(inputs @ weight.T + bias, labels) + l2 / 2 * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach(), bias.detach()


def fit_linear_probe(
    probe: PreTrainedModel,
    processor: HyFusERProcessor,
    fit_features: Dataset,
    selection_features: Dataset,
    l2_grid: tuple[float, ...] = PROBE_L2_GRID,
    max_iterations: int = PROBE_ITERATIONS,
) -> float:
    """Fit a linear probe (`modeling_hyfuser.PROBE_MODELS`) on the pooled, scaled `fit_features`, once per penalty of
    `l2_grid`, and keep the fit most accurate on `selection_features` (ties go to the stronger penalty). Its weights
    are copied into `probe.classifier`; the chosen penalty is returned. No random number is drawn."""
    fit_inputs, fit_labels = _pooled_features(probe, processor, fit_features)
    selection_inputs, selection_labels = _pooled_features(probe, processor, selection_features)
    best = None
    for l2 in sorted(l2_grid):
        weight, bias = _logistic_regression(fit_inputs, fit_labels, probe.config.num_labels, l2, max_iterations)
        accuracy = ((selection_inputs @ weight.T + bias).argmax(-1) == selection_labels).double().mean().item()
        logger.info("Linear probe, L2 penalty %g: selection accuracy %.4f", l2, accuracy)
        if best is None or accuracy >= best[0]:
            best = (accuracy, l2, weight, bias)
    _, l2, weight, bias = best
    with torch.no_grad():
        probe.classifier.weight.copy_(weight)
        probe.classifier.bias.copy_(bias)
    return l2
