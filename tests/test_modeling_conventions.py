"""The conventions generic tooling expects of a transformers model, on HyFusER and the baselines with attention:
every block's states, plain tuples, a selectable attention kernel, gradient checkpointing. transformers' own common
tests run in test_transformers_common.py."""

import pytest
import torch
from test_modeling_hyfuser import random_features, small_config

from modeling_hyfuser import HyFusERAttention, TRAINABLE_MODELS

ATTENTION_MODELS = ["hyfuser", "bicma", "kohmt", "kohmt_speech"]
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


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_additive_key_mask_hides_the_masked_keys(attn_implementation):
    """A large negative mask on the last two keys gives what attending to the other keys alone gives; both kernels."""
    config = small_config()
    config._attn_implementation = attn_implementation
    attention = HyFusERAttention(config).eval()
    queries, keys = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    mask = torch.zeros(2, 1, 5, 5)
    mask[..., 3:] = torch.finfo(torch.float32).min
    with torch.no_grad():
        masked, _ = attention(queries, keys, attention_mask=mask)
        visible_only, _ = attention(queries, keys[:, :3])
        changed_hidden_keys = keys.clone()
        changed_hidden_keys[:, 3:] = torch.randn(2, 2, 16)
        masked_again, _ = attention(queries, changed_hidden_keys, attention_mask=mask)
    torch.testing.assert_close(masked, visible_only, atol=1e-6, rtol=0)
    torch.testing.assert_close(masked_again, masked, atol=1e-6, rtol=0)
