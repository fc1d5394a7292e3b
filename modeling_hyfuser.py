"""PyTorch HyFusER: Hybrid Multimodal Transformer for Emotion Recognition using Dual Cross-Modal Attention.

Yi, Kwak, Shin, *Applied Sciences* 2025, 15, 1053, Section 4.3 and Algorithm 1. The model consumes features that
`HyFusERProcessor` has already extracted (KoELECTRA for text, HuBERT for speech), aligned to
(sequence_length, hidden_size) and jointly standard-scaled (Eqs. 4-6):

    E_T = TransformerEncoder_T(X'_T)                  E_S = TransformerEncoder_S(X'_S)
    H_T = CrossModal(Q=E_T, K=V=E_S)   (Step 1)       H_S = CrossModal(Q=E_S, K=V=E_T)   (Step 2, Eqs. 7-8)
    Y_T = softmax(W_T GAP(H_T) + b_T)                  Y_S = softmax(W_S GAP(H_S) + b_S)
    Y   = (Y_T + Y_S) / 2                             (Last Fusion, Eq. 9)

The blocks are post-norm, as Section 4.3.3 puts LayerNorm after the attention and feed-forward computations. They add
no positional encoding of their own (the paper does not mention one): both backbones' features already carry position
(ELECTRA's position embeddings, HuBERT's convolutional ones).

The comparison models of the paper's Tables 5 and 6 follow HyFusER, on the same features and with the same blocks:
`TRAINABLE_MODELS` and `COMPOSED_MODELS` name them all.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

try:
    from .configuration_hyfuser import HyFusERConfig
except ImportError:
    from configuration_hyfuser import HyFusERConfig


@dataclass
class HyFusEROutput(ModelOutput):
    r"""
    Output of [`HyFusERForEmotionRecognition`] and of the baselines (`TRAINABLE_MODELS`, `COMPOSED_MODELS`).

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given):
            Cross-entropy of the ensemble probabilities, plus each head's own cross-entropy when
            `config.use_modality_losses` is set. For the baselines: the cross-entropy of their prediction.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
            Log of the averaged probabilities (Eq. 9): `softmax(logits)` is exactly `(Y_T + Y_S) / 2`. For every
            model, the log-probabilities of its final prediction.
        text_logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`, *optional*):
            Pre-softmax scores of the text-centric head (Step 1, text queries speech); an ensemble's text member's
            log-probabilities. `None` for the one-head baselines.
        speech_logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`, *optional*):
            Pre-softmax scores of the speech-centric head (Step 2, speech queries text); an ensemble's speech
            member's log-probabilities. `None` for the one-head baselines.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            States of shape `(batch_size, sequence_length, hidden_size)`, in the order they are computed: the text
            encoder's input X'_T and the output of each of its layers, the speech encoder's input X'_S and the
            output of each of its layers, then the output of Step 1 (H_T) and of Step 2 (H_S): 2 x
            `num_hidden_layers` + 4 tensors for HyFusER. With `config.encoders_per_step`, Step 2's own text and
            speech encoders follow Step 1's in the same way, before H_T and H_S (4 x `num_hidden_layers` + 6). A
            baseline returns the same for the blocks it has (each model's forward says its order).
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
            Attention maps of shape `(batch_size, num_heads, sequence_length, sequence_length)`: the text encoder
            layers, then the speech encoder layers (then Step 2's own, with `config.encoders_per_step`), then Step 1
            and Step 2 (each model's forward says its order).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    text_logits: torch.FloatTensor | None = None
    speech_logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(Q K^T / sqrt(d_k) + mask) V with the softmax spelled out, so that its weights can be returned.

    `query` is `(batch_size, num_heads, query_length, head_dim)`, `key` and `value` `(batch_size, num_heads,
    key_length, head_dim)`. `attention_mask`, if given, broadcasts to `(batch_size, num_heads, query_length,
    key_length)` and is either additive (0 where a key may be attended, a large negative number where it may not) or,
    as masks built for sdpa are, boolean (True where a key may be attended). Returns the context as `(batch_size,
    query_length, num_heads, head_dim)` and the weights before attention dropout.
    """
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    elif attention_mask is not None:
        scores = scores + attention_mask
    weights = torch.softmax(scores, dim=-1)
    context = torch.matmul(F.dropout(weights, p=dropout, training=module.training), value)
    return context.transpose(1, 2).contiguous(), weights


class HyFusERAttention(nn.Module):
    """Multi-head scaled dot-product attention (Eqs. 7-8), computed by the kernel `config._attn_implementation` names.

    Without `key_value_states` it is self-attention (the modality encoders); with them it is cross-modal attention
    whose queries come from `hidden_states` and keys/values from the other modality (Steps 1 and 2).
    """

    def __init__(self, config: HyFusERConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.is_causal = False  # every position sees every position, of its own modality or of the other
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
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        r"""
        attention_mask (`torch.Tensor` broadcastable to `(batch_size, num_heads, query_length, key_length)`,
            *optional*): key mask, additive or boolean, as `eager_attention_forward` describes; each kernel takes both
            (`transformers.masking_utils.create_bidirectional_mask` builds one for the configured kernel). The paper's
            model passes none.
        output_attentions (`bool`): also return the attention weights. Only the eager computation has them, so this
            call then runs eagerly whatever `config._attn_implementation` says.
        """
        source = hidden_states if key_value_states is None else key_value_states
        query = self._split_heads(self.q_proj(hidden_states))
        key = self._split_heads(self.k_proj(source))
        value = self._split_heads(self.v_proj(source))

        implementation = "eager" if output_attentions else self.config._attn_implementation
        attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        context, weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.dropout if self.training else 0.0,
            scaling=self.scaling,
        )
        context = context.reshape(*hidden_states.shape[:-1], self.num_heads * self.head_dim)
        return self.out_proj(context), weights if output_attentions else None


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


class HyFusEREncoderLayer(GradientCheckpointingLayer):
    """Post-norm transformer block: attention, residual, LayerNorm, then feed-forward, residual, LayerNorm.

    The same block is an encoder layer (self-attention) and, given `key_value_states`, one step of the dual
    cross-modal attention, which the paper also gives a ReLU feed-forward (Section 4.3.3). Under gradient
    checkpointing its activations are recomputed in the backward pass; the states that need gradients must then be
    passed positionally.
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
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attention_output, attention_weights = self.attention(
            hidden_states, key_value_states, attention_mask=attention_mask, output_attentions=output_attentions
        )
        hidden_states = self.layer_norm(hidden_states + self.dropout(attention_output))
        hidden_states = self.final_layer_norm(hidden_states + self.dropout(self.feed_forward(hidden_states)))
        return hidden_states, attention_weights


class HyFusEREncoder(nn.Module):
    """`num_hidden_layers` self-attention layers over one modality (Section 4.3.1)."""

    def __init__(self, config: HyFusERConfig):
        super().__init__()
        self.layers = nn.ModuleList([HyFusEREncoderLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> BaseModelOutput:
        """`hidden_states` of the output are the encoder's input followed by every layer's output."""
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, weights = layer(
                hidden_states, attention_mask=attention_mask, output_attentions=output_attentions
            )
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)
        return BaseModelOutput(
            last_hidden_state=hidden_states, hidden_states=all_hidden_states, attentions=all_attentions
        )


FLASH_ATTENTION_MAX_HEAD_DIM = 256
"""The widest attention head FlashAttention's kernels take."""


class HyFusERLayerWeighting(nn.Module):
    """A softmax-weighted sum over a backbone's layers: (batch, layers, positions, width) -> (batch, positions, width).

    The weights start equal (zeros before the softmax) and are learned with the rest of HyFusER.
    """

    def __init__(self, num_layers: int):
        super().__init__()
        self.layer_weights = nn.Parameter(torch.zeros(num_layers))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.einsum("blpw,l->bpw", features, self.layer_weights.softmax(-1))


def _projection(feature_size: int, hidden_size: int) -> nn.Module:
    return nn.Identity() if feature_size == hidden_size else nn.Linear(feature_size, hidden_size)


def _key_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A (batch, length) 1/0 padding mask as the additive key mask the attention interface takes, (batch, 1, 1,
    length): 0 for real keys, the most negative float for padding, whose softmax weight is then exactly 0."""
    if attention_mask is None:
        return None
    padding = attention_mask[:, None, None, :] == 0
    return torch.zeros(padding.shape, dtype=dtype, device=padding.device).masked_fill(padding, torch.finfo(dtype).min)


def _masked_mean(states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The mean over the real positions of (batch, length, hidden) states: GlobalAveragePooling1D with a mask."""
    if attention_mask is None:
        return states.mean(dim=1)
    weights = attention_mask.to(states.dtype)[..., None]
    return (states * weights).sum(dim=1) / weights.sum(dim=1)


LEGACY_KEY_MAPPING = {r"^text_to_speech\.": "text_queries_speech.", r"^speech_to_text\.": "speech_queries_text."}
"""Weight names of checkpoints saved before the two cross-modal steps were renamed, mapped to today's names."""


class HyFusERPreTrainedModel(PreTrainedModel):
    """Loading plumbing and output conventions shared by HyFusER and its baselines.

    The library's default initialisation: normal(0, `initializer_range`) linears and convolutions (Glorot-uniform
    ones with `config.initializer="glorot_uniform"`) with zero bias, unit LayerNorms, and Glorot-uniform LSTM weights
    with zero biases (Keras's LSTM default for the input kernel); the models have no other parameters.

    Attention runs through the library's attention interface: `attn_implementation="eager"`, `"sdpa"` (the default)
    or, on a GPU with flash-attn installed and heads of at most `FLASH_ATTENTION_MAX_HEAD_DIM` dimensions,
    `"flash_attention_2"`, chosen at load time. The models without attention (`text_lstm`, `speech_cnn` and their
    ensemble) take the choice too, though it changes nothing in them, so that one config builds every model; they
    have no blocks to checkpoint.
    """

    config_class = HyFusERConfig
    base_model_prefix = "hyfuser"
    main_input_name = "text_features"
    _no_split_modules = ["HyFusEREncoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    supports_gradient_checkpointing = True
    has_modality_heads = False
    """Whether the output also holds `text_logits` and `speech_logits`: a text-side and a speech-side prediction
    whose probabilities the fused one averages (HyFusER's two heads, an ensemble's two members)."""

    adapts_features = False
    """Whether the model projects features of another width than `hidden_size` and learns a weighted sum of backbone
    layers (only HyFusER does)."""

    def __init__(self, config: HyFusERConfig, *inputs, **kwargs):
        super().__init__(config, *inputs, **kwargs)
        # The config accepts any label set, as every transformers config does; a softmax classifier needs two labels.
        if config.num_labels < 2:
            raise ValueError(
                f"{type(self).__name__} classifies into config.num_labels classes and needs at least 2, got "
                f"{config.num_labels} (config.id2label: {config.id2label})"
            )
        if config.problem_type not in (None, "single_label_classification"):
            raise ValueError(
                f"{type(self).__name__} is a single-label classifier (cross-entropy over softmax probabilities); "
                f"config.problem_type {config.problem_type!r} is not supported"
            )
        if config.adapts_features and not self.adapts_features:
            raise ValueError(
                f"{type(self).__name__} needs one backbone layer (layer_weighting=False) and text_feature_size "
                f"({config.text_feature_size}) and speech_feature_size ({config.speech_feature_size}) equal to "
                f"hidden_size ({config.hidden_size}); only HyFusERForEmotionRecognition adapts other features"
            )

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, HyFusERLayerWeighting):
            init.zeros_(module.layer_weights)  # equal weights at the start
        elif self.config.initializer == "glorot_uniform" and isinstance(module, (nn.Linear, nn.Conv1d)):
            init.xavier_uniform_(module.weight)

    def _flash_attn_can_dispatch(self, flash_attn_version: int, is_init_check: bool = False) -> bool:
        """The library's checks, plus the head size: the paper's single 768-dimensional head is too wide."""
        head_dim = self.config.hidden_size // self.config.num_attention_heads
        if head_dim > FLASH_ATTENTION_MAX_HEAD_DIM:
            raise ValueError(
                f"FlashAttention takes heads of at most {FLASH_ATTENTION_MAX_HEAD_DIM} dimensions; this config's are "
                f"hidden_size / num_attention_heads = {self.config.hidden_size} / {self.config.num_attention_heads} "
                f"= {head_dim}. Use attn_implementation='sdpa' or 'eager', or more heads."
            )
        return super()._flash_attn_can_dispatch(flash_attn_version, is_init_check)

    def _output_flags(self, output_attentions: bool | None, output_hidden_states: bool | None) -> tuple[bool, bool]:
        """The call's `output_attentions` and `output_hidden_states`, else the config's, as transformers models do."""
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        return bool(output_attentions), bool(output_hidden_states)

    def _check_features(self, name: str, features: torch.Tensor) -> torch.Tensor:
        """`features` if their shape is the config's, ready for the blocks; a ValueError naming `name` otherwise.

        Under reentrant gradient checkpointing a block backpropagates only if one of its tensor inputs requires grad,
        and features read from a dataset do not: they then enter as a leaf that does, whose gradient nothing reads.
        """
        modality = name.removesuffix("_features")
        fields = ("sequence_length", f"{modality}_feature_size")
        if self.config.layer_weighting:
            fields = (f"{modality}_num_layers", *fields)
        expected = tuple(getattr(self.config, field) for field in fields)
        if self.config.feature_mode == "native":  # any length: the batch's longest item
            expected = expected[:-2] + (features.shape[-2], expected[-1])
            fields = fields[:-2] + ("length", fields[-1])
        if tuple(features.shape[1:]) != expected:
            raise ValueError(
                f"{name} must have shape (batch_size, {', '.join(map(str, expected))}) to match the config's "
                f"({', '.join(fields)}), got {tuple(features.shape)}"
            )
        if (
            self.training
            and torch.is_grad_enabled()
            and not features.requires_grad
            and self.is_activation_checkpointing
        ):
            return features.detach().requires_grad_()
        return features

    @staticmethod
    def _one_head_output(
        scores: torch.Tensor,
        labels: torch.LongTensor | None,
        hidden_states: tuple[torch.Tensor, ...] | None = None,
        attentions: tuple[torch.Tensor, ...] | None = None,
    ) -> HyFusEROutput:
        """A single softmax head's output: `logits` are its log-probabilities and the loss their cross-entropy."""
        logits = scores.log_softmax(-1)
        loss = F.nll_loss(logits, labels) if labels is not None else None
        return HyFusEROutput(loss=loss, logits=logits, hidden_states=hidden_states, attentions=attentions)

    @classmethod
    def from_pretrained(cls, *args, key_mapping: dict[str, str] | None = None, **kwargs):
        """`PreTrainedModel.from_pretrained`, also reading checkpoints saved under the old step names.

        The renaming goes through the library's checkpoint-conversion hook (`key_mapping`), which, like every
        conversion used at load, is reverted when that model is saved again: an old checkpoint keeps its layout.
        """
        return super().from_pretrained(*args, key_mapping={**LEGACY_KEY_MAPPING, **(key_mapping or {})}, **kwargs)


class HyFusERForEmotionRecognition(HyFusERPreTrainedModel):
    """HyFusER with its two emotion heads and the average-ensemble Last Fusion (Algorithm 1).

    Both steps read one text and one speech encoder unless `config.encoders_per_step` gives Step 2 a pair of its own
    (`step2_text_encoder`, `step2_speech_encoder`; Step 1 then reads `text_encoder` and `speech_encoder` alone).
    """

    has_modality_heads = True
    adapts_features = True

    def __init__(self, config: HyFusERConfig):
        super().__init__(config)
        # A backbone wider or narrower than hidden_size (e.g. WavLM-large's 1024) is projected onto it first; in the
        # paper's setting both are hidden_size wide and nothing is added.
        self.text_projection = _projection(config.text_feature_size, config.hidden_size)
        self.speech_projection = _projection(config.speech_feature_size, config.hidden_size)
        # With layer_weighting the features hold every backbone layer: one learned softmax weighting per modality.
        self.text_layer_weighting = HyFusERLayerWeighting(config.text_num_layers) if config.layer_weighting else None
        self.speech_layer_weighting = (
            HyFusERLayerWeighting(config.speech_num_layers) if config.layer_weighting else None
        )
        self.text_encoder = HyFusEREncoder(config)
        self.speech_encoder = HyFusEREncoder(config)
        self.step2_text_encoder = HyFusEREncoder(config) if config.encoders_per_step else None
        self.step2_speech_encoder = HyFusEREncoder(config) if config.encoders_per_step else None
        self.text_queries_speech = HyFusEREncoderLayer(config)
        self.speech_queries_text = HyFusEREncoderLayer(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.text_classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.speech_classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        text_features: torch.Tensor,
        speech_features: torch.Tensor,
        labels: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        text_attention_mask: torch.Tensor | None = None,
        speech_attention_mask: torch.Tensor | None = None,
    ) -> HyFusEROutput:
        r"""
        text_features (`torch.FloatTensor` of shape `(batch_size, sequence_length, text_feature_size)`):
            Scaled KoELECTRA features X'_T from [`HyFusERProcessor`]; with `config.layer_weighting`, every
            backbone layer's: `(batch_size, text_num_layers, sequence_length, text_feature_size)`. With
            `config.feature_mode="native"` the length is the batch's longest text, not `sequence_length`.
        speech_features (`torch.FloatTensor` of shape `(batch_size, sequence_length, speech_feature_size)`):
            Scaled, time-interpolated HuBERT features X'_S from [`HyFusERProcessor`]; with
            `config.layer_weighting`, `(batch_size, speech_num_layers, sequence_length, speech_feature_size)`.
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Emotion ids in `[0, config.num_labels)`.
        output_attentions, output_hidden_states (`bool`, *optional*, default to the config's):
            Return every attention map / every block's states, in the order `HyFusEROutput` gives.
        return_dict (`bool`, *optional*, defaults to `config.return_dict`):
            `False` returns `HyFusEROutput.to_tuple()`: the fields that are not `None`, in order.
        text_attention_mask, speech_attention_mask (`torch.LongTensor` of shape `(batch_size, length)`, *optional*):
            1 for a real position, 0 for padding (`feature_mode="native"` batches). Padded positions are never
            attended to, as keys of the encoder or of either cross-modal step, and are left out of the average
            pooling, so an item's prediction does not depend on the items it is batched with. `None`: all real.
        """
        text_features = self._check_features("text_features", text_features)
        speech_features = self._check_features("speech_features", speech_features)
        text_keys = _key_mask(text_attention_mask, text_features.dtype)
        speech_keys = _key_mask(speech_attention_mask, speech_features.dtype)
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        output_flags = {"output_attentions": output_attentions, "output_hidden_states": output_hidden_states}

        # Intermediate Layer Fusion: one encoder per modality (Section 4.3.1) ...
        if self.config.layer_weighting:
            text_features = self.text_layer_weighting(text_features)
            speech_features = self.speech_layer_weighting(speech_features)
        text_features, speech_features = self.text_projection(text_features), self.speech_projection(speech_features)
        text = self.text_encoder(text_features, attention_mask=text_keys, **output_flags)
        speech = self.speech_encoder(speech_features, attention_mask=speech_keys, **output_flags)
        step2_text, step2_speech = text, speech
        if self.config.encoders_per_step:  # Algorithm 1's second pair of TransformerEncoder lines, for Step 2
            step2_text = self.step2_text_encoder(text_features, attention_mask=text_keys, **output_flags)
            step2_speech = self.step2_speech_encoder(speech_features, attention_mask=speech_keys, **output_flags)
        # ... then the dual cross-modal attention. Step 1: Q = E_T, K = V = E_S (Eq. 7).
        text_centric, step1_attention = self.text_queries_speech(
            text.last_hidden_state,
            speech.last_hidden_state,
            attention_mask=speech_keys,
            output_attentions=output_attentions,
        )
        # Step 2: Q = E_S, K = V = E_T (Eq. 8).
        speech_centric, step2_attention = self.speech_queries_text(
            step2_speech.last_hidden_state,
            step2_text.last_hidden_state,
            attention_mask=text_keys,
            output_attentions=output_attentions,
        )

        # GlobalAveragePooling1D (over the real positions), then one dense softmax head per direction (Section 4.3.2).
        text_logits = self.text_classifier(self.dropout(_masked_mean(text_centric, text_attention_mask)))
        speech_logits = self.speech_classifier(self.dropout(_masked_mean(speech_centric, speech_attention_mask)))

        # Last Fusion (Eq. 9): log((Y_T + Y_S) / 2), computed in log space so it never underflows.
        log_probs = torch.stack([text_logits.log_softmax(-1), speech_logits.log_softmax(-1)])
        logits = torch.logsumexp(log_probs, dim=0) - math.log(2.0)

        loss = None
        if labels is not None:
            loss = F.nll_loss(logits, labels)
            if self.config.use_modality_losses:
                loss = loss + F.cross_entropy(text_logits, labels) + F.cross_entropy(speech_logits, labels)

        encoders = (text, speech, step2_text, step2_speech) if self.config.encoders_per_step else (text, speech)
        hidden_states = attentions = None
        if output_hidden_states:
            hidden_states = sum((encoder.hidden_states for encoder in encoders), ()) + (text_centric, speech_centric)
        if output_attentions:
            attentions = sum((encoder.attentions for encoder in encoders), ()) + (step1_attention, step2_attention)
        return HyFusEROutput(
            loss=loss,
            logits=logits,
            text_logits=text_logits,
            speech_logits=speech_logits,
            hidden_states=hidden_states,
            attentions=attentions,
        )


# --------------------------------------------------------------------------------------------------------------------
# The baselines of the paper's Tables 5 and 6. The paper names them but gives no architecture; each is built as we
# judge its authors most plausibly built it, from the same scaled features and with HyFusER's blocks. The paper names
# no framework, but its layer, loss and callback names (GlobalAveragePooling1D, Dense, Sparse Categorical
# Crossentropy, ModelCheckpoint) are Keras's, so the sizes it leaves open are Keras's usual ones.


class HyFusERTextLSTM(HyFusERPreTrainedModel):
    """`text_lstm`, the paper's "LSTM (Text)": text features only, one LSTM over the positions, average-pooled, a
    softmax head.

    In Keras: `LSTM(lstm_hidden_size, return_sequences=True)`, `GlobalAveragePooling1D`, `Dropout`, `Dense(softmax)`.
    PyTorch's LSTM keeps two bias vectors (`bias_ih`, `bias_hh`) where Keras keeps one: 4 x `lstm_hidden_size` more
    parameters for the same function. `speech_features` is accepted, so every model takes the same batch, and ignored.
    """

    supports_gradient_checkpointing = False  # no transformer blocks to recompute

    def __init__(self, config: HyFusERConfig):
        super().__init__(config)
        self.lstm = nn.LSTM(config.hidden_size, config.lstm_hidden_size, batch_first=True)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.lstm_hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        text_features: torch.Tensor,
        speech_features: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
    ) -> HyFusEROutput:
        r"""
        text_features (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
            Scaled KoELECTRA features X'_T from [`HyFusERProcessor`].
        speech_features (*optional*): ignored.
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Emotion ids in `[0, config.num_labels)`.
        output_hidden_states (`bool`, *optional*, defaults to the config's): return the text features and the LSTM's
            states, `(batch_size, sequence_length, lstm_hidden_size)`.
        """
        _, output_hidden_states = self._output_flags(None, output_hidden_states)
        text_features = self._check_features("text_features", text_features)
        states, _ = self.lstm(text_features)
        return self._one_head_output(
            self.classifier(self.dropout(states.mean(dim=1))),
            labels,
            hidden_states=(text_features, states) if output_hidden_states else None,
        )


class HyFusERSpeechCNN(HyFusERPreTrainedModel):
    """`speech_cnn`, the paper's "CNN (Speech)": speech features only, `cnn_num_layers` 1-D convolutions over time
    with ReLU and 'same' padding, average-pooled, a softmax head.

    In Keras: `Conv1D(cnn_channels, cnn_kernel_size, padding="same", activation="relu")` x `cnn_num_layers`,
    `GlobalAveragePooling1D`, `Dropout`, `Dense(softmax)`. `text_features` is accepted and ignored.
    """

    main_input_name = "speech_features"
    supports_gradient_checkpointing = False  # no transformer blocks to recompute

    def __init__(self, config: HyFusERConfig):
        super().__init__(config)
        in_channels = [config.hidden_size] + [config.cnn_channels] * (config.cnn_num_layers - 1)
        self.convolutions = nn.ModuleList(
            nn.Conv1d(channels, config.cnn_channels, config.cnn_kernel_size, padding="same")
            for channels in in_channels
        )
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.cnn_channels, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        text_features: torch.Tensor | None = None,
        speech_features: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
    ) -> HyFusEROutput:
        r"""
        text_features (*optional*): ignored.
        speech_features (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
            Scaled, time-interpolated HuBERT features X'_S from [`HyFusERProcessor`].
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Emotion ids in `[0, config.num_labels)`.
        output_hidden_states (`bool`, *optional*, defaults to the config's): return the speech features and each
            convolution's output, `(batch_size, sequence_length, cnn_channels)`.
        """
        if speech_features is None:
            raise ValueError("HyFusERSpeechCNN needs speech_features")
        _, output_hidden_states = self._output_flags(None, output_hidden_states)
        speech_features = self._check_features("speech_features", speech_features)
        all_states = (speech_features,)
        states = speech_features.transpose(1, 2)  # Conv1d convolves the last axis: (batch, hidden, time)
        for convolution in self.convolutions:
            states = F.relu(convolution(states))
            all_states += (states.transpose(1, 2),)
        return self._one_head_output(
            self.classifier(self.dropout(states.mean(dim=-1))),
            labels,
            hidden_states=all_states if output_hidden_states else None,
        )


class HyFusERBidirectionalCrossModalAttention(HyFusERPreTrainedModel):
    """`bicma`, the paper's "Bidirectional Cross Modal Attention": both cross-modal steps straight on the scaled
    features, without per-modality encoders, each direction average-pooled, the two pooled vectors concatenated into
    one softmax head.

    The paper gives the row no architecture and no citation. Another reading is HyFusER without Last Fusion: its
    encoders and both steps, with one head instead of two averaged ones. We built what the row's name alone
    describes, since the paper names the encoders for HyFusER and KoHMT and none for this row; it then lacks both
    parts of HyFusER the paper credits, the modality encoders of Intermediate Layer Fusion and the two heads' average
    (Last Fusion). The steps are HyFusER's blocks under HyFusER's names.
    """

    def __init__(self, config: HyFusERConfig):
        super().__init__(config)
        self.text_queries_speech = HyFusEREncoderLayer(config)
        self.speech_queries_text = HyFusEREncoderLayer(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(2 * config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        text_features: torch.Tensor,
        speech_features: torch.Tensor,
        labels: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> HyFusEROutput:
        r"""
        text_features, speech_features, labels, return_dict: as [`HyFusERForEmotionRecognition`].
        output_attentions (`bool`, *optional*): return the text-queries-speech and speech-queries-text maps.
        output_hidden_states (`bool`, *optional*): return the text features, the speech features, then the outputs of
            text-queries-speech and speech-queries-text.
        """
        text_features = self._check_features("text_features", text_features)
        speech_features = self._check_features("speech_features", speech_features)
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        text_centric, text_map = self.text_queries_speech(
            text_features, speech_features, output_attentions=output_attentions
        )
        speech_centric, speech_map = self.speech_queries_text(
            speech_features, text_features, output_attentions=output_attentions
        )
        pooled = torch.cat([text_centric.mean(dim=1), speech_centric.mean(dim=1)], dim=-1)
        hidden_states = (
            (text_features, speech_features, text_centric, speech_centric) if output_hidden_states else None
        )
        attentions = (text_map, speech_map) if output_attentions else None
        return self._one_head_output(
            self.classifier(self.dropout(pooled)), labels, hidden_states=hidden_states, attentions=attentions
        )


class HyFusERKoHMT(HyFusERPreTrainedModel):
    """`kohmt`: KoHMT (Yi, Kwak, Shin, *Electronics* 2024, 13(23), 4674), the authors' earlier model, which the paper
    cites ([26]) but does not describe. Built as a transformer encoder per modality, then one cross-modal attention
    with text as query and speech as key/value, average-pooled, one softmax head: HyFusER's Step 1 branch alone.
    (Table 2's "Step 1 Model" column is not KoHMT: it is HyFusER's own Step 1 prediction in the paper's example.)

    `HyFusERKoHMTSpeechQueries` is its mirror. Both keep their step as `cross_modal_step`.
    """

    query_modality = "text"
    """Which modality's encoder states are the queries of the cross-modal step; the other gives keys and values."""

    def __init__(self, config: HyFusERConfig):
        super().__init__(config)
        self.text_encoder = HyFusEREncoder(config)
        self.speech_encoder = HyFusEREncoder(config)
        self.cross_modal_step = HyFusEREncoderLayer(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        text_features: torch.Tensor,
        speech_features: torch.Tensor,
        labels: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> HyFusEROutput:
        r"""
        text_features, speech_features, labels, return_dict: as [`HyFusERForEmotionRecognition`].
        output_attentions (`bool`, *optional*): return the text encoder's, the speech encoder's, then the cross-modal
            step's maps.
        output_hidden_states (`bool`, *optional*): return the text encoder's input and layer outputs, the speech
            encoder's, then the cross-modal step's output.
        """
        text_features = self._check_features("text_features", text_features)
        speech_features = self._check_features("speech_features", speech_features)
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        output_flags = {"output_attentions": output_attentions, "output_hidden_states": output_hidden_states}
        text = self.text_encoder(text_features, **output_flags)
        speech = self.speech_encoder(speech_features, **output_flags)
        queries, keys_values = (text, speech) if self.query_modality == "text" else (speech, text)
        attended, step_attention = self.cross_modal_step(
            queries.last_hidden_state, keys_values.last_hidden_state, output_attentions=output_attentions
        )
        hidden_states = text.hidden_states + speech.hidden_states + (attended,) if output_hidden_states else None
        attentions = text.attentions + speech.attentions + (step_attention,) if output_attentions else None
        return self._one_head_output(
            self.classifier(self.dropout(attended.mean(dim=1))),
            labels,
            hidden_states=hidden_states,
            attentions=attentions,
        )


class HyFusERKoHMTSpeechQueries(HyFusERKoHMT):
    """`kohmt_speech`: KoHMT mirrored, speech queries text: HyFusER's Step 2 branch alone. Not a row of the paper's
    tables; trained for `hyfuser_separate`."""

    query_modality = "speech"


def weighted_average_log_probabilities(
    text_log_probabilities: torch.Tensor, speech_log_probabilities: torch.Tensor, text_weight: float
) -> torch.Tensor:
    """log(w Y_T + (1 - w) Y_S) from log Y_T and log Y_S, in log space so that it never underflows."""
    weights = torch.tensor([text_weight, 1.0 - text_weight], dtype=text_log_probabilities.dtype)
    log_weights = weights.log().to(text_log_probabilities.device).view(2, 1, 1)  # log 0 = -inf drops a member
    return torch.logsumexp(torch.stack([text_log_probabilities, speech_log_probabilities]) + log_weights, dim=0)


class HyFusERAverageEnsemble(HyFusERPreTrainedModel):
    """`average_ensemble` and `weighted_average_ensemble`, the paper's "Single modality (weighted) average
    ensemble": the probabilities of a trained `text_lstm` and a trained `speech_cnn`, averaged with weights
    `config.ensemble_text_weight` and 1 - that.

    The ensemble trains nothing itself: `from_members` composes two trained members. The plain ensemble weighs them
    0.5/0.5; the weighted one takes the weight `hyfuser.metrics.choose_ensemble_weight` picks on a held-out part of
    the training split, never on the validation split. `text_logits`/`speech_logits` are the members'
    log-probabilities, so the pipeline's `return_modalities` shows each member's scores.
    """

    text_member_class: type[HyFusERPreTrainedModel] = HyFusERTextLSTM
    speech_member_class: type[HyFusERPreTrainedModel] = HyFusERSpeechCNN
    has_modality_heads = True
    supports_gradient_checkpointing = False  # composed of trained members, never trained itself

    def __init__(self, config: HyFusERConfig):
        super().__init__(config)
        self.text_model = self.text_member_class(config)
        self.speech_model = self.speech_member_class(config)
        self.post_init()

    @classmethod
    def from_members(
        cls, text_model: HyFusERPreTrainedModel, speech_model: HyFusERPreTrainedModel, text_weight: float = 0.5
    ) -> HyFusERAverageEnsemble:
        """The ensemble of two trained members, their weights copied in. Its config is the text member's with
        `ensemble_text_weight=text_weight`, so both members must have been built with the same configuration."""
        for member, expected in ((text_model, cls.text_member_class), (speech_model, cls.speech_member_class)):
            # By name: a member loaded as remote code is a copy of the class, not the class itself.
            if type(member).__name__ != expected.__name__:
                raise TypeError(f"{cls.__name__} composes a {expected.__name__}, got a {type(member).__name__}")
        for field in ("feature_shape", "id2label"):
            if getattr(text_model.config, field) != getattr(speech_model.config, field):
                raise ValueError(
                    f"The members' configs differ in {field}: {getattr(text_model.config, field)} (text) vs "
                    f"{getattr(speech_model.config, field)} (speech)"
                )
        config = copy.deepcopy(text_model.config)
        config.ensemble_text_weight = text_weight
        config._validate()
        ensemble = cls(config)
        ensemble.text_model.load_state_dict(text_model.state_dict())
        ensemble.speech_model.load_state_dict(speech_model.state_dict())
        return ensemble.to(text_model.device).eval()

    @can_return_tuple
    def forward(
        self,
        text_features: torch.Tensor,
        speech_features: torch.Tensor,
        labels: torch.LongTensor | None = None,
    ) -> HyFusEROutput:
        r"""
        text_features, speech_features, labels: as [`HyFusERForEmotionRecognition`]; `loss` is the cross-entropy of
        the weighted average.
        """
        text_logits = self.text_model(text_features, speech_features).logits
        speech_logits = self.speech_model(text_features, speech_features).logits
        logits = weighted_average_log_probabilities(text_logits, speech_logits, self.config.ensemble_text_weight)
        loss = F.nll_loss(logits, labels) if labels is not None else None
        return HyFusEROutput(loss=loss, logits=logits, text_logits=text_logits, speech_logits=speech_logits)


class HyFusERSeparateSteps(HyFusERAverageEnsemble):
    """`hyfuser_separate` (an ablation, in no table of the paper): Algorithm 1 read literally, as Table 2's column
    names "Step 1 Model" and "Step 2 Model" can be read. A `kohmt` (text queries speech) and a `kohmt_speech` (speech
    queries text), each with its own encoders and trained on its own, their probabilities averaged (Eq. 9, weight
    0.5). HyFusER trains the same two branches jointly, on shared encoders, through the averaged output;
    `hyfuser_step_encoders` trains them jointly on an encoder pair per step, with exactly these parameters."""

    text_member_class = HyFusERKoHMT
    speech_member_class = HyFusERKoHMTSpeechQueries


class HyFusERSeedEnsemble(HyFusERAverageEnsemble):
    """`hyfuser_seed_ensemble` (a control, in no table of the paper): two HyFusER runs trained alike from different
    seeds, their probabilities averaged. It costs what `hyfuser_separate` costs (two trainings), so comparing the two
    tells whether the separate steps win by being separate or by being an ensemble. `text_logits`/`speech_logits`
    are the first and the second run's log-probabilities."""

    text_member_class = HyFusERForEmotionRecognition
    speech_member_class = HyFusERForEmotionRecognition


class HyFusERWithStepEncoders(HyFusERForEmotionRecognition):
    """`hyfuser_step_encoders`: HyFusER with `config.encoders_per_step` set, whatever the given config says.

    The same-budget control of `hyfuser_separate`: the same parameters (an encoder pair, a step and a head per
    direction) and the same function of them, but one network trained once through the averaged output, with one
    early-stopping choice, where `hyfuser_separate` is two networks trained and stopped apart.
    """

    def __init__(self, config: HyFusERConfig):
        if not config.encoders_per_step:
            config = copy.deepcopy(config)  # the caller's config may build other models too
            config.encoders_per_step = True
        super().__init__(config)


class HyFusERLinearProbe(HyFusERPreTrainedModel):
    """`linear_probe`: a multinomial logistic regression on the features averaged over positions, text and speech
    concatenated: the floor every trained model should reach, since it learns nothing but one linear map of what the
    frozen backbones already give. `linear_probe_text` and `linear_probe_speech` read one modality each, the floors
    of `text_lstm` and `speech_cnn`.

    It is fitted in closed form rather than by the `Trainer`: `hyfuser.probes.fit_linear_probe` minimises the
    cross-entropy plus an L2 penalty by full-batch L-BFGS, the penalty chosen on the model-selection rows.
    """

    probe_modalities: tuple[str, ...] = ("text", "speech")
    """The modalities whose pooled features the probe reads, concatenated in this order."""

    supports_gradient_checkpointing = False  # no blocks to recompute

    def __init__(self, config: HyFusERConfig):
        super().__init__(config)
        self.classifier = nn.Linear(len(self.probe_modalities) * config.hidden_size, config.num_labels)
        self.post_init()

    def pool(self, text_features: torch.Tensor | None, speech_features: torch.Tensor | None) -> torch.Tensor:
        """The probe's input, `(batch_size, len(probe_modalities) * hidden_size)`: each read modality's features
        averaged over the positions (GlobalAveragePooling1D), concatenated."""
        features = {"text": text_features, "speech": speech_features}
        pooled = []
        for modality in self.probe_modalities:
            if features[modality] is None:
                raise ValueError(f"{type(self).__name__} needs {modality}_features")
            pooled.append(self._check_features(f"{modality}_features", features[modality]).mean(dim=1))
        return torch.cat(pooled, dim=-1)

    @can_return_tuple
    def forward(
        self,
        text_features: torch.Tensor | None = None,
        speech_features: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
    ) -> HyFusEROutput:
        r"""
        text_features, speech_features, labels: as [`HyFusERForEmotionRecognition`]; a modality the probe does not
        read may be left out and is ignored.
        """
        return self._one_head_output(self.classifier(self.pool(text_features, speech_features)), labels)


class HyFusERTextLinearProbe(HyFusERLinearProbe):
    """`linear_probe_text`: the linear probe on the pooled text features alone."""

    probe_modalities = ("text",)


class HyFusERSpeechLinearProbe(HyFusERLinearProbe):
    """`linear_probe_speech`: the linear probe on the pooled speech features alone."""

    main_input_name = "speech_features"
    probe_modalities = ("speech",)


TRAINABLE_MODELS: dict[str, type[HyFusERPreTrainedModel]] = {
    "hyfuser": HyFusERForEmotionRecognition,
    "text_lstm": HyFusERTextLSTM,
    "speech_cnn": HyFusERSpeechCNN,
    "bicma": HyFusERBidirectionalCrossModalAttention,
    "kohmt": HyFusERKoHMT,
    "kohmt_speech": HyFusERKoHMTSpeechQueries,
    "hyfuser_step_encoders": HyFusERWithStepEncoders,
}
"""Every model that trains on the cached features by itself (`train.py --model NAME`), by name."""

PROBE_MODELS: dict[str, type[HyFusERLinearProbe]] = {
    "linear_probe": HyFusERLinearProbe,
    "linear_probe_text": HyFusERTextLinearProbe,
    "linear_probe_speech": HyFusERSpeechLinearProbe,
}
"""The linear probes, by name: fitted on the pooled cached features by `hyfuser.probes.fit_linear_probe`
(`reproduce.py` runs them beside the models), not by the `Trainer`."""


@dataclass(frozen=True)
class ComposedModel:
    """A model composed of two trained `TRAINABLE_MODELS` (`model_class.from_members`), trained no further."""

    model_class: type[HyFusERAverageEnsemble]
    members: tuple[str, str]
    """Names of the text-side and the speech-side member in `TRAINABLE_MODELS`."""
    weighted: bool
    """Whether the text member's weight is chosen on held-out training rows; otherwise it is 0.5."""


COMPOSED_MODELS: dict[str, ComposedModel] = {
    "average_ensemble": ComposedModel(HyFusERAverageEnsemble, ("text_lstm", "speech_cnn"), weighted=False),
    "weighted_average_ensemble": ComposedModel(HyFusERAverageEnsemble, ("text_lstm", "speech_cnn"), weighted=True),
    "hyfuser_separate": ComposedModel(HyFusERSeparateSteps, ("kohmt", "kohmt_speech"), weighted=False),
    "hyfuser_seed_ensemble": ComposedModel(HyFusERSeedEnsemble, ("hyfuser", "hyfuser"), weighted=False),
}
"""The ensembles, by name: which trained members each composes and how it weighs them."""

MODEL_DESCRIPTIONS: dict[str, str] = {
    "hyfuser": "HyFusER: per-modality encoders, dual cross-modal attention, two heads averaged (the paper's model)",
    "text_lstm": "Table 5/6 'LSTM (Text)': an LSTM over the text features, average-pooled, one softmax head",
    "speech_cnn": "Table 5/6 'CNN (Speech)': 1-D convolutions over the speech features, average-pooled, one head",
    "bicma": "Table 5/6 'Bidirectional Cross Modal Attention': both cross-modal steps on the features, no "
    "encoders, pooled directions concatenated into one head",
    "kohmt": "Table 5/6 'KoHMT': per-modality encoders, text queries speech, one head (HyFusER's Step 1 branch)",
    "kohmt_speech": "KoHMT mirrored, speech queries text (HyFusER's Step 2 branch); a member of hyfuser_separate",
    "average_ensemble": "Table 5/6 'Single modality average ensemble': mean of the probabilities of a trained "
    "text_lstm and a trained speech_cnn",
    "weighted_average_ensemble": "Table 5/6 'Single modality weighted average ensemble': the same with the text "
    "weight chosen on training rows held out from the members' training",
    "hyfuser_separate": "ablation: a trained kohmt and a trained kohmt_speech, each with its own encoders, averaged",
    "hyfuser_seed_ensemble": "control: two HyFusER runs from different seeds, averaged (hyfuser_separate's budget)",
    "hyfuser_step_encoders": "control: HyFusER with an encoder pair per step, hyfuser_separate's parameters, trained "
    "jointly once",
    "linear_probe": "floor: logistic regression on the mean-pooled text and speech features, fitted by L-BFGS",
    "linear_probe_text": "floor: logistic regression on the mean-pooled text features",
    "linear_probe_speech": "floor: logistic regression on the mean-pooled speech features",
}
"""One line per model name, for `train.py --help` and anything that lists the models."""


__all__ = [
    "COMPOSED_MODELS",
    "MODEL_DESCRIPTIONS",
    "PROBE_MODELS",
    "TRAINABLE_MODELS",
    "ComposedModel",
    "HyFusERAverageEnsemble",
    "HyFusERBidirectionalCrossModalAttention",
    "HyFusERForEmotionRecognition",
    "HyFusERKoHMT",
    "HyFusERKoHMTSpeechQueries",
    "HyFusERLinearProbe",
    "HyFusEROutput",
    "HyFusERPreTrainedModel",
    "HyFusERSeedEnsemble",
    "HyFusERSeparateSteps",
    "HyFusERSpeechCNN",
    "HyFusERSpeechLinearProbe",
    "HyFusERTextLSTM",
    "HyFusERTextLinearProbe",
    "HyFusERWithStepEncoders",
]
