"""`benchmarks/bench.py --quick` as a smoke test: it runs end to end and writes every key. No timing is asserted."""

import importlib.util
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
    "onnx_speedup", "onnx_int8_speedup", "cache_check_over_read", "input_rows_per_second_streaming",
    "input_rows_per_second_device", "input_device_over_streaming", "checkpoint_bytes_per_save", "epoch_compute_share",
    "timeline_peak_mb", "timeline_seconds_per_audio_hour",
)  # fmt: skip
GOAL_KEYS = {
    "pipeline_over_backbones", "train_gemm_fraction", "extraction_rss_ratio", "extraction_shard_speedup",
    "extraction_bf16_speedup", "extraction_bf16_agreement", "train_bf16_fraction", "onnx_int8_speedup",
    "input_device_over_streaming", "checkpoint_backbone_bytes", "timeline_peak_mb",
}  # fmt: skip


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
    assert 0 <= results["checkpoint_backbone_bytes"] < results["checkpoint_bytes_per_save"]
    assert set(results["goals"]) == GOAL_KEYS
    for key in ("finetune_step_over_frozen", "finetune_peak_memory_mb"):  # one figure per fine-tuning mode
        modes = {"top_layers", "lora"} | ({"none"} if key == "finetune_peak_memory_mb" else set())
        assert set(results[key]) == modes, key
        assert all(math.isfinite(value) and value > 0 for value in results[key].values()), key
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


def test_benchmark_without_the_onnx_extra_skips_its_section_with_a_one_line_reason(tmp_path, monkeypatch, capsys):
    """`make bench` where onnxruntime is not installed: no traceback, one line saying why, and no ONNX figure left
    over from an earlier run in the results file."""
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench", bench)
    spec.loader.exec_module(bench)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` meets where it is missing
    monkeypatch.setattr(bench, "build_backbones", lambda root: {"real": None, "tiny": None})  # the section needs none
    output = tmp_path / "results.json"
    output.write_text(json.dumps({"onnx_speedup": 1.2, "onnx_int8_speedup": 1.9, "details": {}}))
    bench.main(["--only", "onnx", "--output", str(output)])
    results = json.loads(output.read_text())
    assert "onnx_speedup" not in results and "onnx_int8_speedup" not in results
    reason = "onnxruntime is not installed (the onnx extra: pip install -e '.[onnx]')"
    assert results["details"]["onnx"]["skipped"] == reason
    messages = capsys.readouterr().err
    onnx_lines = [line for line in messages.splitlines() if "onnx" in line]
    assert len(onnx_lines) == 1 and onnx_lines[0].endswith(f"onnx: skipped: {reason}"), messages
    assert "Traceback" not in messages
