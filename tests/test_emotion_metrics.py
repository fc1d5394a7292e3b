"""The repository's `evaluate` metric module (metrics/emotion_metrics): loads offline by path, equals scikit-learn."""

import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import classification_report, confusion_matrix, f1_score, precision_recall_fscore_support

from hyfuser.metrics import EMOTION_METRICS_PATH, emotion_metrics

NAMES = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


def test_metric_loads_by_path_offline_in_a_fresh_process_and_writes_nothing_into_the_repo(tmp_path):
    before = sorted(path.relative_to(EMOTION_METRICS_PATH) for path in EMOTION_METRICS_PATH.rglob("*"))
    script = (
        "import evaluate, sys\n"
        "metric = evaluate.load(sys.argv[1])\n"
        "print(metric.compute(predictions=[0, 1, 1], references=[0, 1, 2])['accuracy'])\n"
    )
    environment = {
        **os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")
    }
    result = subprocess.run(
        [sys.executable, "-c", script, str(EMOTION_METRICS_PATH)],
        cwd=tmp_path, env=environment, capture_output=True, text=True, check=True,
    )
    assert float(result.stdout.strip().splitlines()[-1]) == pytest.approx(2 / 3)
    assert sorted(path.relative_to(EMOTION_METRICS_PATH) for path in EMOTION_METRICS_PATH.rglob("*")) == before


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metric_equals_scikit_learn_on_random_predictions_with_absent_classes(seed):
    rng = np.random.default_rng(seed)
    # References never hold class 4 and predictions never hold classes 5 and 6; class 3 is in neither.
    references = rng.choice([0, 1, 2, 5, 6], size=50)
    predictions = rng.choice([0, 1, 2, 4], size=50)
    ids = list(range(len(NAMES)))

    metrics = emotion_metrics().compute(predictions=predictions, references=references, label_names=NAMES)

    precision, recall, f1, _ = precision_recall_fscore_support(
        references, predictions, average="weighted", zero_division=0
    )
    assert metrics["accuracy"] == pytest.approx(np.mean(references == predictions), abs=1e-12)
    assert metrics["precision_weighted"] == pytest.approx(precision, abs=1e-12)
    assert metrics["recall_weighted"] == pytest.approx(recall, abs=1e-12)
    assert metrics["f1_weighted"] == pytest.approx(f1, abs=1e-12)
    assert metrics["f1_macro"] == pytest.approx(
        f1_score(references, predictions, average="macro", zero_division=0), abs=1e-12
    )
    report = classification_report(
        references, predictions, labels=ids, target_names=NAMES, output_dict=True, zero_division=0
    )
    for name in NAMES:
        assert metrics["per_class"][name] == pytest.approx(report[name], abs=1e-12), name
    assert metrics["confusion_matrix"] == {
        "labels": NAMES, "matrix": confusion_matrix(references, predictions, labels=ids).tolist()
    }


def test_metric_refuses_class_ids_outside_the_label_names():
    with pytest.raises(ValueError, match="predictions holds class ids outside 0..6"):
        emotion_metrics().compute(predictions=[7], references=[0], label_names=NAMES)


def test_metric_card_example_runs_from_the_repository_root(monkeypatch):
    card = (EMOTION_METRICS_PATH / "README.md").read_text(encoding="utf-8")
    example = card.split("```python\n")[1].split("```")[0]
    *statements, last = example.strip().splitlines()
    monkeypatch.chdir(EMOTION_METRICS_PATH.parent.parent)
    namespace = {}
    exec("\n".join(statements), namespace)  # noqa: S102
    result = eval(last.split("#")[0], namespace)  # noqa: S307
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["confusion_matrix"] == {"labels": ["angry", "happy", "sad"], "matrix": [[1, 0, 0], [0, 1, 0], [0, 1, 0]]}


# Four rows, three classes: confidences 0.7, 0.5, 0.7, 0.9; predictions 0, 1, 2, 0 against references 0, 2, 2, 1.
PROBABILITIES = [[0.7, 0.2, 0.1], [0.1, 0.5, 0.4], [0.2, 0.1, 0.7], [0.9, 0.05, 0.05]]
REFERENCES = [0, 2, 2, 1]


def test_probability_vectors_add_ece_nll_and_brier_equal_to_a_computation_by_hand():
    metrics = emotion_metrics().compute(predictions=PROBABILITIES, references=REFERENCES)
    # 15 bins of width 1/15: 0.5 is in bin 7 (7/15, 8/15], 0.7 in bin 10 (10/15, 11/15], 0.9 in bin 13 (13/15, 14/15]
    #   bin 7:  1 row,  accuracy 0, confidence 0.5 -> 1/4 x 0.5 = 0.125
    #   bin 10: 2 rows, accuracy 1, confidence 0.7 -> 2/4 x 0.3 = 0.15
    #   bin 13: 1 row,  accuracy 0, confidence 0.9 -> 1/4 x 0.9 = 0.225      ECE = 0.125 + 0.15 + 0.225 = 0.5
    # NLL = -(ln 0.7 + ln 0.4 + ln 0.7 + ln 0.05) / 4 = (0.356675 + 0.916291 + 0.356675 + 2.995732) / 4 = 1.156343
    # Brier: (0.09 + 0.04 + 0.01) + (0.01 + 0.25 + 0.36) + (0.04 + 0.01 + 0.09) + (0.81 + 0.9025 + 0.0025)
    #      = 0.14 + 0.62 + 0.14 + 1.715 = 2.615, / 4 = 0.65375
    assert metrics["ece"] == pytest.approx(0.5, abs=1e-12)
    assert metrics["nll"] == pytest.approx(1.156343, abs=1e-6)
    assert metrics["brier"] == pytest.approx(0.65375, abs=1e-12)
    table = metrics["reliability"]
    assert table["bin_edges"] == pytest.approx([index / 15 for index in range(16)])
    assert table["count"] == [0] * 7 + [1, 0, 0, 2, 0, 0, 1, 0]
    filled = {index: (table["accuracy"][index], table["confidence"][index]) for index in (7, 10, 13)}
    assert filled == {7: (0.0, pytest.approx(0.5)), 10: (1.0, pytest.approx(0.7)), 13: (0.0, pytest.approx(0.9))}
    assert {table["accuracy"][index] for index in range(15) if index not in filled} == {None}
    assert {table["confidence"][index] for index in range(15) if index not in filled} == {None}
    # The classification metrics are those of the argmax ids, which add no calibration numbers.
    ids = emotion_metrics().compute(predictions=[0, 1, 2, 0], references=REFERENCES)
    assert "ece" not in ids and {name: metrics[name] for name in ids} == ids


def test_the_number_of_calibration_bins_is_an_argument():
    metrics = emotion_metrics().compute(predictions=PROBABILITIES, references=REFERENCES, n_bins=2)
    # Bins (0, 0.5] and (0.5, 1]: 0.5 alone in the first (accuracy 0), 0.7, 0.7, 0.9 in the second (accuracy 2/3,
    # confidence 2.3/3). ECE = 1/4 x 0.5 + 3/4 x |2/3 - 2.3/3| = 0.125 + 3/4 x 0.3/3 = 0.125 + 0.075 = 0.2
    assert metrics["ece"] == pytest.approx(0.2, abs=1e-12)
    assert metrics["reliability"]["count"] == [1, 3]
    with pytest.raises(ValueError, match="n_bins must be a positive integer, got 0"):
        emotion_metrics().compute(predictions=PROBABILITIES, references=REFERENCES, n_bins=0)


def test_probability_vectors_accumulate_over_batches_like_class_ids():
    metric = emotion_metrics()
    metric.add_batch(predictions=np.asarray(PROBABILITIES[:3], dtype=np.float32), references=REFERENCES[:3])
    metric.add_batch(predictions=np.asarray(PROBABILITIES[3:], dtype=np.float32), references=REFERENCES[3:])
    assert metric.compute(label_names=["angry", "happy", "sad"])["ece"] == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize(
    ("predictions", "label_names", "message"),
    [
        (np.log(PROBABILITIES), None, r"predictions row 0 is not a probability vector .*pass softmax\(logits\)"),
        ([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4], [0.2, 0.1, 0.7], [0.9, 0.05, 0.06]], None, "predictions row 3 is not"),
        (PROBABILITIES, ["angry", "happy"], "the probability vectors have 3 entries but label_names names 2 classes"),
    ],
)
def test_metric_refuses_what_is_not_a_probability_vector_per_class(predictions, label_names, message):
    with pytest.raises(ValueError, match=message):
        emotion_metrics().compute(predictions=predictions, references=REFERENCES, label_names=label_names)
