"""What the corpus loaders share: the row schema, transcript cleaning, strict CSV and text decoding with errors that
name the file and line, and the collector that keeps rows and accounts for every one in a `LoadReport`.

Transcript cleaning (`clean_transcript`):
- the tags `b/ o/ n/ l/ u/ N/ c/ s/` go, but only as whole tags: a tag letter that follows a Latin letter belongs to
  a word, so 'SNS', 'BTS' or 'bus/' keep every letter. The one reversed tag seen in KEMDy19 (`/n`) goes too;
- `*` (uncertain word) and `/` (interjection mark) go; `+` becomes a space;
- parentheses mark overlapping speech, e.g. `... 정돈 (아니잖아)` and the partner's next line `(아니잖아+그럼) 뭐야.`
  (every `+` of KEMDy19 sits inside them). Which words belong to whom is unconfirmed, and they are audible
  in this segment's audio either way, so the words stay and only the brackets go (`+` separates them);
- whitespace is collapsed.
"""

import csv
import io
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import soundfile
from datasets import ClassLabel, Dataset, Features, Value

from configuration_hyfuser import EMOTION_LABELS

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
"""The columns of every loader's rows (described in the `hyfuser.corpora` docstring)."""

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


def text_table(title: str, header: tuple[str, ...], rows: list[tuple]) -> str:
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
        return text_table(f"{self.corpus} load report ({self.root}; {self.options_text})", ("", "rows"), rows)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def malformed_error(path: str, line: int, message: str) -> ValueError:
    return ValueError(f"{path}, line {line}: {message}")


def decode_strictly(data: bytes, encoding: str, path: str) -> str:
    """`data` decoded strictly; undecodable bytes raise a `ValueError` naming the file and line."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise malformed_error(path, line, f"not {encoding} text ({error.reason})") from None


def read_csv(path: str, encoding: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, whitespace-stripped cells) for every record, header lines included."""
    with open(path, "rb") as file:
        reader = csv.reader(io.StringIO(decode_strictly(file.read(), encoding, path), newline=""))
    try:
        for row in reader:
            yield reader.line_num, [cell.strip() for cell in row]
    except csv.Error as error:
        raise malformed_error(path, reader.line_num, str(error)) from None


def float_or_none(cell: str, path: str, line: int, name: str) -> float | None:
    if not cell:
        return None
    try:
        return float(cell)
    except ValueError:
        raise malformed_error(path, line, f"field {name!r}: not a number: {cell!r}") from None


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


class RowCollector:
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
