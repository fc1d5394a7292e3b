"""Constants that commands and package modules share, in a module that imports nothing heavy: reading one costs no
torch, datasets or processor (`app.py` reads the cache directory, `hyfuser.arguments` the demo's cues)."""

from __future__ import annotations

import os

from huggingface_hub.constants import HF_HOME

CACHE_DIR = os.path.join(HF_HOME, "hyfuser")
"""The default `--cache_dir`: the feature cache (features/), ASR transcripts and the generated demo corpus (demo/)."""

DEMO_DATASET = "demo"
"""The `--dataset` of the generated demo corpus, and so the dataset type in the model card of `train.py --dataset demo`
(what `make demo` runs): how app.py knows that it serves the synthetic demo model, wherever that model was saved or
uploaded."""

DEMO_CUES: tuple[str, ...] = ("text", "speech", "both")
"""Which modality carries a demo item's emotion; the other one is uninformative, so no single modality suffices for
all."""

DEMO_CORPUS_CUES: tuple[str, ...] = ("mixed", *DEMO_CUES)
"""Demo corpus variants (`--demo_cue`): 'mixed' (the demo) cycles its items through `DEMO_CUES`; 'text', 'speech' or
'both' gives every item that one cue, e.g. 'text': the emotion is in the words only and every clip is the same
emotion-neutral whisper."""
