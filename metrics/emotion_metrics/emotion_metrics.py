"""HyFusER's classification metrics as an `evaluate` module: load it by path, offline, or push the folder to the Hub.

    >>> import evaluate
    >>> metric = evaluate.load("metrics/emotion_metrics")
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 2], label_names=["angry", "happy", "sad"])
"""

import datasets
import evaluate
import numpy as np

CALIBRATION_BINS = 15
"""Equal-width confidence bins of the expected calibration error and the reliability table, unless `n_bins` says."""

PROBABILITY_SUM_TOLERANCE = 1e-3
"""How far from 1 a row of probabilities may sum (half-precision softmax rounding); logits and log-probabilities are
refused."""

_DESCRIPTION = """
The metrics of the HyFusER paper's Table 5 (accuracy, support-weighted precision, recall and F1) plus macro-F1, the
per-class report and the confusion matrix, all from one confusion matrix. Given per-row probability vectors instead
of class ids, also the calibration of those probabilities: expected calibration error, negative log-likelihood, Brier
score and the reliability table.

A class with no predictions has precision 0 and one with no references recall 0 (scikit-learn's `zero_division=0`).
Macro-F1 averages the classes that occur among the references or the predictions, as scikit-learn does; the
per-class report and the confusion matrix cover every class in `label_names`.

With probability vectors p_i (row i, n rows), the predicted class is argmax_k p_ik (the first one on ties) and its
confidence c_i = max_k p_ik. Bin b of `n_bins` equal-width bins holds the rows with b / n_bins < c_i <= (b + 1) /
n_bins. Expected calibration error (top-label): ECE = sum over bins of |bin| / n * |accuracy(bin) - mean
confidence(bin)|. Negative log-likelihood: NLL = -(1 / n) sum_i ln p_i,y_i (natural log; infinite when a true class
has probability 0). Brier score: (1 / n) sum_i sum_k (p_ik - [k = y_i])^2, between 0 and 2.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`, or `list` of `list` of `float`): predicted class ids, or one probability vector
        per row (non-negative, summing to 1 within 1e-3; the predicted class is its argmax).
    references (`list` of `int`): true class ids.
    label_names (`list` of `str`, *optional*): the name of each class id, in order. Defaults to the ids as strings,
        for the classes 0 to the largest id seen, or to the width of the probability vectors.
    n_bins (`int`, *optional*, defaults to 15): equal-width confidence bins of `ece` and `reliability`; used only with
        probability vectors.
Returns:
    accuracy, precision_weighted, recall_weighted, f1_weighted, f1_macro (`float`);
    per_class (`dict`): per class name, its `precision`, `recall`, `f1-score` and `support`;
    confusion_matrix (`dict`): `labels` (the class names) and `matrix` (rows: reference, columns: prediction).
    With probability vectors, also:
    ece, nll, brier (`float`): expected calibration error, negative log-likelihood (natural log), Brier score;
    reliability (`dict`): `bin_edges` (n_bins + 1), and per bin its `count`, `accuracy` and mean `confidence`
        (`None` for an empty bin).
"""


class EmotionMetrics(evaluate.Metric):
    def _info(self):
        # `evaluate` takes the input names from the first option and picks the first option an input encodes to, so
        # the options differ only in what `predictions` holds: class ids, or probability vectors.
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Value("float64")),
                        "references": datasets.Value("int64"),
                    }
                ),
            ],
        )

    def _compute(self, predictions, references, label_names=None, n_bins=CALIBRATION_BINS):
        references = np.asarray(references, dtype=np.int64)
        if len(references) == 0:
            raise ValueError("emotion_metrics needs at least one prediction")
        probabilities = _probability_vectors(predictions)
        if probabilities is None:
            predictions = np.asarray(predictions, dtype=np.int64)
            num_classes = int(max(predictions.max(), references.max())) + 1
        else:
            predictions, num_classes = probabilities.argmax(axis=1), probabilities.shape[1]
        if label_names is None:
            label_names = [str(index) for index in range(num_classes)]
        elif probabilities is not None and len(label_names) != num_classes:
            raise ValueError(
                f"the probability vectors have {num_classes} entries but label_names names {len(label_names)} classes"
            )
        num_classes = len(label_names)
        for name, ids in (("predictions", predictions), ("references", references)):
            if ids.min() < 0 or ids.max() >= num_classes:
                raise ValueError(f"{name} holds class ids outside 0..{num_classes - 1} (the label_names given)")
        matrix = np.bincount(references * num_classes + predictions, minlength=num_classes**2)
        matrix = matrix.reshape(num_classes, num_classes)

        true_positives = np.diag(matrix).astype(np.float64)
        support, predicted = matrix.sum(axis=1), matrix.sum(axis=0)
        precision = np.divide(true_positives, predicted, out=np.zeros(num_classes), where=predicted > 0)
        recall = np.divide(true_positives, support, out=np.zeros(num_classes), where=support > 0)
        # F1 = 2 TP / (2 TP + FP + FN), and 2 TP + FP + FN is the support plus the predicted count.
        occurring = support + predicted > 0
        f1 = np.divide(2 * true_positives, support + predicted, out=np.zeros(num_classes), where=occurring)
        metrics = {
            "accuracy": float(true_positives.sum() / len(references)),
            "precision_weighted": float(np.average(precision, weights=support)),
            "recall_weighted": float(np.average(recall, weights=support)),
            "f1_weighted": float(np.average(f1, weights=support)),
            "f1_macro": float(f1[occurring].mean()),
            "per_class": {
                name: {
                    "precision": float(precision[index]),
                    "recall": float(recall[index]),
                    "f1-score": float(f1[index]),
                    "support": int(support[index]),
                }
                for index, name in enumerate(label_names)
            },
            "confusion_matrix": {"labels": list(label_names), "matrix": matrix.tolist()},
        }
        if probabilities is not None:
            metrics.update(_calibration(probabilities, references, n_bins))
        return metrics


def _probability_vectors(predictions) -> np.ndarray | None:
    """`predictions` as a (rows, classes) float64 array when they are probability vectors, None when class ids."""
    if not isinstance(predictions[0], (list, np.ndarray)):
        return None
    widths = sorted({len(row) for row in predictions})
    if len(widths) > 1:
        raise ValueError(f"the probability vectors in predictions differ in length: {widths}")
    probabilities = np.asarray(predictions, dtype=np.float64)
    if probabilities.shape[1] < 2:
        raise ValueError(f"the probability vectors in predictions need at least two classes, got {widths[0]}")
    sums = probabilities.sum(axis=1)
    bad = ~np.isfinite(sums) | (probabilities.min(axis=1) < 0) | (np.abs(sums - 1) > PROBABILITY_SUM_TOLERANCE)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"predictions row {row} is not a probability vector (finite, non-negative, summing to 1 within "
            f"{PROBABILITY_SUM_TOLERANCE:g}): {probabilities[row].tolist()}; pass softmax(logits), not logits"
        )
    return probabilities


def _calibration(probabilities: np.ndarray, references: np.ndarray, n_bins: int) -> dict:
    """ECE over `n_bins` equal-width confidence bins, NLL, Brier score and the reliability table (the card's
    definitions)."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    rows = len(references)
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == references).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # searchsorted(side="left") - 1 is the bin b with edges[b] < confidence <= edges[b + 1].
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    correct_sums = np.bincount(bins, weights=correct, minlength=n_bins)
    confidence_sums = np.bincount(bins, weights=confidence, minlength=n_bins)
    one_hot = np.eye(probabilities.shape[1])[references]
    with np.errstate(divide="ignore"):  # a true class of probability 0 has an infinite negative log-likelihood
        true_class_log_probabilities = np.log(probabilities[np.arange(rows), references])
    return {
        # |bin| / n x |accuracy - mean confidence| = |correct rows - summed confidence| / n, bin by bin.
        "ece": float(np.abs(correct_sums - confidence_sums).sum() / rows),
        "nll": float(-true_class_log_probabilities.mean()),
        "brier": float(np.square(probabilities - one_hot).sum(axis=1).mean()),
        "reliability": {
            "bin_edges": edges.tolist(),
            "count": counts.tolist(),
            "accuracy": [float(s / c) if c else None for s, c in zip(correct_sums, counts)],
            "confidence": [float(s / c) if c else None for s, c in zip(confidence_sums, counts)],
        },
    }
