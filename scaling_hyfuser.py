"""The joint standard scaler of HyFusER's features (paper Eqs. 4-6): streaming statistics, fitting, scaling.

`ScalingMixin` is that part of `HyFusERProcessor`; the fitted statistics are the processor's settings
`scaler_mean`, `scaler_std`, `scaler_count`, `speech_scaler_mean` and `speech_scaler_std`, saved in
`processor_config.json`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

STD_FLOOR = 1e-6
"""Dimensions whose standard deviation is below this are only centred (divided by 1), like sklearn's StandardScaler."""


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

    def update(self, features: Any) -> FeatureStatistics:
        """Add every position of `features`: an array or tensor (..., hidden) of any float dtype, or a batch of items
        of different lengths (a list of those, or the object array `datasets` makes of them), item by item."""
        if isinstance(features, (list, tuple)) or getattr(features, "dtype", None) == object:
            for item in features:
                self.update(item)
            return self
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


class ScalingMixin:
    """`HyFusERProcessor`'s joint scaler: fitting it, setting it, and scaling features with it."""

    scaler_mean: list[float] | None
    scaler_std: list[float] | None
    scaler_count: int
    speech_scaler_mean: list[float] | None
    speech_scaler_std: list[float] | None

    def _validate_scaler(self) -> None:
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

    @property
    def is_scaler_fitted(self) -> bool:
        return self.scaler_mean is not None

    @property
    def scales_per_modality(self) -> bool:
        """Whether each modality has its own scaler (different widths) instead of the paper's joint one."""
        return self.speech_scaler_mean is not None

    def fit_scaler(self, batches: Iterable[tuple[Any, Any]]) -> ScalingMixin:
        """Fit the scaler on the unscaled (text_features, speech_features) of the *training* data, in one streaming
        pass (`FeatureStatistics`): arrays or tensors, or batches of items of different lengths.

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
    ) -> ScalingMixin:
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


def _statistics(mean: list[float], std: list[float]) -> tuple[np.ndarray, np.ndarray]:
    std = np.asarray(std, dtype=np.float32)
    return np.asarray(mean, dtype=np.float32), np.where(std < STD_FLOOR, np.float32(1), std)


def _standardize(features: Any, mean: np.ndarray, std: np.ndarray) -> Any:
    if isinstance(features, torch.Tensor):
        features = features.float()
        return (features - torch.from_numpy(mean).to(features.device)) / torch.from_numpy(std).to(features.device)
    return (np.asarray(features, dtype=np.float32) - mean) / std
