#!/usr/bin/env python
"""Train and evaluate HyFusER on pre-extracted KoELECTRA + HuBERT features with the Hugging Face `Trainer`.

The paper's protocol (Yi, Kwak, Shin, *Applied Sciences* 2025, Sections 4-5, Table 3) is the default: the frozen
backbones run once per utterance, the features are jointly standard-scaled with statistics of the training split, and
HyFusER trains with Adam at lr 1e-4, batch 32, for up to 30 epochs, evaluating every epoch, stopping early after 3
epochs without a better validation accuracy and restoring the best epoch. The output directory is self-contained:
weights, config, processor with its scaler, remote code, backbones (when local), model card, metrics and confusion
matrix; `pipeline(model=output_dir, trust_remote_code=True)` serves it.

    # offline demo: generated Korean corpus, tiny random backbones, about a minute on a 2-core CPU
    python train.py --dataset demo --output_dir demo_output

    # the paper: KEMDy19 + KEMDy20, one or several GPUs (each extracts its share of the features; the batch stays 32)
    accelerate launch train.py --dataset kemdy --kemdy19_dir KEMDy19 --kemdy20_dir KEMDy20_v1_1 \
        --output_dir outputs/hyfuser-kemdy

    # continue a killed run
    accelerate launch train.py ... --resume_from_checkpoint outputs/hyfuser-kemdy/checkpoint-780
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainingArguments, set_seed

from configuration_hyfuser import EMOTION_LABELS
from hyfuser.arguments import (
    BackboneArguments,
    CorpusArguments,
    batch_description,
    derive_train_batch_size,
    parse_command_line,
)
from hyfuser.cache import cache_features, fit_scaler_on_cache
from hyfuser.checkpoint import save_hyfuser
from hyfuser.demo import demo_predictions_table
from hyfuser.metrics import fused_logits, per_class_report, save_confusion_matrix
from hyfuser.model_card import publish, write_model_card
from hyfuser.run_setup import build_processor, load_corpora, prepare_corpus, setup_logging, with_transcripts
from hyfuser.splits import SPLITS
from hyfuser.training import model_config, train_on_features
from modeling_hyfuser import COMPOSED_MODELS, MODEL_DESCRIPTIONS, PROBE_MODELS, TRAINABLE_MODELS

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments(BackboneArguments):
    """Which model, its backbones and HyFusER architecture, and whether the backbones are saved with it."""

    model: str = field(
        default="hyfuser",
        metadata={
            "help": "The model to train on the cached features (the paper's Tables 5/6 rows): "
            + "; ".join(f"'{name}': {description}" for name, description in MODEL_DESCRIPTIONS.items())
            + f". {', '.join(COMPOSED_MODELS)} compose trained runs of their members, and reproduce.py fits the "
            "linear probes; neither is trained here.",
            "choices": (*TRAINABLE_MODELS, *COMPOSED_MODELS, *PROBE_MODELS),
        },
    )
    save_backbones: bool | None = field(
        default=None,
        metadata={
            "help": "Copy the frozen backbones into output_dir (true) or reference them by Hub id/path (false). "
            "Unset (None), they are copied when they are local directories, which will not exist where the model "
            "is loaded."
        },
    )

    def __post_init__(self):
        if self.model in COMPOSED_MODELS:
            composed = COMPOSED_MODELS[self.model]
            raise ValueError(
                f"--model {self.model} is not trained: it composes trained runs of --model {composed.members[0]} and "
                f"--model {composed.members[1]} with {composed.model_class.__name__}.from_members "
                "(the comparison runner, reproduce.py, does both)"
            )
        if self.model in PROBE_MODELS:
            raise ValueError(
                f"--model {self.model} is not trained by the Trainer: reproduce.py --models {self.model} fits it "
                "(hyfuser.probes.fit_linear_probe, full-batch L-BFGS on the pooled features)"
            )


@dataclass
class DataTrainingArguments(CorpusArguments):
    """Which corpus, which labels, which split, and where the feature cache lives."""

    split_by: str = field(
        default="random",
        metadata={
            "help": "'random': random 8:2 utterance split as the paper's, stratified by label (our choice; the paper "
            "gives only the ratio; speakers appear on both sides). "
            "'session': hold out whole KEMDy sessions (about a fifth of them), a speaker-independent validation set.",
            "choices": SPLITS,
        },
    )


def parse_arguments(argv: list[str]) -> tuple[ModelArguments, DataTrainingArguments, TrainingArguments]:
    """The command line over the paper's defaults (the demo's and `--recipe`'s where they differ, `--help` shows
    them), checked: the chosen corpus has its directories, and the global batch splits over the devices."""
    model_args, data_args, training_args = parse_command_line(
        (ModelArguments, DataTrainingArguments, TrainingArguments), argv
    )
    data_args.check_directories()
    derive_train_batch_size(model_args.global_train_batch_size, training_args)
    return model_args, data_args, training_args


def main() -> None:
    # 1. Arguments and logging
    model_args, data_args, training_args = parse_arguments(sys.argv[1:])
    setup_logging(training_args, logger)
    logger.info("Training/evaluation parameters %s", training_args)
    logger.info("Effective train batch %s", batch_description(model_args.global_train_batch_size, training_args))

    # 2. Data: the corpora through the paper's preprocessing (the demo first writes its corpus and backbones)
    with training_args.main_process_first(desc="dataset preparation"):
        demo = prepare_corpus(data_args)
        raw_datasets, data_report = load_corpora(data_args, demo)

    if demo:
        # The demo's tensors are tiny, so intra-op threads buy nothing, while on a busy CPU their synchronisation can
        # make every step far slower (3 epochs: 3 s with one thread, 175 s with two, next to two busy processes).
        torch.set_num_threads(1)

    # 3. Processor: tokenizer + feature extractor of the two frozen backbones, which run on this process's device;
    # with --transcripts asr, the text becomes what its speech recognizer hears
    processor = build_processor(model_args, data_args, demo, training_args.device)
    raw_datasets = with_transcripts(raw_datasets, processor, data_args, training_args)

    # 4. Features: backbones run once per utterance, into the on-disk cache (each process extracts its share)
    features = cache_features(
        raw_datasets,
        processor,
        data_args.cache_dir,
        batch_size=data_args.extraction_batch_size,
        rebuild=data_args.rebuild_cache,
    )

    # 5. Joint scaler on the training split only
    fit_scaler_on_cache(processor, features["train"])

    # 6. Model, seeded right before it is built, so that its initial weights depend on the seed alone, whatever ran
    # before (loading, extracting and saving leave the global generators as they were anyway)
    set_seed(training_args.seed)
    config = model_config(processor, model_args.config_overrides, model_args.initializer)
    model = TRAINABLE_MODELS[model_args.model](config)

    # 7. Train, then evaluate the restored best model: fused and per-head metrics
    trainer, prediction = train_on_features(
        model,
        training_args,
        processor,
        features["train"],
        features["validation"],
        early_stopping_patience=model_args.early_stopping_patience,
        resume_from_checkpoint=training_args.resume_from_checkpoint,
        features_on_device=data_args.features_on_device,
        features_memory_share=data_args.features_memory_share,
    )

    if not trainer.is_world_process_zero():
        return

    # 8. Save a self-contained directory, plus model card, per-class report and confusion matrix
    output_dir = Path(training_args.output_dir)
    save_hyfuser(output_dir, trainer.model, processor, save_backbones=model_args.save_backbones)
    names = list(EMOTION_LABELS)
    class_report = per_class_report(prediction.label_ids, fused_logits(prediction.predictions).argmax(-1), names)
    (output_dir / "classification_report.json").write_text(json.dumps(class_report, indent=2))
    (output_dir / "dataset_report.json").write_text(json.dumps(data_report.to_dict(), indent=2, ensure_ascii=False))
    save_confusion_matrix(class_report["confusion_matrix"]["matrix"], names, output_dir / "confusion_matrix.png")
    write_model_card(output_dir, data_args, training_args, trainer.model, data_report, prediction, class_report)
    logger.info("Saved the model, processor, code, model card and reports to %s", output_dir)

    # 9. Publish the final directory
    if training_args.push_to_hub:
        publish(output_dir, trainer.hub_model_id, training_args)

    # 10. Demo: serve the saved directory on held-out items
    if demo:
        print(demo_predictions_table(output_dir, demo))


if __name__ == "__main__":
    main()
