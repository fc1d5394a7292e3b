"""Real audio files for tests: short voiced tones written with soundfile, at any rate and channel count."""

from pathlib import Path

import numpy as np
import soundfile


def voiced_tone(sampling_rate: int, seconds: float = 1.0, frequency: float = 220.0, seed: int = 0) -> np.ndarray:
    """A harmonic tone with a little noise: enough structure that HuBERT frames differ along time."""
    rng = np.random.default_rng(seed)
    time = np.arange(int(sampling_rate * seconds)) / sampling_rate
    wave = sum(np.sin(2 * np.pi * frequency * harmonic * time) / harmonic for harmonic in (1, 2, 3))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * time)
    return (0.3 * envelope * wave + 0.01 * rng.standard_normal(time.size)).astype(np.float32)


def write_tone(
    path: str | Path,
    sampling_rate: int = 16_000,
    seconds: float = 1.0,
    frequency: float = 220.0,
    channels: int = 1,
    seed: int = 0,
) -> Path:
    """Write `voiced_tone` to `path` (format from the suffix: .wav, .flac, .ogg); stereo copies get a phase shift."""
    mono = voiced_tone(sampling_rate, seconds, frequency, seed)
    samples = mono if channels == 1 else np.stack([np.roll(mono, shift) for shift in range(channels)], axis=1)
    path = Path(path)
    soundfile.write(path, samples, sampling_rate)
    return path
