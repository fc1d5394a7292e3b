"""What a result was measured with: the CPU and its matrix-multiply capabilities, the GPU, the package versions and
the code's git commit. `benchmarks/bench.py` records the machine with every timing, `reproduce.py` all of it as
`env.json` beside its results, so a number can be traced to the machine and code that made it."""

from __future__ import annotations

import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

BF16_CPU_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512_fp16")
"""/proc/cpuinfo flags that say whether this CPU multiplies bf16 matrices in hardware: AMX tiles (Sapphire Rapids
and later) make bf16 GEMMs several times faster than fp32; AVX512-BF16 only has dot-product instructions."""

RECORDED_PACKAGES = ("torch", "transformers", "datasets", "accelerate", "evaluate", "numpy", "scipy")
"""The packages whose versions can change a trained model's numbers."""


def read_cpuinfo() -> str:
    """/proc/cpuinfo, or "" where there is none (macOS, Windows)."""
    path = Path("/proc/cpuinfo")
    return path.read_text() if path.exists() else ""


def cpu_model(cpuinfo: str) -> str:
    """The CPU's name as `lscpu` gives it ("Model name"), from /proc/cpuinfo where there is one."""
    models = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo, flags=re.MULTILINE)
    return models[0] if models else platform.processor()


def cpu_matmul_capabilities(cpuinfo: str) -> dict[str, Any]:
    """The CPU's matmul-relevant instruction sets, from its flags and from what PyTorch dispatches to."""
    flags = set(re.findall(r"^flags\s*:\s*(.+)$", cpuinfo, flags=re.MULTILINE)[0].split()) if cpuinfo else set()
    return {
        **{flag: flag in flags for flag in BF16_CPU_FLAGS},
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_matrix_units": "amx_bf16" in flags,
    }


def gpu_name() -> str | None:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def git_state(directory: Path) -> dict[str, Any]:
    """The commit checked out at `directory` and whether the work tree differs from it (untracked files count);
    None for both outside a git work tree or without git."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(directory), "status", "--porcelain"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status.strip())}


def environment_record(code_directory: Path, num_processes: int, command: list[str]) -> dict[str, Any]:
    """Everything but the data that a rerun needs to match: code, packages, Python, machine, process count and the
    command line."""
    cpuinfo = read_cpuinfo()
    return {
        "git": git_state(code_directory),
        "packages": {name: metadata.version(name) for name in RECORDED_PACKAGES},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(cpuinfo),
        "cpu_matmul": cpu_matmul_capabilities(cpuinfo),
        "gpu": gpu_name(),
        "num_processes": num_processes,
        "command": [Path(sys.executable).name, *command],
    }
