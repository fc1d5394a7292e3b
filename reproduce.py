#!/usr/bin/env python
"""Run the paper's model comparison (Table 5 on KEMDy19 + KEMDy20, Table 6 on AI-Hub 263) in one command.

Every model of `modeling_hyfuser.TRAINABLE_MODELS` trains on the same cached features (the frozen backbones run once
for all models, folds and seeds) with the paper's global batch of 32 however many processes run; every model of
`COMPOSED_MODELS` is evaluated from two trained members' probabilities without training of its own, its second
member trained from a seed of its own. The linear probes of `PROBE_MODELS`, the floor the others should reach, are
fitted on the pooled features without the `Trainer`, once per split (they draw no random numbers). Each finished run is written to `output_dir/runs/`, so a killed run resumes
where it stopped, and a rerun into the same folder with any setting that changes a result is refused.

At the end `output_dir` receives `results.json` (every run's metrics, per-class recall, confusion matrix and learning
curve; per model the summary, the collapsed runs and HyFusER paired against it), `results.md` (the protocol and the
tables, next to the paper's numbers), `comparison.png` (Fig. 8), `scaling.png` (Fig. 4), one `confusion_<model>.png`
per model (Fig. 7), and the reproduction record: `env.json` (code, packages, machine, command), `folds.json` (the
row ids of every split) and `predictions/<run>.csv` (each run's validation probabilities).

    # the paper's random 8:2 split, every model, one seed, on all local GPUs
    accelerate launch reproduce.py --dataset kemdy --kemdy19_dir KEMDy19 --kemdy20_dir KEMDy20_v1_1 \
        --output_dir outputs/comparison-kemdy

    # speaker-independent: 5-fold cross-validation over whole sessions
    accelerate launch reproduce.py ... --protocol session_cv --folds 5

    # results.md and the figures again, from results.json alone
    python reproduce.py --render outputs/comparison-kemdy

By default (`--selection held_out`) a model-selection set is held out of each split's training rows (whole sessions
under session_cv): early stopping, the restored checkpoint and the weighted ensemble's weight are chosen on it, and
the validation rows are only ever scored. `--selection validation` chooses them on the scored validation rows, as
the paper did: optimistic, and labelled so in results.md. The runs are planned and stored by `hyfuser/runs.py`, made
by `hyfuser/reproduction.py` and reported by `hyfuser/comparison.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hyfuser.reproduction import render_directory, run_comparison
from hyfuser.run_setup import setup_logging
from hyfuser.runs import parse_arguments


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args, training_args = parse_arguments(argv)
    setup_logging(training_args)
    if args.render:
        render_directory(Path(args.render))
    else:
        run_comparison(args, training_args, command=["reproduce.py", *argv])


if __name__ == "__main__":
    main()
