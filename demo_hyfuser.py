"""Offline stand-ins for the real backbones, used by the tests, the offline demo and nothing else.

Real KoELECTRA and HuBERT weights cannot be downloaded everywhere (CI, air-gapped servers), so
`build_tiny_backbones` writes small, randomly initialised ELECTRA and HuBERT models to disk in the
standard Hugging Face layout. Everything downstream loads them exactly as it loads the real Hub ids,
through `AutoTokenizer` / `AutoFeatureExtractor` / `AutoModel`, so the loading code under test is the real one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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
class TinyBackbones:
    """Paths of the two backbone directories written by `build_tiny_backbones`."""

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


def build_tiny_backbones(
    output_dir: str | os.PathLike,
    hidden_size: int = TINY_HIDDEN_SIZE,
    max_text_positions: int = 256,
    seed: int = 0,
) -> TinyBackbones:
    """Write a tiny ELECTRA (`<output_dir>/text`) and HuBERT (`<output_dir>/speech`) in standard HF layout.

    The ELECTRA tokenizer is KoELECTRA's kind (cased WordPiece, no accent stripping, which would decompose
    Hangul into jamo). The HuBERT keeps the real convolutional strides, so it yields HuBERT-base's 49 frames
    per second of 16 kHz audio, and the real feature-extractor settings. Calling it twice with the same
    arguments writes identical weights.
    """
    import torch

    output_dir = Path(output_dir)
    text_dir, speech_dir = output_dir / "text", output_dir / "speech"
    torch.manual_seed(seed)

    vocab = korean_wordpiece_vocab()
    tokenizer = ElectraTokenizerFast(
        vocab={token: index for index, token in enumerate(vocab)},
        do_lower_case=False,
        strip_accents=False,
        tokenize_chinese_chars=True,
        model_max_length=max_text_positions,
    )
    text_config = ElectraConfig(
        vocab_size=len(vocab),
        embedding_size=hidden_size,
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=max_text_positions,
    )
    ElectraModel(text_config).eval().save_pretrained(text_dir)
    tokenizer.save_pretrained(text_dir)

    speech_config = HubertConfig(
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        conv_dim=(hidden_size,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    HubertModel(speech_config).eval().save_pretrained(speech_dir)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16_000, padding_value=0.0, do_normalize=True, return_attention_mask=False
    ).save_pretrained(speech_dir)
    return TinyBackbones(text=str(text_dir), speech=str(speech_dir), hidden_size=hidden_size)
