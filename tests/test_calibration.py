"""Temperature scaling (hyfuser/calibration.py): planted temperatures are recovered from the rows given and only from
them, calibrated probabilities keep every prediction, the calibration numbers equal a computation by hand, and the
reliability diagram is a real PNG."""

import logging
import math

import numpy as np
import pytest
import torch
from PIL import Image

from configuration_hyfuser import HyFusERConfig
from hyfuser.calibration import (
    TEMPERATURE_BOUNDS,
    apply_temperature,
    average_calibrated_heads,
    calibration_report,
    fit_head_temperatures,
    fit_temperature,
    save_reliability_diagram,
)
from modeling_hyfuser import HyFusERForEmotionRecognition

NUM_CLASSES = 7


def planted_rows(seed: int, rows: int, temperature: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows whose labels are drawn from softmax(z) while the model reports log_softmax(temperature x z): a model off
    by exactly `temperature`, whose best calibrating temperature is `temperature`. Returns the reported
    log-probabilities, the labels and z."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(0.0, 1.5, size=(rows, NUM_CLASSES))
    truth = apply_temperature(scores, 1.0)
    labels = (truth.cumsum(axis=1) > rng.random((rows, 1))).argmax(axis=1)
    reported = temperature * scores
    return reported - np.log(np.exp(reported).sum(axis=1, keepdims=True)), labels, scores


def temperature_standard_error(log_probabilities: np.ndarray, temperature: float) -> float:
    """The asymptotic standard error of the fitted temperature at the planted one: with b = 1 / T the Fisher
    information of one row is the variance of its reported log-probabilities under softmax(b z), so se(b) =
    1 / sqrt(rows x mean variance) and se(T) = T^2 se(b) (the delta method, dT/db = -T^2)."""
    probabilities = apply_temperature(log_probabilities, temperature)
    mean = (probabilities * log_probabilities).sum(axis=1)
    variance = (probabilities * log_probabilities**2).sum(axis=1) - mean**2
    return temperature**2 / math.sqrt(len(log_probabilities) * variance.mean())


def test_calibration_report_equals_a_computation_by_hand():
    probabilities = [[0.75, 0.25], [0.55, 0.45], [0.35, 0.65]]
    labels = [0, 1, 1]
    # Confidences 0.75, 0.55, 0.65 fall in three different 15ths of [0, 1] ((11/15, 12/15], (8/15, 9/15],
    # (9/15, 10/15]), one row each; the predictions 0, 0, 1 are right, wrong, right:
    #   ECE   = 1/3 |1 - 0.75| + 1/3 |0 - 0.55| + 1/3 |1 - 0.65| = (0.25 + 0.55 + 0.35) / 3 = 1.15 / 3
    #   NLL   = -(ln 0.75 + ln 0.45 + ln 0.65) / 3 = (0.287682 + 0.798508 + 0.430783) / 3 = 0.505658
    #   Brier = ((0.25^2 + 0.25^2) + (0.55^2 + 0.55^2) + (0.35^2 + 0.35^2)) / 3 = (0.125 + 0.605 + 0.245) / 3 = 0.325
    report = calibration_report(probabilities, labels)
    assert report == pytest.approx({"ece": 1.15 / 3, "nll": 0.505658, "brier": 0.325}, abs=1e-6)


def test_calibrated_probabilities_sum_to_one_and_keep_every_prediction():
    log_probabilities, _, _ = planted_rows(seed=0, rows=500, temperature=3.0)
    for temperature in (TEMPERATURE_BOUNDS[0], 0.3, 1.0, 2.5, TEMPERATURE_BOUNDS[1]):
        calibrated = apply_temperature(log_probabilities, temperature)
        np.testing.assert_allclose(calibrated.sum(axis=1), 1.0, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(calibrated.argmax(axis=1), log_probabilities.argmax(axis=1))
    np.testing.assert_allclose(apply_temperature(log_probabilities, 1.0), np.exp(log_probabilities), atol=1e-12)


def test_a_temperature_on_hyfuser_logits_scales_the_eq_9_average_and_keeps_its_prediction():
    torch.manual_seed(0)
    config = HyFusERConfig(hidden_size=8, intermediate_size=8, sequence_length=4)
    model = HyFusERForEmotionRecognition(config).eval()
    with torch.no_grad():
        output = model(torch.randn(16, 4, 8) * 5, torch.randn(16, 4, 8) * 5)
    fused = (output.text_logits.softmax(-1) + output.speech_logits.softmax(-1)).double().numpy() / 2
    np.testing.assert_allclose(apply_temperature(output.logits.numpy(), 1.0), fused, atol=1e-6)
    calibrated = apply_temperature(output.logits.numpy(), 2.5)
    np.testing.assert_allclose(calibrated, apply_temperature(np.log(fused), 2.5), atol=1e-5)
    np.testing.assert_array_equal(calibrated.argmax(axis=1), fused.argmax(axis=1))


def test_fit_temperature_recovers_a_planted_temperature_within_four_standard_errors():
    log_probabilities, labels, _ = planted_rows(seed=0, rows=20_000, temperature=3.0)
    error = temperature_standard_error(log_probabilities, 3.0)  # about 0.03 here
    assert fit_temperature(log_probabilities, labels) == pytest.approx(3.0, abs=4 * error)
    # Calibrating lowers the negative log-likelihood and the calibration error of the over-confident model.
    before = calibration_report(apply_temperature(log_probabilities, 1.0), labels)
    temperature = fit_temperature(log_probabilities, labels)
    after = calibration_report(apply_temperature(log_probabilities, temperature), labels)
    assert after["nll"] < before["nll"] and after["ece"] < before["ece"] / 3


def test_fit_temperature_sees_only_the_rows_it_is_given():
    """Selection rows planted over-confident (T = 3) and validation rows under-confident (T = 0.5), in one array:
    the fit on the selection rows finds 3, untouched by the validation rows, even when those are replaced by NaN."""
    selection_log_probs, selection_labels, _ = planted_rows(seed=1, rows=8_000, temperature=3.0)
    validation_log_probs, validation_labels, _ = planted_rows(seed=2, rows=8_000, temperature=0.5)
    log_probabilities = np.concatenate([selection_log_probs, validation_log_probs])
    labels = np.concatenate([selection_labels, validation_labels])
    selection, validation = np.arange(8_000), np.arange(8_000, 16_000)

    selection_temperature = fit_temperature(log_probabilities[selection], labels[selection])
    validation_temperature = fit_temperature(log_probabilities[validation], labels[validation])
    assert selection_temperature == pytest.approx(3.0, abs=4 * temperature_standard_error(selection_log_probs, 3.0))
    assert validation_temperature == pytest.approx(0.5, abs=4 * temperature_standard_error(validation_log_probs, 0.5))
    assert validation_temperature < fit_temperature(log_probabilities, labels) < selection_temperature

    log_probabilities[validation] = np.nan
    assert fit_temperature(log_probabilities[selection], labels[selection]) == selection_temperature


def test_head_temperatures_are_fitted_per_head_and_their_average_is_a_probability():
    text_log_probs, labels, scores = planted_rows(seed=3, rows=8_000, temperature=3.0)
    speech_log_probs = 0.5 * scores - np.log(np.exp(0.5 * scores).sum(axis=1, keepdims=True))
    text_temperature, speech_temperature = fit_head_temperatures(text_log_probs, speech_log_probs, labels)
    assert text_temperature == pytest.approx(3.0, abs=4 * temperature_standard_error(text_log_probs, 3.0))
    assert speech_temperature == pytest.approx(0.5, abs=4 * temperature_standard_error(speech_log_probs, 0.5))
    # Both heads calibrated by their own temperature are softmax(z) each, so their average is too.
    averaged = average_calibrated_heads(text_log_probs, speech_log_probs, 3.0, 0.5)
    np.testing.assert_allclose(averaged, apply_temperature(scores, 1.0), atol=1e-12)
    weighted = average_calibrated_heads(text_log_probs, speech_log_probs, text_temperature, speech_temperature, 0.8)
    np.testing.assert_allclose(weighted.sum(axis=1), 1.0, atol=1e-12)


def test_reliability_diagram_is_a_png_of_the_stated_size(tmp_path):
    log_probabilities, labels, _ = planted_rows(seed=4, rows=2_000, temperature=3.0)
    temperature = fit_temperature(log_probabilities, labels)
    path = tmp_path / "reliability_diagram.png"
    save_reliability_diagram(
        apply_temperature(log_probabilities, 1.0), apply_temperature(log_probabilities, temperature), labels, path,
        temperature=temperature,
    )  # fmt: skip
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (1050, 1050)


def test_a_fit_that_ends_on_a_bound_says_so(caplog):
    # Every row right, with a margin: the likelihood keeps rising as the temperature falls.
    log_probabilities = np.log([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    with caplog.at_level(logging.WARNING, logger="hyfuser.calibration"):
        assert fit_temperature(log_probabilities, [0, 1, 0]) == TEMPERATURE_BOUNDS[0]
    assert "ends on its bound" in caplog.text


@pytest.mark.parametrize(
    ("log_probabilities", "labels", "message"),
    [
        (np.zeros((0, 3)), [], "log_probabilities has no rows"),
        (np.zeros((4, 1)), [0, 0, 0, 0], "log_probabilities has 1 class: a temperature needs at least two"),
        (np.zeros(3), [0, 1, 2], r"must have shape \(rows, classes\), got \(3,\)"),
        ([[0.0, -np.inf], [-1.0, -0.5]], [0, 1], "log_probabilities row 0, class 1 is -inf"),
        ([[0.0, np.nan], [-1.0, -0.5]], [0, 1], "log_probabilities row 0, class 1 is nan"),
        (np.log([[0.9, 0.1], [0.6, 0.4]]), [0, 0], "labels hold only class 0"),
        (np.log([[0.9, 0.1], [0.6, 0.4]]), [0, 2], "labels row 1 is class 2, outside 0..1"),
        (np.log([[0.9, 0.1], [0.6, 0.4]]), [0, 1, 1], "labels must be 2 integer class ids"),
        (np.log([[0.9, 0.1], [0.6, 0.4]]), [0.0, 1.0], "labels must be 2 integer class ids"),
    ],
)
def test_fit_temperature_names_what_is_wrong(log_probabilities, labels, message):
    with pytest.raises(ValueError, match=message):
        fit_temperature(log_probabilities, labels)


@pytest.mark.parametrize("temperature", [0, -1.0, math.inf, math.nan, "2"])
def test_apply_temperature_refuses_a_temperature_that_is_not_a_positive_number(temperature):
    with pytest.raises(ValueError, match="temperature must be a finite number above 0"):
        apply_temperature(np.log([[0.9, 0.1]]), temperature)


def test_average_calibrated_heads_names_what_is_wrong():
    with pytest.raises(ValueError, match=r"text_weight must be in \[0, 1\], got 1.5"):
        average_calibrated_heads(np.zeros((2, 3)), np.zeros((2, 3)), 1.0, 1.0, text_weight=1.5)
    with pytest.raises(ValueError, match=r"text_log_probs \(2, 3\) and speech_log_probs \(2, 4\) differ in shape"):
        average_calibrated_heads(np.zeros((2, 3)), np.zeros((2, 4)), 1.0, 1.0)


def test_the_config_carries_a_validated_calibration_temperature_and_old_configs_load_at_one(tmp_path):
    config = HyFusERConfig(hidden_size=8, sequence_length=4, intermediate_size=8, num_hidden_layers=1)
    assert config.calibration_temperature == 1.0
    saved = config.to_dict()
    del saved["calibration_temperature"]  # a config.json written before the field existed
    assert HyFusERConfig.from_dict(saved).calibration_temperature == 1.0
    config.calibration_temperature = 0.7
    config.save_pretrained(tmp_path)
    assert HyFusERConfig.from_pretrained(tmp_path).calibration_temperature == 0.7
    for bad in (0.0, -1.0, math.inf, math.nan, "2", True):
        with pytest.raises(ValueError, match="calibration_temperature"):
            HyFusERConfig(calibration_temperature=bad)
