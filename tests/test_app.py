"""app.py, the Gradio web demo: its prediction function called directly, and the page used in a real browser.

The browser test starts `python app.py` on a free local port against a model that `train.py` trains here, and drives
Debian's Chromium (/usr/bin/chromium through /usr/bin/chromedriver; `.ci/run` installs both) with Selenium, as a
person would: upload a clip, type a transcript, press Predict, read the scores, then try an empty transcript; and
upload a three-minute dialogue with its SRT transcript and read its timeline table.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile
import test_timeline
import test_timeline_pipeline
import tomllib
from audio_files import write_tone
from corpora import write_kemdy19, write_kemdy20
from huggingface_hub import ModelCard
from packaging.requirements import Requirement
from PIL import Image
from test_train import OVERRIDES, run
from train_script import TRAIN
from transformers import pipeline

from configuration_hyfuser import EMOTION_LABELS
from hyfuser.arguments import CORPORA
from hyfuser.model_card import model_card_data
from timeline_hyfuser import MAX_SEGMENT_SECONDS, MIN_SEGMENT_SECONDS, Segment, plot_timeline

gr = pytest.importorskip("gradio", reason="the `app` extra is not installed: pip install -e '.[app]'")
import app

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
TRANSCRIPT = "아 진짜 너무 화가 나서 못 참겠어"
START_SECONDS = 900
"""How long app.py may take to answer: its start (imports, the model, the demo corpus it generates for the examples)
needs about 15 s of CPU, which a machine busy with other work stretches many times over."""
PAGE_SECONDS = 300
"""How long the page may take to show what a test waits for (a prediction needs well under a second of CPU)."""
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Asks the local app directly, whatever proxy the environment names."""
recording = test_timeline.recording  # the three-minute dialogue with known boundaries, built once per module
timestamped_asr_model = test_timeline_pipeline.timestamped_asr_model  # a tiny Whisper that gives timestamps


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_tone(tmp_path_factory.mktemp("clips") / "utterance.wav", seconds=1.0, frequency=180.0)


def required(reason: str) -> None:
    """Skip for want of a system tool, except in CI (`.ci/run` installs them), where that is a failure."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def ffmpeg() -> str:
    """The FFmpeg command line, which decodes m4a/aac uploads in the app and encodes them here."""
    if shutil.which("ffmpeg") is None:
        required("needs FFmpeg (apt install ffmpeg); .ci/run installs it")
    return shutil.which("ffmpeg")


def write_aac(ffmpeg: str, path: Path) -> Path:
    """A real AAC clip, as a phone's voice memo is (.m4a: in an MP4 container; .aac: raw ADTS), encoded by FFmpeg from
    a 44.1 kHz stereo tone."""
    tone = write_tone(path.with_suffix(".source.wav"), sampling_rate=44_100, seconds=1.0, frequency=200.0, channels=2)
    command = [ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-i", str(tone), "-c:a", "aac", "-b:a", "128k"]
    subprocess.run([*command, str(path)], check=True)
    return path


def decoded_by_torchcodec(path: Path):
    """`path` through torchcodec's decoder, the one a `datasets` Audio column yields: the decoded samples that an AAC
    clip's prediction is checked against, by another route than the app's FFmpeg command."""
    try:
        from torchcodec.decoders import AudioDecoder
    except (ImportError, RuntimeError, OSError) as error:
        required(f"needs torchcodec and the FFmpeg libraries: {error}")
    return AudioDecoder(str(path))


def markdown_rows(table: str) -> list[list[str]]:
    """The cells of each row of a Markdown table, after its header and rule."""
    rows = [line.strip().removeprefix("|").removesuffix("|").split("|") for line in table.splitlines()]
    return [[cell.strip() for cell in cells] for cells in rows if len(cells) > 1][2:]


def table_scores(table: str) -> dict[str, list[float]]:
    """{emotion: [fused, text-centric, speech-centric]} from the Markdown score table `predict` returns."""
    return {cells[0]: [float(cell) for cell in cells[1:]] for cells in markdown_rows(table)}


def dialogue_transcript(recording, path: Path) -> tuple[Path, list[Segment]]:
    """An SRT transcript of the dialogue with a backchannel ("네", shorter than MIN_SEGMENT_SECONDS) after its first
    utterance, which the timeline lists with the reason it has no label; and the transcript's segments."""
    first = recording.segments[0]
    backchannel = Segment(first.end + 0.05, round(first.end + 0.05 + MIN_SEGMENT_SECONDS / 2, 3), "네", first.speaker)
    segments = [first, backchannel, *recording.segments[1:]]
    return test_timeline.write_srt(path, segments), segments


def assert_rows_are_records(rows: list[list[str]], records: list[dict]) -> None:
    """The timeline table's rows (start, end, speaker, text, label, score, reason) are the pipeline's records, in
    order, to the table's millisecond and four decimals."""
    assert len(rows) == len(records)
    for row, record in zip(rows, records):
        start, end, speaker, text, label, score, reason = row
        assert [float(start), float(end)] == pytest.approx([record["start"], record["end"]], abs=5e-4)
        assert [speaker, text, label] == [record.get("speaker") or "", record["text"], record["label"] or ""]
        assert reason == record.get("reason", "")
        assert (score == "") if record["score"] is None else float(score) == pytest.approx(record["score"], abs=5e-5)


# --------------------------------------------------------------------------------------------------------------------
# The prediction function, called directly


def test_prediction_shows_the_pipeline_s_fused_and_per_head_scores(classifier, clip):
    fused, text_centric, speech_centric, table, plot, timeline = app.predict(classifier, None, TRANSCRIPT, str(clip))
    assert (plot, timeline) == (None, "")  # one utterance: no timeline

    emotions = classifier({"text": TRANSCRIPT, "audio": str(clip)}, return_modalities=True)
    assert fused == {emotion["label"]: emotion["score"] for emotion in emotions}
    assert text_centric == {emotion["label"]: emotion["text_score"] for emotion in emotions}
    assert speech_centric == {emotion["label"]: emotion["speech_score"] for emotion in emotions}
    assert text_centric != speech_centric  # two different heads, so a swap would show
    for label in EMOTION_LABELS:  # Eq. 9: the fusion averages the two heads' probabilities
        assert fused[label] == pytest.approx((text_centric[label] + speech_centric[label]) / 2, abs=1e-6)

    scores = table_scores(table)
    assert list(scores) == [emotion["label"] for emotion in emotions]  # most likely first
    for label, row in scores.items():
        assert row == pytest.approx([fused[label], text_centric[label], speech_centric[label]], abs=5e-5)
    assert "Predicted in " in table.splitlines()[-1]


@pytest.mark.parametrize("suffix", ["flac", "ogg", "mp3"])
def test_every_format_the_page_offers_is_read_by_the_pipeline(classifier, tmp_path, suffix):
    clip = write_tone(tmp_path / f"utterance.{suffix}", sampling_rate=44_100, seconds=0.8, frequency=200.0)
    fused, *_ = app.predict(classifier, None, TRANSCRIPT, str(clip))
    expected = classifier({"text": TRANSCRIPT, "audio": str(clip)})
    assert fused == {emotion["label"]: emotion["score"] for emotion in expected}


@pytest.mark.parametrize("suffix", ["m4a", "aac"])
def test_aac_clips_are_decoded_by_ffmpeg_and_predicted_as_the_pipeline_predicts_their_samples(
    classifier, ffmpeg, tmp_path, suffix
):
    clip = write_aac(ffmpeg, tmp_path / f"voice memo.{suffix}")
    with pytest.raises(ValueError, match="cannot be read as audio"):  # libsndfile's, hence the pipeline's, verdict
        classifier({"text": TRANSCRIPT, "audio": str(clip)})

    fused, text_centric, speech_centric, *_ = app.predict(classifier, None, TRANSCRIPT, str(clip))
    expected = classifier({"text": TRANSCRIPT, "audio": decoded_by_torchcodec(clip)}, return_modalities=True)
    for emotion in expected:
        shown = [fused[emotion["label"]], text_centric[emotion["label"]], speech_centric[emotion["label"]]]
        assert shown == pytest.approx([emotion["score"], emotion["text_score"], emotion["speech_score"]], abs=1e-5)


@pytest.mark.parametrize(
    "text, audio, message",
    [
        ("   ", "clip", "empty or whitespace-only text"),
        (TRANSCRIPT, None, "No audio: record or upload a clip"),
        (TRANSCRIPT, "empty.wav", "'empty.wav' has zero length"),
        (TRANSCRIPT, "silent nan.wav", "'silent nan.wav' contains NaN or inf samples"),
        (TRANSCRIPT, "corrupt.wav", "'corrupt.wav' cannot be read as audio"),
        (TRANSCRIPT, "missing.wav", "'missing.wav' does not exist"),
        (TRANSCRIPT, "no audio.m4a", "'no audio.m4a' has no audio stream"),
        (TRANSCRIPT, "corrupt.m4a", "'corrupt.m4a' cannot be read as audio: corrupt.m4a: Invalid data"),
        (TRANSCRIPT, "missing.m4a", "'missing.m4a' cannot be read as audio: missing.m4a: No such file"),
    ],
)
def test_bad_input_raises_the_pipeline_s_message_naming_the_file_not_its_server_path_and_the_next_input_still_works(
    classifier, clip, tmp_path, request, text, audio, message
):
    soundfile.write(tmp_path / "empty.wav", [], 16_000)
    soundfile.write(tmp_path / "silent nan.wav", [0.0, float("nan")] * 800, 16_000, subtype="FLOAT")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00not audio at all")
    (tmp_path / "corrupt.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A not audio at all")
    if audio and audio.endswith(".m4a"):
        ffmpeg = request.getfixturevalue("ffmpeg")
        nothing = [ffmpeg, "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc", "-t", "0", "-c:a", "aac"]
        subprocess.run([*nothing, str(tmp_path / "no audio.m4a")], check=True)  # a container without an audio stream
    audio = {"clip": str(clip), None: None}.get(audio, str(tmp_path / str(audio)))

    with pytest.raises(gr.Error, match=message) as error:
        app.predict(classifier, None, text, audio)
    assert "Traceback" not in error.value.message
    assert tempfile.gettempdir() not in error.value.message  # neither the upload's folder nor the decoded copy's
    fused, *_ = app.predict(classifier, None, TRANSCRIPT, str(clip))
    assert len(fused) == len(EMOTION_LABELS)


def test_a_long_clip_with_its_transcript_shows_the_pipeline_s_timeline_as_a_plot_and_a_table(
    classifier, recording, tmp_path
):
    transcript, segments = dialogue_transcript(recording, tmp_path / "dialogue.srt")
    assert soundfile.info(recording.native).duration > 170 and len(segments) == 99

    fused, text_centric, speech_centric, summary, plot, table = app.predict(
        classifier, None, "", str(recording.native), str(transcript)
    )
    records = classifier({"audio": str(recording.native), "transcript": str(transcript)})
    assert [record["label"] is None for record in records[:3]] == [False, True, False]  # the backchannel
    assert_rows_are_records(markdown_rows(table), records)
    assert (fused, text_centric, speech_centric) == (None, None, None)
    assert summary.startswith("Timeline of 99 segments (98 with an emotion) in ")
    plot_timeline(records, tmp_path / "expected.png")
    with Image.open(tmp_path / "expected.png") as expected:
        np.testing.assert_array_equal(np.asarray(plot), np.asarray(expected))


def test_a_short_clip_with_a_transcript_file_gets_a_timeline_too(classifier, recording, tmp_path):
    first = recording.segments[0]
    transcript = test_timeline.write_srt(tmp_path / "one.srt", [Segment(0.0, first.seconds, first.text)])
    *_, table = app.predict(classifier, None, "", str(recording.alone[0]), str(transcript))
    records = classifier({"audio": str(recording.alone[0]), "transcript": str(transcript)})
    assert_rows_are_records(markdown_rows(table), records)
    assert records[0]["label"] == classifier({"text": first.text, "audio": str(recording.alone[0])})[0]["label"]


def test_a_long_clip_without_transcript_is_cut_by_the_model_s_recognizer_or_asks_for_the_transcript(
    classifier, recording, timestamped_asr_model, monkeypatch, tmp_path
):
    assert soundfile.info(recording.native).duration > MAX_SEGMENT_SECONDS
    monkeypatch.setattr(classifier.processor, "asr_model", timestamped_asr_model)
    *_, table = app.predict(classifier, None, TRANSCRIPT, str(recording.native))
    records = classifier({"audio": str(recording.native)}, timeline=True)
    assert len(records) >= 6  # the tiny recognizer hears a few chunks in each 30 s window
    assert_rows_are_records(markdown_rows(table), records)

    monkeypatch.setattr(classifier.processor, "asr_model", str(tmp_path / "no-recognizer"))
    with pytest.raises(gr.Error, match=r"without a transcript file \(.srt or .vtt\).*cannot be loaded") as error:
        app.predict(classifier, None, TRANSCRIPT, str(recording.native))
    assert str(recording.native.parent) not in error.value.message


def test_a_bad_transcript_file_is_named_by_its_file_name(classifier, clip, tmp_path):
    transcript = tmp_path / "회의 bad.srt"
    transcript.write_text("1\n00:00:01,000 -> 00:00:02,000\n안녕\n", encoding="utf-8")
    with pytest.raises(gr.Error, match=r"transcript '회의 bad.srt', line 2 \(cue 1\)") as error:
        app.predict(classifier, None, TRANSCRIPT, str(clip), str(transcript))
    assert str(tmp_path) not in error.value.message


def test_a_model_that_cannot_load_gives_its_reason_to_every_prediction(tmp_path, clip):
    missing = tmp_path / "no-such-model"
    classifier, load_error = app.load_classifier(str(missing))
    assert classifier is None and str(missing) in load_error

    with pytest.raises(gr.Error, match="Cannot load the model"):
        app.predict(classifier, load_error, TRANSCRIPT, str(clip))


def test_without_a_model_argument_the_demo_output_is_served_or_make_demo_is_asked_for(
    monkeypatch, tmp_path, saved_model_dir
):
    monkeypatch.setattr(app, "DEMO_MODEL_DIR", tmp_path / "demo_output")
    classifier, load_error = app.load_classifier(None)
    assert classifier is None and "Run `make demo` first" in load_error

    monkeypatch.setattr(app, "DEMO_MODEL_DIR", saved_model_dir)
    classifier, load_error = app.load_classifier(None)
    assert load_error is None and classifier.model.name_or_path == str(saved_model_dir)


def with_training_card(model_dir: Path, destination: Path, train_arguments: list[str]) -> Path:
    """A copy of `model_dir` with the model card's header that `train.py <train_arguments>` writes."""
    shutil.copytree(model_dir, destination)
    _, data_args, _ = TRAIN["parse_arguments"](train_arguments)
    corpus = CORPORA[data_args.dataset]
    card_data = model_card_data("HyFusER", corpus, data_args, {"eval_accuracy": 0.5})
    ModelCard(f"---\n{card_data.to_yaml()}\n---\n").save(destination / "README.md")
    return destination


def elements(page: gr.Blocks) -> dict[str, str]:
    """{elem_id: Markdown text} of the page's Markdown blocks that have an id."""
    markdown = [block for block in page.blocks.values() if isinstance(block, gr.Markdown) and block.elem_id]
    return {block.elem_id: block.value for block in markdown}


def test_page_names_the_served_model_its_training_data_and_emotions_and_flags_the_synthetic_demo_model(
    saved_model_dir, tmp_path
):
    demo_dir = with_training_card(saved_model_dir, tmp_path / "demo_output", ["--dataset", "demo"])
    kemdy_dir = with_training_card(saved_model_dir, tmp_path / "hyfuser-kemdy", ["--kemdy20_dir", "KEMDy20_v1_1"])
    emotions = ", ".join(EMOTION_LABELS)
    for model_dir, trained_on, is_demo in [
        (saved_model_dir, "its model card does not say what data", False),
        (kemdy_dir, "trained on KEMDy19 + KEMDy20", False),
        (demo_dir, "trained on offline demo", True),
    ]:
        classifier, _ = app.load_classifier(str(model_dir))
        page = elements(app.build_app(classifier, None, [], f"models/{model_dir.name}"))
        assert page["model"] == f"**Model:** `models/{model_dir.name}` ({trained_on}); emotions: {emotions}."
        assert ("demo-model" in page) == is_demo
    assert "synthetic demo model" in page["demo-model"]


def test_model_comes_from_the_environment_when_no_argument_names_it(monkeypatch):
    monkeypatch.setenv(app.MODEL_VARIABLE, "someone/hyfuser")
    assert app.parse_arguments([]).model == "someone/hyfuser"
    assert app.parse_arguments(["--model", "local_dir"]).model == "local_dir"


def test_space_requirements_are_the_core_dependencies_and_the_app_extra_and_the_core_has_no_gradio():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    lines = (REPO_ROOT / "requirements.txt").read_text().splitlines()
    requirements = [line for line in lines if line and not line.startswith("#")]
    assert requirements == project["dependencies"] + project["optional-dependencies"]["app"]
    assert not [requirement for requirement in project["dependencies"] if requirement.startswith("gradio")]


def test_space_installs_the_ffmpeg_command_that_decodes_aac_uploads():
    assert "ffmpeg" in (REPO_ROOT / "packages.txt").read_text().split()  # a Space's Debian packages, one a line


def test_readme_front_matter_makes_the_repository_a_gradio_space():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    front_matter = readme.split("---\n")[1].splitlines()
    assert readme.startswith("---\n")
    assert {"sdk: gradio", "app_file: app.py"} <= set(front_matter)
    sdk_version = next(line.split(": ")[1] for line in front_matter if line.startswith("sdk_version: "))
    app_extra = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["app"]
    assert Requirement(app_extra[0]).specifier.contains(sdk_version)  # the Space runs a Gradio the extra allows


# --------------------------------------------------------------------------------------------------------------------
# The page, in a real browser


@pytest.fixture(scope="module")
def trained_model_dir(tiny_backbones, tmp_path_factory) -> Path:
    """A tiny HyFusER that `train.py` trains for one epoch on the fixture KEMDy corpora."""
    corpora = tmp_path_factory.mktemp("corpora")
    output_dir = tmp_path_factory.mktemp("run") / "hyfuser"
    run(
        [
            sys.executable, "train.py", "--dataset", "kemdy", "--kemdy19_dir", str(write_kemdy19(corpora)),
            "--kemdy20_dir", str(write_kemdy20(corpora)), "--text_backbone", tiny_backbones.text,
            "--speech_backbone", tiny_backbones.speech, "--sequence_length", "8", "--config_overrides", OVERRIDES,
            "--num_train_epochs", "1", "--per_device_train_batch_size", "4", "--disable_tqdm", "true",
            "--cache_dir", str(tmp_path_factory.mktemp("cache")), "--output_dir", str(output_dir),
        ],
        tmp_path_factory.mktemp("hf_home"),
    )  # fmt: skip
    return output_dir


@pytest.fixture(scope="module")
def trained_classifier(trained_model_dir):
    """The pipeline over the model the app serves, in this process: what the page must show."""
    return pipeline(model=str(trained_model_dir), trust_remote_code=True)


@pytest.fixture(scope="module")
def served_app(trained_model_dir, tmp_path_factory):
    """(URL, cache dir, upload dir) of `python app.py --model <trained dir>` on a free port of 127.0.0.1, stopped
    afterwards.

    Gradio keeps uploads and recordings under GRADIO_TEMP_DIR, here a test folder: the upload dir."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cache_dir, upload_dir = tmp_path_factory.mktemp("app_cache"), tmp_path_factory.mktemp("app_uploads")
    log_path = tmp_path_factory.mktemp("app_log") / "app.log"
    environment = {
        **os.environ,
        "HF_HOME": str(tmp_path_factory.mktemp("app_hf_home")),
        "GRADIO_TEMP_DIR": str(upload_dir),
        "OMP_NUM_THREADS": "1",
    }
    command = [
        sys.executable, "app.py", "--model", str(trained_model_dir), "--cache_dir", str(cache_dir),
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            assert server.poll() is None, f"app.py exited:\n{log_path.read_text()[-4000:]}"
            assert time.monotonic() < deadline, (
                f"app.py did not answer in {START_SECONDS} s:\n{log_path.read_text()[-4000:]}"
            )
            try:
                with NO_PROXY.open(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(1)
        yield url, cache_dir, upload_dir
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()) and not os.environ.get("CI"):
        pytest.skip("needs Debian's chromium and chromium-driver (apt); .ci/run installs them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1200"):
        options.add_argument(argument)
    # A microphone that plays a beep, and consent to use it, as a person who clicks "Allow" has.
    options.add_argument("--use-fake-device-for-media-stream")
    options.add_argument("--use-fake-ui-for-media-stream")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def wait_for(driver, condition, seconds: float = PAGE_SECONDS):
    """Poll `condition(driver)` until it holds, and return its value, through the moments when the page replaces the
    elements it reads: a test reads what the page shows only once it shows it, however busy the machine."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, seconds, ignored_exceptions=[StaleElementReferenceException])
    return wait.until(condition, f"{seconds} s and still not {getattr(condition, '__name__', 'there')}")


def replace_transcript(driver, text: str) -> None:
    """Select all and type over it, as a person does (`clear()` bypasses the input events the page listens to)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, "#transcript textarea")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(text)


def upload(driver, clip: Path) -> None:
    """Upload `clip` as the page's clip, replacing the one there, and wait until the page holds it."""
    from selenium.webdriver.common.by import By

    for clear in driver.find_elements(By.CSS_SELECTOR, "#clip button[aria-label=Clear]"):
        clear.click()
    file_input = wait_for(driver, lambda driver: driver.find_elements(By.CSS_SELECTOR, "#clip input[type=file]"))
    file_input[0].send_keys(str(clip))
    wait_for(driver, lambda driver: not driver.find_elements(By.CSS_SELECTOR, "#clip input[type=file]"))


def shown_scores(driver) -> dict[str, list[float]] | None:
    """{emotion: [fused, text-centric, speech-centric]} once the page's table shows all seven rows in full, else None."""
    from selenium.webdriver.common.by import By

    scores = {}
    for row in driver.find_elements(By.CSS_SELECTOR, "#scores tbody tr"):
        label, *values = (cell.text for cell in row.find_elements(By.TAG_NAME, "td"))
        try:
            scores[label] = [float(value) for value in values]
        except ValueError:  # a cell not rendered yet
            return None
    return scores if len(scores) == len(EMOTION_LABELS) else None


def shown_top_emotion(driver) -> str | None:
    """The fused prediction's most likely emotion, once the page shows it."""
    from selenium.webdriver.common.by import By

    lines = driver.find_element(By.CSS_SELECTOR, "#fused").text.splitlines()
    return lines[1] if len(lines) > 1 else None  # after the block's title


def error_shown(driver, message: str) -> str | None:
    """The text of the error toast that contains `message`, once the page shows it."""
    from selenium.webdriver.common.by import By

    toasts = (toast.text for toast in driver.find_elements(By.CSS_SELECTOR, "[data-testid=toast-body]"))
    return next((text for text in toasts if message in text), None)


def outputs_cleared(driver) -> bool:
    """No scores table and the three prediction blocks empty: nothing of an earlier prediction stays in view."""
    from selenium.webdriver.common.by import By

    empty_blocks = driver.find_elements(By.CSS_SELECTOR, "#fused, #text-centric, #speech-centric")
    return not driver.find_elements(By.CSS_SELECTOR, "#scores tbody tr") and all(
        block.find_elements(By.CSS_SELECTOR, "[aria-label='Empty value']") for block in empty_blocks
    )


def assert_page_shows(scores: dict[str, list[float]], expected: list[dict], abs: float = 5e-5) -> None:
    """The table's rows are the pipeline's, most likely first, to the table's four decimals (or `abs`)."""
    assert list(scores) == [emotion["label"] for emotion in expected]
    for emotion in expected:
        row = [emotion["score"], emotion["text_score"], emotion["speech_score"]]
        assert scores[emotion["label"]] == pytest.approx(row, abs=abs)


@pytest.mark.slow
def test_page_predicts_an_uploaded_clip_as_the_pipeline_does_and_shows_errors_in_the_page(
    served_app, browser, trained_classifier, trained_model_dir, clip, tmp_path
):
    from selenium.webdriver.common.by import By

    url, cache_dir, upload_dir = served_app
    browser.get(url)
    wait_for(browser, lambda driver: driver.find_elements(By.CSS_SELECTOR, "#predict"))
    # Offline: everything the page loaded came from the app itself (no fonts, scripts or analytics from elsewhere).
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(entry => entry.name)")
    assert resources and all(resource.startswith(url) for resource in resources), resources
    # The examples were generated at start-up: one held-out demo item per emotion.
    assert list(cache_dir.glob("demo/*/holdout/wav/*/*.wav"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#examples tbody tr")) == len(EMOTION_LABELS)
    # The served model: its path, its training data (from the card train.py wrote) and its emotions; not the demo.
    model = browser.find_element(By.CSS_SELECTOR, "#model").text
    assert str(trained_model_dir) in model and "trained on KEMDy19 + KEMDy20" in model
    assert ", ".join(EMOTION_LABELS) in model
    assert not browser.find_elements(By.CSS_SELECTOR, "#demo-model")

    expected = trained_classifier({"text": TRANSCRIPT, "audio": str(clip)}, return_modalities=True)
    upload(browser, clip)
    replace_transcript(browser, TRANSCRIPT)
    browser.find_element(By.CSS_SELECTOR, "#predict").click()
    scores = wait_for(browser, shown_scores)
    assert_page_shows(scores, expected)
    assert sum(row[0] for row in scores.values()) == pytest.approx(1.0, abs=7 * 5e-5)
    assert wait_for(browser, shown_top_emotion) == expected[0]["label"]

    # An error shows the pipeline's message and clears every output: no earlier numbers beside the new input.
    replace_transcript(browser, "")
    browser.find_element(By.CSS_SELECTOR, "#predict").click()
    wait_for(browser, lambda driver: error_shown(driver, "empty or whitespace-only text"))
    wait_for(browser, outputs_cleared)
    assert "Traceback" not in browser.find_element(By.TAG_NAME, "body").text

    # The app keeps serving: the next transcript gets its own prediction.
    next_transcript = "정말 고마워요"
    expected = trained_classifier({"text": next_transcript, "audio": str(clip)}, return_modalities=True)
    replace_transcript(browser, next_transcript)
    browser.find_element(By.CSS_SELECTOR, "#predict").click()
    fused = {emotion["label"]: emotion["score"] for emotion in expected}
    assert fused != pytest.approx({label: row[0] for label, row in scores.items()}, abs=5e-5)
    assert_page_shows(wait_for(browser, shown_scores), expected)

    # A file the pipeline cannot read is named as the user named it, never by its path in Gradio's upload folder.
    corrupt = tmp_path / "녹음 corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00not audio at all")
    upload(browser, corrupt)
    browser.find_element(By.CSS_SELECTOR, "#predict").click()
    error = wait_for(
        browser, lambda driver: error_shown(driver, f"audio file '{corrupt.name}' cannot be read as audio")
    )
    wait_for(browser, outputs_cleared)
    page = browser.find_element(By.TAG_NAME, "body").text
    assert str(upload_dir) not in error and str(upload_dir) not in page and str(tmp_path) not in page


@pytest.mark.slow
def test_page_predicts_an_m4a_voice_memo_as_the_pipeline_predicts_its_decoded_samples(
    served_app, browser, trained_classifier, ffmpeg, tmp_path
):
    from selenium.webdriver.common.by import By

    memo = write_aac(ffmpeg, tmp_path / "voice memo.m4a")
    # AAC is lossy: the reference is the pipeline on the decoded samples (torchcodec's decoder, not the app's FFmpeg).
    expected = trained_classifier({"text": TRANSCRIPT, "audio": decoded_by_torchcodec(memo)}, return_modalities=True)

    url, _, _ = served_app
    browser.get(url)
    wait_for(browser, lambda driver: driver.find_elements(By.CSS_SELECTOR, "#predict"))
    upload(browser, memo)
    replace_transcript(browser, TRANSCRIPT)
    browser.find_element(By.CSS_SELECTOR, "#predict").click()
    assert_page_shows(wait_for(browser, shown_scores), expected, abs=1e-4)


def shown_timeline(driver, count: int) -> list[list[str]] | None:
    """The timeline table's cells, row by row, once it shows `count` rows, else None."""
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#timeline-table tbody tr')]"
        ".map(row => [...row.cells].map(cell => cell.textContent.trim()))"
    )
    return rows if len(rows) == count else None


@pytest.mark.slow
def test_page_shows_the_timeline_of_a_long_clip_with_its_transcript_and_asks_for_the_transcript_without_one(
    served_app, browser, trained_classifier, recording, tmp_path
):
    from selenium.webdriver.common.by import By

    transcript, segments = dialogue_transcript(recording, tmp_path / "대화 dialogue.srt")
    records = trained_classifier({"audio": str(recording.native), "transcript": str(transcript)})
    url, _, upload_dir = served_app
    browser.get(url)
    wait_for(browser, lambda driver: driver.find_elements(By.CSS_SELECTOR, "#predict"))
    note = browser.find_element(By.CSS_SELECTOR, "#segments-note").text
    assert f"longer than one utterance ({MAX_SEGMENT_SECONDS:g} s)" in note and "openai/whisper" in note

    # Three minutes without a transcript file: the served model's recognizer cannot be loaded offline, and the page
    # says to upload the transcript.
    upload(browser, recording.native)
    browser.find_element(By.CSS_SELECTOR, "#predict").click()
    error = wait_for(browser, lambda driver: error_shown(driver, "upload its transcript"))
    assert "cannot be loaded" in error and str(upload_dir) not in error
    wait_for(browser, lambda driver: not driver.find_elements(By.CSS_SELECTOR, "#timeline-table tbody tr"))

    browser.find_element(By.CSS_SELECTOR, "#transcript-file input[type=file]").send_keys(str(transcript))
    attached = (By.CSS_SELECTOR, "#transcript-file td.filename")
    wait_for(browser, lambda driver: [file.get_attribute("aria-label") for file in driver.find_elements(*attached)])
    assert browser.find_element(*attached).get_attribute("aria-label") == transcript.name
    browser.find_element(By.CSS_SELECTOR, "#predict").click()
    rows = wait_for(browser, lambda driver: shown_timeline(driver, len(segments)))
    assert_rows_are_records(rows, records)
    assert sum(record["label"] is None for record in records) == 1  # the backchannel, with its reason
    plot = browser.find_element(By.CSS_SELECTOR, "#timeline-plot img")
    assert browser.execute_script("return arguments[0].naturalWidth", plot) > 0
    assert wait_for(browser, outputs_cleared)  # no emotion blocks for a timeline
    summary = browser.find_element(By.CSS_SELECTOR, "#scores").text
    assert f"Timeline of {len(segments)} segments ({len(segments) - 1} with an emotion)" in summary


def test_readme_app_commands_use_flags_the_app_has():
    from test_readme import listed_commands

    commands = listed_commands("python app.py")
    assert commands
    for words in commands:
        app.parse_arguments(words[2:])  # argparse exits on a flag it does not know


@pytest.mark.slow
def test_page_predicts_a_microphone_recording_as_the_pipeline_does(served_app, browser, trained_classifier):
    """Chromium's fake microphone: record two seconds, stop, predict; the page's scores are the pipeline's for the
    very file the page recorded (its download link names it)."""
    from selenium.webdriver.common.by import By

    url, _, _ = served_app
    browser.get(url)
    wait_for(browser, lambda driver: driver.find_elements(By.CSS_SELECTOR, "#predict"))
    browser.find_element(By.CSS_SELECTOR, "#clip button[aria-label='Record audio']").click()
    wait_for(
        browser, lambda driver: driver.find_elements(By.XPATH, "//*[@id='clip']//button[normalize-space()='Record']")
    )
    browser.find_element(By.XPATH, "//*[@id='clip']//button[normalize-space()='Record']").click()
    wait_for(
        browser, lambda driver: driver.find_elements(By.XPATH, "//*[@id='clip']//button[normalize-space()='Stop']")
    )
    time.sleep(2)
    browser.find_element(By.XPATH, "//*[@id='clip']//button[normalize-space()='Stop']").click()
    link = wait_for(
        browser, lambda driver: driver.find_elements(By.CSS_SELECTOR, "#clip a[data-testid=download-link]")
    )
    recording = Path(link[0].get_attribute("href").split("file=", 1)[1])
    assert recording.is_file() and soundfile.info(str(recording)).duration > 1.0

    replace_transcript(browser, TRANSCRIPT)
    browser.find_element(By.CSS_SELECTOR, "#predict").click()
    scores = wait_for(browser, shown_scores)
    expected = trained_classifier({"text": TRANSCRIPT, "audio": str(recording)}, return_modalities=True)
    assert_page_shows(scores, expected)
