"""HyFusER's classification metrics as an `evaluate` module: load it by path, offline, or push the folder to the Hub.

    >>> import evaluate
    >>> metric = evaluate.load("metrics/emotion_metrics")
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 2], label_names=["angry", "happy", "sad"])
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
The metrics of the HyFusER paper's Table 5 (accuracy, support-weighted precision, recall and F1) plus macro-F1, the
per-class report and the confusion matrix, all from one confusion matrix.

A class with no predictions has precision 0 and one with no references recall 0 (scikit-learn's `zero_division=0`).
Macro-F1 averages the classes that occur among the references or the predictions, as scikit-learn does; the
per-class report and the confusion matrix cover every class in `label_names`.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class ids.
    references (`list` of `int`): true class ids.
    label_names (`list` of `str`, *optional*): the name of each class id, in order. Defaults to the ids as strings,
        for the classes 0 to the largest id seen.
Returns:
    accuracy, precision_weighted, recall_weighted, f1_weighted, f1_macro (`float`);
    per_class (`dict`): per class name, its `precision`, `recall`, `f1-score` and `support`;
    confusion_matrix (`dict`): `labels` (the class names) and `matrix` (rows: reference, columns: prediction).
"""


class EmotionMetrics(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, label_names=None):
        predictions, references = np.asarray(predictions, dtype=np.int64), np.asarray(references, dtype=np.int64)
        if len(references) == 0:
            raise ValueError("emotion_metrics needs at least one prediction")
        if label_names is None:
            label_names = [str(index) for index in range(int(max(predictions.max(), references.max())) + 1)]
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
        return {
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
