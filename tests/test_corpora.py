"""Loaders and paper preprocessing of `hyfuser.corpora` and `hyfuser.splits`, on the real-layout corpora that
`corpora.py` writes."""

import json
import os
import shutil
from collections import Counter

import numpy as np
import pytest
from corpora import (
    AIHUB_CASE_VARIANT,
    AIHUB_EMOTIONS,
    AIHUB_RELEASE_FOLDERS,
    KEMDY19_8KHZ,
    KEMDY19_ONLY_IN_CONVERTED,
    KEMDY19_SEGMENTS,
    KEMDY20_FOREIGN_PREFIX,
    KEMDY20_UTF8_TRANSCRIPT,
    write_aihub263,
    write_kemdy19,
    write_kemdy20,
)
from datasets import ClassLabel, Dataset

from configuration_hyfuser import EMOTION_LABELS
from hyfuser.corpora import load_aihub263, load_kemdy19, load_kemdy20
from hyfuser.corpus_reading import clean_transcript, count_hangul_syllables
from hyfuser.splits import _stratified_validation, build_paper_dataset


@pytest.fixture(scope="module")
def corpora_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpora")
    return {"kemdy19": write_kemdy19(folder), "kemdy20": write_kemdy20(folder), "aihub": write_aihub263(folder)}


@pytest.fixture(scope="module")
def kemdy19(corpora_dir):
    return load_kemdy19(corpora_dir["kemdy19"], return_report=True)


@pytest.fixture(scope="module")
def kemdy20(corpora_dir):
    return load_kemdy20(corpora_dir["kemdy20"], return_report=True)


@pytest.fixture(scope="module")
def aihub(corpora_dir):
    return load_aihub263(corpora_dir["aihub"], return_report=True)


@pytest.fixture(scope="module")
def paper(corpora_dir):
    return build_paper_dataset(corpora_dir["kemdy19"], corpora_dir["kemdy20"], return_report=True)


def rows_by_id(dataset: Dataset) -> dict[str, dict]:
    names = dataset.features["label"].names
    return {row["id"]: {**row, "label": names[row["label"]]} for row in dataset}


def both_splits(splits, column: str) -> list:
    return [*splits["train"][column], *splits["validation"][column]]


def copy_corpus(root, tmp_path):
    return shutil.copytree(root, tmp_path / os.path.basename(root))


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("b/ 몰라. o/ b/ 아 몰라 어떡해. o/", "몰라. 아 몰라 어떡해."),
        ("o/ N/ 지섭씨 사람하고 고라니를 구분 못 할 정돈 (아니잖아)", "지섭씨 사람하고 고라니를 구분 못 할 정돈 아니잖아"),
        ("(아니잖아+그럼) 뭐야. 그럼 어떻게 된 거야. n/ 사람은", "아니잖아 그럼 뭐야. 그럼 어떻게 된 거야. 사람은"),
        ("l/ 요즘 SNS 에서 BTS 얘기만 c/ 하더라 u/", "요즘 SNS 에서 BTS 얘기만 하더라"),
        ("/n 누구 s/거기 *있어요? /", "누구 거기 있어요?"),
        ("bus/ 타고 Nobel 상", "bus 타고 Nobel 상"),
        ("b/ n/", ""),
    ],
)
def test_clean_transcript_removes_tags_and_keeps_every_word(raw, clean):
    assert clean_transcript(raw) == clean


def test_count_hangul_syllables_ignores_latin_digits_and_punctuation():
    assert count_hangul_syllables("네.") == 1
    assert count_hangul_syllables("SNS 2번 봤어") == 3


def test_loaders_return_the_documented_columns(kemdy19, kemdy20, aihub):
    for dataset, _ in (kemdy19, kemdy20, aihub):
        assert list(dataset.features) == [
            "id", "corpus", "session", "speaker", "text", "raw_text", "audio", "label", "valence", "arousal"
        ]  # fmt: skip
        assert dataset.features["label"] == ClassLabel(names=list(EMOTION_LABELS))
        assert all(os.path.isabs(path) and os.path.isfile(path) for path in dataset["audio"])


def test_kemdy19_keeps_only_speaker_rows(kemdy19):
    dataset, report = kemdy19
    rows = rows_by_id(dataset)
    expected = {
        "Sess01_script01_F001": "happy",
        "Sess01_script01_M001": "angry",  # the F file, read first, says happy: the listener's emotion
        "Sess01_script01_M002": "surprise",
        "Sess01_impro01_F001": "sad",
        "Sess01_impro01_M001": "disgust",
        "Sess01_impro01_F002": "neutral",
        "Sess02_script01_F001": "neutral",
        "Sess02_script01_M001": "fear",
        "Sess02_script01_F002": "neutral",
        "Sess02_script01_M002": "happy",
    }
    assert {segment_id: row["label"] for segment_id, row in rows.items()} == expected
    assert report.skipped["partner's segment (listener label)"] == len(KEMDY19_SEGMENTS)
    assert all(row["valence"] == 3.4 and row["arousal"] == 2.6 for row in rows.values())  # the speaker's own file
    assert rows["Sess01_script01_M001"]["speaker"] == "Sess01M"
    assert rows["Sess02_script01_F001"]["session"] == "Sess02"


def test_kemdy19_listener_rows_take_each_segment_from_the_partners_file(corpora_dir):
    dataset, report = load_kemdy19(corpora_dir["kemdy19"], rows="listener", return_report=True)
    rows = rows_by_id(dataset)
    expected = {  # the partner's labels in KEMDY19_SEGMENTS, for the rows whose audio and text are usable
        "Sess01_script01_F001": "neutral",
        "Sess01_script01_M001": "happy",
        "Sess01_script01_F002": "neutral",  # a tie in the speaker's own file, a single label in the partner's
        "Sess01_script01_M002": "neutral",
        "Sess01_impro01_F001": "neutral",
        "Sess01_impro01_M001": "fear",
        "Sess01_impro01_F002": "neutral",
        "Sess02_script01_F001": "happy",
        "Sess02_script01_M001": "neutral",
        "Sess02_script01_F002": "sad",
        "Sess02_script01_M002": "angry",
    }
    assert {segment_id: row["label"] for segment_id, row in rows.items()} == expected
    assert dict(report.skipped) == {
        "own segment (speaker label)": 14, "missing audio": 1, "empty text": 1, "missing transcript": 1
    }  # fmt: skip
    assert report.rows_read == report.kept + sum(report.skipped.values())
    assert all(row["valence"] == 2.1 and row["arousal"] == 3.9 for row in rows.values())  # the partner's file
    assert rows["Sess01_script01_M001"]["speaker"] == "Sess01M"  # still the person speaking


def test_kemdy19_both_keeps_every_row_of_both_files_the_listeners_under_its_own_id(corpora_dir, kemdy19):
    dataset, report = load_kemdy19(corpora_dir["kemdy19"], rows="both", return_report=True)
    rows = rows_by_id(dataset)
    assert len(rows) == len(dataset) == 21  # 10 speaker rows + 11 listener rows
    assert report.labels == {
        "angry": 2, "disgust": 1, "fear": 2, "happy": 4, "neutral": 9, "sad": 2, "surprise": 1
    }  # fmt: skip
    assert dict(report.skipped) == {"multi-label": 1, "missing audio": 2, "empty text": 2, "missing transcript": 2}
    speaker, listener = rows["Sess01_script01_M001"], rows["Sess01_script01_M001:listener"]
    assert (speaker["label"], listener["label"]) == ("angry", "happy")
    assert speaker["audio"] == listener["audio"] and speaker["text"] == listener["text"]
    assert "Sess01_script01_F002" not in rows and "Sess01_script01_F002:listener" in rows  # the tie is dropped
    assert {segment_id for segment_id in rows if ":" not in segment_id} == set(kemdy19[0]["id"])


@pytest.mark.parametrize(
    "rows, loaded, deduplicated, neutral",
    [
        # 10 KEMDy19 + 15 KEMDy20 rows; KEMDy20 repeats one KEMDy19 text. Neutral: 3 + 7 loaded, minus that
        # repeat and the one-syllable '네.' and '응'.
        ("speaker", 25, 24, 7),
        ("listener", 26, 25, 10),  # 11 + 15; neutral 6 + 7 loaded, minus the same three
        ("both", 36, 25, 10),  # 21 + 15; the second row of each of 10 segments repeats the first's text
    ],
)
def test_paper_dataset_reports_each_kemdy19_row_selection_beside_table_4(
    corpora_dir, rows, loaded, deduplicated, neutral
):
    _, report = build_paper_dataset(
        corpora_dir["kemdy19"], corpora_dir["kemdy20"], kemdy19_rows=rows, return_report=True
    )
    assert sum(report.stages["loaded"].values()) == loaded
    assert sum(report.stages["deduplicated"].values()) == deduplicated
    lines = str(report).splitlines()
    assert f"KEMDy19 (rows={rows!r}, multi_label='drop')" in lines[0]
    assert lines[2 + EMOTION_LABELS.index("neutral")].split()[3:5] == [str(neutral), "15082"]


def test_kemdy19_reads_audio_from_the_dialogue_folder_never_from_converted(kemdy19, corpora_dir):
    dataset, report = kemdy19
    for row in dataset:
        session, dialogue = row["id"].split("_")[:2]
        folder = corpora_dir["kemdy19"] / "wav" / f"Session{session[4:]}" / f"{session}_{dialogue}"
        assert row["audio"] == str(folder / f"{row['id']}.wav")
    assert KEMDY19_ONLY_IN_CONVERTED not in dataset["id"]
    assert report.skipped["missing audio"] == 1
    assert report.orphan_audio == 1  # Sess01_impro01_F003; the wavs under converted/ are not corpus audio


def test_kemdy19_reads_utf8_transcripts_and_cleans_them(kemdy19):
    rows = rows_by_id(kemdy19[0])
    assert rows["Sess01_script01_M002"]["raw_text"] == "l/ 요즘 SNS 에서 BTS 얘기만 하더라 n/"
    assert rows["Sess01_script01_M002"]["text"] == "요즘 SNS 에서 BTS 얘기만 하더라"
    assert rows["Sess02_script01_M001"]["text"] == "누구 거기 있어요?"


def test_kemdy19_multi_label_first_keeps_the_first_label_as_written(corpora_dir):
    dataset, report = load_kemdy19(corpora_dir["kemdy19"], multi_label="first", return_report=True)
    assert rows_by_id(dataset)["Sess01_script01_F002"]["label"] == "neutral"  # written 'neutral;happy'
    assert "multi-label" not in report.skipped
    assert report.notes["multi-label row: first label kept"] == 1


def test_kemdy20_reads_positional_columns_under_space_headers(kemdy20):
    dataset, report = kemdy20
    rows = rows_by_id(dataset)
    assert report.rows_read == 19  # the Emotion/Valence/Arousal sub-header is not a row
    assert rows["Sess02_script01_User004M_002"]["label"] == "fear"
    assert rows["Sess02_script01_User004M_002"]["valence"] == pytest.approx(2.4)
    assert rows["Sess02_script01_User004M_002"]["arousal"] == pytest.approx(3.1)
    assert rows["Sess02_script01_User004M_002"]["speaker"] == "User004M"
    assert rows["Sess01_script01_User001F_001"]["audio"].endswith(
        os.path.join("wav", "Session01", "Sess01_script01_User001F_001.wav")
    )


def test_kemdy20_reads_disqust_as_disgust(kemdy20):
    dataset, report = kemdy20
    assert rows_by_id(dataset)["Sess01_script01_User001F_002"]["label"] == "disgust"
    assert report.notes["label 'disqust' read as 'disgust'"] == 1


def test_kemdy20_rewrites_a_foreign_session_prefix_to_the_files_session(kemdy20, corpora_dir):
    rows = rows_by_id(kemdy20[0])
    fixed = "Sess17" + KEMDY20_FOREIGN_PREFIX[len("Sess16") :]
    assert KEMDY20_FOREIGN_PREFIX not in rows
    assert rows[fixed]["audio"] == str(corpora_dir["kemdy20"] / "wav" / "Session17" / f"{fixed}.wav")
    assert (rows[fixed]["label"], rows[fixed]["session"], rows[fixed]["text"]) == ("happy", "Sess17", "나는 바다 가고 싶어")


def test_kemdy20_decodes_cp949_transcripts_and_tolerates_utf8(kemdy20):
    dataset, report = kemdy20
    rows = rows_by_id(dataset)
    assert rows["Sess02_script01_User004M_001"]["text"] == "그 얘기 들으니까 너무 슬프다"
    assert rows[KEMDY20_UTF8_TRANSCRIPT]["text"] == "좋아 그럼 바다 가자"
    assert report.notes["transcripts read as utf-8"] == 1


def test_kemdy20_multi_label_first_keeps_the_first_label_as_written(corpora_dir):
    dataset = load_kemdy20(corpora_dir["kemdy20"], multi_label="first")
    assert rows_by_id(dataset)["Sess01_script01_User002M_002"]["label"] == "happy"  # 'happy;neutral;disqust'


def test_loaders_keep_non_16khz_audio_and_report_its_format(kemdy19, kemdy20):
    assert KEMDY19_8KHZ in kemdy19[0]["id"]
    assert kemdy19[1].audio_formats == {"16000 Hz, 1 ch": 9, "8000 Hz, 1 ch": 1}
    assert kemdy20[1].audio_formats == {"16000 Hz, 1 ch": 13, "44100 Hz, 2 ch": 1, "48000 Hz, 1 ch": 1}


def test_aihub_finds_audio_in_each_release_folder(aihub, corpora_dir):
    dataset, report = aihub
    folders = {os.path.dirname(path) for path in dataset["audio"]}
    assert folders == {str(corpora_dir["aihub"] / folder) for folder in AIHUB_RELEASE_FOLDERS.values()}
    assert report.orphan_audio == 1
    assert list(dataset["session"]) == list(dataset["speaker"]) == [None] * len(dataset)


def test_aihub_maps_label_aliases_of_every_release(aihub):
    dataset, report = aihub
    rows = rows_by_id(dataset)
    for index in range(35):  # the base rows: 5 per emotion, in AIHUB_EMOTIONS order
        assert rows[f"5f3c9ed98a3c1005aa97{index:04x}"]["label"] == AIHUB_EMOTIONS[index // 5]
    assert rows[AIHUB_CASE_VARIANT]["label"] == "happy"  # ' Happiness '
    assert {note for note in report.notes if note.startswith("label")} == {
        "label 'anger' read as 'angry'", "label 'sadness' read as 'sad'", "label 'happiness' read as 'happy'"
    }  # fmt: skip
    assert report.notes["unknown label 'excited'"] == 1


def test_aihub_majority_takes_the_emotion_of_three_of_five_raters(corpora_dir):
    dataset, report = load_aihub263(corpora_dir["aihub"], label_source="majority", return_report=True)
    rows = rows_by_id(dataset)
    assert rows["5f3c9ed98a3c1005aa970000"]["label"] == "angry"  # 4 of 5 raters wrote 'anger' (4차년도)
    assert rows["5f3c9ed98a3c1005aa970004"]["label"] == "neutral"  # 3 raters outvote the scripted angry
    assert "5f3c9ed98a3c1005aa970003" not in rows  # 2-2-1
    assert report.skipped["no 3-of-5 rater majority"] == 7


def test_aihub_requires_the_official_header_spelling(corpora_dir, tmp_path):
    root = copy_corpus(corpora_dir["aihub"], tmp_path)
    path = root / "5차년도.csv"
    path.write_bytes(path.read_bytes().replace("4번감정세기".encode("cp949"), "4번 감정세기".encode("cp949")))
    with pytest.raises(ValueError, match=r"5차년도\.csv, line 1: header column 11: expected '4번감정세기'"):
        load_aihub263(root)


def test_aihub_rejects_a_csv_that_is_not_cp949(corpora_dir, tmp_path):
    root = copy_corpus(corpora_dir["aihub"], tmp_path)
    path = root / "4차년도.csv"
    path.write_text(path.read_bytes().decode("cp949"), encoding="utf-8")
    with pytest.raises(ValueError, match=r"4차년도\.csv, line 1"):
        load_aihub263(root)


def test_aihub_release_without_extracted_audio_asks_to_extract_the_zip(corpora_dir, tmp_path):
    root = copy_corpus(corpora_dir["aihub"], tmp_path)
    shutil.rmtree(root / "5차년도_2차")
    (root / "5차년도_2차.zip").write_bytes(b"PK")
    with pytest.raises(FileNotFoundError, match=r"extract .*5차년도_2차\.zip"):
        load_aihub263(root)


EXPECTED_SKIPS = {
    ("kemdy19", "drop"): {"partner's segment (listener label)": 14, "multi-label": 1, "missing audio": 1,
                          "empty text": 1, "missing transcript": 1},
    ("kemdy20", "drop"): {"multi-label": 1, "empty text": 1, "missing audio": 1, "unreadable audio": 1},
    ("aihub", "situation"): {"missing audio": 1, "empty text": 1, "unknown label": 1},
    ("aihub", "majority"): {"no 3-of-5 rater majority": 7, "missing audio": 1, "empty text": 1, "unknown label": 1},
}  # fmt: skip
LOADERS = {"kemdy19": load_kemdy19, "kemdy20": load_kemdy20, "aihub": load_aihub263}


@pytest.mark.parametrize("corpus, option", list(EXPECTED_SKIPS))
def test_report_accounts_for_every_row(corpora_dir, corpus, option):
    dataset, report = LOADERS[corpus](corpora_dir[corpus], option, return_report=True)
    assert report.rows_read == report.kept + sum(report.skipped.values())
    assert report.kept == len(dataset) == sum(report.audio_formats.values())
    assert dict(report.skipped) == EXPECTED_SKIPS[corpus, option]
    names = dataset.features["label"].names
    assert report.labels == {label: Counter(names[i] for i in dataset["label"])[label] for label in EMOTION_LABELS}
    assert json.loads(json.dumps(report.to_dict()))["kept"] == report.kept
    assert f"kept{' ' * 5}" in str(report) and "rows read" in str(report)


def test_wrong_root_names_the_expected_files(corpora_dir):
    with pytest.raises(FileNotFoundError, match=r"no annotation/Session\{NN\}_\{F,M\}_res\.csv under .*KEMDy20"):
        load_kemdy19(corpora_dir["kemdy20"])
    with pytest.raises(FileNotFoundError, match=r"no annotation/Sess\{NN\}_eval\.csv under .*KEMDy19"):
        load_kemdy20(corpora_dir["kemdy19"])
    with pytest.raises(FileNotFoundError, match=r"none of 4차년도\.csv, 5차년도\.csv, 5차년도_2차\.csv under"):
        load_aihub263(corpora_dir["kemdy19"])


@pytest.mark.parametrize(
    "old, new, error",
    [
        (",2.3,", ",high,", r"Sess02_eval\.csv, line 5: field 'Valence': not a number: 'high'"),
        ("Sess02_script01_User004M_002", "Session2-script1", r"Sess02_eval\.csv, line 6: field 'Segment ID'"),
        ("\r\n4,", "\r\n4\r\n4,", r"Sess02_eval\.csv, line 6: expected at least 7 columns, found 1"),
    ],
)
def test_malformed_annotation_names_file_line_and_field(corpora_dir, tmp_path, old, new, error):
    root = copy_corpus(corpora_dir["kemdy20"], tmp_path)
    path = root / "annotation" / "Sess02_eval.csv"
    text = path.read_bytes().decode("utf-8")
    assert text.count(old) == 1
    path.write_bytes(text.replace(old, new).encode("utf-8"))
    with pytest.raises(ValueError, match=error):
        load_kemdy20(root)


def test_loaders_reject_unknown_options(corpora_dir):
    with pytest.raises(ValueError, match="multi_label must be one of"):
        load_kemdy19(corpora_dir["kemdy19"], multi_label="vote")
    with pytest.raises(ValueError, match="rows must be one of"):
        load_kemdy19(corpora_dir["kemdy19"], rows="rater")
    with pytest.raises(ValueError, match="label_source must be one of"):
        load_aihub263(corpora_dir["aihub"], label_source="intensity")


def test_paper_dataset_drops_duplicate_texts_keeping_the_first(paper):
    splits, report = paper
    ids, texts = both_splits(splits, "id"), both_splits(splits, "text")
    assert len(set(texts)) == len(texts)
    assert "Sess01_script01_User001F_001" not in ids  # KEMDy20's '아 친구들도?' repeats KEMDy19's Sess02_script01_F001
    loaded, deduplicated = report.stages["loaded"], report.stages["deduplicated"]
    assert Counter(loaded) - Counter(deduplicated) == Counter(neutral=1)


def test_paper_dataset_drops_texts_under_two_hangul_syllables(paper):
    splits, report = paper
    ids = both_splits(splits, "id")
    assert "Sess01_impro01_F002" not in ids and "Sess01_script02_User002M_001" not in ids  # '네.', '응'
    assert min(count_hangul_syllables(text) for text in both_splits(splits, "text")) >= 2
    assert report.stages["deduplicated"]["neutral"] - report.stages[">= 2 syllables"]["neutral"] == 2


def test_paper_dataset_downsamples_neutral_to_the_largest_other_class(paper):
    stages = paper[1].stages
    largest_other = max(count for label, count in stages[">= 2 syllables"].items() if label != "neutral")
    assert stages[">= 2 syllables"]["neutral"] > largest_other
    assert stages["used"]["neutral"] == largest_other
    assert {label: count for label, count in stages["used"].items() if label != "neutral"} == {
        label: count for label, count in stages[">= 2 syllables"].items() if label != "neutral"
    }


@pytest.mark.parametrize("corpora", [("kemdy19", "kemdy20"), ("aihub",)])
def test_paper_dataset_splits_every_class_8_to_2_within_one_row(corpora_dir, corpora):
    roots = {f"{corpus}_dir": corpora_dir[corpus] for corpus in corpora}
    splits, report = build_paper_dataset(**roots, return_report=True)
    for label in EMOTION_LABELS:
        used, validation = report.stages["used"][label], report.stages["validation"][label]
        assert abs(validation - 0.2 * used) <= 1
        assert report.stages["train"][label] + validation == used
    assert not set(splits["train"]["id"]) & set(splits["validation"]["id"])


def test_stratified_validation_is_within_one_row_per_class_on_imbalanced_labels():
    labels = np.repeat(np.arange(7), [13, 7, 3, 120, 51, 22, 9]).tolist()
    validation = _stratified_validation(list(range(len(labels))), labels, 0.2, np.random.default_rng(0))
    counts = Counter(labels[index] for index in validation)
    for label, size in Counter(labels).items():
        assert abs(counts[label] - 0.2 * size) <= 0.5 + 1e-9


def test_paper_dataset_same_seed_gives_the_same_split(corpora_dir, paper):
    again = build_paper_dataset(corpora_dir["kemdy19"], corpora_dir["kemdy20"], seed=42)
    other = build_paper_dataset(corpora_dir["kemdy19"], corpora_dir["kemdy20"], seed=7)
    assert list(again["validation"]["id"]) == list(paper[0]["validation"]["id"])
    assert list(again["train"]["id"]) == list(paper[0]["train"]["id"])
    assert list(other["validation"]["id"]) != list(paper[0]["validation"]["id"])


def test_session_split_puts_no_session_on_both_sides(corpora_dir):
    splits, report = build_paper_dataset(
        corpora_dir["kemdy19"], corpora_dir["kemdy20"], split_by="session", return_report=True
    )
    sessions = {name: set(zip(split["corpus"], split["session"])) for name, split in splits.items()}
    assert sessions["validation"] and sessions["train"]
    assert not sessions["train"] & sessions["validation"]
    assert len(sessions["validation"]) == 1  # round(0.2 * 5 sessions)
    assert "speaker-independent" in str(report)


def test_session_split_needs_session_ids(corpora_dir):
    with pytest.raises(ValueError, match="AI-Hub 263 has none"):
        build_paper_dataset(aihub_dir=corpora_dir["aihub"], split_by="session")


def test_paper_dataset_keeps_aihub_separate_from_kemdy(corpora_dir):
    with pytest.raises(ValueError, match="pass aihub_dir alone"):
        build_paper_dataset(corpora_dir["kemdy19"], aihub_dir=corpora_dir["aihub"])


def test_paper_report_renders_the_stages_beside_table_4_and_serialises_to_json(corpora_dir, capsys):
    _, report = build_paper_dataset(corpora_dir["kemdy19"], corpora_dir["kemdy20"], return_report=True)
    assert capsys.readouterr().out == ""  # the caller decides where the report goes
    lines = str(report).splitlines()
    assert "KEMDy19 (rows='speaker', multi_label='drop') + KEMDy20 (multi_label='drop')" in lines[0]
    assert lines[1].split() == [
        "emotion", "loaded", "deduplicated", ">=", "2", "syllables", "Table", "4", "collected", "used", "Table", "4",
        "final", "train", "validation",
    ]  # fmt: skip
    assert lines[2 + EMOTION_LABELS.index("fear")].split()[:6] == ["fear", "2", "2", "2", "840", "2"]
    assert lines[9].split()[:7] == ["total", "25", "24", "22", "22820", "20", "10381"]
    assert lines[-1] == "sum of |this run - Table 4| over emotions: collected 22798, final 10361"
    saved = json.loads(json.dumps(report.to_dict()))
    assert [load["corpus"] for load in saved["loads"]] == ["KEMDy19", "KEMDy20"]
    assert saved["stages"]["used"] == report.stages["used"]
    assert saved["table_4"]["collected"]["stage"] == ">= 2 syllables"
    assert saved["table_4"]["collected"]["this_run"] == report.stages[">= 2 syllables"]
    assert saved["table_4"]["final"]["paper"]["neutral"] == 2643
    assert saved["table_4"]["final"]["absolute_difference"] == 10361


def test_paper_report_has_no_table_4_columns_for_data_table_4_does_not_count(corpora_dir):
    for roots in ({"kemdy20_dir": corpora_dir["kemdy20"]}, {"aihub_dir": corpora_dir["aihub"]}):
        _, report = build_paper_dataset(**roots, return_report=True)
        assert "Table 4" not in str(report) and "table_4" not in report.to_dict()
        assert report.stage_table()[0] == ("emotion", "loaded", "deduplicated", ">= 2 syllables", "used", "train",
                                           "validation")  # fmt: skip
