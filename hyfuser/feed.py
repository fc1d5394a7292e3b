"""How cached features reach the model: batches collated and scaled per step, read from disk by loader workers or
gathered from a copy kept on the training device when it fits.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import torch
from datasets import Dataset
from transformers import TrainingArguments

from hyfuser.cache import FEATURE_COLUMNS, FEATURE_DTYPE
from processing_hyfuser import HyFusERProcessor

logger = logging.getLogger(__name__)


def collate_scaled_features(examples: list[dict[str, torch.Tensor]], processor: HyFusERProcessor) -> dict:
    """Cached float16 features as one float32 batch (`processor.collate`: with attention masks where items keep their
    own lengths), scaled with the training split's joint scaler.

    Scaling per batch rather than in the cache keeps one cache valid whichever split the scaler was fitted on.
    """
    batch = dict(processor.collate(*([example[name] for example in examples] for name in FEATURE_COLUMNS)))
    batch["text_features"], batch["speech_features"] = processor.scale(batch["text_features"], batch["speech_features"])
    return {**batch, "labels": torch.stack([example["label"] for example in examples])}


def trainer_dataset(features: Dataset) -> Dataset:
    """Cached features and labels as torch tensors: the columns `collate_scaled_features` batches."""
    return features.select_columns([*FEATURE_COLUMNS, "label"]).with_format("torch")


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

    Its items are row numbers (`FeatureRow`); `batch` gathers rows where they are and has the processor collate and
    this store scale them, so the `DataLoader` moves no features and batches cost a few kernels instead of a decode
    per row. Batches are value for value those of `collate_scaled_features` on the same rows, masks included.
    """

    def __init__(self, features: Dataset, processor: HyFusERProcessor, device: str | torch.device):
        self.device = torch.device(device)
        self.processor = processor
        self.statistics = [tuple(torch.from_numpy(array).to(self.device) for array in pair)
                           for pair in processor.scaler_statistics()]  # fmt: skip
        self.labels = torch.as_tensor(np.asarray(features["label"], dtype=np.int64), device=self.device)
        self.values: dict[str, torch.Tensor] = {}
        self.spans: dict[str, list[tuple[int, int]]] = {}
        for name in FEATURE_COLUMNS:
            lengths = _row_lengths(features, name)
            self.values[name] = _read_column(features, name, lengths, self.device)
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
        batch = dict(self.processor.collate(*(self._rows(name, rows) for name in FEATURE_COLUMNS)))
        for name, (mean, std) in zip(FEATURE_COLUMNS, self.statistics):
            batch[name].sub_(mean).div_(std)
        return {**batch, "labels": self.labels.index_select(0, index)}

    def _rows(self, name: str, rows: Sequence[int]) -> list[torch.Tensor]:
        """Column `name`'s features of rows `rows`, as views of the store."""
        return [self.values[name][start : start + length] for start, length in (self.spans[name][row] for row in rows)]


def _row_lengths(features: Dataset, name: str) -> list[int]:
    """Each row's length along the first axis of a feature column, read from the Arrow list offsets alone."""
    batches = features.with_format("arrow", columns=[name]).iter(batch_size=_READ_ROWS)
    return [length for table in batches for length in pc.list_value_length(_storage(table[name])).to_pylist()]


def _read_column(features: Dataset, name: str, lengths: list[int], device: torch.device) -> torch.Tensor:
    """A feature column as one tensor on `device` in the cache's dtype, read in chunks straight from the Arrow
    buffers: the rows one after another along the first axis, (sum of `lengths`, *the rest of a row's shape)."""
    shape = features.features[name].shape
    rows = (sum(lengths), *shape[1:])
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


def scaled_batches(features: Dataset, processor: HyFusERProcessor, batch_size: int) -> torch.utils.data.DataLoader:
    """Cached rows in order, in batches scaled exactly as training batches are."""
    return torch.utils.data.DataLoader(
        trainer_dataset(features),
        batch_size=batch_size,
        collate_fn=partial(collate_scaled_features, processor=processor),
    )
