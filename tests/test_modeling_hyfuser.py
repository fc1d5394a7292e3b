"""HyFusERConfig and HyFusERForEmotionRecognition on real (randomly initialised) modules."""

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from configuration_hyfuser import EMOTION_LABELS, HyFusERConfig
from modeling_hyfuser import HyFusERAttention, HyFusEREncoder, HyFusEREncoderLayer, HyFusERForEmotionRecognition


@pytest.fixture(autouse=True)
def seeded_initialisation():
    """Every test's randomly initialised model is the same on every run."""
    torch.manual_seed(0)


def small_config(**overrides) -> HyFusERConfig:
    settings = dict(hidden_size=16, intermediate_size=24, sequence_length=5, num_attention_heads=2)
    settings.update(overrides)
    return HyFusERConfig(**settings)


def random_features(config: HyFusERConfig, batch_size: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shape = (batch_size, config.sequence_length, config.hidden_size)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


def expected_parameter_count(config: HyFusERConfig) -> int:
    """docs/architecture.md's arithmetic: every block is attention (4 dense D x D) + feed-forward + 2 LayerNorms."""
    d, f, c = config.hidden_size, config.intermediate_size, config.num_labels
    attention = 4 * (d * d + d)
    feed_forward = (d * f + f) + (f * d + d)
    layer_norms = 2 * 2 * d
    block = attention + feed_forward + layer_norms
    blocks = 2 * config.num_hidden_layers + 2  # two encoders + Step 1 + Step 2
    heads = 2 * (d * c + c)
    return blocks * block + heads


def test_default_config_equals_table_3():
    config = HyFusERConfig()
    assert (config.sequence_length, config.hidden_size) == (126, 768)
    assert config.intermediate_size == 768
    assert config.num_hidden_layers == 3
    assert config.num_attention_heads == 1
    assert config.layer_norm_eps == 1e-6
    assert config.hidden_act == "relu"
    assert config.num_labels == 7
    assert [config.id2label[i] for i in range(7)] == list(EMOTION_LABELS)
    assert config.label2id["neutral"] == 4


def test_default_model_runs_on_random_paper_shaped_inputs():
    config = HyFusERConfig()
    model = HyFusERForEmotionRecognition(config).eval()
    text, speech = torch.randn(2, 126, 768), torch.randn(2, 126, 768)
    with torch.no_grad():
        output = model(text, speech)
    assert output.logits.shape == (2, 7)
    assert output.text_logits.shape == output.speech_logits.shape == (2, 7)
    assert sum(p.numel() for p in model.parameters()) == expected_parameter_count(config) == 28_383_758


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(hidden_size=10, num_attention_heads=3), "hidden_size"),
        (dict(sequence_length=0), "sequence_length"),
        (dict(hidden_dropout_prob=1.5), "hidden_dropout_prob"),
        (dict(initializer="he"), r"initializer must be one of \('normal', 'glorot_uniform'\)"),
    ],
)
def test_invalid_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        HyFusERConfig(**overrides)


def test_config_round_trips_through_save_pretrained(tmp_path):
    config = small_config(use_modality_losses=True)
    config.save_pretrained(tmp_path)
    reloaded = HyFusERConfig.from_pretrained(tmp_path)
    assert reloaded.to_dict() == config.to_dict()


def test_softmax_of_logits_is_the_average_of_both_heads():
    model = HyFusERForEmotionRecognition(small_config()).eval()
    output = model(*random_features(model.config))
    ensemble = (output.text_logits.softmax(-1) + output.speech_logits.softmax(-1)) / 2
    torch.testing.assert_close(output.logits.softmax(-1), ensemble)
    torch.testing.assert_close(output.logits.exp().sum(-1), torch.ones(3))


def test_loss_is_cross_entropy_of_the_ensemble_probabilities():
    model = HyFusERForEmotionRecognition(small_config()).eval()
    labels = torch.tensor([0, 4, 6])
    output = model(*random_features(model.config), labels=labels)
    ensemble = (output.text_logits.softmax(-1) + output.speech_logits.softmax(-1)) / 2
    torch.testing.assert_close(output.loss, -ensemble[torch.arange(3), labels].log().mean())


def test_modality_losses_add_each_heads_cross_entropy():
    model = HyFusERForEmotionRecognition(small_config(use_modality_losses=True)).eval()
    labels = torch.tensor([1, 2, 3])
    output = model(*random_features(model.config), labels=labels)
    ensemble_loss = F.nll_loss(output.logits, labels)
    expected = ensemble_loss + F.cross_entropy(output.text_logits, labels) + F.cross_entropy(output.speech_logits, labels)
    torch.testing.assert_close(output.loss, expected)


def test_each_direction_reads_both_modalities():
    """Step 1 takes keys/values from speech, Step 2 from text: perturbing either modality moves both heads."""
    model = HyFusERForEmotionRecognition(small_config()).eval()
    text, speech = random_features(model.config)
    base = model(text, speech)
    moved_speech = model(text, speech + 1.0)
    moved_text = model(text + 1.0, speech)
    for moved in (moved_speech, moved_text):
        assert not torch.allclose(moved.text_logits, base.text_logits)
        assert not torch.allclose(moved.speech_logits, base.speech_logits)


def test_item_result_does_not_depend_on_its_batch():
    model = HyFusERForEmotionRecognition(small_config()).eval()
    text, speech = random_features(model.config, batch_size=4)
    together = model(text, speech).logits
    alone = torch.cat([model(text[i : i + 1], speech[i : i + 1]).logits for i in range(4)])
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=1e-5)


def test_output_attentions_returns_every_layer_without_changing_logits():
    config = small_config()
    model = HyFusERForEmotionRecognition(config).eval()
    features = random_features(config)
    plain = model(*features)
    assert plain.attentions is None
    with_maps = model(*features, output_attentions=True)
    assert len(with_maps.attentions) == 2 * config.num_hidden_layers + 2
    shape = (3, config.num_attention_heads, config.sequence_length, config.sequence_length)
    for attention_map in with_maps.attentions:
        assert isinstance(attention_map, torch.Tensor) and attention_map.shape == shape
        torch.testing.assert_close(attention_map.sum(-1), torch.ones(shape[:-1]))  # each query's weights sum to 1
    torch.testing.assert_close(with_maps.logits, plain.logits)


def test_encoders_per_step_gives_step_2_an_encoder_pair_of_its_own():
    """Step 1 reads text_encoder/speech_encoder, Step 2 its own pair; their states follow Step 1's, before H_T, H_S."""
    config = small_config(encoders_per_step=True, num_hidden_layers=2)
    model = HyFusERForEmotionRecognition(config).eval()
    text, speech = random_features(config)
    with torch.no_grad():
        output = model(text, speech, output_hidden_states=True)
        maps = model(text, speech, output_attentions=True).attentions
        step1_text, step1_speech, step2_text, step2_speech = (
            encoder(features, output_hidden_states=True).hidden_states
            for encoder, features in (
                (model.text_encoder, text), (model.speech_encoder, speech),
                (model.step2_text_encoder, text), (model.step2_speech_encoder, speech),
            )
        )  # fmt: skip
        step1, _ = model.text_queries_speech(step1_text[-1], step1_speech[-1])
        step2, _ = model.speech_queries_text(step2_speech[-1], step2_text[-1])
    expected = (*step1_text, *step1_speech, *step2_text, *step2_speech, step1, step2)
    assert len(output.hidden_states) == 4 * config.num_hidden_layers + 6 == len(expected)
    for got, want in zip(output.hidden_states, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert len(maps) == 4 * config.num_hidden_layers + 2
    # Each head depends on its own step's encoders only.
    with torch.no_grad():
        for parameter in model.step2_text_encoder.parameters():
            parameter.add_(0.5)
        moved = model(text, speech)
    torch.testing.assert_close(moved.text_logits, output.text_logits, rtol=0, atol=0)
    assert not torch.allclose(moved.speech_logits, output.speech_logits)
    assert HyFusERForEmotionRecognition(small_config()).step2_text_encoder is None  # the default shares one pair


def test_blocks_return_attention_maps_only_when_asked():
    config = small_config()
    config._attn_implementation = "sdpa"  # what a model built on this config would pick
    states = torch.randn(2, 5, 16)
    for block in (HyFusERAttention(config), HyFusEREncoderLayer(config)):
        assert block.eval()(states)[1] is None
        assert block(states, output_attentions=True)[1].shape == (2, 2, 5, 5)
    encoder = HyFusEREncoder(config).eval()
    assert encoder(states).attentions is None
    assert len(encoder(states, output_attentions=True).attentions) == config.num_hidden_layers


def test_return_dict_false_gives_a_tuple():
    model = HyFusERForEmotionRecognition(small_config()).eval()
    output = model(*random_features(model.config), return_dict=False)
    assert isinstance(output, tuple) and output[0].shape == (3, 7)


def test_wrong_feature_shape_is_rejected_with_expected_shape():
    model = HyFusERForEmotionRecognition(small_config())
    text, speech = random_features(model.config)
    with pytest.raises(ValueError, match=r"speech_features must have shape \(batch_size, 5, 16\)"):
        model(text, speech[:, :4])
    with pytest.raises(ValueError, match=r"text_features must have shape \(batch_size, 5, 16\)"):
        model(text[:, :, :8], speech)


def test_forward_takes_no_var_kwargs():
    """A `**kwargs` in forward tells the Trainer that the model averages its own loss over gradient accumulation, so it
    stops dividing it: the gradient of a 2-step accumulation would double."""
    parameters = inspect.signature(HyFusERForEmotionRecognition.forward).parameters.values()
    assert all(p.kind is not inspect.Parameter.VAR_KEYWORD for p in parameters)


def test_save_and_from_pretrained_reproduce_the_outputs(tmp_path):
    model = HyFusERForEmotionRecognition(small_config()).eval()
    features = random_features(model.config)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    reloaded = HyFusERForEmotionRecognition.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(reloaded(*features).logits, model(*features).logits, rtol=0, atol=0)


def test_training_step_reduces_the_loss():
    torch.manual_seed(0)
    model = HyFusERForEmotionRecognition(small_config(hidden_dropout_prob=0.0, attention_dropout=0.0))
    text, speech = random_features(model.config, batch_size=8)
    labels = torch.arange(8) % 7
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(80):
        loss = model(text, speech, labels=labels).loss
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < 0.5 * losses[0]


# --------------------------------------------------------------------------------------------------------------------
# A reference forward pass, written from the paper's equations with plain tensor operations on the model's own weights

STEP_1 = "text_queries_speech"
"""State-dict prefix of Step 1 (Eq. 7): text queries, speech keys and values."""
STEP_2 = "speech_queries_text"
"""State-dict prefix of Step 2 (Eq. 8): speech queries, text keys and values."""


def reference_layer_norm(x: torch.Tensor, weights: dict, prefix: str, eps: float) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    variance = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(variance + eps) * weights[f"{prefix}.weight"] + weights[f"{prefix}.bias"]


def reference_block(
    weights: dict, prefix: str, queries: torch.Tensor, keys_values: torch.Tensor, config: HyFusERConfig
) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d_k)) V per head, residual, LayerNorm, ReLU feed-forward, residual, LayerNorm."""

    def dense(x, name):
        return x @ weights[f"{prefix}.{name}.weight"].T + weights[f"{prefix}.{name}.bias"]

    heads, head_dim = config.num_attention_heads, config.hidden_size // config.num_attention_heads
    q = dense(queries, "attention.q_proj")
    k = dense(keys_values, "attention.k_proj")
    v = dense(keys_values, "attention.v_proj")
    contexts = []
    for head in range(heads):
        part = slice(head * head_dim, (head + 1) * head_dim)
        scores = q[..., part] @ k[..., part].transpose(-1, -2) / math.sqrt(head_dim)
        contexts.append(torch.softmax(scores, dim=-1) @ v[..., part])
    attended = dense(torch.cat(contexts, dim=-1), "attention.out_proj")
    hidden = reference_layer_norm(queries + attended, weights, f"{prefix}.layer_norm", config.layer_norm_eps)
    fed = dense(torch.relu(dense(hidden, "feed_forward.intermediate_dense")), "feed_forward.output_dense")
    return reference_layer_norm(hidden + fed, weights, f"{prefix}.final_layer_norm", config.layer_norm_eps)


def reference_forward(model: HyFusERForEmotionRecognition, text: torch.Tensor, speech: torch.Tensor) -> dict:
    """Algorithm 1 from the model's state dict (`reference_hyfuser`)."""
    return reference_hyfuser(model.state_dict(), model.config, text, speech)


def reference_hyfuser(weights: dict, config: HyFusERConfig, text: torch.Tensor, speech: torch.Tensor) -> dict:
    """Algorithm 1 from a state dict: encoders, Step 1 (Eq. 7), Step 2 (Eq. 8), mean pooling, heads, Eq. 9."""
    encoded = {}
    for modality, states in (("text", text), ("speech", speech)):
        for index in range(config.num_hidden_layers):
            states = reference_block(weights, f"{modality}_encoder.layers.{index}", states, states, config)
        encoded[modality] = states
    text_centric = reference_block(weights, STEP_1, encoded["text"], encoded["speech"], config)
    speech_centric = reference_block(weights, STEP_2, encoded["speech"], encoded["text"], config)
    text_probabilities = torch.softmax(
        text_centric.mean(dim=1) @ weights["text_classifier.weight"].T + weights["text_classifier.bias"], dim=-1
    )
    speech_probabilities = torch.softmax(
        speech_centric.mean(dim=1) @ weights["speech_classifier.weight"].T + weights["speech_classifier.bias"], dim=-1
    )
    return {
        "text": text_probabilities,
        "speech": speech_probabilities,
        "ensemble": (text_probabilities + speech_probabilities) / 2,
    }


@pytest.mark.parametrize(
    "num_attention_heads, layer_norm_eps",
    [(1, 1e-6), (2, 1e-6), (1, 0.5)],
    ids=["paper_one_head", "two_heads", "large_layer_norm_eps"],
)
def test_forward_equals_the_papers_equations_computed_by_hand(num_attention_heads, layer_norm_eps):
    torch.manual_seed(1)
    config = small_config(num_attention_heads=num_attention_heads, num_hidden_layers=2, layer_norm_eps=layer_norm_eps)
    model = HyFusERForEmotionRecognition(config).eval()
    text, speech = random_features(config, batch_size=4, seed=3)
    with torch.no_grad():
        output = model(text, speech)
        expected = reference_forward(model, text, speech)
    torch.testing.assert_close(output.text_logits.softmax(-1), expected["text"], atol=1e-5, rtol=0)
    torch.testing.assert_close(output.speech_logits.softmax(-1), expected["speech"], atol=1e-5, rtol=0)
    torch.testing.assert_close(output.logits.exp(), expected["ensemble"], atol=1e-5, rtol=0)


def test_attention_maps_are_the_softmax_of_each_steps_queries_against_the_other_modality():
    """Step 1's map is (text positions x speech positions) from text queries; Step 2's the reverse (Eqs. 7-8)."""
    torch.manual_seed(2)
    config = small_config(num_attention_heads=1, num_hidden_layers=1)
    model = HyFusERForEmotionRecognition(config).eval()
    text, speech = random_features(config, batch_size=2, seed=4)
    weights = model.state_dict()
    with torch.no_grad():
        maps = model(text, speech, output_attentions=True).attentions
        text_states = reference_block(weights, "text_encoder.layers.0", text, text, config)
        speech_states = reference_block(weights, "speech_encoder.layers.0", speech, speech, config)
    for step_map, prefix, queries, keys in ((maps[-2], STEP_1, text_states, speech_states),
                                            (maps[-1], STEP_2, speech_states, text_states)):  # fmt: skip
        q = queries @ weights[f"{prefix}.attention.q_proj.weight"].T + weights[f"{prefix}.attention.q_proj.bias"]
        k = keys @ weights[f"{prefix}.attention.k_proj.weight"].T + weights[f"{prefix}.attention.k_proj.bias"]
        expected = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(config.hidden_size), dim=-1)
        torch.testing.assert_close(step_map[:, 0], expected, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------------------------------------
# Gradient flow


@pytest.mark.parametrize("use_modality_losses", [False, True], ids=["paper_loss", "modality_losses"])
def test_one_training_step_gives_every_parameter_a_finite_nonzero_gradient(use_modality_losses):
    torch.manual_seed(0)
    model = HyFusERForEmotionRecognition(small_config(use_modality_losses=use_modality_losses)).train()
    text, speech = random_features(model.config, batch_size=6, seed=5)
    model(text, speech, labels=torch.tensor([0, 1, 2, 3, 4, 5])).loss.backward()
    assert_every_parameter_has_a_finite_nonzero_gradient(model)


def assert_every_parameter_has_a_finite_nonzero_gradient(model: torch.nn.Module) -> None:
    trainable = dict(model.named_parameters())
    assert trainable and all(parameter.requires_grad for parameter in trainable.values())
    missing = [name for name, parameter in trainable.items() if parameter.grad is None]
    assert not missing, f"no gradient reached {missing}"
    not_finite = [name for name, parameter in trainable.items() if not torch.isfinite(parameter.grad).all()]
    assert not not_finite, f"non-finite gradient in {not_finite}"
    zero = [name for name, parameter in trainable.items() if not parameter.grad.abs().sum() > 0]
    assert not zero, f"all-zero gradient in {zero}"


def test_checkpoint_saved_under_the_old_step_names_loads_into_the_renamed_steps(tmp_path):
    """Checkpoints from before the rename name Step 1 `text_to_speech` and Step 2 `speech_to_text`."""
    model = HyFusERForEmotionRecognition(small_config()).eval()
    renames = {"text_queries_speech.": "text_to_speech.", "speech_queries_text.": "speech_to_text."}
    old_layout = {}
    for name, tensor in model.state_dict().items():
        for new, old in renames.items():
            name = old + name[len(new) :] if name.startswith(new) else name
        old_layout[name] = tensor.contiguous()
    assert sum(name.startswith(tuple(renames.values())) for name in old_layout) == 2 * 16  # 16 tensors per step
    model.config.save_pretrained(tmp_path)
    save_file(old_layout, tmp_path / "model.safetensors", metadata={"format": "pt"})

    reloaded = HyFusERForEmotionRecognition.from_pretrained(tmp_path).eval()
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name
    features = random_features(model.config)
    torch.testing.assert_close(reloaded(*features).logits, model(*features).logits, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------------------------------
# Dropout: the config's rates, in training only


@pytest.mark.parametrize("output_attentions", [False, True], ids=["fused_kernel", "explicit_softmax"])
def test_attention_dropout_acts_in_training_only(output_attentions):
    model = HyFusERForEmotionRecognition(small_config(hidden_dropout_prob=0.0, attention_dropout=0.3))
    features = random_features(model.config)
    model.train()
    first, second = (model(*features, output_attentions=output_attentions).logits for _ in range(2))
    assert not torch.allclose(first, second)  # fresh attention-dropout masks each pass
    model.eval()
    torch.testing.assert_close(model(*features, output_attentions=output_attentions).logits, model(*features).logits)


@pytest.mark.parametrize("output_attentions", [False, True], ids=["fused_kernel", "explicit_softmax"])
def test_zero_dropout_rates_make_training_mode_equal_evaluation_mode(output_attentions):
    model = HyFusERForEmotionRecognition(small_config(hidden_dropout_prob=0.0, attention_dropout=0.0))
    features = random_features(model.config)
    trained_mode = model.train()(*features, output_attentions=output_attentions).logits
    torch.testing.assert_close(trained_mode, model.eval()(*features).logits)


def test_from_pretrained_passes_loading_options_through(tmp_path):
    HyFusERForEmotionRecognition(small_config()).save_pretrained(tmp_path)
    reloaded = HyFusERForEmotionRecognition.from_pretrained(tmp_path, dtype=torch.float64)
    assert {parameter.dtype for parameter in reloaded.parameters()} == {torch.float64}
