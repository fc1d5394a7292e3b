"""The `Trainer` run of end-to-end fine-tuning (`hyfuser.finetune`): the joint scaler fitted once on the frozen
backbones' features of the training rows, and a `Trainer` over raw rows whose optimizer gives the backbones their own
learning rate.
"""

from __future__ import annotations

import dataclasses
import logging

from accelerate import PartialState
from accelerate.utils import gather_object
from datasets import Dataset
from transformers import EarlyStoppingCallback, PreTrainedModel, Trainer, TrainingArguments
from transformers.trainer_utils import PredictionOutput

from hyfuser.finetune import EndToEndCollator, EndToEndHyFusER, FinetuneArguments
from hyfuser.metrics import compute_metrics
from hyfuser.training import CheckpointProcessor, train_and_evaluate
from processing_hyfuser import HyFusERProcessor
from scaling_hyfuser import FeatureStatistics

logger = logging.getLogger(__name__)

FUSION_PREFIX = "fusion_model."
"""Where HyFusER's own parameters are in an `EndToEndHyFusER`; every other trainable one is a backbone's."""


def fit_scaler_on_rows(processor: HyFusERProcessor, rows: Dataset, batch_size: int = 16) -> HyFusERProcessor:
    """Fit `processor`'s joint scaler on the frozen backbones' unscaled features of `rows` (`text`, `audio`): the
    training split, once, before the backbones train.

    Every process of the run (`accelerate.PartialState`) extracts its contiguous share of the rows; the statistics are
    merged in process order, so every process ends with the same scaler, whatever the number of processes.
    """
    state = PartialState()
    shard = rows.shard(num_shards=state.num_processes, index=state.process_index, contiguous=True)
    text, speech = FeatureStatistics(), FeatureStatistics()
    for batch in shard.iter(batch_size=batch_size):
        features = processor(batch["text"], batch["audio"], scale=False)
        text.update(features["text_features"])
        speech.update(features["speech_features"])
    merged_text, merged_speech = FeatureStatistics(), FeatureStatistics()
    for text_shard, speech_shard in gather_object([(text, speech)]):  # every process's, in process order
        merged_text.merge(text_shard)
        merged_speech.merge(speech_shard)
    if merged_text.count == 0:
        raise ValueError("fit_scaler_on_rows got no rows: the training split is empty")
    processor.set_modality_scalers(merged_text, merged_speech)
    logger.info(
        "Joint scaler fitted on %d frozen-backbone feature positions of the training rows", processor.scaler_count
    )
    return processor


class EndToEndTrainer(Trainer):
    """A `Trainer` whose optimizer trains HyFusER at `args.learning_rate` and the backbones' trainable parameters at
    `backbone_learning_rate`, each split into decayed and undecayed groups as the `Trainer`'s own optimizer is.

    The groups are built in a fixed order, so the optimizer state a checkpoint holds restores onto them on resume.
    """

    def __init__(self, *args, backbone_learning_rate: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.backbone_learning_rate = backbone_learning_rate

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            model = self.model if model is None else model
            decayed = set(self.get_decay_parameter_names(model))
            optimizer_class, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
            groups = []
            for fusion, learning_rate in ((True, self.args.learning_rate), (False, self.backbone_learning_rate)):
                for decays in (True, False):
                    parameters = [
                        parameter
                        for name, parameter in model.named_parameters()
                        if parameter.requires_grad
                        and name.startswith(FUSION_PREFIX) == fusion
                        and (name in decayed) == decays
                    ]
                    if parameters:
                        weight_decay = self.args.weight_decay if decays else 0.0
                        groups.append({"params": parameters, "lr": learning_rate, "weight_decay": weight_decay})
            self.optimizer = optimizer_class(groups, **optimizer_kwargs)
        return self.optimizer


def finetune_trainer(
    end_to_end: EndToEndHyFusER,
    training_args: TrainingArguments,
    train_rows: Dataset,
    eval_rows: Dataset,
    early_stopping_patience: int = 3,
) -> EndToEndTrainer:
    """The `Trainer` that fine-tunes `end_to_end` on raw rows (`text`, `audio`, `label`), evaluating `eval_rows`
    every time `training_args` says and stopping after `early_stopping_patience` evaluations without improvement
    (0: never), as `hyfuser.training.feature_trainer` does on cached features.

    The rows' columns reach the collator as they are (`remove_unused_columns` off: the model takes token ids and
    waveform values, which the collator makes from them). Checkpoints hold every weight of `end_to_end` (backbones
    included), the optimizer with both learning rates, and the processor without its backbones
    (`CheckpointProcessor`).
    """
    return EndToEndTrainer(
        model=end_to_end,
        args=dataclasses.replace(training_args, remove_unused_columns=False),
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        data_collator=EndToEndCollator(end_to_end.processor),
        compute_metrics=compute_metrics,
        processing_class=CheckpointProcessor(end_to_end.processor),
        callbacks=[EarlyStoppingCallback(early_stopping_patience)] if early_stopping_patience else [],
        backbone_learning_rate=end_to_end.finetune_args.backbone_learning_rate,
    )


def train_end_to_end(
    fusion_model: PreTrainedModel,
    processor: HyFusERProcessor,
    finetune_args: FinetuneArguments,
    training_args: TrainingArguments,
    train_rows: Dataset,
    eval_rows: Dataset,
    early_stopping_patience: int = 3,
    resume_from_checkpoint: str | bool | None = None,
) -> tuple[EndToEndTrainer, PredictionOutput]:
    """Train `fusion_model` over trainable copies of `processor`'s backbones (`EndToEndHyFusER`) on raw rows, and
    predict `eval_rows` with the restored best model: `hyfuser.training.train_on_features` with the backbones in the
    loop. `processor`'s scaler must already be fitted (`fit_scaler_on_rows`); it stays fixed. Train and eval metrics
    and the trainer state go to `output_dir`; `trainer.model` is the `EndToEndHyFusER` that `merge_and_save` saves.
    """
    end_to_end = EndToEndHyFusER(fusion_model, processor, finetune_args)
    trainer = finetune_trainer(end_to_end, training_args, train_rows, eval_rows, early_stopping_patience)
    return trainer, train_and_evaluate(trainer, resume_from_checkpoint)
