"""The feature cache's check before reuse, on real cache files that two processes extracted with the tiny backbones:
each damage a cached file can take is found and named with the flag that repairs it, and `rebuild` (--rebuild_cache)
re-extracts only the splits that failed, reusing the others as they are."""

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from audio_files import write_tone
from datasets import Dataset, DatasetDict, concatenate_datasets
from two_processes import launch_two_processes

from hyfuser.cache import FEATURE_COLUMNS, FeatureCacheError, cache_features, checksum_file
from processing_hyfuser import HyFusERProcessor

SEQUENCE_LENGTH = 8
ROWS = {"train": 6, "validation": 4}

LAUNCH_SCRIPT = """
import json, sys
sys.path.insert(0, {repo!r})
from accelerate import PartialState
from datasets import Dataset, DatasetDict
from hyfuser.cache import FeatureCacheError, cache_features
from processing_hyfuser import HyFusERProcessor

state = PartialState(cpu=True)
arguments = json.loads(sys.argv[1])
splits = DatasetDict({{name: Dataset.from_dict(rows) for name, rows in arguments["splits"].items()}})
processor = HyFusERProcessor.from_backbones(arguments["text"], arguments["speech"], sequence_length={length})
for step, rebuild in enumerate(arguments["rebuild"]):
    try:
        cache_features(splits, processor, arguments["cache_dir"], rebuild=rebuild)
        print(f"rank {{state.process_index}} step {{step}}: no error", flush=True)
    except FeatureCacheError as error:
        print(f"rank {{state.process_index}} step {{step}}: " + str(error).replace(chr(10), " | "), flush=True)
"""


def cache_in_two_processes(splits: DatasetDict, backbones, cache_dir: Path, rebuild: list[bool], workdir: Path) -> str:
    """`cache_features` in two gloo processes sharing `cache_dir`, once per entry of `rebuild`; their output."""
    script = workdir / "two_processes.py"
    script.write_text(LAUNCH_SCRIPT.format(repo=str(Path(__file__).resolve().parent.parent), length=SEQUENCE_LENGTH))
    arguments = {
        "splits": {name: split.to_dict() for name, split in splits.items()}, "text": backbones.text,
        "speech": backbones.speech, "cache_dir": str(cache_dir), "rebuild": rebuild,
    }  # fmt: skip
    completed = launch_two_processes(script, json.dumps(arguments))
    assert completed.returncode == 0, completed.stdout[-3000:]
    return completed.stdout


@pytest.fixture(scope="module")
def processor(tiny_backbones) -> HyFusERProcessor:
    return HyFusERProcessor.from_backbones(tiny_backbones.text, tiny_backbones.speech, sequence_length=SEQUENCE_LENGTH)


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> DatasetDict:
    folder = tmp_path_factory.mktemp("audio")
    splits = DatasetDict()
    for name, rows in ROWS.items():
        paths = [str(write_tone(folder / f"{name}{index}.wav", seconds=0.3 + 0.05 * index, frequency=120 + 30 * index))
                 for index in range(rows)]  # fmt: skip
        texts = [f"{index}번째 문장이에요" for index in range(rows)]
        labels = [index % 7 for index in range(rows)]
        splits[name] = Dataset.from_dict({"id": [Path(path).stem for path in paths], "text": texts, "audio": paths,
                                          "label": labels})  # fmt: skip
    return splits


@pytest.fixture(scope="module")
def sharded_cache(splits, tiny_backbones, tmp_path_factory) -> Path:
    """A `--cache_dir` whose features two processes extracted: two shards per split, each with its checksum file."""
    cache_dir = tmp_path_factory.mktemp("sharded")
    cache_in_two_processes(splits, tiny_backbones, cache_dir, [False], cache_dir)
    return cache_dir


def split_files(cache_dir: Path, split: str) -> dict[str, tuple[int, int]]:
    """A split's files in the cache (data and checksum), each with its inode and modification time."""
    return {
        path.name: (path.stat().st_ino, path.stat().st_mtime_ns)
        for path in sorted((cache_dir / "features").glob(f"{split}-*"))
    }


def train_shard(cache_dir: Path) -> Path:
    """The second of the two training shards."""
    return next((cache_dir / "features").glob("train-*-00001-of-00002.arrow"))


def change_feature_bytes(path: Path) -> None:
    """Invert 64 bytes of the first row's speech features in place: the file keeps its size and stays readable."""
    data = bytearray(path.read_bytes())
    first_row = Dataset.from_file(str(path)).with_format("numpy")[0]["speech_features"].astype(np.float16).tobytes()
    start = data.find(first_row)
    assert start > 0
    data[start : start + 64] = bytes(byte ^ 0xFF for byte in data[start : start + 64])
    path.write_bytes(bytes(data))


DAMAGES = {
    "truncated": (lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]), "size mismatch: "),
    "bytes_changed": (change_feature_bytes, "checksum mismatch: same size, other bytes than when written"),
    "shard_deleted": (lambda path: [file.unlink() for file in (path, checksum_file(path))], "missing shard: "),
    "checksum_file_deleted": (lambda path: checksum_file(path).unlink(), "missing checksum file "),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_shard_stops_the_run_naming_it_and_rebuild_re_extracts_only_its_split(
    damage, sharded_cache, splits, processor, tmp_path, caplog
):
    cache_dir = tmp_path / "cache"
    shutil.copytree(sharded_cache, cache_dir)
    damaged = train_shard(cache_dir)
    damage_file, problem = DAMAGES[damage]
    damage_file(damaged)
    if damage == "bytes_changed":  # what the check is for: the file still reads, with other features
        read, written = (Dataset.from_file(str(path)).with_format("numpy")[0]["speech_features"]
                         for path in (damaged, train_shard(sharded_cache)))  # fmt: skip
        assert read.shape == written.shape and not np.array_equal(read, written)
    before = {name: split_files(cache_dir, name) for name in ROWS}

    with pytest.raises(FeatureCacheError) as stopped:
        cache_features(splits, processor, cache_dir)
    message = str(stopped.value)
    assert f"{damaged}: {problem}" in message
    assert message.count(str(cache_dir)) == 1  # only the damaged file is named
    assert message.endswith(
        "Run again with --rebuild_cache to re-extract the train features (the validation features passed the check "
        "and are reused)."
    )
    assert {name: split_files(cache_dir, name) for name in ROWS} == before  # the failed run changed nothing

    caplog.set_level(logging.INFO, logger="hyfuser")
    rebuilt = cache_features(splits, processor, cache_dir, rebuild=True)
    extractions = [message for message in caplog.messages if message.startswith("Extracting")]
    assert len(extractions) == 1
    assert extractions[0].startswith(f"Extracting train features for {ROWS['train']} utterances (shard 1 of 1")
    assert any(message.startswith("Re-extracting the train features (--rebuild_cache)") for message in caplog.messages)
    # The validation features were not recomputed: the very same files, untouched; the train split has one new file.
    assert split_files(cache_dir, "validation") == before["validation"]
    rebuilt_files = [name.split("-", 2)[-1] for name in split_files(cache_dir, "train")]
    assert rebuilt_files == ["00000-of-00001.arrow", "00000-of-00001.arrow.checksum.json"]
    # The rebuilt features are the ones two processes extracted, up to float16 rounding.
    for name in ROWS:
        extracted = sorted((sharded_cache / "features").glob(f"{name}-*.arrow"))
        reference = concatenate_datasets([Dataset.from_file(str(path)) for path in extracted]).with_format("numpy")
        assert rebuilt[name]["id"] == reference["id"] == splits[name]["id"]
        for column in FEATURE_COLUMNS:
            features = rebuilt[name].with_format("numpy")[column]
            np.testing.assert_allclose(features, reference[column], rtol=2e-3, atol=2e-3)

    caplog.clear()
    cache_features(splits, processor, cache_dir)
    assert not [message for message in caplog.messages if message.startswith("Extracting")]


@pytest.mark.slow
def test_rebuild_of_a_cache_that_passes_the_check_reuses_every_file(sharded_cache, splits, processor, caplog):
    before = {name: split_files(sharded_cache, name) for name in ROWS}
    caplog.set_level(logging.INFO, logger="hyfuser")
    cache_features(splits, processor, sharded_cache, rebuild=True)
    assert not [message for message in caplog.messages if message.startswith(("Extracting", "Re-extracting"))]
    assert {name: split_files(sharded_cache, name) for name in ROWS} == before


@pytest.mark.slow
def test_every_process_stops_on_a_shard_that_another_process_hashed_and_all_rebuild_it(
    sharded_cache, splits, tiny_backbones, tmp_path
):
    """The processes share out the hashing: the rank that did not hash the changed shard stops all the same."""
    cache_dir = tmp_path / "cache"
    shutil.copytree(sharded_cache, cache_dir)
    damaged = train_shard(cache_dir)
    change_feature_bytes(damaged)
    before = {name: split_files(cache_dir, name) for name in ROWS}

    log = cache_in_two_processes(splits, tiny_backbones, cache_dir, [False, True], tmp_path)
    for rank in (0, 1):
        # Found anywhere on a line: the other process's progress bars end without a newline.
        stopped = next((line for line in log.splitlines() if f"rank {rank} step 0:" in line), log[-3000:])
        assert f"{damaged}: checksum mismatch" in stopped and "--rebuild_cache" in stopped, stopped
        assert f"rank {rank} step 1: no error" in log
    assert split_files(cache_dir, "validation") == before["validation"]
    # Both training shards and their checksum files were written again, by the two processes.
    rebuilt = split_files(cache_dir, "train")
    assert rebuilt.keys() == before["train"].keys()
    assert all(rebuilt[name][1] > before["train"][name][1] for name in rebuilt)
