"""Start real ``celery worker`` subprocesses from a full command line and ask them for stats."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
# The probe tasks are imported by the worker next to the app's own modules.
PROBE_INCLUDE = ["-I", "tests.probe_tasks"]


@dataclass
class RunningWorker:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def spawn(name: str, args: list[str], log_dir: Path, env: dict[str, str]) -> RunningWorker:
    log_path = log_dir / f"{name}.log"
    proc = subprocess.Popen(
        args,
        cwd=PROJECT_DIR,
        env={**os.environ, **env},
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return RunningWorker(name, proc, log_path)


def wait_ready(worker: RunningWorker, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            raise RuntimeError(f"{worker.name} exited early:\n{worker.log()[-3000:]}")
        if " ready." in worker.log():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{worker.name} not ready in {timeout:.0f} s:\n{worker.log()[-3000:]}")


def stop(worker: RunningWorker) -> None:
    if worker.proc.poll() is None:
        os.killpg(worker.proc.pid, signal.SIGTERM)
        try:
            worker.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.proc.pid, signal.SIGKILL)
            worker.proc.wait()
    # Pool children that outlived their parent are in the same group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.proc.pid, signal.SIGKILL)


def node_name(app: Any, prefix: str, timeout: float = 30.0) -> str:
    """The full node name (``main@<host>``) of the running worker named ``prefix@...``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for reply in app.control.ping(timeout=1.0) or []:
            for name in reply:
                if name.startswith(prefix + "@"):
                    return str(name)
    raise RuntimeError(f"no worker {prefix}@... answered ping in {timeout:.0f} s")


def stats(app: Any, node: str) -> dict[str, Any]:
    """``celery inspect stats`` of one worker; retried because a busy worker may answer late."""
    for _ in range(10):
        reply = app.control.inspect(destination=[node], timeout=2.0).stats() or {}
        if node in reply:
            return dict(reply[node])
    raise RuntimeError(f"{node} did not answer inspect stats")


def pool_size(app: Any, node: str) -> int:
    return len(stats(app, node)["pool"]["processes"])
