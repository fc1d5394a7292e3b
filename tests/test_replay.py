"""KEMDy20 session replay and the timeline command: a session laid out again as one dialogue recording, its
timeline, and the comparison with the annotation for both speakers."""

import csv
import json

import numpy as np
import pytest
import soundfile
from corpora import write_kemdy20

import timeline
from audio_hyfuser import load_audio
from hyfuser.corpora import kemdy20_annotated_times, load_kemdy20
from hyfuser.demo import DEMO_SAMPLING_RATE, plan_demo_utterances, write_kemdy20_corpus
from hyfuser.replay import build_session_recording
from timeline_hyfuser import iter_segment_audio


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("kemdy20")
    rng = np.random.default_rng(20)
    utterances = plan_demo_utterances(2, 1, 1, rng, set())  # 14 utterances of Sess01, two speakers, six scripts
    write_kemdy20_corpus(root, utterances, rng)
    return root, {utterance.segment_id: utterance.emotion for utterance in utterances}


def test_annotated_times_are_the_annotation_columns_and_the_loader_is_unchanged(demo_root):
    root, emotions = demo_root
    times = kemdy20_annotated_times(root)
    assert set(times) == set(emotions) == set(load_kemdy20(root)["id"])
    for segment_id, (start, end) in times.items():
        duration = soundfile.info(root / "wav" / "Session01" / f"{segment_id}.wav").duration
        assert end - start == pytest.approx(duration, abs=1e-3)


def test_the_session_recording_holds_each_utterance_at_its_segment(demo_root, tmp_path):
    root, emotions = demo_root
    path = tmp_path / "Sess01.wav"
    segments, annotated = build_session_recording(root, "Sess01", path, DEMO_SAMPLING_RATE)
    assert [row["label"] for row in annotated] == [emotions[row["id"]] for row in annotated]
    assert {row["speaker"] for row in annotated} == {"User001F", "User002M"} and len(segments) == 14
    for segment, row, waveform in zip(segments, annotated, iter_segment_audio(path, segments, DEMO_SAMPLING_RATE)):
        alone = load_audio(str(root / "wav" / "Session01" / f"{row['id']}.wav"), DEMO_SAMPLING_RATE)
        np.testing.assert_array_equal(waveform, alone)
        assert segment.speaker == row["speaker"]


def test_the_command_replays_a_session_and_compares_both_speakers(
    demo_root, saved_model_dir, classifier, tmp_path, capsys
):
    root, emotions = demo_root
    timeline.main(
        [str(saved_model_dir), "--kemdy20_dir", str(root), "--session", "Sess01", "--output_dir", str(tmp_path)]
    )
    accuracy = json.loads(capsys.readouterr().out)
    with open(tmp_path / "Sess01.comparison.csv", encoding="utf-8-sig") as file:
        rows = list(csv.DictReader(file))
    assert [row["annotated"] for row in rows] == [emotions[row["id"]] for row in rows] and len(rows) == 14
    dataset = {row["id"]: row for row in load_kemdy20(root)}
    alone = classifier([{"text": dataset[row["id"]]["text"], "audio": dataset[row["id"]]["audio"]} for row in rows])
    assert [row["predicted"] for row in rows] == [emotions_[0]["label"] for emotions_ in alone]
    for speaker in ("User001F", "User002M", "all"):
        own = [row for row in rows if speaker in (row["speaker"], "all")]
        matches = sum(row["match"] == "True" for row in own)
        assert accuracy[speaker] == {"utterances": len(own), "matches": matches, "accuracy": matches / len(own)}
    assert {path.name for path in tmp_path.iterdir()} == {
        "Sess01.wav", "Sess01.comparison.csv", "Sess01.timeline.jsonl", "Sess01.timeline.csv", "Sess01.timeline.png"
    }  # fmt: skip


def test_a_replay_of_the_loader_test_corpus_places_its_other_rates_and_rewritten_ids(tmp_path):
    root = write_kemdy20(tmp_path)
    kept = [row for row in load_kemdy20(root) if row["session"] == "Sess17"]
    segments, annotated = build_session_recording(root, "Sess17", tmp_path / "Sess17.wav", DEMO_SAMPLING_RATE)
    assert sorted(row["id"] for row in annotated) == sorted(row["id"] for row in kept)
    assert all(row["id"].startswith("Sess17_") for row in annotated)  # the Sess16 id, rewritten, is placed too
    assert len(segments) == len(kept) > 0
    with pytest.raises(ValueError, match="has no kept utterances of 'Sess09'"):
        build_session_recording(root, "Sess09", tmp_path / "none.wav", DEMO_SAMPLING_RATE)


def test_the_command_writes_a_recording_timeline(saved_model_dir, tmp_path):
    import test_timeline

    audio = tmp_path / "call.wav"
    soundfile.write(audio, np.random.default_rng(0).normal(0, 0.1, 16_000 * 8).astype(np.float32), 16_000)
    segments = [test_timeline.Segment(0.5, 3.0, "상담사: 안녕하세요"), test_timeline.Segment(3.5, 6.0, "괜찮아요")]
    transcript = test_timeline.write_srt(
        tmp_path / "call.srt",
        [s.__class__(s.start, s.end, s.text.split(": ")[-1], name) for s, name in zip(segments, ("상담사", "내담자"))],
    )
    timeline.main(
        [str(saved_model_dir), str(audio), "--transcript", str(transcript), "--output_dir", str(tmp_path / "out")]
    )
    lines = (tmp_path / "out" / "call.timeline.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["speaker"] for line in lines] == ["상담사", "내담자"]
    assert (tmp_path / "out" / "call.timeline.png").stat().st_size > 0 and (
        tmp_path / "out" / "call.timeline.csv"
    ).exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["model", "--output_dir", "out"], "either AUDIO or --kemdy20_dir"),
        (["model", "a.wav", "--kemdy20_dir", "root", "--output_dir", "out"], "go together"),
        (
            ["model", "--kemdy20_dir", "r", "--session", "Sess01", "--transcript", "x.srt", "--output_dir", "o"],
            "no --transcript",
        ),
    ],
)
def test_the_command_refuses_contradictory_flags(argv, message, capsys):
    with pytest.raises(SystemExit):
        timeline.parse_arguments(argv)
    assert message in capsys.readouterr().err
