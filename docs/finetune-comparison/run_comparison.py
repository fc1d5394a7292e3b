#!/usr/bin/env python
"""Frozen vs LoRA vs top-layer fine-tuning of HyFusER's backbones on the offline demo corpus, under session
cross-validation: one `reproduce.py --models hyfuser --finetune MODE` comparison per mode, each in its own process
(so its peak resident memory is its own), then results.json and results.md here.

    OMP_NUM_THREADS=1 python docs/finetune-comparison/run_comparison.py --work_dir /tmp/finetune-comparison

Every mode trains with the same settings (`COMMON`): the demo's schedule (at most 30 epochs, early stopping after 3
without improvement on the held-out selection sessions), as in the demo comparison. Two modes run at a time, one
thread each, so each has a core of the two this was measured on. Seconds per epoch are each run's `train_runtime`
over the epochs it ran (validation of every epoch included).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from hyfuser.environment import environment_record  # noqa: E402
from hyfuser.tables import markdown_table  # noqa: E402

MODES = ("none", "top_layers", "lora")
EPOCHS = 30
COMMON = ["--dataset", "demo", "--protocol", "session_cv", "--folds", "5", "--models", "hyfuser",
          "--num_train_epochs", str(EPOCHS), "--disable_tqdm", "true"]  # fmt: skip
MEASURE = """
import resource, runpy, sys
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
"""`python -c MEASURE reproduce.py ...`: reproduce.py, then its own peak resident memory."""


def run_mode(mode: str, work_dir: Path, seeds: int) -> float:
    """One comparison; returns its peak resident memory in MB."""
    command = [sys.executable, "-c", MEASURE, "reproduce.py", *COMMON, "--seeds", str(seeds), "--finetune", mode,
               "--cache_dir", str(work_dir / "cache"), "--output_dir", str(work_dir / mode)]  # fmt: skip
    log = work_dir / f"{mode}.log"
    with open(log, "w") as output:
        subprocess.run(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, check=True)
    peak = [line for line in log.read_text().splitlines() if line.startswith("PEAK_RSS_KB")][-1]
    return int(peak.split()[1]) / 1024


def parameter_counts(work_dir: Path) -> dict[str, dict[str, int]]:
    """HyFusER's and the backbones' trainable parameters per mode, with the demo's settings."""
    from hyfuser.demo import cached_demo
    from hyfuser.finetune import FinetuneArguments, prepare_backbones, trainable_parameters
    from hyfuser.training import model_config
    from modeling_hyfuser import HyFusERForEmotionRecognition
    from processing_hyfuser import HyFusERProcessor

    demo = cached_demo(str(work_dir / "cache"))
    processor = HyFusERProcessor.from_backbones(demo.backbones.text, demo.backbones.speech, sequence_length=32)
    fusion = HyFusERForEmotionRecognition(model_config(processor, "intermediate_size=64")).num_parameters()
    processor.scaler_mean = processor.scaler_std = [0.0] * processor.hidden_size  # prepare_backbones needs a scaler
    counts = {"none": {"hyfuser": fusion, "backbones": 0}}
    for mode in MODES[1:]:
        text, speech = prepare_backbones(processor, FinetuneArguments(finetune=mode))
        counts[mode] = {"hyfuser": fusion, "backbones": trainable_parameters(text) + trainable_parameters(speech)}
    return counts


def summary(work_dir: Path, peaks: dict[str, float]) -> dict:
    parameters = parameter_counts(work_dir)
    modes = {}
    for mode in MODES:
        results = json.loads((work_dir / mode / "results.json").read_text())
        runs = [run for run in results["runs"] if run["model"] == "hyfuser"]
        epoch_seconds = []
        for run in runs:
            run_dir = work_dir / mode / "runs" / f"hyfuser-fold{run['fold']}-seed{run['seed']}"
            train = json.loads((run_dir / "train_results.json").read_text())
            epoch_seconds.append(train["train_runtime"] / train["epoch"])
        metrics = {key: [run["metrics"][key] for run in runs] for key in ("accuracy", "f1_weighted")}
        modes[mode] = {
            "runs": len(runs),
            **{f"{key}_mean": float(np.mean(values)) for key, values in metrics.items()},
            **{f"{key}_std": float(np.std(values, ddof=1)) for key, values in metrics.items()},
            "seconds_per_epoch": float(np.mean(epoch_seconds)),
            "peak_memory_mb": round(peaks[mode], 1),
            "trainable_parameters": parameters[mode],
            "per_run": [{"fold": run["fold"], "seed": run["seed"], **{key: run["metrics"][key] for key in metrics}}
                        for run in runs],
        }  # fmt: skip
    return {"protocol": "session_cv, 5 folds, held-out selection sessions", "max_epochs": EPOCHS,
            "command": ["reproduce.py", *COMMON, "--finetune", "MODE"], "modes": modes}  # fmt: skip


def render(results: dict) -> str:
    rows = [
        [mode, entry["runs"], f"{entry['accuracy_mean']:.3f} ± {entry['accuracy_std']:.3f}",
         f"{entry['f1_weighted_mean']:.3f} ± {entry['f1_weighted_std']:.3f}", f"{entry['seconds_per_epoch']:.1f}",
         f"{entry['peak_memory_mb']:.0f}", f"{entry['trainable_parameters']['hyfuser']:,}",
         f"{entry['trainable_parameters']['backbones']:,}"]
        for mode, entry in results["modes"].items()
    ]  # fmt: skip
    header = ["--finetune", "runs", "accuracy", "weighted F1", "s / epoch", "peak RSS (MB)", "HyFusER params",
              "backbone params"]  # fmt: skip
    return (
        "# Frozen vs fine-tuned backbones on the demo corpus\n\n"
        f"HyFusER, `{results['protocol']}`, at most {results['max_epochs']} epochs, mean ± std over the runs "
        "(folds x seeds). Tiny random backbones and a generated corpus: this shows that fine-tuning runs and what it "
        "costs, not what it gains on real Korean speech.\n\n" + markdown_table(header, rows) + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work_dir", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=1)
    arguments = parser.parse_args()
    arguments.work_dir.mkdir(parents=True, exist_ok=True)
    # Recorded before the runs: the code state they ran from.
    environment = environment_record(ROOT, 1, ["docs/finetune-comparison/run_comparison.py", *sys.argv[1:]])
    environment["packages"]["peft"] = importlib.metadata.version("peft")
    (HERE / "env.json").write_text(json.dumps(environment, indent=2))
    with ThreadPoolExecutor(max_workers=2) as pool:
        peaks = dict(zip(MODES, pool.map(lambda mode: run_mode(mode, arguments.work_dir, arguments.seeds), MODES)))
    results = summary(arguments.work_dir, peaks)
    (HERE / "results.json").write_text(json.dumps(results, indent=2))
    (HERE / "results.md").write_text(render(results))
    print(render(results))


if __name__ == "__main__":
    main()
