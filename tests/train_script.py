"""`train.py` run in process: its namespace, executed once under the module name `train`.

The script is never imported as a module (nothing in the repository does that); the tests execute it with `runpy`
so that they can call its argument parsing and `main()` in process, and so that mutation testing, which names
functions by their module, can tell which tests reach them.
"""

import runpy
from pathlib import Path

TRAIN_SCRIPT = Path(__file__).resolve().parent.parent / "train.py"

TRAIN = runpy.run_path(str(TRAIN_SCRIPT), run_name="train")
"""The script's globals: `TRAIN["parse_arguments"]`, `TRAIN["main"]`, ..."""


def run_main(arguments: list[str]) -> None:
    """`python train.py <arguments>`, in this process."""
    import sys

    from pytest import MonkeyPatch

    with MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["train.py", *arguments])
        TRAIN["main"]()
