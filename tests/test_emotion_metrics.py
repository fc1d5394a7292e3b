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
