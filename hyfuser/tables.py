"""The one Markdown table renderer every report uses: the model card, the comparison's results.md and the web demo's
tables. It imports nothing, so the light web demo can use it too."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], right_aligned: Collection[int] = ()) -> str:
    """A Markdown table with `header` over `rows`, each cell as `str` writes it; the columns whose index is in
    `right_aligned` (numbers) are right-aligned."""
    rule = "|" + "".join(" ---: |" if index in right_aligned else " --- |" for index in range(len(header)))
    lines = ["| " + " | ".join(header) + " |", rule]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
