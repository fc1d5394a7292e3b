"""transformers' own common tests, `ModelTesterMixin` and `ConfigTester`, run on HyFusER and every trainable baseline.

The test files come from the installed transformers version's source release (tests/transformers_common.py says
how). Outside CI a machine that cannot download them skips this module, saying why; in CI (`CI=true`) that is an
error. `NOT_APPLICABLE` gives the reason for every common test that does not apply.
"""

import os
import unittest

import pytest
import torch
from transformers_common import import_common_tests

from configuration_hyfuser import HyFusERConfig
from modeling_hyfuser import (
    TRAINABLE_MODELS,
    HyFusERBidirectionalCrossModalAttention,
    HyFusERForEmotionRecognition,
    HyFusERKoHMT,
    HyFusERKoHMTSpeechQueries,
    HyFusERSpeechCNN,
    HyFusERTextLSTM,
    HyFusERWithStepEncoders,
)

try:
    modeling_common, configuration_common = import_common_tests()
except RuntimeError as error:
    if os.environ.get("CI", "").lower() in ("1", "true"):
        raise
    pytest.skip(f"transformers' common tests are not available: {error}", allow_module_level=True)

ENCODER_LAYERS = 1
"""Layers per modality encoder in these tests: each model then has at most four attention blocks."""

TINY_CONFIG = {
    "hidden_size": 16,
    "sequence_length": 7,
    "intermediate_size": 24,
    "num_hidden_layers": ENCODER_LAYERS,
    "num_attention_heads": 2,
    "hidden_dropout_prob": 0.1,
    "attention_dropout": 0.1,
    "lstm_hidden_size": 6,
    "cnn_channels": 10,
    "cnn_num_layers": 2,
}

NOT_APPLICABLE = {
    "test_model_get_set_embeddings": (
        "HyFusER reads pre-extracted features and has no input embeddings: the token embeddings belong to the frozen "
        "KoELECTRA backbone, which the processor runs"
    ),
}
"""Common tests that apply to none of the models, and why."""

STACKED_BLOCKS = {
    "test_num_layers_is_small": (
        "it bounds the tester's num_hidden_layers by 2, reading it as one stack's depth; here it counts every "
        "attention block, as test_attention_outputs expects of it (two encoders and the cross-modal steps), while "
        "each encoder has a single layer"
    ),
}
"""Not applicable to models with an encoder per modality."""

SECOND_INPUT_ONLY = {
    "test_model_main_input_name": (
        "speech_cnn reads only speech_features, its main input, which comes second: every model takes "
        "(text_features, speech_features) in that order so that one batch and one ensemble call fit them all"
    ),
}
"""Not applicable to the model that reads only its second input."""


def not_applicable(*reasons: dict[str, str]):
    """Skip each named common test of the decorated test class, with its reason."""

    def skip(test_class):
        for reason in reasons:
            for name, why in reason.items():
                setattr(test_class, name, unittest.skip(why)(getattr(test_class, name)))
        return test_class

    return skip


class HyFusERModelTester:
    """Tiny configs and inputs for one of the models: a batch of text and speech features."""

    def __init__(self, parent, attention_blocks: int, hidden_state_count: int, batch_size: int = 3):
        self.parent = parent
        self.batch_size = batch_size
        self.seq_length = TINY_CONFIG["sequence_length"]
        self.hidden_size = TINY_CONFIG["hidden_size"]
        self.num_attention_heads = TINY_CONFIG["num_attention_heads"]
        self.num_hidden_layers = attention_blocks  # what test_attention_outputs counts maps against
        self.expected_num_hidden_layers = hidden_state_count
        self.num_labels = 3
        self.is_training = True

    def get_config(self) -> HyFusERConfig:
        return HyFusERConfig(**TINY_CONFIG, num_labels=self.num_labels)

    def prepare_config_and_inputs_for_common(self) -> tuple[HyFusERConfig, dict[str, torch.Tensor]]:
        shape = (self.batch_size, self.seq_length, self.hidden_size)
        return self.get_config(), {"text_features": torch.randn(shape), "speech_features": torch.randn(shape)}


class HyFusERCommonTests(modeling_common.ModelTesterMixin):
    """The mixin's tests for the models in `all_model_classes`, with the tester sized for them."""

    attention_blocks: int
    hidden_state_count: int
    additional_model_inputs = ["speech_features"]  # the second modality, next to main_input_name
    test_resize_embeddings = False  # features in, no token embeddings to resize
    test_can_init_all_missing_weights_before_2023 = True  # the mixin guesses a model's age from a copyright line

    def setUp(self):
        self.model_tester = HyFusERModelTester(self, self.attention_blocks, self.hidden_state_count)
        self.config_tester = configuration_common.ConfigTester(
            self, config_class=HyFusERConfig, has_text_modality=False, **TINY_CONFIG
        )

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        """The mixin adds labels only for the auto classes it knows; an emotion id per item here."""
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class)
        if return_labels:
            inputs_dict["labels"] = torch.zeros(self.model_tester.batch_size, dtype=torch.long)
        return inputs_dict

    def _prepare_config_and_inputs_for_retain_grad_hidden_states_attentions(self):
        """The first hidden state is the input features themselves, so they must require grad to receive one."""
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        for features in inputs_dict.values():
            features.requires_grad_()
        return config, inputs_dict

    def test_config(self):
        self.config_tester.run_common_tests()


@not_applicable(NOT_APPLICABLE, STACKED_BLOCKS)
class HyFusERForEmotionRecognitionTest(HyFusERCommonTests, unittest.TestCase):
    all_model_classes = (HyFusERForEmotionRecognition,)
    attention_blocks = 2 * ENCODER_LAYERS + 2  # both encoders, Step 1, Step 2
    hidden_state_count = 2 * (ENCODER_LAYERS + 1) + 2  # each encoder's input and layers, Step 1, Step 2


@not_applicable(NOT_APPLICABLE, STACKED_BLOCKS)
class HyFusERWithStepEncodersTest(HyFusERCommonTests, unittest.TestCase):
    all_model_classes = (HyFusERWithStepEncoders,)
    attention_blocks = 4 * ENCODER_LAYERS + 2  # an encoder pair per step, Step 1, Step 2
    hidden_state_count = 4 * (ENCODER_LAYERS + 1) + 2


@not_applicable(NOT_APPLICABLE)
class HyFusERBidirectionalCrossModalAttentionTest(HyFusERCommonTests, unittest.TestCase):
    all_model_classes = (HyFusERBidirectionalCrossModalAttention,)
    attention_blocks = 2  # both steps
    hidden_state_count = 4  # both features, both steps


@not_applicable(NOT_APPLICABLE, STACKED_BLOCKS)
class HyFusERKoHMTTest(HyFusERCommonTests, unittest.TestCase):
    all_model_classes = (HyFusERKoHMT, HyFusERKoHMTSpeechQueries)
    attention_blocks = 2 * ENCODER_LAYERS + 1  # both encoders, the cross-modal step
    hidden_state_count = 2 * (ENCODER_LAYERS + 1) + 1


@not_applicable(NOT_APPLICABLE)
class HyFusERTextLSTMTest(HyFusERCommonTests, unittest.TestCase):
    all_model_classes = (HyFusERTextLSTM,)
    has_attentions = False
    attention_blocks = 0
    hidden_state_count = 2  # the text features, the LSTM's states


@not_applicable(NOT_APPLICABLE, SECOND_INPUT_ONLY)
class HyFusERSpeechCNNTest(HyFusERCommonTests, unittest.TestCase):
    all_model_classes = (HyFusERSpeechCNN,)
    has_attentions = False
    attention_blocks = 0
    hidden_state_count = 1 + TINY_CONFIG["cnn_num_layers"]  # the speech features, each convolution's output


def test_every_trainable_model_runs_the_common_tests():
    tested = [
        model_class
        for test_class in HyFusERCommonTests.__subclasses__()
        for model_class in test_class.all_model_classes
    ]
    assert sorted(model_class.__name__ for model_class in tested) == sorted(
        model_class.__name__ for model_class in TRAINABLE_MODELS.values()
    )
