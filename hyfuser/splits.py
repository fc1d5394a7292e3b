"""The paper's data (Section 5.1) from the loaders' rows, its report beside the paper's Table 4, and the
speaker-independent splits of a comparison (session folds, selection rows held out of fitting).

`build_paper_dataset` merges KEMDy19 + KEMDy20 (or takes AI-Hub 263 alone), drops duplicate texts, drops texts under
two Hangul syllables, downsamples neutral to the largest other class, splits 8:2 (stratified by label: our choice,
the paper only gives the ratio); it reports the counts after each stage beside the paper's Table 4.
"""

import os
from collections import Counter
from dataclasses import dataclass

import numpy as np
from datasets import Dataset, DatasetDict, concatenate_datasets

from configuration_hyfuser import EMOTION_LABELS
from hyfuser.corpora import load_aihub263, load_kemdy19, load_kemdy20
from hyfuser.corpus_reading import LoadReport, check_choice, count_hangul_syllables, text_table

SPLITS = ("random", "session")
"""Validation split: random utterances stratified by label (the paper gives only the 8:2 ratio; stratifying is our
choice), or whole held-out sessions (KEMDy)."""

PAPER_STAGES = ("loaded", "deduplicated", ">= 2 syllables", "used", "train", "validation")
"""Stages of `build_paper_dataset`, each counting the rows left after it."""

TABLE_4 = {
    # The paper's Table 4, "KEMDy data number by emotion" (KEMDy19 + KEMDy20 merged), column by column.
    "collected": {"angry": 1352, "disgust": 446, "fear": 840, "happy": 2643, "neutral": 15082, "sad": 1028,
                  "surprise": 1429},
    "final": {"angry": 1352, "disgust": 446, "fear": 840, "happy": 2643, "neutral": 2643, "sad": 1028,
              "surprise": 1429},
}  # fmt: skip

TABLE_4_STAGES = {"collected": ">= 2 syllables", "final": "used"}
"""The stage each Table 4 column counts. "Collected Data" equals "Final Data Used" for every class but neutral, so it
counts rows after the duplicate and syllable filters, not as loaded; "Final Data Used" follows the neutral
downsampling."""


@dataclass
class PaperDatasetReport:
    """Label counts after each stage of `build_paper_dataset` (beside the paper's Table 4 for a KEMDy19 + KEMDy20
    merge, plus the split) and its loads."""

    loads: list[LoadReport]
    stages: dict[str, dict[str, int]]
    split_by: str
    seed: int
    validation_fraction: float

    @property
    def compares_to_table_4(self) -> bool:
        """Table 4 counts the KEMDy19 + KEMDy20 merge; any other data has nothing to compare with."""
        return sorted(report.corpus for report in self.loads) == ["KEMDy19", "KEMDy20"]

    def table_4_differences(self) -> dict[str, int]:
        """Per Table 4 column, the sum over emotions of |this run's count - the paper's|: how far this run is."""
        return {
            column: sum(abs(self.stages[TABLE_4_STAGES[column]][label] - count) for label, count in paper.items())
            for column, paper in TABLE_4.items()
        }

    def to_dict(self) -> dict:
        """JSON-serialisable form; for a KEMDy19 + KEMDy20 merge, each Table 4 column beside the stage it counts."""
        result = {
            "loads": [report.to_dict() for report in self.loads],
            "stages": {stage: dict(counts) for stage, counts in self.stages.items()},
            "split_by": self.split_by,
            "seed": self.seed,
            "validation_fraction": self.validation_fraction,
        }
        if self.compares_to_table_4:
            differences = self.table_4_differences()
            result["table_4"] = {
                column: {
                    "stage": stage,
                    "paper": dict(TABLE_4[column]),
                    "this_run": dict(self.stages[stage]),
                    "absolute_difference": differences[column],
                }
                for column, stage in TABLE_4_STAGES.items()
            }
        return result

    def stage_table(self) -> tuple[tuple[str, ...], list[tuple]]:
        """(header, rows) of the per-emotion counts after each stage, with a total row, and for a KEMDy19 + KEMDy20
        merge each Table 4 column right after the stage it counts: what `str(report)` and the model card render."""
        columns = []
        for stage in PAPER_STAGES:
            columns.append((stage, self.stages[stage]))
            columns += [
                (f"Table 4 {column}", TABLE_4[column])
                for column, counted in TABLE_4_STAGES.items()
                if counted == stage and self.compares_to_table_4
            ]
        rows = [(label, *(counts[label] for _, counts in columns)) for label in EMOTION_LABELS]
        rows.append(("total", *(sum(counts.values()) for _, counts in columns)))
        return ("emotion", *(name for name, _ in columns)), rows

    def __str__(self) -> str:
        corpora = " + ".join(f"{report.corpus} ({report.options_text})" for report in self.loads)
        split = (
            "random utterances stratified by label"
            if self.split_by == "random"
            else "whole sessions held out (speaker-independent)"
        )
        title = f"{corpora}: rows per emotion"
        footer = f"split: {split}, validation_fraction={self.validation_fraction}, seed={self.seed}"
        if self.compares_to_table_4:
            title += " after each stage, beside the paper's Table 4"
            differences = ", ".join(f"{column} {count}" for column, count in self.table_4_differences().items())
            footer += f"\nsum of |this run - Table 4| over emotions: {differences}"
        else:
            title += " after each stage"
        return text_table(title, *self.stage_table()) + "\n" + footer


def _label_counts(indices: list[int], labels: list[int]) -> dict[str, int]:
    counts = Counter(labels[index] for index in indices)
    return {name: counts[label] for label, name in enumerate(EMOTION_LABELS)}


def _downsample_neutral(indices: list[int], labels: list[int], rng: np.random.Generator) -> list[int]:
    """Keep a random subset of the neutral rows as large as the largest other class (paper 5.1)."""
    neutral = EMOTION_LABELS.index("neutral")
    neutral_rows = [index for index in indices if labels[index] == neutral]
    others = Counter(labels[index] for index in indices if labels[index] != neutral)
    target = max(others.values(), default=0)
    if len(neutral_rows) <= target:
        return indices
    kept = set(rng.choice(neutral_rows, size=target, replace=False).tolist())
    return [index for index in indices if labels[index] != neutral or index in kept]


def _stratified_validation(
    indices: list[int], labels: list[int], fraction: float, rng: np.random.Generator
) -> set[int]:
    """`round(fraction * n)` random rows of each class of n rows: every class is split to within one row."""
    validation = set()
    for label in range(len(EMOTION_LABELS)):
        rows = [index for index in indices if labels[index] == label]
        validation.update(rng.permutation(rows)[: round(fraction * len(rows))].tolist())
    return validation


def _session_validation(
    indices: list[int], corpora: list[str], sessions: list[str | None], fraction: float, rng: np.random.Generator
) -> set[int]:
    """Every row of `round(fraction * n)` random sessions (at least one, never all), so no speaker is on both sides.

    A session is (corpus, session): KEMDy19 Sess01 and KEMDy20 Sess01 are different people.
    """
    if any(sessions[index] is None for index in indices):
        raise ValueError("split_by='session' needs session ids; AI-Hub 263 has none (split_by='random' works)")
    groups = sorted({(corpora[index], sessions[index]) for index in indices})
    if len(groups) < 2:
        raise ValueError(f"split_by='session' needs at least 2 sessions, found {len(groups)}")
    count = min(len(groups) - 1, max(1, round(fraction * len(groups))))
    held_out = {groups[group] for group in rng.permutation(len(groups))[:count]}
    return {index for index in indices if (corpora[index], sessions[index]) in held_out}


def build_paper_dataset(
    kemdy19_dir: str | os.PathLike | None = None,
    kemdy20_dir: str | os.PathLike | None = None,
    aihub_dir: str | os.PathLike | None = None,
    *,
    seed: int = 42,
    validation_fraction: float = 0.2,
    split_by: str = "random",
    multi_label: str = "drop",
    kemdy19_rows: str = "speaker",
    label_source: str = "situation",
    return_report: bool = False,
) -> DatasetDict | tuple[DatasetDict, PaperDatasetReport]:
    """The paper's data (Section 5.1) as `DatasetDict(train, validation)`; its report holds the per-stage counts,
    beside Table 4's for a KEMDy19 + KEMDy20 merge.

    Steps: load and merge KEMDy19 + KEMDy20 (either alone works), or AI-Hub 263 on its own (the paper's second,
    separate experiment); drop rows whose cleaned text already occurred (the first, in load order, stays); drop texts
    with fewer than 2 Hangul syllables; randomly downsample neutral to the size of the largest other class; split.

    Args:
        kemdy19_dir, kemdy20_dir, aihub_dir: corpus roots, see `load_kemdy19`, `load_kemdy20`, `load_aihub263`.
        seed: seeds the neutral downsampling and the split; the same seed gives the same split.
        validation_fraction: share of rows held out (the paper's 8:2 is 0.2).
        split_by: `"random"` (a random 8:2 split like the paper's, stratified by our choice): each class split to
            within one row of the fraction. `"session"` (speaker-independent, KEMDy only): whole sessions held out,
            about `validation_fraction` of them.
        multi_label: KEMDy tie policy, see `load_kemdy19`.
        kemdy19_rows: KEMDy19 row selection (`KEMDY19_ROWS`), see `load_kemdy19`. Table 4 cannot be reached with
            speaker labels, and the report shows how close each selection comes.
        label_source: AI-Hub 263 label, see `load_aihub263`.
        return_report: also return the `PaperDatasetReport` (counts per stage and the load reports).
    """
    check_choice("split_by", split_by, SPLITS)
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    if aihub_dir is not None and (kemdy19_dir is not None or kemdy20_dir is not None):
        raise ValueError("AI-Hub 263 is the paper's separate experiment: pass aihub_dir alone, or the KEMDy dirs")
    loaded = []
    if kemdy19_dir is not None:
        loaded.append(load_kemdy19(kemdy19_dir, multi_label, rows=kemdy19_rows, return_report=True))
    if kemdy20_dir is not None:
        loaded.append(load_kemdy20(kemdy20_dir, multi_label, return_report=True))
    if aihub_dir is not None:
        loaded.append(load_aihub263(aihub_dir, label_source, return_report=True))
    if not loaded:
        raise ValueError("pass kemdy19_dir and/or kemdy20_dir, or aihub_dir")

    merged = concatenate_datasets([dataset for dataset, _ in loaded])
    columns = merged.select_columns(["text", "label", "corpus", "session"]).to_dict()
    texts, labels = columns["text"], columns["label"]
    first_row_of_text = {}
    for index, text in enumerate(texts):
        first_row_of_text.setdefault(text, index)
    deduplicated = list(first_row_of_text.values())
    long_enough = [index for index in deduplicated if count_hangul_syllables(texts[index]) >= 2]
    rng = np.random.default_rng(seed)
    used = _downsample_neutral(long_enough, labels, rng)
    if split_by == "random":
        held_out = _stratified_validation(used, labels, validation_fraction, rng)
    else:
        held_out = _session_validation(used, columns["corpus"], columns["session"], validation_fraction, rng)
    train = [index for index in used if index not in held_out]
    validation = [index for index in used if index in held_out]

    stages = (range(len(texts)), deduplicated, long_enough, used, train, validation)
    report = PaperDatasetReport(
        loads=[load_report for _, load_report in loaded],
        stages={stage: _label_counts(indices, labels) for stage, indices in zip(PAPER_STAGES, stages)},
        split_by=split_by,
        seed=seed,
        validation_fraction=validation_fraction,
    )
    splits = DatasetDict(train=merged.select(train), validation=merged.select(validation))
    return (splits, report) if return_report else splits


def _session_keys(rows: Dataset) -> list[tuple[str, str | None]]:
    """(corpus, session) of every row: KEMDy19 Sess01 and KEMDy20 Sess01 are different people."""
    columns = rows.select_columns(["corpus", "session"]).to_dict()
    return list(zip(columns["corpus"], columns["session"]))


def session_folds(rows: Dataset, folds: int, seed: int = 42) -> list[list[int]]:
    """The validation rows of each fold of a K-fold cross-validation grouped by (corpus, session).

    Every session lands in exactly one fold, so no speaker is ever on both sides of a fold. Sessions are shuffled
    by `seed`, then dealt largest first to the fold with the fewest rows so far, which keeps the folds' sizes close.
    """
    keys = _session_keys(rows)
    if any(session is None for _, session in keys):
        raise ValueError("session folds need session ids; AI-Hub 263 rows have none (use a random split)")
    sizes = Counter(keys)
    if not 2 <= folds <= len(sizes):
        raise ValueError(f"folds must be between 2 and the number of sessions ({len(sizes)}), got {folds}")
    shuffled = [sorted(sizes)[index] for index in np.random.default_rng(seed).permutation(len(sizes))]
    fold_of, fold_sizes = {}, [0] * folds
    for key in sorted(shuffled, key=lambda key: -sizes[key]):  # stable: equal sizes keep the shuffled order
        fold_of[key] = fold_sizes.index(min(fold_sizes))
        fold_sizes[fold_of[key]] += sizes[key]
    return [[index for index, key in enumerate(keys) if fold_of[key] == fold] for fold in range(folds)]


def selection_split(
    rows: Dataset, train: list[int], split_by: str, fraction: float = 0.1, seed: int = 42
) -> tuple[list[int], list[int]]:
    """Split training rows `train` into (fit, selection): the selection rows are held out of fitting for early
    stopping and model choice, so the validation rows are never used to choose anything.

    `split_by` as in `build_paper_dataset`: `"random"` takes a stratified `fraction` of the rows, `"session"` whole
    sessions (about `fraction` of them, at least one), so a selection session is never also fitted on.
    """
    check_choice("split_by", split_by, SPLITS)
    rng = np.random.default_rng(seed)
    if split_by == "random":
        held_out = _stratified_validation(train, rows["label"], fraction, rng)
        if not held_out:
            raise ValueError(f"a selection fraction of {fraction} holds out no row of {len(train)}: raise it")
    else:
        keys = _session_keys(rows)
        corpora, sessions = [corpus for corpus, _ in keys], [session for _, session in keys]
        held_out = _session_validation(train, corpora, sessions, fraction, rng)
    return [index for index in train if index not in held_out], [index for index in train if index in held_out]
