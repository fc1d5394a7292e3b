"""HyFusER's web demo, laid out as a Hugging Face Space runs it: record or upload a clip, type its Korean transcript,
and see the seven emotions of the fused prediction and of each direction alone (the paper's Table 2).

    python app.py --model outputs/hyfuser-kemdy   # a trained directory or a Hub repo id
    python app.py                                 # demo_output/, which `make demo` writes

Every prediction goes through the project's `pipeline` (`pipeline_hyfuser.HyFusERPipeline`); the app adds no
inference of its own. The page's examples are held-out items of the generated demo corpus, written under
--cache_dir on first start if they are missing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path

# Gradio reads this when it is imported: no usage reports and no version check, so the app runs offline.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr
from transformers import Pipeline, pipeline

from arguments_hyfuser import CorpusArguments
from configuration_hyfuser import EMOTION_LABELS
from data_hyfuser import load_kemdy20
from demo_hyfuser import prepare_demo

DEMO_MODEL_DIR = Path(__file__).resolve().parent / "demo_output"
"""What `make demo` (`train.py --dataset demo`) writes, served when no model is named."""

MODEL_VARIABLE = "HYFUSER_MODEL"
"""The model when --model is not given: how a Space, which runs `python app.py` bare, names its model."""

MISSING_DEMO_MODEL = (
    f"No model to serve: there is no {DEMO_MODEL_DIR.name}/ next to app.py. Run `make demo` first (it trains the "
    f"demo model there), or start the app with `python app.py --model DIR_OR_HUB_ID`."
)

THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
"""Gradio's default look with the system's fonts: its own fonts come from Google Fonts, which an offline page lacks."""


def load_classifier(model: str | None) -> tuple[Pipeline | None, str | None]:
    """(the pipeline serving `model`, None), or (None, why there is none): the page shows that message instead of
    failing to start, so a Space with a wrong model id says what is wrong."""
    if model is None:
        if not DEMO_MODEL_DIR.is_dir():
            return None, MISSING_DEMO_MODEL
        model = str(DEMO_MODEL_DIR)
    try:
        return pipeline(model=model, trust_remote_code=True), None
    except (OSError, ValueError) as error:
        return None, f"Cannot load the model {model!r}: {error}"


def predict(
    classifier: Pipeline | None, load_error: str | None, text: str, audio: str | None
) -> tuple[dict[str, float], dict[str, float], dict[str, float], str]:
    """The pipeline's prediction for one (transcript, clip path) pair, as the page shows it: {emotion: probability}
    for the fused prediction, the text-centric and the speech-centric head, then a table of the exact scores with
    the time the pipeline call took. Bad input raises `gr.Error` with the pipeline's own message."""
    if classifier is None:
        raise gr.Error(load_error)
    if audio is None:
        raise gr.Error("No audio: record or upload a clip (wav, flac, ogg or mp3).")
    start = time.perf_counter()
    try:
        emotions = classifier({"text": text, "audio": audio}, return_modalities=True)
    except ValueError as error:
        raise gr.Error(str(error)) from error
    seconds = time.perf_counter() - start

    fused, text_centric, speech_centric = (
        {emotion["label"]: emotion[key] for emotion in emotions} for key in ("score", "text_score", "speech_score")
    )
    header = ["| emotion | fused | text-centric | speech-centric |", "| --- | ---: | ---: | ---: |"]
    rows = [
        f"| {label} | {fused[label]:.4f} | {text_centric[label]:.4f} | {speech_centric[label]:.4f} |"
        for label in fused
    ]
    table = "\n".join([*header, *rows, "", f"Predicted in {seconds:.3f} s."])
    return fused, text_centric, speech_centric, table


def demo_examples(cache_dir: str | os.PathLike) -> list[list[str]]:
    """[clip path, transcript] of one held-out demo item per emotion whose text and voice both carry it, generating
    the demo corpus under `cache_dir/demo` (where `train.py --dataset demo` keeps it) if it is not there yet."""
    demo = prepare_demo(Path(cache_dir) / "demo")
    holdout = load_kemdy20(demo.holdout_dir)
    both_cued = {utterance.segment_id for utterance in demo.holdout if utterance.cue == "both"}
    names = holdout.features["label"].names
    examples = {}
    for segment_id, label, text, audio in zip(holdout["id"], holdout["label"], holdout["text"], holdout["audio"]):
        if segment_id in both_cued:
            examples.setdefault(names[label], [audio, text])
    return [examples[emotion] for emotion in EMOTION_LABELS if emotion in examples]


def build_app(classifier: Pipeline | None, load_error: str | None, examples: list[list[str]]) -> gr.Blocks:
    with gr.Blocks(title="HyFusER emotion recognition") as app:
        gr.Markdown(
            "# HyFusER: Korean text + speech emotion recognition\n"
            "Record or upload a clip, type what is said, and press **Predict**. The fused prediction averages the "
            "text-centric and the speech-centric head (Eq. 9); each head is shown alone too, as in Table 2."
        )
        if load_error:
            gr.Markdown(f"**{load_error}**", elem_id="load-error")
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(
                    sources=["upload", "microphone"],
                    type="filepath",
                    label="Clip (wav, flac, ogg, mp3)",
                    elem_id="clip",
                )
                text = gr.Textbox(label="Korean transcript", lines=2, elem_id="transcript")
                submit = gr.Button("Predict", variant="primary", elem_id="predict")
                if examples:
                    gr.Examples(
                        examples,
                        inputs=[audio, text],
                        label="Held-out items of the generated demo corpus",
                        elem_id="examples",
                    )
            with gr.Column():
                fused = gr.Label(num_top_classes=len(EMOTION_LABELS), label="Fused prediction", elem_id="fused")
                with gr.Row():
                    text_centric = gr.Label(num_top_classes=3, label="Text-centric head", elem_id="text-centric")
                    speech_centric = gr.Label(num_top_classes=3, label="Speech-centric head", elem_id="speech-centric")
                scores = gr.Markdown(elem_id="scores")
        submit.click(
            partial(predict, classifier, load_error),
            inputs=[text, audio],
            outputs=[fused, text_centric, speech_centric, scores],
            api_name="predict",
        )
    return app


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        default=os.environ.get(MODEL_VARIABLE),
        help=f"A trained directory or Hub repo id (default: ${MODEL_VARIABLE}, else {DEMO_MODEL_DIR.name}/).",
    )
    parser.add_argument(
        "--cache_dir",
        default=CorpusArguments.cache_dir,
        help="Where the generated demo corpus lives (its held-out items are the examples), as in train.py.",
    )
    parser.add_argument("--host", default=None, help="Address to listen on (default: Gradio's, 127.0.0.1).")
    parser.add_argument("--port", type=int, default=None, help="Port to listen on (default: Gradio's, 7860).")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    classifier, load_error = load_classifier(args.model)
    if load_error:
        print(load_error, file=sys.stderr)
    app = build_app(classifier, load_error, demo_examples(args.cache_dir))
    app.launch(server_name=args.host, server_port=args.port, share=False, theme=THEME)


if __name__ == "__main__":
    main()
