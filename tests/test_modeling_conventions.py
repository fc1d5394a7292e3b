"""The conventions generic tooling expects of a transformers model, on HyFusER and its baselines: every block's
states, plain tuples, a selectable attention kernel, key masks, gradient checkpointing, any label set in the config.
transformers' own common tests run in test_transformers_common.py."""

import pytest
import torch
from test_modeling_hyfuser import random_features, small_config

from configuration_hyfuser import HyFusERConfig
from modeling_hyfuser import PROBE_MODELS, TRAINABLE_MODELS, HyFusERAttention, HyFusEREncoderLayer

ATTENTION_MODELS = ["hyfuser", "bicma", "kohmt", "kohmt_speech", "hyfuser_step_encoders"]
"""The trainable models built from attention blocks."""


@pytest.fixture(autouse=True)
def seeded_initialisation():
    torch.manual_seed(0)


def build(name: str, attn_implementation: str, **overrides):
    config = small_config(num_hidden_layers=2, **overrides)
    return TRAINABLE_MODELS[name]._from_config(config, attn_implementation=attn_implementation).eval()


@pytest.mark.parametrize("name", ATTENTION_MODELS)
def test_eager_and_sdpa_give_the_same_outputs(name):
    eager = build(name, "eager")
    sdpa = build(name, "sdpa")
    sdpa.load_state_dict(eager.state_dict())
    assert (eager.config._attn_implementation, sdpa.config._attn_implementation) == ("eager", "sdpa")
    features = random_features(eager.config, batch_size=4)
    with torch.no_grad():
        expected, got = eager(*features, output_hidden_states=True), sdpa(*features, output_hidden_states=True)
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-5, rtol=0)
    for got_states, expected_states in zip(got.hidden_states, expected.hidden_states, strict=True):
        torch.testing.assert_close(got_states, expected_states, atol=1e-5, rtol=0)


def test_eager_and_sdpa_agree_at_the_papers_size():
    """Table 3's model: one 768-dimensional head over 126 positions per modality."""
    model = TRAINABLE_MODELS["hyfuser"]._from_config(HyFusERConfig(), attn_implementation="eager").eval()
    features = random_features(model.config, batch_size=2)
    with torch.no_grad():
        expected = model(*features)
        model.set_attn_implementation("sdpa")
        assert model.text_encoder.layers[0].attention.config._attn_implementation == "sdpa"
        got = model(*features)
    for field in ("logits", "text_logits", "speech_logits"):
        torch.testing.assert_close(got[field], expected[field], atol=1e-5, rtol=0)


@pytest.mark.parametrize("mask_kind", ["additive", "boolean"])
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_key_mask_hides_the_masked_keys(attn_implementation, mask_kind):
    """Masking the last two keys gives what attending to the other keys alone gives, whatever their values: with
    either kernel, and with an additive mask or a boolean one (the kind masks built for sdpa are)."""
    config = small_config()
    config._attn_implementation = attn_implementation
    attention = HyFusERAttention(config).eval()
    queries, keys = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    visible = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    visible[..., 3:] = False
    mask = visible if mask_kind == "boolean" else torch.zeros(2, 1, 5, 5).masked_fill(~visible, -1e9)
    with torch.no_grad():
        masked, _ = attention(queries, keys, attention_mask=mask)
        visible_only, _ = attention(queries, keys[:, :3])
        changed_hidden_keys = keys.clone()
        changed_hidden_keys[:, 3:] = torch.randn(2, 2, 16)
        masked_again, _ = attention(queries, changed_hidden_keys, attention_mask=mask)
        _, weights = attention(queries, keys, attention_mask=mask, output_attentions=True)  # always eager
    torch.testing.assert_close(masked, visible_only, atol=1e-6, rtol=0)
    torch.testing.assert_close(masked_again, masked, atol=1e-6, rtol=0)
    assert weights[..., 3:].max() == 0


def test_attn_implementation_is_chosen_at_load_time(tmp_path):
    build("hyfuser", "sdpa").save_pretrained(tmp_path)
    features = random_features(small_config())
    loaded = {
        implementation: TRAINABLE_MODELS["hyfuser"].from_pretrained(tmp_path, attn_implementation=implementation)
        for implementation in ("eager", "sdpa")
    }
    assert TRAINABLE_MODELS["hyfuser"].from_pretrained(tmp_path).config._attn_implementation == "sdpa"  # the default
    for implementation, model in loaded.items():
        assert model.config._attn_implementation == implementation
    torch.testing.assert_close(loaded["eager"](*features).logits, loaded["sdpa"](*features).logits, atol=1e-5, rtol=0)


def test_flash_attention_refuses_heads_wider_than_its_kernels_take():
    """The paper's single head is 768 wide; FlashAttention's kernels take at most 256 dimensions per head."""
    with pytest.raises(ValueError, match=r"at most 256 dimensions.* 768 / 1 = 768"):
        TRAINABLE_MODELS["hyfuser"]._from_config(HyFusERConfig(), attn_implementation="flash_attention_2")


# --------------------------------------------------------------------------------------------------------------------
# Hidden states and tuples


def test_output_hidden_states_returns_both_encoders_then_both_steps():
    model = build("hyfuser", "sdpa")
    text, speech = random_features(model.config)
    layers = model.config.num_hidden_layers
    with torch.no_grad():
        output = model(text, speech, output_hidden_states=True)
        plain = model(text, speech)
        text_states = model.text_encoder(text, output_hidden_states=True).hidden_states
        speech_states = model.speech_encoder(speech, output_hidden_states=True).hidden_states
        step1, _ = model.text_queries_speech(text_states[-1], speech_states[-1])
        step2, _ = model.speech_queries_text(speech_states[-1], text_states[-1])
    assert plain.hidden_states is None
    assert len(output.hidden_states) == 2 * layers + 4
    assert len(text_states) == len(speech_states) == layers + 1
    assert output.hidden_states[0] is text and output.hidden_states[layers + 1] is speech  # the features themselves
    for got, expected in zip(output.hidden_states, (*text_states, *speech_states, step1, step2), strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.testing.assert_close(output.logits, plain.logits, rtol=0, atol=0)


@pytest.mark.parametrize("name, blocks", [("bicma", ["text", "speech", "step", "step"]),
                                          ("kohmt", ["text"] * 3 + ["speech"] * 3 + ["step"]),
                                          ("kohmt_speech", ["text"] * 3 + ["speech"] * 3 + ["step"])])  # fmt: skip
def test_baselines_return_the_states_of_the_blocks_they_have(name, blocks):
    model = build(name, "sdpa")
    text, speech = random_features(model.config)
    with torch.no_grad():
        states = model(text, speech, output_hidden_states=True).hidden_states
    assert len(states) == len(blocks)
    assert states[0] is text and states[blocks.index("speech")] is speech
    assert all(state.shape == text.shape for state in states)


def test_lstm_and_cnn_return_their_input_and_each_layer_s_states():
    config = small_config(lstm_hidden_size=6, cnn_channels=10, cnn_num_layers=2)
    text, speech = random_features(config)
    lstm, cnn = (TRAINABLE_MODELS[name](config).eval() for name in ("text_lstm", "speech_cnn"))
    with torch.no_grad():
        lstm_states = lstm(text, speech, output_hidden_states=True).hidden_states
        cnn_states = cnn(text, speech, output_hidden_states=True).hidden_states
        first_convolution = torch.relu(cnn.convolutions[0](speech.transpose(1, 2))).transpose(1, 2)
    assert lstm_states[0] is text and cnn_states[0] is speech
    torch.testing.assert_close(lstm_states[1], lstm.lstm(text)[0], rtol=0, atol=0)
    assert len(cnn_states) == 1 + config.cnn_num_layers
    torch.testing.assert_close(cnn_states[1], first_convolution, rtol=0, atol=0)
    assert cnn_states[2].shape == (3, config.sequence_length, config.cnn_channels)


def test_config_output_flags_are_the_defaults_of_a_call():
    config = small_config(output_hidden_states=True)
    config._attn_implementation = "eager"
    config.output_attentions = True
    model = TRAINABLE_MODELS["hyfuser"](config).eval()
    output = model(*random_features(config))
    assert len(output.hidden_states) == 2 * config.num_hidden_layers + 4
    assert len(output.attentions) == 2 * config.num_hidden_layers + 2
    assert model(*random_features(config), output_hidden_states=False, output_attentions=False).hidden_states is None


@pytest.mark.parametrize("name", ATTENTION_MODELS)
def test_return_dict_false_returns_the_output_fields_as_a_plain_tuple(name):
    model = build(name, "eager")
    features, labels = random_features(model.config), torch.tensor([0, 1, 2])
    options = {"labels": labels, "output_hidden_states": True, "output_attentions": True}
    as_dict = model(*features, **options)
    as_tuple = model(*features, **options, return_dict=False)
    assert type(as_tuple) is tuple
    expected = [value for value in as_dict.values() if value is not None]
    # loss, logits, (text_logits, speech_logits,) hidden_states, attentions
    assert len(as_tuple) == len(expected) == (6 if model.has_modality_heads else 4)
    for got, want in zip(as_tuple, expected, strict=True):
        if isinstance(want, tuple):
            assert len(got) == len(want) and all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
        else:
            assert torch.equal(got, want)
    model.config.return_dict = False
    assert type(model(*features)) is tuple


# --------------------------------------------------------------------------------------------------------------------
# Gradient checkpointing


def gradients(model, features, labels) -> dict[str, torch.Tensor]:
    model.zero_grad()
    model(*features, labels=labels).loss.backward()
    return {name: parameter.grad.clone() for name, parameter in model.named_parameters()}


@pytest.mark.parametrize("use_reentrant", [False, True], ids=["non_reentrant", "reentrant"])
@pytest.mark.parametrize("name", ATTENTION_MODELS)
def test_gradient_checkpointing_recomputes_the_blocks_and_gives_the_same_gradients(name, use_reentrant):
    model = build(name, "sdpa", hidden_dropout_prob=0.0, attention_dropout=0.0).train()
    features, labels = random_features(model.config, batch_size=4), torch.tensor([0, 1, 2, 3])
    blocks = [module for module in model.modules() if isinstance(module, HyFusEREncoderLayer)]
    calls = []
    for block in blocks:  # a block's own hooks stay outside its checkpoint; its attention's run again
        block.attention.register_forward_hook(lambda *_: calls.append(1))

    plain = gradients(model, features, labels)
    assert len(calls) == len(blocks)
    with pytest.warns(FutureWarning, match="activation_checkpointing_enable"):  # transformers 5's new name for it
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    assert model.is_activation_checkpointing
    calls.clear()
    checkpointed = gradients(model, features, labels)
    assert len(calls) == 2 * len(blocks)  # every block ran again in the backward pass

    assert plain.keys() == checkpointed.keys()
    for parameter_name, gradient in plain.items():
        assert gradient.abs().sum() > 0, parameter_name
        torch.testing.assert_close(checkpointed[parameter_name], gradient, atol=1e-6, rtol=1e-5, msg=parameter_name)


@pytest.mark.parametrize("name", ["text_lstm", "speech_cnn"])
def test_models_without_blocks_say_they_cannot_checkpoint(name):
    model = TRAINABLE_MODELS[name](small_config())
    with pytest.raises(ValueError, match="does not support activation checkpointing"):
        model.gradient_checkpointing_enable()


# --------------------------------------------------------------------------------------------------------------------
# Labels: any set in the config, what the model needs when it is built


@pytest.mark.parametrize("labels", [{"num_labels": 1}, {"id2label": {0: "label"}}, {"id2label": {}}])
def test_config_takes_any_label_set_and_the_model_refuses_fewer_than_two(labels):
    config = HyFusERConfig(**labels)
    assert config.num_labels == len(config.id2label) <= 1
    for model_class in [*TRAINABLE_MODELS.values(), *PROBE_MODELS.values()]:
        with pytest.raises(ValueError, match=r"config\.num_labels classes and needs at least 2"):
            model_class(config)


def test_model_refuses_a_problem_type_it_does_not_solve():
    with pytest.raises(ValueError, match="single-label classifier.*'regression'"):
        TRAINABLE_MODELS["hyfuser"](small_config(problem_type="regression"))
