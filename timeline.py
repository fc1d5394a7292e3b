"""Emotion over a whole recording: one prediction per segment, written as JSON Lines, CSV and a PNG plot.

    python timeline.py outputs/hyfuser-kemdy session.wav --transcript session.srt --output_dir timeline/
    python timeline.py outputs/hyfuser-kemdy session.wav --output_dir timeline/   # the recognizer's segments
    python timeline.py outputs/hyfuser-kemdy --kemdy20_dir KEMDy20_v1_1 --session Sess01 --output_dir replay/

The first two write `<stem>.timeline.jsonl`, `.csv` and `.png` (one row per speaker when the transcript names
speakers). The third replays a KEMDy20 session as one dialogue recording (`hyfuser.replay`) and compares the predicted
emotion with the annotated one utterance by utterance: it writes `Sess01.wav`, its timeline files and
`Sess01.comparison.csv`, and prints the accuracy per speaker. docs/timeline.md says more.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from transformers import pipeline

from hyfuser.replay import replay_session, write_timeline

logger = logging.getLogger(__name__)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("model_dir", help="a saved HyFusER directory (train.py's output_dir) or a Hub repo id")
    parser.add_argument(
        "audio", nargs="?", help="the recording (wav, flac, ogg, mp3: a file libsndfile reads); not with --kemdy20_dir"
    )
    parser.add_argument(
        "--transcript",
        help="an .srt or .vtt transcript of the recording (UTF-8; 'Name: ' or <v Name> names speakers); without it "
        "the model's speech recognizer (--asr_model) finds the segments",
    )
    parser.add_argument("--output_dir", required=True, help="where the timeline (and a replay's files) are written")
    parser.add_argument(
        "--asr_model", help="speech recognizer for a recording without transcript (default: the processor's)"
    )
    parser.add_argument("--batch_size", type=int, default=8, help="segments per batch through the backbones")
    parser.add_argument("--device", default="cpu", help="torch device to run on, e.g. cuda:0")
    parser.add_argument(
        "--kemdy20_dir", help="a KEMDy20 v1.1 root (docs/datasets.md): replay --session from it instead of AUDIO"
    )
    parser.add_argument("--session", help="the KEMDy20 session to replay, e.g. Sess01 (with --kemdy20_dir)")
    arguments = parser.parse_args(argv)
    if (arguments.kemdy20_dir is None) != (arguments.session is None):
        parser.error("--kemdy20_dir and --session go together")
    if (arguments.audio is None) == (arguments.kemdy20_dir is None):
        parser.error("give either AUDIO or --kemdy20_dir with --session")
    if arguments.kemdy20_dir is not None and (arguments.transcript or arguments.asr_model):
        parser.error("a KEMDy20 replay takes its segments from the corpus: no --transcript or --asr_model")
    if arguments.batch_size < 1:
        parser.error(f"--batch_size must be at least 1, got {arguments.batch_size}")
    return arguments


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    arguments = parse_arguments(argv)
    classifier = pipeline(model=arguments.model_dir, trust_remote_code=True, device=arguments.device)
    if arguments.kemdy20_dir is not None:
        accuracy = replay_session(
            classifier, arguments.kemdy20_dir, arguments.session, arguments.output_dir, arguments.batch_size
        )
        print(json.dumps(accuracy, indent=2, ensure_ascii=False))
        return
    options = {"batch_size": arguments.batch_size}
    if arguments.transcript is not None:
        records = classifier({"audio": arguments.audio, "transcript": arguments.transcript}, **options)
    else:
        records = classifier({"audio": arguments.audio}, timeline=True, asr_model=arguments.asr_model, **options)
    for path in write_timeline(records, arguments.output_dir, Path(arguments.audio).stem):
        logger.info(f"wrote {path}")


if __name__ == "__main__":
    main()
