"""HyFusER model configuration.

The defaults are the paper's Table 3 (Yi, Kwak, Shin, *Applied Sciences* 2025, 15, 1053). This file is the one
source of truth for the emotion label list, the (sequence_length, hidden_size) = (126, 768) feature shape and
the backbone ids: the processor, the data loaders and the training script all read them from here.
"""

import math

from transformers import PretrainedConfig

EMOTION_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
"""The seven emotion classes of KEMDy19/20 and AI-Hub 263, in the order of the paper's Fig. 7 (ids 0..6)."""

DEFAULT_TEXT_BACKBONE = "monologg/koelectra-base-v3-discriminator"
DEFAULT_SPEECH_BACKBONE = "facebook/hubert-base-ls960"
INITIALIZERS: tuple[str, ...] = ("normal", "glorot_uniform")
"""`HyFusERConfig.initializer` values: transformers' normal(0, initializer_range), or Keras's Glorot-uniform."""
FEATURE_MODES: tuple[str, ...] = ("paper", "native")
"""`HyFusERConfig.feature_mode` values: the paper's fixed-length features, or variable-length ones with masks."""


def check_temperature(temperature) -> float:
    """`temperature` as a float if it is a finite number above 0 (a calibration temperature), else a clear error."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ValueError(f"HyFusERConfig.calibration_temperature must be a number, got {temperature!r}")
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"HyFusERConfig.calibration_temperature must be finite and above 0, got {temperature!r}")
    return float(temperature)

BASELINE_WIDTH_DIVISOR = 6
"""The `text_lstm` and `speech_cnn` baselines are `hidden_size / 6` wide (rounded up) unless set: 128 at the paper's
768, the usual Keras `LSTM(128)` and `Conv1D(128, 3)`. Scaling with `hidden_size`, as HyFusER's own blocks do, keeps
their size relative to HyFusER's what it is at 768 at any other width (the demo's 32 gives 6)."""

DEFAULT_ASR_MODEL = "openai/whisper-large-v3-turbo"
"""The speech recognizer that writes the text side when an input has only audio: multilingual Whisper, which
transcribes Korean."""


class HyFusERConfig(PretrainedConfig):
    r"""
    Configuration of [`HyFusERForEmotionRecognition`]: two transformer encoders over pre-extracted text and
    speech features, dual cross-modal attention, and an average ensemble of two softmax heads. The baselines of the
    paper's Tables 5 and 6 (`modeling_hyfuser.TRAINABLE_MODELS`, `COMPOSED_MODELS`) share it: the transformer ones
    read the same fields; the few sizes the paper does not give for the others are the `lstm_*`, `cnn_*` and
    `ensemble_*` arguments.

    Args:
        hidden_size (`int`, defaults to 768):
            Feature dimension D of both modalities (Table 3 "Input Shape" (126, 768)); equals the hidden size of
            the KoELECTRA and HuBERT backbones.
        sequence_length (`int`, defaults to 126):
            Positions T per modality (Table 3 "Input Shape"): text is padded/truncated to this many tokens, the
            HuBERT frames are linearly interpolated to it (Section 4.2). With `feature_mode="native"`, the most
            text tokens kept (the processor's `max_speech_frames` caps the speech frames).
        feature_mode (`str`, defaults to `"paper"`):
            `"paper"`: every utterance's features are exactly `sequence_length` positions per modality (Section
            4.2). `"native"`: text keeps its real token count and speech HuBERT's native frames (no interpolation);
            batches are padded to their longest item, and `text_attention_mask`/`speech_attention_mask` keep the
            padding out of every attention's keys and out of the average pooling.
        intermediate_size (`int`, defaults to 768):
            Width of every position-wise ReLU feed-forward (Table 3 "Feed-Forward Dimension").
        num_hidden_layers (`int`, defaults to 3):
            Encoder layers per modality (Table 3 "Number of Layers").
        num_attention_heads (`int`, defaults to 1):
            Heads in every attention block (Table 3 "Number of Attention Heads").
        layer_norm_eps (`float`, defaults to 1e-6):
            LayerNorm epsilon after attention and feed-forward (Table 3).
        hidden_act (`str`, defaults to `"relu"`):
            Feed-forward activation (Table 3 "Activation Function").
        hidden_dropout_prob (`float`, defaults to 0.1):
            Dropout on attention and feed-forward outputs before each residual. The paper does not mention dropout;
            0.1 is the value of the original Transformer.
        attention_dropout (`float`, defaults to 0.1):
            Dropout on attention probabilities (same reasoning as `hidden_dropout_prob`).
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the normal initialiser of every linear layer.
        initializer (`str`, defaults to `"normal"`):
            `"normal"`: every linear and convolution weight drawn from normal(0, `initializer_range`), transformers'
            convention. `"glorot_uniform"`: Glorot-uniform weights (std sqrt(2 / (fan_in + fan_out)), Keras's default
            for `Dense`, `Conv1D` and `MultiHeadAttention`), which at small widths start far larger than 0.02 and
            leave the loss plateau of the first epochs sooner (docs/collapse/README.md). Biases start at zero either
            way.
        use_modality_losses (`bool`, defaults to `False`):
            If `False` the loss is the cross-entropy of the averaged probabilities (Eq. 9), the model's output. The
            paper names its loss (Table 3: "Sparse Categorical Crossentropy") but not whether it is taken on that
            average or on each head. If `True`, each head's own cross-entropy is added, which keeps both directions
            discriminative on their own.
        encoders_per_step (`bool`, defaults to `False`):
            If `False`, both cross-modal steps read one text and one speech encoder. If `True`, each step has an
            encoder pair of its own, as Algorithm 1, which writes both `TransformerEncoder` lines in Step 1 and again
            in Step 2, can be read; the two pairs are still trained jointly, through the averaged output. The paper
            does not say which it trained. `True` gives HyFusER exactly the parameters of `hyfuser_separate`.
        lstm_hidden_size (`int`, *optional*, defaults to `hidden_size / 6` rounded up, 128 at 768):
            Units of the `text_lstm` baseline's single LSTM layer. The paper gives no size; 128 is the common
            Keras choice (`LSTM(128, return_sequences=True)`), scaled with `hidden_size` (`BASELINE_WIDTH_DIVISOR`).
        cnn_channels (`int`, *optional*, defaults to `hidden_size / 6` rounded up, 128 at 768):
            Filters of every convolution of the `speech_cnn` baseline (not in the paper; `Conv1D(128, 3)`), scaled
            like `lstm_hidden_size`.
        cnn_kernel_size (`int`, defaults to 3):
            Kernel width, in positions, of those convolutions ('same' padding keeps all positions).
        cnn_num_layers (`int`, defaults to 2):
            Convolutions stacked in the `speech_cnn` baseline (not in the paper).
        ensemble_text_weight (`float`, defaults to 0.5):
            Weight of the text member's probabilities in the average ensembles; the speech member gets the rest.
            0.5 is the plain average (the paper's Eq. 9); the weighted ensemble's is chosen on held-out training
            rows (`hyfuser.metrics.choose_ensemble_weight`).
        text_feature_size (`int`, *optional*, defaults to `hidden_size`):
            Width of the text features, i.e. the text backbone's hidden size. When it differs from `hidden_size`
            (e.g. a 1024-wide backbone), HyFusER first applies a learned linear projection to `hidden_size`.
        speech_feature_size (`int`, *optional*, defaults to `hidden_size`):
            Width of the speech features; projected like the text's when it differs from `hidden_size`.
        layer_weighting (`bool`, defaults to `False`):
            If `True`, the features hold every hidden state of each backbone, (batch, layers, sequence_length,
            width), and HyFusER learns a softmax-weighted sum over the layers per modality (as transformers' audio
            classifiers do with `use_weighted_layer_sum`). The paper does not say which backbone layer it uses; the
            default is one layer, the last.
        text_num_layers (`int`, *optional*):
            Hidden states of the text backbone, embedding output included (13 for KoELECTRA-base); needed with
            `layer_weighting`.
        speech_num_layers (`int`, *optional*):
            Hidden states of the speech backbone, embedding output included (13 for HuBERT-base); needed with
            `layer_weighting`.
        text_backbone (`str`, defaults to `"monologg/koelectra-base-v3-discriminator"`):
            Hub id or path of the frozen text backbone (Section 3.1). Informational: the processor loads it.
        speech_backbone (`str`, defaults to `"facebook/hubert-base-ls960"`):
            Hub id or path of the frozen speech backbone (Section 3.2). Informational: the processor loads it.
        calibration_temperature (`float`, defaults to 1.0):
            Temperature T > 0 that the pipeline applies to the fused output, softmax(logits / T), so its probabilities
            mean what they say (temperature scaling, fitted after training on the model-selection rows). The
            model's forward and its `logits` stay raw; 1.0 (the default, and every config saved before it existed)
            changes nothing. Not named `temperature`, which transformers reads as a generation setting.
        num_labels / id2label / label2id:
            Seven emotions, `EMOTION_LABELS`, unless overridden. Like every transformers config it accepts any label
            set; the models, which classify with a softmax, refuse fewer than two labels when they are built.
    """

    model_type = "hyfuser"

    def __init__(
        self,
        hidden_size: int = 768,
        sequence_length: int = 126,
        feature_mode: str = "paper",
        intermediate_size: int = 768,
        num_hidden_layers: int = 3,
        num_attention_heads: int = 1,
        layer_norm_eps: float = 1e-6,
        hidden_act: str = "relu",
        hidden_dropout_prob: float = 0.1,
        attention_dropout: float = 0.1,
        initializer_range: float = 0.02,
        initializer: str = "normal",
        use_modality_losses: bool = False,
        encoders_per_step: bool = False,
        lstm_hidden_size: int | None = None,
        cnn_channels: int | None = None,
        cnn_kernel_size: int = 3,
        cnn_num_layers: int = 2,
        ensemble_text_weight: float = 0.5,
        text_feature_size: int | None = None,
        speech_feature_size: int | None = None,
        layer_weighting: bool = False,
        text_num_layers: int | None = None,
        speech_num_layers: int | None = None,
        text_backbone: str = DEFAULT_TEXT_BACKBONE,
        speech_backbone: str = DEFAULT_SPEECH_BACKBONE,
        calibration_temperature: float = 1.0,
        **kwargs,
    ):
        if "id2label" not in kwargs and "num_labels" not in kwargs:
            kwargs["id2label"] = dict(enumerate(EMOTION_LABELS))
            kwargs["label2id"] = {label: index for index, label in enumerate(EMOTION_LABELS)}
        super().__init__(**kwargs)
        self.hidden_size = hidden_size
        self.sequence_length = sequence_length
        self.feature_mode = feature_mode
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.layer_norm_eps = layer_norm_eps
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.initializer = initializer
        self.use_modality_losses = use_modality_losses
        self.encoders_per_step = encoders_per_step
        baseline_width = math.ceil(hidden_size / BASELINE_WIDTH_DIVISOR) if isinstance(hidden_size, int) else None
        self.lstm_hidden_size = baseline_width if lstm_hidden_size is None else lstm_hidden_size
        self.cnn_channels = baseline_width if cnn_channels is None else cnn_channels
        self.cnn_kernel_size = cnn_kernel_size
        self.cnn_num_layers = cnn_num_layers
        self.ensemble_text_weight = ensemble_text_weight
        self.text_feature_size = hidden_size if text_feature_size is None else text_feature_size
        self.speech_feature_size = hidden_size if speech_feature_size is None else speech_feature_size
        self.layer_weighting = layer_weighting
        self.text_num_layers = text_num_layers
        self.speech_num_layers = speech_num_layers
        self.text_backbone = text_backbone
        self.speech_backbone = speech_backbone
        self.calibration_temperature = calibration_temperature
        self._validate()

    def _validate(self) -> None:
        """Fail early, naming the field, instead of deep inside a matmul."""
        sizes = (
            "hidden_size", "sequence_length", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "lstm_hidden_size", "cnn_channels", "cnn_kernel_size", "cnn_num_layers", "text_feature_size",
            "speech_feature_size",
        )  # fmt: skip
        for name in sizes:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"HyFusERConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"HyFusERConfig.hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.initializer not in INITIALIZERS:
            raise ValueError(f"HyFusERConfig.initializer must be one of {INITIALIZERS}, got {self.initializer!r}")
        if self.feature_mode not in FEATURE_MODES:
            raise ValueError(f"HyFusERConfig.feature_mode must be one of {FEATURE_MODES}, got {self.feature_mode!r}")
        if self.layer_weighting:
            for name in ("text_num_layers", "speech_num_layers"):
                value = getattr(self, name)
                if not isinstance(value, int) or value <= 0:
                    raise ValueError(
                        f"HyFusERConfig.{name} must be a positive integer with layer_weighting, got {value!r}"
                    )
        if not 0.0 <= self.ensemble_text_weight <= 1.0:
            raise ValueError(
                f"HyFusERConfig.ensemble_text_weight must be in [0, 1], got {self.ensemble_text_weight!r}"
            )
        for name in ("hidden_dropout_prob", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"HyFusERConfig.{name} must be in [0, 1), got {getattr(self, name)!r}")
        check_temperature(self.calibration_temperature)

    @property
    def feature_shape(self) -> tuple[int, int]:
        """(sequence_length, hidden_size): the shape of one utterance's features per modality in the paper's
        setting, where both backbones are `hidden_size` wide."""
        return (self.sequence_length, self.hidden_size)

    @property
    def adapts_features(self) -> bool:
        """Whether the features are other than the paper's: a backbone's width differs from `hidden_size` (a
        projection), they hold every backbone layer (a learned weighted sum), or their lengths vary (masks)."""
        widths = (self.text_feature_size, self.speech_feature_size)
        return self.layer_weighting or self.feature_mode != "paper" or widths != (self.hidden_size, self.hidden_size)
