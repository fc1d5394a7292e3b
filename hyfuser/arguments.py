"""The command-line arguments that `train.py` and `reproduce.py` share: which corpus and how it is preprocessed, where
the feature cache lives, and the backbones and model sizes. Each script adds its own on top (`train.py` the model and
the split, `reproduce.py` the protocol and the models to compare), so a shared flag means the same in both. Here too:
`CORPORA`, all that either script does or says differently for each `--dataset`, and the parse that sets the defaults
that depend on it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import HfArgumentParser, TrainingArguments

from backbones_hyfuser import BACKBONE_DTYPES
from configuration_hyfuser import (
    DEFAULT_ASR_MODEL,
    DEFAULT_SPEECH_BACKBONE,
    DEFAULT_TEXT_BACKBONE,
    INITIALIZERS,
    HyFusERConfig,
)
from hyfuser.constants import CACHE_DIR, DEMO_CORPUS_CUES, DEMO_DATASET
from hyfuser.corpora import KEMDY19_ROWS, LABEL_SOURCES, MULTI_LABEL_POLICIES
from hyfuser.feed import FEATURE_PLACEMENTS, STREAMING_WORKERS
from hyfuser.training import PAPER_TRAINING_DEFAULTS, TRAINING_RECIPES

DEMO_SEQUENCE_LENGTH = 32
"""Positions per modality for the demo: its sentences are 27 tokens on average (30 at most), its clips about 50
HuBERT frames."""

DEMO_DEFAULTS: dict[str, Any] = {
    "text_backbone": None,
    "speech_backbone": None,
    "learning_rate": 1e-3,
    "sequence_length": DEMO_SEQUENCE_LENGTH,
    "config_overrides": "intermediate_size=64",
}
"""What `--dataset demo` changes on top of the paper's defaults, in train.py and reproduce.py alike: the tiny random
backbones it writes (None until they exist under --cache_dir), and, for a model over them and a ~700-item corpus to
learn within a minute on a CPU, a 10x learning rate and a narrower feed-forward (at lr 1e-4 it barely moves in 30
epochs)."""


@dataclass(frozen=True)
class Corpus:
    """One `--dataset` choice: everything the scripts do or say differently for it."""

    title: str
    """How the model card names the training data."""
    source: str
    """The model card's sentence on where the data comes from."""
    output_dir: str
    """train.py's default `--output_dir`."""
    label_policy: Callable[[CorpusArguments], str]
    """The model card's description of its labels."""
    directories: tuple[str, ...] = ()
    """The flags that name its roots (at least one must be given), each a `build_paper_dataset` argument."""
    sessions: bool = True
    """Whether its rows belong to speaker sessions (reproduce.py's `--protocol session_cv` needs them)."""
    generated: bool = False
    """Written on first use under --cache_dir, in KEMDy20's layout, with tiny random backbones of its own
    (`hyfuser.demo`), instead of read from directories."""
    parser_defaults: dict[str, Any] = field(default_factory=dict)
    """Defaults it changes on top of the paper's."""
    limitation: str = ""
    """An extra line for the model card's limitations."""


CORPORA: dict[str, Corpus] = {
    "kemdy": Corpus(
        title="KEMDy19 + KEMDy20",
        source="KEMDy19 + KEMDy20 (ETRI), merged",
        output_dir="outputs/hyfuser-kemdy",
        label_policy=lambda args: (
            f"KEMDy 'Total Evaluation' emotion; rater ties (';') policy: `{args.multi_label}`; "
            f"KEMDy19 rows: `{args.kemdy19_rows}` ({KEMDY19_ROWS[args.kemdy19_rows]})"
        ),
        directories=("kemdy19_dir", "kemdy20_dir"),
    ),
    "aihub": Corpus(
        title="AI-Hub 263",
        source="AI-Hub 263, 감정 분류를 위한 대화 음성 데이터셋",
        output_dir="outputs/hyfuser-aihub",
        label_policy=lambda args: f"AI-Hub 263 label source: `{args.label_source}`",
        directories=("aihub_dir",),
        sessions=False,
    ),
    DEMO_DATASET: Corpus(
        title="offline demo",
        source="generated Korean sentences and synthetic voices written in the KEMDy20 layout (`hyfuser/demo.py`)",
        output_dir="demo_output",
        label_policy=lambda args: "single generated label per item",
        generated=True,
        parser_defaults=DEMO_DEFAULTS,
        limitation="**This is the offline demo**: random tiny backbones and synthetic data. It shows that the code "
        "works end to end and nothing about real emotion recognition.",
    ),
}
"""Every corpus `--dataset` can name."""


@dataclass
class CorpusArguments:
    """Which corpus, its label and row policies, the split seed, where the feature cache lives and where training reads
    it from."""

    dataset: str = field(
        default="kemdy",
        metadata={
            "help": "'kemdy': KEMDy19 + KEMDy20 merged (the paper's Table 4/5 data; give --kemdy19_dir and/or "
            "--kemdy20_dir). 'aihub': AI-Hub 263 (Table 6; give --aihub_dir). 'demo': a small generated Korean "
            "corpus in the KEMDy20 layout with tiny random backbones, offline; it also changes the defaults of "
            + ", ".join(f"--{name}" for name in DEMO_DEFAULTS)
            + " (`--dataset demo --help` shows them).",
            "choices": tuple(CORPORA),
        },
    )
    demo_cue: str = field(
        default="mixed",
        metadata={
            "help": "Which modality carries the emotion in --dataset demo: 'mixed' (the demo: a third of the items "
            "in the text only, a third in the speech only, a third in both), or 'text', 'speech' or 'both' for "
            "every item ('text': the words alone, over one emotion-neutral whisper).",
            "choices": DEMO_CORPUS_CUES,
        },
    )
    kemdy19_dir: str | None = field(
        default=None,
        metadata={"help": "Root of KEMDy19 (holds annotation/Session01_F_res.csv ... and wav/Session01/...)."},
    )
    kemdy20_dir: str | None = field(
        default=None,
        metadata={"help": "Root of KEMDy20 v1.1 (holds annotation/Sess01_eval.csv ... and wav/Session01/...)."},
    )
    aihub_dir: str | None = field(
        default=None,
        metadata={"help": "Root of AI-Hub 263 (holds 4차년도.csv, 5차년도.csv, 5차년도_2차.csv and their wav folders)."},
    )
    split_seed: int = field(
        default=42,
        metadata={"help": "Seed of the neutral downsampling and of the split (in reproduce.py also of the folds and "
                  "the model-selection set)."},
    )  # fmt: skip
    multi_label: str = field(
        default="drop",
        metadata={
            "help": "KEMDy rows whose raters tied (labels joined by ';'): 'drop' them or keep the 'first' label.",
            "choices": MULTI_LABEL_POLICIES,
        },
    )
    kemdy19_rows: str = field(
        default="speaker",
        metadata={
            "help": "KEMDy19 rows (each actor's file rates every segment): 'speaker' keeps each actor's own "
            "segments, the emotion of the person speaking; 'listener' the partner's segments, labelled with the "
            "listener's reaction; 'both' every row of both files. The paper does not say; Table 4 cannot be "
            "reached with speaker labels, and the logged report shows each choice's counts beside Table 4's.",
            "choices": tuple(KEMDY19_ROWS),
        },
    )
    label_source: str = field(
        default="situation",
        metadata={
            "help": "AI-Hub 263 label: 'situation' (the scripted emotion, 상황) or 'majority' (>= 3 of 5 raters). "
            "The paper does not say which it used.",
            "choices": LABEL_SOURCES,
        },
    )
    cache_dir: str = field(
        default=CACHE_DIR,
        metadata={
            "help": "Where the feature cache (features/) and the generated demo corpus and backbones (demo/) live. "
            "Cached features are keyed by the backbones, the data and the processor settings, so a re-run or a "
            "resumed run reuses them. The processes of a multi-process run each extract a part, so on several "
            "machines this must be storage that every node mounts at the same path."
        },
    )
    rebuild_cache: bool = field(
        default=False,
        metadata={
            "help": "Before reusing cached features, every file is checked against the size, row count and SHA-256 "
            "recorded when it was written; a file cut short, changed, without its checksum file (half-written) or "
            "a missing shard stops the run with an error naming the file. This flag re-extracts the features of "
            "just the splits that fail the check, reusing those that pass; a cache that passes is left as it is "
            "(to re-extract a split anyway, delete its files under --cache_dir/features)."
        },
    )
    transcripts: str = field(
        default="corpus",
        metadata={
            "help": "The text side: the corpus's own transcripts ('corpus', the paper's) or what the speech "
            "recognizer --asr_model hears in the audio ('asr': the realistic setting where users have recordings "
            "only; utterances it hears nothing in are dropped and logged).",
            "choices": ("corpus", "asr"),
        },
    )
    asr_model: str | None = field(
        default=DEFAULT_ASR_MODEL,
        metadata={
            "help": "Speech recognizer (Hub id or local directory) for --transcripts asr, saved with the processor "
            "as the one the pipeline uses for inputs without text."
        },
    )
    extraction_batch_size: int = field(
        default=16,
        metadata={"help": "Utterances per backbone call during feature extraction, and per write to the cache."},
    )
    extraction_dtype: str = field(
        default="float32",
        metadata={
            "help": "Compute dtype of the frozen backbones during feature extraction: 'float32' (the default; the "
            "paper does not say), or 'bfloat16'/'float16' under autocast, faster on GPUs and on CPUs with bf16 "
            "matrix units (Intel AMX). "
            "Part of the cache key: each dtype has its own cached features.",
            "choices": tuple(BACKBONE_DTYPES),
        },
    )
    features_on_device: str = field(
        default="auto",
        metadata={
            "help": "Where training reads the cached features from. 'auto': when the training and evaluation "
            "features fit in --features_memory_share of the memory free on the training device (a GPU's own; the "
            "CPU's RAM divided among this machine's processes), they are loaded there once, in float16, and every "
            "batch is gathered and scaled there; otherwise --dataloader_num_workers processes stream them from the "
            "cache on disk. 'always' loads them whatever the free memory says; 'never' streams. Each process holds "
            "the whole training and evaluation split (its sampler draws from all of it). Batches, and so results, "
            "are the same either way.",
            "choices": FEATURE_PLACEMENTS,
        },
    )
    features_memory_share: float = field(
        default=0.5,
        metadata={
            "help": "With --features_on_device auto, the share (0-1] of the training device's free memory the "
            "cached features may take; the rest is left to the model, its activations and the optimizer."
        },
    )

    def check_directories(self) -> None:
        """Refuse a corpus none of whose roots was given, naming the flags it needs."""
        flags = CORPORA[self.dataset].directories
        if flags and not any(getattr(self, flag) for flag in flags):
            raise ValueError(f"--dataset {self.dataset} needs " + " and/or ".join(f"--{flag}" for flag in flags))


@dataclass
class BackboneArguments:
    """The frozen backbones, the positions per modality, HyFusER config overrides, early stopping and the batch."""

    text_backbone: str | None = field(
        default=DEFAULT_TEXT_BACKBONE,
        metadata={
            "help": "Frozen text backbone: a Hub id or a local directory in standard HF layout (tokenizer + BERT-, "
            "RoBERTa- or ELECTRA-family encoder). The default is the paper's (Section 3.1); --dataset demo's "
            "default, None, stands for the tiny random ELECTRA it writes under --cache_dir."
        },
    )
    speech_backbone: str | None = field(
        default=DEFAULT_SPEECH_BACKBONE,
        metadata={
            "help": "Frozen speech backbone: a Hub id or a local directory in standard HF layout (feature extractor "
            "+ HuBERT-like model). The default is the paper's (Section 3.2); --dataset demo's default, None, stands "
            "for the tiny random HuBERT it writes under --cache_dir. HuBERT, wav2vec2, WavLM, data2vec-audio and "
            "Whisper (its encoder) work. If its hidden size differs from the text backbone's, HyFusER works at the "
            "narrower one, projects the wider features onto it, and each modality is scaled on its own."
        },
    )
    sequence_length: int = field(
        default=HyFusERConfig().sequence_length,
        metadata={
            "help": "Positions per modality: text is padded/truncated to this many tokens and HuBERT frames are "
            "interpolated to it (Section 4.2). The default is Table 3's."
        },
    )
    text_layer: int = field(
        default=-1,
        metadata={
            "help": "Which hidden state of the text backbone is the feature: 0 is the embedding output, 1 the first "
            "layer's, -1 the last (the default; the paper does not say which layer it used)."
        },
    )
    speech_layer: int = field(
        default=-1,
        metadata={
            "help": "Which hidden state of the speech backbone is the feature, indexed like --text_layer. Emotion "
            "lives mostly in the middle layers of HuBERT-style encoders (SUPERB; emotion2vec)."
        },
    )
    feature_mode: str = field(
        default="paper",
        metadata={
            "help": "'paper': every utterance as --sequence_length positions per modality (text padded/truncated, "
            "HuBERT frames interpolated), as Section 4.2. 'native': text keeps its real tokens (at most "
            "--sequence_length) and speech the backbone's native frames (at most --max_speech_frames), padded per "
            "batch with masks that keep the padding out of attention and pooling. Only --model hyfuser takes it.",
            "choices": ("paper", "native"),
        },
    )
    max_speech_frames: int = field(
        default=1500,
        metadata={
            "help": "With --feature_mode native, the most speech frames per utterance (HyFusER's attention is "
            "quadratic in them): 1,500 is 30 s of HuBERT frames. Longer clips are interpolated down to it."
        },
    )
    layer_weighting: bool = field(
        default=False,
        metadata={
            "help": "Cache every hidden state of both backbones (float16; the log reports the size per utterance) "
            "and let HyFusER learn a softmax-weighted sum over them per modality. --text_layer and --speech_layer "
            "are then unused. Refused when the cache would not fit on the disk of --cache_dir."
        },
    )
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "Override HyFusERConfig defaults (Table 3), as comma-separated key=value pairs, e.g. "
            "'num_hidden_layers=2,hidden_dropout_prob=0.2,use_modality_losses=true'. The feature widths always come "
            "from the backbones and sequence_length from --sequence_length."
        },
    )
    early_stopping_patience: int = field(
        default=3,
        metadata={
            "help": "Stop after this many evaluations without a better --metric_for_best_model (Table 3: 3 epochs "
            "on validation accuracy; reproduce.py evaluates its model-selection set). 0 disables early stopping."
        },
    )
    initializer: str = field(
        default="normal",
        metadata={
            "help": "How every linear and convolution of the trained model starts: 'normal' (normal(0, 0.02), "
            "transformers' convention) or 'glorot_uniform' (Keras's default, far larger at small widths). Sets "
            "HyFusERConfig.initializer.",
            "choices": INITIALIZERS,
        },
    )
    recipe: str = field(
        default="paper",
        metadata={
            "help": "Training recipe, the same for every model: 'paper' (Table 3) or 'stable', which sets "
            + ", ".join(f"--{name} {value}" for name, value in TRAINING_RECIPES["stable"].items())
            + ": Glorot-uniform weights leave the loss plateau of the first epochs sooner, and every epoch is "
            "trained and the best one on the model-selection set restored, so no run is stopped on that plateau "
            "(docs/collapse/README.md). Explicit flags still win.",
            "choices": tuple(TRAINING_RECIPES),
        },
    )

    global_train_batch_size: int = field(
        default=PAPER_TRAINING_DEFAULTS["per_device_train_batch_size"],
        metadata={
            "help": "Training examples per optimizer step over all devices and processes (Table 3: 32). Unless "
            "--per_device_train_batch_size is given, the per-device batch is this divided by the devices and by "
            "--gradient_accumulation_steps, and a run whose devices x accumulation steps do not divide it stops with "
            "an error (no silent change of the batch). With --per_device_train_batch_size, that wins and the log "
            "states the effective batch."
        },
    )

    def feature_options(self) -> dict[str, int | bool]:
        """The `HyFusERProcessor` settings these arguments choose beyond the backbones and the positions."""
        return {
            "text_layer": self.text_layer,
            "speech_layer": self.speech_layer,
            "layer_weighting": self.layer_weighting,
            "feature_mode": self.feature_mode,
            "max_speech_frames": self.max_speech_frames,
        }


def use_global_batch(parser: HfArgumentParser) -> None:
    """Leave --per_device_train_batch_size unset by default, so that `derive_train_batch_size` derives it from
    --global_train_batch_size, and say so in --help."""
    parser.set_defaults(per_device_train_batch_size=None)
    parser._option_string_actions["--per_device_train_batch_size"].help = (
        "Training batch per device. Unset: --global_train_batch_size / (devices x --gradient_accumulation_steps)."
    )


def training_devices(training_args: TrainingArguments) -> int:
    """Devices that each take a per-device batch per step: the processes of a distributed run, or the GPUs of one
    process (the Trainer's DataParallel)."""
    return training_args.world_size * max(training_args.n_gpu, 1)


def derive_train_batch_size(global_train_batch_size: int, training_args: TrainingArguments) -> None:
    """Set an unset per-device batch so that the effective batch is `global_train_batch_size` on any number of
    devices, or refuse a device count that cannot reach it exactly."""
    if training_args.per_device_train_batch_size is not None:
        return
    per_device_share = training_devices(training_args) * training_args.gradient_accumulation_steps
    if global_train_batch_size % per_device_share:
        raise ValueError(
            f"--global_train_batch_size {global_train_batch_size} cannot be split over "
            f"{training_devices(training_args)} device(s) x {training_args.gradient_accumulation_steps} gradient "
            "accumulation step(s): choose a device count or --gradient_accumulation_steps that divides it, or give "
            "--per_device_train_batch_size (the effective batch then changes, and the log says to what)"
        )
    training_args.per_device_train_batch_size = global_train_batch_size // per_device_share


def effective_batch_size(training_args: TrainingArguments) -> int:
    """Training examples per optimizer step, over all devices and accumulation steps."""
    return training_args.train_batch_size * training_args.world_size * training_args.gradient_accumulation_steps


def batch_description(global_train_batch_size: int, training_args: TrainingArguments) -> str:
    """The effective training batch and its factors, for the log; it says so when --per_device_train_batch_size
    overrides `global_train_batch_size`."""
    effective = effective_batch_size(training_args)
    description = (
        f"{effective}: {training_args.per_device_train_batch_size} per device x {training_devices(training_args)} "
        f"device(s) x {training_args.gradient_accumulation_steps} gradient accumulation step(s)"
    )
    if effective != global_train_batch_size:
        description += f" (not --global_train_batch_size {global_train_batch_size}: --per_device_train_batch_size wins)"
    return description


def recipe_defaults(argv: list[str]) -> dict[str, object]:
    """The parser defaults `--recipe` in `argv` sets (train.py and reproduce.py apply them last, so flags win)."""
    return TRAINING_RECIPES[HfArgumentParser(BackboneArguments, add_help=False).parse_known_args(argv)[0].recipe]


def parse_command_line(
    dataclass_types: tuple[type, ...], argv: list[str], output_dir: str | None = None
) -> tuple[Any, ...]:
    """`argv` parsed into `dataclass_types` (`TrainingArguments` among them), with the paper's training defaults,
    then those of the chosen corpus (`CORPORA`), then those of `--recipe` (`recipe_defaults`), wherever the user sets
    nothing; `output_dir` is the default `--output_dir` (the corpus's own when None).

    `--dataset` is read first, since defaults depend on it. Setting them as parser defaults, rather than patching the
    parsed arguments, lets every explicit flag win and makes `--help` show the values that will really be used.
    """
    corpus = CORPORA[HfArgumentParser(CorpusArguments, add_help=False).parse_known_args(argv)[0].dataset]
    parser = HfArgumentParser(dataclass_types)
    parser.set_defaults(**PAPER_TRAINING_DEFAULTS, output_dir=output_dir or corpus.output_dir)
    use_global_batch(parser)
    # Used only when the features stream from the cache on disk (--features_on_device).
    parser.set_defaults(dataloader_num_workers=STREAMING_WORKERS)
    # Without a GPU, the processes of `accelerate launch --multi_gpu` or `torchrun` only join one gloo DDP run when
    # use_cpu is set; otherwise each of them trains alone on all the data.
    parser.set_defaults(use_cpu=not torch.accelerator.is_available())
    parser.set_defaults(**corpus.parser_defaults)
    parser.set_defaults(**recipe_defaults(argv))
    # TrainingArguments' own help names its default ('loss'), which the paper's replaces.
    parser._option_string_actions["--metric_for_best_model"].help = (
        "Metric compared across evaluations to pick the checkpoint restored at the end and to stop early."
    )
    return parser.parse_args_into_dataclasses(argv)
