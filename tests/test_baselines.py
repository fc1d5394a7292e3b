"""The paper's comparison models (Tables 5 and 6), the controls and the linear probes: each forward and loss, each
forward against plain tensor operations on the model's own weights, gradient flow, the ensembles' composition, the
probes' fit, saving and serving, and the metrics and the weight choice they need. HyFusER itself is covered by
test_modeling_hyfuser.py."""

import copy
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from audio_files import voiced_tone
from datasets import Dataset
from huggingface_hub import ModelCard
from test_modeling_hyfuser import (
    assert_every_parameter_has_a_finite_nonzero_gradient,
    random_features,
    reference_block,
    reference_hyfuser,
    small_config,
)
from train_script import TRAIN
from transformers import AutoModel, EvalPrediction, pipeline

from configuration_hyfuser import HyFusERConfig
from hyfuser.arguments import DEMO_DEFAULTS
from hyfuser.cache import fit_scaler_on_cache
from hyfuser.checkpoint import save_hyfuser
from hyfuser.metrics import ENSEMBLE_WEIGHT_GRID, choose_ensemble_weight, compute_metrics, fused_logits
from hyfuser.probes import PROBE_L2_GRID, fit_linear_probe
from hyfuser.tiny_backbones import TINY_HIDDEN_SIZE
from hyfuser.training import predict_log_probabilities
from modeling_hyfuser import COMPOSED_MODELS, PROBE_MODELS, TRAINABLE_MODELS, HyFusERAverageEnsemble

REPO_ROOT = Path(__file__).resolve().parent.parent
BASELINES = [name for name in TRAINABLE_MODELS if name != "hyfuser"]
"""The trainable baselines and controls (HyFusER has its own tests)."""
PROBES = list(PROBE_MODELS)
TWO_HEADED = {"hyfuser", "hyfuser_step_encoders", *COMPOSED_MODELS}
"""Models whose output carries text_logits and speech_logits."""
WEIGHTED_TEXT_WEIGHT = 0.3
"""The weighted ensemble's text weight in these tests: far enough from 0.5 that using the wrong weight shows."""


@pytest.fixture(autouse=True)
def seeded_initialisation():
    torch.manual_seed(0)


def baseline_config(**overrides) -> HyFusERConfig:
    """`small_config` with baseline sizes that differ from every other size, so a swapped dimension fails."""
    return small_config(lstm_hidden_size=6, cnn_channels=10, cnn_kernel_size=3, num_hidden_layers=2, **overrides)


def build(name: str, config: HyFusERConfig):
    """A randomly initialised model by registry name; an ensemble is composed of randomly initialised members."""
    if name in TRAINABLE_MODELS or name in PROBE_MODELS:
        return (TRAINABLE_MODELS.get(name) or PROBE_MODELS[name])(config).eval()
    composed = COMPOSED_MODELS[name]
    text_member, speech_member = (TRAINABLE_MODELS[member](config) for member in composed.members)
    text_weight = WEIGHTED_TEXT_WEIGHT if composed.weighted else 0.5
    return composed.model_class.from_members(text_member, speech_member, text_weight=text_weight)


# --------------------------------------------------------------------------------------------------------------------
# Registry and sizes


def test_registries_name_every_model_once_and_the_ensembles_compose_trainable_members():
    names = [*TRAINABLE_MODELS, *COMPOSED_MODELS, *PROBE_MODELS]
    assert len(set(names)) == len(names)
    for composed in COMPOSED_MODELS.values():
        text_member, speech_member = (TRAINABLE_MODELS[member] for member in composed.members)
        assert (text_member, speech_member) == (
            composed.model_class.text_member_class,
            composed.model_class.speech_member_class,
        )


def readme_parameter_counts() -> dict[str, int]:
    """docs/architecture.md's baseline table: `| `name` | ... | 1,234 |` rows, the count in the last column."""
    table = (REPO_ROOT / "docs/architecture.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \|.*\| ([\d,]+) \|$", table, re.MULTILINE)
    return {name: int(count.replace(",", "")) for name, count in rows}


def parameter_counts(config: HyFusERConfig) -> dict[str, int]:
    """Every registered model's parameters under `config`."""
    classes = {
        **TRAINABLE_MODELS, **PROBE_MODELS, **{name: composed.model_class for name, composed in COMPOSED_MODELS.items()}
    }  # fmt: skip
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        return {name: model_class(config).num_parameters() for name, model_class in classes.items()}


def test_parameter_counts_at_the_papers_sizes_equal_the_readme_table():
    config = HyFusERConfig()
    counts = parameter_counts(config)
    d, c, h, k = config.hidden_size, config.num_labels, config.lstm_hidden_size, config.cnn_kernel_size
    block = 4 * (d * d + d) + 2 * (d * config.intermediate_size) + config.intermediate_size + d + 4 * d
    assert counts["text_lstm"] == 4 * (d * h + h * h + 2 * h) + h * c + c
    channels = config.cnn_channels
    assert (
        counts["speech_cnn"] == (d * channels * k + channels) + (channels * channels * k + channels) + channels * c + c
    )
    assert counts["bicma"] == 2 * block + 2 * d * c + c
    assert counts["kohmt"] == counts["kohmt_speech"] == (2 * config.num_hidden_layers + 1) * block + d * c + c
    assert (
        counts["average_ensemble"] == counts["weighted_average_ensemble"] == counts["text_lstm"] + counts["speech_cnn"]
    )
    assert counts["hyfuser_separate"] == 2 * counts["kohmt"]
    assert counts["hyfuser_seed_ensemble"] == 2 * counts["hyfuser"]
    # The same-budget control: an encoder pair, a step and a head per direction, exactly hyfuser_separate's.
    assert counts["hyfuser_step_encoders"] == counts["kohmt"] + counts["kohmt_speech"] == counts["hyfuser_separate"]
    assert counts["linear_probe"] == 2 * d * c + c and counts["linear_probe_text"] == counts["linear_probe_speech"]
    assert counts["linear_probe_text"] == d * c + c
    assert readme_parameter_counts() == counts


SIZE_RATIO_TOLERANCE = 0.12
"""How far (relative) a model's size over HyFusER's at the demo's sizes may be from the same ratio at the paper's.
At hidden size 32 the baseline widths round up (32 / 6 -> 6), the demo's feed-forward is twice the hidden size where
the paper's equals it (which makes the attention models relatively larger), and biases weigh more."""


def test_baselines_sized_from_hidden_size_keep_the_papers_size_ratios_at_the_demos_size():
    """The LSTM and CNN widths follow `hidden_size`, so a demo comparison pits the same relative capacities against
    each other as the paper's does (with 128 units fixed, text_lstm would outgrow HyFusER at hidden size 32). The
    linear probes are left out: their size is linear in `hidden_size` by definition."""
    paper = parameter_counts(HyFusERConfig())
    demo_config = HyFusERConfig(hidden_size=TINY_HIDDEN_SIZE)
    demo_config.update_from_string(DEMO_DEFAULTS["config_overrides"])
    demo = parameter_counts(demo_config)
    assert (demo_config.lstm_hidden_size, demo_config.cnn_channels) == (6, 6)
    for name in paper.keys() - PROBE_MODELS.keys():
        paper_ratio, demo_ratio = paper[name] / paper["hyfuser"], demo[name] / demo["hyfuser"]
        assert demo_ratio == pytest.approx(paper_ratio, rel=SIZE_RATIO_TOLERANCE), name


def test_baseline_widths_given_explicitly_win_over_the_derived_ones():
    config = HyFusERConfig(hidden_size=TINY_HIDDEN_SIZE, lstm_hidden_size=7, cnn_channels=9)
    assert (config.lstm_hidden_size, config.cnn_channels) == (7, 9)
    assert HyFusERConfig.from_dict(config.to_dict()).lstm_hidden_size == 7


# --------------------------------------------------------------------------------------------------------------------
# Forward and loss


@pytest.mark.parametrize("name", [*BASELINES, *PROBES, *COMPOSED_MODELS])
def test_forward_gives_log_probabilities_and_their_cross_entropy(name):
    model = build(name, baseline_config())
    labels = torch.tensor([0, 4, 6])
    output = model(*random_features(model.config), labels=labels)
    assert output.logits.shape == (3, model.config.num_labels)
    torch.testing.assert_close(output.logits.exp().sum(-1), torch.ones(3))
    torch.testing.assert_close(output.loss, -output.logits[torch.arange(3), labels].mean())
    assert model.has_modality_heads == (name in TWO_HEADED)
    heads = (output.text_logits, output.speech_logits)
    if name in TWO_HEADED:
        assert all(head.shape == output.logits.shape for head in heads)
    else:
        assert heads == (None, None)


@pytest.mark.parametrize("name", ["text_lstm", "speech_cnn"])
def test_single_modality_models_read_only_their_own_modality(name):
    model = build(name, baseline_config())
    text, speech = random_features(model.config)
    base = model(text, speech).logits
    moved_text, moved_speech = model(text + 1.0, speech).logits, model(text, speech + 1.0).logits
    moved_own, moved_other = (moved_text, moved_speech) if name == "text_lstm" else (moved_speech, moved_text)
    torch.testing.assert_close(moved_other, base, rtol=0, atol=0)
    assert not torch.allclose(moved_own, base)


@pytest.mark.parametrize(
    "overrides, field",
    [({"lstm_hidden_size": 0}, "lstm_hidden_size"), ({"cnn_kernel_size": 1.5}, "cnn_kernel_size"),
     ({"ensemble_text_weight": -0.1}, "ensemble_text_weight")],
)  # fmt: skip
def test_invalid_baseline_size_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        HyFusERConfig(**overrides)


READ_MODALITIES = {"text_lstm": ("text",), "speech_cnn": ("speech",), "bicma": ("text", "speech"),
                   "kohmt": ("text", "speech"), "kohmt_speech": ("text", "speech"),
                   "hyfuser_step_encoders": ("text", "speech"), "linear_probe": ("text", "speech"),
                   "linear_probe_text": ("text",), "linear_probe_speech": ("speech",)}  # fmt: skip
"""The inputs each trainable baseline and probe checks (and reads)."""


@pytest.mark.parametrize("name", [*BASELINES, *PROBES])
def test_wrong_feature_shape_is_rejected_naming_the_input_and_its_expected_shape(name):
    assert set(READ_MODALITIES) == {*BASELINES, *PROBES}
    model = build(name, baseline_config())
    features = dict(zip(("text", "speech"), random_features(model.config)))
    for modality in READ_MODALITIES[name]:
        wrong = {**features, modality: features[modality][:, :4]}
        with pytest.raises(ValueError, match=rf"^{modality}_features must have shape \(batch_size, 5, 16\)"):
            model(wrong["text"], wrong["speech"])


def test_speech_cnn_without_speech_features_is_refused():
    model = build("speech_cnn", baseline_config())
    with pytest.raises(ValueError, match="^HyFusERSpeechCNN needs speech_features$"):
        model(random_features(model.config)[0])


def test_a_probe_without_a_modality_it_reads_is_refused_and_ignores_the_other():
    config = baseline_config()
    text, speech = random_features(config)
    with pytest.raises(ValueError, match="^HyFusERSpeechLinearProbe needs speech_features$"):
        build("linear_probe_speech", config)(text)
    text_probe = build("linear_probe_text", config)
    torch.testing.assert_close(text_probe(text).logits, text_probe(text, speech + 1.0).logits, rtol=0, atol=0)


@pytest.mark.parametrize("name, maps", [("bicma", 2), ("kohmt", 2 + 2 + 1), ("kohmt_speech", 2 + 2 + 1)])
def test_output_attentions_returns_every_map_without_changing_logits(name, maps):
    """`bicma`: both steps; KoHMT: the text encoder's layers, the speech encoder's, then its cross-modal step."""
    model = build(name, baseline_config())
    features = random_features(model.config)
    plain = model(*features)
    assert plain.attentions is None
    with_maps = model(*features, output_attentions=True)
    assert len(with_maps.attentions) == maps
    for attention_map in with_maps.attentions:
        assert isinstance(attention_map, torch.Tensor) and attention_map.shape == (3, 2, 5, 5)
    torch.testing.assert_close(with_maps.logits, plain.logits)
    if name.startswith("kohmt"):  # the encoder maps are the encoders' own, in order: text, then speech
        text_maps = model.text_encoder(features[0], output_attentions=True)[1]
        speech_maps = model.speech_encoder(features[1], output_attentions=True)[1]
        for got, expected in zip(with_maps.attentions[:4], (*text_maps, *speech_maps)):
            torch.testing.assert_close(got, expected)


# --------------------------------------------------------------------------------------------------------------------
# Reference forward passes: the same outputs from the state dict with plain tensor operations


def dense(x: torch.Tensor, weights: dict, prefix: str) -> torch.Tensor:
    return x @ weights[f"{prefix}.weight"].T + weights[f"{prefix}.bias"]


def reference_lstm(weights: dict, prefix: str, inputs: torch.Tensor) -> torch.Tensor:
    """The LSTM recurrence, one position at a time, from `weight_ih`/`weight_hh` and both biases."""
    w_ih, w_hh = weights[f"{prefix}.weight_ih_l0"], weights[f"{prefix}.weight_hh_l0"]
    bias = weights[f"{prefix}.bias_ih_l0"] + weights[f"{prefix}.bias_hh_l0"]
    units = w_hh.shape[1]
    hidden = cell = torch.zeros(inputs.shape[0], units)
    states = []
    for position in range(inputs.shape[1]):
        gates = inputs[:, position] @ w_ih.T + hidden @ w_hh.T + bias
        input_gate, forget_gate, candidate, output_gate = gates.split(units, dim=-1)  # PyTorch's gate order
        cell = torch.sigmoid(forget_gate) * cell + torch.sigmoid(input_gate) * torch.tanh(candidate)
        hidden = torch.sigmoid(output_gate) * torch.tanh(cell)
        states.append(hidden)
    return torch.stack(states, dim=1)


def reference_conv1d_same(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """'same' 1-D convolution over the positions of (batch, positions, channels) as windows times the kernel."""
    width = weight.shape[-1]
    before = (width - 1) // 2
    padded = F.pad(inputs, (0, 0, before, width - 1 - before))  # zero positions at both ends
    windows = padded.unfold(1, width, 1)  # (batch, positions, in_channels, width)
    return torch.einsum("btiw,oiw->bto", windows, weight) + bias


STEP_ENCODER_BRANCHES = {
    "kohmt": {"text_encoder": "text_encoder", "speech_encoder": "speech_encoder",
              "text_queries_speech": "cross_modal_step", "text_classifier": "classifier"},
    "kohmt_speech": {"step2_text_encoder": "text_encoder", "step2_speech_encoder": "speech_encoder",
                     "speech_queries_text": "cross_modal_step", "speech_classifier": "classifier"},
}  # fmt: skip
"""`hyfuser_step_encoders`' modules of each direction, with the names they have in the `kohmt`/`kohmt_speech` it
equals."""


def renamed(weights: dict, modules: dict[str, str]) -> dict:
    """The weights of the top-level `modules` only, each module renamed to its value."""
    return {
        f"{modules[module]}.{rest}": value
        for key, value in weights.items()
        for module, rest in [key.split(".", 1)]
        if module in modules
    }


def reference_probabilities(name: str, weights: dict, text: torch.Tensor, speech: torch.Tensor, config) -> dict:
    """Each model's probabilities ("fused"), and its two sides' where it has them, from the state dict."""
    if name == "text_lstm":
        return {
            "fused": torch.softmax(dense(reference_lstm(weights, "lstm", text).mean(1), weights, "classifier"), -1)
        }
    if name == "speech_cnn":
        states = speech
        for index in range(config.cnn_num_layers):
            prefix = f"convolutions.{index}"
            states = torch.relu(reference_conv1d_same(states, weights[f"{prefix}.weight"], weights[f"{prefix}.bias"]))
        return {"fused": torch.softmax(dense(states.mean(1), weights, "classifier"), -1)}
    if name == "hyfuser":
        return {"fused": reference_hyfuser(weights, config, text, speech)["ensemble"]}
    if name == "bicma":
        text_centric = reference_block(weights, "text_queries_speech", text, speech, config)
        speech_centric = reference_block(weights, "speech_queries_text", speech, text, config)
        pooled = torch.cat([text_centric.mean(1), speech_centric.mean(1)], dim=-1)
        return {"fused": torch.softmax(dense(pooled, weights, "classifier"), -1)}
    if name in PROBE_MODELS:
        pooled = {"text": text.mean(1), "speech": speech.mean(1)}
        inputs = torch.cat([pooled[modality] for modality in PROBE_MODELS[name].probe_modalities], dim=-1)
        return {"fused": torch.softmax(dense(inputs, weights, "classifier"), -1)}
    if name == "hyfuser_step_encoders":  # each direction computed as the kohmt it equals, then Eq. 9
        sides = {
            side: reference_probabilities(member, renamed(weights, modules), text, speech, config)["fused"]
            for side, (member, modules) in zip(("text", "speech"), STEP_ENCODER_BRANCHES.items())
        }
        return {"fused": (sides["text"] + sides["speech"]) / 2, **sides}
    if name in ("kohmt", "kohmt_speech"):
        encoded = {}
        for modality, states in (("text", text), ("speech", speech)):
            for index in range(config.num_hidden_layers):
                states = reference_block(weights, f"{modality}_encoder.layers.{index}", states, states, config)
            encoded[modality] = states
        queries, keys_values = ("text", "speech") if name == "kohmt" else ("speech", "text")
        attended = reference_block(weights, "cross_modal_step", encoded[queries], encoded[keys_values], config)
        return {"fused": torch.softmax(dense(attended.mean(1), weights, "classifier"), -1)}
    composed = COMPOSED_MODELS[name]
    sides = {}
    for side, member in zip(("text", "speech"), composed.members):
        member_weights = {
            key.split(".", 1)[1]: value for key, value in weights.items() if key.startswith(f"{side}_model.")
        }
        sides[side] = reference_probabilities(member, member_weights, text, speech, config)["fused"]
    text_weight = config.ensemble_text_weight
    return {"fused": text_weight * sides["text"] + (1 - text_weight) * sides["speech"], **sides}


@pytest.mark.parametrize("name", [*BASELINES, *PROBES, *COMPOSED_MODELS])
def test_forward_equals_the_model_computed_by_hand(name):
    config = baseline_config()
    model = build(name, config)
    text, speech = random_features(config, batch_size=4, seed=3)
    with torch.no_grad():
        output = model(text, speech)
        expected = reference_probabilities(name, model.state_dict(), text, speech, model.config)
    torch.testing.assert_close(output.logits.exp(), expected["fused"], atol=1e-5, rtol=0)
    if name in TWO_HEADED:
        torch.testing.assert_close(output.text_logits.softmax(-1), expected["text"], atol=1e-5, rtol=0)
        torch.testing.assert_close(output.speech_logits.softmax(-1), expected["speech"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(COMPOSED_MODELS))
def test_ensemble_is_the_weighted_mean_of_its_trained_members_probabilities(name):
    config = baseline_config()
    composed = COMPOSED_MODELS[name]
    text_member, speech_member = (TRAINABLE_MODELS[member](config).eval() for member in composed.members)
    text_weight = WEIGHTED_TEXT_WEIGHT if composed.weighted else 0.5
    ensemble = composed.model_class.from_members(text_member, speech_member, text_weight=text_weight)
    features = random_features(config)
    with torch.no_grad():
        text_probabilities = text_member(*features).logits.exp()
        speech_probabilities = speech_member(*features).logits.exp()
        output = ensemble(*features)
    expected = text_weight * text_probabilities + (1 - text_weight) * speech_probabilities
    torch.testing.assert_close(output.logits.exp(), expected, atol=1e-6, rtol=0)
    assert ensemble.config.ensemble_text_weight == text_weight
    assert text_member.config.ensemble_text_weight == 0.5  # the member's config is copied, not changed


def test_step_encoders_compute_hyfuser_separate_given_its_members_weights():
    """`hyfuser_step_encoders` is `hyfuser_separate` trained as one network: given the weights of the separate
    model's two members, it gives the same probabilities, fused and per direction."""
    config = baseline_config()
    members = {member: TRAINABLE_MODELS[member](config).eval() for member in STEP_ENCODER_BRANCHES}
    separate = COMPOSED_MODELS["hyfuser_separate"].model_class.from_members(*members.values())
    joint = TRAINABLE_MODELS["hyfuser_step_encoders"](config).eval()
    weights = {}
    for member, modules in STEP_ENCODER_BRANCHES.items():
        weights.update(renamed(members[member].state_dict(), {new: old for old, new in modules.items()}))
    assert weights.keys() == joint.state_dict().keys()
    joint.load_state_dict(weights)
    features = random_features(config, batch_size=4, seed=2)
    with torch.no_grad():
        expected, got = separate(*features), joint(*features)
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.text_logits.log_softmax(-1), expected.text_logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.speech_logits.log_softmax(-1), expected.speech_logits, atol=1e-6, rtol=0)


def test_step_encoders_model_sets_its_flag_on_a_copy_of_the_config():
    config = baseline_config()
    model = TRAINABLE_MODELS["hyfuser_step_encoders"](config)
    assert model.config.encoders_per_step and not config.encoders_per_step
    assert model.step2_text_encoder is not None and model.step2_speech_encoder is not None


def test_a_weight_of_one_is_the_text_member_alone():
    config = baseline_config()
    text_member, speech_member = TRAINABLE_MODELS["text_lstm"](config), TRAINABLE_MODELS["speech_cnn"](config)
    ensemble = HyFusERAverageEnsemble.from_members(text_member.eval(), speech_member.eval(), text_weight=1.0)
    features = random_features(config)
    with torch.no_grad():
        torch.testing.assert_close(ensemble(*features).logits, text_member(*features).logits)


def test_ensemble_refuses_members_of_the_wrong_kind():
    config = baseline_config()
    with pytest.raises(TypeError, match="composes a HyFusERSpeechCNN, got a HyFusERKoHMT"):
        HyFusERAverageEnsemble.from_members(TRAINABLE_MODELS["text_lstm"](config), TRAINABLE_MODELS["kohmt"](config))
    with pytest.raises(ValueError, match="ensemble_text_weight"):
        HyFusERAverageEnsemble.from_members(
            TRAINABLE_MODELS["text_lstm"](config), TRAINABLE_MODELS["speech_cnn"](config), text_weight=1.5
        )
    other_labels = baseline_config(id2label={0: "calm", 1: "upset"}, label2id={"calm": 0, "upset": 1})
    message = (
        r"^The members' configs differ in id2label: \{0: 'angry', .*\} \(text\) vs "
        r"\{0: 'calm', 1: 'upset'\} \(speech\)$"
    )
    with pytest.raises(ValueError, match=message):
        HyFusERAverageEnsemble.from_members(TRAINABLE_MODELS["text_lstm"](config), TRAINABLE_MODELS["speech_cnn"](other_labels))


def test_ensemble_weight_defaults_to_the_plain_average_and_leaves_the_members_config_alone():
    config = baseline_config()
    text_member, speech_member = TRAINABLE_MODELS["text_lstm"](config), TRAINABLE_MODELS["speech_cnn"](config)
    ensemble = HyFusERAverageEnsemble.from_members(text_member, speech_member)
    assert ensemble.config.ensemble_text_weight == 0.5
    assert ensemble.config is not text_member.config and text_member.config.ensemble_text_weight == 0.5


# --------------------------------------------------------------------------------------------------------------------
# Gradient flow


@pytest.mark.parametrize("name", BASELINES)
def test_one_training_step_gives_every_parameter_a_finite_nonzero_gradient(name):
    model = TRAINABLE_MODELS[name](baseline_config()).train()
    text, speech = random_features(model.config, batch_size=6, seed=5)
    model(text, speech, labels=torch.tensor([0, 1, 2, 3, 4, 5])).loss.backward()
    assert_every_parameter_has_a_finite_nonzero_gradient(model)


# --------------------------------------------------------------------------------------------------------------------
# Saved with save_hyfuser, loaded through AutoModel as remote code, served by the pipeline

ITEM = {"text": "정말 너무 화가 나서 참을 수가 없어요", "audio": voiced_tone(16_000, 0.7, 190.0, seed=7)}


def in_label_order(result: list[dict], key: str, config: HyFusERConfig) -> list[float]:
    by_label = {emotion["label"]: emotion[key] for emotion in result}
    return [by_label[config.id2label[index]] for index in range(config.num_labels)]


@pytest.mark.parametrize("name", [*BASELINES, "linear_probe", *COMPOSED_MODELS])
def test_saved_model_loads_through_automodel_and_serves_through_the_pipeline(name, tiny_processor, tmp_path):
    config = HyFusERConfig(
        hidden_size=tiny_processor.hidden_size, sequence_length=tiny_processor.sequence_length, intermediate_size=16,
        num_hidden_layers=1, lstm_hidden_size=8, cnn_channels=8,
    )  # fmt: skip
    model = build(name, config)
    directory = save_hyfuser(tmp_path / name, model, tiny_processor)
    auto_map = json.loads((directory / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModel"] == f"modeling_hyfuser.{type(model).__name__}"

    reloaded = AutoModel.from_pretrained(directory, trust_remote_code=True).eval()
    assert type(reloaded).__name__ == type(model).__name__ and type(reloaded) is not type(model)  # the saved code
    reloaded_weights = reloaded.state_dict()
    assert reloaded_weights.keys() == model.state_dict().keys()
    assert all(torch.equal(reloaded_weights[key], value) for key, value in model.state_dict().items())
    assert reloaded.config.ensemble_text_weight == model.config.ensemble_text_weight
    features = tiny_processor(text=[ITEM["text"]], audio=[ITEM["audio"]])
    with torch.no_grad():
        expected = model(features["text_features"], features["speech_features"])
        loaded = reloaded(features["text_features"], features["speech_features"])
    torch.testing.assert_close(loaded.logits, expected.logits, rtol=0, atol=1e-6)

    classifier = pipeline(model=str(directory), trust_remote_code=True, device="cpu")
    result = classifier(ITEM)
    assert sorted(emotion["label"] for emotion in result) == sorted(config.id2label.values())
    assert sum(emotion["score"] for emotion in result) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(in_label_order(result, "score", config), expected.logits.softmax(-1)[0], atol=1e-5)
    if name in TWO_HEADED:
        detailed = classifier(ITEM, return_modalities=True)
        expected_text = expected.text_logits.softmax(-1)[0]
        np.testing.assert_allclose(in_label_order(detailed, "text_score", config), expected_text, atol=1e-5)
    else:
        assert all(emotion.keys() == {"label", "score"} for emotion in result)
        with pytest.raises(
            ValueError, match="return_modalities needs a model with a text-side and a speech-side head"
        ):
            classifier(ITEM, return_modalities=True)


# --------------------------------------------------------------------------------------------------------------------
# The linear probes' fit


def cached_rows(rows: int, config: HyFusERConfig, seed: int) -> Dataset:
    """Rows as the feature cache holds them (unscaled float16 features, integer labels). The label is the sign
    pattern of two text dimensions averaged over positions, plus noise: linearly separable from the pooled text,
    invisible in the speech."""
    generator = np.random.default_rng(seed)
    shape = (rows, config.sequence_length, config.hidden_size)
    text, speech = generator.normal(size=shape), generator.normal(size=shape)
    labels = generator.integers(0, 4, size=rows)
    text[:, :, 0] += np.where(labels % 2, 1.5, -1.5)[:, None]
    text[:, :, 1] += np.where(labels // 2, 1.5, -1.5)[:, None]
    return Dataset.from_dict(
        {"text_features": text.astype(np.float16), "speech_features": speech.astype(np.float16), "label": labels}
    )


@pytest.fixture
def probe_data(tiny_processor):
    """A processor whose scaler is fitted on the fit rows, a probe config, and fit, selection and validation rows."""
    processor = copy.deepcopy(tiny_processor)  # the session's processor keeps its own scaler
    config = small_config(hidden_size=processor.hidden_size, sequence_length=processor.sequence_length)
    config.id2label, config.label2id = {i: str(i) for i in range(4)}, {str(i): i for i in range(4)}
    fit, selection, validation = (cached_rows(rows, config, seed) for rows, seed in ((120, 0), (40, 1), (40, 2)))
    fit_scaler_on_cache(processor, fit)
    return processor, config, fit, selection, validation


def objective_gradient(probe, processor, features, l2: float) -> torch.Tensor:
    """The gradient of mean cross-entropy + l2 / 2 |weight|^2 at the probe's weights, in float64, on `features`
    scaled by `processor` and pooled by the probe."""
    columns = features.with_format("torch")[:]
    text, speech = processor.scale(columns["text_features"].float(), columns["speech_features"].float())
    inputs, labels = probe.pool(text, speech).double(), columns["label"]
    weight = probe.classifier.weight.detach().double().requires_grad_()
    bias = probe.classifier.bias.detach().double().requires_grad_()
    loss = F.cross_entropy(inputs @ weight.T + bias, labels) + l2 / 2 * weight.square().sum()
    return torch.cat([gradient.flatten() for gradient in torch.autograd.grad(loss, (weight, bias))])


def accuracy(probe, processor, features) -> float:
    predictions = predict_log_probabilities(probe, processor, features).argmax(-1)
    return float(np.mean(predictions == np.asarray(features["label"])))


def test_linear_probe_is_the_penalised_optimum_with_the_penalty_best_on_the_selection_rows(probe_data):
    processor, config, fit, selection, validation = probe_data
    probe = PROBE_MODELS["linear_probe"](config)
    l2 = fit_linear_probe(probe, processor, fit, selection)
    assert l2 in PROBE_L2_GRID
    assert objective_gradient(probe, processor, fit, l2).abs().max() < 1e-5  # L-BFGS reached the minimum
    # The chosen penalty is the one whose fit is most accurate on the selection rows; ties go to the stronger one.
    accuracies = {}
    for candidate in PROBE_L2_GRID:
        alone = PROBE_MODELS["linear_probe"](config)
        fit_linear_probe(alone, processor, fit, selection, l2_grid=(candidate,))
        accuracies[candidate] = accuracy(alone, processor, selection)
    best = max(accuracies.values())
    assert l2 == max(candidate for candidate, value in accuracies.items() if value == best)
    assert accuracy(probe, processor, validation) > 0.9  # the label is linear in the pooled text


def test_linear_probe_fit_draws_no_random_numbers_and_reads_only_its_modalities(probe_data):
    processor, config, fit, selection, validation = probe_data
    fitted = []
    for seed in (0, 1):
        torch.manual_seed(seed)  # another initialisation of the classifier, which the fit overwrites
        probe = PROBE_MODELS["linear_probe_text"](config)
        fit_linear_probe(probe, processor, fit, selection)
        fitted.append(probe.state_dict())
    assert all(torch.equal(fitted[0][key], fitted[1][key]) for key in fitted[0])
    assert accuracy(probe, processor, validation) > 0.9
    speech_probe = PROBE_MODELS["linear_probe_speech"](config)
    fit_linear_probe(speech_probe, processor, fit, selection)
    assert accuracy(speech_probe, processor, validation) < 0.6  # the speech carries no label (chance: 0.25)


# --------------------------------------------------------------------------------------------------------------------
# Metrics of one-head models and the weighted ensemble's weight


def one_hot_scores(predicted: list[int], classes: int = 7) -> np.ndarray:
    return np.log(np.eye(classes)[predicted] * 0.9 + 0.1 / classes)


def test_metrics_of_a_one_head_model_leave_out_the_head_accuracies():
    labels = np.array([0, 0, 1, 1, 2])
    predicted = [0, 1, 1, 1, 0]  # 3 of 5 right
    metrics = compute_metrics(EvalPrediction(predictions=one_hot_scores(predicted), label_ids=labels))
    assert set(metrics) == {"accuracy", "precision_weighted", "recall_weighted", "f1_weighted", "f1_macro"}
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    # per class (precision, recall): 0: (1/2, 1/2), 1: (2/3, 1), 2: (0, 0); supports 2, 2, 1
    assert metrics["precision_weighted"] == pytest.approx((2 * 1 / 2 + 2 * 2 / 3) / 5)
    assert metrics["f1_macro"] == pytest.approx((1 / 2 + 4 / 5 + 0) / 3)


def test_fused_logits_are_the_first_of_three_outputs_or_the_only_one():
    single = one_hot_scores([1, 2])
    assert fused_logits(single) is single
    assert fused_logits((single, single + 1, single + 2)) is single


def test_ensemble_weight_is_the_most_accurate_grid_weight():
    # Row 0: only text is right (needs w > 1/2 ... text 0.8 vs speech 0.6 for the wrong class).
    text = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    speech = np.array([[0.4, 0.6], [0.1, 0.9], [0.2, 0.8]])
    labels = np.array([0, 1, 1])
    # Ensemble for class 0 at weight w: row 0: 0.8w + 0.4(1-w) > 0.5 iff w > 0.25; row 1: 0.6w + 0.1(1-w) < 0.5 iff
    # w < 0.8; row 2 is right at every weight. So every w in (0.25, 0.8) gets all three right.
    assert choose_ensemble_weight(text, speech, labels, grid=(0.0, 0.2, 0.3, 0.9, 1.0)) == 0.3
    assert choose_ensemble_weight(text, speech, labels) == 0.5  # ties go to the plain average
    assert choose_ensemble_weight(text, speech, labels, grid=(0.7, 0.3, 0.6)) == 0.6  # nearest 0.5 among the best
    assert choose_ensemble_weight(text, speech, labels, grid=(0.6, 0.4)) == 0.4  # equally near: the smaller
    assert ENSEMBLE_WEIGHT_GRID[0] == 0.0 and ENSEMBLE_WEIGHT_GRID[-1] == 1.0 and len(ENSEMBLE_WEIGHT_GRID) == 21


def test_ensemble_weight_refuses_mismatched_inputs():
    probabilities = np.full((3, 7), 1 / 7)
    message = r"^text_probabilities and speech_probabilities must both have shape \(rows, num_labels\), got \(3, 7\) and \(2, 7\)$"
    with pytest.raises(ValueError, match=message):
        choose_ensemble_weight(probabilities, probabilities[:2], np.zeros(3))
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        choose_ensemble_weight(probabilities, probabilities, np.zeros(4))
    with pytest.raises(ValueError, match="grid must hold weights in"):
        choose_ensemble_weight(probabilities, probabilities, np.zeros(3), grid=(0.5, 1.5))


# --------------------------------------------------------------------------------------------------------------------
# train.py --model

parse_arguments = TRAIN["parse_arguments"]


def test_train_model_flag_picks_a_trainable_model_and_explains_composed_ones():
    assert parse_arguments(["--aihub_dir", "x", "--dataset", "aihub"])[0].model == "hyfuser"
    assert parse_arguments(["--dataset", "demo", "--model", "kohmt"])[0].model == "kohmt"
    message = "--model average_ensemble is not trained: it composes trained runs of --model text_lstm and --model"
    with pytest.raises(ValueError, match=message):
        parse_arguments(["--dataset", "demo", "--model", "average_ensemble"])
    with pytest.raises(ValueError, match="--model linear_probe is not trained by the Trainer: reproduce.py"):
        parse_arguments(["--dataset", "demo", "--model", "linear_probe"])
    with pytest.raises(SystemExit):
        parse_arguments(["--dataset", "demo", "--model", "transformer"])


@pytest.mark.slow
def test_train_script_trains_saves_and_reports_a_one_head_baseline(tiny_backbones, tmp_path, monkeypatch):
    from corpora import write_aihub263
    from test_train import OVERRIDES

    corpus = write_aihub263(tmp_path / "aihub")
    output_dir = tmp_path / "out"
    argv = [
        "train.py", "--dataset", "aihub", "--aihub_dir", str(corpus), "--model", "speech_cnn",
        "--text_backbone", tiny_backbones.text, "--speech_backbone", tiny_backbones.speech,
        "--sequence_length", "8", "--config_overrides", OVERRIDES + ",cnn_channels=8", "--num_train_epochs", "1",
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4",
        "--cache_dir", str(tmp_path / "cache"), "--output_dir", str(output_dir), "--disable_tqdm", "true",
        "--report_to", "none",
    ]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    TRAIN["main"]()
    config = json.loads((output_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_hyfuser.HyFusERSpeechCNN"
    evaluated = json.loads((output_dir / "eval_results.json").read_text())
    assert "eval_accuracy" in evaluated and "eval_text_head_accuracy" not in evaluated
    validation_rows = sum(
        json.loads((output_dir / "dataset_report.json").read_text())["stages"]["validation"].values()
    )
    report = json.loads((output_dir / "classification_report.json").read_text())
    assert sum(map(sum, report["confusion_matrix"]["matrix"])) == validation_rows
    card = ModelCard.load(output_dir / "README.md")
    assert card.data.model_name.startswith("speech_cnn (") and "\n# speech_cnn (" in card.text
    assert "1-D convolutions over the speech features" in card.text and "dual cross-modal attention" not in card.text
    assert {result.metric_type for result in card.data.eval_results} == {
        "accuracy", "precision_weighted", "recall_weighted", "f1_weighted", "f1_macro",
    }  # fmt: skip
