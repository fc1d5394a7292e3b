"""Training: the `Trainer`'s steps against the matmul (`train_gemm_fraction`), and where an epoch's time goes: the
data paths (`input_rows_per_second_*`), checkpoints (`checkpoint_*bytes`) and the forward/backward share
(`epoch_compute_share`)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from torch.utils.flop_counter import FlopCounterMode
from transformers import Trainer, TrainerCallback, TrainingArguments

import hyfuser.feed
import hyfuser.training
from backbones_hyfuser import SPEECH_BACKBONE_SUBFOLDER, TEXT_BACKBONE_SUBFOLDER
from benchmarks.sections.common import (
    NeighbourMeter,
    Settings,
    log,
    matmul_flops_per_second,
    random_fitted_processor,
    side_by_side,
    synchronize,
    synthetic_cache,
)
from configuration_hyfuser import HyFusERConfig
from hyfuser.tiny_backbones import BackbonePaths
from modeling_hyfuser import HyFusERForEmotionRecognition
from processing_hyfuser import HyFusERProcessor


class _StepClock(TrainerCallback):
    """Times every Trainer step, counts the first (warm-up) step's FLOPs, and measures the reference matmul between
    steps, so that each step is bracketed by two reference measurements taken next to it."""

    def __init__(self, reference: Callable[[], float], device: torch.device):
        self.reference = reference
        self.device = device
        self.counter = FlopCounterMode(display=False)
        self.neighbours = NeighbourMeter()
        self.mark: float | None = None
        self.step_seconds: list[float] = []
        self.others_cpu_share: list[float] = []
        self.reference_flops_per_second: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            self.counter.__enter__()
            self.neighbours.restart()
            self.mark = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        synchronize(self.device)
        now = time.perf_counter()
        if state.global_step == 1:
            self.counter.__exit__(None, None, None)
        # From the end of the previous reference to now: data loading, collation, forward, backward, clipping, step.
        self.step_seconds.append(now - self.mark)
        self.others_cpu_share.append(self.neighbours.share())
        self.reference_flops_per_second.append(self.reference())
        log(
            f"training step {state.global_step}/{state.max_steps}: {self.step_seconds[-1]:.2f}s "
            f"(others used {self.others_cpu_share[-1]:.0%} of the CPUs)"
        )
        self.neighbours.restart()
        self.mark = time.perf_counter()


def measure_training(
    settings: Settings, backbones: BackbonePaths, workdir: Path, device: torch.device, bf16: bool = False
) -> dict[str, Any]:
    """Achieved FLOP/s of HyFusER training steps run by the `Trainer` as `train.py` sets it up, over the FLOP/s of
    a large matmul of the training dtype on the same device.

    Same optimizer, learning rate, gradient clipping and batch size (`hyfuser.training.PAPER_TRAINING_DEFAULTS`), same
    data path (float16 cached features, `hyfuser.feed.collate_scaled_features`); only evaluation, saving and logging
    are off.
    FLOPs are counted with `FlopCounterMode` over the first real step, which is then discarded as warm-up.
    """
    steps = settings.warmup + settings.repeats
    rows = settings.train_batch_size * steps
    name = f"{device.type}-{'bf16' if bf16 else 'fp32'}"
    dataset = synthetic_cache(workdir / "training_cache" / f"{name}.arrow", rows, HyFusERConfig().hidden_size)
    arguments = TrainingArguments(
        output_dir=str(workdir / "trainer"),
        **{
            **hyfuser.training.PAPER_TRAINING_DEFAULTS,
            "per_device_train_batch_size": settings.train_batch_size,
            "max_steps": steps,
            "eval_strategy": "no",
            "save_strategy": "no",
            "logging_strategy": "no",
            "load_best_model_at_end": False,
            "report_to": "none",
            "disable_tqdm": True,
            "use_cpu": device.type == "cpu",
            "bf16": bf16,
        },
    )
    dtype = torch.bfloat16 if bf16 else torch.float32
    # A GPU reaches its GEMM peak only on a larger product than two CPU cores do.
    reference_size = settings.matmul_size if device.type == "cpu" else 4 * settings.matmul_size
    clock = _StepClock(partial(matmul_flops_per_second, reference_size, device, dtype), device)
    torch.manual_seed(0)
    trainer = Trainer(
        model=HyFusERForEmotionRecognition(HyFusERConfig()),
        args=arguments,
        train_dataset=dataset.with_format("torch"),
        data_collator=partial(hyfuser.feed.collate_scaled_features, processor=random_fitted_processor(backbones)),
        callbacks=[clock],
    )
    trainer.train()
    flops = clock.counter.get_total_flops()
    achieved = [flops / seconds for seconds in clock.step_seconds[settings.warmup :]]
    # Step i is bracketed by the references measured right after steps i-1 and i.
    references = clock.reference_flops_per_second
    before, after = references[settings.warmup - 1 : -1], references[settings.warmup :]
    brackets = [(first + second) / 2 for first, second in zip(before, after)]
    fractions = [rate / reference for rate, reference in zip(achieved, brackets)]
    return {
        "fraction": statistics.median(fractions),
        "per_repeat_fractions": fractions,
        "flops_per_step": flops,
        "step_seconds": clock.step_seconds,
        "others_cpu_share": clock.others_cpu_share,
        "achieved_flops_per_second": achieved,
        "reference_flops_per_second": references,
        "reference_matmul": f"{reference_size}^3 {str(dtype).removeprefix('torch.')}",
        "batch_size": settings.train_batch_size,
        "optim": arguments.optim,
        "max_grad_norm": arguments.max_grad_norm,
    }


def bench_training(settings: Settings, backbones: BackbonePaths, workdir: Path) -> dict[str, Any]:
    """`train_gemm_fraction`: `measure_training` in float32 on the CPU."""
    measured = measure_training(settings, backbones, workdir, torch.device("cpu"))
    return {"train_gemm_fraction": measured["fraction"], **measured}


class _EpochClock(TrainerCallback):
    """Each epoch's wall time from its start until its checkpoint is written (batches, steps, evaluation, saving) and
    the part spent in forward and backward passes; each mark follows a device synchronisation."""

    def __init__(self, device: torch.device):
        self.device = device
        self.epochs: list[dict[str, float]] = []

    def _now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.epoch_start, self.compute = self._now(), 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self.step_start = self._now()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.compute += self._now() - self.step_start

    def on_save(self, args, state, control, **kwargs):
        wall = self._now() - self.epoch_start
        share = self.compute / wall
        self.epochs.append({"wall_seconds": wall, "compute_seconds": self.compute, "compute_share": share})
        log(f"epoch {len(self.epochs)}: {wall:.1f}s, {share:.0%} of it in forward and backward passes")


def epoch_trainer(
    processor: HyFusERProcessor,
    splits: tuple[Dataset, Dataset],
    output_dir: Path,
    device: torch.device,
    settings: Settings,
    placement: str,
    workers: int = hyfuser.feed.STREAMING_WORKERS,
    bf16: bool = False,
) -> Trainer:
    """`hyfuser.training.feature_trainer` as `train.py` sets it up (the paper's settings, its loader workers) on
    `device`, for a Table 3 HyFusER as wide as `processor`'s features; no early stopping, so every epoch runs."""
    arguments = TrainingArguments(
        output_dir=str(output_dir),
        **{**hyfuser.training.PAPER_TRAINING_DEFAULTS, "num_train_epochs": settings.epochs, "report_to": "none",
           "disable_tqdm": True, "use_cpu": device.type == "cpu", "bf16": bf16, "dataloader_num_workers": workers},
    )  # fmt: skip
    torch.manual_seed(0)
    model = HyFusERForEmotionRecognition(
        HyFusERConfig(hidden_size=processor.hidden_size, intermediate_size=processor.hidden_size)
    )
    return hyfuser.training.feature_trainer(
        model, arguments, processor, *splits, early_stopping_patience=0, features_on_device=placement
    )


def input_rates(trainers: dict[str, Trainer], settings: Settings, device: torch.device) -> dict[str, Any]:
    """Cached rows per second to scaled batches ready on `device`, through each trainer's own training data loader
    (one pass over its rows per repeat, worker start-up included), side by side."""
    rows = {name: len(trainer.train_dataset) for name, trainer in trainers.items()}

    def one_pass(loader: Any) -> Callable[[], None]:
        def consume() -> None:
            for _ in loader:
                pass
            synchronize(device)

        return consume

    loaders = {name: one_pass(trainer.get_train_dataloader()) for name, trainer in trainers.items()}
    times = side_by_side(loaders, settings.repeats, settings.warmup, "input")
    rates = {name: [rows[name] / seconds for seconds in times[name]] for name in trainers}
    ratios = [device_rate / streamed for device_rate, streamed in zip(rates["device"], rates["streaming"])]
    return {
        "input_rows_per_second_streaming": statistics.median(rates["streaming"]),
        "input_rows_per_second_device": statistics.median(rates["device"]),
        "input_device_over_streaming": statistics.median(ratios),
        "input_rows_per_second": {name: statistics.median(values) for name, values in rates.items()},
        "input_per_repeat_rows_per_second": rates,
        "input_rows": rows,
        "input_others_cpu_share": times["others_cpu_share"],
    }


def checkpoint_bytes(checkpoint: Path) -> dict[str, Any]:
    """What one checkpoint holds: all its bytes, and those of frozen-backbone copies (the processor's backbone
    subfolders)."""
    files = {str(path.relative_to(checkpoint)): path.stat().st_size
             for path in sorted(checkpoint.rglob("*")) if path.is_file()}  # fmt: skip
    backbones = (TEXT_BACKBONE_SUBFOLDER, SPEECH_BACKBONE_SUBFOLDER)
    return {
        "checkpoint_bytes_per_save": sum(files.values()),
        "checkpoint_backbone_bytes": sum(size for name, size in files.items() if Path(name).parts[0] in backbones),
        "checkpoint_files": files,
    }


def epoch_run(trainer: Trainer, device: torch.device) -> dict[str, Any]:
    """Train for the trainer's epochs under an `_EpochClock`; the epochs after the first (warm-up) are reported."""
    clock = _EpochClock(device)
    trainer.add_callback(clock)
    trainer.train()
    measured = clock.epochs[1:] or clock.epochs
    checkpoints = Path(trainer.args.output_dir).glob("checkpoint-*")
    last = max(checkpoints, key=lambda path: int(path.name.rsplit("-", 1)[1]))
    return {
        "epoch_compute_share": statistics.median(epoch["compute_share"] for epoch in measured),
        "seconds_per_epoch": statistics.median(epoch["wall_seconds"] for epoch in measured),
        "epochs": clock.epochs,
        "epoch_rows": [len(trainer.train_dataset), len(trainer.eval_dataset)],
        "features_on_device": isinstance(trainer.train_dataset, hyfuser.feed.DeviceFeatures),
        **checkpoint_bytes(last),
    }


def bench_epoch(settings: Settings, backbones: BackbonePaths, workdir: Path) -> dict[str, Any]:
    """Where a training epoch's time goes on the CPU: rows per second through each data path (streamed with
    `train.py`'s workers, streamed in the training process, and gathered from the features loaded into RAM), then a
    short training run's forward/backward share and the size of its checkpoints."""
    device, processor = torch.device("cpu"), random_fitted_processor(backbones)
    cache, width = workdir / "epoch_cache", processor.hidden_size
    rows = synthetic_cache(cache / "input.arrow", settings.input_rows, width)
    splits = (rows, rows.select(range(settings.train_batch_size)))
    paths = {"streaming": ("never", hyfuser.feed.STREAMING_WORKERS), "streaming_in_process": ("never", 0),
             "device": ("always", hyfuser.feed.STREAMING_WORKERS)}  # fmt: skip
    trainers = {name: epoch_trainer(processor, splits, workdir / f"input_{name}", device, settings, placement, workers)
                for name, (placement, workers) in paths.items()}  # fmt: skip
    measured = input_rates(trainers, settings, device)
    del trainers
    train_rows, eval_rows = settings.epoch_rows
    splits = (synthetic_cache(cache / "train.arrow", train_rows, width),
              synthetic_cache(cache / "validation.arrow", eval_rows, width))  # fmt: skip
    log(f"epoch: {settings.epochs} epochs of {train_rows} rows on the CPU, evaluating {eval_rows}")
    measured |= epoch_run(epoch_trainer(processor, splits, workdir / "epoch_run", device, settings, "auto"), device)
    return {**measured, "backbones": settings.epoch_backbones, "streaming_workers": hyfuser.feed.STREAMING_WORKERS}
