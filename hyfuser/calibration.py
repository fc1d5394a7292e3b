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
from hyfuser.splits import selection_split

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


def calibration_record(selection_log_probs, selection_labels, validation_log_probs, validation_labels) -> dict:
    """The temperature fitted on the model-selection rows and the validation rows' `calibration_report` before and
    after it: what a run reports of its calibration."""
    temperature = fit_temperature(selection_log_probs, selection_labels)
    return {
        "temperature": temperature,
        "before": calibration_report(apply_temperature(validation_log_probs, 1.0), validation_labels),
        "after": calibration_report(apply_temperature(validation_log_probs, temperature), validation_labels),
    }


def head_calibration_record(
    selection_heads: tuple, selection_labels, validation_heads: tuple, validation_labels, text_weight: float = 0.5
) -> dict:
    """Per-head temperatures, the alternative to one on the fused output: each (text, speech) head's temperature
    fitted on the selection rows, and the validation rows' `calibration_report` and accuracy of Eq. 9 on the
    calibrated heads (which, unlike one temperature, can change predictions)."""
    text_temperature, speech_temperature = fit_head_temperatures(*selection_heads, selection_labels)
    probabilities = average_calibrated_heads(*validation_heads, text_temperature, speech_temperature, text_weight)
    labels = np.asarray(validation_labels)
    return {
        "text_temperature": text_temperature,
        "speech_temperature": speech_temperature,
        "after": calibration_report(probabilities, labels),
        "accuracy": float(np.mean(probabilities.argmax(axis=1) == labels)),
    }


def calibration_split(train_rows, split_by: str, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(rows to train on, calibration rows) of a training split: `hyfuser.splits.selection_split` carves `fraction`
    of it (whole sessions with `split_by="session"`), as reproduce.py carves its model-selection rows. All rows and
    none with `fraction` 0, or, with a warning, when the split is too small to hold out rows of two classes (a
    temperature fitted on one class only rewards confidence in it)."""
    rows = list(range(len(train_rows)))
    if not fraction:
        return rows, []
    try:
        fit, calibration = selection_split(train_rows, rows, split_by, fraction, seed)
    except ValueError as error:
        logger.warning("No calibration rows (%s): training on the whole split, calibration_temperature stays 1", error)
        return rows, []
    classes = {train_rows[index]["label"] for index in calibration}
    if len(classes) < 2:
        logger.warning(
            "The %d calibration rows (--calibration_fraction %g of %d) hold one class only: training on the whole "
            "split, calibration_temperature stays 1; raise --calibration_fraction to calibrate",
            len(calibration), fraction, len(rows),
        )  # fmt: skip
        return rows, []
    return fit, calibration


RELIABILITY_DIAGRAM = "reliability_diagram.png"
"""The reliability diagram `train.py` writes beside `confusion_matrix.png`."""


def calibrate_config(
    config, selection_log_probs, selection_labels, validation_log_probs, validation_labels, output_dir: Path
) -> dict:
    """After training: fit the temperature on the model-selection rows, store it in `config.calibration_temperature`
    (saved with the model; the pipeline applies it), draw the validation rows' reliability diagram into
    `output_dir`, and return what the evaluation reports: the temperature, how many rows it was fitted on, and
    ECE/NLL/Brier on the validation rows before and after (`calibration_record`)."""
    record = calibration_record(selection_log_probs, selection_labels, validation_log_probs, validation_labels)
    config.calibration_temperature = record["temperature"]
    save_reliability_diagram(
        apply_temperature(validation_log_probs, 1.0),
        apply_temperature(validation_log_probs, record["temperature"]),
        validation_labels,
        Path(output_dir) / RELIABILITY_DIAGRAM,
        temperature=record["temperature"],
    )
    logger.info(
        "Calibration temperature %.4g fitted on %d model-selection rows; validation ECE %.4f -> %.4f",
        record["temperature"], len(selection_labels), record["before"]["ece"], record["after"]["ece"],
    )  # fmt: skip
    return {"calibration_rows": len(selection_labels), **record}


def calibration_metrics(record: dict) -> dict[str, float]:
    """A `calibrate_config` record as flat evaluation metrics (`eval_results.json`): the temperature, its rows and
    each of ECE/NLL/Brier before and after."""
    metrics = {"calibration_temperature": record["temperature"], "calibration_rows": record["calibration_rows"]}
    for stage in ("before", "after"):
        metrics.update({f"{name}_{stage}_calibration": value for name, value in record[stage].items()})
    return metrics
