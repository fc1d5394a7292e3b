"""Loaders for KEMDy19, KEMDy20 v1.1 and AI-Hub 263 (감정 분류를 위한 대화 음성 데이터셋), and the paper's preprocessing.

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

Transcript cleaning (`clean_transcript`):
- the tags `b/ o/ n/ l/ u/ N/ c/ s/` go, but only as whole tags: a tag letter that follows a Latin letter belongs to
  a word, so 'SNS', 'BTS' or 'bus/' keep every letter. The one reversed tag seen in KEMDy19 (`/n`) goes too;
- `*` (uncertain word) and `/` (interjection mark) go; `+` becomes a space;
- parentheses mark overlapping speech, e.g. `... 정돈 (아니잖아)` and the partner's next line `(아니잖아+그럼) 뭐야.`
  (every `+` of KEMDy19 sits inside them). Which words belong to whom is unconfirmed, and they are audible
  in this segment's audio either way, so the words stay and only the brackets go (`+` separates them);
- whitespace is collapsed.

`build_paper_dataset` applies Section 5.1 of the paper: merge KEMDy19 + KEMDy20 (or take AI-Hub 263 alone), drop
duplicate texts, drop texts under two Hangul syllables, downsample neutral to the largest other class, split 8:2
(stratified by label: our choice, the paper only gives the ratio); it reports the counts after each stage beside the
paper's Table 4.
"""

import csv
import io
import itertools
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import soundfile
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, concatenate_datasets

try:
    from .configuration_hyfuser import EMOTION_LABELS
except ImportError:
    from configuration_hyfuser import EMOTION_LABELS

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

SPLITS = ("random", "session")
"""Validation split: random utterances stratified by label (the paper gives only the 8:2 ratio; stratifying is our
choice), or whole held-out sessions (KEMDy)."""

AIHUB_RELEASES = ("4차년도", "5차년도", "5차년도_2차")
"""AI-Hub 263 releases: `<release>.csv` next to the folder `<release>/` that its zip extracts to."""

AIHUB_COLUMNS = (
    "wav_id", "발화문", "상황",
    "1번 감정", "1번 감정세기", "2번 감정", "2번 감정세기", "3번 감정", "3번 감정세기",
    "4번 감정", "4번감정세기", "5번 감정", "5번 감정세기",  # the official files spell `4번감정세기` without a space
    "나이", "성별",
)  # fmt: skip

FEATURES = Features(
    {
        "id": Value("string"),
        "corpus": Value("string"),
        "session": Value("string"),
        "speaker": Value("string"),
        "text": Value("string"),
        "raw_text": Value("string"),
        "audio": Value("string"),
        "label": ClassLabel(names=list(EMOTION_LABELS)),
        "valence": Value("float64"),
        "arousal": Value("float64"),
    }
)

PAPER_STAGES = ("loaded", "deduplicated", ">= 2 syllables", "used", "train", "validation")
"""Stages of `build_paper_dataset`, each counting the rows left after it."""

TABLE_4 = {
    # The paper's Table 4, "KEMDy data number by emotion" (KEMDy19 + KEMDy20 merged), column by column.
    "collected": {"angry": 1352, "disgust": 446, "fear": 840, "happy": 2643, "neutral": 15082, "sad": 1028,
                  "surprise": 1429},
    "final": {"angry": 1352, "disgust": 446, "fear": 840, "happy": 2643, "neutral": 2643, "sad": 1028,
              "surprise": 1429},
}  # fmt: skip

TABLE_4_STAGES = {"collected": ">= 2 syllables", "final": "used"}
"""The stage each Table 4 column counts. "Collected Data" equals "Final Data Used" for every class but neutral, so it
counts rows after the duplicate and syllable filters, not as loaded; "Final Data Used" follows the neutral
downsampling."""

_LABEL_ALIASES = {"disqust": "disgust", "anger": "angry", "sadness": "sad", "happiness": "happy"}
"""KEMDy20 misspells disgust; AI-Hub 263 says anger (4차년도), sadness and happiness."""

_TAG = re.compile(r"(?<![A-Za-z])(?:[bonluNcs]/|/[bonluNcs](?![A-Za-z]))")
_HANGUL_SYLLABLE = re.compile("[가-힣]")


def clean_transcript(text: str) -> str:
    """Remove the KEMDy annotation marks and keep every spoken word (rules in the module docstring)."""
    text = _TAG.sub(" ", text)
    text = re.sub(r"[*/]", "", text)
    text = re.sub(r"[+()]", " ", text)
    return " ".join(text.split())


def count_hangul_syllables(text: str) -> int:
    """Precomposed Hangul syllables (가-힣) in `text`: the paper's length measure for "fewer than two syllables"."""
    return len(_HANGUL_SYLLABLE.findall(text))


def _table(title: str, header: tuple[str, ...], rows: list[tuple]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    cells = [header, *[tuple(str(cell) for cell in row) for row in rows]]
    widths = [max(len(row[index]) for row in cells) for index in range(len(header))]
    lines = ["  ".join([row[0].ljust(widths[0]), *map(str.rjust, row[1:], widths[1:])]) for row in cells]
    return "\n".join([title, *lines])


@dataclass
class LoadReport:
    """What one loader call read, kept and skipped, so that no row disappears unexplained.

    `rows_read` counts annotation rows (header lines excluded); each ends either kept (counted in `labels`) or in
    exactly one `skipped` reason. `orphan_audio` counts audio files that no annotation row names: they are not rows,
    so they stand outside that sum. `notes` counts corrections and observations such as label aliases.
    """

    corpus: str
    root: str
    options: dict[str, str]
    rows_read: int = 0
    skipped: Counter = field(default_factory=Counter)
    labels: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EMOTION_LABELS, 0))
    audio_formats: Counter = field(default_factory=Counter)
    orphan_audio: int = 0
    notes: Counter = field(default_factory=Counter)

    @property
    def kept(self) -> int:
        return sum(self.labels.values())

    @property
    def options_text(self) -> str:
        """The loader options as "name='value', ...", for titles."""
        return ", ".join(f"{name}={value!r}" for name, value in self.options.items())

    def to_dict(self) -> dict:
        """JSON-serialisable form, with `kept` spelled out."""
        return {
            "corpus": self.corpus,
            "root": self.root,
            "options": dict(self.options),
            "rows_read": self.rows_read,
            "kept": self.kept,
            "skipped": dict(self.skipped),
            "labels": dict(self.labels),
            "audio_formats": dict(self.audio_formats),
            "orphan_audio": self.orphan_audio,
            "notes": dict(self.notes),
        }

    def __str__(self) -> str:
        rows = [("rows read", self.rows_read), ("kept", self.kept)]
        rows += [(f"skipped: {reason}", count) for reason, count in self.skipped.most_common()]
        rows += [(f"label {label}", count) for label, count in self.labels.items()]
        rows += [(f"audio {audio_format}", count) for audio_format, count in self.audio_formats.most_common()]
        rows += [("orphan audio files (no row)", self.orphan_audio)]
        rows += [(f"note: {note}", count) for note, count in self.notes.most_common()]
        return _table(f"{self.corpus} load report ({self.root}; {self.options_text})", ("", "rows"), rows)


@dataclass
class PaperDatasetReport:
    """Label counts after each stage of `build_paper_dataset` (beside the paper's Table 4 for a KEMDy19 + KEMDy20
    merge, plus the split) and its loads."""

    loads: list[LoadReport]
    stages: dict[str, dict[str, int]]
    split_by: str
    seed: int
    validation_fraction: float

    @property
    def compares_to_table_4(self) -> bool:
        """Table 4 counts the KEMDy19 + KEMDy20 merge; any other data has nothing to compare with."""
        return sorted(report.corpus for report in self.loads) == ["KEMDy19", "KEMDy20"]

    def table_4_differences(self) -> dict[str, int]:
        """Per Table 4 column, the sum over emotions of |this run's count - the paper's|: how far this run is."""
        return {
            column: sum(abs(self.stages[TABLE_4_STAGES[column]][label] - count) for label, count in paper.items())
            for column, paper in TABLE_4.items()
        }

    def to_dict(self) -> dict:
        """JSON-serialisable form; for a KEMDy19 + KEMDy20 merge, each Table 4 column beside the stage it counts."""
        result = {
            "loads": [report.to_dict() for report in self.loads],
            "stages": {stage: dict(counts) for stage, counts in self.stages.items()},
            "split_by": self.split_by,
            "seed": self.seed,
            "validation_fraction": self.validation_fraction,
        }
        if self.compares_to_table_4:
            differences = self.table_4_differences()
            result["table_4"] = {
                column: {
                    "stage": stage,
                    "paper": dict(TABLE_4[column]),
                    "this_run": dict(self.stages[stage]),
                    "absolute_difference": differences[column],
                }
                for column, stage in TABLE_4_STAGES.items()
            }
        return result

    def stage_table(self) -> tuple[tuple[str, ...], list[tuple]]:
        """(header, rows) of the per-emotion counts after each stage, with a total row, and for a KEMDy19 + KEMDy20
        merge each Table 4 column right after the stage it counts: what `str(report)` and the model card render."""
        columns = []
        for stage in PAPER_STAGES:
            columns.append((stage, self.stages[stage]))
            columns += [
                (f"Table 4 {column}", TABLE_4[column])
                for column, counted in TABLE_4_STAGES.items()
                if counted == stage and self.compares_to_table_4
            ]
        rows = [(label, *(counts[label] for _, counts in columns)) for label in EMOTION_LABELS]
        rows.append(("total", *(sum(counts.values()) for _, counts in columns)))
        return ("emotion", *(name for name, _ in columns)), rows

    def __str__(self) -> str:
        corpora = " + ".join(f"{report.corpus} ({report.options_text})" for report in self.loads)
        split = (
            "random utterances stratified by label"
            if self.split_by == "random"
            else "whole sessions held out (speaker-independent)"
        )
        title = f"{corpora}: rows per emotion"
        footer = f"split: {split}, validation_fraction={self.validation_fraction}, seed={self.seed}"
        if self.compares_to_table_4:
            title += " after each stage, beside the paper's Table 4"
            differences = ", ".join(f"{column} {count}" for column, count in self.table_4_differences().items())
            footer += f"\nsum of |this run - Table 4| over emotions: {differences}"
        else:
            title += " after each stage"
        return _table(title, *self.stage_table()) + "\n" + footer


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _malformed(path: str, line: int, message: str) -> ValueError:
    return ValueError(f"{path}, line {line}: {message}")


def _decode(data: bytes, encoding: str, path: str) -> str:
    """`data` decoded strictly; undecodable bytes raise a `ValueError` naming the file and line."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise _malformed(path, line, f"not {encoding} text ({error.reason})") from None


def _read_csv(path: str, encoding: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, whitespace-stripped cells) for every record, header lines included."""
    with open(path, "rb") as file:
        reader = csv.reader(io.StringIO(_decode(file.read(), encoding, path), newline=""))
    try:
        for row in reader:
            yield reader.line_num, [cell.strip() for cell in row]
    except csv.Error as error:
        raise _malformed(path, reader.line_num, str(error)) from None


def _float_or_none(cell: str, path: str, line: int, name: str) -> float | None:
    if not cell:
        return None
    try:
        return float(cell)
    except ValueError:
        raise _malformed(path, line, f"field {name!r}: not a number: {cell!r}") from None


def _audio_format(path: str) -> str | None:
    """The header's sampling rate and channel count as "16000 Hz, 1 ch", or None if the file cannot be read.

    The corpora are said to be 16 kHz mono, but no file header has confirmed it: record what is there and let the
    processor resample and down-mix.
    """
    try:
        with soundfile.SoundFile(path) as audio:  # reads the header only
            return f"{audio.samplerate} Hz, {audio.channels} ch"
    except RuntimeError:  # soundfile.LibsndfileError: empty, truncated or not audio
        return None


class _Collector:
    """Accumulates the kept rows of one loader call and its `LoadReport`."""

    def __init__(self, corpus: str, root: str, options: dict[str, str]):
        self.report = LoadReport(corpus=corpus, root=root, options=options)
        self.columns: dict[str, list] = {name: [] for name in FEATURES}
        self.ids: set[str] = set()

    def skip(self, reason: str) -> None:
        self.report.skipped[reason] += 1

    def note(self, note: str) -> None:
        self.report.notes[note] += 1

    def label(self, raw: str) -> str:
        """Lower-case, strip and de-alias a corpus label; whether it is one of `EMOTION_LABELS` is `add`'s check."""
        label = raw.strip().lower()
        if label in _LABEL_ALIASES:
            self.note(f"label {label!r} read as {_LABEL_ALIASES[label]!r}")
            label = _LABEL_ALIASES[label]
        return label

    def add(
        self,
        *,
        id: str,
        label: str,
        audio: str | None,
        raw_text: str | None,
        session: str | None = None,
        speaker: str | None = None,
        valence: float | None = None,
        arousal: float | None = None,
    ) -> None:
        """Keep the row, or count the first reason it cannot be used."""
        if label not in EMOTION_LABELS:
            self.note(f"unknown label {label!r}")
            return self.skip("unknown label")
        if id in self.ids:
            return self.skip("duplicate id")
        if audio is None:
            return self.skip("missing audio")
        audio_format = _audio_format(audio)
        if audio_format is None:
            return self.skip("unreadable audio")
        if raw_text is None:
            return self.skip("missing transcript")
        text = clean_transcript(raw_text)
        if not text:
            return self.skip("empty text")
        self.ids.add(id)
        row = {
            "id": id,
            "corpus": self.report.corpus,
            "session": session,
            "speaker": speaker,
            "text": text,
            "raw_text": raw_text,
            "audio": audio,
            "label": label,
            "valence": valence,
            "arousal": arousal,
        }
        for name, value in row.items():
            self.columns[name].append(value)
        self.report.labels[label] += 1
        self.report.audio_formats[audio_format] += 1

    def finish(self, orphan_audio: int) -> tuple[Dataset, LoadReport]:
        self.report.orphan_audio = orphan_audio
        return Dataset.from_dict(self.columns, features=FEATURES), self.report


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
        (os.path.join(folder, match.string), match["number"], match.groupdict().get("gender"))
        for match in matches
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


def _read_transcript(path: str, collector: _Collector) -> str:
    """One utterance's transcript with its lines joined.

    KEMDy19 writes UTF-8, KEMDy20 v1.1 CP949 (later versions may differ). Trying CP949 first would turn short
    UTF-8 texts into mojibake without an error ('좋아' -> '醫뗭븘'), while CP949 Hangul practically never decodes as
    UTF-8 into Hangul: so UTF-8 is kept when it yields Hangul or plain ASCII, and anything else is read as CP949.
    """
    with open(path, "rb") as file:
        data = file.read()
    try:
        text = data.decode("utf-8-sig")
        encoding = "ascii" if text.isascii() else "utf-8" if _HANGUL_SYLLABLE.search(text) else "cp949"
    except UnicodeDecodeError:
        encoding = "cp949"
    if encoding == "cp949":
        text = _decode(data, encoding, path)
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
    rows = _read_csv(path, "utf-8-sig")
    header = next(rows, (1, []))[1][layout.id_column : layout.id_column + 2]
    if header != ["Segment ID", "Total Evaluation"]:
        columns = f"header columns {layout.id_column + 1}-{layout.id_column + 2}"
        raise _malformed(path, 1, f"{columns}: expected ['Segment ID', 'Total Evaluation'], found {header}")
    next(rows, None)  # the sub-header row: Emotion, Valence, Arousal under each evaluation
    return rows


def _parse_kemdy_row(
    cells: list[str], path: str, line: int, session_number: str, layout: _KemdyLayout, collector: _Collector
) -> _KemdyRow:
    """The row's fields, read by position; a malformed row raises a `ValueError` naming the file, line and field.

    `session_number` is the annotation file's ("01" for `Sess01_eval.csv`).
    """
    first_rater_column = layout.id_column + 4
    if len(cells) < first_rater_column:
        raise _malformed(path, line, f"expected at least {first_rater_column} columns, found {len(cells)}")
    segment_id, emotion, valence, arousal = cells[layout.id_column : first_rater_column]
    valence = _float_or_none(valence, path, line, "Valence")
    arousal = _float_or_none(arousal, path, line, "Arousal")
    match = layout.segment_id.fullmatch(segment_id)
    if match is None:
        raise _malformed(path, line, f"field 'Segment ID': {segment_id!r} is not a {layout.corpus} id")
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
    row: _KemdyRow, file_gender: str | None, rows: str, multi_label: str, collector: _Collector
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
    _check_choice("multi_label", multi_label, MULTI_LABEL_POLICIES)
    root = os.path.abspath(root)
    annotations = _annotation_files(root, layout)
    wav_folder = os.path.join(root, "wav")
    if not os.path.isdir(wav_folder):
        raise FileNotFoundError(f"no wav/Session{{NN}}/ folders under {root}: not a {layout.corpus} root")
    files = _index_files(wav_folder, depth=2 if layout.dialogue_folders else 1)
    options = {"multi_label": multi_label} if rows is None else {"rows": rows, "multi_label": multi_label}
    collector = _Collector(layout.corpus, root, options)
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
    _check_choice("rows", rows, tuple(KEMDY19_ROWS))
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


def _index_wav_stems(folder: str, collector: _Collector) -> dict[str, str]:
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
    _check_choice("label_source", label_source, LABEL_SOURCES)
    root = os.path.abspath(root)
    releases = [release for release in AIHUB_RELEASES if os.path.isfile(os.path.join(root, f"{release}.csv"))]
    if not releases:
        expected = ", ".join(f"{release}.csv" for release in AIHUB_RELEASES)
        raise FileNotFoundError(f"none of {expected} under {root}: not an AI-Hub 263 root")
    collector = _Collector("AI-Hub 263", root, {"label_source": label_source})
    orphan_audio = 0
    for release in releases:
        path = os.path.join(root, f"{release}.csv")
        audio = _index_wav_stems(os.path.join(root, release), collector)
        rows = _read_csv(path, "cp949")
        header = next(rows, (1, []))[1]
        for index, (found, expected) in enumerate(itertools.zip_longest(header, AIHUB_COLUMNS)):
            if found != expected:
                raise _malformed(path, 1, f"header column {index + 1}: expected {expected!r}, found {found!r}")
        wav_ids = set()
        for line, row in rows:
            collector.report.rows_read += 1
            if not any(row):
                collector.skip("blank row")
                continue
            if len(row) != len(AIHUB_COLUMNS):
                raise _malformed(path, line, f"expected {len(AIHUB_COLUMNS)} columns, found {len(row)}")
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
            collector.add(id=record["wav_id"], label=label, audio=audio.get(record["wav_id"]), raw_text=record["발화문"])
        orphan_audio += sum(stem not in wav_ids for stem in audio)
    dataset, report = collector.finish(orphan_audio)
    return (dataset, report) if return_report else dataset


def _label_counts(indices: list[int], labels: list[int]) -> dict[str, int]:
    counts = Counter(labels[index] for index in indices)
    return {name: counts[label] for label, name in enumerate(EMOTION_LABELS)}


def _downsample_neutral(indices: list[int], labels: list[int], rng: np.random.Generator) -> list[int]:
    """Keep a random subset of the neutral rows as large as the largest other class (paper 5.1)."""
    neutral = EMOTION_LABELS.index("neutral")
    neutral_rows = [index for index in indices if labels[index] == neutral]
    others = Counter(labels[index] for index in indices if labels[index] != neutral)
    target = max(others.values(), default=0)
    if len(neutral_rows) <= target:
        return indices
    kept = set(rng.choice(neutral_rows, size=target, replace=False).tolist())
    return [index for index in indices if labels[index] != neutral or index in kept]


def _stratified_validation(
    indices: list[int], labels: list[int], fraction: float, rng: np.random.Generator
) -> set[int]:
    """`round(fraction * n)` random rows of each class of n rows: every class is split to within one row."""
    validation = set()
    for label in range(len(EMOTION_LABELS)):
        rows = [index for index in indices if labels[index] == label]
        validation.update(rng.permutation(rows)[: round(fraction * len(rows))].tolist())
    return validation


def _session_validation(
    indices: list[int], corpora: list[str], sessions: list[str | None], fraction: float, rng: np.random.Generator
) -> set[int]:
    """Every row of `round(fraction * n)` random sessions (at least one, never all), so no speaker is on both sides.

    A session is (corpus, session): KEMDy19 Sess01 and KEMDy20 Sess01 are different people.
    """
    if any(sessions[index] is None for index in indices):
        raise ValueError("split_by='session' needs session ids; AI-Hub 263 has none (split_by='random' works)")
    groups = sorted({(corpora[index], sessions[index]) for index in indices})
    if len(groups) < 2:
        raise ValueError(f"split_by='session' needs at least 2 sessions, found {len(groups)}")
    count = min(len(groups) - 1, max(1, round(fraction * len(groups))))
    held_out = {groups[group] for group in rng.permutation(len(groups))[:count]}
    return {index for index in indices if (corpora[index], sessions[index]) in held_out}


def build_paper_dataset(
    kemdy19_dir: str | os.PathLike | None = None,
    kemdy20_dir: str | os.PathLike | None = None,
    aihub_dir: str | os.PathLike | None = None,
    *,
    seed: int = 42,
    validation_fraction: float = 0.2,
    split_by: str = "random",
    multi_label: str = "drop",
    kemdy19_rows: str = "speaker",
    label_source: str = "situation",
    return_report: bool = False,
) -> DatasetDict | tuple[DatasetDict, PaperDatasetReport]:
    """The paper's data (Section 5.1) as `DatasetDict(train, validation)`; its report holds the per-stage counts,
    beside Table 4's for a KEMDy19 + KEMDy20 merge.

    Steps: load and merge KEMDy19 + KEMDy20 (either alone works), or AI-Hub 263 on its own (the paper's second,
    separate experiment); drop rows whose cleaned text already occurred (the first, in load order, stays); drop texts
    with fewer than 2 Hangul syllables; randomly downsample neutral to the size of the largest other class; split.

    Args:
        kemdy19_dir, kemdy20_dir, aihub_dir: corpus roots, see `load_kemdy19`, `load_kemdy20`, `load_aihub263`.
        seed: seeds the neutral downsampling and the split; the same seed gives the same split.
        validation_fraction: share of rows held out (the paper's 8:2 is 0.2).
        split_by: `"random"` (a random 8:2 split like the paper's, stratified by our choice): each class split to
            within one row of the fraction. `"session"` (speaker-independent, KEMDy only): whole sessions held out,
            about `validation_fraction` of them.
        multi_label: KEMDy tie policy, see `load_kemdy19`.
        kemdy19_rows: KEMDy19 row selection (`KEMDY19_ROWS`), see `load_kemdy19`. Table 4 cannot be reached with
            speaker labels, and the report shows how close each selection comes.
        label_source: AI-Hub 263 label, see `load_aihub263`.
        return_report: also return the `PaperDatasetReport` (counts per stage and the load reports).
    """
    _check_choice("split_by", split_by, SPLITS)
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    if aihub_dir is not None and (kemdy19_dir is not None or kemdy20_dir is not None):
        raise ValueError("AI-Hub 263 is the paper's separate experiment: pass aihub_dir alone, or the KEMDy dirs")
    loaded = []
    if kemdy19_dir is not None:
        loaded.append(load_kemdy19(kemdy19_dir, multi_label, rows=kemdy19_rows, return_report=True))
    if kemdy20_dir is not None:
        loaded.append(load_kemdy20(kemdy20_dir, multi_label, return_report=True))
    if aihub_dir is not None:
        loaded.append(load_aihub263(aihub_dir, label_source, return_report=True))
    if not loaded:
        raise ValueError("pass kemdy19_dir and/or kemdy20_dir, or aihub_dir")

    merged = concatenate_datasets([dataset for dataset, _ in loaded])
    columns = merged.select_columns(["text", "label", "corpus", "session"]).to_dict()
    texts, labels = columns["text"], columns["label"]
    first_row_of_text = {}
    for index, text in enumerate(texts):
        first_row_of_text.setdefault(text, index)
    deduplicated = list(first_row_of_text.values())
    long_enough = [index for index in deduplicated if count_hangul_syllables(texts[index]) >= 2]
    rng = np.random.default_rng(seed)
    used = _downsample_neutral(long_enough, labels, rng)
    if split_by == "random":
        held_out = _stratified_validation(used, labels, validation_fraction, rng)
    else:
        held_out = _session_validation(used, columns["corpus"], columns["session"], validation_fraction, rng)
    train = [index for index in used if index not in held_out]
    validation = [index for index in used if index in held_out]

    stages = (range(len(texts)), deduplicated, long_enough, used, train, validation)
    report = PaperDatasetReport(
        loads=[load_report for _, load_report in loaded],
        stages={stage: _label_counts(indices, labels) for stage, indices in zip(PAPER_STAGES, stages)},
        split_by=split_by,
        seed=seed,
        validation_fraction=validation_fraction,
    )
    splits = DatasetDict(train=merged.select(train), validation=merged.select(validation))
    return (splits, report) if return_report else splits


def _session_keys(rows: Dataset) -> list[tuple[str, str | None]]:
    """(corpus, session) of every row: KEMDy19 Sess01 and KEMDy20 Sess01 are different people."""
    columns = rows.select_columns(["corpus", "session"]).to_dict()
    return list(zip(columns["corpus"], columns["session"]))


def session_folds(rows: Dataset, folds: int, seed: int = 42) -> list[list[int]]:
    """The validation rows of each fold of a K-fold cross-validation grouped by (corpus, session).

    Every session lands in exactly one fold, so no speaker is ever on both sides of a fold. Sessions are shuffled
    by `seed`, then dealt largest first to the fold with the fewest rows so far, which keeps the folds' sizes close.
    """
    keys = _session_keys(rows)
    if any(session is None for _, session in keys):
        raise ValueError("session folds need session ids; AI-Hub 263 rows have none (use a random split)")
    sizes = Counter(keys)
    if not 2 <= folds <= len(sizes):
        raise ValueError(f"folds must be between 2 and the number of sessions ({len(sizes)}), got {folds}")
    shuffled = [sorted(sizes)[index] for index in np.random.default_rng(seed).permutation(len(sizes))]
    fold_of, fold_sizes = {}, [0] * folds
    for key in sorted(shuffled, key=lambda key: -sizes[key]):  # stable: equal sizes keep the shuffled order
        fold_of[key] = fold_sizes.index(min(fold_sizes))
        fold_sizes[fold_of[key]] += sizes[key]
    return [[index for index, key in enumerate(keys) if fold_of[key] == fold] for fold in range(folds)]


def selection_split(
    rows: Dataset, train: list[int], split_by: str, fraction: float = 0.1, seed: int = 42
) -> tuple[list[int], list[int]]:
    """Split training rows `train` into (fit, selection): the selection rows are held out of fitting for early
    stopping and model choice, so the validation rows are never used to choose anything.

    `split_by` as in `build_paper_dataset`: `"random"` takes a stratified `fraction` of the rows, `"session"` whole
    sessions (about `fraction` of them, at least one), so a selection session is never also fitted on.
    """
    _check_choice("split_by", split_by, SPLITS)
    rng = np.random.default_rng(seed)
    if split_by == "random":
        held_out = _stratified_validation(train, rows["label"], fraction, rng)
        if not held_out:
            raise ValueError(f"a selection fraction of {fraction} holds out no row of {len(train)}: raise it")
    else:
        keys = _session_keys(rows)
        corpora, sessions = [corpus for corpus, _ in keys], [session for _, session in keys]
        held_out = _session_validation(train, corpora, sessions, fraction, rng)
    return [index for index in train if index not in held_out], [index for index in train if index in held_out]
