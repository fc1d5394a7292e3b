"""The web demo's timeline of a clip longer than one utterance (app.py): when a clip gets one, what the page says about
where its segments come from, and the pipeline's records as the page shows them (a PNG plot and a table)."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

import soundfile
from PIL import Image

from hyfuser.tables import markdown_table
from timeline_hyfuser import MAX_SEGMENT_SECONDS, plot_timeline

TABLE_COLUMNS = ("start", "end", "speaker", "text", "label", "score", "reason")
"""The page's timeline table: a record's times (s), speaker, text, top emotion and its score, or why it has none."""


def longer_than_one_utterance(clip: str | os.PathLike) -> bool:
    """Whether `clip` runs past `MAX_SEGMENT_SECONDS`, the longest segment the timeline classifies whole. A file
    libsndfile cannot read is not: the pipeline then says what is wrong with it, as for any clip."""
    try:
        return soundfile.info(os.fspath(clip)).duration > MAX_SEGMENT_SECONDS
    except (RuntimeError, OSError):
        return False


def segments_note(asr_model: str | None) -> str:
    """What the page says about timelines, naming the served model's speech recognizer (`processor.asr_model`)."""
    recognizer = (
        f"without one, from what the model's speech recognizer (`{asr_model}`) hears, which must be a local directory "
        "or in the Hugging Face cache when the server is offline"
        if asr_model
        else "this model has no speech recognizer, so such a clip needs one"
    )
    return (
        f"A clip longer than one utterance ({MAX_SEGMENT_SECONDS:g} s), or one with a transcript file, gets a "
        f"**timeline**: an emotion per segment, as a plot and a table. The segments come from the transcript file; "
        f"{recognizer}."
    )


def timeline_image(records: Sequence[Mapping[str, Any]]) -> Image.Image:
    """`plot_timeline`'s PNG of `records`, as an image held in memory (the page copies it into its own cache)."""
    png = io.BytesIO()
    plot_timeline(records, png)
    png.seek(0)
    with Image.open(png) as image:
        image.load()
        return image.copy()


def timeline_table(records: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table of `records`, one row each, in `TABLE_COLUMNS`: times to the millisecond, the score to four
    decimals, empty cells where a record has no speaker, no label or no reason."""

    def cell(record: Mapping[str, Any], column: str) -> str:
        value = record.get(column)
        if value is None:
            return ""
        if column in ("start", "end"):
            return f"{value:.3f}"
        if column == "score":
            return f"{value:.4f}"
        return str(value).replace("|", "\\|")

    rows = [[cell(record, column) for column in TABLE_COLUMNS] for record in records]
    return markdown_table(TABLE_COLUMNS, rows, right_aligned=(0, 1, 5))
