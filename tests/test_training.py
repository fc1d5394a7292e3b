"""The feature cache on real tiny backbones and real wav files: what it stores, when it extracts, what its key sees."""

import copy
import functools
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from audio_files import write_tone
from datasets import Array2D, Array3D, Dataset, DatasetDict, Features, Value, concatenate_datasets
from huggingface_hub import constants
from transformers import TrainingArguments
from two_processes import launch_two_processes

from backbones_hyfuser import BACKBONE_DTYPES
from configuration_hyfuser import HyFusERConfig
from hyfuser.cache import FEATURE_COLUMNS, _backbone_key, cache_features, feature_cache_key, fit_scaler_on_cache
from hyfuser.feed import (
    DeviceFeatures,
    collate_features,
    collate_scaled_features,
    feature_bytes,
    keep_features_on_device,
    trainer_dataset,
)
from hyfuser.training import PAPER_TRAINING_DEFAULTS, feature_trainer, place_backbones, train_on_features
from modeling_hyfuser import HyFusERForEmotionRecognition
from processing_hyfuser import HyFusERProcessor
from scaling_hyfuser import FeatureStatistics

SEQUENCE_LENGTH = 8
UTTERANCES = 17
"""One more than the default extraction batch of 16, so the batch size shows in the number of backbone calls."""


@pytest.fixture(scope="module")
def processor(tiny_backbones) -> HyFusERProcessor:
    return HyFusERProcessor.from_backbones(tiny_backbones.text, tiny_backbones.speech, sequence_length=SEQUENCE_LENGTH)


@pytest.fixture
def split(tmp_path) -> Dataset:
    paths = [
        str(write_tone(tmp_path / f"utterance{index:02d}.wav", seconds=0.3 + 0.05 * index, frequency=120 + 20 * index))
        for index in range(UTTERANCES)
    ]
    texts = [f"{index}번째 문장이에요" for index in range(UTTERANCES)]
    return Dataset.from_dict({"id": [Path(path).stem for path in paths], "text": texts, "audio": paths,
                              "label": [index % 7 for index in range(UTTERANCES)]})  # fmt: skip


@pytest.fixture
def text_backbone_batches(processor):
    """The number of texts in each call of the text backbone (a forward hook on the real model)."""
    batches = []
    handle = processor.text_backbone_model.register_forward_hook(
        lambda module, inputs, output: batches.append(len(output.last_hidden_state))
    )
    yield batches
    handle.remove()


def test_cache_stores_the_unscaled_features_in_float16_and_is_reused(
    processor, split, tmp_path, caplog, text_backbone_batches
):
    caplog.set_level(logging.INFO, logger="hyfuser")
    key = feature_cache_key(split, processor)
    cache_file = tmp_path / "cache" / "features" / f"train-{key}-00000-of-00001.arrow"

    expected = processor(split["text"], split["audio"], scale=False)
    cached = cache_features(DatasetDict({"train": split}), processor, tmp_path / "cache")["train"]
    size, extraction, measured = caplog.messages
    assert extraction == (
        f"Extracting train features for {UTTERANCES} utterances (shard 1 of 1, of {UTTERANCES}) into {cache_file}"
    )
    # 2 modalities x SEQUENCE_LENGTH positions x 32 dimensions x 2 bytes (float16)
    assert size.startswith(f"Feature cache: {2 * SEQUENCE_LENGTH * 32 * 2:,} bytes (1.0 KiB) per utterance")
    assert f"; {UTTERANCES} utterances to extract need about" in size
    bytes_on_disk = cache_file.stat().st_size // UTTERANCES
    measurement = f"Cached train features: {bytes_on_disk:,} bytes on disk per utterance, measured ({cache_file.parent})"
    assert measured == measurement
    assert cache_file.is_file()
    assert text_backbone_batches[-2:] == [16, 1]  # the default batch (`datasets` may first try a sample of its own)
    calls = len(text_backbone_batches)
    for column in FEATURE_COLUMNS:
        assert cached.features[column].dtype == "float16"
        assert cached.features[column].shape == (SEQUENCE_LENGTH, 32)
    stored = cached.with_format("numpy")[:]
    for column in FEATURE_COLUMNS:
        np.testing.assert_array_equal(stored[column], expected[column].numpy().astype(np.float16))
    assert stored["label"].tolist() == split["label"]

    caplog.clear()
    again = cache_features(DatasetDict({"train": split}), processor, tmp_path / "cache")["train"]
    checked, size, reused, _ = caplog.messages
    assert checked.startswith("Checked cached features against their checksums: 1 file(s), 0.0 MiB hashed in ")
    assert "; 0 utterances to extract" in size
    assert reused == f"Reusing cached train features from {cache_file} (no extraction)"
    assert len(text_backbone_batches) == calls  # no backbone ran the second time
    np.testing.assert_array_equal(again.with_format("numpy")["text_features"], stored["text_features"])


def test_extraction_batch_size_is_the_number_of_utterances_per_backbone_call(
    processor, split, tmp_path, text_backbone_batches
):
    cache_features(DatasetDict({"train": split}), processor, tmp_path / "cache", batch_size=5)
    assert text_backbone_batches[-4:] == [5, 5, 5, 2]


def test_cache_key_changes_with_everything_the_features_depend_on(processor, split, tiny_backbones, tmp_path):
    key = feature_cache_key(split, processor)
    assert feature_cache_key(split, processor) == key  # deterministic

    edited_text = split.map(lambda row, index: {"text": row["text"] + "!" if index == 3 else row["text"]},
                            with_indices=True)  # fmt: skip
    assert feature_cache_key(edited_text, processor) != key

    write_tone(split[5]["audio"], seconds=0.9, frequency=333.0)  # the same path, re-recorded
    rewritten = feature_cache_key(split, processor)
    assert rewritten != key

    longer = HyFusERProcessor.from_backbones(tiny_backbones.text, tiny_backbones.speech, sequence_length=16)
    assert feature_cache_key(split, longer) != rewritten

    copied = Path(shutil.copytree(Path(tiny_backbones.text), tmp_path / "text"))
    retrained = HyFusERProcessor.from_backbones(str(copied), tiny_backbones.speech, sequence_length=SEQUENCE_LENGTH)
    before = feature_cache_key(split, retrained)
    weights = copied / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # new weights, same size
    touched = feature_cache_key(split, retrained)
    assert touched != before
    vocabulary = copied / "tokenizer.json"
    stamp = vocabulary.stat()
    vocabulary.rename(copied / "tokenizer-old.json")  # a file renamed, keeping its size and time
    os.utime(copied / "tokenizer-old.json", ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert feature_cache_key(split, retrained) != touched


def test_backbone_dtype_is_part_of_the_cache_key_and_the_device_is_not(tiny_backbones, split, tmp_path):
    def fresh() -> HyFusERProcessor:
        return HyFusERProcessor.from_backbones(tiny_backbones.text, tiny_backbones.speech, SEQUENCE_LENGTH)

    key = feature_cache_key(split, fresh())
    # Each rank of a multi-GPU run places its backbones on its own device: they must all find the same cache.
    assert feature_cache_key(split, place_backbones(fresh(), "meta", "float32")) == key
    keys = {name: feature_cache_key(split, place_backbones(fresh(), "cpu", name)) for name in BACKBONE_DTYPES}
    assert keys["float32"] == key and len(set(keys.values())) == 3


def test_backbones_move_to_the_given_device_whether_loaded_before_or_after(tiny_backbones):
    """The placement step on a device other than the CPU, without a GPU: PyTorch's `meta` device."""
    loaded = HyFusERProcessor.from_backbones(tiny_backbones.text, tiny_backbones.speech, SEQUENCE_LENGTH)
    models = (loaded.text_backbone_model, loaded.speech_backbone_model)
    assert place_backbones(loaded, torch.device("meta"), "bfloat16") is loaded
    lazy = place_backbones(
        HyFusERProcessor.from_backbones(tiny_backbones.text, tiny_backbones.speech, SEQUENCE_LENGTH), "meta", "float16"
    )
    for processor, dtype in ((loaded, torch.bfloat16), (lazy, torch.float16)):
        assert processor.device == torch.device("meta") and processor.backbone_dtype == dtype
        for model in (processor.text_backbone_model, processor.speech_backbone_model):
            assert {parameter.device.type for parameter in model.parameters()} == {"meta"}
            assert {parameter.dtype for parameter in model.parameters()} == {torch.float32}  # autocast, not a cast
    assert (loaded.text_backbone_model, loaded.speech_backbone_model) == models
    with pytest.raises(ValueError, match="extraction dtype must be one of"):
        place_backbones(lazy, "cpu", "int8")


def test_bfloat16_extraction_on_the_cpu_stays_close_to_float32_and_is_cached_apart(processor, split, tmp_path):
    texts, audio = split["text"][:4], split["audio"][:4]
    reference = processor(texts, audio, scale=False)
    half = copy.deepcopy(processor).to(backbone_dtype=torch.bfloat16)
    features = half(texts, audio, scale=False)
    for column in FEATURE_COLUMNS:
        assert features[column].dtype == torch.float32 and not torch.equal(features[column], reference[column])
        torch.testing.assert_close(features[column], reference[column], rtol=0.05, atol=0.05)
    first = cache_features(DatasetDict({"train": split.select(range(4))}), processor, tmp_path)
    second = cache_features(DatasetDict({"train": split.select(range(4))}), half, tmp_path)
    assert first["train"].cache_files != second["train"].cache_files
    assert len(list((tmp_path / "features").glob("train-*.arrow"))) == 2


NODE_SCRIPT = """
import json, sys
sys.path.insert(0, {repo!r})
from accelerate import PartialState
from datasets import Dataset, DatasetDict
from hyfuser.cache import cache_features
from processing_hyfuser import HyFusERProcessor

state = PartialState(cpu=True)
arguments = json.loads(sys.argv[1])
split = DatasetDict(train=Dataset.from_dict(arguments["rows"]))
processor = HyFusERProcessor.from_backbones(arguments["text"], arguments["speech"], sequence_length=8)
for case, cache_dirs in arguments["cases"].items():  # each process's --cache_dir: as if on its own node's disk
    try:
        cache_features(split, processor, cache_dirs[state.process_index])
        print(f"rank {{state.process_index}} {{case}}: no error", flush=True)
    except RuntimeError as error:
        print(f"rank {{state.process_index}} {{case}}: {{error}}", flush=True)
"""


@pytest.mark.slow
def test_processes_that_do_not_share_the_cache_directory_fail_clearly(processor, split, tiny_backbones, tmp_path):
    """Two gloo processes, each with its own --cache_dir, like two nodes without shared storage."""
    rows = split.select(range(4)).to_dict()
    node_0, node_1 = tmp_path / "node0", tmp_path / "node1"
    cache_features(DatasetDict(train=Dataset.from_dict(rows)), processor, node_0 / "found")  # only node 0 has it
    script = tmp_path / "nodes.py"
    script.write_text(NODE_SCRIPT.format(repo=str(Path(__file__).resolve().parent.parent)))
    arguments = {
        "rows": rows, "text": tiny_backbones.text, "speech": tiny_backbones.speech,
        "cases": {"found": [str(node_0 / "found"), str(node_1 / "found")],
                  "written": [str(node_0 / "written"), str(node_1 / "written")]},
    }  # fmt: skip
    log = launch_two_processes(script, json.dumps(arguments)).stdout
    shared = "must be on storage that every node mounts at that path"
    for rank in (0, 1):
        # Node 0 found a cache that node 1 cannot see: both stop instead of one waiting for the other forever.
        assert f"rank {rank} found: the processes of this run found different cached features" in log, log[-3000:]
        # Each node extracted its shard onto its own disk: each misses the other's and says which, and why.
        missing = next(line for line in log.splitlines() if line.startswith(f"rank {rank} written:"))
        assert "this process cannot see train feature shards" in missing and shared in missing
        assert f"{tmp_path / f'node{rank}' / 'written'}" in missing and f"-{1 - rank:05d}-of-00002.arrow" in missing


def test_a_hub_backbone_is_identified_by_its_cached_snapshot(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert _backbone_key("org/not-downloaded") == "org/not-downloaded"
    repo = tmp_path / "models--org--backbone"
    for revision in ("1111111111111111111111111111111111111111", "2222222222222222222222222222222222222222"):
        (repo / "snapshots" / revision).mkdir(parents=True)
        (repo / "snapshots" / revision / "config.json").write_text("{}")
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(revision)
        assert _backbone_key("org/backbone") == str(repo / "snapshots" / revision / "config.json")


def test_scaler_on_cache_streams_every_training_position(processor, split, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="hyfuser")
    cached = cache_features(DatasetDict({"train": split}), processor, tmp_path / "cache")["train"]
    fitted = HyFusERProcessor.from_backbones(processor.text_backbone, processor.speech_backbone, SEQUENCE_LENGTH)
    fit_scaler_on_cache(fitted, cached, batch_size=4)
    stored = cached.with_format("numpy")[:]
    positions = np.concatenate([stored[column].astype(np.float64).reshape(-1, 32) for column in FEATURE_COLUMNS])
    assert fitted.scaler_count == UTTERANCES * 2 * SEQUENCE_LENGTH
    np.testing.assert_allclose(fitted.scaler_mean, positions.mean(axis=0), rtol=0, atol=1e-9)
    np.testing.assert_allclose(fitted.scaler_std, positions.std(axis=0), rtol=0, atol=1e-9)
    assert caplog.messages[-1] == f"Joint scaler fitted on {UTTERANCES * 2 * SEQUENCE_LENGTH} training feature positions"


# --------------------------------------------------------------------------------------------------------------------
# train_on_features: the Trainer on cached features, without backbones (random features stored like the cache)

ROWS, BATCH = 12, 4
STEPS_PER_EPOCH = ROWS // BATCH


def random_cache(seed: int, sequence_length: int) -> Dataset:
    rng = np.random.default_rng(seed)
    shape = (ROWS, sequence_length, 32)
    columns = {name: rng.standard_normal(shape).astype(np.float16) for name in FEATURE_COLUMNS}
    schema = Features({**{name: Array2D(shape[1:], "float16") for name in FEATURE_COLUMNS}, "label": Value("int64")})
    return Dataset.from_dict({**columns, "label": (np.arange(ROWS) % 7).tolist()}, features=schema)


def training_arguments(output_dir: Path, **overrides) -> TrainingArguments:
    settings = {**PAPER_TRAINING_DEFAULTS, "learning_rate": 1e-7, "per_device_train_batch_size": BATCH,
                "per_device_eval_batch_size": BATCH, "num_train_epochs": 3, "use_cpu": True, "report_to": "none",
                "disable_tqdm": True, "optim": "adamw_torch"}  # fmt: skip
    return TrainingArguments(output_dir=str(output_dir), **{**settings, **overrides})


@pytest.fixture
def tiny_fusion(tiny_config):
    torch.manual_seed(0)
    return HyFusERForEmotionRecognition(tiny_config)


@pytest.fixture
def training_forwards(monkeypatch) -> list[int]:
    """The size of every training batch the model sees (a wrapper that records and calls the real forward)."""
    sizes, forward = [], HyFusERForEmotionRecognition.forward

    @functools.wraps(forward)
    def recording_forward(self, *args, **kwargs):
        if self.training:
            sizes.append(len(kwargs["text_features"]))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(HyFusERForEmotionRecognition, "forward", recording_forward)
    return sizes


def test_patience_zero_trains_every_epoch(tiny_fusion, tiny_processor, tiny_config, tmp_path):
    """At lr 1e-7 no prediction flips, so validation accuracy never improves after epoch 1: only the absence of early
    stopping lets the run reach epoch 3."""
    train, validation = (random_cache(seed, tiny_config.sequence_length) for seed in (1, 2))
    trainer, prediction = train_on_features(
        tiny_fusion, training_arguments(tmp_path), tiny_processor, train, validation, early_stopping_patience=0
    )
    assert trainer.state.global_step == 3 * STEPS_PER_EPOCH
    assert prediction.metrics["eval_accuracy"] == json.loads((tmp_path / "eval_results.json").read_text())[
        "eval_accuracy"
    ]


def test_resuming_from_a_checkpoint_trains_only_the_remaining_epochs(
    tiny_fusion, tiny_processor, tiny_config, tmp_path, training_forwards
):
    train, validation = (random_cache(seed, tiny_config.sequence_length) for seed in (1, 2))
    arguments = training_arguments(tmp_path, num_train_epochs=2)
    train_on_features(tiny_fusion, training_arguments(tmp_path, num_train_epochs=2, max_steps=STEPS_PER_EPOCH),
                      tiny_processor, train, validation)  # fmt: skip
    assert len(training_forwards) == STEPS_PER_EPOCH
    trainer, _ = train_on_features(
        tiny_fusion, arguments, tiny_processor, train, validation,
        resume_from_checkpoint=str(tmp_path / f"checkpoint-{STEPS_PER_EPOCH}"),
    )  # fmt: skip
    assert trainer.state.global_step == 2 * STEPS_PER_EPOCH
    assert len(training_forwards) == 2 * STEPS_PER_EPOCH  # epoch 1 was not trained again


def test_gradient_checkpointing_argument_trains_with_checkpointed_blocks_to_the_same_weights(
    tiny_config, tiny_processor, tmp_path
):
    """`--gradient_checkpointing` reaches the model through the Trainer: the blocks are checkpointed, and since
    checkpointing only trades memory for recomputation, training gives the weights of a run without it."""
    train, validation = (random_cache(seed, tiny_config.sequence_length) for seed in (1, 2))
    config = HyFusERConfig(**{**tiny_config.to_diff_dict(), "hidden_dropout_prob": 0.0, "attention_dropout": 0.0})
    trained = {}
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = HyFusERForEmotionRecognition(config)
        initial = {name: weight.clone() for name, weight in model.state_dict().items()}
        arguments = training_arguments(
            tmp_path / f"checkpointing-{checkpointing}", learning_rate=1e-3, gradient_checkpointing=checkpointing
        )
        trainer, _ = train_on_features(model, arguments, tiny_processor, train, validation)
        assert trainer.model.is_activation_checkpointing is checkpointing
        trained[checkpointing] = trainer.model.state_dict()
    assert all(not torch.equal(weight, initial[name]) for name, weight in trained[True].items())  # every one trained
    for name, weight in trained[False].items():
        torch.testing.assert_close(trained[True][name], weight, rtol=1e-5, atol=1e-6, msg=name)


# --------------------------------------------------------------------------------------------------------------------
# Features on the device: the batches and the order of the streamed cache, without reading the disk per batch

FEATURE_LAYOUTS = {
    # name: (text shape, speech shape, feature mode); None is a native length (4 to 11 positions per row)
    "paper": ((SEQUENCE_LENGTH, 32), (SEQUENCE_LENGTH, 32), "paper"),
    "layer_weighting": ((3, SEQUENCE_LENGTH, 32), (4, SEQUENCE_LENGTH, 32), "paper"),
    "native": ((None, 32), (None, 32), "native"),
    "widths_differ": ((SEQUENCE_LENGTH, 32), (SEQUENCE_LENGTH, 48), "paper"),
}


def cache_in_layout(layout: str, rows: int = ROWS) -> Dataset:
    """Random float16 features stored like the cache: two shards concatenated, read through a shuffled selection."""
    shapes, rng = FEATURE_LAYOUTS[layout][:2], np.random.default_rng(0)
    schema = Features({name: (Array2D if len(shape) == 2 else Array3D)(shape, "float16")
                       for name, shape in zip(FEATURE_COLUMNS, shapes)} | {"label": Value("int64")})  # fmt: skip

    def draw(shape: tuple) -> np.ndarray:
        return rng.standard_normal([int(rng.integers(4, 12)) if size is None else size for size in shape])

    columns = {name: [draw(shape).astype(np.float16) for _ in range(rows)]
               for name, shape in zip(FEATURE_COLUMNS, shapes)}  # fmt: skip
    shards = [Dataset.from_dict({**{name: values[part] for name, values in columns.items()},
                                 "label": list(range(rows))[part]}, features=schema)
              for part in (slice(0, rows // 2), slice(rows // 2, rows))]  # fmt: skip
    return concatenate_datasets(shards).select(rng.permutation(rows))


def processor_for(layout: str, tiny_backbones) -> HyFusERProcessor:
    """A tiny processor in the layout's feature mode with a scaler fitted on random statistics of its widths."""
    text_shape, speech_shape, mode = FEATURE_LAYOUTS[layout]
    processor = HyFusERProcessor.from_backbones(
        tiny_backbones.text, tiny_backbones.speech, sequence_length=SEQUENCE_LENGTH, feature_mode=mode
    )
    rng = np.random.default_rng(1)
    text, speech = (FeatureStatistics().update(3 + 2 * rng.standard_normal((16, shape[-1])))
                    for shape in (text_shape, speech_shape))  # fmt: skip
    return processor.set_scaler(text, speech) if text_shape[-1] != speech_shape[-1] else processor.set_scaler(text)


def assert_same_batch(batch: dict, expected: dict) -> None:
    assert list(batch) == list(expected)
    for name, tensor in expected.items():
        assert batch[name].dtype == tensor.dtype and torch.equal(batch[name], tensor), name


@pytest.mark.parametrize("layout", FEATURE_LAYOUTS)
def test_features_on_the_device_gather_the_batches_the_streaming_collator_makes(layout, tiny_backbones):
    features, processor = cache_in_layout(layout), processor_for(layout, tiny_backbones)
    store, streamed = DeviceFeatures(features, processor, "cpu"), trainer_dataset(features)
    assert store.values["text_features"].dtype == torch.float16  # held in the cache's dtype
    for rows in ([5, 0, 11, 3, 3], [7]):  # any order, repeats, a batch of one
        expected = collate_scaled_features([streamed[row] for row in rows], processor)
        assert_same_batch(collate_features([store[row] for row in rows], processor), expected)
    assert feature_bytes(features) == pytest.approx(sum(store.values[name].nbytes for name in FEATURE_COLUMNS), 0.1)


def test_the_trainer_reads_the_same_batches_in_the_same_order_from_the_device_as_from_the_disk(
    tiny_fusion, tiny_processor, tmp_path
):
    """Each row's label is its number before the cache's shuffled selection, so the batches say which rows they hold
    and in what order."""
    train, validation = cache_in_layout("paper"), cache_in_layout("paper", rows=6)
    loaders = {}
    for placement in ("never", "always"):
        arguments = training_arguments(tmp_path / placement, dataloader_num_workers=2)
        trainer = feature_trainer(
            tiny_fusion, arguments, tiny_processor, train, validation, features_on_device=placement
        )
        assert trainer.args.dataloader_num_workers == (2 if placement == "never" else 0)
        assert isinstance(trainer.train_dataset, DeviceFeatures) == (placement == "always")
        torch.manual_seed(0)
        loaders[placement] = [list(trainer.get_train_dataloader()), list(trainer.get_eval_dataloader())]
    order = torch.cat([batch["labels"] for batch in loaders["always"][0]]).tolist()
    assert sorted(order) == list(range(ROWS)) and order != sorted(order)  # every row once, shuffled
    for loader in (0, 1):
        for batch, expected in zip(loaders["always"][loader], loaders["never"][loader], strict=True):
            assert_same_batch(batch, expected)
    streamed = trainer_dataset(train)
    position = {label: index for index, label in enumerate(train["label"])}
    for batch, start in zip(loaders["always"][0], range(0, ROWS, BATCH)):
        rows = [streamed[position[label]] for label in order[start : start + BATCH]]
        assert_same_batch(batch, collate_scaled_features(rows, tiny_processor))


def test_training_on_features_on_the_device_ends_with_the_weights_of_training_on_streamed_features(
    tiny_config, tiny_processor, tmp_path
):
    """With dropout on: reading the features from memory draws no random number the streamed path does not."""
    train, validation = (random_cache(seed, tiny_config.sequence_length) for seed in (1, 2))
    trained = {}
    for placement in ("never", "always"):
        torch.manual_seed(0)
        model = HyFusERForEmotionRecognition(tiny_config)
        arguments = training_arguments(tmp_path / placement, num_train_epochs=2, learning_rate=1e-3)
        trainer, prediction = train_on_features(
            model, arguments, tiny_processor, train, validation, features_on_device=placement
        )
        trained[placement] = trainer.model.state_dict(), prediction.predictions
    assert tiny_config.hidden_dropout_prob > 0
    for name, weight in trained["never"][0].items():
        assert torch.equal(trained["always"][0][name], weight), name
    for streamed, on_device in zip(trained["never"][1], trained["always"][1], strict=True):
        np.testing.assert_array_equal(on_device, streamed)


def test_auto_loads_the_features_onto_the_device_only_within_the_share_of_its_free_memory(tiny_config, caplog):
    caplog.set_level(logging.INFO, logger="hyfuser")
    train, cpu = random_cache(1, tiny_config.sequence_length), torch.device("cpu")
    assert keep_features_on_device([train], cpu, "auto", memory_share=1.0)
    assert caplog.messages[-1].endswith("loading them there")
    assert not keep_features_on_device([train], cpu, "auto", memory_share=1e-12)
    assert caplog.messages[-1].endswith("streaming them from the cache")
    assert keep_features_on_device([train], cpu, "always", memory_share=1e-12)
    assert not keep_features_on_device([train], cpu, "never", memory_share=1.0)
    with pytest.raises(ValueError, match=r"features_memory_share must be in \(0, 1\], got 0"):
        keep_features_on_device([train], cpu, "auto", memory_share=0)
