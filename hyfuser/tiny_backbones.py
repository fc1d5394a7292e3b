"""Offline stand-ins for the real backbones, used by the tests, the offline demo and the benchmarks.

Real KoELECTRA and HuBERT weights cannot be downloaded everywhere (CI, air-gapped servers), so
`build_tiny_backbones` writes small, randomly initialised ELECTRA and HuBERT models to disk in the
standard Hugging Face layout (the benchmarks pass it the real ones' sizes for real-size random ones). Everything
downstream loads them exactly as it loads the real Hub ids, through `AutoTokenizer` / `AutoFeatureExtractor` /
`AutoModel`, so the loading code under test is the real one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import (
    ElectraConfig,
    ElectraModel,
    ElectraTokenizerFast,
    HubertConfig,
    HubertModel,
    Wav2Vec2FeatureExtractor,
)

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
    text_sizes: Mapping[str, Any] | None = None,
    speech_sizes: Mapping[str, Any] | None = None,
) -> BackbonePaths:
    """Write a tiny ELECTRA (`<output_dir>/text`) and HuBERT (`<output_dir>/speech`) in standard HF layout.

    The ELECTRA tokenizer is KoELECTRA's kind (cased WordPiece, no accent stripping, which would decompose
    Hangul into jamo). The HuBERT keeps the real convolutional strides, so it yields HuBERT-base's 49 frames
    per second of 16 kHz audio, and the real feature-extractor settings. Calling it twice with the same
    arguments writes identical weights. `text_sizes` and `speech_sizes` replace entries of the two configs' sizes
    (see `build_tiny_text_backbone` and `build_tiny_speech_backbone`).
    """
    import torch

    output_dir = Path(output_dir)
    torch.manual_seed(seed)
    text_dir = build_tiny_text_backbone(output_dir / "text", "electra", hidden_size, max_text_positions, text_sizes)
    speech_dir = build_tiny_speech_backbone(output_dir / "speech", "hubert", hidden_size, speech_sizes)
    return BackbonePaths(text=str(text_dir), speech=str(speech_dir), hidden_size=hidden_size)


def build_tiny_text_backbone(
    output_dir: str | os.PathLike,
    family: str,
    hidden_size: int = TINY_HIDDEN_SIZE,
    max_text_positions: int = 256,
    sizes: Mapping[str, Any] | None = None,
) -> Path:
    """A tiny random text backbone of `family` (one of `TEXT_FAMILIES`) with a Korean WordPiece tokenizer, saved in
    standard HF layout to `output_dir`, which it returns.

    `sizes` replaces entries of the config's sizes (`num_hidden_layers`, `num_attention_heads`, `intermediate_size`,
    `vocab_size`, ...); a `vocab_size` above the tokenizer's pads its vocabulary with `[unusedN]` entries, as
    KoELECTRA's is padded.
    """
    from transformers import BertConfig, BertModel, BertTokenizerFast, RobertaConfig, RobertaModel

    vocab = korean_wordpiece_vocab()
    sizes = {
        "vocab_size": len(vocab),
        "hidden_size": hidden_size,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 2 * hidden_size,
        "max_position_embeddings": max_text_positions,
        **(sizes or {}),
    }
    vocab += [f"[unused{index}]" for index in range(len(vocab), sizes["vocab_size"])]
    tokenizer_class = ElectraTokenizerFast if family == "electra" else BertTokenizerFast
    tokenizer = tokenizer_class(
        vocab={token: index for index, token in enumerate(vocab)},
        do_lower_case=False,
        strip_accents=False,
        tokenize_chinese_chars=True,
        model_max_length=max_text_positions,
    )
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
    output_dir: str | os.PathLike,
    family: str,
    hidden_size: int = TINY_HIDDEN_SIZE,
    sizes: Mapping[str, Any] | None = None,
) -> Path:
    """A tiny random speech backbone of `family` (one of `SPEECH_FAMILIES`) with its real feature extractor, saved
    in standard HF layout to `output_dir`, which it returns.

    The wav2vec2-style ones keep the real convolutional strides (49 frames per second of 16 kHz audio); the Whisper
    keeps the real 80-bin log-mel front end and 30 s window (1,500 encoder positions, 50 per second). `sizes`
    replaces entries of a wav2vec2-style config's sizes (`num_hidden_layers`, `conv_dim`, ...).
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
        if sizes:
            raise ValueError("sizes replace a wav2vec2-style config's entries; the tiny Whisper takes none")
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
        **(sizes or {}),
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


TIMESTAMP_STEP_SECONDS = 0.02
"""Whisper's timestamp resolution."""
TIMESTAMPED_NEW_TOKENS = 24
"""How many tokens the timestamped tiny recognizer writes per 30 s window: a few (start, text, end) chunks."""


def build_tiny_asr_model(output_dir: str | os.PathLike, seed: int = 0, timestamps: bool = False) -> Path:
    """A tiny random multilingual Whisper speech recognizer in standard HF layout (model, generation config,
    feature extractor, byte-level tokenizer), which `pipeline("automatic-speech-recognition")` loads offline.

    Its generation config knows Korean and the transcribe task like the real checkpoints', and suppresses every
    special token (end of text included) for at most 8 new tokens: random weights then always "hear" a few
    characters, so the audio-only path has a transcript to run on. Returns `output_dir`.

    With `timestamps`, the vocabulary goes on with Whisper's timestamp tokens `<|0.00|>` ... `<|30.00|>` (every
    `TIMESTAMP_STEP_SECONDS`, ordinary tokens right after `<|notimestamps|>`, where the tokenizer's timestamp decoding
    looks for them) and it decodes up to `TIMESTAMPED_NEW_TOKENS` tokens, so that `return_timestamps=True` gives
    timestamped chunks; without them Whisper's timestamp decoding fails on it.
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
    steps = round(30.0 / TIMESTAMP_STEP_SECONDS) if timestamps else -1
    for step in range(steps + 1):
        vocab[f"<|{step * TIMESTAMP_STEP_SECONDS:.2f}|>"] = len(vocab)
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
        max_new_tokens=TIMESTAMPED_NEW_TOKENS if timestamps else 8,
    )
    model.save_pretrained(output_dir)
    WhisperProcessor(WhisperFeatureExtractor(), tokenizer).save_pretrained(output_dir)
    return Path(output_dir)
