"""What the benchmark runner's scenarios share, run.py's per-server ones and cluster.py's: where
the tools are, the cores everything is pinned to, the life of a server process (a free port,
waiting until it listens, stopping it), and how a report shows the median of some runs.
"""

from __future__ import annotations

import signal
import socket
import statistics
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SERVERS_DIR = HERE / "servers"
LOADGEN = HERE / "target" / "release" / "loadgen"
REFSERVER = HERE / "target" / "release" / "refserver"
VENV_PY = HERE / ".venv" / "bin" / "python"
SERVER_CORE, LOADGEN_CORE = "0", "1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port} within {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fmt(v: float | None, metric: str) -> str:
    if v is None:
        return "—"
    if "kib" in metric:
        return f"{v:,.1f}"
    return f"{v:,.0f}"


def median_of(results: list[dict], key: str) -> float | None:
    vals = [r[key] for r in results if key in r and r.get("error") is None and r[key] is not None]
    return statistics.median(vals) if vals else None
