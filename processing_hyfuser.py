"""HyFusER processor: (Korean text, speech) -> the jointly scaled (sequence_length, hidden) features of Section 4.2.

The steps, each one method: `load_audio` (read, downmix, resample), `encode_text` (a KoELECTRA hidden state, the last
by default, of the padded/truncated tokens), `encode_speech` (a HuBERT hidden state, the last by default, linearly
interpolated to `sequence_length` positions), `fit_scaler` / `scale` (one standard scaler over both modalities, Eqs.
4-6).
"""

from __future__ import annotations

import io
import math
import os
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Union

import numpy as np
import soundfile
import torch
import torch.nn.functional as F
from scipy.signal import resample_poly
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoTokenizer, PreTrainedModel, pipeline
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import logging

try:
    from .configuration_hyfuser import (
        DEFAULT_ASR_MODEL,
        DEFAULT_SPEECH_BACKBONE,
        DEFAULT_TEXT_BACKBONE,
        FEATURE_MODES,
        HyFusERConfig,
    )
except ImportError:
    from configuration_hyfuser import (
        DEFAULT_ASR_MODEL,
        DEFAULT_SPEECH_BACKBONE,
        DEFAULT_TEXT_BACKBONE,
        FEATURE_MODES,
        HyFusERConfig,
    )

logger = logging.get_logger(__name__)

AudioInput = Union[str, os.PathLike, bytes, np.ndarray, torch.Tensor, Mapping]
"""One utterance: a wav/flac/ogg/mp3 path or its bytes, a 1-D or 2-D array or tensor, a `datasets`-style
{"array", "sampling_rate"} or {"bytes", "path"} dict, or the audio decoder a `datasets` `Audio` column yields."""

FEATURE_NAMES = ("text_features", "speech_features")
"""The two feature inputs of every HyFusER model, text first."""

LOCAL_PREFIX = "./"
"""A backbone name starting with this is a subfolder of the directory or Hub repo the processor was loaded from."""
TEXT_BACKBONE_SUBFOLDER = "text_backbone"
SPEECH_BACKBONE_SUBFOLDER = "speech_backbone"
LEGACY_CONFIG_KEYS = {"text_encoder": "text_backbone", "speech_encoder": "speech_backbone"}
"""`processor_config.json` keys of directories saved before the backbones were called backbones (their values,
e.g. `"./text_encoder"`, still name the subfolders those directories hold)."""

MAX_CHANNELS = 8
"""A 2-D array whose shorter side exceeds this is refused as ambiguous rather than downmixed (7.1 audio has 8)."""
STD_FLOOR = 1e-6
"""Dimensions whose standard deviation is below this are only centred (divided by 1), like sklearn's StandardScaler."""
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


class FeatureStatistics:
    """Streaming per-dimension mean and standard deviation over every position of every feature array seen.

    One pass, float64, numerically stable: each chunk's exact mean and centred sum of squares are combined with
    Chan et al.'s pairwise merge, so float16 inputs and corpora larger than RAM give the one-shot statistics.
    `merge` combines the statistics of shards fitted in separate processes.
    """

    rows_per_chunk = 4096
    """Rows converted to float64 at a time, bounding the temporary memory of `update`."""

    def __init__(self, count: int = 0, mean: np.ndarray | None = None, m2: np.ndarray | None = None):
        self.count = count
        self._mean = mean
        self._m2 = m2

    def update(self, features: np.ndarray | torch.Tensor) -> FeatureStatistics:
        """Add every position of `features` (..., hidden), any float dtype."""
        if isinstance(features, torch.Tensor):
            features = features.detach().cpu().numpy()
        features = np.asarray(features)
        rows = features.reshape(-1, features.shape[-1])
        for start in range(0, len(rows), self.rows_per_chunk):
            chunk = rows[start : start + self.rows_per_chunk].astype(np.float64)
            mean = chunk.mean(axis=0)
            self.merge(FeatureStatistics(len(chunk), mean, ((chunk - mean) ** 2).sum(axis=0)))
        return self

    def merge(self, other: FeatureStatistics) -> FeatureStatistics:
        """Combine with statistics gathered elsewhere (Chan, Golub & LeVeque 1979)."""
        if other.count == 0:
            return self
        if self.count == 0:
            self.count, self._mean, self._m2 = other.count, other._mean.copy(), other._m2.copy()
            return self
        if other._mean.shape != self._mean.shape:
            raise ValueError(
                f"cannot combine features of hidden size {other._mean.shape[0]} with hidden size {self._mean.shape[0]}"
            )
        count = self.count + other.count
        delta = other._mean - self._mean
        self._mean = self._mean + delta * (other.count / count)
        self._m2 = self._m2 + other._m2 + delta**2 * (self.count * other.count / count)
        self.count = count
        return self

    @property
    def mean(self) -> np.ndarray:
        self._require_data()
        return self._mean

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation (ddof=0), like sklearn's StandardScaler."""
        self._require_data()
        return np.sqrt(self._m2 / self.count)

    def _require_data(self) -> None:
        if self.count == 0:
            raise ValueError("no features were added to these statistics")


class _FrozenBackbones:
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

    def __deepcopy__(self, memo: dict) -> _FrozenBackbones:
        return _FrozenBackbones(self.device, self.dtype)


class HyFusERProcessor(ProcessorMixin):
    r"""
    Turns (Korean text, speech) pairs into HyFusER's inputs: `text_features` and `speech_features`, float32,
    (batch, sequence_length, hidden), jointly standard-scaled (paper Section 4.2, Eqs. 4-6).

    The frozen KoELECTRA and HuBERT backbones are loaded lazily from `text_backbone`/`speech_backbone` and never
    serialised; a name starting with `"./"` is a subfolder of wherever the processor was loaded from, which is how
    `save_pretrained(..., save_backbones=True)` makes a directory (or Hub repo) self-contained.

    Args:
        tokenizer ([`PreTrainedTokenizerBase`]): the text backbone's tokenizer (KoELECTRA's WordPiece).
        feature_extractor ([`Wav2Vec2FeatureExtractor`]): the speech backbone's feature extractor; its
            `sampling_rate` (16 kHz for HuBERT) is the rate every waveform is resampled to.
        text_backbone (`str`): Hub id or path of the frozen text backbone (Section 3.1).
        speech_backbone (`str`): Hub id or path of the frozen speech backbone (Section 3.2).
        sequence_length (`int`, *optional*): positions per modality; defaults to `HyFusERConfig().sequence_length`
            (126, the longest tokenized sentence of the paper's data).
        scaler_mean / scaler_std (`list[float]`, *optional*): the joint scaler (Eq. 5), one value per hidden
            dimension, set by `fit_scaler`. `None` until fitted.
        scaler_count (`int`): how many feature positions (both modalities) the scaler was fitted on.
        speech_scaler_mean / speech_scaler_std (`list[float]`, *optional*): set only when the backbones' widths
            differ, so that one joint scaler cannot exist: then `scaler_mean`/`scaler_std` scale the text features
            alone and these the speech features. `None` in the paper's setting (equal widths, joint scaler).
        speech_window_seconds (`float`): clips longer than this run through HuBERT in windows of this length, so
            that memory stays bounded (self-attention is quadratic in frames); shorter clips use one exact pass.
            30 s keeps ordinary utterances on the exact path.
        speech_window_overlap_seconds (`float`): overlap of consecutive windows; each frame is taken from the
            window in which it lies furthest from an edge, so every kept frame has at least half this much context.
        text_layer / speech_layer (`int`, defaults to -1): which of a backbone's hidden states is the feature:
            0 is the embedding output, 1 the first layer's, -1 the last (the default; the paper does not say which
            layer it used). Emotion often lives in the middle layers of speech encoders.
        layer_weighting (`bool`, defaults to `False`): keep every hidden state of both backbones, giving features
            of shape (batch, layers, sequence_length, hidden), for HyFusER to learn a softmax-weighted sum of them
            (`HyFusERConfig.layer_weighting`). `text_layer`/`speech_layer` are then unused.
        asr_model (`str`, *optional*, defaults to `"openai/whisper-large-v3-turbo"`): Hub id or path of the speech
            recognizer that writes the text of inputs that come without one (`transcribe`); `None` for none.
        asr_language (`str`, defaults to `"korean"`): the language a multilingual Whisper recognizer is told.
        feature_mode (`str`, defaults to `"paper"`): `"native"` keeps each text's real tokens (at most
            `sequence_length`) and the speech backbone's native frames, without interpolation; `encode` then pads a
            batch to its longest item and adds `text_attention_mask`/`speech_attention_mask`
            (`HyFusERConfig.feature_mode`).
        max_speech_frames (`int`, defaults to 1500): with `feature_mode="native"`, the most speech frames kept per
            utterance, so that HyFusER's attention (quadratic in frames) stays within memory: 1,500 frames are 30 s
            at HuBERT's 50 frames per second. Longer clips are linearly interpolated down to it, with a warning.
    """

    def __init__(
        self,
        tokenizer,
        feature_extractor,
        text_backbone: str = DEFAULT_TEXT_BACKBONE,
        speech_backbone: str = DEFAULT_SPEECH_BACKBONE,
        sequence_length: int | None = None,
        scaler_mean: list[float] | None = None,
        scaler_std: list[float] | None = None,
        scaler_count: int = 0,
        speech_scaler_mean: list[float] | None = None,
        speech_scaler_std: list[float] | None = None,
        speech_window_seconds: float = 30.0,
        speech_window_overlap_seconds: float = 5.0,
        text_layer: int = -1,
        speech_layer: int = -1,
        layer_weighting: bool = False,
        asr_model: str | None = DEFAULT_ASR_MODEL,
        asr_language: str = "korean",
        feature_mode: str = "paper",
        max_speech_frames: int = 1500,
    ):
        super().__init__(tokenizer, feature_extractor)
        self.text_backbone = text_backbone
        self.speech_backbone = speech_backbone
        self.sequence_length = HyFusERConfig().sequence_length if sequence_length is None else sequence_length
        self.scaler_mean = None if scaler_mean is None else [float(value) for value in scaler_mean]
        self.scaler_std = None if scaler_std is None else [float(value) for value in scaler_std]
        self.scaler_count = scaler_count
        self.speech_scaler_mean = (
            None if speech_scaler_mean is None else [float(value) for value in speech_scaler_mean]
        )
        self.speech_scaler_std = None if speech_scaler_std is None else [float(value) for value in speech_scaler_std]
        self.speech_window_seconds = speech_window_seconds
        self.speech_window_overlap_seconds = speech_window_overlap_seconds
        self.text_layer = text_layer
        self.speech_layer = speech_layer
        self.layer_weighting = layer_weighting
        self.asr_model = asr_model
        self.asr_language = asr_language
        self.feature_mode = feature_mode
        self.max_speech_frames = max_speech_frames
        self._backbones = _FrozenBackbones()
        self._source: tuple[str, dict[str, Any]] | None = None
        self._validate()

    def _validate(self) -> None:
        if not isinstance(self.sequence_length, int) or self.sequence_length <= 0:
            raise ValueError(f"sequence_length must be a positive integer, got {self.sequence_length!r}")
        if self.feature_mode not in FEATURE_MODES:
            raise ValueError(f"feature_mode must be one of {FEATURE_MODES}, got {self.feature_mode!r}")
        if self.feature_mode == "native" and self.layer_weighting:
            raise ValueError(
                "layer_weighting works with feature_mode='paper' only (the native cache holds one layer per item)"
            )
        if not isinstance(self.max_speech_frames, int) or self.max_speech_frames <= 0:
            raise ValueError(f"max_speech_frames must be a positive integer, got {self.max_speech_frames!r}")
        if (self.scaler_mean is None) != (self.scaler_std is None):
            raise ValueError("scaler_mean and scaler_std must be given together")
        if (self.speech_scaler_mean is None) != (self.speech_scaler_std is None):
            raise ValueError("speech_scaler_mean and speech_scaler_std must be given together")
        if self.speech_scaler_mean is not None and self.scaler_mean is None:
            raise ValueError("speech_scaler_mean is set but scaler_mean (the text side's) is not")
        for prefix in ("", "speech_"):
            mean, std = getattr(self, f"{prefix}scaler_mean"), getattr(self, f"{prefix}scaler_std")
            if mean is not None and len(mean) != len(std):
                raise ValueError(f"{prefix}scaler_mean has {len(mean)} values but {prefix}scaler_std has {len(std)}")
        if not 0 <= self.speech_window_overlap_seconds < self.speech_window_seconds:
            raise ValueError(
                f"need 0 <= speech_window_overlap_seconds ({self.speech_window_overlap_seconds}) < "
                f"speech_window_seconds ({self.speech_window_seconds})"
            )

    @property
    def model_input_names(self) -> list[str]:
        if self.feature_mode == "native":
            return ["text_features", "speech_features", "text_attention_mask", "speech_attention_mask"]
        return ["text_features", "speech_features"]

    # ----------------------------------------------------------------------------------------------------------
    # Construction, loading and saving

    @classmethod
    def from_backbones(
        cls,
        text_backbone: str = DEFAULT_TEXT_BACKBONE,
        speech_backbone: str = DEFAULT_SPEECH_BACKBONE,
        sequence_length: int | None = None,
        **kwargs,
    ) -> HyFusERProcessor:
        """An unfitted processor for two backbones (Hub ids or local dirs), checking that their hidden sizes agree.

        Only the tokenizer, feature extractor and configs are read here; the backbone weights load on first use.
        `kwargs` go to `__init__` (e.g. `speech_window_seconds`).
        """
        processor = cls(
            AutoTokenizer.from_pretrained(text_backbone),
            AutoFeatureExtractor.from_pretrained(speech_backbone),
            text_backbone=text_backbone,
            speech_backbone=speech_backbone,
            sequence_length=sequence_length,
            **kwargs,
        )
        processor.check_backbones()
        return processor

    @classmethod
    def get_processor_dict(cls, pretrained_model_name_or_path, **kwargs) -> tuple[dict[str, Any], dict[str, Any]]:
        """Also read `processor_config.json` files written before the backbones were called backbones.

        The renaming happens here because every `from_pretrained` reads the saved settings through this method,
        whichever classmethod then builds the processor (transformers 5.24 calls `from_args_and_dict`, 5.25
        `from_dict`).
        """
        processor_dict, kwargs = super().get_processor_dict(pretrained_model_name_or_path, **kwargs)
        return {LEGACY_CONFIG_KEYS.get(key, key): value for key, value in processor_dict.items()}, kwargs

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> HyFusERProcessor:
        """Load a saved processor, remembering where from so that `"./"` backbone names resolve there."""
        processor = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        keys = ("subfolder", "revision", "cache_dir", "local_files_only")
        location = {key: kwargs[key] for key in keys if kwargs.get(key)}
        processor._source = (os.fspath(pretrained_model_name_or_path), location)
        return processor

    def save_pretrained(
        self, save_directory: str | os.PathLike, push_to_hub: bool = False, save_backbones: bool | None = None, **kwargs
    ) -> list[str]:
        """Save the tokenizer, feature extractor, scaler and settings (`processor_config.json`) and the code.

        With `save_backbones=True` both backbones are also written to `text_backbone/` and `speech_backbone/` and
        referenced as `"./text_backbone"`, `"./speech_backbone"`, so the directory or Hub repo needs nothing else.
        With `False` they are referenced where they are (`backbone_references`): Hub ids as they are, local
        directories by absolute path, which is what training checkpoints do. The default (`None`) is
        `has_local_backbones()`: a saved processor never points at a local path that will not exist where it is
        loaded, and re-saving a self-contained one stays self-contained. To publish the backbones too, use
        `push_to_hub(repo_id)` or upload the saved folder: `push_to_hub=True` here would miss the subfolders.
        """
        names = self._names
        if save_backbones is None:
            save_backbones = self.has_local_backbones()
        if save_backbones:
            if push_to_hub:  # ProcessorMixin uploads only what it wrote itself
                raise ValueError(
                    "save_pretrained(push_to_hub=True) cannot upload the backbones: use push_to_hub(repo_id)"
                )
            backbones = self._load_backbones()
            backbones.text.save_pretrained(os.path.join(save_directory, TEXT_BACKBONE_SUBFOLDER))
            backbones.speech.save_pretrained(os.path.join(save_directory, SPEECH_BACKBONE_SUBFOLDER))
            self.text_backbone = LOCAL_PREFIX + TEXT_BACKBONE_SUBFOLDER
            self.speech_backbone = LOCAL_PREFIX + SPEECH_BACKBONE_SUBFOLDER
        else:
            self.text_backbone, self.speech_backbone = self.backbone_references()
        try:
            return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        finally:  # this in-memory processor still loads its backbones from where they were
            self.text_backbone, self.speech_backbone = names

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

    def _resolve(self, name: str) -> tuple[str, dict[str, Any]]:
        """(Hub id or path, `from_pretrained` kwargs) of a backbone name."""
        if not name.startswith(LOCAL_PREFIX) or self._source is None:
            return name, {}
        source, location = self._source
        subfolder = "/".join(part for part in (location.get("subfolder"), name[len(LOCAL_PREFIX) :]) if part)
        return source, {**location, "subfolder": subfolder}

    # ----------------------------------------------------------------------------------------------------------
    # Frozen backbones

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
    def scales_per_modality(self) -> bool:
        """Whether each modality has its own scaler (different widths) instead of the paper's joint one."""
        return self.speech_scaler_mean is not None

    def check_compatible(self, config: HyFusERConfig) -> None:
        """Raise ValueError unless this processor produces the feature shapes (and scaler sizes) `config` expects."""
        for name, size in zip(("text_feature_size", "speech_feature_size"), self.feature_sizes):
            if getattr(config, name) != size:
                raise ValueError(
                    f"HyFusERConfig.{name} is {getattr(config, name)} but the backbones {self.text_backbone!r} and "
                    f"{self.speech_backbone!r} have hidden sizes {self.feature_sizes}"
                )
        if config.feature_mode != self.feature_mode:
            raise ValueError(
                f"HyFusERConfig.feature_mode is {config.feature_mode!r} but the processor's is {self.feature_mode!r}"
            )
        if config.sequence_length != self.sequence_length:
            raise ValueError(
                f"HyFusERConfig.sequence_length is {config.sequence_length} but the processor's sequence_length "
                f"is {self.sequence_length}"
            )
        if self.scaler_mean is not None:
            scaler_sizes = (
                (len(self.scaler_mean), len(self.speech_scaler_mean))
                if self.scales_per_modality
                else (len(self.scaler_mean),) * 2
            )
            if scaler_sizes != self.feature_sizes:
                raise ValueError(
                    f"the scaler has {scaler_sizes} dimensions (text, speech) but the backbones have "
                    f"{self.feature_sizes}"
                )

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
    ) -> HyFusERProcessor:
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

    def use_backbones(self, text, speech) -> HyFusERProcessor:
        """Run `text` and `speech` as the backbones instead of loading `text_backbone`/`speech_backbone`: anything
        called like a transformers model that returns `last_hidden_state` and carries that model's `config`, such as
        the ONNX Runtime graphs of an `export_onnx.py` directory."""
        self._read_backbone_configs(text.config, speech.config)
        self._backbones.text, self._backbones.speech = text, speech
        return self

    @property
    def _names(self) -> tuple[str, str]:
        return self.text_backbone, self.speech_backbone

    def _load_backbones(self) -> _FrozenBackbones:
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

    @property
    def num_hidden_states(self) -> tuple[int, int]:
        """(text, speech) hidden states per backbone, the embedding output included: the layers `layer_weighting`
        keeps."""
        if self._backbones.num_hidden_states is None:
            self.check_backbones()
        return self._backbones.num_hidden_states

    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        """One utterance's feature shape per model input: (sequence_length, width), with the layers in front when
        `layer_weighting` keeps them all."""
        shapes = {}
        for name, width, layers in zip(FEATURE_NAMES, self.feature_sizes, self.num_hidden_states):
            length = None if self.feature_mode == "native" else self.sequence_length
            shapes[name] = ((layers,) if self.layer_weighting else ()) + (length, width)
        return shapes

    def model_config_fields(self) -> dict[str, Any]:
        """The `HyFusERConfig` fields these features decide: the widths (HyFusER works at the narrower one when they
        differ), the positions and the layer weighting."""
        text_size, speech_size = self.feature_sizes
        text_layers, speech_layers = self.num_hidden_states
        return {
            "hidden_size": min(text_size, speech_size),
            "text_feature_size": text_size,
            "speech_feature_size": speech_size,
            "sequence_length": self.sequence_length,
            "feature_mode": self.feature_mode,
            "layer_weighting": self.layer_weighting,
            "text_num_layers": text_layers,
            "speech_num_layers": speech_layers,
        }

    # ----------------------------------------------------------------------------------------------------------
    # Audio

    @property
    def sampling_rate(self) -> int:
        """The rate every waveform is resampled to: the feature extractor's (16 kHz for HuBERT)."""
        return self.feature_extractor.sampling_rate

    def load_audio(self, audio: AudioInput, sampling_rate: int | None = None) -> np.ndarray:
        """One utterance as a float32 mono waveform at `self.sampling_rate`.

        - a path (wav, flac, ogg, mp3: anything libsndfile reads), or the bytes of such a file: channels are averaged;
        - a 1-D array or tensor, or a 2-D one with up to `MAX_CHANNELS` channels on either axis (the shorter axis is
          taken as channels, so (channels, samples) and soundfile's (samples, channels) both work): it is at
          `sampling_rate`, or at `self.sampling_rate` if that is None (with a warning, at every such array). Integer
          PCM is scaled to [-1, 1). A batch is a list, never a 2-D array;
        - a `{"array", "sampling_rate"}` dict, or an undecoded `{"bytes", "path"}` one (`Audio(decode=False)`);
        - the audio decoder a decoding `datasets.Audio` column yields (torchcodec's `AudioDecoder`): anything with
          `get_all_samples()` returning (channels, samples) `data` and its `sample_rate`.

        Resampling is polyphase (`scipy.signal.resample_poly`) by the exact ratio target/rate.
        """
        if isinstance(audio, (str, os.PathLike)):
            what = f"audio file {os.fspath(audio)!r}"
            waveform, rate = _read_audio_file(audio, what)
        elif isinstance(audio, (bytes, bytearray)):
            what = f"audio bytes ({len(audio)} bytes)"
            waveform, rate = _read_audio_bytes(audio, what)
        elif isinstance(audio, Mapping):
            what = f"audio dict (path {audio['path']!r})" if audio.get("path") else "audio dict"
            if "array" in audio and "sampling_rate" in audio:
                waveform, rate = _to_mono(audio["array"], what), audio["sampling_rate"]
            elif "array" not in audio and audio.get("bytes") is not None:
                waveform, rate = _read_audio_bytes(audio["bytes"], what)
            elif "array" not in audio and audio.get("path") is not None:
                waveform, rate = _read_audio_file(audio["path"], what)
            else:
                raise ValueError(
                    f"{what} needs 'array' and 'sampling_rate' keys, or 'bytes' or 'path', got {sorted(audio)}"
                )
        elif callable(getattr(audio, "get_all_samples", None)):
            path = getattr(getattr(audio, "metadata", None), "path", None)
            what = f"audio decoder (path {path!r})" if path else "audio decoder"
            samples = audio.get_all_samples()
            waveform, rate = _to_mono(samples.data, what), samples.sample_rate
        elif isinstance(audio, (np.ndarray, torch.Tensor)):
            what = "audio array"
            if sampling_rate is None:
                # Every time, not once per process: a wrong guess silently changes the prediction.
                logger.warning(
                    f"No sampling_rate given for a raw audio array: it is taken to be at {self.sampling_rate} Hz, the "
                    "speech backbone's rate, and is not resampled. If it was recorded at another rate, say which: "
                    'pass {"array": waveform, "sampling_rate": 48000} as the audio, or sampling_rate=48000 to the '
                    "pipeline or processor call."
                )
            waveform, rate = _to_mono(audio, what), self.sampling_rate if sampling_rate is None else sampling_rate
        else:
            raise ValueError(
                f"unsupported audio type {type(audio).__name__}: expected a file path or its bytes, a 1-D or 2-D "
                "array or tensor, an {'array', 'sampling_rate'} or {'bytes', 'path'} dict, or a datasets audio decoder"
            )
        rate = _check_sampling_rate(rate, what)
        if waveform.size == 0:
            raise ValueError(f"{what} has zero length")
        if not np.isfinite(waveform).all():
            raise ValueError(f"{what} contains NaN or inf samples")
        if rate == self.sampling_rate:
            return waveform
        # resample_poly reduces the ratio by the gcd itself: 44,100 -> 16,000 Hz runs as up 160, down 441.
        return resample_poly(waveform, self.sampling_rate, rate).astype(np.float32)

    # ----------------------------------------------------------------------------------------------------------
    # Features

    def check_text(self, text: str) -> str:
        """`text`, if it is a non-empty string (an empty one would be all [PAD]: features of nothing)."""
        if not isinstance(text, str):
            raise ValueError(f"unsupported text type {type(text).__name__}, expected str")
        if not text.strip():
            raise ValueError(f"empty or whitespace-only text {text!r}")
        return text

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor | list[torch.Tensor]:
        """KoELECTRA's hidden state `text_layer` (the last by default), (batch, sequence_length, hidden) float32 on
        the CPU; (batch, layers, sequence_length, hidden) with `layer_weighting`; with `feature_mode="native"`, a
        list of each text's (tokens, hidden) (`text_sequences`).

        Every sentence is padded or truncated to exactly `sequence_length` tokens (Section 4.2), so a row does not
        depend on the other rows of its batch.
        """
        for index, text in enumerate(texts):
            try:
                self.check_text(text)
            except ValueError as error:
                raise ValueError(f"text[{index}]: {error}") from error
        if self.feature_mode == "native":
            return self.text_sequences(texts)
        inputs = self.tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=self.sequence_length, return_tensors="pt"
        )
        return self._run_backbone(self.text_backbone_model, self.text_layer, **inputs)

    def text_sequences(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """`feature_mode="native"`: each text's hidden states at its own tokens only, (tokens, hidden), at most
        `sequence_length` tokens. The batch is padded for the backbone and its attention mask keeps the padding out."""
        inputs = self.tokenizer(
            list(texts), padding="longest", truncation=True, max_length=self.sequence_length, return_tensors="pt"
        )
        hidden = self._run_backbone(self.text_backbone_model, self.text_layer, **inputs)
        return [states[:length] for states, length in zip(hidden, inputs["attention_mask"].sum(-1).tolist())]

    def speech_sequence(self, waveform: np.ndarray) -> torch.Tensor:
        """`feature_mode="native"`: one utterance's native speech frames, (frames, hidden), at most
        `max_speech_frames` (longer clips are interpolated down to it)."""
        frames = self.speech_frames(waveform)
        if len(frames) <= self.max_speech_frames:
            return frames
        logger.warning(
            f"A clip gave {len(frames)} speech frames, more than max_speech_frames={self.max_speech_frames}: they are "
            f"interpolated down to {self.max_speech_frames}"
        )
        resized = F.interpolate(frames.T[None], size=self.max_speech_frames, mode="linear", align_corners=True)
        return resized[0].T

    def pad_features(self, text_sequences: Sequence[Any], speech_sequences: Sequence[Any]) -> BatchFeature:
        """`feature_mode="native"`: (length, hidden) sequences of any lengths as zero-padded batches with their
        `text_attention_mask`/`speech_attention_mask` (1 real, 0 padding): the model's native inputs."""
        batch = {}
        for modality, sequences in (("text", text_sequences), ("speech", speech_sequences)):
            sequences = [torch.as_tensor(sequence, dtype=torch.float32) for sequence in sequences]
            lengths = [len(sequence) for sequence in sequences]
            features = torch.zeros(len(sequences), max(lengths), sequences[0].shape[-1])
            mask = torch.zeros(len(sequences), max(lengths), dtype=torch.long)
            for row, (sequence, length) in enumerate(zip(sequences, lengths)):
                features[row, :length] = sequence
                mask[row, :length] = 1
            batch[f"{modality}_features"], batch[f"{modality}_attention_mask"] = features, mask
        return BatchFeature(batch)

    def encode_speech(self, waveforms: Sequence[np.ndarray]) -> torch.Tensor | list[torch.Tensor]:
        """HuBERT features interpolated to `sequence_length` positions, (batch, sequence_length, hidden) float32;
        with `feature_mode="native"`, a list of each utterance's (frames, hidden) (`speech_sequence`).

        `waveforms` are `load_audio` outputs. Each runs alone, unpadded: HuBERT-base's group norm makes padded
        batches change the output, and the result must not depend on the batch.
        """
        if self.feature_mode == "native":
            return [self.speech_sequence(waveform) for waveform in waveforms]
        return torch.stack([self.interpolate_frames(self.speech_frames(waveform)) for waveform in waveforms])

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
        values = self.feature_extractor(waveform, sampling_rate=self.sampling_rate, return_tensors="np")
        values = values.input_values[0]
        receptive_field, stride = _receptive_field_and_stride(model.config)
        if len(values) < receptive_field:
            values = np.pad(values, (0, receptive_field - len(values)))
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

    def interpolate_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """([layers,] frames, hidden) -> ([layers,] sequence_length, hidden) by linear interpolation along time
        (Section 4.2).

        `align_corners=True`: the first and last output positions are the first and last frames and the others are
        evenly spaced between them, i.e. `np.interp` at `linspace(0, frames - 1, sequence_length)`.
        """
        channels_first = frames.transpose(-1, -2)  # ([layers,] hidden, frames): interpolate runs along the last axis
        resized = F.interpolate(
            channels_first.reshape(-1, *channels_first.shape[-2:]),
            size=self.sequence_length,
            mode="linear",
            align_corners=True,
        )
        return resized.reshape(*channels_first.shape[:-1], self.sequence_length).transpose(-1, -2)

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

    def transcribe(self, waveforms: Sequence[np.ndarray], asr_model: str | None = None) -> list[str]:
        """Transcripts of `load_audio` waveforms by the speech recognizer `asr_model` (default: `self.asr_model`),
        for inputs that come with audio only; empty where it heard no words, which the caller reports for that input.
        No recognizer, or one that cannot be loaded, is an error."""
        asr_model = asr_model or self.asr_model
        if asr_model is None:
            raise ValueError(
                "an input has audio but no text, and this processor has no speech recognizer (asr_model=None) to "
                "transcribe it: give the text, or pass asr_model= a speech-recognition model"
            )
        return self.recognize(waveforms, asr_model)

    def recognize(self, waveforms: Sequence[np.ndarray], asr_model: str) -> list[str]:
        """What `asr_model` hears in each waveform, stripped; empty where it hears nothing."""
        recognizer = self._load_recognizer(asr_model)
        options = {}
        generation_config = getattr(recognizer.model, "generation_config", None)
        if getattr(generation_config, "is_multilingual", False):  # Whisper: Korean, transcribed (not translated)
            options["generate_kwargs"] = {"language": self.asr_language, "task": "transcribe"}
        inputs = [{"raw": waveform, "sampling_rate": self.sampling_rate} for waveform in waveforms]
        with global_rng_kept(self.device):
            return [result["text"].strip() for result in recognizer(inputs, **options)]

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

    def encode(self, texts: Sequence[str], waveforms: Sequence[np.ndarray]) -> BatchFeature:
        """Unscaled `text_features` and `speech_features` of paired texts and `load_audio` waveforms.

        The pipeline, which loads audio in `preprocess`, calls this once per batch and then `scale`.
        """
        if len(texts) != len(waveforms):
            raise ValueError(f"got {len(texts)} texts but {len(waveforms)} audio items; they must pair up one to one")
        text_features, speech_features = self.encode_text(texts), self.encode_speech(waveforms)
        if self.feature_mode == "native":
            return self.pad_features(text_features, speech_features)
        return BatchFeature({"text_features": text_features, "speech_features": speech_features})

    def _load_pairs(
        self, text: str | Sequence[str], audio: AudioInput | Sequence[AudioInput], sampling_rate: int | None
    ) -> tuple[list[str], list[np.ndarray]]:
        """A single `text` goes with a single `audio`, lists with lists; all audio loads before any backbone runs."""
        # Sequences cover lists, tuples and `datasets` columns; a str is one text, and a path one clip.
        if isinstance(text, str):
            texts = [text]
        elif isinstance(text, Sequence):
            texts = list(text)
        else:
            raise ValueError(f"unsupported text type {type(text).__name__}: expected a str or a list of str")
        one_clip = isinstance(audio, (str, bytes, bytearray)) or not isinstance(audio, Sequence)
        clips = [audio] if one_clip else list(audio)
        waveforms = []
        for index, clip in enumerate(clips):
            try:
                waveforms.append(self.load_audio(clip, sampling_rate))
            except ValueError as error:
                raise ValueError(f"audio[{index}]: {error}") from error
        return texts, waveforms

    # ----------------------------------------------------------------------------------------------------------
    # Joint standard scaling (Eqs. 4-6)

    @property
    def is_scaler_fitted(self) -> bool:
        return self.scaler_mean is not None

    def fit_scaler(
        self, batches: Iterable[tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]]
    ) -> HyFusERProcessor:
        """Fit the scaler on the unscaled (text_features, speech_features) of the *training* data, in one streaming
        pass (`FeatureStatistics`).

        Equal widths (the paper): one mean and std per hidden dimension over all positions of both modalities, i.e.
        over concat(X_T, X_S) (Eq. 5). Different widths: each modality's own statistics.
        """
        text_statistics, speech_statistics = FeatureStatistics(), FeatureStatistics()
        for text_features, speech_features in batches:
            text_statistics.update(text_features)
            speech_statistics.update(speech_features)
        if text_statistics.count == 0:
            raise ValueError("fit_scaler got no features: pass an iterable of (text_features, speech_features)")
        if text_statistics.mean.shape == speech_statistics.mean.shape:
            return self.set_scaler(text_statistics.merge(speech_statistics))
        return self.set_scaler(text_statistics, speech_statistics)

    def set_scaler(
        self, statistics: FeatureStatistics, speech_statistics: FeatureStatistics | None = None
    ) -> HyFusERProcessor:
        """Use statistics gathered elsewhere (e.g. `merge`d across processes): the joint scaler, or with
        `speech_statistics` the text side's and the speech side's."""
        self.scaler_mean = statistics.mean.tolist()
        self.scaler_std = statistics.std.tolist()
        self.scaler_count = statistics.count
        self.speech_scaler_mean = self.speech_scaler_std = None
        if speech_statistics is not None:
            self.speech_scaler_mean = speech_statistics.mean.tolist()
            self.speech_scaler_std = speech_statistics.std.tolist()
            self.scaler_count += speech_statistics.count
        return self

    def scale(self, text_features: Any, speech_features: Any) -> tuple[Any, Any]:
        """(x - mean) / std with the fitted statistics (Eqs. 5-6), as float32 numpy arrays or tensors, like the
        input."""
        text_statistics, speech_statistics = self.scaler_statistics()
        return _standardize(text_features, *text_statistics), _standardize(speech_features, *speech_statistics)

    def scaler_statistics(self) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """The fitted scaler as float32 ((text mean, text std), (speech mean, speech std)): the same pair twice in
        the paper's joint setting. A std below `STD_FLOOR` counts as 1, so constant dimensions are centred instead
        of divided by ~0. Raises if the scaler is not fitted."""
        if not self.is_scaler_fitted:
            raise ValueError(
                "this HyFusERProcessor's scaler is not fitted: call processor.fit_scaler(...) on the unscaled "
                "training features (processor(..., scale=False)) first, or pass scale=False"
            )
        text = _statistics(self.scaler_mean, self.scaler_std)
        speech = _statistics(self.speech_scaler_mean, self.speech_scaler_std) if self.scales_per_modality else text
        return text, speech

    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        audio: AudioInput | Sequence[AudioInput] | None = None,
        sampling_rate: int | None = None,
        scale: bool = True,
        return_tensors: str = "pt",
    ) -> BatchFeature:
        """`text_features` and `speech_features`, (batch, sequence_length, hidden) float32, scaled unless told not to.

        `sampling_rate` is the rate of raw arrays in `audio`; files and dicts carry their own.
        """
        if text is None or audio is None:
            raise ValueError("HyFusERProcessor needs both text= and audio=")
        statistics = self.scaler_statistics() if scale else None  # before any file is read
        features = self.encode(*self._load_pairs(text, audio, sampling_rate))
        if statistics is not None:
            features = dict(features)
            features.update(zip(FEATURE_NAMES, self.scale(features["text_features"], features["speech_features"])))
        return BatchFeature(dict(features), tensor_type=return_tensors)


def _read_audio_file(path: str | os.PathLike, what: str) -> tuple[np.ndarray, int]:
    if not os.path.isfile(path):
        raise ValueError(f"{what} does not exist")
    return _decode(path, what)


def _read_audio_bytes(data: bytes, what: str) -> tuple[np.ndarray, int]:
    return _decode(io.BytesIO(data), what)


def _decode(source: str | os.PathLike | io.BytesIO, what: str) -> tuple[np.ndarray, int]:
    """(mono float32 waveform, rate) of an encoded file or its bytes."""
    try:
        waveform, rate = soundfile.read(source, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        # libsndfile's own reason ("Format not recognised."), without the Python object it was reading from
        raise ValueError(f"{what} cannot be read as audio: {getattr(error, 'error_string', error)}") from error
    return waveform.mean(axis=1), rate  # soundfile returns (samples, channels)


def _to_mono(array: Any, what: str) -> np.ndarray:
    """A float32 1-D waveform from a 1-D or 2-D array (channels on the shorter axis are averaged)."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.signedinteger):
        array = array / -float(np.iinfo(array.dtype).min)
    elif not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{what} has unsupported dtype {array.dtype}: expected float or signed-integer PCM")
    if array.ndim == 2:
        if min(array.shape) > MAX_CHANNELS:
            raise ValueError(
                f"{what} of shape {array.shape} is ambiguous: a 2-D array must be (channels, samples) or "
                f"(samples, channels) with at most {MAX_CHANNELS} channels; pass a batch as a list of arrays"
            )
        array = array.mean(axis=int(np.argmin(array.shape)))
    elif array.ndim != 1:
        raise ValueError(f"{what} has {array.ndim} dimensions: expected a 1-D or 2-D (multi-channel) array")
    return array.astype(np.float32)


def _check_sampling_rate(rate: Any, what: str) -> int:
    is_number = isinstance(rate, (int, float, np.integer, np.floating)) and not isinstance(rate, (bool, np.bool_))
    if not (is_number and rate > 0 and float(rate).is_integer()):
        raise ValueError(f"{what}: sampling rate must be a positive whole number of Hz, got {rate!r}")
    return int(rate)


def _receptive_field_and_stride(config) -> tuple[int, int]:
    """Samples seen by, and samples between, consecutive frames of a wav2vec2-style convolutional front end."""
    receptive_field, stride = 1, 1
    for kernel, layer_stride in zip(config.conv_kernel, config.conv_stride):
        receptive_field += (kernel - 1) * stride
        stride *= layer_stride
    return receptive_field, stride


def _statistics(mean: list[float], std: list[float]) -> tuple[np.ndarray, np.ndarray]:
    std = np.asarray(std, dtype=np.float32)
    return np.asarray(mean, dtype=np.float32), np.where(std < STD_FLOOR, np.float32(1), std)


def _standardize(features: Any, mean: np.ndarray, std: np.ndarray) -> Any:
    if isinstance(features, torch.Tensor):
        features = features.float()
        return (features - torch.from_numpy(mean).to(features.device)) / torch.from_numpy(std).to(features.device)
    return (np.asarray(features, dtype=np.float32) - mean) / std


HyFusERProcessor.register_for_auto_class("AutoProcessor")
