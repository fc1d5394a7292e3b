"""Temperature scaling (Guo et al., 2017): probabilities that mean what they say, without changing a prediction.

One temperature T > 0, fitted by negative log-likelihood on the model-selection rows, turns a model's
log-probabilities z into softmax(z / T): T > 1 softens an over-confident model, T < 1 sharpens an under-confident one,
and since z / T keeps the order of every row the argmax never changes. For HyFusER z is its `logits`, the log of the
Eq. 9 average of its two heads, so the calibrated output is softmax(log((Y_T + Y_S) / 2) / T); every other model's
`logits` are its log-probabilities too. Per-head temperatures (`fit_head_temperatures`) are the alternative tried.

How well probabilities are calibrated (ECE, NLL, Brier) comes from the project's `evaluate` module
(`hyfuser.metrics.emotion_metrics`), whose card defines each number; this module only fits, applies and draws.
"""

from __future__ import annotations

import logging
import math
import numbers
from pathlib import Path

import numpy as np

from hyfuser.metrics import emotion_metrics

logger = logging.getLogger(__name__)

TEMPERATURE_BOUNDS: tuple[float, float] = (0.01, 100.0)
"""The temperatures `fit_temperature` searches: beyond them a model is so far off that a temperature is not the fix
(a fit that ends on a bound is logged as a warning)."""


def _log_probability_rows(values, name: str) -> np.ndarray:
    """`values` as a finite (rows, classes) float64 array with at least one row and two classes."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (rows, classes), got {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"{name} has no rows: a temperature needs at least one labelled row")
    if array.shape[1] < 2:
        raise ValueError(f"{name} has {array.shape[1]} class: a temperature needs at least two")
    finite = np.isfinite(array)
    if not finite.all():
        row, column = (int(index) for index in np.argwhere(~finite)[0])
        raise ValueError(f"{name} row {row}, class {column} is {array[row, column]}: every value must be finite")
    return array


def _class_ids(labels, rows: int, num_classes: int) -> np.ndarray:
    """`labels` as int64 class ids, one per row, each in 0..num_classes - 1."""
    ids = np.asarray(labels)
    if ids.shape != (rows,) or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"labels must be {rows} integer class ids, one per row, got {ids.dtype} of shape {ids.shape}")
    outside = (ids < 0) | (ids >= num_classes)
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise ValueError(f"labels row {row} is class {ids[row]}, outside 0..{num_classes - 1}")
    return ids.astype(np.int64)


def _softmax(scores: np.ndarray) -> np.ndarray:
    exponentials = np.exp(scores - scores.max(axis=1, keepdims=True))
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def fit_temperature(log_probabilities, labels) -> float:
    """The temperature T minimising the mean negative log-likelihood of softmax(log_probabilities / T) on `labels`.

    Pass the model-selection rows, never the validation rows: a temperature fitted on the rows it is then scored on
    makes its calibration look better than it is. `log_probabilities` are a model's `logits` (rows, classes) (for
    HyFusER the log of the Eq. 9 average); pre-softmax scores give the same T, as softmax ignores a per-row shift.

    With b = 1 / T the loss is convex in b and its derivative, mean(E_softmax(b z)[z] - z_label), never decreases,
    so the fit is a bisection on the sign of that derivative over log b in `TEMPERATURE_BOUNDS`, in float64, to
    1e-12 in log T: the same rows give the same temperature on every run, and no random number is drawn.
    """
    scores = _log_probability_rows(log_probabilities, "log_probabilities")
    ids = _class_ids(labels, *scores.shape)
    present = np.unique(ids)
    if len(present) < 2:
        raise ValueError(
            f"labels hold only class {present[0]}: a temperature fitted on one class only rewards confidence in it; "
            "fit it on rows of several classes"
        )
    true_scores = scores[np.arange(len(ids)), ids]

    def slope(log_inverse_temperature: float) -> float:
        probabilities = _softmax(scores * math.exp(log_inverse_temperature))
        return float(np.mean((probabilities * scores).sum(axis=1) - true_scores))

    lowest, highest = TEMPERATURE_BOUNDS
    low, high = -math.log(highest), -math.log(lowest)  # log b, b = 1 / T
    # The loss still falling at a bound, towards the outside, puts the minimum on (or past) that bound.
    bound = highest if slope(low) >= 0 else lowest if slope(high) <= 0 else None
    if bound is not None:
        logger.warning("The fitted temperature ends on its bound, %g of %s", bound, TEMPERATURE_BOUNDS)
        return bound
    while high - low > 1e-12:
        middle = (low + high) / 2
        if slope(middle) > 0:
            high = middle
        else:
            low = middle
    return math.exp(-(low + high) / 2)


def apply_temperature(log_probabilities, temperature: float) -> np.ndarray:
    """softmax(log_probabilities / temperature) in float64: rows that sum to 1, with each row's argmax unchanged."""
    if not isinstance(temperature, numbers.Real) or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number above 0, got {temperature!r}")
    return _softmax(_log_probability_rows(log_probabilities, "log_probabilities") / temperature)


def fit_head_temperatures(text_log_probs, speech_log_probs, labels) -> tuple[float, float]:
    """(text, speech): a temperature for each head of a two-head model, each fitted by `fit_temperature` on that
    head's own log-probabilities (or pre-softmax scores, HyFusER's `text_logits`/`speech_logits`) and `labels`, on
    the model-selection rows. `average_calibrated_heads` then averages the calibrated heads: the per-head alternative
    to one temperature on the fused output."""
    return fit_temperature(text_log_probs, labels), fit_temperature(speech_log_probs, labels)


def average_calibrated_heads(
    text_log_probs, speech_log_probs, text_temperature: float, speech_temperature: float, text_weight: float = 0.5
) -> np.ndarray:
    """text_weight x softmax(text / T_text) + (1 - text_weight) x softmax(speech / T_speech): Eq. 9 on the calibrated
    heads (0.5, HyFusER's plain average, unless the model weighs its heads). Unlike one temperature on the fused
    output, two temperatures change how much each head counts, row by row, so they can change the prediction."""
    if not 0.0 <= text_weight <= 1.0:
        raise ValueError(f"text_weight must be in [0, 1], got {text_weight!r}")
    text = apply_temperature(text_log_probs, text_temperature)
    speech = apply_temperature(speech_log_probs, speech_temperature)
    if text.shape != speech.shape:
        raise ValueError(f"text_log_probs {text.shape} and speech_log_probs {speech.shape} differ in shape")
    return text_weight * text + (1 - text_weight) * speech


def _calibration_metrics(probabilities, labels) -> dict:
    """The `evaluate` module's result for probability vectors: ECE, NLL, Brier and the reliability table."""
    return emotion_metrics().compute(predictions=np.asarray(probabilities, dtype=np.float64), references=labels)


def calibration_report(probabilities, labels) -> dict[str, float]:
    """`ece` (15 equal-width confidence bins, top-label: the sum over bins of |bin| / n x |accuracy - mean
    confidence|), `nll` (mean, natural log) and `brier` (mean over rows of the sum over classes of (p - one-hot)^2)
    of probability vectors (rows, classes) against class ids, from the project's `evaluate` module."""
    metrics = _calibration_metrics(probabilities, labels)
    return {name: metrics[name] for name in ("ece", "nll", "brier")}


def save_reliability_diagram(
    probabilities_before, probabilities_after, labels, path: Path, temperature: float | None = None
) -> None:
    """A reliability diagram of the same rows before and after calibration (accuracy against confidence in the
    evaluate module's 15 bins, ECE in the legend; below, how many rows each bin holds), rendered without a display
    (Agg) at 1050 x 1050 pixels. `temperature`, when given, is named in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = {"before calibration": _calibration_metrics(probabilities_before, labels)}
    after = "after calibration" if temperature is None else f"after calibration (T = {temperature:.3g})"
    stages[after] = _calibration_metrics(probabilities_after, labels)
    edges = np.asarray(stages[after]["reliability"]["bin_edges"])
    width = (edges[1] - edges[0]) / 2
    figure, (reliability_axes, count_axes) = plt.subplots(
        2, 1, figsize=(7, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    reliability_axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    for offset, (stage, metrics) in enumerate(stages.items()):
        table = metrics["reliability"]
        filled = [index for index, count in enumerate(table["count"]) if count]
        positions = edges[filled] + offset * width
        style = {"width": width, "align": "edge", "color": f"C{offset}", "alpha": 0.8}
        accuracies = [table["accuracy"][index] for index in filled]
        reliability_axes.bar(positions, accuracies, label=f"{stage}: ECE {metrics['ece']:.3f}", **style)
        count_axes.bar(positions, [table["count"][index] for index in filled], **style)
    reliability_axes.set_xlim(0, 1)
    reliability_axes.set_ylim(0, 1)
    reliability_axes.set_ylabel("Accuracy")
    reliability_axes.set_title(f"Reliability diagram ({len(edges) - 1} equal-width confidence bins)")
    reliability_axes.legend(loc="upper left")
    count_axes.set_xlabel("Confidence (top-label probability)")
    count_axes.set_ylabel("Rows")
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)
