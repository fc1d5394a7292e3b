"""The offline demo corpus's variants (`--demo_cue`), written for real by `hyfuser.demo.prepare_demo`."""

from pathlib import Path

import pytest
import soundfile

import reproduce
from hyfuser.corpora import load_kemdy20
from hyfuser.demo import _EMOTION_PHRASES, _PLAIN_PHRASES, _WHISPER, prepare_demo


def _clip_seconds(corpus_dir: str) -> list[float]:
    return [soundfile.info(path).duration for path in sorted(Path(corpus_dir).rglob("*.wav"))]


def test_the_text_cued_demo_puts_every_emotion_in_the_words_over_one_neutral_whisper(tmp_path):
    demo = prepare_demo(tmp_path, train_per_emotion=2, holdout_per_emotion=1, cue="text")
    assert Path(demo.train_dir).parent.name.endswith("-text")  # never the default demo's directory
    assert {utterance.cue for utterance in demo.holdout} == {"text"}
    rows = load_kemdy20(demo.train_dir)
    names = rows.features["label"].names
    for text, label in zip(rows["text"], rows["label"]):
        assert any(phrase in text for phrase in _EMOTION_PHRASES[names[label]]), text
    # Every clip is the whisper, whose length does not depend on the emotion (emotional voices range 0.8-1.5 s).
    seconds = _clip_seconds(demo.train_dir)
    assert all(0.92 * _WHISPER.seconds <= length <= 1.08 * _WHISPER.seconds for length in seconds)


def test_the_speech_cued_demo_says_nothing_of_the_emotion_in_its_words(tmp_path):
    demo = prepare_demo(tmp_path, train_per_emotion=1, holdout_per_emotion=1, cue="speech")
    texts = load_kemdy20(demo.train_dir)["text"]
    assert all(any(phrase in text for phrase in _PLAIN_PHRASES) for text in texts)
    assert not any(phrase in text for text in texts for phrases in _EMOTION_PHRASES.values() for phrase in phrases)


def test_an_unknown_demo_cue_is_refused_with_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"unknown demo cue 'audio'.*'mixed', 'text', 'speech', 'both'"):
        prepare_demo(tmp_path, cue="audio")
    with pytest.raises(SystemExit):
        reproduce.parse_arguments(["--dataset", "demo", "--demo_cue", "audio"])
    assert reproduce.parse_arguments(["--dataset", "demo", "--demo_cue", "text"])[0].demo_cue == "text"
