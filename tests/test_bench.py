"""`benchmarks/bench.py --quick` as a smoke test: it runs end to end and writes every key. No timing is asserted."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"
KEYS = (
    "pipeline_over_backbones", "train_gemm_fraction", "extraction_rss_ratio", "long_audio_peak_mb",
    "extraction_shard_speedup", "extraction_bf16_speedup", "extraction_bf16_agreement", "train_bf16_fraction",
    "onnx_speedup", "onnx_int8_speedup", "cache_check_over_read",
)  # fmt: skip


@pytest.mark.slow
def test_quick_benchmark_writes_every_key_with_its_machine_and_settings(tmp_path):
    output = tmp_path / "results.json"
    environment = {**os.environ, "HF_HOME": str(tmp_path / "hf_home")}
    completed = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--output", str(output)],
        env=environment, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(output.read_text())
    assert results["mode"] == "quick"
    for key in KEYS:
        assert math.isfinite(results[key]) and results[key] > 0, key
    assert set(results["goals"]) == set(KEYS) - {"long_audio_peak_mb", "onnx_speedup", "cache_check_over_read"}
    assert 0 <= results["details"]["onnx"]["onnx_int8_top1_agreement"] <= 1
    assert results["cache_bytes_per_utterance"] > 0
    assert results["machine"]["torch_threads"] >= 1 and results["machine"]["cpu_model"]
    assert results["settings"]["extraction_backbones"] == "tiny"
    assert results["details"]["gpu"].get("skipped") or results["details"]["gpu"]["extraction_utterances_per_second"] > 0
    # The CPU's matmul capabilities beside every figure, and the bf16 speed goal judged only where AMX makes it one.
    for section in ("training", "shard", "bf16"):
        capabilities = results["details"][section]["machine"]["cpu_matmul"]
        assert {"amx_bf16", "avx512_bf16", "torch_cpu_capability"} <= set(capabilities)
    assert results["details"]["training"]["batch_size"] == 32  # the paper's batch, even in quick mode
    bf16_goal = results["goals"]["extraction_bf16_speedup"]
    assert (bf16_goal["met"] is None) == (not results["machine"]["cpu_matmul"]["amx_bf16"]), bf16_goal


def test_gpu_check_refuses_clearly_without_a_gpu():
    """The GPU check is for a CUDA machine; here (the CI has no GPU) it must stop at once and say why."""
    completed = subprocess.run(
        ["bash", str(BENCH.parent / "gpu_check.sh")], env={**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 2
    assert "sees no CUDA device" in completed.stderr and "needs one GPU" in completed.stderr
