"""The model comparison's figures, Fig. 8 (every model's metrics) and Fig. 4 (the joint scaler), and `render`, which
writes `results.md` (`hyfuser.comparison.results_markdown`) and every figure of a comparison from its `results.json`
alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hyfuser.comparison import PAPER_ROWS, TABLE_COLUMNS, results_markdown
from hyfuser.metrics import save_confusion_matrix


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_comparison(results: dict, path: Path) -> None:
    """Fig. 8: the four metrics of every model as grouped bars, with the standard deviation over runs as error bars
    (none for a single run)."""
    plt = _pyplot()
    models = results["models"]
    figure, axes = plt.subplots(figsize=(max(8, 1.6 * len(models)), 5))
    width = 0.8 / len(models)
    positions = np.arange(len(TABLE_COLUMNS))
    for offset, model in enumerate(models):
        metrics = results["summary"][model]
        means = [metrics[metric]["mean"] for metric in TABLE_COLUMNS]
        errors = [metrics[metric]["std"] or 0.0 for metric in TABLE_COLUMNS]
        axes.bar(positions + offset * width, means, width, yerr=errors, capsize=3, label=PAPER_ROWS.get(model, model))
    axes.set_xticks(positions + width * (len(models) - 1) / 2, ["Accuracy", "Recall", "Precision", "F1-Score"])
    axes.set_ylim(0, 1)
    axes.set_ylabel("score (weighted)")
    axes.set_title("Comparison of performance metrics across models")
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)


def plot_scaling(scaling: dict, path: Path) -> None:
    """Fig. 4: the per-dimension means of the text and the speech training features before and after the joint
    scaler: apart before, both centred on 0 after."""
    plt = _pyplot()
    figure, panels = plt.subplots(1, 2, figsize=(12, 4), sharey=False)
    for axes, stage, title in zip(panels, ("before", "after"), ("Before scaling", "After joint standard scaling")):
        for modality, label in (("text", "text (KoELECTRA)"), ("speech", "speech (HuBERT)")):
            axes.plot(scaling[stage][modality], label=label, linewidth=0.8)
        axes.set_title(title)
        axes.set_xlabel("feature dimension")
        axes.set_ylabel("mean over training positions")
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)


def render(output_dir: Path, results: dict) -> None:
    """results.md, comparison.png (Fig. 8), scaling.png (Fig. 4) and confusion_<model>.png (Fig. 7, summed over a
    model's runs) from `results` (what `results.json` holds) alone."""
    (output_dir / "results.md").write_text(results_markdown(results), encoding="utf-8")
    plot_comparison(results, output_dir / "comparison.png")
    plot_scaling(results["scaling"], output_dir / "scaling.png")
    for model in results["models"]:
        matrices = [run["confusion_matrix"] for run in results["runs"] if run["model"] == model]
        save_confusion_matrix(
            np.sum(matrices, axis=0).tolist(), results["labels"], output_dir / f"confusion_{model}.png"
        )
