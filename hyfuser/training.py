"""The paper's training protocol and the `Trainer` run that `train.py`, `reproduce.py` and the benchmarks share: the
training defaults and recipes, the model config built from the processor, where the backbones run, and the run.
"""

from __future__ import annotations

import logging
import os
from functools import partial
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import EarlyStoppingCallback, PreTrainedModel, Trainer, TrainingArguments
from transformers.trainer_utils import PredictionOutput

from backbones_hyfuser import BACKBONE_DTYPES
from configuration_hyfuser import HyFusERConfig
from hyfuser.feed import collate_features, feature_datasets, scaled_batches
from hyfuser.metrics import compute_metrics
from processing_hyfuser import HyFusERProcessor

logger = logging.getLogger(__name__)


PAPER_TRAINING_DEFAULTS: dict[str, Any] = {
    # Table 3: Adam at a fixed learning rate. AdamW with zero weight decay is exactly Adam (TrainingArguments has no
    # plain "adam"), eps 1e-7 is Keras's default (Table 3 uses Keras's names), and "constant" keeps the rate fixed.
    # The fused kernel is the same update in one step instead of ~900 small ops (benchmarks/README.md).
    "optim": "adamw_torch_fused",
    "weight_decay": 0.0,
    "adam_epsilon": 1e-7,
    # Keras's Adam does not clip gradients; the Trainer's default would clip to norm 1.0.
    "max_grad_norm": 0.0,
    "learning_rate": 1e-4,
    "lr_scheduler_type": "constant",
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 32,
    "num_train_epochs": 30,
    # Table 3: early stopping and model checkpointing both monitor validation accuracy, checked every epoch.
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "logging_strategy": "epoch",
    "load_best_model_at_end": True,
    "metric_for_best_model": "accuracy",
    "greater_is_better": True,
    "save_total_limit": 2,
    # Every HyFusER parameter takes part in every forward pass.
    "ddp_find_unused_parameters": False,
}
"""The paper's training protocol as `TrainingArguments` values: the training script's defaults (anything given on
the command line still wins) and the setting the benchmarks time."""

TRAINING_RECIPES: dict[str, dict[str, Any]] = {
    "paper": {},
    "stable": {"initializer": "glorot_uniform", "early_stopping_patience": 0},
}
"""What `--recipe` changes on top of the paper's training defaults (and the demo's), for every model alike; explicit
flags still win. 'paper' is Table 3 with transformers' initialisation. 'stable' starts every linear and convolution
from Keras's Glorot-uniform weights instead of normal(0, 0.02), which leaves the loss plateau of the first epochs
sooner, and trains every epoch, restoring the best one on the model-selection set, instead of stopping after 3 epochs
without improvement counted from epoch 1, which ends runs still on that plateau (docs/collapse/README.md)."""


def model_config(
    processor: HyFusERProcessor, config_overrides: str | None = None, initializer: str = "normal"
) -> HyFusERConfig:
    """The config of a model trained on `processor`'s features: the feature fields the processor decides (widths,
    lengths, mode), its backbones' names and the `initializer`, then `config_overrides` ("key=value,..."), checked
    against the processor."""
    config = HyFusERConfig(
        **processor.model_config_fields(),
        text_backbone=processor.text_backbone,
        speech_backbone=processor.speech_backbone,
        initializer=initializer,
    )
    if config_overrides:
        config.update_from_string(config_overrides)
    processor.check_compatible(config)
    return config


def place_backbones(processor: HyFusERProcessor, device: str | torch.device, dtype_name: str) -> HyFusERProcessor:
    """Run `processor`'s frozen backbones on this process's `device` (the one the Trainer reports, e.g. `cuda:3` on
    rank 3 of a node) in the compute dtype named `dtype_name` (a `BACKBONE_DTYPES` key)."""
    if dtype_name not in BACKBONE_DTYPES:
        raise ValueError(f"extraction dtype must be one of {list(BACKBONE_DTYPES)}, got {dtype_name!r}")
    logger.info("The frozen backbones run on %s in %s", device, dtype_name)
    return processor.to(device, backbone_dtype=BACKBONE_DTYPES[dtype_name])


class CheckpointProcessor:
    """The processor as the Trainer saves it with every checkpoint: settings, fitted scaler, tokenizer and feature
    extractor, with the frozen backbones named where they are (`HyFusERProcessor.backbone_references`), not copied.

    Copies would cost hundreds of MB and seconds per checkpoint, and a process that had not loaded the backbones
    yet would load them at its first save. What training ends with is saved by `save_hyfuser`, self-contained.
    """

    def __init__(self, processor: HyFusERProcessor):
        processor.backbone_references()  # refuse a processor checkpoints cannot name the backbones of, before training
        self.processor = processor

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> list[str]:
        return self.processor.save_pretrained(save_directory, save_backbones=False, **kwargs)


def feature_trainer(
    model: PreTrainedModel,
    training_args: TrainingArguments,
    processor: HyFusERProcessor,
    train_features: Dataset,
    eval_features: Dataset,
    early_stopping_patience: int = 3,
    features_on_device: str = "auto",
    features_memory_share: float = 0.5,
) -> Trainer:
    """The `Trainer` that `train_on_features` runs: batches scaled with `processor`'s fitted joint scaler, read from
    where `features_on_device` and `features_memory_share` put the features (`feature_datasets`), `eval_features`
    evaluated every time `training_args` says and early stopping after `early_stopping_patience` evaluations without
    improvement (0: never)."""
    training_args, (train_dataset, eval_dataset) = feature_datasets(
        training_args, processor, (train_features, eval_features), features_on_device, features_memory_share
    )
    return Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=partial(collate_features, processor=processor),
        compute_metrics=compute_metrics,
        processing_class=CheckpointProcessor(processor),
        callbacks=[EarlyStoppingCallback(early_stopping_patience)] if early_stopping_patience else [],
    )


def train_on_features(
    model: PreTrainedModel,
    training_args: TrainingArguments,
    processor: HyFusERProcessor,
    train_features: Dataset,
    eval_features: Dataset,
    early_stopping_patience: int = 3,
    resume_from_checkpoint: str | bool | None = None,
    features_on_device: str = "auto",
    features_memory_share: float = 0.5,
) -> tuple[Trainer, PredictionOutput]:
    """Train `model` on cached features with the `Trainer` and predict `eval_features` with the restored best model.

    Batches are scaled with `processor`'s fitted joint scaler; `eval_features` is evaluated every time
    `training_args` says, picks the checkpoint restored at the end and stops training after `early_stopping_patience`
    evaluations without improvement (0: never). Train and eval metrics and the trainer state go to `output_dir`;
    checkpoints hold the model, optimizer, scheduler, random states and the processor without its backbones
    (`CheckpointProcessor`). `features_on_device` and `features_memory_share` decide where batches are read from
    (`feature_trainer`).
    """
    trainer = feature_trainer(
        model, training_args, processor, train_features, eval_features, early_stopping_patience,
        features_on_device, features_memory_share,
    )  # fmt: skip
    train_result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()
    prediction = trainer.predict(trainer.eval_dataset, metric_key_prefix="eval")
    trainer.log_metrics("eval", prediction.metrics)
    trainer.save_metrics("eval", prediction.metrics)
    return trainer, prediction
@torch.no_grad()
def predict_log_probabilities(
    model: PreTrainedModel, processor: HyFusERProcessor, features: Dataset, batch_size: int = 256
) -> np.ndarray:
    """`model`'s fused log-probabilities of the cached rows, (rows, num_labels), in evaluation mode."""
    model.eval()
    return np.concatenate(
        [
            model(batch["text_features"], batch["speech_features"]).logits.float().numpy()
            for batch in scaled_batches(features, processor, batch_size)
        ]
    )


