"""The frozen backbones of HyFusER's processor: where they are (Hub ids, local directories, subfolders of a saved
directory), loading them on first use, where and in which dtype they run, which hidden states become features (text
tokens; speech frames, in windows for long clips, or Whisper's encoder frames) and the speech recognizer that writes
the text of inputs that come without one.

`BackbonesMixin` is that part of `HyFusERProcessor`. It reads the processor's settings (`text_backbone`,
`speech_backbone`, `text_layer`, `speech_layer`, `layer_weighting`, `speech_window_seconds`,
`speech_window_overlap_seconds`, `sequence_length`, `asr_model`, `asr_language`), its `feature_extractor` and its
`_backbones`, a `LoadedBackbones`.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, PreTrainedModel, pipeline

LOCAL_PREFIX = "./"
"""A backbone name starting with this is a subfolder of the directory or Hub repo the processor was loaded from."""
TEXT_BACKBONE_SUBFOLDER = "text_backbone"
SPEECH_BACKBONE_SUBFOLDER = "speech_backbone"
BACKBONE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""Compute dtypes the frozen backbones can run in, by name; float32 is the default (the paper does not say)."""


@contextmanager
def global_rng_kept(device: torch.device) -> Iterator[None]:
    """Leave the global random generators (Python's, NumPy's, torch's on the CPU and on `device`) as they were.

    Training draws dropout masks from them in the same process that may load the backbones or a recognizer
    (building a model draws initial weights that its saved ones then replace) or run them (a recognizer may sample):
    without this, a run's weights would depend on whether its features were cached and on where it was resumed.
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    accelerator = torch.accelerator.current_accelerator()
    devices = []  # the CPU (whose generator is always kept) and devices without generators, such as `meta`
    if accelerator is not None and device.type == accelerator.type:
        devices = [torch.accelerator.current_device_index() if device.index is None else device.index]
    try:
        with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cpu"):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


class LoadedBackbones:
    """The two frozen backbones, loaded on first use, their (text, speech) widths, read once, and where and in which
    compute dtype they run.

    Pickling keeps none of it: the weights are hundreds of MB, reloadable from the processor's `text_backbone`/
    `speech_backbone` names, and must not enter `to_dict`, the `datasets` fingerprint or the copies the Trainer makes
    at every checkpoint; the device and dtype are this process's choice, so the features' cache key, which hashes the
    processor, is the same on every rank and device (the feature cache names the dtype itself). Deep copies keep the
    device and dtype.
    """

    def __init__(self, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        self.device = torch.device(device)
        self.dtype = dtype
        self.text: PreTrainedModel | None = None
        self.speech: PreTrainedModel | None = None
        self.feature_sizes: tuple[int, int] | None = None
        self.num_hidden_states: tuple[int, int] | None = None
        self.recognizers: dict[str, Any] = {}
        """Speech-recognition pipelines by model name, loaded on first use."""

    def __getstate__(self) -> dict[str, str]:
        return {}

    def __setstate__(self, state: dict[str, str]) -> None:
        self.__init__()

    def __deepcopy__(self, memo: dict) -> LoadedBackbones:
        return LoadedBackbones(self.device, self.dtype)


class BackbonesMixin:
    """`HyFusERProcessor`'s frozen backbones and speech recognizer."""

    _backbones: LoadedBackbones
    _source: tuple[str, dict[str, Any]] | None
    """Where the processor was loaded from (`from_pretrained`'s name and location kwargs), for `"./"` names."""

    def _validate_windows(self) -> None:
        if not 0 <= self.speech_window_overlap_seconds < self.speech_window_seconds:
            raise ValueError(
                f"need 0 <= speech_window_overlap_seconds ({self.speech_window_overlap_seconds}) < "
                f"speech_window_seconds ({self.speech_window_seconds})"
            )

    @property
    def sampling_rate(self) -> int:
        """The rate every waveform is resampled to: the feature extractor's (16 kHz for HuBERT)."""
        return self.feature_extractor.sampling_rate

    # ----------------------------------------------------------------------------------------------------------
    # Where the backbones are

    @property
    def _names(self) -> tuple[str, str]:
        return self.text_backbone, self.speech_backbone

    def backbone_references(self) -> tuple[str, str]:
        """(text, speech) backbone names that load the same backbones from any directory on this machine: a Hub id as
        it is, a local directory (one inside the directory this processor was loaded from included) by absolute
        path. A backbone inside a Hub repo's subfolder has no such name: a ValueError."""
        references = []
        for name in self._names:
            path, location = self._resolve(name)
            if "subfolder" in location and os.path.isdir(path):
                path = os.path.join(path, location["subfolder"])
            if os.path.isdir(path):
                references.append(os.path.abspath(path))
            elif name.startswith(LOCAL_PREFIX):
                raise ValueError(
                    f"the backbone {name!r} lives inside {path!r}, which is not a local directory, so no single name "
                    "can point at it: save with save_backbones=True, or load the processor from a local copy of that "
                    "repo (huggingface_hub.snapshot_download)"
                )
            else:
                references.append(name)
        return references[0], references[1]

    def has_local_backbones(self) -> bool:
        """Whether a backbone is a local directory or part of the processor's own save (so a copy must carry it)."""
        return any(name.startswith(LOCAL_PREFIX) or os.path.isdir(name) for name in self._names)

    def _write_backbones(self, save_directory: str | os.PathLike) -> tuple[str, str]:
        """Save both backbones into subfolders of `save_directory`; the (text, speech) names that point at them."""
        backbones = self._load_backbones()
        backbones.text.save_pretrained(os.path.join(save_directory, TEXT_BACKBONE_SUBFOLDER))
        backbones.speech.save_pretrained(os.path.join(save_directory, SPEECH_BACKBONE_SUBFOLDER))
        return LOCAL_PREFIX + TEXT_BACKBONE_SUBFOLDER, LOCAL_PREFIX + SPEECH_BACKBONE_SUBFOLDER

    def _resolve(self, name: str) -> tuple[str, dict[str, Any]]:
        """(Hub id or path, `from_pretrained` kwargs) of a backbone name."""
        if not name.startswith(LOCAL_PREFIX) or self._source is None:
            return name, {}
        source, location = self._source
        subfolder = "/".join(part for part in (location.get("subfolder"), name[len(LOCAL_PREFIX) :]) if part)
        return source, {**location, "subfolder": subfolder}

    # ----------------------------------------------------------------------------------------------------------
    # Loading, widths, device and dtype

    def check_backbones(self) -> tuple[int, int]:
        """Read both backbones' configs (no weights) and return their widths, (text, speech).

        `from_backbones` calls it, so that an unusable backbone fails at construction rather than at the first batch.
        """
        configs = [AutoConfig.from_pretrained(path, **kwargs) for path, kwargs in map(self._resolve, self._names)]
        self._read_backbone_configs(*configs)
        return self._backbones.feature_sizes

    @property
    def feature_sizes(self) -> tuple[int, int]:
        """(text, speech) widths of the features, from `check_backbones` the first time and remembered after that."""
        return self._backbones.feature_sizes or self.check_backbones()

    @property
    def hidden_size(self) -> int:
        """The width both backbones share (the paper's setting: 768 and 768); a ValueError if they differ."""
        text_size, speech_size = self.feature_sizes
        if text_size != speech_size:
            raise ValueError(
                f"the text backbone {self.text_backbone!r} has hidden size {text_size} but the speech backbone "
                f"{self.speech_backbone!r} has hidden size {speech_size}; only HyFusER itself projects different "
                "widths onto its hidden_size"
            )
        return text_size

    @property
    def num_hidden_states(self) -> tuple[int, int]:
        """(text, speech) hidden states per backbone, the embedding output included: the layers `layer_weighting`
        keeps."""
        if self._backbones.num_hidden_states is None:
            self.check_backbones()
        return self._backbones.num_hidden_states

    @property
    def text_backbone_model(self) -> PreTrainedModel:
        """The frozen text backbone (loaded on first use)."""
        return self._load_backbones().text

    @property
    def speech_backbone_model(self) -> PreTrainedModel:
        """The frozen speech backbone (loaded on first use)."""
        return self._load_backbones().speech

    @property
    def device(self) -> torch.device:
        return self._backbones.device

    @property
    def backbone_dtype(self) -> torch.dtype:
        """Compute dtype of the backbones' forwards: float32, or bfloat16/float16 under autocast (weights stay
        float32, and autocast keeps the precision-sensitive ops, such as LayerNorm and softmax, in float32)."""
        return self._backbones.dtype

    def to(
        self, device: str | torch.device | None = None, backbone_dtype: torch.dtype | None = None
    ) -> BackbonesMixin:
        """Run the backbones on `device` (moving them now if loaded) and/or in `backbone_dtype`; features are still
        returned on the CPU in float32."""
        if backbone_dtype is not None:
            if backbone_dtype not in BACKBONE_DTYPES.values():
                raise ValueError(f"backbone_dtype must be one of {list(BACKBONE_DTYPES)}, got {backbone_dtype}")
            self._backbones.dtype = backbone_dtype
        if device is not None:
            self._backbones.device = torch.device(device)
            for model in (self._backbones.text, self._backbones.speech):
                if model is not None:
                    model.to(device)
        return self

    def use_backbones(self, text, speech) -> BackbonesMixin:
        """Run `text` and `speech` as the backbones instead of loading `text_backbone`/`speech_backbone`: anything
        called like a transformers model that returns `last_hidden_state` and carries that model's `config`, such as
        the ONNX Runtime graphs of an `export_onnx.py` directory."""
        self._read_backbone_configs(text.config, speech.config)
        self._backbones.text, self._backbones.speech = text, speech
        return self

    def _load_backbones(self) -> LoadedBackbones:
        backbones = self._backbones
        if backbones.text is None:
            with global_rng_kept(backbones.device):
                text, speech = (
                    AutoModel.from_pretrained(path, **kwargs).eval().requires_grad_(False).to(backbones.device)
                    for path, kwargs in map(self._resolve, self._names)
                )
            self._read_backbone_configs(text.config, speech.config)
            backbones.text, backbones.speech = text, speech
        return backbones

    def _read_backbone_configs(self, text_config, speech_config) -> None:
        """Remember the (text, speech) widths and hidden-state counts, refusing a speech backbone this processor
        cannot run and a layer index a backbone does not have."""
        if speech_config.model_type != "whisper" and not hasattr(speech_config, "conv_stride"):
            raise ValueError(
                f"the speech backbone {self.speech_backbone!r} is a {speech_config.model_type!r} model: supported are "
                "wav2vec2-style encoders (HuBERT, wav2vec2, WavLM, data2vec-audio) and Whisper's encoder"
            )
        # The embedding output and one per layer; Whisper's encoder counts its own layers (not the decoder's).
        counts = tuple(
            1 + getattr(config, "encoder_layers", config.num_hidden_layers) for config in (text_config, speech_config)
        )
        for name, count in zip(("text_layer", "speech_layer"), counts):
            if not -count <= getattr(self, name) < count:
                raise ValueError(
                    f"{name}={getattr(self, name)} is out of range: the backbone has {count} hidden states "
                    f"(indices {-count}..{count - 1})"
                )
        # Whisper's config maps hidden_size to its d_model.
        self._backbones.feature_sizes = (text_config.hidden_size, speech_config.hidden_size)
        self._backbones.num_hidden_states = counts

    # ----------------------------------------------------------------------------------------------------------
    # Hidden states

    def speech_frames(self, waveform: np.ndarray) -> torch.Tensor:
        """HuBERT's hidden state `speech_layer` (the last by default) of one utterance, (frames, hidden) float32 on
        the CPU, ~49 frames per second; (layers, frames, hidden) with `layer_weighting`.

        Audio shorter than the convolutional receptive field (400 samples = 25 ms for HuBERT) is zero-padded after
        normalisation to that minimum, giving one frame. Clips longer than `speech_window_seconds` run in
        overlapping windows placed on the frame grid; each output frame comes from the window where it is furthest
        from an edge, so the frame count is the same as one pass and the backbone's memory is bounded by the window.
        What grows with the clip is the waveform (4 bytes a sample, plus its normalised copy) and the kept frames,
        written straight into one ([layers,] hidden, frames) buffer: no per-window pieces held until a final
        concatenation.
        """
        model = self.speech_backbone_model
        if model.config.model_type == "whisper":
            return self._whisper_frames(model, waveform)
        values = self.speech_input_values(waveform)
        receptive_field, stride = _receptive_field_and_stride(model.config)
        num_frames = (len(values) - receptive_field) // stride + 1
        window = max(1, round(self.speech_window_seconds * self.sampling_rate / stride))
        if num_frames <= window:
            return self._run_backbone(model, self.speech_layer, input_values=torch.from_numpy(values)[None])[0]
        hop = max(1, window - round(self.speech_window_overlap_seconds * self.sampling_rate / stride))
        starts = [*range(0, num_frames - window, hop), num_frames - window]
        cuts = [0] + [(previous + window + start) // 2 for previous, start in zip(starts, starts[1:])] + [num_frames]
        frames = None
        for start, keep_from, keep_to in zip(starts, cuts, cuts[1:]):
            samples = values[start * stride : (start + window - 1) * stride + receptive_field]
            hidden = self._run_backbone(model, self.speech_layer, input_values=torch.from_numpy(samples)[None])[0]
            if frames is None:  # ([layers,] hidden, frames)
                frames = torch.empty(*hidden.shape[:-2], hidden.shape[-1], num_frames)
            frames[..., keep_from:keep_to] = hidden[..., keep_from - start : keep_to - start, :].transpose(-1, -2)
        return frames.transpose(-1, -2)

    def speech_input_values(self, waveform: np.ndarray) -> np.ndarray:
        """A wav2vec2-style speech backbone's input values of one waveform: normalised by the feature extractor, then
        zero-padded to the convolutional receptive field when shorter (one frame)."""
        values = self.feature_extractor(waveform, sampling_rate=self.sampling_rate, return_tensors="np")
        values = values.input_values[0]
        receptive_field, _ = _receptive_field_and_stride(self.speech_backbone_model.config)
        return np.pad(values, (0, max(0, receptive_field - len(values))))

    def _whisper_frames(self, model: PreTrainedModel, waveform: np.ndarray) -> torch.Tensor:
        """Whisper's encoder frames of the audio itself, (frames, hidden), 50 per second.

        Whisper's encoder only takes its fixed window (30 s of log-mel frames), so each 30 s piece of the clip is
        padded to the window by the feature extractor and its output cut back to the frames that cover real audio:
        one per `2 * hop_length` samples (the encoder's second convolution halves the mel frame rate). Features of
        silence padding would otherwise dominate every short utterance.
        """
        extractor = self.feature_extractor
        samples_per_frame = 2 * extractor.hop_length
        pieces = []
        for start in range(0, len(waveform), extractor.n_samples):
            piece = waveform[start : start + extractor.n_samples]
            mel = extractor(piece, sampling_rate=self.sampling_rate, return_tensors="pt").input_features
            hidden = self._run_backbone(model, self.speech_layer, input_features=mel)[0]
            pieces.append(hidden[..., : max(1, math.ceil(len(piece) / samples_per_frame)), :])
        return torch.cat(pieces, dim=-2)

    def interpolate_frames(self, frames: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """([layers,] frames, hidden) -> ([layers,] length, hidden) by linear interpolation along time (Section 4.2);
        `length` defaults to `sequence_length`.

        `align_corners=True`: the first and last output positions are the first and last frames and the others are
        evenly spaced between them, i.e. `np.interp` at `linspace(0, frames - 1, length)`.
        """
        length = self.sequence_length if length is None else length
        channels_first = frames.transpose(-1, -2)  # ([layers,] hidden, frames): interpolate runs along the last axis
        resized = F.interpolate(
            channels_first.reshape(-1, *channels_first.shape[-2:]), size=length, mode="linear", align_corners=True
        )
        return resized.reshape(*channels_first.shape[:-1], length).transpose(-1, -2)

    def _run_backbone(self, model: PreTrainedModel, layer: int, **inputs: torch.Tensor) -> torch.Tensor:
        """(batch, positions, hidden) of hidden state `layer`, or (batch, layers, positions, hidden) of all of them
        with `layer_weighting`, float32 on the CPU."""
        if model.config.is_encoder_decoder:  # Whisper: its encoder is the backbone, the decoder stays unused
            model = model.get_encoder()
        every_layer = self.layer_weighting or layer != -1
        autocast = torch.autocast(
            self.device.type, dtype=self.backbone_dtype, enabled=self.backbone_dtype != torch.float32
        )
        with torch.inference_mode(), autocast, global_rng_kept(self.device):
            output = model(
                **{name: tensor.to(self.device) for name, tensor in inputs.items()}, output_hidden_states=every_layer
            )
            if self.layer_weighting:
                hidden = torch.stack(output.hidden_states, dim=1)
            else:
                hidden = output.hidden_states[layer] if every_layer else output.last_hidden_state
        # A copy made outside inference mode is an ordinary tensor, usable in autograd (e.g. a trained model's input).
        return hidden.to(device="cpu", dtype=torch.float32, copy=True)

    # ----------------------------------------------------------------------------------------------------------
    # Speech recognition, for inputs without text

    def transcribe(self, waveforms: Sequence[np.ndarray], asr_model: str | None = None) -> list[str]:
        """Transcripts of `load_audio` waveforms by the speech recognizer `asr_model` (default: `self.asr_model`),
        for inputs that come with audio only; empty where it heard no words, which the caller reports for that input.
        No recognizer, or one that cannot be loaded, is an error."""
        return self.recognize(waveforms, self._recognizer_name(asr_model))

    def recognize(self, waveforms: Sequence[np.ndarray], asr_model: str) -> list[str]:
        """What `asr_model` hears in each waveform, stripped; empty where it hears nothing."""
        recognizer, options = self._recognizer_and_options(asr_model)
        inputs = [{"raw": waveform, "sampling_rate": self.sampling_rate} for waveform in waveforms]
        with global_rng_kept(self.device):
            return [result["text"].strip() for result in recognizer(inputs, **options)]

    def recognize_chunks(self, waveform: np.ndarray, asr_model: str | None = None) -> list[dict[str, Any]]:
        """What the speech recognizer `asr_model` (default: `self.asr_model`) hears in one `load_audio` waveform of
        at most 30 s, with times: `[{"timestamp": (start, end), "text": str}, ...]` in seconds from its start (`end`
        None where it heard no end), as transformers' speech-recognition pipeline gives with `return_timestamps=True`.
        The timeline of a recording without a transcript is made of these (`timeline_hyfuser.recognized_segments`)."""
        recognizer, options = self._recognizer_and_options(self._recognizer_name(asr_model))
        with global_rng_kept(self.device):
            result = recognizer(
                {"raw": waveform, "sampling_rate": self.sampling_rate}, return_timestamps=True, **options
            )
        return result["chunks"]

    def _recognizer_name(self, asr_model: str | None) -> str:
        asr_model = asr_model or self.asr_model
        if asr_model is None:
            raise ValueError(
                "an input has audio but no text, and this processor has no speech recognizer (asr_model=None) to "
                "transcribe it: give the text, or pass asr_model= a speech-recognition model"
            )
        return asr_model

    def _recognizer_and_options(self, asr_model: str) -> tuple[Any, dict[str, Any]]:
        """The loaded recognizer, and its call options: Whisper transcribes Korean (it does not translate)."""
        recognizer = self._load_recognizer(asr_model)
        options = {}
        generation_config = getattr(recognizer.model, "generation_config", None)
        if getattr(generation_config, "is_multilingual", False):
            options["generate_kwargs"] = {"language": self.asr_language, "task": "transcribe"}
        return recognizer, options

    def _load_recognizer(self, asr_model: str):
        recognizers = self._backbones.recognizers
        if asr_model not in recognizers:
            try:
                with global_rng_kept(self.device):
                    recognizers[asr_model] = pipeline(
                        "automatic-speech-recognition", model=asr_model, device=self.device
                    )
            except (OSError, ValueError) as error:
                raise ValueError(
                    f"an input has audio but no text, and the speech recognizer {asr_model!r} cannot be loaded "
                    f"({error}). Offline, it must be a local directory or already in the Hugging Face cache: pass "
                    "asr_model= one that is, or give the text"
                ) from error
        return recognizers[asr_model]


def _receptive_field_and_stride(config) -> tuple[int, int]:
    """Samples seen by, and samples between, consecutive frames of a wav2vec2-style convolutional front end."""
    receptive_field, stride = 1, 1
    for kernel, layer_stride in zip(config.conv_kernel, config.conv_stride):
        receptive_field += (kernel - 1) * stride
        stride *= layer_stride
    return receptive_field, stride
