#!/usr/bin/env python
"""Export a saved HyFusER directory to ONNX, to serve it on ONNX Runtime without PyTorch's model classes.

    python export_onnx.py MODEL_DIR OUT_DIR [--quantize int8]

MODEL_DIR is what `train.py` (or `hyfuser.checkpoint.save_hyfuser`) wrote. OUT_DIR gets:

- `text_backbone.onnx`: token ids, token type ids and attention mask -> the text backbone's last hidden state;
- `speech_backbone.onnx`: one normalised waveform of any length -> the speech backbone's frames;
- `hyfuser.onnx`: `text_features`, `speech_features` -> `logits` (and `text_logits`, `speech_logits` for a model
  with two heads);
- `text_backbone/`, `speech_backbone/`: the backbones' configs only (the processor reads their geometry);
- the processor files, `config.json`, the remote code and `onnx_config.json`.

`pipeline(model=OUT_DIR, trust_remote_code=True)` then runs the same pipeline and processor code on ONNX Runtime.
`--quantize int8` stores the graphs' weights as int8 (ONNX Runtime's dynamic quantization: activations are
quantized per call), which is where the CPU speed-up comes from.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoProcessor
from transformers.processing_utils import ProcessorMixin

import onnx_hyfuser
from backbones_hyfuser import LOCAL_PREFIX, SPEECH_BACKBONE_SUBFOLDER, TEXT_BACKBONE_SUBFOLDER
from hyfuser.checkpoint import ONNX_SHIPPED_FILES, copy_shipped_files, point_config_at
from onnx_hyfuser import (
    FUSION_GRAPH,
    MODALITY_LOGITS,
    ONNX_CONFIG_NAME,
    SPEECH_BACKBONE_GRAPH,
    TEXT_BACKBONE_GRAPH,
    HyFusEROnnxModel,
)

QUANTIZATIONS = ("int8",)
"""What an ONNX directory runs: no modeling file, since no PyTorch model is built from it."""
SAMPLE_TEXT = "정말 너무 화가 나요"


class TextBackboneGraph(torch.nn.Module):
    """The text backbone with the tokenizer's outputs as named inputs and its last hidden state as the output."""

    def __init__(self, backbone: torch.nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, input_ids, token_type_ids, attention_mask):
        return self.backbone(
            input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask
        ).last_hidden_state


class SpeechBackboneGraph(torch.nn.Module):
    """The speech backbone on one waveform (1, samples) of any length, returning its frames (1, frames, hidden)."""

    def __init__(self, backbone: torch.nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, input_values):
        return self.backbone(input_values=input_values).last_hidden_state


class FusionGraph(torch.nn.Module):
    """The fusion model's logits, and each head's for a model with two (`has_modality_heads`)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, text_features, speech_features):
        output = self.model(text_features=text_features, speech_features=speech_features)
        if self.model.has_modality_heads:
            return output.logits, output.text_logits, output.speech_logits
        return output.logits


def export_graph(module: torch.nn.Module, inputs: dict[str, torch.Tensor], dynamic_axes: dict, outputs, path: Path):
    """One graph through the dynamo exporter, with the named `dynamic_axes` ({input: {axis: name}})."""
    dynamic_shapes = {
        name: {axis: torch.export.Dim(label, min=1) for axis, label in dynamic_axes[name].items()}
        if name in dynamic_axes else None
        for name in inputs
    }
    torch.onnx.export(
        module.eval(),
        tuple(inputs.values()),
        f=str(path),
        input_names=list(inputs),
        output_names=list(outputs),
        dynamic_shapes=dynamic_shapes,
        dynamo=True,
        verbose=False,
    )


def quantize_int8(path: Path) -> None:
    """Replace the graph at `path` by its dynamically quantized version: int8 weights for MatMul and Gemm."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as directory:
        float_path = Path(directory) / path.name
        shutil.move(path, float_path)
        data = path.with_name(path.name + ".data")
        if data.exists():
            shutil.move(data, Path(directory) / data.name)
        quantize_dynamic(float_path, path, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])


def check_exportable(processor) -> None:
    """Refuse the feature options the graphs do not carry: they take the paper's fixed-length inputs, return each
    backbone's last hidden state, and feed the text backbone token type ids and the speech backbone a waveform."""
    problems = []
    if processor.feature_mode != "paper":
        problems.append(f"feature_mode={processor.feature_mode!r} (the graphs take the paper's fixed lengths)")
    if processor.layer_weighting:
        problems.append("layer_weighting=True (the graphs return only the last hidden state)")
    for name in ("text_layer", "speech_layer"):
        if getattr(processor, name) != -1:
            problems.append(f"{name}={getattr(processor, name)} (the graphs return only the last hidden state)")
    if "token_type_ids" not in processor.tokenizer.model_input_names:
        problems.append(f"a text backbone whose tokenizer gives no token_type_ids ({processor.text_backbone!r})")
    if "input_values" not in processor.feature_extractor.model_input_names:
        problems.append(f"a speech backbone that does not read the waveform ({processor.speech_backbone!r})")
    if problems:
        raise ValueError("export_onnx.py exports the paper's feature recipe only; this processor uses " + "; ".join(problems))


def export_onnx(model_dir: str | Path, output_dir: str | Path, quantize: str | None = None) -> Path:
    """Write the ONNX directory of the HyFusER checkpoint in `model_dir` (see the module docstring)."""
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS} or None, got {quantize!r}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    processor.check_compatible(model.config)
    check_exportable(processor)
    text_backbone, speech_backbone = processor.text_backbone_model, processor.speech_backbone_model

    tokens = processor.tokenizer(
        [SAMPLE_TEXT, SAMPLE_TEXT], padding="max_length", truncation=True, max_length=processor.sequence_length,
        return_tensors="pt",
    )
    text_inputs = {name: tokens[name] for name in ("input_ids", "token_type_ids", "attention_mask")}
    export_graph(
        TextBackboneGraph(text_backbone), text_inputs, {name: {0: "batch"} for name in text_inputs},
        ["last_hidden_state"], output_dir / TEXT_BACKBONE_GRAPH,
    )
    waveform = torch.zeros(1, processor.sampling_rate)
    export_graph(
        SpeechBackboneGraph(speech_backbone), {"input_values": waveform}, {"input_values": {1: "samples"}},
        ["last_hidden_state"], output_dir / SPEECH_BACKBONE_GRAPH,
    )
    # Two distinct tensors: given one tensor twice, the exporter would tie both inputs to it.
    text_features, speech_features = torch.zeros(2, 2, *model.config.feature_shape)
    outputs = ["logits", *MODALITY_LOGITS] if model.has_modality_heads else ["logits"]
    export_graph(
        FusionGraph(model), {"text_features": text_features, "speech_features": speech_features},
        {"text_features": {0: "batch"}, "speech_features": {0: "batch"}}, outputs, output_dir / FUSION_GRAPH,
    )
    if quantize == "int8":
        for graph in (TEXT_BACKBONE_GRAPH, SPEECH_BACKBONE_GRAPH, FUSION_GRAPH):
            quantize_int8(output_dir / graph)

    text_backbone.config.save_pretrained(output_dir / TEXT_BACKBONE_SUBFOLDER)
    speech_backbone.config.save_pretrained(output_dir / SPEECH_BACKBONE_SUBFOLDER)
    save_processor(processor, output_dir)
    save_config(model, output_dir)
    onnx_config = {
        "text_backbone": TEXT_BACKBONE_GRAPH,
        "speech_backbone": SPEECH_BACKBONE_GRAPH,
        "fusion_model": FUSION_GRAPH,
        "exported_from": type(model).__name__,
        "quantization": quantize,
        "torch_version": torch.__version__,
    }
    (output_dir / ONNX_CONFIG_NAME).write_text(json.dumps(onnx_config, indent=2) + "\n", encoding="utf-8")
    copy_shipped_files(output_dir, ONNX_SHIPPED_FILES)
    return output_dir


def save_processor(processor, output_dir: Path) -> None:
    """The processor's files, naming as its backbones the config-only subfolders beside the graphs."""
    names = processor.text_backbone, processor.speech_backbone
    processor.text_backbone = LOCAL_PREFIX + TEXT_BACKBONE_SUBFOLDER
    processor.speech_backbone = LOCAL_PREFIX + SPEECH_BACKBONE_SUBFOLDER
    try:  # the mixin's save: the processor's own would copy the PyTorch backbones, which this directory replaces
        ProcessorMixin.save_pretrained(processor, output_dir)
    finally:
        processor.text_backbone, processor.speech_backbone = names


def save_config(model, output_dir: Path) -> None:
    """`config.json` whose auto classes and pipeline load `HyFusEROnnxModel`."""
    config = model.config
    point_config_at(config, f"{Path(onnx_hyfuser.__file__).stem}.{HyFusEROnnxModel.__name__}")
    config.save_pretrained(output_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="a saved HyFusER directory (train.py's output_dir)")
    parser.add_argument("output_dir", help="where to write the ONNX graphs, the processor and the config")
    parser.add_argument("--quantize", choices=QUANTIZATIONS, help="store the graphs' weights as int8")
    args = parser.parse_args(argv)
    export_onnx(args.model_dir, args.output_dir, quantize=args.quantize)
    print(f"wrote {args.output_dir}")


if __name__ == "__main__":
    main()
