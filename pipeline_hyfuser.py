"""`multimodal-emotion-recognition` pipeline for HyFusER, and the one function that writes a servable checkpoint.

    >>> from transformers import pipeline
    >>> classifier = pipeline(model="path/or/repo", trust_remote_code=True)
    >>> classifier({"text": "정말 너무 화가 나요", "audio": "utterance.wav"}, top_k=3)
    [{'label': 'angry', 'score': 0.71}, {'label': 'disgust', 'score': 0.12}, {'label': 'sad', 'score': 0.06}]
    >>> classifier({"audio": "utterance.wav"}, top_k=1)  # no transcript: a speech recognizer writes it
    {'transcript': '정말 너무 화가 나요', 'emotions': [{'label': 'angry', 'score': 0.69}]}

`preprocess` only validates the text and decodes/resamples the audio, so it can run in DataLoader workers; the
neural work (both frozen backbones and the fusion model) happens in `_forward`, once per batch.

A long recording gives a timeline, one record per segment (`HyFusERPipeline.timeline`):

    >>> classifier({"audio": "session.wav", "transcript": "session.srt"})  # or "segments": [(0.0, 2.4, "..."), ...]
    [{'start': 0.0, 'end': 2.4, 'speaker': '상담사', 'text': '...', 'label': 'neutral', 'score': 0.6, 'scores': {...}},
     {'start': 2.6, 'end': 2.8, 'speaker': '내담자', 'text': '네', 'label': None, 'score': None, 'scores': None,
      'reason': 'shorter than 0.25 s (MIN_SEGMENT_SECONDS)'}, ...]
    >>> classifier({"audio": "session.wav"}, timeline=True)  # no transcript: the recognizer's timestamped segments
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sized
from dataclasses import dataclass
from typing import Any

import torch
from transformers import Pipeline

try:
    from .timeline_hyfuser import iter_segment_audio, recognized_segments, segments_from, skip_reason, timeline_records
except ImportError:
    from timeline_hyfuser import iter_segment_audio, recognized_segments, segments_from, skip_reason, timeline_records

TASK = "multimodal-emotion-recognition"
TIMELINE_KEYS = ("transcript", "segments")
"""An input with either key (besides "audio") asks for a timeline of its segments."""
TIMELINE_REFUSED_OPTIONS = ("top_k", "return_modalities", "sampling_rate")
"""Options a timeline call refuses: every record carries all scores, and a file carries its own rate."""
ERROR_MODES = ("raise", "skip")
"""What a call over many inputs does with a bad one: raise naming it, or return its error record in its place."""


class HyFusERPipeline(Pipeline):
    """Emotion of (Korean text, speech) pairs: `{"text": str, "audio": ...}`, where the audio is what other audio
    pipelines take: a file path or the file's bytes (wav, flac, ogg, mp3), a numpy array or `torch.Tensor`, a
    `{"array", "sampling_rate"}` or `{"bytes", "path"}` dict, or a `datasets` `Audio` column's decoded item.

    One dict gives a list of emotions, most likely first; a list of dicts gives a list of those lists. An input
    without `text` is transcribed by the processor's speech recognizer (`asr_model`) and gives
    `{"transcript": ..., "emotions": [...]}`, so that the caller sees what the text side read.

    A directory written by `export_onnx.py` loads the same way and runs its backbones and fusion model on ONNX
    Runtime (`HyFusEROnnxModel`); decoding, resampling, tokenization, interpolation and scaling are this same code.

    Call options:
        top_k (`int`, *optional*): return only the `top_k` most likely emotions (default: all of them).
        calibrated (`bool`, defaults to `True`): `score` is the fused output calibrated by the config's
            `calibration_temperature` T, softmax(logits / T) (temperature scaling, fitted after training on the
            model-selection rows; T = 1 for a model saved without one): probabilities that sum to 1 and rank the
            emotions as the raw ones do. `False` gives the raw probabilities, softmax(logits).
        return_modalities (`bool`, defaults to `False`): add `text_score` (Step 1, text-centric head) and
            `speech_score` (Step 2, speech-centric head) to each emotion, as in the paper's Table 2. An ensemble
            baseline gives its members' scores; a one-head baseline refuses it. These stay raw whatever
            `calibrated` says: the temperature is fitted on the fused output only.
        sampling_rate (`int`, *optional*): rate of raw array audio that carries no rate of its own. Without it such
            audio is taken to be at the processor's rate (16 kHz), with a warning at every array.
        asr_model (`str`, *optional*): Hub id or path of the speech recognizer for inputs without text, instead of
            the processor's `asr_model` (a multilingual Whisper by default).
        errors (`str`, defaults to `"raise"`): what a bad input (empty text, NaN or inf audio, a zero-length or
            wrongly shaped array, a missing or unreadable file, audio the recognizer heard no words in) does. With
            `"raise"` the call fails with a `ValueError` that names the input's place in the caller's list, dataset
            or generator (`inputs[12]: ...`), its file if it has one, and what is wrong. With `"skip"` the other
            inputs are predicted as if it were not there, and its result is the record
            `{"index": 12, "error": "inputs[12]: ..."}` (`"index": None` for a single input): a dict with an
            `"error"` key, which no prediction has.
        timeline (`bool`, defaults to `False`): see below; needed only for a timeline without a transcript.

    Timeline of a long recording (`timeline`): the input is `{"audio": file, "transcript": "x.srt"}` (SRT or WebVTT),
    `{"audio": file, "segments": [(start, end, text[, speaker]), ...]}` (seconds), or `{"audio": file}` with
    `timeline=True`, whose segments are then the speech recognizer's timestamped ones (`asr_model`, read 30 s at a
    time). The result is one record per segment, in time order: `{"start", "end", "text", "label", "score",
    "scores"}` with `"speaker"` when the transcript names speakers. Segments shorter than
    `timeline_hyfuser.MIN_SEGMENT_SECONDS` (0.25 s), longer than `MAX_SEGMENT_SECONDS` (30 s) or without words get
    `"reason"` instead of a label (label, score and scores None). Audio that cannot be read (a segment past the
    recording's end, NaN samples) is a `ValueError` naming the segment, `errors` notwithstanding. The audio must be a
    file (a path, or a seekable file opened in binary mode): segments are read from it one at a time and go through
    the backbones `batch_size` at a time as a generator, so memory holds at most one batch of segments (each at most
    30 s), never the whole recording.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError(f"The {TASK} pipeline needs the HyFusER processor; pass `processor=` or a saved model dir.")
        if hasattr(self.model, "onnx_backbones"):  # an export_onnx.py directory: its graphs replace the backbones
            self.device = self.model.device  # ONNX Runtime's CPU provider, whichever device was asked for
            self.processor.use_backbones(*self.model.onnx_backbones)
        self.processor.check_compatible(self.model.config)
        self.processor.scaler_statistics()  # an unfitted scaler fails here, not at the first call
        self.processor.to(self.device)

    def _sanitize_parameters(
        self,
        top_k=None,
        return_modalities=None,
        sampling_rate=None,
        asr_model=None,
        errors=None,
        calibrated=None,
        **kwargs,
    ):
        if kwargs:
            raise TypeError(
                f"unknown {TASK} pipeline option(s) {', '.join(sorted(kwargs))}: it takes top_k, return_modalities, "
                "calibrated, sampling_rate, asr_model and errors"
            )
        preprocess_params, forward_params, postprocess_params = {}, {}, {}
        if asr_model is not None:
            forward_params["asr_model"] = asr_model
        if sampling_rate is not None:
            preprocess_params["sampling_rate"] = sampling_rate
        if errors is not None:
            if errors not in ERROR_MODES:
                raise ValueError(f"errors must be one of {ERROR_MODES}, got {errors!r}")
            preprocess_params["errors"] = forward_params["errors"] = errors
        if top_k is not None:
            if not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
            postprocess_params["top_k"] = top_k
        if return_modalities is not None:
            if return_modalities and not self.model.has_modality_heads:
                raise ValueError(
                    f"return_modalities needs a model with a text-side and a speech-side head; "
                    f"{type(self.model).__name__} makes one prediction only"
                )
            postprocess_params["return_modalities"] = return_modalities
        if calibrated is not None:
            if not isinstance(calibrated, bool):
                raise ValueError(f"calibrated must be True or False, got {calibrated!r}")
            postprocess_params["calibrated"] = calibrated
        return preprocess_params, forward_params, postprocess_params

    def __call__(self, inputs, *args, timeline: bool = False, **kwargs):
        if timeline or _asks_for_timeline(inputs):
            if isinstance(inputs, list):
                return [self.timeline(item, **kwargs) for item in inputs]
            return self.timeline(inputs, **kwargs)
        return super().__call__(inputs, *args, **kwargs)

    def timeline(self, inputs: Any, batch_size: int | None = None, **options) -> list[dict[str, Any]]:
        """One record per segment of a long recording; the input forms and records are in the class docstring."""
        if not isinstance(inputs, dict) or "audio" not in inputs:
            raise ValueError(
                f"a timeline input is a dict with an 'audio' file and optionally {' or '.join(TIMELINE_KEYS)}, got "
                f"{type(inputs).__name__}"
            )
        unknown = sorted(set(inputs) - {"audio", *TIMELINE_KEYS})
        if unknown or all(key in inputs for key in TIMELINE_KEYS):
            raise ValueError(
                f"a timeline input has 'audio' and at most one of {', '.join(TIMELINE_KEYS)}; got {sorted(inputs)}"
                + (" ('text' is one utterance's: give segments instead)" if "text" in inputs else "")
            )
        refused = sorted(set(options) & set(TIMELINE_REFUSED_OPTIONS))
        if refused:
            raise ValueError(f"a timeline call takes no {', '.join(refused)}: each record has every emotion's score")
        audio, rate = inputs["audio"], self.processor.sampling_rate
        if not isinstance(audio, (str, os.PathLike)) and not callable(getattr(audio, "seek", None)):
            raise ValueError(
                f"a timeline reads its audio from a file, a segment at a time: give a path or a seekable file opened "
                f"in binary mode, got {type(audio).__name__}"
            )
        source = inputs.get("transcript", inputs.get("segments"))
        if source is not None:
            segments = segments_from(source)
        else:
            asr_model = options.get("asr_model")
            segments = recognized_segments(
                audio, lambda waveform: self.processor.recognize_chunks(waveform, asr_model), rate
            )
        classified = [segment for segment in segments if skip_reason(segment) is None]
        utterances = (
            {"text": segment.text, "audio": {"array": waveform, "sampling_rate": rate}}
            for segment, waveform in zip(classified, iter_segment_audio(audio, classified, rate))
        )
        return timeline_records(segments, list(super().__call__(utterances, batch_size=batch_size, **options)))

    def get_iterator(self, inputs, *args, **kwargs):
        # Every call over a list, a dataset or a generator (batched or not) comes through here: number its inputs,
        # so that `preprocess` and `_forward` name a bad one by its place in the caller's collection.
        if isinstance(inputs, Sized):
            numbered = _NumberedInputs(inputs)
        else:
            numbered = (_Numbered(index, item) for index, item in enumerate(inputs))
        return super().get_iterator(numbered, *args, **kwargs)

    def preprocess(self, inputs: Any, sampling_rate: int | None = None, errors: str = "raise") -> dict[str, list]:
        index, inputs = (inputs.index, inputs.inputs) if isinstance(inputs, _Numbered) else (None, inputs)
        try:
            text, waveform = self._read(inputs, sampling_rate)
        except ValueError as error:
            text, waveform, failure = None, None, _failure(index, error, errors)
        else:
            failure = None
        # Lists, not tensors: the pipeline's collator then batches them as lists instead of zero-padding the audio,
        # which would change HuBERT-base's output (its group norm sees the padding).
        return {"text": [text], "waveform": [waveform], "index": [index], "error": [failure]}

    def _read(self, inputs: Any, sampling_rate: int | None) -> tuple[str | None, Any]:
        """The checked text (None: to be transcribed) and the decoded waveform of one input."""
        if not isinstance(inputs, dict) or "audio" not in inputs:
            raise ValueError(
                f"Each input must be a dict with an 'audio' key and, unless it is to be transcribed, a 'text' key; "
                f"got {type(inputs).__name__}"
            )
        text = inputs.get("text")
        if text is not None:
            try:
                text = self.processor.check_text(text)
            except ValueError as error:
                path = _audio_path(inputs["audio"])
                raise ValueError(f"{error} (audio {path!r})" if path else str(error)) from error
        return text, self.processor.load_audio(inputs["audio"], sampling_rate=sampling_rate)

    def _forward(
        self, model_inputs: dict[str, list], asr_model: str | None = None, errors: str = "raise"
    ) -> dict[str, Any]:
        # Unbatched calls give one list per key; batched calls give a list of those lists.
        texts, waveforms, indices, failures = (
            _flatten(model_inputs[key]) for key in ("text", "waveform", "index", "error")
        )
        transcripts = [None] * len(texts)
        untranscribed = [item for item, text in enumerate(texts) if text is None and failures[item] is None]
        if untranscribed:
            heard = self.processor.transcribe([waveforms[item] for item in untranscribed], asr_model=asr_model)
            for item, transcript in zip(untranscribed, heard):
                if transcript:
                    texts[item] = transcripts[item] = transcript
                else:
                    recognizer = asr_model or self.processor.asr_model
                    silence = ValueError(f"the speech recognizer {recognizer!r} heard no words; give the text")
                    failures[item] = _failure(indices[item], silence, errors)
        # Bad inputs get NaN rows that postprocess never reads; the model sees the good ones only.
        predicted = [item for item, failure in enumerate(failures) if failure is None]
        names = ("logits", "text_logits", "speech_logits") if self.model.has_modality_heads else ("logits",)
        outputs = {name: torch.full((len(texts), self.model.config.num_labels), torch.nan) for name in names}
        if predicted:
            inputs = dict(self.processor.encode([texts[i] for i in predicted], [waveforms[i] for i in predicted]))
            inputs["text_features"], inputs["speech_features"] = (
                features.to(self.device, self.model.dtype)
                for features in self.processor.scale(inputs["text_features"], inputs["speech_features"])
            )
            output = self.model(**{name: values.to(self.device) for name, values in inputs.items()})
            for name in names:
                outputs[name][predicted] = getattr(output, name).to("cpu", torch.float32)
        return {**outputs, "transcript": transcripts, "error": failures}

    def postprocess(
        self,
        model_outputs: dict[str, torch.Tensor],
        top_k: int | None = None,
        return_modalities: bool = False,
        calibrated: bool = True,
    ):
        failure = _one_item(model_outputs.pop("error"))
        if failure is not None:
            return failure
        transcript = _one_item(model_outputs.pop("transcript"))
        if calibrated:  # the fused output only; the heads stay raw
            model_outputs["logits"] = model_outputs["logits"].double() / self.model.config.calibration_temperature
        probabilities = {name: model_outputs[name][0].double().softmax(-1).tolist() for name in model_outputs}
        id2label = self.model.config.id2label
        emotions = []
        for index, score in enumerate(probabilities["logits"]):
            emotion = {"label": id2label[index], "score": score}
            if return_modalities:
                emotion["text_score"] = probabilities["text_logits"][index]
                emotion["speech_score"] = probabilities["speech_logits"][index]
            emotions.append(emotion)
        emotions.sort(key=lambda emotion: emotion["score"], reverse=True)
        emotions = emotions[:top_k] if top_k else emotions
        return emotions if transcript is None else {"transcript": transcript, "emotions": emotions}


@dataclass(frozen=True)
class _Numbered:
    """One input of a call over many, with its place among them."""

    index: int
    inputs: Any


class _NumberedInputs:
    """A list or dataset of inputs whose items come `_Numbered` (indexable by DataLoader workers like the original)."""

    def __init__(self, inputs: Sized):
        self.inputs = inputs

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> _Numbered:
        return _Numbered(index, self.inputs[index])


def _asks_for_timeline(inputs: Any) -> bool:
    """Whether a call's input (or any of a list's) names a transcript or segments."""
    items = inputs if isinstance(inputs, list) else [inputs]
    return any(isinstance(item, dict) and any(key in item for key in TIMELINE_KEYS) for item in items)


def _failure(index: int | None, error: ValueError, errors: str) -> dict[str, Any]:
    """The error record of a bad input; with `errors="raise"` the error, naming the input's place in the call."""
    message = str(error) if index is None else f"inputs[{index}]: {error}"
    if errors == "raise":
        if index is None:
            raise error
        raise ValueError(message) from error
    return {"index": index, "error": message}


def _audio_path(audio: Any) -> str | None:
    """The file an input's audio comes from, if it names one."""
    if isinstance(audio, (str, os.PathLike)):
        return os.fspath(audio)
    return audio.get("path") if isinstance(audio, Mapping) else None


def _flatten(values: list) -> list:
    if values and isinstance(values[0], list):
        return [item for group in values for item in group]
    return list(values)


def _one_item(values: Any) -> Any:
    """One input's value of a per-input `_forward` output: a one-item list unbatched, the item itself batched."""
    return values[0] if isinstance(values, list) else values
