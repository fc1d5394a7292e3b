"""app.py, the Gradio web demo: its prediction function called directly, and the page used in a real browser.

The browser test starts `python app.py` on a free local port against a model that `train.py` trains here, and drives
Debian's Chromium (/usr/bin/chromium through /usr/bin/chromedriver; `.ci/run` installs both) with Selenium, as a
person would: upload a clip, type a transcript, press Predict, read the scores, then try an empty transcript.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import soundfile
import tomllib
from audio_files import write_tone
from corpora import write_kemdy19, write_kemdy20
from packaging.requirements import Requirement
from test_train import OVERRIDES, run
from transformers import pipeline

from configuration_hyfuser import EMOTION_LABELS

gr = pytest.importorskip("gradio", reason="the `app` extra is not installed: pip install -e '.[app]'")
import app

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
TRANSCRIPT = "아 진짜 너무 화가 나서 못 참겠어"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Asks the local app directly, whatever proxy the environment names."""


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_tone(tmp_path_factory.mktemp("clips") / "utterance.wav", seconds=1.0, frequency=180.0)


def table_scores(table: str) -> dict[str, list[float]]:
    """{emotion: [fused, text-centric, speech-centric]} from the Markdown score table `predict` returns."""
    rows = [line.strip("|").split("|") for line in table.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [float(cell) for cell in cells[1:]] for cells in rows[2:]}  # after header and rule


# --------------------------------------------------------------------------------------------------------------------
# The prediction function, called directly


def test_prediction_shows_the_pipeline_s_fused_and_per_head_scores(classifier, clip):
    fused, text_centric, speech_centric, table = app.predict(classifier, None, TRANSCRIPT, str(clip))

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


@pytest.mark.parametrize(
    "text, audio, message",
    [
        ("   ", "clip", "empty or whitespace-only text"),
        (TRANSCRIPT, None, "No audio: record or upload a clip"),
        (TRANSCRIPT, "empty.wav", "has zero length"),
        (TRANSCRIPT, "corrupt.wav", "cannot be read as audio"),
        (TRANSCRIPT, "missing.wav", "does not exist"),
    ],
)
def test_bad_input_raises_the_pipeline_s_message_for_the_page_and_the_next_input_still_works(
    classifier, clip, tmp_path, text, audio, message
):
    soundfile.write(tmp_path / "empty.wav", [], 16_000)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00not audio at all")
    audio = {"clip": str(clip), None: None}.get(audio, str(tmp_path / str(audio)))

    with pytest.raises(gr.Error, match=message) as error:
        app.predict(classifier, None, text, audio)
    assert "Traceback" not in error.value.message
    fused, *_ = app.predict(classifier, None, TRANSCRIPT, str(clip))
    assert len(fused) == len(EMOTION_LABELS)


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
    """(URL, cache dir) of `python app.py --model <trained dir>` on a free port of 127.0.0.1, stopped afterwards.

    Gradio keeps uploads and recordings under GRADIO_TEMP_DIR, here a test folder."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cache_dir = tmp_path_factory.mktemp("app_cache")
    log_path = tmp_path_factory.mktemp("app_log") / "app.log"
    environment = {
        **os.environ,
        "HF_HOME": str(tmp_path_factory.mktemp("app_hf_home")),
        "GRADIO_TEMP_DIR": str(tmp_path_factory.mktemp("app_uploads")),
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
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, f"app.py exited:\n{log_path.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"app.py did not answer in 300 s:\n{log_path.read_text()[-4000:]}"
            try:
                with NO_PROXY.open(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(1)
        yield url, cache_dir
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


def wait_for(driver, condition, seconds: float = 120):
    """Poll `condition(driver)` until it holds, through the moments when the page replaces the elements it reads."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, ignored_exceptions=[StaleElementReferenceException]).until(condition)


def replace_transcript(driver, text: str) -> None:
    """Select all and type over it, as a person does (`clear()` bypasses the input events the page listens to)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, "#transcript textarea")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(text)


def page_scores(driver) -> dict[str, list[float]]:
    from selenium.webdriver.common.by import By

    scores = {}
    for row in driver.find_elements(By.CSS_SELECTOR, "#scores tbody tr"):
        label, *values = (cell.text for cell in row.find_elements(By.TAG_NAME, "td"))
        scores[label] = [float(value) for value in values]
    return scores


@pytest.mark.slow
def test_page_predicts_an_uploaded_clip_as_the_pipeline_does_and_shows_errors_in_the_page(
    served_app, browser, trained_classifier, clip
):
    from selenium.webdriver.common.by import By

    url, cache_dir = served_app
    browser.get(url)
    wait_for(browser, lambda driver: driver.find_elements(By.CSS_SELECTOR, "#predict"))
    # Offline: everything the page loaded came from the app itself (no fonts, scripts or analytics from elsewhere).
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(entry => entry.name)")
    assert resources and all(resource.startswith(url) for resource in resources), resources
    # The examples were generated at start-up: one held-out demo item per emotion.
    assert list(cache_dir.glob("demo/*/holdout/wav/*/*.wav"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#examples tbody tr")) == len(EMOTION_LABELS)

    expected = trained_classifier({"text": TRANSCRIPT, "audio": str(clip)}, return_modalities=True)
    browser.find_element(By.CSS_SELECTOR, "#clip input[type=file]").send_keys(str(clip))
    wait_for(browser, lambda driver: not driver.find_elements(By.CSS_SELECTOR, "#clip input[type=file]"))  # uploaded
    replace_transcript(browser, TRANSCRIPT)
    browser.find_element(By.CSS_SELECTOR, "#predict").click()
    wait_for(browser, lambda driver: len(driver.find_elements(By.CSS_SELECTOR, "#scores tbody tr")) == 7)

    scores = page_scores(browser)
    assert list(scores) == [emotion["label"] for emotion in expected]
    assert sum(row[0] for row in scores.values()) == pytest.approx(1.0, abs=7 * 5e-5)
    for emotion in expected:
        page_row = scores[emotion["label"]]
        assert page_row == pytest.approx([emotion["score"], emotion["text_score"], emotion["speech_score"]], abs=5e-5)
    assert browser.find_element(By.CSS_SELECTOR, "#fused").text.split("\n")[1] == expected[0]["label"]

    replace_transcript(browser, "")
    browser.find_element(By.CSS_SELECTOR, "#predict").click()
    toast = wait_for(browser, lambda driver: driver.find_elements(By.CSS_SELECTOR, "[data-testid=toast-body]"))
    assert "empty or whitespace-only text" in toast[0].text
    assert "Traceback" not in browser.find_element(By.TAG_NAME, "body").text

    # The app keeps serving: the next transcript gets its own prediction.
    next_transcript = "정말 고마워요"
    expected = trained_classifier({"text": next_transcript, "audio": str(clip)}, return_modalities=True)
    replace_transcript(browser, next_transcript)
    browser.find_element(By.CSS_SELECTOR, "#predict").click()
    fused = {emotion["label"]: emotion["score"] for emotion in expected}
    assert fused != pytest.approx({label: row[0] for label, row in scores.items()}, abs=5e-5)

    def shows_the_next_prediction(driver) -> bool:
        return {label: row[0] for label, row in page_scores(driver).items()} == pytest.approx(fused, abs=5e-5)

    wait_for(browser, shows_the_next_prediction)


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

    url, _ = served_app
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
    wait_for(browser, lambda driver: len(driver.find_elements(By.CSS_SELECTOR, "#scores tbody tr")) == 7)
    expected = trained_classifier({"text": TRANSCRIPT, "audio": str(recording)}, return_modalities=True)
    scores = page_scores(browser)
    for emotion in expected:
        assert scores[emotion["label"]] == pytest.approx(
            [emotion["score"], emotion["text_score"], emotion["speech_score"]], abs=5e-5
        )
