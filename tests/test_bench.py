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
    "pipeline_over_backbones", "train_gemm_fraction", "extraction_rss_ratio", "long_audio_peak_mb", "onnx_speedup",
    "onnx_int8_speedup",
)


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
    assert set(results["goals"]) == set(KEYS) - {"long_audio_peak_mb", "onnx_speedup"}
    assert 0 <= results["details"]["onnx"]["onnx_int8_top1_agreement"] <= 1
    assert results["cache_bytes_per_utterance"] > 0
    assert results["machine"]["torch_threads"] >= 1 and results["machine"]["cpu_model"]
    assert results["settings"]["extraction_backbones"] == "tiny"
    assert results["details"]["gpu"].get("skipped") or results["details"]["gpu"]["extraction_utterances_per_second"] > 0
