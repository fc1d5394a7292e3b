"""The offline demo corpus (`train.py --dataset demo`): generated Korean utterances whose text and prosody carry
the emotion, written in KEMDy20's layout and read by its real loader.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from transformers import pipeline

from hyfuser.constants import DEMO_CORPUS_CUES, DEMO_CUES
from hyfuser.corpora import load_kemdy20
from hyfuser.tiny_backbones import BackbonePaths, build_tiny_backbones

DEMO_CORPUS_VERSION = 2
"""Bump when the generator below changes, so a cached corpus from older code is not reused."""

DEMO_SAMPLING_RATE = 16_000

_TIMES = ("오늘", "어제", "아까", "방금", "지난주에", "주말에", "아침에", "저녁에", "밤에", "점심에")
_PLACES = ("회사에서", "학교에서", "집에서", "버스에서", "시장에서", "공원에서", "식당에서", "병원에서")
_EVENTS = ("그 소식을 들었는데", "친구를 만났는데", "편지를 읽었는데", "전화를 받았는데", "영화를 봤는데", "사진을 봤는데")
_EMOTION_PHRASES = {
    "angry": ("정말 화가 나", "너무 짜증 나", "진짜 열받아"),
    "disgust": ("정말 역겨워", "너무 징그러워", "진짜 더러워"),
    "fear": ("정말 무서워", "너무 겁이 나", "진짜 두려워"),
    "happy": ("정말 기뻐", "너무 신나", "진짜 행복해"),
    "neutral": ("그냥 그랬어", "별일 없었어", "평소와 같았어"),
    "sad": ("정말 슬퍼", "너무 우울해", "눈물이 나"),
    "surprise": ("깜짝 놀랐어", "정말 놀라워", "어머 세상에"),
}
"""Emotion keywords, two different ones per sentence: distinct syllables, so even a randomly initialised ELECTRA maps
them to distinguishable features once they outweigh the random context words."""
_PLAIN_PHRASES = ("말해 줄게", "들어 볼래", "생각해 봤어")
"""Endings that say nothing about the emotion (the text of speech-cued items)."""


@dataclass(frozen=True)
class _Prosody:
    """How one emotion sounds: pitch contour (start/end Hz, vibrato depth), tempo (syllables/s), energy, breath
    noise and length. `voiced=False` is a whisper: the same syllables as noise, without any pitch."""

    f0_start: float
    f0_end: float
    vibrato: float
    syllable_rate: float
    amplitude: float
    noise: float
    seconds: float
    voiced: bool = True


# Pitch level is what a random HuBERT separates best, so each emotion has its own register (about 1.25x apart, the
# usual direction: sad and disgust low, surprise and happy high); contour, tempo and energy add the rest.
_EMOTION_PROSODY = {
    "angry": _Prosody(205, 195, 0.00, 6.5, 0.90, 0.08, 1.0),
    "disgust": _Prosody(130, 115, 0.00, 3.0, 0.50, 0.10, 1.3),
    "fear": _Prosody(255, 265, 0.03, 7.5, 0.35, 0.05, 0.9),
    "happy": _Prosody(300, 340, 0.00, 5.5, 0.80, 0.05, 1.0),
    "neutral": _Prosody(165, 160, 0.00, 4.0, 0.50, 0.05, 1.2),
    "sad": _Prosody(105, 90, 0.00, 2.5, 0.30, 0.05, 1.5),
    "surprise": _Prosody(420, 560, 0.00, 4.5, 0.85, 0.05, 0.8),
}
_WHISPER = _Prosody(0, 0, 0.00, 5.0, 0.60, 1.00, 1.1, voiced=False)
"""The audio of text-cued items, the same for every emotion: no pitch, so no prosodic emotion at all."""

_DEMO_VALENCE_AROUSAL = {
    "angry": (1.6, 4.2),
    "disgust": (1.9, 3.4),
    "fear": (1.8, 4.0),
    "happy": (4.3, 3.9),
    "neutral": (3.0, 2.6),
    "sad": (1.7, 2.0),
    "surprise": (3.4, 4.4),
}


@dataclass(frozen=True)
class DemoUtterance:
    """One generated item: its KEMDy20 Segment ID, emotion, the modality that carries it and the transcript."""

    segment_id: str
    emotion: str
    cue: str
    text: str


@dataclass(frozen=True)
class DemoCorpus:
    """Where `prepare_demo` put things: a training corpus and a held-out one (both KEMDy20 layout) and backbones."""

    train_dir: str
    holdout_dir: str
    backbones: BackbonePaths
    holdout: tuple[DemoUtterance, ...]


def plan_demo_utterances(
    per_emotion: int,
    first_session: int,
    sessions: int,
    rng: np.random.Generator,
    used_texts: set[str],
    cues: tuple[str, ...] = DEMO_CUES,
) -> list[DemoUtterance]:
    """Draw `per_emotion` items per emotion, cues cycling through `cues`, spread over KEMDy20-style sessions.

    Texts are unique across calls that share `used_texts`: the paper's pipeline drops duplicate texts, and a held-out
    item must not repeat a training sentence.
    """
    plan = []
    for emotion in _EMOTION_PHRASES:
        for index in range(per_emotion):
            cue = cues[index % len(cues)]
            phrases = _EMOTION_PHRASES[emotion] if cue != "speech" else _PLAIN_PHRASES
            text = None
            while text is None or text in used_texts:
                context = " ".join(options[rng.integers(len(options))] for options in (_TIMES, _PLACES, _EVENTS))
                first, second = rng.choice(len(phrases), size=2, replace=False)
                text = f"{context} {phrases[first]}. {phrases[second]}."
            used_texts.add(text)
            plan.append((emotion, cue, text))
    utterances, counters = [], {}
    for position, index in enumerate(rng.permutation(len(plan))):
        emotion, cue, text = plan[index]
        session = first_session + position % sessions
        user, gender = (2 * session - 1, "F") if position // sessions % 2 == 0 else (2 * session, "M")
        script = position // (2 * sessions) % 6 + 1
        dialogue = f"Sess{session:02d}_script{script:02d}_User{user:03d}{gender}"
        counters[dialogue] = counters.get(dialogue, 0) + 1
        utterances.append(DemoUtterance(f"{dialogue}_{counters[dialogue]:03d}", emotion, cue, text))
    return utterances


def synthesize_voice(prosody: _Prosody, rng: np.random.Generator) -> np.ndarray:
    """An utterance: harmonics of a gliding (optionally trembling) pitch, or a whisper, cut into syllables of
    voice separated by short pauses, plus breath noise.

    Every parameter is jittered by a few percent, so items of one emotion are alike but not identical.
    """

    def jitter(value: float) -> float:
        return value * rng.uniform(0.93, 1.07)

    seconds = jitter(prosody.seconds)
    time = np.arange(int(DEMO_SAMPLING_RATE * seconds)) / DEMO_SAMPLING_RATE
    f0 = np.linspace(jitter(prosody.f0_start), jitter(prosody.f0_end), time.size)
    f0 *= 1 + prosody.vibrato * np.sin(2 * np.pi * 9.0 * time)
    phase = 2 * np.pi * np.cumsum(f0) / DEMO_SAMPLING_RATE
    voice = sum(np.sin(harmonic * phase) / harmonic for harmonic in range(1, 4)) if prosody.voiced else 0.0
    syllables = np.sin(2 * np.pi * jitter(prosody.syllable_rate) * time + rng.uniform(0, 2 * np.pi))
    wave = np.clip(syllables, 0, None) ** 0.5 * (voice + prosody.noise * rng.standard_normal(time.size))
    fade = np.minimum(1.0, np.minimum(time, seconds - time) / 0.02)
    wave *= fade * jitter(prosody.amplitude) / np.abs(wave).max()
    return wave.astype(np.float32)


def write_kemdy20_corpus(root: str | os.PathLike, utterances: list[DemoUtterance], rng: np.random.Generator) -> None:
    """Write `utterances` exactly as KEMDy20 v1.1 ships (docs/datasets.md): `annotation/SessNN_eval.csv` with the
    two header rows (' ' cells, Emotion/Valence/Arousal sub-header, 37 positional columns, `disqust` spelling) and
    `wav/SessionNN/<Segment ID>.wav` (16 kHz mono PCM) next to a CP949 `.txt` transcript.
    """
    root = Path(root)
    raters = [f"Eval{index:02d}" for index in range(1, 11)]
    header = ["Numb", "Wav", " ", "Segment ID", "Total Evaluation", " ", " "]
    sub_header = [" ", "start", "end", " ", "Emotion", "Valence", "Arousal"]
    for rater in raters:
        header += [rater, " ", " "]
        sub_header += ["Emotion", "Valence", "Arousal"]
    sessions: dict[int, list[DemoUtterance]] = {}
    for utterance in utterances:
        sessions.setdefault(int(utterance.segment_id[4:6]), []).append(utterance)

    (root / "annotation").mkdir(parents=True, exist_ok=True)
    for session, items in sorted(sessions.items()):
        wav_dir = root / "wav" / f"Session{session:02d}"
        wav_dir.mkdir(parents=True, exist_ok=True)
        rows, clock = [header, sub_header], 0.0
        for number, utterance in enumerate(sorted(items, key=lambda item: item.segment_id), start=1):
            carries_speech = utterance.cue in ("speech", "both")
            waveform = synthesize_voice(_EMOTION_PROSODY[utterance.emotion] if carries_speech else _WHISPER, rng)
            soundfile.write(wav_dir / f"{utterance.segment_id}.wav", waveform, DEMO_SAMPLING_RATE, subtype="PCM_16")
            (wav_dir / f"{utterance.segment_id}.txt").write_bytes((utterance.text + "\n").encode("cp949"))
            label = "disqust" if utterance.emotion == "disgust" else utterance.emotion
            valence, arousal = (str(value) for value in _DEMO_VALENCE_AROUSAL[utterance.emotion])
            start, clock = clock, clock + len(waveform) / DEMO_SAMPLING_RATE
            rows.append(
                [str(number), f"{start:.3f}", f"{clock:.3f}", utterance.segment_id, label, valence, arousal]
                + [label, valence, arousal] * len(raters)
            )
            clock += 0.5
        with open(root / "annotation" / f"Sess{session:02d}_eval.csv", "w", newline="", encoding="utf-8") as file:
            csv.writer(file).writerows(rows)


def prepare_demo(
    root: str | os.PathLike,
    train_per_emotion: int = 120,
    holdout_per_emotion: int = 6,
    seed: int = 0,
    cue: str = "mixed",
) -> DemoCorpus:
    """Generate (once) the demo's tiny backbones, training corpus and held-out corpus under `root`; `cue` picks the
    variant (`DEMO_CORPUS_CUES`).

    The result is written to a temporary sibling and renamed into place, so a killed run never leaves a half-written
    corpus behind and later runs, or the other processes of a multi-process run, reuse the same files (their
    modification times key the feature cache). The plan is re-derived from `seed`, so nothing needs a manifest.
    """
    if cue not in DEMO_CORPUS_CUES:
        raise ValueError(f"unknown demo cue {cue!r}; expected one of {DEMO_CORPUS_CUES}")
    cues = DEMO_CUES if cue == "mixed" else (cue,)
    rng = np.random.default_rng(seed)
    used_texts: set[str] = set()
    train = plan_demo_utterances(train_per_emotion, 1, 8, rng, used_texts, cues)
    holdout = plan_demo_utterances(holdout_per_emotion, 39, 2, rng, used_texts, cues)

    variant = "" if cue == "mixed" else f"-{cue}"
    target = Path(root) / f"v{DEMO_CORPUS_VERSION}-seed{seed}-{train_per_emotion}-{holdout_per_emotion}{variant}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            build_tiny_backbones(staging / "backbones", seed=seed)
            write_kemdy20_corpus(staging / "train", train, rng)
            write_kemdy20_corpus(staging / "holdout", holdout, rng)
            os.replace(staging, target)
        except OSError:
            if not target.exists():  # else a concurrent run finished first, with the same files
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    backbones = BackbonePaths(text=str(target / "backbones" / "text"), speech=str(target / "backbones" / "speech"))
    return DemoCorpus(str(target / "train"), str(target / "holdout"), backbones, tuple(holdout))


def cached_demo(cache_dir: str | os.PathLike, cue: str = "mixed") -> DemoCorpus:
    """`prepare_demo` under `cache_dir/demo`, where train.py, reproduce.py and app.py all keep the demo."""
    return prepare_demo(Path(cache_dir) / "demo", cue=cue)


def demo_predictions_table(output_dir: str | os.PathLike, demo: DemoCorpus) -> str:
    """Serve the saved directory with `pipeline` on the held-out demo items: a table of predictions next to the
    truth, and of the fused accuracy next to each direction's head alone, per cue."""
    holdout = load_kemdy20(demo.holdout_dir)
    cues = {utterance.segment_id: utterance.cue for utterance in demo.holdout}
    item_cues = [cues[segment_id] for segment_id in holdout["id"]]
    classifier = pipeline(model=str(output_dir), trust_remote_code=True)
    inputs = [{"text": text, "audio": audio} for text, audio in zip(holdout["text"], holdout["audio"])]
    outputs = classifier(inputs, batch_size=8, return_modalities=True)

    names = holdout.features["label"].names
    truth = [names[label] for label in holdout["label"]]
    fused = [emotions[0]["label"] for emotions in outputs]
    text_head = [max(emotions, key=lambda emotion: emotion["text_score"])["label"] for emotions in outputs]
    speech_head = [max(emotions, key=lambda emotion: emotion["speech_score"])["label"] for emotions in outputs]

    lines = [f"Held-out demo items, predicted by pipeline(model={str(output_dir)!r}, trust_remote_code=True):"]
    lines.append(f"{'cue':<7} {'truth':<9} {'fused':<18} {'text head':<10} {'speech head':<11} text")
    for index, emotions in enumerate(outputs):
        mark = "ok" if fused[index] == truth[index] else "--"
        prediction = f"{fused[index]} ({emotions[0]['score']:.2f}) {mark}"
        lines.append(
            f"{item_cues[index]:<7} {truth[index]:<9} {prediction:<18} {text_head[index]:<10} "
            f"{speech_head[index]:<11} {holdout['text'][index]}"
        )
    groups = {"all": slice(None), **{f"{cue}-cued": np.array(item_cues) == cue for cue in DEMO_CUES}}
    lines.append(f"\nHeld-out accuracy ({len(truth)} items; 'X-cued': only X carries the emotion, 'both-cued': both do)")
    lines.append(f"{'':<26}" + "".join(f"{group:>13}" for group in groups))
    for name, predictions in (
        ("fused (Eq. 9)", fused), ("text-centric head alone", text_head), ("speech-centric head alone", speech_head)
    ):
        hits = np.array(predictions) == np.array(truth)
        lines.append(f"{name:<26}" + "".join(f"{hits[members].mean():>13.3f}" for members in groups.values()))
    return "\n".join(lines)
