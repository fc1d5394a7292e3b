"""The on-disk feature cache HyFusER trains on: the frozen backbones run once per utterance, and their unscaled
features are stored as float16 arrow shards keyed by everything they depend on, each with a checksum file that is
checked before the shard is reused. The joint scaler is fitted on the cached training split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from accelerate import PartialState
from accelerate.utils import gather_object
from datasets import Array2D, Array3D, Dataset, DatasetDict, concatenate_datasets
from datasets.fingerprint import Hasher
from huggingface_hub import try_to_load_from_cache

from hyfuser.checkpoint import FEATURE_CODE_FILES, SOURCE_DIR
from processing_hyfuser import HyFusERProcessor

logger = logging.getLogger(__name__)


FEATURE_COLUMNS = ("text_features", "speech_features")
"""The processor's two outputs, one `Array2D` column each in the cache."""

FEATURE_DTYPE = "float16"
"""Dtype of the on-disk feature cache: half the size of float32, and the scaler's inputs need no more precision."""


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
    device, nor the number of processes that extract) and the extraction code itself (`FEATURE_CODE_FILES`), so a
    change to any of them re-extracts instead of silently reusing stale features.
    """
    return Hasher.hash(
        {
            "rows": split.to_dict(),
            "audio": [_file_stamp(Path(path)) for path in split["audio"]],
            "text_backbone": _backbone_key(processor.text_backbone),
            "speech_backbone": _backbone_key(processor.speech_backbone),
            "processor": Hasher.hash(processor),
            "code": [(SOURCE_DIR / name).read_bytes() for name in FEATURE_CODE_FILES],
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


def _extract_batch(batch: dict[str, list], processor: HyFusERProcessor) -> dict[str, list[np.ndarray]]:
    """Unscaled features of one batch, each item as the processor gives it (collating happens per training batch),
    in the cache's compact dtype."""
    waveforms = [processor.load_audio(path) for path in batch["audio"]]
    features = zip(FEATURE_COLUMNS, (processor.encode_text(batch["text"]), processor.encode_speech(waveforms)))
    return {name: [item.numpy().astype(FEATURE_DTYPE) for item in items] for name, items in features}


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


def cache_bytes_per_utterance(processor: HyFusERProcessor) -> int | None:
    """Bytes one utterance's features take in the cache (both modalities, `FEATURE_DTYPE`; every layer with
    `layer_weighting`), or None where each item keeps its own length (`cache_features` logs what they measured)."""
    shapes = processor.feature_shapes().values()
    if any(None in shape for shape in shapes):
        return None
    return sum(int(np.prod(shape)) * np.dtype(FEATURE_DTYPE).itemsize for shape in shapes)


def check_cache_fits(processor: HyFusERProcessor, utterances: int, cache_dir: Path) -> None:
    """Log the cache's size per utterance and refuse, before extracting anything, when the `utterances` still to
    extract would not fit on `cache_dir`'s disk. Where items keep their own lengths the size is not known before
    extraction, so only the measured size is logged, after it."""
    per_utterance = cache_bytes_per_utterance(processor)
    if per_utterance is None:
        return
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
    """Fit the joint scaler (Eqs. 4-6) on the cached training split only, in one streaming pass (over the real
    positions of each item: the cache holds no padding)."""
    batches = train_features.with_format("numpy", columns=list(FEATURE_COLUMNS)).iter(batch_size=batch_size)
    processor.fit_scaler((batch["text_features"], batch["speech_features"]) for batch in batches)
    logger.info("Joint scaler fitted on %d training feature positions", processor.scaler_count)
