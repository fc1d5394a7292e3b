"""What HyFusER's evaluation reports: the paper's Table 5 metrics on the fused prediction, each direction's head
alone, the per-emotion report with its confusion matrix, and that matrix drawn like the paper's Fig. 7.

Shared by the training script and anything else that evaluates HyFusER-style (logits, text_logits, speech_logits)
predictions, or the fused logits alone of a one-head baseline. Also picks the weighted ensemble's weight.

The numbers come from the repository's `evaluate` module `metrics/emotion_metrics`, loaded by path (never from
the Hub), so that anyone can load the same metric with `evaluate.load` or push it to the Hub. `pip install .` puts a
copy inside this package (pyproject.toml maps `hyfuser.emotion_metrics` to that folder), which is used where present.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import evaluate
import numpy as np
from transformers import EvalPrediction


def _emotion_metrics_path() -> Path:
    """The installed copy next to this module, or else the clone's folder (a clone or an editable install)."""
    package = Path(__file__).resolve().parent
    installed = package / "emotion_metrics"
    return installed if installed.is_dir() else package.parent / "metrics" / "emotion_metrics"


EMOTION_METRICS_PATH = _emotion_metrics_path()
"""The `evaluate` module behind every number here: `evaluate.load(str(EMOTION_METRICS_PATH))`."""

METRIC_TITLES = {
    "accuracy": "Accuracy (fused, Eq. 9)",
    "precision_weighted": "Precision (weighted)",
    "recall_weighted": "Recall (weighted)",
    "f1_weighted": "F1 (weighted)",
    "f1_macro": "F1 (macro)",
    "text_head_accuracy": "Accuracy, text-centric head alone (Step 1)",
    "speech_head_accuracy": "Accuracy, speech-centric head alone (Step 2)",
}
"""What `compute_metrics` reports, as the model card titles it (Table 5's four metrics first)."""


ENSEMBLE_WEIGHT_GRID: tuple[float, ...] = tuple(step / 20 for step in range(21))
"""Text weights `choose_ensemble_weight` tries by default: 0, 0.05, ..., 1."""


def fused_logits(predictions: np.ndarray | tuple[np.ndarray, ...]) -> np.ndarray:
    """The fused prediction's logits among the `Trainer`'s predictions: (logits, text_logits, speech_logits) for a
    two-head model, the logits array alone for a one-head one (the `Trainer` unwraps a single output)."""
    return predictions[0] if isinstance(predictions, tuple) else predictions


@cache
def emotion_metrics() -> evaluate.EvaluationModule:
    """The repository's `evaluate` metric, loaded by path once per process and kept in memory (no cache files)."""
    return evaluate.load(str(EMOTION_METRICS_PATH), keep_in_memory=True)


def accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    return float(np.mean(np.asarray(labels) == np.asarray(predictions)))


def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """The paper's metrics on the fused prediction (Table 5: accuracy, weighted P/R/F1), plus macro-F1 and, for a
    model with two heads, the accuracy of each direction's head alone, which shows what fusion adds.

    Predictions are (logits, text_logits, speech_logits), or a one-head model's logits alone: `logits` is the log
    of the averaged probabilities (Eq. 9).
    """
    labels = prediction.label_ids
    metrics = prediction_metrics(labels, np.argmax(fused_logits(prediction.predictions), axis=-1))
    if isinstance(prediction.predictions, tuple):
        _, text_logits, speech_logits = prediction.predictions
        metrics["text_head_accuracy"] = accuracy(labels, np.argmax(text_logits, axis=-1))
        metrics["speech_head_accuracy"] = accuracy(labels, np.argmax(speech_logits, axis=-1))
    return metrics


def prediction_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """Table 5's metrics (accuracy, weighted precision/recall/F1) and macro-F1 of one predicted class per item: what
    any model, trained or composed, is compared on."""
    metrics = emotion_metrics().compute(predictions=predictions, references=labels)
    return {name: value for name, value in metrics.items() if isinstance(value, float)}  # not the per-class report


def choose_ensemble_weight(
    text_probabilities: np.ndarray,
    speech_probabilities: np.ndarray,
    labels: np.ndarray,
    grid: tuple[float, ...] = ENSEMBLE_WEIGHT_GRID,
) -> float:
    """The text weight w in `grid` whose ensemble `w * text + (1 - w) * speech` is most accurate on `labels`.

    The rows must never be validation rows, or the weight is fitted to what it is then scored on. They are best
    training rows that the members did not train on (an inner split held out of the training split): on rows a
    member has fitted, the weight favours whichever member overfits more. Ties go to the weight nearest 0.5, the
    plain average, then to the smaller weight.
    """
    text_probabilities, speech_probabilities = np.asarray(text_probabilities), np.asarray(speech_probabilities)
    labels = np.asarray(labels)
    if text_probabilities.shape != speech_probabilities.shape or text_probabilities.ndim != 2:
        raise ValueError(
            "text_probabilities and speech_probabilities must both have shape (rows, num_labels), got "
            f"{text_probabilities.shape} and {speech_probabilities.shape}"
        )
    if labels.shape != text_probabilities.shape[:1]:
        raise ValueError(f"labels must have shape ({text_probabilities.shape[0]},), got {labels.shape}")
    if not grid or any(not 0.0 <= weight <= 1.0 for weight in grid):
        raise ValueError(f"grid must hold weights in [0, 1], got {grid!r}")
    accuracies = {}
    for weight in grid:
        ensemble = weight * text_probabilities + (1 - weight) * speech_probabilities
        accuracies[weight] = accuracy(labels, np.argmax(ensemble, axis=-1))
    best = [weight for weight, accuracy in accuracies.items() if accuracy == max(accuracies.values())]
    return min(best, key=lambda weight: (abs(weight - 0.5), weight))


def per_class_report(labels: np.ndarray, predictions: np.ndarray, names: list[str]) -> dict:
    """Per-emotion precision/recall/F1/support and the confusion matrix (rows: truth, columns: prediction)."""
    metrics = emotion_metrics().compute(predictions=predictions, references=labels, label_names=list(names))
    return {"per_class": metrics["per_class"], "confusion_matrix": metrics["confusion_matrix"]}


def save_confusion_matrix(matrix: list[list[int]], names: list[str], path: Path) -> None:
    """A heatmap like the paper's Fig. 7, rendered without a display (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix)
    figure, axes = plt.subplots(figsize=(8, 7))
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes)
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes.set_yticks(range(len(names)), names)
    for (row, column), count in np.ndenumerate(matrix):  # dark text on light cells, light on dark
        colour = "white" if count > matrix.max() / 2 else "black"
        axes.text(column, row, str(count), ha="center", va="center", color=colour)
    axes.set_title("Confusion Matrix Heatmap with Emotions")
    axes.set_xlabel("Predicted emotion")
    axes.set_ylabel("True emotion")
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)
