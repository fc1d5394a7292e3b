"""Tiny KEMDy19, KEMDy20 v1.1 and AI-Hub 263 corpora written to disk in the real layouts, quirks included.

`write_kemdy19(folder)`, `write_kemdy20(folder)` and `write_aihub263(folder)` each write one corpus below `folder`
and return its root; the same call always writes the same files. The layouts, encodings and quirks follow
docs/datasets.md and are written here independently of `hyfuser.corpora`, so that a loader bug cannot hide in a
shared constant. Audio is a short voiced tone (0.3-1.5 s, `audio_files.write_tone`), mostly 16 kHz mono.

Each writer's docstring lists what a correct loader must make of the corpus; `tests/test_corpora.py` checks it.
"""

import csv
from pathlib import Path

from audio_files import write_tone

RATERS = 10
"""KEMDy annotation files carry 10 raters x (Emotion, Valence, Arousal) after the Total Evaluation."""


def _write_audio(path: Path, index: int, sampling_rate: int = 16_000, channels: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_tone(path, sampling_rate, 0.3 + 0.3 * (index % 5), 120.0 + 15.0 * (index % 7), channels, seed=index)


def _write_text(path: Path, text: str, encoding: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((text + "\n").encode(encoding))


def _write_csv(path: Path, rows: list[list], encoding: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding=encoding, newline="") as file:
        csv.writer(file).writerows(rows)  # "\r\n" line ends, as files exported from Excel


def _rater_cells(emotion: str, valence: float, arousal: float) -> list:
    """10 raters whose votes cycle through the labels of `emotion` ('neutral;happy' gives a 5-5 tie)."""
    votes = emotion.split(";")
    return [cell for rater in range(RATERS) for cell in (votes[rater % len(votes)], round(valence), round(arousal))]


def _rater_header(genders: str) -> tuple[list[str], list[str]]:
    names = [cell for rater in range(RATERS) for cell in (f"Eval{rater + 1:02d}{genders[rater % 2]}", "", "")]
    return names, ["Emotion", "Valence", "Arousal"] * RATERS


# KEMDy19: (Segment ID, label in the speaker's own file, label in the partner's file, transcript or None for no .txt)
KEMDY19_SEGMENTS = [
    ("Sess01_script01_F001", "happy", "neutral", "b/ 오늘 정말 기분 좋다. o/"),
    ("Sess01_script01_M001", "angry", "happy", "o/ N/ 지섭씨 사람하고 고라니를 구분 못 할 정돈 (아니잖아)"),
    ("Sess01_script01_F002", "neutral;happy", "neutral", "(아니잖아+그럼) 뭐야. 그럼 어떻게 된 거야."),
    ("Sess01_script01_M002", "surprise", "neutral", "l/ 요즘 SNS 에서 BTS 얘기만 하더라 n/"),
    ("Sess01_script01_M003", "sad", "sad", "나 이제 어떡해"),
    ("Sess01_script01_F003", "neutral", "angry", ""),
    ("Sess01_impro01_F001", "sad", "neutral", "c/ 나 진짜 너무 속상해 u/"),
    ("Sess01_impro01_M001", "disgust", "fear", "으 냄새 너무 역겨워 *"),
    ("Sess01_impro01_M002", "fear", "neutral", None),
    ("Sess01_impro01_F002", "neutral", "neutral", "네."),
    ("Sess02_script01_F001", "neutral", "happy", "아 친구들도?"),
    ("Sess02_script01_M001", "fear", "neutral", "/n 누구 거기 있어요?"),
    ("Sess02_script01_F002", "neutral", "sad", "그래 알겠어"),
    ("Sess02_script01_M002", "happy", "angry", "좋아 그렇게 하자"),
]
KEMDY19_ONLY_IN_CONVERTED = "Sess01_script01_M003"
KEMDY19_8KHZ = "Sess01_script01_M002"
KEMDY19_ORPHAN = "Sess01_impro01_F003"


def write_kemdy19(folder: str | Path) -> Path:
    """Write `folder/KEMDy19` (layout in docs/datasets.md, KEMDy19) and return it.

    - `annotation/Session{01,02}_{F,M}_res.csv`: two header rows with truly empty blank cells, 43 columns; both files
      of a session list every segment, each with its own actor's emotion, valence, arousal and biosignals, so on the
      partner's segments the labels differ (listener labels). The F file sorts first.
    - `wav/Session{NN}/Sess{NN}_{script,impro}01/<id>.wav|.txt`, UTF-8 transcripts with tags and overlap brackets.
    - Every dialogue folder has `converted/` holding a decoy copy of its F001 wav (8 kHz); Sess01_script01's also
      holds the only wav of `KEMDY19_ONLY_IN_CONVERTED`, whose row must count as missing audio, and Sess01_impro01's
      a wav no row names, which is no orphan: nothing under `converted/` is corpus audio.
    - One ';' tie (`Sess01_script01_F002`), an empty transcript (`Sess01_script01_F003`), a missing .txt
      (`Sess01_impro01_M002`), an 8 kHz file (`KEMDY19_8KHZ`), a one-syllable text ('네.'), the reversed tag `/n`,
      and an orphan wav + txt no row names (`KEMDY19_ORPHAN`).

    A correct `load_kemdy19` keeps 10 of 28 rows: 14 listener rows, 1 tie, 1 missing audio, 1 empty text and
    1 missing transcript are skipped.
    """
    root = Path(folder) / "KEMDy19"
    wav = root / "wav"
    for index, (segment_id, _, _, transcript) in enumerate(KEMDY19_SEGMENTS):
        session, dialogue = segment_id.split("_")[:2]
        dialogue_folder = wav / f"Session{session[4:]}" / f"{session}_{dialogue}"
        if segment_id != KEMDY19_ONLY_IN_CONVERTED:
            _write_audio(dialogue_folder / f"{segment_id}.wav", index, 8_000 if segment_id == KEMDY19_8KHZ else 16_000)
        if transcript is not None:
            _write_text(dialogue_folder / f"{segment_id}.txt", transcript, "utf-8")
        if segment_id.endswith("F001"):  # one decoy per dialogue folder
            _write_audio(dialogue_folder / "converted" / f"{segment_id}.wav", index, 8_000)
    _write_audio(wav / "Session01" / "Sess01_script01" / "converted" / f"{KEMDY19_ONLY_IN_CONVERTED}.wav", 99)
    _write_audio(wav / "Session01" / "Sess01_impro01" / "converted" / "Sess01_impro01_M009.wav", 96)
    orphan_folder = wav / "Session01" / "Sess01_impro01"
    _write_audio(orphan_folder / f"{KEMDY19_ORPHAN}.wav", 98)
    _write_text(orphan_folder / f"{KEMDY19_ORPHAN}.txt", "이 줄은 어디에도 없어", "utf-8")

    raters, rater_subheader = _rater_header("FM")
    header = ["Numb", "Wav", "", "ECG", "", "E4-EDA", "", "E4-TEMP", "", "Segment ID", "Total Evaluation", "", ""]
    subheader = ["", *["start", "end"] * 4, "", "Emotion", "Valence", "Arousal"]
    biosignals = {"F": (-0.03, 0.14, 30.7), "M": (0.02, 4.4, 34.6)}  # each file carries its own actor's values
    for session in ("01", "02"):
        for gender, (ecg, eda, temp) in biosignals.items():
            rows = [header + raters, subheader + rater_subheader]
            segments = [segment for segment in KEMDY19_SEGMENTS if segment[0].startswith(f"Sess{session}_")]
            for number, (segment_id, own, partner, _) in enumerate(segments, start=1):
                is_own = segment_id.split("_")[2][0] == gender
                emotion, valence, arousal = (own, 3.4, 2.6) if is_own else (partner, 2.1, 3.9)
                start = 4.0 * number
                rows.append(
                    [number, start, start + 3.2, ecg, ecg, eda, eda + 0.01, temp, temp, segment_id, emotion]
                    + [valence, arousal, *_rater_cells(emotion, valence, arousal)]
                )
            _write_csv(root / "annotation" / f"Session{session}_{gender}_res.csv", rows, "utf-8")
    return root


# KEMDy20: (Segment ID as written in the annotation, Total Evaluation emotion, transcript)
KEMDY20_SEGMENTS = {
    "01": [
        ("Sess01_script01_User001F_001", "neutral", "아 친구들도?"),
        ("Sess01_script01_User002M_001", "angry", "c/ 진짜 짜증나 죽겠네 *"),
        ("Sess01_script01_User001F_002", "disqust", "으 그거 너무 더러워"),
        ("Sess01_script01_User002M_002", "happy;neutral;disqust", "하하 그게 뭐야"),
        ("Sess01_script02_User001F_001", "happy", "오늘 날씨 진짜 좋다"),
        ("Sess01_script02_User002M_001", "neutral", "응"),
        ("Sess01_script02_User001F_002", "neutral", "b/ n/"),
        ("Sess01_script02_User002M_002", "sad", "다 끝났어"),
    ],
    "02": [
        ("Sess02_script01_User003F_001", "surprise", "깜짝이야 언제 왔어?"),
        ("Sess02_script01_User004M_001", "sad", "그 얘기 들으니까 너무 슬프다"),
        ("Sess02_script01_User003F_002", "neutral", "그냥 그랬어"),
        ("Sess02_script01_User004M_002", "fear", "무서워서 혼자 못 가겠어"),
        ("Sess02_script01_User004M_003", "neutral", "잠깐만 기다려 봐"),
        ("Sess02_script01_User003F_003", "neutral", "그냥 집에 있었어"),
        ("Sess02_script01_User004M_004", "neutral", "별일 없었어"),
    ],
    "17": [
        ("Sess17_script01_User033F_001", "neutral", "우리 내일 어디 갈까"),
        ("Sess16_script01_User034M_001", "happy", "나는 바다 가고 싶어"),
        ("Sess17_script01_User033F_002", "happy", "좋아 그럼 바다 가자"),
        ("Sess17_script01_User034M_002", "neutral", "그래 그렇게 하자"),
    ],
}
KEMDY20_FOREIGN_PREFIX = "Sess16_script01_User034M_001"
KEMDY20_MISSING_AUDIO = "Sess01_script02_User002M_002"
KEMDY20_UNREADABLE_AUDIO = "Sess02_script01_User004M_003"
KEMDY20_UTF8_TRANSCRIPT = "Sess17_script01_User033F_002"
KEMDY20_OTHER_FORMATS = {"Sess01_script02_User001F_001": (44_100, 2), "Sess02_script01_User003F_001": (48_000, 1)}
KEMDY20_ORPHAN = "Sess01_script02_User002M_003"


def write_kemdy20(folder: str | Path) -> Path:
    """Write `folder/KEMDy20_v1_1` (layout in docs/datasets.md, KEMDy20 v1.1) and return it.

    - `annotation/Sess{01,02,17}_eval.csv`: 37 columns; row 0 names `Numb, Wav, Segment ID, Total Evaluation` and the
      raters with blank cells written as a single space, row 1 is the Emotion/Valence/Arousal sub-header.
    - Flat `wav/Session{NN}/<id>.wav|.txt`, transcripts in CP949, except `KEMDY20_UTF8_TRANSCRIPT` in UTF-8.
    - `disqust`, a three-way ';' tie, a one-syllable text ('응'), a tags-only transcript, `KEMDY20_FOREIGN_PREFIX`
      (a Sess16 id in Sess17_eval.csv whose files are named Sess17_...), `KEMDY20_MISSING_AUDIO` (txt only),
      `KEMDY20_UNREADABLE_AUDIO` (a 0-byte wav), `KEMDY20_OTHER_FORMATS` (44.1 kHz stereo, 48 kHz) and an orphan
      wav + txt (`KEMDY20_ORPHAN`).

    A correct `load_kemdy20` keeps 15 of 19 rows: 1 tie, 1 empty text, 1 missing audio and 1 unreadable audio are
    skipped. Its first text, '아 친구들도?', repeats KEMDy19's `Sess02_script01_F001`.
    """
    root = Path(folder) / "KEMDy20_v1_1"
    raters, rater_subheader = _rater_header("FM")
    header = ["Numb", "Wav", " ", "Segment ID", "Total Evaluation", " ", " ", *(name or " " for name in raters)]
    subheader = [" ", "Start", "End", " ", "Emotion", "Valence", "Arousal", *rater_subheader]
    index = 0
    for session, segments in KEMDY20_SEGMENTS.items():
        rows = [header, subheader]
        for number, (segment_id, emotion, transcript) in enumerate(segments, start=1):
            index += 1
            file_stem = f"Sess{session}{segment_id[len('Sess') + 2 :]}"  # files carry the annotation file's session
            folder_path = root / "wav" / f"Session{session}"
            if segment_id == KEMDY20_UNREADABLE_AUDIO:
                folder_path.mkdir(parents=True, exist_ok=True)
                (folder_path / f"{file_stem}.wav").write_bytes(b"")
            elif segment_id != KEMDY20_MISSING_AUDIO:
                _write_audio(folder_path / f"{file_stem}.wav", index, *KEMDY20_OTHER_FORMATS.get(segment_id, ()))
            encoding = "utf-8" if segment_id == KEMDY20_UTF8_TRANSCRIPT else "cp949"
            _write_text(folder_path / f"{file_stem}.txt", transcript, encoding)
            valence, arousal = round(2.0 + 0.1 * number, 1), round(3.5 - 0.1 * number, 1)
            start = 5.0 * number
            rows.append(
                [number, start, start + 2.5, segment_id, emotion, valence, arousal]
                + _rater_cells(emotion, valence, arousal)
            )
        _write_csv(root / "annotation" / f"Sess{session}_eval.csv", rows, "utf-8")
    orphan_folder = root / "wav" / "Session01"
    _write_audio(orphan_folder / f"{KEMDY20_ORPHAN}.wav", 97)
    _write_text(orphan_folder / f"{KEMDY20_ORPHAN}.txt", "주석에 없는 파일", "cp949")
    return root


AIHUB_HEADER = [
    "wav_id", "발화문", "상황", "1번 감정", "1번 감정세기", "2번 감정", "2번 감정세기", "3번 감정", "3번 감정세기",
    "4번 감정", "4번감정세기", "5번 감정", "5번 감정세기", "나이", "성별",
]  # fmt: skip
AIHUB_RELEASE_FOLDERS = {"4차년도": "4차년도", "5차년도": "5차년도/5차_wav", "5차년도_2차": "5차년도_2차"}
"""Release CSV stem -> where its zip puts the wavs (5차년도 nests them in 5차_wav/)."""

AIHUB_VOCABULARY = {
    "4차년도": {"angry": "anger", "sad": "sad", "happy": "happiness"},
    "5차년도": {"angry": "angry", "sad": "sadness", "happy": "happiness"},
    "5차년도_2차": {"angry": "angry", "sad": "sadness", "happy": "happiness"},
}
"""How each release spells the emotions that have aliases; the others are spelled as the label."""

AIHUB_EMOTIONS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
_AIHUB_TIMES = ("오늘", "어제", "아까", "지금", "요즘")
_AIHUB_PHRASES = {
    "angry": "정말 화가 난다",
    "disgust": "진짜 역겨워",
    "fear": "너무 무서워",
    "happy": "너무 행복해",
    "neutral": "그냥 그랬어",
    "sad": "너무 슬퍼",
    "surprise": "깜짝 놀랐어",
}
AIHUB_MISSING_AUDIO = "5f3c9ed98a3c1005aa97ff01"
AIHUB_EMPTY_TEXT = "5f3c9ed98a3c1005aa97ff02"
AIHUB_UNKNOWN_LABEL = "5f3c9ed98a3c1005aa97ff03"
AIHUB_CASE_VARIANT = "5f3c9ed98a3c1005aa97ff04"
AIHUB_ORPHAN = "5f3c9ed98a3c1005aa97ff05"


def _aihub_row(wav_id: str, text: str, situation: str, votes: list[str], index: int) -> list:
    intensities = [(index + rater) % 3 for rater in range(5)]  # raters' intensities are ordinal: 0, 1 or 2
    ratings = [cell for vote, intensity in zip(votes, intensities) for cell in (vote, intensity)]
    return [wav_id, text, situation, *ratings, 20 + index % 40, "여" if index % 2 else "남"]


def write_aihub263(folder: str | Path) -> Path:
    """Write `folder/감정 분류를 위한 대화 음성 데이터셋` (layout in docs/datasets.md, AI-Hub 263) and return it.

    - `4차년도.csv`, `5차년도.csv`, `5차년도_2차.csv` in CP949 with the exact 15-column header (`4번감정세기` without a
      space), next to `4차년도/`, `5차년도/5차_wav/` and `5차년도_2차/` holding `<wav_id>.wav` (16 kHz mono).
    - 35 base rows: 5 time words x 7 emotions (`AIHUB_EMOTIONS` order), spread over the releases by row index % 3;
      4차년도 writes anger/sad, the others angry/sadness, all happiness. Votes by time word: 0-2: 4 raters agree with
      `상황`; 3: a 2-2-1 split (no majority); 4: 3 raters pick neutral (happy where `상황` is neutral).
    - Extras: `AIHUB_MISSING_AUDIO` (4차년도, no wav), `AIHUB_ORPHAN` (4차년도 wav without a row), `AIHUB_EMPTY_TEXT`
      (5차년도), `AIHUB_UNKNOWN_LABEL` ('excited', 5차년도_2차), `AIHUB_CASE_VARIANT` (' Happiness ', 5차년도_2차).

    A correct `load_aihub263` reads 39 rows. With `label_source="situation"` it keeps 36 (5 per emotion, happy 6);
    with `"majority"` it keeps 29 (angry, disgust, fear, sad, surprise 3, happy 5, neutral 9) and skips 7 rows
    without a majority.
    """
    root = Path(folder) / "감정 분류를 위한 대화 음성 데이터셋"
    releases = list(AIHUB_RELEASE_FOLDERS)
    rows = {release: [AIHUB_HEADER] for release in releases}
    for index in range(len(_AIHUB_TIMES) * len(AIHUB_EMOTIONS)):
        emotion_index, time_index = divmod(index, len(_AIHUB_TIMES))
        emotion = AIHUB_EMOTIONS[emotion_index]
        release = releases[index % 3]
        other = "happy" if emotion == "neutral" else "neutral"
        third = "surprise" if emotion == "fear" else "fear"
        situation, other, third = (AIHUB_VOCABULARY[release].get(label, label) for label in (emotion, other, third))
        votes = {3: [situation] * 2 + [other] * 2 + [third], 4: [other] * 3 + [situation] * 2}.get(
            time_index, [situation] * 4 + [other]
        )
        wav_id = f"5f3c9ed98a3c1005aa97{index:04x}"
        text = f"{_AIHUB_TIMES[time_index]} {_AIHUB_PHRASES[emotion]}"
        rows[release].append(_aihub_row(wav_id, text, situation, votes, index))
        _write_audio(root / AIHUB_RELEASE_FOLDERS[release] / f"{wav_id}.wav", index)
    extras = [
        ("4차년도", AIHUB_MISSING_AUDIO, "이 녹음은 빠졌어요", "neutral"),
        ("5차년도", AIHUB_EMPTY_TEXT, "", "happiness"),
        ("5차년도_2차", AIHUB_UNKNOWN_LABEL, "완전 신나는데", "excited"),
        ("5차년도_2차", AIHUB_CASE_VARIANT, "진짜 신난다 최고야", " Happiness "),
    ]
    for index, (release, wav_id, text, label) in enumerate(extras, start=100):
        rows[release].append(_aihub_row(wav_id, text, label, [label] * 5, index))
        if wav_id != AIHUB_MISSING_AUDIO:
            _write_audio(root / AIHUB_RELEASE_FOLDERS[release] / f"{wav_id}.wav", index)
    _write_audio(root / AIHUB_RELEASE_FOLDERS["4차년도"] / f"{AIHUB_ORPHAN}.wav", 110)
    for release in releases:
        _write_csv(root / f"{release}.csv", rows[release], "cp949")
    return root
