"""Audio in every form HyFusER's processor and pipeline take -> one float32 mono waveform at the speech backbone's
rate: decoding (libsndfile), downmixing and polyphase resampling. Errors name the input they are about."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any, Union

import numpy as np
import soundfile
import torch
from scipy.signal import resample_poly
from transformers.utils import logging

logger = logging.get_logger(__name__)

AudioInput = Union[str, os.PathLike, bytes, np.ndarray, torch.Tensor, Mapping]
"""One utterance: a wav/flac/ogg/mp3 path or its bytes, a 1-D or 2-D array or tensor, a `datasets`-style
{"array", "sampling_rate"} or {"bytes", "path"} dict, or the audio decoder a `datasets` `Audio` column yields."""

MAX_CHANNELS = 8
"""A 2-D array whose shorter side exceeds this is refused as ambiguous rather than downmixed (7.1 audio has 8)."""


def load_audio(audio: AudioInput, target_rate: int, sampling_rate: int | None = None) -> np.ndarray:
    """One utterance as a float32 mono waveform at `target_rate`.

    - a path (wav, flac, ogg, mp3: anything libsndfile reads), or the bytes of such a file: channels are averaged;
    - a 1-D array or tensor, or a 2-D one with up to `MAX_CHANNELS` channels on either axis (the shorter axis is
      taken as channels, so (channels, samples) and soundfile's (samples, channels) both work): it is at
      `sampling_rate`, or at `target_rate` if that is None (with a warning, at every such array). Integer PCM is
      scaled to [-1, 1). A batch is a list, never a 2-D array;
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
                f"No sampling_rate given for a raw audio array: it is taken to be at {target_rate} Hz, the "
                "speech backbone's rate, and is not resampled. If it was recorded at another rate, say which: "
                'pass {"array": waveform, "sampling_rate": 48000} as the audio, or sampling_rate=48000 to the '
                "pipeline or processor call."
            )
        waveform, rate = _to_mono(audio, what), target_rate if sampling_rate is None else sampling_rate
    else:
        raise ValueError(
            f"unsupported audio type {type(audio).__name__}: expected a file path or its bytes, a 1-D or 2-D "
            "array or tensor, an {'array', 'sampling_rate'} or {'bytes', 'path'} dict, or a datasets audio decoder"
        )
    return resample(waveform, _check_sampling_rate(rate, what), target_rate, what)


def resample(waveform: np.ndarray, rate: int, target_rate: int, what: str) -> np.ndarray:
    """A float32 mono waveform at `rate`, checked (not empty, finite; errors name `what`) and resampled to
    `target_rate` by `scipy.signal.resample_poly`: the last step of `load_audio`, which the timeline's segment reader
    shares so that a segment gives the waveform of its utterance cut into a file of its own."""
    if waveform.size == 0:
        raise ValueError(f"{what} has zero length")
    if not np.isfinite(waveform).all():
        raise ValueError(f"{what} contains NaN or inf samples")
    if rate == target_rate:
        return waveform
    # resample_poly reduces the ratio by the gcd itself: 44,100 -> 16,000 Hz runs as up 160, down 441.
    return resample_poly(waveform, target_rate, rate).astype(np.float32)


def downmix(frames: np.ndarray) -> np.ndarray:
    """soundfile's (samples, channels) frames as one channel: their mean."""
    return frames.mean(axis=1)


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
    return downmix(waveform), rate


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
