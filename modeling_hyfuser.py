"""PyTorch HyFusER: Hybrid Multimodal Transformer for Emotion Recognition using Dual Cross-Modal Attention.

Yi, Kwak, Shin, *Applied Sciences* 2025, 15, 1053, Section 4.3 and Algorithm 1. The model consumes features that
`HyFusERProcessor` has already extracted (KoELECTRA for text, HuBERT for speech), aligned to
(sequence_length, hidden_size) and jointly standard-scaled (Eqs. 4-6):

    E_T = TransformerEncoder_T(X'_T)                  E_S = TransformerEncoder_S(X'_S)
    H_T = CrossModal(Q=E_T, K=V=E_S)   (Step 1)       H_S = CrossModal(Q=E_S, K=V=E_T)   (Step 2, Eqs. 7-8)
    Y_T = softmax(W_T GAP(H_T) + b_T)                  Y_S = softmax(W_S GAP(H_S) + b_S)
    Y   = (Y_T + Y_S) / 2                             (Last Fusion, Eq. 9)

Like the Keras encoder the paper describes, the blocks are post-norm and add no positional encoding of their own:
both backbones' features already carry position (ELECTRA's position embeddings, HuBERT's convolutional ones).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

try:
    from .configuration_hyfuser import HyFusERConfig
except ImportError:
    from configuration_hyfuser import HyFusERConfig


@dataclass
class HyFusEROutput(ModelOutput):
    r"""
    Output of [`HyFusERForEmotionRecognition`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given):
            Cross-entropy of the ensemble probabilities, plus each head's own cross-entropy when
            `config.use_modality_losses` is set.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
            Log of the averaged probabilities (Eq. 9): `softmax(logits)` is exactly `(Y_T + Y_S) / 2`.
        text_logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
            Pre-softmax scores of the text-centric head (Step 1, text queries speech).
        speech_logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
            Pre-softmax scores of the speech-centric head (Step 2, speech queries text).
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
            Attention maps of shape `(batch_size, num_heads, sequence_length, sequence_length)`: the text encoder
            layers, then the speech encoder layers, then Step 1 and Step 2.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    text_logits: torch.FloatTensor | None = None
    speech_logits: torch.FloatTensor | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class HyFusERAttention(nn.Module):
    """Multi-head scaled dot-product attention (Eqs. 7-8).

    Without `key_value_states` it is self-attention (the modality encoders); with them it is cross-modal attention
    whose queries come from `hidden_states` and keys/values from the other modality (Steps 1 and 2).
    """

    def __init__(self, config: HyFusERConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout = config.attention_dropout
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def _split_heads(self, states: torch.Tensor) -> torch.Tensor:
        batch_size, length, _ = states.shape
        return states.view(batch_size, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        source = hidden_states if key_value_states is None else key_value_states
        query = self._split_heads(self.q_proj(hidden_states))
        key = self._split_heads(self.k_proj(source))
        value = self._split_heads(self.v_proj(source))
        dropout = self.dropout if self.training else 0.0

        if output_attentions:
            # The fused kernel cannot return its weights, so spell the softmax out when they are wanted.
            weights = torch.softmax(query @ key.transpose(-1, -2) / math.sqrt(self.head_dim), dim=-1)
            context = F.dropout(weights, p=dropout, training=self.training) @ value
        else:
            weights = None
            context = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout)

        batch_size, _, length, _ = context.shape
        context = context.transpose(1, 2).reshape(batch_size, length, self.num_heads * self.head_dim)
        return self.out_proj(context), weights


class HyFusERFeedForward(nn.Module):
    """Position-wise feed-forward, hidden -> intermediate -> hidden, with the paper's ReLU (Table 3)."""

    def __init__(self, config: HyFusERConfig):
        super().__init__()
        self.intermediate_dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.intermediate_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.output_dense = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.intermediate_dropout(self.activation(self.intermediate_dense(hidden_states)))
        return self.output_dense(hidden_states)


class HyFusEREncoderLayer(nn.Module):
    """Post-norm transformer block: attention, residual, LayerNorm, then feed-forward, residual, LayerNorm.

    The same block is an encoder layer (self-attention) and, given `key_value_states`, one step of the dual
    cross-modal attention, which the paper also gives a ReLU feed-forward (Section 4.3.3).
    """

    def __init__(self, config: HyFusERConfig):
        super().__init__()
        self.attention = HyFusERAttention(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = HyFusERFeedForward(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attention_output, attention_weights = self.attention(hidden_states, key_value_states, output_attentions)
        hidden_states = self.layer_norm(hidden_states + self.dropout(attention_output))
        hidden_states = self.final_layer_norm(hidden_states + self.dropout(self.feed_forward(hidden_states)))
        return hidden_states, attention_weights


class HyFusEREncoder(nn.Module):
    """`num_hidden_layers` self-attention layers over one modality (Section 4.3.1)."""

    def __init__(self, config: HyFusERConfig):
        super().__init__()
        self.layers = nn.ModuleList([HyFusEREncoderLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        attentions = ()
        for layer in self.layers:
            hidden_states, weights = layer(hidden_states, output_attentions=output_attentions)
            if output_attentions:
                attentions += (weights,)
        return hidden_states, attentions


LEGACY_KEY_MAPPING = {r"^text_to_speech\.": "text_queries_speech.", r"^speech_to_text\.": "speech_queries_text."}
"""Weight names of checkpoints saved before the two cross-modal steps were renamed, mapped to today's names."""


class HyFusERPreTrainedModel(PreTrainedModel):
    """Loading plumbing shared by HyFusER models.

    The library's default initialisation is the right one: normal(0, `initializer_range`) linears with zero bias and
    unit LayerNorms, and HyFusER has no other parameters.
    """

    config_class = HyFusERConfig
    base_model_prefix = "hyfuser"
    main_input_name = "text_features"
    _no_split_modules = ["HyFusEREncoderLayer"]

    @classmethod
    def from_pretrained(cls, *args, key_mapping: dict[str, str] | None = None, **kwargs):
        """`PreTrainedModel.from_pretrained`, also reading checkpoints saved under the old step names.

        The renaming goes through the library's checkpoint-conversion hook (`key_mapping`), which, like every
        conversion used at load, is reverted when that model is saved again: an old checkpoint keeps its layout.
        """
        return super().from_pretrained(*args, key_mapping={**LEGACY_KEY_MAPPING, **(key_mapping or {})}, **kwargs)


class HyFusERForEmotionRecognition(HyFusERPreTrainedModel):
    """HyFusER with its two emotion heads and the average-ensemble Last Fusion (Algorithm 1)."""

    def __init__(self, config: HyFusERConfig):
        super().__init__(config)
        self.text_encoder = HyFusEREncoder(config)
        self.speech_encoder = HyFusEREncoder(config)
        self.text_queries_speech = HyFusEREncoderLayer(config)
        self.speech_queries_text = HyFusEREncoderLayer(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.text_classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.speech_classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def _check_features(self, name: str, features: torch.Tensor) -> None:
        expected = self.config.feature_shape
        if features.dim() != 3 or tuple(features.shape[1:]) != expected:
            raise ValueError(
                f"{name} must have shape (batch_size, {expected[0]}, {expected[1]}) to match the config's "
                f"(sequence_length, hidden_size), got {tuple(features.shape)}"
            )

    @can_return_tuple
    def forward(
        self,
        text_features: torch.Tensor,
        speech_features: torch.Tensor,
        labels: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
    ) -> HyFusEROutput:
        r"""
        text_features (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
            Scaled KoELECTRA features X'_T from [`HyFusERProcessor`].
        speech_features (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
            Scaled, time-interpolated HuBERT features X'_S from [`HyFusERProcessor`].
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Emotion ids in `[0, config.num_labels)`.
        """
        self._check_features("text_features", text_features)
        self._check_features("speech_features", speech_features)
        output_attentions = bool(output_attentions)

        # Intermediate Layer Fusion: one encoder per modality (Section 4.3.1) ...
        text_states, text_attentions = self.text_encoder(text_features, output_attentions)
        speech_states, speech_attentions = self.speech_encoder(speech_features, output_attentions)
        # ... then the dual cross-modal attention. Step 1: Q = E_T, K = V = E_S (Eq. 7).
        text_centric, step1_attention = self.text_queries_speech(text_states, speech_states, output_attentions)
        # Step 2: Q = E_S, K = V = E_T (Eq. 8).
        speech_centric, step2_attention = self.speech_queries_text(speech_states, text_states, output_attentions)

        # GlobalAveragePooling1D, then one dense softmax head per direction (Section 4.3.2).
        text_logits = self.text_classifier(self.dropout(text_centric.mean(dim=1)))
        speech_logits = self.speech_classifier(self.dropout(speech_centric.mean(dim=1)))

        # Last Fusion (Eq. 9): log((Y_T + Y_S) / 2), computed in log space so it never underflows.
        log_probs = torch.stack([text_logits.log_softmax(-1), speech_logits.log_softmax(-1)])
        logits = torch.logsumexp(log_probs, dim=0) - math.log(2.0)

        loss = None
        if labels is not None:
            loss = F.nll_loss(logits, labels)
            if self.config.use_modality_losses:
                loss = loss + F.cross_entropy(text_logits, labels) + F.cross_entropy(speech_logits, labels)

        attentions = None
        if output_attentions:
            attentions = text_attentions + speech_attentions + (step1_attention, step2_attention)
        return HyFusEROutput(
            loss=loss, logits=logits, text_logits=text_logits, speech_logits=speech_logits, attentions=attentions
        )


__all__ = ["HyFusERForEmotionRecognition", "HyFusERPreTrainedModel", "HyFusEROutput"]

TRAINABLE_MODELS: dict[str, type[HyFusERPreTrainedModel]] = {"hyfuser": HyFusERForEmotionRecognition}
"""Every model trained on the cached features, by the name the comparison runner (`reproduce.py`) uses."""

COMPOSED_MODELS: dict[str, tuple[str, str]] = {}
"""Models evaluated from two trained `TRAINABLE_MODELS` members' probabilities, without training of their own."""
