"""Linear probes (`modeling_hyfuser.PROBE_MODELS`): multinomial logistic regression on pooled, scaled features,
fitted by full-batch L-BFGS with the penalty chosen on the model-selection rows.
"""

from __future__ import annotations

import logging

import torch
from datasets import Dataset
from transformers import PreTrainedModel

from hyfuser.feed import scaled_batches
from processing_hyfuser import HyFusERProcessor

logger = logging.getLogger(__name__)




PROBE_L2_GRID: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
"""The L2 penalties `fit_linear_probe` chooses among, weakest first: the coefficient of half the squared weight norm
next to the mean cross-entropy (scikit-learn's `C` is 1 / (penalty x rows))."""

PROBE_ITERATIONS = 500
"""The most L-BFGS iterations of one fit; it stops earlier once the gradient or the loss no longer changes."""


@torch.no_grad()
def _pooled_features(
    probe: PreTrainedModel, processor: HyFusERProcessor, features: Dataset, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """`probe.pool` of the scaled cached rows, in float64, and their labels."""
    pooled, labels = [], []
    for batch in scaled_batches(features, processor, batch_size):
        pooled.append(probe.pool(batch["text_features"], batch["speech_features"]).double())
        labels.append(batch["labels"])
    return torch.cat(pooled), torch.cat(labels)


def _logistic_regression(
    inputs: torch.Tensor, labels: torch.Tensor, num_labels: int, l2: float, max_iterations: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias minimising mean cross-entropy + l2 / 2 x |weight|^2 (the bias is not penalised), by full-batch
    L-BFGS from zeros: a convex problem with one minimum, reached the same way on every run."""
    weight = torch.zeros(num_labels, inputs.shape[1], dtype=inputs.dtype, requires_grad=True)
    bias = torch.zeros(num_labels, dtype=inputs.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], max_iter=max_iterations, tolerance_grad=1e-9, tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )  # fmt: skip

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(inputs @ weight.T + bias, labels) + l2 / 2 * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach(), bias.detach()


def fit_linear_probe(
    probe: PreTrainedModel,
    processor: HyFusERProcessor,
    fit_features: Dataset,
    selection_features: Dataset,
    l2_grid: tuple[float, ...] = PROBE_L2_GRID,
    max_iterations: int = PROBE_ITERATIONS,
) -> float:
    """Fit a linear probe (`modeling_hyfuser.PROBE_MODELS`) on the pooled, scaled `fit_features`, once per penalty of
    `l2_grid`, and keep the fit most accurate on `selection_features` (ties go to the stronger penalty). Its weights
    are copied into `probe.classifier`; the chosen penalty is returned. No random number is drawn."""
    fit_inputs, fit_labels = _pooled_features(probe, processor, fit_features)
    selection_inputs, selection_labels = _pooled_features(probe, processor, selection_features)
    best = None
    for l2 in sorted(l2_grid):
        weight, bias = _logistic_regression(fit_inputs, fit_labels, probe.config.num_labels, l2, max_iterations)
        accuracy = ((selection_inputs @ weight.T + bias).argmax(-1) == selection_labels).double().mean().item()
        logger.info("Linear probe, L2 penalty %g: selection accuracy %.4f", l2, accuracy)
        if best is None or accuracy >= best[0]:
            best = (accuracy, l2, weight, bias)
    _, l2, weight, bias = best
    with torch.no_grad():
        probe.classifier.weight.copy_(weight)
        probe.classifier.bias.copy_(bias)
    return l2
