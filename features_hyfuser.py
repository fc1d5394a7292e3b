"""The on-disk feature cache that HyFusER trains on: the frozen backbones run once per utterance, their unscaled
features are stored as float16 arrow files keyed by everything they depend on, the joint scaler is fitted on the
cached training split, and training batches are scaled as they are collated.

The training script, the benchmarks and any experiment runner share this module, so the features that one of them
caches are the features the others read, and they train with the same paper settings (`PAPER_TRAINING_DEFAULTS`).
"""

from __future__ import annotations

import logging
import os
import shutil
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
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


def _complete_shards(cache_dir: Path, split_name: str, key: str) -> list[Path] | None:
    """The files of a split's cache written by any number of processes, if one such set is complete.

    `datasets` writes each file under a temporary name and renames it when done, so an existing file is complete.
    """
    for path in sorted(cache_dir.glob(f"{split_name}-{key}-*-of-*.arrow")):
        files = shard_files(cache_dir, split_name, key, int(path.stem.rsplit("-of-", 1)[1]))
        if all(file.exists() for file in files):
            return files
    return None


def _shared_storage_error(cache_dir: Path, what: str) -> RuntimeError:
    return RuntimeError(
        f"{what}: every process must see the same feature cache, so --cache_dir ({cache_dir}) must be on storage "
        "that every node mounts at that path (NFS, a cluster file system), not on a node's local disk"
    )


def cache_features(
    raw_datasets: DatasetDict, processor: HyFusERProcessor, cache_dir: str | os.PathLike, batch_size: int = 16
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
    """
    state = PartialState()
    cache_dir = Path(cache_dir) / "features"
    cache_dir.mkdir(parents=True, exist_ok=True)
    keys = {name: feature_cache_key(split, processor) for name, split in raw_datasets.items()}
    cached = {name: _complete_shards(cache_dir, name, key) for name, key in keys.items()}
    # Decide together: a process that found the cache would otherwise skip the wait the extracting ones enter.
    seen = {name: files and [file.name for file in files] for name, files in cached.items()}
    if any(other != seen for other in gather_object([seen])):
        raise _shared_storage_error(cache_dir, "the processes of this run found different cached features")

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
        shard.map(
            _extract_batch,
            fn_kwargs={"processor": processor},
            batched=True,
            batch_size=batch_size,
            writer_batch_size=batch_size,
            features=schema,
            cache_file_name=str(shard_file),
            new_fingerprint=f"{keys[name]}-{shard_file.stem}",
            desc=f"Extracting {name} features",
        )
    state.wait_for_everyone()

    features = DatasetDict()
    for name, files in cached.items():
        if missing := [str(file) for file in files if not file.exists()]:
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


def train_on_features(
    model: PreTrainedModel,
    training_args: TrainingArguments,
    processor: HyFusERProcessor,
    train_features: Dataset,
    eval_features: Dataset,
    early_stopping_patience: int = 3,
    resume_from_checkpoint: str | bool | None = None,
) -> tuple[Trainer, PredictionOutput]:
    """Train `model` on cached features with the `Trainer` and predict `eval_features` with the restored best model.

    Batches are scaled with `processor`'s fitted joint scaler; `eval_features` is evaluated every time
    `training_args` says, picks the checkpoint restored at the end and stops training after `early_stopping_patience`
    evaluations without improvement (0: never). Train and eval metrics and the trainer state go to `output_dir`.
    """
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=trainer_dataset(train_features),
        eval_dataset=trainer_dataset(eval_features),
        data_collator=partial(collate_scaled_features, processor=processor),
        compute_metrics=compute_metrics,
        processing_class=processor,
        callbacks=[EarlyStoppingCallback(early_stopping_patience)] if early_stopping_patience else [],
    )
    train_result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()
    prediction = trainer.predict(trainer.eval_dataset, metric_key_prefix="eval")
    trainer.log_metrics("eval", prediction.metrics)
    trainer.save_metrics("eval", prediction.metrics)
    return trainer, prediction
