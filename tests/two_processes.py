"""Two CPU processes of one run, started by `accelerate launch` over gloo: for the tests of what a multi-process run
shares (its feature cache)."""

import os
import socket
import subprocess
import sys
from pathlib import Path


def launch_two_processes(script: Path, *arguments: str) -> subprocess.CompletedProcess:
    """Run `script` with `arguments` in two gloo processes of one thread each; stdout and stderr merged."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
    ]  # fmt: skip
    return subprocess.run(
        [*launch, str(script), *arguments], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False,  # the callers read the output of a failure
    )  # fmt: skip
