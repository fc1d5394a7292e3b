"""What HyFusER's evaluation reports: the paper's Table 5 metrics on the fused prediction, each direction's head
alone, the per-emotion report with its confusion matrix, and that matrix drawn like the paper's Fig. 7.

Shared by the training script and anything else that evaluates HyFusER-style (logits, text_logits, speech_logits)
predictions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)
from transformers import EvalPrediction

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


def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """The paper's metrics on the fused prediction (Table 5: accuracy, weighted P/R/F1), plus macro-F1 and the
    accuracy of each direction's head alone, which shows what fusion adds.

    Predictions are (logits, text_logits, speech_logits): `logits` is the log of the averaged probabilities (Eq. 9).
    """
    fused, text_head, speech_head = (np.argmax(logits, axis=-1) for logits in prediction.predictions)
    labels = prediction.label_ids
    return {
        **prediction_metrics(labels, fused),
        "text_head_accuracy": float(accuracy_score(labels, text_head)),
        "speech_head_accuracy": float(accuracy_score(labels, speech_head)),
    }


def prediction_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """Table 5's metrics (accuracy, weighted precision/recall/F1) and macro-F1 of one predicted class per item: what
    any model, trained or composed, is compared on."""
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predictions, average="weighted", zero_division=0
    )
    metrics = {
        "accuracy": accuracy_score(labels, predictions),
        "precision_weighted": precision,
        "recall_weighted": recall,
        "f1_weighted": f1,
        "f1_macro": f1_score(labels, predictions, average="macro", zero_division=0),
    }
    return {name: float(value) for name, value in metrics.items()}


def per_class_report(labels: np.ndarray, predictions: np.ndarray, names: list[str]) -> dict:
    """Per-emotion precision/recall/F1/support and the confusion matrix (rows: truth, columns: prediction)."""
    ids = list(range(len(names)))
    return {
        "per_class": classification_report(
            labels, predictions, labels=ids, target_names=names, output_dict=True, zero_division=0
        ),
        "confusion_matrix": {"labels": names, "matrix": confusion_matrix(labels, predictions, labels=ids).tolist()},
    }


def save_confusion_matrix(matrix: list[list[int]], names: list[str], path: Path) -> None:
    """A heatmap like the paper's Fig. 7, rendered without a display (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 7))
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=names).plot(ax=axes, cmap="Blues", values_format="d")
    axes.set_title("Confusion Matrix Heatmap with Emotions")
    axes.set_xlabel("Predicted emotion")
    axes.set_ylabel("True emotion")
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)
