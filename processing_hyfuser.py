"""HyFusER processor: (Korean text, speech) -> the jointly scaled (sequence_length, hidden) features of Section 4.2.

The steps, each one method: `load_audio` (read, downmix, resample), `encode_text` (a KoELECTRA hidden state, the last
by default, of the padded/truncated tokens), `encode_speech` (a HuBERT hidden state, the last by default, linearly
interpolated to `sequence_length` positions), `collate` (the items as one batch), `fit_scaler` / `scale` (one standard
scaler over both modalities, Eqs. 4-6).

It composes three shipped parts: `audio_hyfuser` (decoding, downmixing, resampling), `backbones_hyfuser` (the frozen
backbones, the recognizer), `scaling_hyfuser` (the joint scaler). Here: settings, saving and loading, each item's
unpadded features and `collate`, which stacks or pads them; `fixed_length` is the one place that reads `feature_mode`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import AutoFeatureExtractor, AutoTokenizer
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.tokenization_utils_base import BatchEncoding
from transformers.utils import logging

try:
    from .audio_hyfuser import AudioInput, load_audio
    from .backbones_hyfuser import BackbonesMixin, LoadedBackbones
    from .configuration_hyfuser import (
        DEFAULT_ASR_MODEL,
        DEFAULT_SPEECH_BACKBONE,
        DEFAULT_TEXT_BACKBONE,
        FEATURE_MODES,
        HyFusERConfig,
    )
    from .scaling_hyfuser import ScalingMixin
except ImportError:
    from audio_hyfuser import AudioInput, load_audio
    from backbones_hyfuser import BackbonesMixin, LoadedBackbones
    from configuration_hyfuser import (
        DEFAULT_ASR_MODEL,
        DEFAULT_SPEECH_BACKBONE,
        DEFAULT_TEXT_BACKBONE,
        FEATURE_MODES,
        HyFusERConfig,
    )
    from scaling_hyfuser import ScalingMixin

logger = logging.get_logger(__name__)

FEATURE_NAMES = ("text_features", "speech_features")
"""The two feature inputs of every HyFusER model, text first."""
ATTENTION_MASK_NAMES = ("text_attention_mask", "speech_attention_mask")
"""Their masks (1 real, 0 padding), which batches of items of their own lengths carry."""

LEGACY_CONFIG_KEYS = {"text_encoder": "text_backbone", "speech_encoder": "speech_backbone"}
"""`processor_config.json` keys of directories saved before the backbones were called backbones (their values,
e.g. `"./text_encoder"`, still name the subfolders those directories hold)."""


class HyFusERProcessor(BackbonesMixin, ScalingMixin, ProcessorMixin):
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
            `sequence_length`) and the speech backbone's native frames, without interpolation; `collate` then pads a
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
        self._backbones = LoadedBackbones()
        self._source: tuple[str, dict[str, Any]] | None = None
        self._validate()

    def _validate(self) -> None:
        if not isinstance(self.sequence_length, int) or self.sequence_length <= 0:
            raise ValueError(f"sequence_length must be a positive integer, got {self.sequence_length!r}")
        if self.feature_mode not in FEATURE_MODES:
            raise ValueError(f"feature_mode must be one of {FEATURE_MODES}, got {self.feature_mode!r}")
        if self.layer_weighting and not self.fixed_length:
            raise ValueError(
                "layer_weighting works with feature_mode='paper' only (the native cache holds one layer per item)"
            )
        if not isinstance(self.max_speech_frames, int) or self.max_speech_frames <= 0:
            raise ValueError(f"max_speech_frames must be a positive integer, got {self.max_speech_frames!r}")
        self._validate_scaler()
        self._validate_windows()

    @property
    def fixed_length(self) -> bool:
        """Whether every item's features have `sequence_length` positions (`feature_mode="paper"`), so that a batch
        stacks them; otherwise (`"native"`) each keeps its own length, and `collate` pads them and adds their
        attention masks. The one place that reads `feature_mode`: the rest of the code asks this."""
        return self.feature_mode == "paper"

    @property
    def model_input_names(self) -> list[str]:
        return list(FEATURE_NAMES) if self.fixed_length else [*FEATURE_NAMES, *ATTENTION_MASK_NAMES]

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
        self,
        save_directory: str | os.PathLike,
        push_to_hub: bool = False,
        save_backbones: bool | None = None,
        **kwargs,
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
        if save_backbones and push_to_hub:  # ProcessorMixin uploads only what it wrote itself
            raise ValueError("save_pretrained(push_to_hub=True) cannot upload the backbones: use push_to_hub(repo_id)")
        saved_names = self._write_backbones(save_directory) if save_backbones else self.backbone_references()
        self.text_backbone, self.speech_backbone = saved_names
        try:
            return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        finally:  # this in-memory processor still loads its backbones from where they were
            self.text_backbone, self.speech_backbone = names

    # ----------------------------------------------------------------------------------------------------------
    # What the features are

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

    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        """One utterance's feature shape per model input: (sequence_length, width), with the layers in front when
        `layer_weighting` keeps them all; the length is None where each item keeps its own (`fixed_length`)."""
        shapes = {}
        for name, width, layers in zip(FEATURE_NAMES, self.feature_sizes, self.num_hidden_states):
            length = self.sequence_length if self.fixed_length else None
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
    # Features: each item's, unpadded, then `collate`

    def load_audio(self, audio: AudioInput, sampling_rate: int | None = None) -> np.ndarray:
        """One utterance as a float32 mono waveform at `self.sampling_rate` (`audio_hyfuser.load_audio`: files, their
        bytes, arrays or tensors at `sampling_rate`, `datasets` dicts and decoders)."""
        return load_audio(audio, self.sampling_rate, sampling_rate)

    def check_text(self, text: str) -> str:
        """`text`, if it is a non-empty string (an empty one would be all [PAD]: features of nothing)."""
        if not isinstance(text, str):
            raise ValueError(f"unsupported text type {type(text).__name__}, expected str")
        if not text.strip():
            raise ValueError(f"empty or whitespace-only text {text!r}")
        return text

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor | list[torch.Tensor]:
        """Each text's features: KoELECTRA's hidden state `text_layer` (the last by default), float32 on the CPU.

        With fixed lengths every sentence is padded or truncated to exactly `sequence_length` tokens (Section 4.2),
        so a row does not depend on the other rows of its batch, and the items come as one tensor, (batch,
        sequence_length, hidden), or (batch, layers, sequence_length, hidden) with `layer_weighting`. Otherwise each
        text keeps its real tokens only, at most `sequence_length`: a list of (tokens, hidden), from a batch padded
        for the backbone whose attention mask keeps the padding out.
        """
        for index, text in enumerate(texts):
            try:
                self.check_text(text)
            except ValueError as error:
                raise ValueError(f"text[{index}]: {error}") from error
        inputs = self.tokenize(texts)
        hidden = self._run_backbone(self.text_backbone_model, self.text_layer, **inputs)
        if self.fixed_length:
            return hidden
        return [states[:length] for states, length in zip(hidden, inputs["attention_mask"].sum(-1).tolist())]

    def tokenize(self, texts: Sequence[str]) -> BatchEncoding:
        """The text backbone's inputs of `texts`: padded or truncated to `sequence_length` tokens with fixed lengths,
        else padded to the batch's longest and truncated to `sequence_length`."""
        padding = "max_length" if self.fixed_length else "longest"
        return self.tokenizer(
            list(texts), padding=padding, truncation=True, max_length=self.sequence_length, return_tensors="pt"
        )

    def encode_speech(self, waveforms: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Each utterance's features (`speech_sequence`) of `load_audio` waveforms.

        Each runs alone, unpadded: HuBERT-base's group norm makes padded batches change the output, and the result
        must not depend on the batch.
        """
        return [self.speech_sequence(waveform) for waveform in waveforms]

    def speech_sequence(self, waveform: np.ndarray) -> torch.Tensor:
        """One utterance's features: its `speech_frames` linearly interpolated to `sequence_length` positions
        (Section 4.2); without fixed lengths its native frames, (frames, hidden), at most `max_speech_frames` (longer
        clips are interpolated down to it)."""
        frames = self.speech_frames(waveform)
        if self.fixed_length:
            return self.interpolate_frames(frames)
        if len(frames) <= self.max_speech_frames:
            return frames
        logger.warning(
            f"A clip gave {len(frames)} speech frames, more than max_speech_frames={self.max_speech_frames}: they are "
            f"interpolated down to {self.max_speech_frames}"
        )
        return self.interpolate_frames(frames, self.max_speech_frames)

    def collate(self, text_features: Sequence[Any], speech_features: Sequence[Any]) -> BatchFeature:
        """Items' features (tensors or arrays, as `encode_text`/`encode_speech` or the feature cache give them) as one
        float32 batch, where they are: stacked, as every item has `sequence_length` positions; or, when each keeps its
        own length, zero-padded to the longest with `text_attention_mask`/`speech_attention_mask` (1 real, 0
        padding): the model's inputs either way."""
        batch = {}
        for name, mask_name, items in zip(FEATURE_NAMES, ATTENTION_MASK_NAMES, (text_features, speech_features)):
            items = [torch.as_tensor(item) for item in items]
            if self.fixed_length:
                batch[name] = torch.stack(items).float()
                continue
            lengths = [len(item) for item in items]
            batch[name] = items[0].new_zeros(len(items), max(lengths), items[0].shape[-1], dtype=torch.float32)
            batch[mask_name] = torch.zeros(len(items), max(lengths), dtype=torch.long, device=items[0].device)
            for row, (item, length) in enumerate(zip(items, lengths)):
                batch[name][row, :length] = item
                batch[mask_name][row, :length] = 1
        return BatchFeature(batch)

    def encode(self, texts: Sequence[str], waveforms: Sequence[np.ndarray]) -> BatchFeature:
        """Unscaled, collated features of paired texts and `load_audio` waveforms.

        The pipeline, which loads audio in `preprocess`, calls this once per batch and then `scale`.
        """
        if len(texts) != len(waveforms):
            raise ValueError(f"got {len(texts)} texts but {len(waveforms)} audio items; they must pair up one to one")
        return self.collate(self.encode_text(texts), self.encode_speech(waveforms))

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


HyFusERProcessor.register_for_auto_class("AutoProcessor")
