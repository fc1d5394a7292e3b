"""HyFusER on ONNX Runtime: the two frozen backbones and the fusion model as ONNX graphs, no PyTorch model class.

`export_onnx.py` writes such a directory; its `config.json` maps the auto classes to `HyFusEROnnxModel`, so

    >>> from transformers import pipeline
    >>> classifier = pipeline(model="hyfuser-onnx", trust_remote_code=True)

serves it through the same `HyFusERPipeline` and processor as a PyTorch checkpoint: the processor still decodes,
resamples, tokenizes, interpolates and scales; only the three networks run on ONNX Runtime, on the CPU.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from transformers import AutoConfig
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import ModelOutput, logging

try:
    from .configuration_hyfuser import HyFusERConfig
except ImportError:
    from configuration_hyfuser import HyFusERConfig

logger = logging.get_logger(__name__)

ONNX_CONFIG_NAME = "onnx_config.json"
"""The file that marks a directory as HyFusER's ONNX export and names its graphs."""
TEXT_BACKBONE_GRAPH = "text_backbone.onnx"
SPEECH_BACKBONE_GRAPH = "speech_backbone.onnx"
FUSION_GRAPH = "hyfuser.onnx"
MODALITY_LOGITS = ("text_logits", "speech_logits")


@dataclass
class HyFusEROnnxOutput(ModelOutput):
    """What the fusion graph returns: the fused `logits` and, for a two-head model, each head's logits."""

    logits: torch.FloatTensor | None = None
    text_logits: torch.FloatTensor | None = None
    speech_logits: torch.FloatTensor | None = None


def inference_session(path: str | os.PathLike) -> onnxruntime.InferenceSession:
    """A CPU session for one graph; ONNX Runtime picks its own thread count unless `OMP_NUM_THREADS` is set."""
    options = onnxruntime.SessionOptions()
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads:
        options.intra_op_num_threads = int(threads)
    return onnxruntime.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


class OnnxBackbone:
    """A backbone graph called like the transformers model it was exported from: keyword tensors in,
    `last_hidden_state` out, with that model's `config` (the processor reads the hidden size and conv geometry)."""

    def __init__(self, path: str | os.PathLike, config):
        self.session = inference_session(path)
        self.config = config
        self.input_names = [graph_input.name for graph_input in self.session.get_inputs()]

    def __call__(self, output_hidden_states: bool = False, **inputs: torch.Tensor) -> BaseModelOutput:
        if output_hidden_states:
            raise ValueError("an ONNX backbone graph returns only its last hidden state; export_onnx.py refuses "
                             "processors that read other layers")
        if sorted(inputs) != sorted(self.input_names):
            raise ValueError(f"this backbone graph takes {self.input_names}, got {sorted(inputs)}")
        feeds = {name: tensor.cpu().numpy() for name, tensor in inputs.items()}
        (hidden,) = self.session.run(None, feeds)
        return BaseModelOutput(last_hidden_state=torch.from_numpy(hidden))

    def to(self, device: str | torch.device) -> OnnxBackbone:
        _stay_on_cpu(device)
        return self


class HyFusEROnnxModel:
    """The fusion model of an `export_onnx.py` directory, called like the PyTorch model (`text_features`,
    `speech_features` -> logits), together with the backbone graphs that `HyFusERPipeline` gives its processor.

    A plain class, not an `nn.Module`: nothing of PyTorch runs but the tensors passed in and out.
    """

    config_class = HyFusERConfig
    device = torch.device("cpu")
    dtype = torch.float32

    def __init__(self, config: HyFusERConfig, directory: str | os.PathLike):
        directory = Path(directory)
        self.config = config
        self.onnx_config = json.loads((directory / ONNX_CONFIG_NAME).read_text(encoding="utf-8"))
        self.session = inference_session(directory / self.onnx_config["fusion_model"])
        self.output_names = [graph_output.name for graph_output in self.session.get_outputs()]
        self.has_modality_heads = set(MODALITY_LOGITS) <= set(self.output_names)
        self.onnx_backbones = tuple(
            OnnxBackbone(directory / self.onnx_config[graph], AutoConfig.from_pretrained(directory / subfolder))
            for graph, subfolder in (("text_backbone", "text_backbone"), ("speech_backbone", "speech_backbone"))
        )
        """(text, speech) backbone graphs; their configs live in the `text_backbone/` and `speech_backbone/`
        subfolders, which hold no weights."""

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, config: HyFusERConfig | None = None, **kwargs):
        """Load an `export_onnx.py` directory (a local one: the graphs are read from disk). `kwargs` that only
        concern PyTorch weights (dtype, device_map, ...) do not apply and are ignored."""
        if not (Path(directory) / ONNX_CONFIG_NAME).is_file():
            raise ValueError(f"{os.fspath(directory)!r} has no {ONNX_CONFIG_NAME}: export_onnx.py did not write it")
        return cls(config if config is not None else HyFusERConfig.from_pretrained(directory), directory)

    @classmethod
    def register_for_auto_class(cls, auto_class: str = "AutoModel") -> None:
        """Called by the auto classes on remote-code models; an ONNX directory's `auto_map` is written by
        `export_onnx.py`, so there is nothing to record."""

    def to(self, device: str | torch.device) -> HyFusEROnnxModel:
        _stay_on_cpu(device)
        return self

    def __call__(self, text_features: torch.Tensor, speech_features: torch.Tensor) -> HyFusEROnnxOutput:
        feeds = {
            "text_features": np.ascontiguousarray(text_features.cpu().numpy(), dtype=np.float32),
            "speech_features": np.ascontiguousarray(speech_features.cpu().numpy(), dtype=np.float32),
        }
        outputs = self.session.run(None, feeds)
        return HyFusEROnnxOutput(**{name: torch.from_numpy(value) for name, value in zip(self.output_names, outputs)})


def _stay_on_cpu(device: str | torch.device) -> None:
    """The graphs run on ONNX Runtime's CPU provider: another device (the pipeline's default on a GPU machine) is
    noted and the model stays where it is."""
    if torch.device(device).type != "cpu":
        logger.warning_once(f"the ONNX graphs run on ONNX Runtime's CPU provider, not on {device}: staying on the CPU")
