"""The front half of a run, written once for `train.py` and `reproduce.py`: logging, the corpus (the demo's written
first), the processor over the frozen backbones, and the ASR transcripts that may replace the corpus's own."""

from __future__ import annotations

import logging
import sys

import datasets
import torch
import transformers
from datasets import DatasetDict
from transformers import TrainingArguments

from hyfuser.arguments import CORPORA, BackboneArguments, CorpusArguments
from hyfuser.cache import transcribe_corpus
from hyfuser.demo import DemoCorpus, cached_demo
from hyfuser.splits import PaperDatasetReport, build_paper_dataset
from hyfuser.training import place_backbones
from processing_hyfuser import HyFusERProcessor

logger = logging.getLogger(__name__)


def setup_logging(training_args: TrainingArguments, command_logger: logging.Logger | None = None) -> None:
    """The package's steps (the `hyfuser` loggers) and the command's own (`command_logger`) log at INFO on the main
    process; libraries follow --log_level / --log_level_replica."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    library_level = training_args.get_process_log_level()
    our_level = min(logging.INFO, library_level) if training_args.should_log else library_level
    for our_logger in (command_logger, logging.getLogger("hyfuser")):
        if our_logger is not None:
            our_logger.setLevel(our_level)
    datasets.utils.logging.set_verbosity(library_level)
    transformers.utils.logging.set_verbosity(library_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


def prepare_corpus(args: CorpusArguments) -> DemoCorpus | None:
    """The generated corpus and its backbones, written under --cache_dir on first use, for a `--dataset` that is
    generated (the demo); None for one read from its directories."""
    return cached_demo(args.cache_dir, cue=args.demo_cue) if CORPORA[args.dataset].generated else None


def load_corpora(args: CorpusArguments, demo: DemoCorpus | None) -> tuple[DatasetDict, PaperDatasetReport]:
    """The paper's train/validation DatasetDict (Section 5.1 preprocessing; logs the Table 4 counts) and its count
    and load report, from `demo`'s training corpus or from the corpus directories `args` names.

    The split is `args.split_by` (train.py's --split_by), else random: reproduce.py, which has no such flag, makes
    its own splits of all the rows and keeps this one's training rows only for its `--protocol paper`.
    """
    roots = {"kemdy20_dir": demo.train_dir} if demo else {}  # the demo is written in KEMDy20's layout
    roots.update({flag: getattr(args, flag) for flag in CORPORA[args.dataset].directories})
    splits, report = build_paper_dataset(
        **roots,
        seed=args.split_seed,
        split_by=getattr(args, "split_by", "random"),
        multi_label=args.multi_label,
        kemdy19_rows=args.kemdy19_rows,
        label_source=args.label_source,
        return_report=True,
    )
    for load in report.loads:
        logger.info("Loaded:\n%s", load)
    logger.info("Paper preprocessing:\n%s", report)
    return splits, report


def build_processor(
    backbone_args: BackboneArguments,
    corpus_args: CorpusArguments,
    demo: DemoCorpus | None,
    device: str | torch.device,
) -> HyFusERProcessor:
    """The processor the arguments describe (the tokenizer and feature extractor of the two frozen backbones, the
    demo's own where none is named), its backbones run on this process's `device` in --extraction_dtype."""
    processor = HyFusERProcessor.from_backbones(
        backbone_args.text_backbone or demo.backbones.text,
        backbone_args.speech_backbone or demo.backbones.speech,
        sequence_length=backbone_args.sequence_length,
        asr_model=corpus_args.asr_model,
        **backbone_args.feature_options(),
    )
    return place_backbones(processor, device, corpus_args.extraction_dtype)


def with_transcripts(
    raw_datasets: DatasetDict,
    processor: HyFusERProcessor,
    args: CorpusArguments,
    training_args: TrainingArguments,
) -> DatasetDict:
    """`raw_datasets` as they are with --transcripts corpus; with --transcripts asr, with the text the speech
    recognizer hears in each utterance (cached under --cache_dir; the main process transcribes first)."""
    if args.transcripts != "asr":
        return raw_datasets
    with training_args.main_process_first(desc="transcription"):
        return transcribe_corpus(raw_datasets, processor, args.cache_dir, batch_size=args.extraction_batch_size)
