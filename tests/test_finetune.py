"""End-to-end fine-tuning of the backbones (hyfuser.finetune) on the tiny backbones: the features equal the
processor's, LoRA and top-layer runs change exactly the backbone weights they should, the saved directory serves
without peft and predicts what the in-training model predicts, and resuming gives the uninterrupted run's weights."""

import copy
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from audio_files import write_tone
from datasets import Dataset
from safetensors.torch import load_file
from transformers import TrainingArguments

from configuration_hyfuser import HyFusERConfig
from hyfuser.finetune import (
    EndToEndCollator,
    EndToEndHyFusER,
    FinetuneArguments,
    feeding_layers,
    merge_and_save,
    prepare_backbones,
)
from hyfuser.finetune_trainer import finetune_trainer, fit_scaler_on_rows
from hyfuser.training import PAPER_TRAINING_DEFAULTS
from modeling_hyfuser import HyFusERForEmotionRecognition
from processing_hyfuser import HyFusERProcessor

HAS_PEFT = importlib.util.find_spec("peft") is not None
needs_peft = pytest.mark.skipif(not HAS_PEFT, reason="peft is not installed (pip install '.[finetune]')")

SEQUENCE_LENGTH = 16
TEXTS = ["정말 화가 나요", "너무 기뻐요", "무서워서 떨려요", "그냥 그래요", "깜짝 놀랐어요", "슬퍼서 울었어요"]
ATTENTION_PROJECTIONS = ("query", "key", "value", "q_proj", "k_proj", "v_proj", "out_proj")


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> Dataset:
    """Eight utterances of different lengths (0.3 to 1 s), as the corpora give them: text, audio path, label."""
    directory = tmp_path_factory.mktemp("finetune_audio")
    audio = [
        str(write_tone(directory / f"u{index}.wav", seconds=0.3 + 0.1 * index, frequency=140 + 30 * index, seed=index))
        for index in range(8)
    ]
    texts = [TEXTS[index % len(TEXTS)] for index in range(8)]
    return Dataset.from_dict({"id": [f"u{i}" for i in range(8)], "text": texts, "audio": audio, "label": [0, 3] * 4})


@pytest.fixture(scope="module")
def processor(tiny_backbones, rows) -> HyFusERProcessor:
    processor = HyFusERProcessor.from_backbones(tiny_backbones.text, tiny_backbones.speech, SEQUENCE_LENGTH)
    return fit_scaler_on_rows(processor, rows, batch_size=3)


def end_to_end(processor: HyFusERProcessor, **arguments) -> EndToEndHyFusER:
    torch.manual_seed(0)
    config = HyFusERConfig(**processor.model_config_fields(), intermediate_size=processor.hidden_size)
    arguments = {"finetune_layers": 1, "backbone_learning_rate": 1e-2, **arguments}
    return EndToEndHyFusER(HyFusERForEmotionRecognition(config), processor, FinetuneArguments(**arguments))


def training_arguments(output_dir: Path, **overrides) -> TrainingArguments:
    """The paper's protocol on 8 rows: batches of 4, two epochs, evaluated and saved every epoch."""
    settings = {
        **PAPER_TRAINING_DEFAULTS,
        "output_dir": str(output_dir),
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "num_train_epochs": 2,
        "save_total_limit": None,
        "use_cpu": True,
        "report_to": [],
        "disable_tqdm": True,
        "seed": 0,
        **overrides,
    }
    return TrainingArguments(**settings)


def trained(processor, rows, output_dir, **arguments) -> EndToEndHyFusER:
    model = end_to_end(processor, **arguments)
    finetune_trainer(model, training_arguments(output_dir), rows, rows.select(range(4))).train()
    return model


def backbone_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    assert before.keys() == after.keys()
    return {name for name in before if not torch.equal(before[name], after[name])}


def test_scaler_fitted_on_rows_is_the_processors_fit_on_their_features(processor, rows):
    features = processor(rows["text"], rows["audio"], scale=False)
    reference = copy.deepcopy(processor).fit_scaler([(features["text_features"], features["speech_features"])])
    assert processor.scaler_count == reference.scaler_count == 2 * len(rows) * SEQUENCE_LENGTH
    np.testing.assert_allclose(processor.scaler_mean, reference.scaler_mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(processor.scaler_std, reference.scaler_std, rtol=1e-6, atol=1e-7)


def test_features_and_predictions_equal_the_processors_path(processor, rows):
    """Before any step the trainable copies are the frozen backbones: a padded batch of clips of different lengths
    gives the processor's unscaled features (same hidden state, same interpolation to sequence_length), and the
    model's output is HyFusER's on the processor's scaled features."""
    model = end_to_end(processor, finetune="top_layers").eval()
    batch = EndToEndCollator(processor)(rows.to_list())
    assert batch["speech_attention_mask"].sum(-1).unique().numel() == len(rows)  # every clip its own length
    inputs = {name: values for name, values in batch.items() if name != "labels"}
    expected = processor(rows["text"], rows["audio"], scale=False)
    with torch.no_grad():
        text, speech = model.backbone_features(**inputs)
        logits = model(**inputs).logits
        scaled = processor(rows["text"], rows["audio"])
        reference = model.fusion_model(scaled["text_features"], scaled["speech_features"]).logits
    torch.testing.assert_close(text, expected["text_features"], rtol=0, atol=1e-5)
    torch.testing.assert_close(speech, expected["speech_features"], rtol=0, atol=1e-5)
    torch.testing.assert_close(logits, reference, rtol=0, atol=1e-5)


def test_collator_names_the_row_of_bad_audio(processor, rows, tmp_path):
    collate = EndToEndCollator(processor)
    missing = {**rows[0], "id": "missing", "audio": str(tmp_path / "gone.wav")}
    with pytest.raises(ValueError, match=r"row 'missing': audio file .*gone.wav' does not exist"):
        collate([rows[1], missing])
    long_clip = {**rows[0], "id": "long", "audio": str(write_tone(tmp_path / "long.wav", seconds=2.0))}
    long_processor = copy.deepcopy(processor)
    long_processor.speech_window_seconds, long_processor.speech_window_overlap_seconds = 1.0, 0.0
    with pytest.raises(ValueError, match=r"row 'long': its audio gives 99 speech frames, more than one pass .* \(50,"):
        EndToEndCollator(long_processor)([long_clip])


def test_unsupported_settings_are_refused(tiny_backbones, processor):
    native = HyFusERProcessor.from_backbones(tiny_backbones.text, tiny_backbones.speech, feature_mode="native")
    with pytest.raises(ValueError, match="feature_mode='paper'"):
        prepare_backbones(native, FinetuneArguments(finetune="top_layers"))
    with pytest.raises(ValueError, match="'lora' or 'top_layers', not 'none'"):
        prepare_backbones(processor, FinetuneArguments())
    with pytest.raises(ValueError, match="finetune_layers=3, but 2 layers of the text backbone feed its feature"):
        prepare_backbones(processor, FinetuneArguments(finetune="top_layers", finetune_layers=3))
    with pytest.raises(ValueError, match="finetune must be one of"):
        FinetuneArguments(finetune="all")
    unfitted = HyFusERProcessor.from_backbones(tiny_backbones.text, tiny_backbones.speech, SEQUENCE_LENGTH)
    with pytest.raises(ValueError, match="scaler is not fitted"):
        prepare_backbones(unfitted, FinetuneArguments(finetune="top_layers"))


def test_lora_without_peft_says_how_to_install_it(processor, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` raises ImportError
    with pytest.raises(ImportError, match=r"pip install '\.\[finetune\]'"):
        prepare_backbones(processor, FinetuneArguments(finetune="lora"))


def test_top_layers_trains_the_layers_under_the_chosen_hidden_state(tiny_backbones, processor):
    middle = copy.deepcopy(processor)
    middle.text_layer = 1  # the first layer's output: only layer 0 feeds it
    text, speech = prepare_backbones(middle, FinetuneArguments(finetune="top_layers", finetune_layers=1))
    assert {name.split(".")[2] for name, parameter in text.named_parameters() if parameter.requires_grad} == {"0"}
    assert {name.split(".")[2] for name, parameter in speech.named_parameters() if parameter.requires_grad} == {"1"}
    assert len(feeding_layers(text, 1)) == 1 and len(feeding_layers(speech, -1)) == 2


def test_top_layers_run_changes_the_top_layers_alone(processor, rows, tmp_path):
    model = end_to_end(processor, finetune="top_layers")
    before = {kind: backbone_tensors(getattr(model, f"{kind}_backbone")) for kind in ("text", "speech")}
    trainer = finetune_trainer(model, training_arguments(tmp_path), rows, rows.select(range(4)))
    groups = trainer.create_optimizer().param_groups
    assert sorted({group["lr"] for group in groups}) == [1e-4, 1e-2]
    backbone_parameters = sum(p.numel() for g in groups if g["lr"] == 1e-2 for p in g["params"])
    assert backbone_parameters == sum(
        p.numel() for n, p in model.named_parameters() if "backbone" in n and p.requires_grad
    )
    trainer.train()
    for kind, prefix in (("text", "encoder.layer.1."), ("speech", "encoder.layers.1.")):
        after = backbone_tensors(getattr(model, f"{kind}_backbone"))
        top_layer = {name for name in after if name.startswith(prefix)}
        # A key bias shifts every score of a query by the same amount, which softmax ignores: its gradient is zero
        # but for rounding, which Adam's normalised step may or may not turn into a change.
        key_biases = {name for name in top_layer if name.endswith(("key.bias", "k_proj.bias"))}
        assert len(key_biases) == 1 and top_layer - key_biases <= changed(before[kind], after) <= top_layer


@needs_peft
def test_lora_run_changes_the_attention_projections_alone(processor, rows, tmp_path):
    model = end_to_end(processor, finetune="lora")
    lora_before = {name: tensor.detach().clone() for name, tensor in model.named_parameters() if "lora_" in name}
    trained_model = finetune_trainer(model, training_arguments(tmp_path), rows, rows.select(range(4)))
    trained_model.train()
    lora_after = dict(model.named_parameters())
    assert lora_before and all(not torch.equal(lora_before[name], lora_after[name]) for name in lora_before)
    merge_and_save(model, tmp_path / "saved")
    for kind in ("text", "speech"):
        before = backbone_tensors(getattr(processor, f"{kind}_backbone_model"))
        after = load_file(tmp_path / "saved" / f"{kind}_backbone" / "model.safetensors")
        projections = {
            name for name in before if name.endswith(tuple(f".{module}.weight" for module in ATTENTION_PROJECTIONS))
        }
        assert projections and changed(before, after) == projections  # biases and every other tensor as they were


@needs_peft
def test_lora_target_that_names_nothing_is_refused(processor):
    arguments = FinetuneArguments(finetune="lora", lora_target_modules=["query", "q_proj", "qkv"])
    with pytest.raises(ValueError, match=r"lora_target_modules \['qkv'\] name no linear layer"):
        prepare_backbones(processor, arguments)
    with pytest.raises(ValueError, match="Hubert.* each backbone needs adapters on at least one"):
        prepare_backbones(processor, FinetuneArguments(finetune="lora", lora_target_modules=["query"]))


@pytest.mark.parametrize("mode", [pytest.param("lora", marks=needs_peft), "top_layers"])
def test_saved_directory_serves_without_peft_as_the_trained_model_predicts(processor, rows, tmp_path, mode):
    model = trained(processor, rows, tmp_path / "run", finetune=mode)
    description = merge_and_save(model, tmp_path / "saved")
    assert description["finetune"] == mode and description["backbone_learning_rate"] == 1e-2
    for kind, modules in (("text", ["key", "query", "value"]), ("speech", ["k_proj", "out_proj", "q_proj", "v_proj"])):
        backbone = getattr(model, f"{kind}_backbone")
        trainable = sum(parameter.numel() for parameter in backbone.parameters() if parameter.requires_grad)
        assert description[f"{kind}_backbone"] == {
            "layers": [1] if mode == "top_layers" else [0, 1],
            "trainable_parameters": trainable,
            **({"modules": modules} if mode == "lora" else {}),
        }
    model.eval()
    with torch.no_grad():
        batch = EndToEndCollator(processor)(rows.to_list())
        expected = model(**{name: values for name, values in batch.items() if name != "labels"}).logits.softmax(-1)
    script = textwrap.dedent(
        """
        import importlib.machinery, importlib.util, json, sys

        class PathFinderWithoutPeft(importlib.machinery.PathFinder):
            @classmethod
            def find_spec(cls, name, path=None, target=None):
                return None if name.partition(".")[0] == "peft" else super().find_spec(name, path, target)

        sys.meta_path[:] = [PathFinderWithoutPeft if finder is importlib.machinery.PathFinder else finder
                            for finder in sys.meta_path]
        assert importlib.util.find_spec("peft") is None
        from safetensors import safe_open
        from transformers import AutoModel, pipeline
        directory, inputs = sys.argv[1], json.loads(sys.argv[2])
        for kind in ("text", "speech"):
            AutoModel.from_pretrained(f"{directory}/{kind}_backbone")
            with safe_open(f"{directory}/{kind}_backbone/model.safetensors", "pt") as weights:
                assert not [key for key in weights.keys() if "lora" in key or "base_layer" in key]
        classifier = pipeline(model=directory, trust_remote_code=True, device="cpu")
        results = classifier(inputs, top_k=None)
        assert "peft" not in sys.modules
        print(json.dumps(results))
        """
    )
    inputs = [{"text": row["text"], "audio": row["audio"]} for row in rows]
    environment = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "HF_MODULES_CACHE")}
    environment.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    completed = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "saved"), json.dumps(inputs, ensure_ascii=False)],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    served = json.loads(completed.stdout.strip().splitlines()[-1])
    label2id = model.fusion_model.config.label2id
    scores = torch.zeros_like(expected)
    for row, emotions in enumerate(served):
        for emotion in emotions:
            scores[row, label2id[emotion["label"]]] = emotion["score"]
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", [pytest.param("lora", marks=needs_peft), "top_layers"])
def test_resume_gives_the_uninterrupted_runs_weights(processor, rows, tmp_path, mode):
    """Two epochs of two steps, checkpointed every epoch; a fresh run resumed from the first epoch's checkpoint ends
    where the uninterrupted one did: the same last checkpoint and the same restored best model."""
    uninterrupted = trained(processor, rows, tmp_path / "whole", finetune=mode)
    resumed = end_to_end(processor, finetune=mode)
    trainer = finetune_trainer(resumed, training_arguments(tmp_path / "resumed"), rows, rows.select(range(4)))
    trainer.train(resume_from_checkpoint=str(tmp_path / "whole" / "checkpoint-2"))
    final = {run: load_file(tmp_path / run / "checkpoint-4" / "model.safetensors") for run in ("whole", "resumed")}
    assert final["whole"].keys() == final["resumed"].keys()
    for name, tensor in final["whole"].items():
        torch.testing.assert_close(final["resumed"][name], tensor, rtol=0, atol=0, msg=name)
    for name, tensor in uninterrupted.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], tensor, rtol=0, atol=0, msg=name)


def test_bf16_run_trains_the_backbones(processor, rows, tmp_path):
    model = end_to_end(processor, finetune="top_layers")
    before = backbone_tensors(model.speech_backbone)
    arguments = training_arguments(
        tmp_path, bf16=True, num_train_epochs=1, eval_strategy="no", save_strategy="no", load_best_model_at_end=False
    )
    result = finetune_trainer(model, arguments, rows, rows, early_stopping_patience=0).train()
    assert np.isfinite(result.training_loss)
    assert changed(before, backbone_tensors(model.speech_backbone))


@pytest.mark.parametrize("mode", [pytest.param("lora", marks=needs_peft), "top_layers"])
def test_activation_checkpointing_trains_the_same_weights(processor, rows, tmp_path, mode):
    """Checkpointed backbones (FinetuneArguments) and HyFusER (the Trainer's flag) recompute the same activations,
    dropout masks included, so one epoch ends at the weights of a run that keeps them."""
    runs = {}
    for checkpointing in (False, True):
        model = end_to_end(processor, finetune=mode, backbone_gradient_checkpointing=checkpointing)
        arguments = training_arguments(
            tmp_path / str(checkpointing), num_train_epochs=1, eval_strategy="no", save_strategy="no",
            load_best_model_at_end=False, activation_checkpointing=checkpointing,
        )  # fmt: skip
        finetune_trainer(model, arguments, rows, rows, early_stopping_patience=0).train()
        assert model.text_backbone.is_activation_checkpointing == checkpointing
        assert model.fusion_model.is_activation_checkpointing == checkpointing
        runs[checkpointing] = model.state_dict()
    for name, tensor in runs[False].items():
        torch.testing.assert_close(runs[True][name], tensor, rtol=0, atol=1e-6, msg=name)


@pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnxscript") is None,
    reason="export_onnx.py needs the onnx extra (pip install '.[onnx]')",
)
def test_export_onnx_serves_the_fine_tuned_directory_as_pytorch_does(processor, rows, tmp_path):
    """export_onnx.py takes the fine-tuned directory unchanged: its graphs hold the trained backbones, so the ONNX
    pipeline's probabilities are the PyTorch pipeline's (and those of the in-training model) within 1e-4."""
    from transformers import pipeline

    from export_onnx import export_onnx

    model = trained(processor, rows, tmp_path / "run", finetune="top_layers")
    merge_and_save(model, tmp_path / "saved")
    onnx_dir = export_onnx(tmp_path / "saved", tmp_path / "onnx")
    items = [{"text": row["text"], "audio": row["audio"]} for row in rows]
    scores = {}
    for name, directory in (("torch", tmp_path / "saved"), ("onnx", onnx_dir)):
        classifier = pipeline(model=str(directory), trust_remote_code=True, device="cpu")
        results = classifier(items, top_k=None)
        scores[name] = np.array([[emotion["score"] for emotion in sorted(result, key=lambda e: e["label"])]
                                 for result in results])  # fmt: skip
    assert type(classifier.model).__name__ == "HyFusEROnnxModel"
    np.testing.assert_allclose(scores["onnx"], scores["torch"], rtol=0, atol=1e-4)
    model.eval()
    with torch.no_grad():
        batch = EndToEndCollator(processor)(rows.to_list())
        expected = model(**{name: values for name, values in batch.items() if name != "labels"}).logits.softmax(-1)
    labels = sorted(model.fusion_model.config.label2id, key=lambda label: label)
    order = [model.fusion_model.config.label2id[label] for label in labels]
    np.testing.assert_allclose(scores["onnx"], expected.numpy()[:, order], rtol=0, atol=1e-4)
