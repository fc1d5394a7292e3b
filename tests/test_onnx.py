"""`export_onnx.py` and serving its directory on ONNX Runtime through the same pipeline."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from audio_files import write_tone
from transformers import pipeline

from export_onnx import check_exportable, export_onnx
from hyfuser.checkpoint import ONNX_SHIPPED_FILES

EXPORT_ONNX = Path(__file__).resolve().parent.parent / "export_onnx.py"
TEXTS = ["정말 너무 화가 나서 참을 수가 없어요", "오늘 날씨가 좋아서 기분이 좋네요", "그 소식을 듣고 깜짝 놀랐어",
         "혼자 집에 있으니까 조금 무서워요", "어제 친구랑 헤어져서 너무 슬퍼"]


@pytest.fixture(scope="module")
def onnx_dir(saved_model_dir, tmp_path_factory):
    return export_onnx(saved_model_dir, tmp_path_factory.mktemp("onnx") / "hyfuser-onnx")


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    """(text, audio file) pairs at several rates, lengths and formats, one of them stereo."""
    directory = tmp_path_factory.mktemp("onnx_audio")
    formats = [(8_000, ".wav", 1), (16_000, ".flac", 1), (44_100, ".wav", 2), (22_050, ".ogg", 1), (16_000, ".wav", 1)]
    return [
        {
            "text": text,
            "audio": str(write_tone(directory / f"item{index}{suffix}", rate, 0.4 + 0.5 * index, 140.0 + 45 * index,
                                    channels, seed=index)),
        }
        for index, (text, (rate, suffix, channels)) in enumerate(zip(TEXTS, formats))
    ]


def probabilities(results: list[list[dict]], key: str = "score") -> np.ndarray:
    """(items, labels) matrix of `key`, columns in label order."""
    return np.array([[emotion[key] for emotion in sorted(result, key=lambda emotion: emotion["label"])]
                     for result in results])


def test_export_writes_the_three_graphs_the_processor_and_no_pytorch_weights(onnx_dir):
    names = {path.name for path in onnx_dir.iterdir()}
    assert {"text_backbone.onnx", "speech_backbone.onnx", "hyfuser.onnx", "onnx_config.json", "config.json",
            "processor_config.json", "tokenizer.json", "onnx_hyfuser.py", "pipeline_hyfuser.py"} <= names
    assert not {"model.safetensors", "modeling_hyfuser.py"} & names
    assert not list(onnx_dir.rglob("*.safetensors"))  # the backbone subfolders hold configs only
    assert json.loads((onnx_dir / "onnx_config.json").read_text())["quantization"] is None
    config = json.loads((onnx_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSequenceClassification"] == "onnx_hyfuser.HyFusEROnnxModel"


def test_onnx_pipeline_probabilities_equal_pytorch_within_1e_4(saved_model_dir, onnx_dir, items):
    torch_classifier = pipeline(model=str(saved_model_dir), trust_remote_code=True, device="cpu")
    onnx_classifier = pipeline(model=str(onnx_dir), trust_remote_code=True, device="cpu")
    assert type(onnx_classifier.model).__name__ == "HyFusEROnnxModel"
    assert type(onnx_classifier.processor.speech_backbone_model).__name__ == "OnnxBackbone"

    expected = torch_classifier(items, return_modalities=True)
    actual = onnx_classifier(items, return_modalities=True)
    for key in ("score", "text_score", "speech_score"):
        np.testing.assert_allclose(probabilities(actual, key), probabilities(expected, key), rtol=0, atol=1e-4)
    batched = onnx_classifier(items, batch_size=len(items))
    np.testing.assert_allclose(probabilities(batched), probabilities(expected), rtol=0, atol=1e-4)


def test_fresh_process_serves_the_onnx_directory_without_pytorch_model_classes(saved_model_dir, onnx_dir, items):
    """Loading and calling the pipeline constructs no PyTorch module at all (a sentinel on `torch.nn.Module.__init__`),
    and neither the HyFusER modeling file nor the backbones' modeling modules are even imported."""
    script = textwrap.dedent(
        """
        import json, sys
        import torch
        from transformers import pipeline  # its import builds a few activation modules of its own
        constructed = []
        original_init = torch.nn.Module.__init__
        def recording_init(self, *args, **kwargs):
            constructed.append(type(self).__name__)
            original_init(self, *args, **kwargs)
        torch.nn.Module.__init__ = recording_init
        directory, items = sys.argv[1], json.loads(sys.argv[2])
        classifier = pipeline(model=directory, trust_remote_code=True)
        results = classifier(items)
        modeling = sorted(name for name in sys.modules if "modeling_hyfuser" in name
                          or name.endswith(("modeling_electra", "modeling_hubert")))
        print(json.dumps({"results": results, "constructed": constructed, "modeling": modeling}))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, str(onnx_dir), json.dumps(items)],
        cwd=onnx_dir.parent, capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": ""},  # the checkout stays off sys.path: only the directory's own code runs
    )
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["constructed"] == [] and report["modeling"] == []
    expected = pipeline(model=str(saved_model_dir), trust_remote_code=True, device="cpu")(items)
    np.testing.assert_allclose(probabilities(report["results"]), probabilities(expected), rtol=0, atol=1e-4)


def test_onnx_pipeline_asked_for_another_device_runs_on_the_cpu(onnx_dir, items):
    on_cpu = pipeline(model=str(onnx_dir), trust_remote_code=True, device="cpu")
    asked_for_cuda = pipeline(model=str(onnx_dir), trust_remote_code=True, device="cuda")
    assert asked_for_cuda.device.type == "cpu"
    np.testing.assert_array_equal(probabilities(asked_for_cuda(items[:2])), probabilities(on_cpu(items[:2])))


def test_onnx_pipeline_names_or_skips_a_bad_input_like_the_pytorch_one(onnx_dir, items):
    classifier = pipeline(model=str(onnx_dir), trust_remote_code=True, device="cpu")
    with_bad = [items[0], {"text": "", "audio": items[1]["audio"]}, items[2]]
    with pytest.raises(ValueError, match=r"^inputs\[1\]: empty or whitespace-only text '' \(audio '.*item1\.flac'\)$"):
        classifier(with_bad, batch_size=3)
    skipped = classifier(with_bad, batch_size=3, errors="skip")
    error = f"inputs[1]: empty or whitespace-only text '' (audio {items[1]['audio']!r})"
    assert skipped[1] == {"index": 1, "error": error}
    alone = classifier([items[0], items[2]])
    np.testing.assert_allclose(probabilities([skipped[0], skipped[2]]), probabilities(alone), rtol=0, atol=1e-5)


def test_unknown_quantization_is_rejected(saved_model_dir, tmp_path):
    with pytest.raises(ValueError, match="quantize must be one of"):
        export_onnx(saved_model_dir, tmp_path / "out", quantize="int4")


@pytest.mark.slow
def test_export_cli_with_int8_keeps_the_top_emotion_of_every_item(saved_model_dir, items, tmp_path):
    output_dir = tmp_path / "hyfuser-onnx-int8"
    subprocess.run(
        [sys.executable, str(EXPORT_ONNX), str(saved_model_dir), str(output_dir), "--quantize", "int8"],
        check=True, capture_output=True, text=True,
    )
    assert json.loads((output_dir / "onnx_config.json").read_text())["quantization"] == "int8"
    expected = pipeline(model=str(saved_model_dir), trust_remote_code=True, device="cpu")(items)
    actual = pipeline(model=str(output_dir), trust_remote_code=True, device="cpu")(items)
    assert [result[0]["label"] for result in actual] == [result[0]["label"] for result in expected]


def test_export_refuses_feature_options_its_graphs_do_not_carry(tiny_backbones):
    from processing_hyfuser import HyFusERProcessor

    check_exportable(HyFusERProcessor.from_backbones(tiny_backbones.text, tiny_backbones.speech, sequence_length=16))
    middle_layer = HyFusERProcessor.from_backbones(
        tiny_backbones.text, tiny_backbones.speech, sequence_length=16, speech_layer=1
    )
    with pytest.raises(ValueError, match=r"speech_layer=1 \(the graphs return only the last hidden state\)"):
        check_exportable(middle_layer)
    native = HyFusERProcessor.from_backbones(tiny_backbones.text, tiny_backbones.speech, feature_mode="native")
    with pytest.raises(ValueError, match="feature_mode='native'"):
        check_exportable(native)


def test_onnx_directory_ships_exactly_the_onnx_list_of_remote_code(onnx_dir):
    assert sorted(path.name for path in onnx_dir.glob("*.py")) == sorted(ONNX_SHIPPED_FILES)
