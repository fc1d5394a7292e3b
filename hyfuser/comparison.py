"""The model comparison's reporting, from finished runs' records to `results.json`'s analysis and `results.md`:
summary statistics, per-head accuracies, collapsed runs, HyFusER paired against every other model with the
corrected resampled t-test, calibration before and after temperature scaling, and the paper's Table 5/6 numbers
beside ours.

Everything here is a pure function of the run records (no data, no training), so `reproduce.py --render OUT` rebuilds
`results.md` (and `hyfuser.comparison_figures` the figures) from `OUT/results.json` alone, byte for byte the same
Markdown.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from hyfuser.tables import markdown_table

REPORTED_METRICS = ("accuracy", "precision_weighted", "recall_weighted", "f1_weighted", "f1_macro")
"""Every run's metrics in `results.json`, on the fused prediction."""

HEAD_METRICS = {
    "text_head_accuracy": "Text-centric head (first member)",
    "speech_head_accuracy": "Speech-centric head (second member)",
}
"""The accuracy of each head alone, for a model with two: HyFusER's Step 1 and Step 2 heads, a composed model's two
members."""

TABLE_COLUMNS = {
    "accuracy": "Accuracy (%)",
    "recall_weighted": "Recall (Weighted)",
    "precision_weighted": "Precision (Weighted)",
    "f1_weighted": "F1-Score (Weighted)",
}
"""The paper's Table 5/6 columns, in its order (accuracy in percent there, the others as fractions)."""

PAPER_ROWS = {
    "text_lstm": "LSTM (Text)",
    "speech_cnn": "CNN (Speech)",
    "average_ensemble": "Single modality average ensemble",
    "weighted_average_ensemble": "Single modality weighted average ensemble",
    "bicma": "Bidirectional Cross Modal Attention",
    "kohmt": "KoHMT",
    "hyfuser": "HyFusER",
}
"""The paper's row name of each model it reports, in its order; other models follow under their own names."""

REFERENCE_MODEL = "hyfuser"
"""The model the paired table compares every other model with."""

CALIBRATION_METRICS = ("ece", "nll", "brier")
"""What the calibration table reports before and after temperature scaling (`hyfuser.calibration`)."""

COLLAPSE_PREDICTION_SHARE = 0.6
"""A run whose predictions go to one class more often than this is reported as collapsed."""


def _paper_row(accuracy: float, recall: float, precision: float, f1: float) -> dict[str, float]:
    return {"accuracy": accuracy, "recall_weighted": recall, "precision_weighted": precision, "f1_weighted": f1}


PAPER_RESULTS: dict[str, dict[str, dict[str, float]]] = {
    # Table 5: KEMDy19 + KEMDy20, random 8:2 split
    "kemdy": {
        "text_lstm": _paper_row(0.5922, 0.5922, 0.6278, 0.6046),
        "speech_cnn": _paper_row(0.5185, 0.5185, 0.6243, 0.5584),
        "average_ensemble": _paper_row(0.6085, 0.6085, 0.6660, 0.6292),
        "weighted_average_ensemble": _paper_row(0.6100, 0.6100, 0.6638, 0.6292),
        "bicma": _paper_row(0.6408, 0.6408, 0.6604, 0.6419),
        "kohmt": _paper_row(0.6562, 0.6562, 0.6739, 0.6628),
        "hyfuser": _paper_row(0.6783, 0.6783, 0.6890, 0.6823),
    },
    # Table 6: AI-Hub 263, random 8:2 split
    "aihub": {
        "text_lstm": _paper_row(0.7038, 0.7038, 0.7086, 0.7039),
        "speech_cnn": _paper_row(0.5638, 0.5638, 0.5958, 0.5703),
        "average_ensemble": _paper_row(0.7052, 0.7052, 0.7232, 0.7075),
        "weighted_average_ensemble": _paper_row(0.7152, 0.7152, 0.7247, 0.7164),
        "bicma": _paper_row(0.7763, 0.7763, 0.7827, 0.7770),
        "kohmt": _paper_row(0.7745, 0.7745, 0.7780, 0.7744),
        "hyfuser": _paper_row(0.7977, 0.7977, 0.7975, 0.7975),
    },
}
"""The paper's reported numbers (accuracy as a fraction here), per `--dataset`."""

PAPER_TABLES = {"kemdy": "Table 5", "aihub": "Table 6"}
"""The paper's table of each `--dataset` in `PAPER_RESULTS`."""


# --------------------------------------------------------------------------------------------------------------------
# Statistics


def summary_statistics(values: Sequence[float]) -> dict[str, float | int | None]:
    """Mean, sample standard deviation (ddof=1; None for a single value, which has no spread to estimate) and
    count."""
    values = np.asarray(values, dtype=float)
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return {"mean": float(np.mean(values)), "std": std, "n": len(values)}


def win_tie_loss(differences: Sequence[float]) -> dict[str, int]:
    """How many differences are positive, zero and negative."""
    differences = np.asarray(differences, dtype=float)
    return {
        "wins": int(np.sum(differences > 0)),
        "ties": int(np.sum(differences == 0)),
        "losses": int(np.sum(differences < 0)),
    }


def corrected_resampled_t_test(differences: Sequence[float], test_train_ratio: float) -> dict[str, float | None]:
    """Nadeau and Bengio's (2003) corrected resampled t-test of paired score differences over J train/test splits.

    The splits share training rows, so the differences are correlated and the plain paired t-test's variance
    `s^2 / J` is too small; the correction inflates it to `(1/J + n_test/n_train) * s^2`, with `s^2` the sample
    variance (ddof=1). `t = mean / sqrt(that)` has J - 1 degrees of freedom; `p` is two-sided. All None with fewer
    than two differences, and `t` and `p` None when they do not vary (the statistic is undefined).
    """
    differences = np.asarray(differences, dtype=float)
    pairs = len(differences)
    if pairs < 2:
        return {"t": None, "dof": None, "p": None}
    variance = float(np.var(differences, ddof=1))
    if variance == 0:
        return {"t": None, "dof": pairs - 1, "p": None}
    t = float(np.mean(differences)) / math.sqrt((1 / pairs + test_train_ratio) * variance)
    return {"t": t, "dof": pairs - 1, "p": float(2 * stats.t.sf(abs(t), pairs - 1))}


def paired_comparison(reference: Sequence[dict], other: Sequence[dict]) -> dict[str, Any]:
    """The reference model's accuracy against another's, run by run on the same (fold, seed): the number of pairs, the
    mean difference (reference minus other), wins/ties/losses of the reference and the corrected resampled t-test,
    whose test/train ratio is the mean of the pairs' validation rows over rows fitted on."""
    by_split = {(record["fold"], record["seed"]): record for record in other}
    pairs = [(record, by_split[key]) for record in reference if (key := (record["fold"], record["seed"])) in by_split]
    differences = [first["metrics"]["accuracy"] - second["metrics"]["accuracy"] for first, second in pairs]
    ratio = float(np.mean([first["n_validation"] / first["n_fit"] for first, _ in pairs])) if pairs else None
    return {
        "pairs": len(pairs),
        "mean_difference": float(np.mean(differences)) if pairs else None,
        **win_tie_loss(differences),
        "test_train_ratio": ratio,
        **corrected_resampled_t_test(differences, ratio or 0.0),
    }


def collapse_reasons(confusion_matrix: Sequence[Sequence[int]], labels: Sequence[str]) -> list[str]:
    """Why a run's predictions count as collapsed, or [] if they do not: each class present in the validation rows
    (rows of the matrix: truth) that is never predicted right, and a class taking over `COLLAPSE_PREDICTION_SHARE`
    of all predictions (columns)."""
    matrix = np.asarray(confusion_matrix)
    unrecalled = [
        label for label, row, correct in zip(labels, matrix, np.diag(matrix)) if row.sum() > 0 and correct == 0
    ]
    reasons = [f"recall 0 for {', '.join(unrecalled)}"] if unrecalled else []
    predicted = matrix.sum(axis=0)
    share = predicted / max(int(predicted.sum()), 1)
    reasons += [
        f"{label} takes {100 * fraction:.0f}% of predictions"
        for label, fraction in zip(labels, share)
        if fraction > COLLAPSE_PREDICTION_SHARE
    ]
    return reasons


def model_order(models: Sequence[str]) -> list[str]:
    """The paper's rows first, in its order, then the other models in the given order."""
    return [model for model in PAPER_ROWS if model in models] + [model for model in models if model not in PAPER_ROWS]


def analyse(runs: Sequence[dict], models: Sequence[str]) -> dict[str, Any]:
    """What `results.json` concludes from the reported runs: per model the summary of each metric (and each head's
    accuracy, for two-headed models), the collapsed runs, and the reference model paired against every other."""
    order = model_order(models)
    by_model = {model: [run for run in runs if run["model"] == model] for model in order}
    summary = {}
    for model, records in by_model.items():
        metrics = [name for name in [*REPORTED_METRICS, *HEAD_METRICS] if all(name in r["metrics"] for r in records)]
        summary[model] = {name: summary_statistics([r["metrics"][name] for r in records]) for name in metrics}
    collapsed = {model: sum(bool(r["collapse"]) for r in records) for model, records in by_model.items()}
    paired = {}
    if REFERENCE_MODEL in by_model:
        paired = {
            model: paired_comparison(by_model[REFERENCE_MODEL], records)
            for model, records in by_model.items()
            if model != REFERENCE_MODEL
        }
    return {"models": order, "summary": summary, "collapsed_runs": collapsed, "paired": paired}


# --------------------------------------------------------------------------------------------------------------------
# results.md


def _row_name(model: str) -> str:
    return f"{PAPER_ROWS[model]} (`{model}`)" if model in PAPER_ROWS else f"`{model}`"


def _statistic(statistic: dict, scale: float, digits: int) -> str:
    """mean ± sample std, or the mean alone for a single run."""
    text = f"{scale * statistic['mean']:.{digits}f}"
    return text if statistic["std"] is None else f"{text} ± {scale * statistic['std']:.{digits}f}"


def _metric_format(metric: str) -> tuple[float, int]:
    """Accuracies in percent with 2 decimals (as the paper's tables), the other metrics as fractions with 4."""
    return (100, 2) if metric.endswith("accuracy") else (1, 4)


def _optional(value: float | None, template: str) -> str:
    return "n/a" if value is None else template.format(value)


SPLIT_DESCRIPTIONS = {
    "paper": "the random stratified 8:2 split, as the paper's (speakers on both sides)",
    "session_cv": "{folds}-fold cross-validation over whole (corpus, session) groups: no session, so no speaker, on "
    "both sides of a fold",
}

SELECTION_DESCRIPTIONS = {
    "held_out": "`held_out`: early stopping, the restored checkpoint and the weighted ensemble's weight are chosen on "
    "a model-selection set held out of the training rows ({carve}); the validation rows are only ever scored",
    "validation": "`validation`, **optimistic**: early stopping, the restored checkpoint and the weighted ensemble's "
    "weight are chosen on the very validation rows that are then scored (the paper's own protocol), which biases "
    "every number upward",
}

CARVES = {"paper": "a stratified {percent}% of them", "session_cv": "whole sessions, about {percent}% of them"}


def paper_comparison_note(results: dict) -> str:
    """What the "(paper X)" beside a number is, and how far the protocols match."""
    if results["dataset"] not in PAPER_RESULTS:
        return "The paper reports nothing on this dataset."
    table = PAPER_TABLES[results["dataset"]]
    note = (
        f"In parentheses: the paper's {table} number for the same row, from one run on its random 8:2 split with "
        "early stopping and the checkpoint chosen on the validation rows it scored."
    )
    if results["protocol"] == "session_cv":
        return note + (
            " Here no speaker is on both sides, a harder task than the paper's random split: not a like-for-like "
            "target."
        )
    if results["selection"] == "held_out":
        return note + (
            " Here the split is the same kind but models are chosen on held-out training rows, not on the scored "
            "rows, and fit on fewer rows: expect lower numbers than a like-for-like rerun (`--selection validation`)."
        )
    return note + " Here the protocol is the same (our split of the same kind, not the paper's rows)."


def probe_lines(results: dict) -> list[str]:
    """How the linear probes were fitted, if the comparison has any (their records carry the chosen L2 penalty)."""
    penalties: dict[str, list[str]] = {}
    for run in results["runs"]:
        if "probe_l2" in run:
            penalties.setdefault(run["model"], []).append(f"{run['probe_l2']:g}")
    if not penalties:
        return []
    chosen = "; ".join(f"`{model}` {', '.join(values)}" for model, values in penalties.items())
    return [
        "- Linear probes: logistic regression on the features averaged over positions, fitted by full-batch L-BFGS "
        "on the fit rows, the L2 penalty chosen on the selection rows; they draw no random numbers, so each runs "
        f"once per split, under the first seed. Chosen penalties, split by split: {chosen}."
    ]


def protocol_lines(results: dict) -> list[str]:
    """The protocol in words: split, selection, runs and seeds, and every split's sizes."""
    percent = f"{100 * results['selection_fraction']:g}"
    split = SPLIT_DESCRIPTIONS[results["protocol"]].format(folds=results["folds"])
    carve = CARVES[results["protocol"]].format(percent=percent)
    seeds = ", ".join(str(seed) for seed in results["seeds"])
    rows = [
        [
            "all" if split_sizes["fold"] is None else str(split_sizes["fold"]),
            str(split_sizes["n_fit"]),
            str(split_sizes["n_selection"]),
            str(split_sizes["n_validation"]),
        ]
        for split_sizes in results["splits"]
    ]
    return [
        "## Protocol",
        "",
        f"- Split: {split}; split seed {results['split_seed']}.",
        f"- Selection: {SELECTION_DESCRIPTIONS[results['selection']].format(carve=carve)}.",
        f"- Runs: every model on every split with training seeds {seeds}; the second member of a composed model "
        f"trains with its seed + {results['member_seed_offset']}, so the two never start from the same random draw.",
        *probe_lines(results),
        "",
        markdown_table(["Fold", "Fit rows", "Selection rows", "Validation rows"], rows),
    ]


def main_table_lines(results: dict) -> list[str]:
    """Table 5's (Table 6's) layout: measured mean ± std, the paper's number for the same row beside it."""
    paper = PAPER_RESULTS.get(results["dataset"], {})
    summary = results["summary"]

    def cell(model: str, metric: str) -> str:
        scale, digits = _metric_format(metric)
        text = _statistic(summary[model][metric], scale, digits)
        if metric in paper.get(model, {}):
            text += f" (paper {scale * paper[model][metric]:.{digits}f})"
        return text

    rows = [
        [_row_name(model), *(cell(model, metric) for metric in [*TABLE_COLUMNS, "f1_macro"])]
        for model in results["models"]
    ]
    counts = [summary[model]["accuracy"]["n"] for model in results["models"]]
    if max(counts) == 1:
        measured = "One run per model, its value on validation rows only (no spread without repeats)."
    else:
        runs = ", ".join(f"{model} {count}" for model, count in zip(results["models"], counts))
        measured = (
            f"Mean ± sample std over runs (folds x seeds; runs per model: {runs}), a single run's value alone, on "
            "validation rows only."
        )
    return [
        "## Results",
        "",
        f"{measured} {paper_comparison_note(results)}",
        "",
        markdown_table(["Model", *TABLE_COLUMNS.values(), "F1-Score (Macro)"], rows),
    ]


def head_table_lines(results: dict) -> list[str]:
    """Each head's accuracy alone beside the fused accuracy, for the models with two heads."""
    summary = results["summary"]
    two_headed = [model for model in results["models"] if set(HEAD_METRICS) <= set(summary[model])]
    if not two_headed:
        return []
    rows = [
        [_row_name(model), *(_statistic(summary[model][name], 100, 2) for name in ["accuracy", *HEAD_METRICS])]
        for model in two_headed
    ]
    return [
        "## Each head alone",
        "",
        "Accuracy (%) of the fused prediction and of each head's own prediction: HyFusER's text-centric (Step 1) and "
        "speech-centric (Step 2) heads; a composed model's heads are its first and second member.",
        "",
        markdown_table(["Model", "Fused", *HEAD_METRICS.values()], rows),
    ]


def _paired_row(model: str, comparison: dict) -> list[str]:
    difference = comparison["mean_difference"]
    return [
        _row_name(model),
        str(comparison["pairs"]),
        _optional(None if difference is None else 100 * difference, "{:+.2f}"),
        f"{comparison['wins']} / {comparison['ties']} / {comparison['losses']}",
        _optional(comparison["t"], "{:.3f}"),
        _optional(comparison["dof"], "{}"),
        _optional(comparison["p"], "{:.4f}"),
    ]


def paired_table_lines(results: dict) -> list[str]:
    """HyFusER against every other model, run by run on the same folds and seeds."""
    if not results["paired"]:
        return []
    rows = [_paired_row(model, comparison) for model, comparison in results["paired"].items()]
    return [
        f"## `{REFERENCE_MODEL}` against each model",
        "",
        f"Paired on the same (fold, seed): the mean of `{REFERENCE_MODEL}`'s accuracy minus the model's, in points; "
        "how many pairs it wins, ties and loses; the corrected resampled t-test (Nadeau and Bengio 2003: the "
        "differences' sample variance inflated by 1/J + n_validation/n_fit for J pairs, J - 1 degrees of freedom, "
        "two-sided p). n/a: fewer than two pairs, or differences that do not vary.",
        "",
        markdown_table(["Model", "Pairs", "Mean difference", "Wins / ties / losses", "t", "dof", "p"], rows),
    ]


def collapse_lines(results: dict) -> list[str]:
    """How many runs of each model collapsed, and why each did."""
    total = {model: results["summary"][model]["accuracy"]["n"] for model in results["models"]}
    rows = [[_row_name(model), f"{results['collapsed_runs'][model]} of {total[model]}"] for model in results["models"]]
    details = [
        f"- `{run['model']}` fold {run['fold']}, seed {run['seed']}: {'; '.join(run['collapse'])}."
        for run in results["runs"]
        if run["collapse"]
    ]
    return [
        "## Collapsed runs",
        "",
        "A run counts as collapsed when a class present in its validation rows has zero recall, or one class takes "
        f"over {100 * COLLAPSE_PREDICTION_SHARE:.0f}% of its predictions.",
        "",
        markdown_table(["Model", "Collapsed runs"], rows),
        *([""] + details if details else []),
    ]


def calibration_lines(results: dict) -> list[str]:
    """Temperature scaling per model: the temperature, and ECE/NLL/Brier on the validation rows before and after."""
    calibration = results.get("calibration")
    if not calibration:
        return []
    models = [model for model in results["models"] if model in calibration]
    rows = [
        [
            _row_name(model),
            _statistic(calibration[model]["temperature"], 1, 3),
            *(_statistic(calibration[model][f"{metric}_{stage}"], 1, 4)
              for metric in CALIBRATION_METRICS for stage in ("before", "after")),
        ]
        for model in models
    ]  # fmt: skip
    fitted_on = (
        "the selection rows, never the validation rows it is scored on"
        if results["selection"] == "held_out"
        else "**the validation rows it is then scored on** (`--selection validation`): the numbers after are "
        "optimistic"
    )
    lines = [
        "## Calibration",
        "",
        f"Temperature scaling: one temperature T per run on the fused output, softmax(log p / T), fitted by "
        f"negative log-likelihood on {fitted_on}; it never changes a prediction. On the validation rows: ECE "
        "(15 equal-width confidence bins, top-label), NLL (mean, natural log) and Brier score (sum over classes, "
        "mean over rows), before and after; lower is better. Same runs and spread as the results table.",
        "",
        markdown_table(
            ["Model", "T", "ECE before", "ECE after", "NLL before", "NLL after", "Brier before", "Brier after"],
            rows,
        ),
    ]
    bounded = [f"`{model}` {calibration[model]['temperatures_on_bound']}" for model in models
               if calibration[model].get("temperatures_on_bound")]  # fmt: skip
    if bounded:
        lines += [
            "",
            "Runs whose temperature ended on a bound of the search (0.01 or 100; at 100 a model whose confidence "
            f"carries no information, e.g. a collapsed run, is flattened towards uniform): {', '.join(bounded)}.",
        ]
    return lines + ["", *per_head_lines(results, models)]


def per_head_lines(results: dict, models: Sequence[str]) -> list[str]:
    """What per-head temperatures (one per head, Eq. 9 on the calibrated heads) changed for the reference model."""
    if REFERENCE_MODEL not in models:
        return []
    summary = results["calibration"][REFERENCE_MODEL]
    if "per_head" not in summary:
        return [
            f"Per-head temperatures (`{REFERENCE_MODEL}`): not in these runs' records, which predate storing each "
            "head's output on the selection rows; rerun the comparison in a new directory to try them."
        ]
    heads = summary["per_head"]
    return [
        f"Per-head temperatures (`{REFERENCE_MODEL}`), the alternative tried: one temperature per head fitted on "
        "the same selection rows, then Eq. 9 on the calibrated heads. T text "
        f"{_statistic(heads['text_temperature'], 1, 3)}, T speech {_statistic(heads['speech_temperature'], 1, 3)}; "
        f"ECE {_statistic(heads['ece'], 1, 4)} (one fused T: {_statistic(summary['ece_after'], 1, 4)}), NLL "
        f"{_statistic(heads['nll'], 1, 4)} (one fused T: {_statistic(summary['nll_after'], 1, 4)}); accuracy "
        f"{_statistic(heads['accuracy'], 100, 2)}% (unchanged by one T: "
        f"{_statistic(results['summary'][REFERENCE_MODEL]['accuracy'], 100, 2)}%), as two temperatures reweigh the "
        "heads row by row."
    ]


def results_markdown(results: dict) -> str:
    """results.md: the protocol, the Table 5/6 comparison, each head alone, the paired table, calibration and
    collapsed runs."""
    split = "paper split" if results["protocol"] == "paper" else "session cross-validation"
    sections = [
        [f"# Model comparison: `{results['dataset']}`, {split}, selection `{results['selection']}`"],
        protocol_lines(results),
        main_table_lines(results),
        head_table_lines(results),
        paired_table_lines(results),
        calibration_lines(results),
        collapse_lines(results),
    ]
    return "\n\n".join("\n".join(section) for section in sections if section) + "\n"
