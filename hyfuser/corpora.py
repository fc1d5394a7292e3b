"""Loaders for KEMDy19, KEMDy20 v1.1 and AI-Hub 263 (감정 분류를 위한 대화 음성 데이터셋).

The corpora are read as released; docs/datasets.md describes their layouts and quirks. Each loader returns a
`datasets.Dataset` with one row per usable utterance:

    id, corpus, session, speaker (both None for AI-Hub 263, which has no speaker ids), text (cleaned), raw_text,
    audio (absolute path; the processor reads and resamples the file itself), label (`ClassLabel` over
    `EMOTION_LABELS`), valence, arousal (KEMDy rater means on 1-5, None for AI-Hub 263).

Nothing is dropped silently. Pass `return_report=True` to get `(dataset, LoadReport)` instead: the report accounts
for every annotation row (`rows_read == kept + sum(skipped.values())`), counts kept rows per label and per audio
format, audio files that no row names, and every correction made on the way (label aliases, rewritten ids,
transcript encodings). `str(report)` is a readable table and `report.to_dict()` is JSON. A malformed file raises a
`ValueError` naming the file, the line and the field; a root without the expected files raises a
`FileNotFoundError` naming what was expected.

The text column is cleaned by `hyfuser.corpus_reading.clean_transcript` (its rules are in that module's docstring);
`hyfuser.splits.build_paper_dataset` applies the paper's preprocessing and split to these loaders' rows.
"""

import itertools
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from datasets import Dataset

from hyfuser.corpus_reading import (
    LoadReport,
    RowCollector,
    check_choice,
    count_hangul_syllables,
    decode_strictly,
    float_or_none,
    malformed_error,
    read_csv,
)

MULTI_LABEL_POLICIES = ("drop", "first")
"""KEMDy rows whose rater tie lists several emotions joined by ';': drop them, or keep the first label as written."""

KEMDY19_ROWS = {
    "speaker": "each actor's own segments from the actor's own file: the speaker's emotion",
    "listener": "each actor's partner's segments: the listener's reaction",
    "both": "every row of both actors' files",
}
"""KEMDy19 rows to keep, and what they hold. Each actor's file rates every segment of the session with that actor's
emotion, so the same segment has a speaker row and a listener row. The paper does not say which rows it used."""

LABEL_SOURCES = ("situation", "majority")
"""AI-Hub 263 label: the scripted emotion `상황`, or the emotion that at least 3 of the 5 raters chose. The paper does
not say which label it used."""

AIHUB_RELEASES = ("4차년도", "5차년도", "5차년도_2차")
"""AI-Hub 263 releases: `<release>.csv` next to the folder `<release>/` that its zip extracts to."""

AIHUB_COLUMNS = (
    "wav_id", "발화문", "상황",
    "1번 감정", "1번 감정세기", "2번 감정", "2번 감정세기", "3번 감정", "3번 감정세기",
    "4번 감정", "4번감정세기", "5번 감정", "5번 감정세기",  # the official files spell `4번감정세기` without a space
    "나이", "성별",
)  # fmt: skip


@dataclass(frozen=True)
class _KemdyLayout:
    """What differs between KEMDy19 and KEMDy20 (see docs/datasets.md); `_load_kemdy` reads both."""

    corpus: str
    annotation_file: re.Pattern  # groups: number, and gender where each actor has a file (KEMDy19)
    expected: str  # the annotation files a root must hold, named in the wrong-root error
    segment_id: re.Pattern  # groups: number, dialogue, gender, and user where the id names one (KEMDy20)
    id_column: int  # "Segment ID"; the "Total Evaluation" emotion, valence and arousal follow it
    dialogue_folders: bool  # KEMDy19 keeps audio in wav/SessionNN/<dialogue>/, KEMDy20 flat in wav/SessionNN/


_DIALOGUE = r"(?P<dialogue>(?:script|impro)\d+)"
_KEMDY19 = _KemdyLayout(
    corpus="KEMDy19",
    annotation_file=re.compile(r"Session(?P<number>\d+)_(?P<gender>[FM])_res\.csv"),
    expected="annotation/Session{NN}_{F,M}_res.csv",
    segment_id=re.compile(rf"Sess(?P<number>\d+)_{_DIALOGUE}_(?P<gender>[FM])\d+"),
    id_column=9,
    dialogue_folders=True,
)
_KEMDY20 = _KemdyLayout(
    corpus="KEMDy20",
    annotation_file=re.compile(r"Sess(?P<number>\d+)_eval\.csv"),
    expected="annotation/Sess{NN}_eval.csv",
    segment_id=re.compile(rf"Sess(?P<number>\d+)_{_DIALOGUE}_(?P<user>User\d+(?P<gender>[FM]))_\d+"),
    id_column=3,
    dialogue_folders=False,
)


def _annotation_files(root: str, layout: _KemdyLayout) -> list[tuple[str, str, str | None]]:
    """(path, session number, actor gender or None) of every annotation file, in session order."""
    folder = os.path.join(root, "annotation")
    names = sorted(entry.name for entry in os.scandir(folder) if entry.is_file()) if os.path.isdir(folder) else []
    matches = [match for match in map(layout.annotation_file.fullmatch, names) if match]
    if not matches:
        raise FileNotFoundError(f"no {layout.expected} under {root}: not a {layout.corpus} root")
    return [
        (os.path.join(folder, match.string), match["number"], match.groupdict().get("gender")) for match in matches
    ]


def _index_files(folder: str, depth: int) -> set[str]:
    """Paths of the files exactly `depth` folders below `folder`, with one `os.scandir` per folder.

    Not a recursive glob: every KEMDy19 dialogue folder holds a `converted/` subfolder, with files named like the
    originals, that must never stand in for them.
    """
    folders = [folder]
    for _ in range(depth):
        folders = [entry.path for parent in folders for entry in os.scandir(parent) if entry.is_dir()]
    return {entry.path for parent in folders for entry in os.scandir(parent) if entry.is_file()}


def _read_transcript(path: str, collector: RowCollector) -> str:
    """One utterance's transcript with its lines joined.

    KEMDy19 writes UTF-8, KEMDy20 v1.1 CP949 (later versions may differ). Trying CP949 first would turn short
    UTF-8 texts into mojibake without an error ('좋아' -> '醫뗭븘'), while CP949 Hangul practically never decodes as
    UTF-8 into Hangul: so UTF-8 is kept when it yields Hangul or plain ASCII, and anything else is read as CP949.
    """
    with open(path, "rb") as file:
        data = file.read()
    try:
        text = data.decode("utf-8-sig")
        encoding = "ascii" if text.isascii() else "utf-8" if count_hangul_syllables(text) else "cp949"
    except UnicodeDecodeError:
        encoding = "cp949"
    if encoding == "cp949":
        text = decode_strictly(data, encoding, path)
    collector.note(f"transcripts read as {encoding}")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1:
        collector.note("multi-line transcript joined")
    return " ".join(lines)


@dataclass(frozen=True)
class _KemdyRow:
    """The fields of one annotation row that the loader uses."""

    segment_id: str  # with the annotation file's session prefix, which names the audio and transcript
    session: str
    dialogue: str
    speaker: str
    gender: str
    emotion: str  # the Total Evaluation cell as written, e.g. 'neutral' or the tie 'neutral;happy'
    valence: float | None
    arousal: float | None


def _read_kemdy_annotation(path: str, layout: _KemdyLayout) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of each data row, after checking the first header line and skipping both."""
    rows = read_csv(path, "utf-8-sig")
    header = next(rows, (1, []))[1][layout.id_column : layout.id_column + 2]
    if header != ["Segment ID", "Total Evaluation"]:
        columns = f"header columns {layout.id_column + 1}-{layout.id_column + 2}"
        raise malformed_error(path, 1, f"{columns}: expected ['Segment ID', 'Total Evaluation'], found {header}")
    next(rows, None)  # the sub-header row: Emotion, Valence, Arousal under each evaluation
    return rows


def _parse_kemdy_row(
    cells: list[str], path: str, line: int, session_number: str, layout: _KemdyLayout, collector: RowCollector
) -> _KemdyRow:
    """The row's fields, read by position; a malformed row raises a `ValueError` naming the file, line and field.

    `session_number` is the annotation file's ("01" for `Sess01_eval.csv`).
    """
    first_rater_column = layout.id_column + 4
    if len(cells) < first_rater_column:
        raise malformed_error(path, line, f"expected at least {first_rater_column} columns, found {len(cells)}")
    segment_id, emotion, valence, arousal = cells[layout.id_column : first_rater_column]
    valence = float_or_none(valence, path, line, "Valence")
    arousal = float_or_none(arousal, path, line, "Arousal")
    match = layout.segment_id.fullmatch(segment_id)
    if match is None:
        raise malformed_error(path, line, f"field 'Segment ID': {segment_id!r} is not a {layout.corpus} id")
    session = f"Sess{session_number}"
    if match["number"] != session_number:
        # KEMDy20's Sess17_eval.csv has ids with another session's prefix; their files carry the annotation file's.
        segment_id = session + segment_id[match.end("number") :]
        collector.note(f"Segment ID prefix Sess{match['number']} rewritten to the file's {session}")
    return _KemdyRow(
        segment_id=segment_id,
        session=session,
        dialogue=match["dialogue"],
        # KEMDy20 ids name the participant; a KEMDy19 session has one actor of each gender.
        speaker=match.groupdict().get("user") or f"{session}{match['gender']}",
        gender=match["gender"],
        emotion=emotion,
        valence=valence,
        arousal=arousal,
    )


def _row_label(
    row: _KemdyRow, file_gender: str | None, rows: str, multi_label: str, collector: RowCollector
) -> str | None:
    """The row's label under the loader's row selection and tie policy, or None when the row is skipped (reason
    counted).

    A KEMDy19 actor's file labels every segment of the session with that actor's emotion: on the partner's segments
    it is the listener's reaction, so only the actor's own segments give speaker labels; `rows` (`KEMDY19_ROWS`)
    chooses. Rater ties list several emotions joined by ';' and follow `multi_label`.
    """
    own_segment = row.gender == file_gender
    if file_gender and rows == "speaker" and not own_segment:
        collector.skip("partner's segment (listener label)")
        return None
    if file_gender and rows == "listener" and own_segment:
        collector.skip("own segment (speaker label)")
        return None
    labels = [part.strip() for part in row.emotion.split(";") if part.strip()]
    if not labels:
        collector.skip("missing label")
        return None
    if len(labels) > 1 and multi_label == "drop":
        collector.skip("multi-label")
        return None
    if len(labels) > 1:
        collector.note("multi-label row: first label kept")
    return collector.label(labels[0])


def _load_kemdy(
    root: str | os.PathLike, layout: _KemdyLayout, multi_label: str, rows: str | None = None
) -> tuple[Dataset, LoadReport]:
    """Either KEMDy; `rows` (`KEMDY19_ROWS`) applies where each actor has an annotation file, i.e. KEMDy19."""
    check_choice("multi_label", multi_label, MULTI_LABEL_POLICIES)
    root = os.path.abspath(root)
    annotations = _annotation_files(root, layout)
    wav_folder = os.path.join(root, "wav")
    if not os.path.isdir(wav_folder):
        raise FileNotFoundError(f"no wav/Session{{NN}}/ folders under {root}: not a {layout.corpus} root")
    files = _index_files(wav_folder, depth=2 if layout.dialogue_folders else 1)
    options = {"multi_label": multi_label} if rows is None else {"rows": rows, "multi_label": multi_label}
    collector = RowCollector(layout.corpus, root, options)
    segment_ids = set()
    for path, number, file_gender in annotations:
        for line, cells in _read_kemdy_annotation(path, layout):
            collector.report.rows_read += 1
            if not any(cells):
                collector.skip("blank row")
                continue
            row = _parse_kemdy_row(cells, path, line, number, layout, collector)
            segment_ids.add(row.segment_id)
            label = _row_label(row, file_gender, rows, multi_label, collector)
            if label is None:
                continue
            # "both" keeps two rows per KEMDy19 segment; the listener's gets its own id.
            listener_row = rows == "both" and row.gender != file_gender
            folder = os.path.join(wav_folder, f"Session{number}")
            if layout.dialogue_folders:
                folder = os.path.join(folder, f"{row.session}_{row.dialogue}")
            audio, transcript = (os.path.join(folder, row.segment_id + suffix) for suffix in (".wav", ".txt"))
            collector.add(
                id=f"{row.segment_id}:listener" if listener_row else row.segment_id,
                label=label,
                audio=audio if audio in files else None,
                raw_text=_read_transcript(transcript, collector) if transcript in files else None,
                session=row.session,
                speaker=row.speaker,
                valence=row.valence,
                arousal=row.arousal,
            )
    wav_stems = (os.path.basename(file)[: -len(".wav")] for file in files if file.endswith(".wav"))
    return collector.finish(sum(stem not in segment_ids for stem in wav_stems))


def load_kemdy19(
    root: str | os.PathLike, multi_label: str = "drop", *, rows: str = "speaker", return_report: bool = False
) -> Dataset | tuple[Dataset, LoadReport]:
    """Load KEMDy19 (ETRI; 20 sessions of acted dialogues by 40 voice actors), by default with speaker labels.

    Expects `annotation/Session{NN}_{F,M}_res.csv` and `wav/Session{NN}/Sess{NN}_{script,impro}{NN}/<id>.wav|.txt`
    (UTF-8 transcripts). Both annotation files of a session list every segment, each with its own actor's emotions;
    only the rows for that actor's own segments are speaker labels (see docs/datasets.md, KEMDy19).

    Args:
        root: the KEMDy19 folder (also released as `KEMDy19_v1_3`).
        multi_label: rater ties are written 'neutral;happy'; `"drop"` skips them, `"first"` keeps the first label.
        rows: `"speaker"` keeps each actor's own segments from the actor's file, `"listener"` the partner's segments
            (labelled with the listener's reaction), `"both"` every row of both files; the listener row of a segment
            then has the id `<Segment ID>:listener`.
        return_report: also return the `LoadReport`.
    """
    check_choice("rows", rows, tuple(KEMDY19_ROWS))
    dataset, report = _load_kemdy(root, _KEMDY19, multi_label, rows)
    return (dataset, report) if return_report else dataset


def load_kemdy20(
    root: str | os.PathLike, multi_label: str = "drop", *, return_report: bool = False
) -> Dataset | tuple[Dataset, LoadReport]:
    """Load KEMDy20 v1.1 (ETRI; 40 sessions of free conversation by 80 adults).

    Expects `annotation/Sess{NN}_eval.csv` and flat `wav/Session{NN}/<id>.wav|.txt` (CP949 transcripts). The CSV has
    two header lines, the first naming `Segment ID` and `Total Evaluation` in columns 4-5 (its blank cells are ' ' in
    v1.1); only columns 1-7 (Numb, Wav start/end, Segment ID, Emotion, Valence, Arousal) are read, so the 30 rater
    columns may be absent. `disqust` is read as disgust, and an id whose session prefix differs from its file's
    (Sess17) is rewritten to the file's session, which names the audio and transcript.

    Args:
        root: the KEMDy20 folder (released as `KEMDy20_v1_1`).
        multi_label: rater ties are written 'happy;neutral;disqust'; `"drop"` skips them, `"first"` keeps the first.
        return_report: also return the `LoadReport`.
    """
    dataset, report = _load_kemdy(root, _KEMDY20, multi_label)
    return (dataset, report) if return_report else dataset


def kemdy20_annotated_times(root: str | os.PathLike) -> dict[str, tuple[float | None, float | None]]:
    """The `Wav` start and end (seconds; None where blank) of every KEMDy20 annotation row, by segment id as
    `load_kemdy20` writes it (the annotation file's session prefix): what the loader reads past, for replaying a
    session as one dialogue recording (`hyfuser.replay`)."""
    collector = RowCollector(_KEMDY20.corpus, os.path.abspath(root), {})
    times = {}
    for path, number, _ in _annotation_files(os.path.abspath(root), _KEMDY20):
        for line, cells in _read_kemdy_annotation(path, _KEMDY20):
            if any(cells):
                row = _parse_kemdy_row(cells, path, line, number, _KEMDY20, collector)
                times[row.segment_id] = tuple(
                    float_or_none(cells[column].strip(), path, line, name)
                    for column, name in ((1, "Wav start"), (2, "Wav end"))
                )
    return times


def _index_wav_stems(folder: str, collector: RowCollector) -> dict[str, str]:
    """`<wav_id>.wav` anywhere below a release folder, in one walk: folder names inside the zips vary by release."""
    if not os.path.isdir(folder):
        hint = f"; extract {folder}.zip there" if os.path.isfile(f"{folder}.zip") else ""
        raise FileNotFoundError(f"no audio folder {folder}{hint}")
    stems = {}
    for directory, subdirectories, names in os.walk(folder):
        subdirectories.sort()
        for name in sorted(names):
            stem, suffix = os.path.splitext(name)
            if suffix.lower() != ".wav":
                continue
            if stem in stems:
                collector.note("audio file name found twice (first kept)")
            stems.setdefault(stem, os.path.join(directory, name))
    return stems


def load_aihub263(
    root: str | os.PathLike, label_source: str = "situation", *, return_report: bool = False
) -> Dataset | tuple[Dataset, LoadReport]:
    """Load AI-Hub 263, 감정 분류를 위한 대화 음성 데이터셋 (dataSetSn=263; five raters per utterance).

    Expects any of the release CSVs `4차년도.csv`, `5차년도.csv`, `5차년도_2차.csv` (CP949, the exact 15-column header
    `AIHUB_COLUMNS`), each next to the folder its zip extracts to, holding `<wav_id>.wav` at any depth (e.g.
    `5차년도/5차_wav/`). The text is the `발화문` column; rows have no speaker or session. Label aliases (anger,
    sadness, happiness) are applied before voting.

    Args:
        root: the folder holding the release CSVs and folders.
        label_source: `"situation"` takes the scripted emotion `상황` (as most public loaders do; the paper does not
            say which label it used); `"majority"` takes the emotion chosen by at least 3 of the 5 raters and skips
            rows without one.
        return_report: also return the `LoadReport`.
    """
    check_choice("label_source", label_source, LABEL_SOURCES)
    root = os.path.abspath(root)
    releases = [release for release in AIHUB_RELEASES if os.path.isfile(os.path.join(root, f"{release}.csv"))]
    if not releases:
        expected = ", ".join(f"{release}.csv" for release in AIHUB_RELEASES)
        raise FileNotFoundError(f"none of {expected} under {root}: not an AI-Hub 263 root")
    collector = RowCollector("AI-Hub 263", root, {"label_source": label_source})
    orphan_audio = 0
    for release in releases:
        path = os.path.join(root, f"{release}.csv")
        audio = _index_wav_stems(os.path.join(root, release), collector)
        rows = read_csv(path, "cp949")
        header = next(rows, (1, []))[1]
        for index, (found, expected) in enumerate(itertools.zip_longest(header, AIHUB_COLUMNS)):
            if found != expected:
                raise malformed_error(path, 1, f"header column {index + 1}: expected {expected!r}, found {found!r}")
        wav_ids = set()
        for line, row in rows:
            collector.report.rows_read += 1
            if not any(row):
                collector.skip("blank row")
                continue
            if len(row) != len(AIHUB_COLUMNS):
                raise malformed_error(path, line, f"expected {len(AIHUB_COLUMNS)} columns, found {len(row)}")
            record = dict(zip(AIHUB_COLUMNS, row))
            wav_ids.add(record["wav_id"])
            if label_source == "situation":
                label = collector.label(record["상황"])
            else:
                votes = Counter(collector.label(record[f"{rater}번 감정"]) for rater in range(1, 6))
                label, count = votes.most_common(1)[0]
                if count < 3:
                    collector.skip("no 3-of-5 rater majority")
                    continue
            collector.add(
                id=record["wav_id"], label=label, audio=audio.get(record["wav_id"]), raw_text=record["발화문"]
            )
        orphan_audio += sum(stem not in wav_ids for stem in audio)
    dataset, report = collector.finish(orphan_audio)
    return (dataset, report) if return_report else dataset
