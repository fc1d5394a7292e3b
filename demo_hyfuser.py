"""Offline stand-ins for the real backbones, used by the tests, the offline demo and nothing else.

Real KoELECTRA and HuBERT weights cannot be downloaded everywhere (CI, air-gapped servers), so
`build_tiny_backbones` writes small, randomly initialised ELECTRA and HuBERT models to disk in the
standard Hugging Face layout. Everything downstream loads them exactly as it loads the real Hub ids,
through `AutoTokenizer` / `AutoFeatureExtractor` / `AutoModel`, so the loading code under test is the real one.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
from transformers import (
    ElectraConfig,
    ElectraModel,
    ElectraTokenizerFast,
    HubertConfig,
    HubertModel,
    Wav2Vec2FeatureExtractor,
    pipeline,
)

from data_hyfuser import load_kemdy20

TINY_HIDDEN_SIZE = 32
"""Hidden size of both tiny backbones; a HyFusER config used with them needs `hidden_size=TINY_HIDDEN_SIZE`."""

_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass(frozen=True)
class BackbonePaths:
    """Where a text and a speech backbone live, and their shared hidden size (tiny ones here; the benchmarks also
    name real-size random ones with it)."""

    text: str
    speech: str
    hidden_size: int = TINY_HIDDEN_SIZE


def korean_wordpiece_vocab() -> list[str]:
    """A character-level WordPiece vocabulary covering Korean text.

    It holds the 2,350 Hangul syllables of KS X 1001 (every syllable CP949 encodes in two bytes, which covers
    ordinary Korean text), printable ASCII, and a "##" continuation form of each, so that no Korean
    sentence tokenizes to [UNK].
    """
    hangul = [bytes([lead, trail]).decode("euc-kr") for lead in range(0xB0, 0xC9) for trail in range(0xA1, 0xFF)]
    ascii_chars = [chr(code) for code in range(33, 127)]
    pieces = ascii_chars + hangul
    return _SPECIAL_TOKENS + pieces + ["##" + piece for piece in pieces]


TEXT_FAMILIES: tuple[str, ...] = ("electra", "bert", "roberta")
"""Text backbone families `build_tiny_text_backbone` writes: KoELECTRA's, BERT's, and KLUE-RoBERTa's (which, like
KoELECTRA, tokenizes with WordPiece)."""
SPEECH_FAMILIES: tuple[str, ...] = ("hubert", "wav2vec2", "wavlm", "data2vec-audio", "whisper")
"""Speech backbone families `build_tiny_speech_backbone` writes: the wav2vec2-style encoders and Whisper's."""


def build_tiny_backbones(
    output_dir: str | os.PathLike,
    hidden_size: int = TINY_HIDDEN_SIZE,
    max_text_positions: int = 256,
    seed: int = 0,
) -> BackbonePaths:
    """Write a tiny ELECTRA (`<output_dir>/text`) and HuBERT (`<output_dir>/speech`) in standard HF layout.

    The ELECTRA tokenizer is KoELECTRA's kind (cased WordPiece, no accent stripping, which would decompose
    Hangul into jamo). The HuBERT keeps the real convolutional strides, so it yields HuBERT-base's 49 frames
    per second of 16 kHz audio, and the real feature-extractor settings. Calling it twice with the same
    arguments writes identical weights.
    """
    import torch

    output_dir = Path(output_dir)
    torch.manual_seed(seed)
    text_dir = build_tiny_text_backbone(output_dir / "text", "electra", hidden_size, max_text_positions)
    speech_dir = build_tiny_speech_backbone(output_dir / "speech", "hubert", hidden_size)
    return BackbonePaths(text=str(text_dir), speech=str(speech_dir), hidden_size=hidden_size)


def build_tiny_text_backbone(
    output_dir: str | os.PathLike, family: str, hidden_size: int = TINY_HIDDEN_SIZE, max_text_positions: int = 256
) -> Path:
    """A tiny random text backbone of `family` (one of `TEXT_FAMILIES`) with a Korean WordPiece tokenizer, saved in
    standard HF layout to `output_dir`, which it returns."""
    from transformers import BertConfig, BertModel, BertTokenizerFast, RobertaConfig, RobertaModel

    vocab = korean_wordpiece_vocab()
    tokenizer_class = ElectraTokenizerFast if family == "electra" else BertTokenizerFast
    tokenizer = tokenizer_class(
        vocab={token: index for index, token in enumerate(vocab)},
        do_lower_case=False,
        strip_accents=False,
        tokenize_chinese_chars=True,
        model_max_length=max_text_positions,
    )
    sizes = {
        "vocab_size": len(vocab),
        "hidden_size": hidden_size,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 2 * hidden_size,
        "max_position_embeddings": max_text_positions,
    }
    if family == "electra":
        model = ElectraModel(ElectraConfig(embedding_size=hidden_size, **sizes))
    elif family == "bert":
        model = BertModel(BertConfig(**sizes))
    elif family == "roberta":
        # RoBERTa numbers positions after its padding id: [PAD] is id 0 here, and positions need 2 extra slots.
        sizes["max_position_embeddings"] += 2
        model = RobertaModel(RobertaConfig(pad_token_id=0, type_vocab_size=1, **sizes))
        tokenizer.model_input_names = ["input_ids", "attention_mask"]
    else:
        raise ValueError(f"unknown text backbone family {family!r}; expected one of {TEXT_FAMILIES}")
    model.eval().save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return Path(output_dir)


def tiny_whisper_config(hidden_size: int, **kwargs):
    """A two-layer encoder, one-layer decoder Whisper of width `hidden_size`: the shape of both tiny Whispers (the
    speech backbone and the speech recognizer); `kwargs` set their vocabularies and special tokens."""
    from transformers import WhisperConfig

    return WhisperConfig(
        d_model=hidden_size,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=2 * hidden_size,
        decoder_ffn_dim=2 * hidden_size,
        **kwargs,
    )


def build_tiny_speech_backbone(
    output_dir: str | os.PathLike, family: str, hidden_size: int = TINY_HIDDEN_SIZE
) -> Path:
    """A tiny random speech backbone of `family` (one of `SPEECH_FAMILIES`) with its real feature extractor, saved
    in standard HF layout to `output_dir`, which it returns.

    The wav2vec2-style ones keep the real convolutional strides (49 frames per second of 16 kHz audio); the Whisper
    keeps the real 80-bin log-mel front end and 30 s window (1,500 encoder positions, 50 per second).
    """
    from transformers import (
        Data2VecAudioConfig,
        Data2VecAudioModel,
        Wav2Vec2Config,
        Wav2Vec2Model,
        WavLMConfig,
        WavLMModel,
        WhisperFeatureExtractor,
        WhisperModel,
    )

    if family == "whisper":
        config = tiny_whisper_config(
            hidden_size,
            vocab_size=64,
            max_target_positions=32,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=1,
            decoder_start_token_id=2,
        )
        WhisperModel(config).eval().save_pretrained(output_dir)
        WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(output_dir)
        return Path(output_dir)
    sizes = {
        "hidden_size": hidden_size,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 2 * hidden_size,
        "conv_dim": (hidden_size,) * 7,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
    }
    if family == "hubert":
        model = HubertModel(HubertConfig(**sizes))
    elif family == "wav2vec2":
        model = Wav2Vec2Model(Wav2Vec2Config(**sizes))
    elif family == "wavlm":
        model = WavLMModel(WavLMConfig(**sizes))
    elif family == "data2vec-audio":
        model = Data2VecAudioModel(Data2VecAudioConfig(**{**sizes, "num_conv_pos_embeddings": 4}))
    else:
        raise ValueError(f"unknown speech backbone family {family!r}; expected one of {SPEECH_FAMILIES}")
    model.eval().save_pretrained(output_dir)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16_000, padding_value=0.0, do_normalize=True, return_attention_mask=False
    ).save_pretrained(output_dir)
    return Path(output_dir)


_WHISPER_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|ko|>", "<|translate|>", "<|transcribe|>",
    "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>",
)  # fmt: skip


def build_tiny_asr_model(output_dir: str | os.PathLike, seed: int = 0) -> Path:
    """A tiny random multilingual Whisper speech recognizer in standard HF layout (model, generation config,
    feature extractor, byte-level tokenizer), which `pipeline("automatic-speech-recognition")` loads offline.

    Its generation config knows Korean and the transcribe task like the real checkpoints', and suppresses every
    special token (end of text included) for at most 8 new tokens: random weights then always "hear" a few
    characters, so the audio-only path has a transcript to run on. Returns `output_dir`.
    """
    import torch
    from tokenizers import pre_tokenizers
    from transformers import (
        GenerationConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    torch.manual_seed(seed)
    vocab = {character: index for index, character in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for token in _WHISPER_SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = WhisperTokenizer(
        vocab=vocab, merges=[], additional_special_tokens=list(_WHISPER_SPECIAL_TOKENS[1:]), pad_token="<|endoftext|>"
    )
    ids = {token: vocab[token] for token in _WHISPER_SPECIAL_TOKENS}
    end, start = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    token_ids = {"pad_token_id": end, "bos_token_id": end, "eos_token_id": end, "decoder_start_token_id": start}
    config = tiny_whisper_config(
        TINY_HIDDEN_SIZE,
        vocab_size=len(vocab),
        max_target_positions=64,
        begin_suppress_tokens=None,
        suppress_tokens=None,
        **token_ids,
    )
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        **token_ids,
        is_multilingual=True,
        lang_to_id={"<|en|>": ids["<|en|>"], "<|ko|>": ids["<|ko|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"],
        suppress_tokens=list(ids.values()),
        max_new_tokens=8,
    )
    model.save_pretrained(output_dir)
    WhisperProcessor(WhisperFeatureExtractor(), tokenizer).save_pretrained(output_dir)
    return Path(output_dir)


# --------------------------------------------------------------------------------------------------------------------
# The offline demo corpus (`train.py --dataset demo`)
# --------------------------------------------------------------------------------------------------------------------

DEMO_CORPUS_VERSION = 2
"""Bump when the generator below changes, so a cached corpus from older code is not reused."""

DEMO_SAMPLING_RATE = 16_000

DEMO_SEQUENCE_LENGTH = 32
"""Positions per modality for the demo: its sentences are 27 tokens on average (30 at most), its clips about 50
HuBERT frames."""

DEMO_DEFAULTS: dict[str, Any] = {
    "text_backbone": None,
    "speech_backbone": None,
    "learning_rate": 1e-3,
    "sequence_length": DEMO_SEQUENCE_LENGTH,
    "config_overrides": "intermediate_size=64",
}
"""What `--dataset demo` changes on top of the paper's defaults, in train.py and reproduce.py alike: the tiny random
backbones it writes (None until they exist under --cache_dir), and, for a model over them and a ~700-item corpus to
learn within a minute on a CPU, a 10x learning rate and a narrower feed-forward (at lr 1e-4 it barely moves in 30
epochs)."""

DEMO_CUES: tuple[str, ...] = ("text", "speech", "both")
"""Which modality carries an item's emotion; the other one is uninformative, so no single modality suffices for all."""

DEMO_CORPUS_CUES: tuple[str, ...] = ("mixed", *DEMO_CUES)
"""Corpus variants (`--demo_cue`): 'mixed' (the demo) cycles its items through `DEMO_CUES`; 'text', 'speech' or
'both' gives every item that one cue, e.g. 'text': the emotion is in the words only and every clip is the same
emotion-neutral whisper."""

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
