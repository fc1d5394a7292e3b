"""HyFusER's web demo, laid out as a Hugging Face Space runs it: record or upload a clip, type its Korean transcript,
and see the seven emotions of the fused prediction and of each direction alone (the paper's Table 2). A clip longer
than one utterance, or one with an SRT or WebVTT transcript file, gets the pipeline's timeline instead: a plot and a
table of an emotion per segment (docs/timeline.md).

    python app.py --model outputs/hyfuser-kemdy   # a trained directory or a Hub repo id
    python app.py                                 # demo_output/, which `make demo` writes

Every prediction goes through the project's `pipeline` (`pipeline_hyfuser.HyFusERPipeline`); the app adds no
inference of its own, only FFmpeg's decoding of the formats libsndfile cannot read (m4a and aac, which phones record).
The page names the served model and its training data (from its model card), and says so plainly when it is the
synthetic demo model. Its examples are held-out items of the generated demo corpus, written under --cache_dir on first
start if they are missing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

# Gradio reads this when it is imported: no usage reports and no version check, so the app runs offline.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr
from huggingface_hub import ModelCard
from huggingface_hub.errors import EntryNotFoundError
from PIL.Image import Image
from transformers import Pipeline, pipeline

from configuration_hyfuser import EMOTION_LABELS
from hyfuser.app_timeline import longer_than_one_utterance, segments_note, timeline_image, timeline_table
from hyfuser.constants import CACHE_DIR, DEMO_DATASET
from hyfuser.corpora import load_kemdy20
from hyfuser.demo import cached_demo
from hyfuser.tables import markdown_table

DEMO_MODEL_DIR = Path(__file__).resolve().parent / "demo_output"
"""What `make demo` (`train.py --dataset demo`) writes, served when no model is named."""

MODEL_VARIABLE = "HYFUSER_MODEL"
"""The model when --model is not given: how a Space, which runs `python app.py` bare, names its model."""

MISSING_DEMO_MODEL = (
    f"No model to serve: there is no {DEMO_MODEL_DIR.name}/ next to app.py. Run `make demo` first (it trains the "
    f"demo model there), or start the app with `python app.py --model DIR_OR_HUB_ID`."
)

DEMO_MODEL_NOTICE = (
    "**This is the synthetic demo model** (`make demo`): tiny random backbones trained on generated Korean sentences "
    "read by synthetic voices. Its predictions show that the app works end to end and say nothing about anyone's "
    "emotions."
)

FFMPEG_SUFFIXES = (".m4a", ".aac")
"""Uploads that FFmpeg decodes before the pipeline sees them: AAC (phones' voice memos), which libsndfile cannot
read."""

AUDIO_FORMATS = "wav, flac, ogg, mp3, m4a"
"""What the page offers: libsndfile's formats, which the pipeline reads, and AAC through FFmpeg."""

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


def model_card(model: str) -> ModelCard | None:
    """The card (README.md) of a model directory or Hub repo, or None where it has none."""
    try:
        return ModelCard.load(Path(model) / "README.md" if Path(model).is_dir() else model)
    except (OSError, ValueError, EntryNotFoundError):
        return None


def model_description(model: str, classifier: Pipeline) -> tuple[str, bool]:
    """(a Markdown line naming the served `model` as the user named it, what its card says it was trained on, and its
    emotions; whether it is the synthetic demo model). `train.py` writes the training data into the card's evaluation
    results (model-index), so it travels with the directory to wherever it is saved or uploaded."""
    id2label = classifier.model.config.id2label
    emotions = ", ".join(id2label[index] for index in sorted(id2label))
    card = model_card(classifier.model.name_or_path)
    results = (card.data.eval_results or []) if card is not None else []
    trained_on = f"trained on {results[0].dataset_name}" if results else "its model card does not say what data"
    is_demo = any(result.dataset_type == DEMO_DATASET for result in results)
    return f"**Model:** `{model}` ({trained_on}); emotions: {emotions}.", is_demo


def decode_with_ffmpeg(path: str, decoded: Path) -> Path:
    """`path` decoded by FFmpeg into `decoded`, a 32-bit float wav at the clip's own rate and channels: the pipeline
    then averages and resamples it as it does any file."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise ValueError(f"audio file {path!r} is AAC, which needs FFmpeg, and this server has none")
    command = [ffmpeg, "-nostdin", "-loglevel", "error", "-i", path, "-map", "0:a:0", "-c:a", "pcm_f32le"]
    result = subprocess.run([*command, str(decoded)], check=False, capture_output=True, text=True)
    if "matches no streams" in result.stderr:  # FFmpeg's words for "-map 0:a:0" in a file without audio
        raise ValueError(f"audio file {path!r} has no audio stream")
    if result.returncode != 0:
        reason = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.returncode}"
        raise ValueError(f"audio file {path!r} cannot be read as audio: {reason}")
    return decoded


def named_as_uploaded(message: str, paths: list[str | os.PathLike], name: str) -> str:
    """`message` with each of the server's `paths` for the clip (the upload in Gradio's folder, its decoded copy)
    replaced by the file's `name`, so that the page shows the user their own file and nothing of the server's disk."""
    for path in paths:
        message = message.replace(os.fspath(path), name)
    return message


def cleared_outputs() -> tuple[None, None, None, str, None, str]:
    """Every output emptied before a prediction, so a failed one leaves no earlier numbers beside the new input."""
    return None, None, None, "", None, ""


@contextmanager
def readable_clip(audio: str, transcript: str | None) -> Iterator[str]:
    """The uploaded clip as a file the pipeline reads (AAC decoded by FFmpeg into a scratch folder, removed after
    the block). A ValueError in the block becomes a `gr.Error` with its message, naming the clip and the transcript
    by their file names (an upload's own name), never by their paths on the server."""
    with tempfile.TemporaryDirectory(prefix="hyfuser-app-") as scratch:
        decoded = Path(scratch) / f"{Path(audio).stem}.wav"
        try:
            yield decode_with_ffmpeg(audio, decoded) if Path(audio).suffix.lower() in FFMPEG_SUFFIXES else audio
        except ValueError as error:
            message = named_as_uploaded(str(error), [audio, decoded], Path(audio).name)
            if transcript is not None:
                message = named_as_uploaded(message, [transcript], Path(transcript).name)
            raise gr.Error(message) from error


def predict_timeline(classifier: Pipeline, clip: str, transcript: str | None) -> list[dict]:
    """The pipeline's timeline of `clip`: its segments are the transcript file's cues, or without one what the
    model's speech recognizer hears, and an error then says that a transcript file avoids the recognizer."""
    if transcript is not None:
        return classifier({"audio": clip, "transcript": transcript})
    try:
        return classifier({"audio": clip}, timeline=True)
    except ValueError as error:
        raise ValueError(
            "This clip is longer than one utterance and came without a transcript file (.srt or .vtt), so the "
            f"model's speech recognizer was to find its segments; upload its transcript to give them. {error}"
        ) from error


def predict(
    classifier: Pipeline | None, load_error: str | None, text: str, audio: str | None, transcript: str | None = None
) -> tuple[dict[str, float] | None, dict[str, float] | None, dict[str, float] | None, str, Image | None, str]:
    """The page's outputs for a clip path, its typed transcript and an optional transcript file (SRT or WebVTT).

    One utterance (a clip of at most `MAX_SEGMENT_SECONDS` without a transcript file): {emotion: probability} for the
    fused prediction, the text-centric and the speech-centric head, a table of the exact scores with the time the
    prediction took, and no timeline (None, ""). Otherwise the pipeline's timeline: no emotion blocks, a line with
    the segment count and the time, then the timeline's plot and table. Bad input raises `gr.Error` with the
    pipeline's own message (`readable_clip`)."""
    if classifier is None:
        raise gr.Error(load_error)
    if audio is None:
        raise gr.Error(f"No audio: record or upload a clip ({AUDIO_FORMATS}).")
    start = time.perf_counter()
    with readable_clip(audio, transcript) as clip:
        if transcript is not None or longer_than_one_utterance(clip):
            records = predict_timeline(classifier, clip, transcript)
        else:
            records, emotions = None, classifier({"text": text, "audio": clip}, return_modalities=True)
    seconds = time.perf_counter() - start
    if records is not None:
        labelled = sum(record["label"] is not None for record in records)
        summary = f"Timeline of {len(records)} segments ({labelled} with an emotion) in {seconds:.3f} s."
        return None, None, None, summary, timeline_image(records), timeline_table(records)

    fused, text_centric, speech_centric = (
        {emotion["label"]: emotion[key] for emotion in emotions} for key in ("score", "text_score", "speech_score")
    )
    rows = [[label, *(f"{scores[label]:.4f}" for scores in (fused, text_centric, speech_centric))] for label in fused]
    score_table = markdown_table(["emotion", "fused", "text-centric", "speech-centric"], rows, right_aligned=(1, 2, 3))
    table = f"{score_table}\n\nPredicted in {seconds:.3f} s."
    return fused, text_centric, speech_centric, table, None, ""


def demo_examples(cache_dir: str | os.PathLike) -> list[list[str]]:
    """[clip path, transcript] of one held-out demo item per emotion whose text and voice both carry it, generating
    the demo corpus under `cache_dir/demo` (where `train.py --dataset demo` keeps it) if it is not there yet."""
    demo = cached_demo(cache_dir)
    holdout = load_kemdy20(demo.holdout_dir)
    both_cued = {utterance.segment_id for utterance in demo.holdout if utterance.cue == "both"}
    names = holdout.features["label"].names
    examples = {}
    for segment_id, label, text, audio in zip(holdout["id"], holdout["label"], holdout["text"], holdout["audio"]):
        if segment_id in both_cued:
            examples.setdefault(names[label], [audio, text])
    return [examples[emotion] for emotion in EMOTION_LABELS if emotion in examples]


def build_app(classifier: Pipeline | None, load_error: str | None, examples: list[list[str]], model: str) -> gr.Blocks:
    """The page: the served `model` (as the user named it) and its emotions, inputs, examples and outputs."""
    with gr.Blocks(title="HyFusER emotion recognition") as app:
        gr.Markdown(
            "# HyFusER: Korean text + speech emotion recognition\n"
            "Record or upload a clip, type what is said, and press **Predict**. The fused prediction averages the "
            "text-centric and the speech-centric head (Eq. 9); each head is shown alone too, as in Table 2."
        )
        if load_error:
            gr.Markdown(f"**{load_error}**", elem_id="load-error")
        else:
            description, is_demo = model_description(model, classifier)
            gr.Markdown(description, elem_id="model")
            if is_demo:
                gr.Markdown(DEMO_MODEL_NOTICE, elem_id="demo-model")
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(
                    sources=["upload", "microphone"],
                    type="filepath",
                    label=f"Clip ({AUDIO_FORMATS})",
                    elem_id="clip",
                )
                text = gr.Textbox(label="Korean transcript", lines=2, elem_id="transcript")
                transcript = gr.File(
                    file_types=[".srt", ".vtt"],
                    label="Transcript file with times (.srt or .vtt), for a longer clip",
                    elem_id="transcript-file",
                )
                if classifier is not None:
                    gr.Markdown(segments_note(classifier.processor.asr_model), elem_id="segments-note")
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
        with gr.Column(visible=False) as timeline:
            plot = gr.Image(type="pil", label="Timeline", format="png", elem_id="timeline-plot")
            table = gr.Markdown(max_height=480, elem_id="timeline-table")
        outputs = [fused, text_centric, speech_centric, scores, plot, table]
        submit.click(cleared_outputs, outputs=outputs, queue=False, api_visibility="private").then(
            partial(predict, classifier, load_error), inputs=[text, audio, transcript], outputs=outputs,
            api_name="predict",
        ).then(
            lambda shown: gr.Column(visible=bool(shown)), inputs=table, outputs=timeline, queue=False,
            api_visibility="private",
        )  # fmt: skip
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
        default=CACHE_DIR,
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
    model = args.model or f"{DEMO_MODEL_DIR.name}/"
    app = build_app(classifier, load_error, demo_examples(args.cache_dir), model)
    app.launch(server_name=args.host, server_port=args.port, share=False, theme=THEME)


if __name__ == "__main__":
    main()
