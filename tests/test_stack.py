"""`dropship up` end to end: real servers, real workers, Flower, and a clean stop."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import requests

from dropship.embedded.system import free_port, service_user
from dropship.stack import READY_TIMEOUT_SECONDS
from tests.conftest import PROJECT_DIR

pytestmark = [pytest.mark.worker, pytest.mark.slow]


def _stack_env(data_dir: Path, flower_port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPSHIP_")}
    env.update(
        DROPSHIP_DATA_DIR=str(data_dir),
        DROPSHIP_FLOWER_PORT=str(flower_port),
        COLUMNS="200",
        **extra,
    )
    return env


def _processes_of(data_dir: Path) -> list[psutil.Process]:
    """Every process that belongs to the stack under data_dir (by cmdline or environment)."""
    found = []
    marker = str(data_dir)
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            env = proc.environ() if marker not in cmdline else {}
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if marker in cmdline or env.get("DROPSHIP_DATA_DIR") == marker:
            found.append(proc)
    return found


class RunningStack:
    def __init__(self, env: dict[str, str], log: Path, python: str = sys.executable) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [python, "-m", "dropship.cli", "up"],
            cwd=PROJECT_DIR,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started = time.monotonic()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS + 30) -> float:
        # The stack enforces its own readiness deadline (READY_TIMEOUT_SECONDS) and exits 1
        # when it is missed; this outer bound only catches a hung supervisor.
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            out = self.output()
            if "ready" in out and "Ctrl-C" in out:
                return time.monotonic() - self.started
            if self.proc.poll() is not None:
                pytest.fail(f"dropship up exited with {self.proc.returncode}:\n{out}")
            time.sleep(0.25)
        self.terminate()
        pytest.fail(f"dropship up not ready in {timeout} s:\n{self.output()}")

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


SHELL_SCRIPT = """
from tasks.maintenance import ensure_partitions
print("PARTITIONS", sorted(ensure_partitions.delay().get(timeout=30)["existing"]))
from dropship.platforms.registry import connector_for
product = next(iter(connector_for("domeggook_main").iter_products()))
print("CONNECTOR", type(product).__name__)
"""


def _check_who_runs_celery(data_dir: Path, out: str) -> None:
    """As root, Celery and Flower run as the service user when it can reach the interpreter and
    the project (then no superuser warning), else as root with a note saying why."""
    if os.geteuid() != 0:
        return
    service = service_user()
    celery = [p for p in _processes_of(data_dir) if "celery" in " ".join(p.cmdline())]
    assert celery, out
    uids = {p.uids().real for p in celery}
    logs = "".join((data_dir / "logs" / f"{n}.log").read_text() for n in ("worker-main", "beat"))
    if "workers, beat and Flower run as unprivileged user" in out:
        assert uids == {service.uid}, uids
        assert "superuser privileges" not in logs
    else:
        assert "superuser privileges" in logs  # what running them unprivileged avoids
        assert re.search(
            r"workers, beat and Flower run as root .*cannot reach", " ".join(out.split())
        ), out
        assert uids == {0}


def _check_shell_reaches_the_stack(data_dir: Path, flower_port: int) -> None:
    """A second terminal: `dropship shell` with no URLs finds the stack through its state file,
    enqueues a task that a worker runs, and reaches the stack's sandbox through a connector."""
    proc = subprocess.run(
        [sys.executable, "-m", "dropship.cli", "shell"],
        cwd=PROJECT_DIR,
        env=_stack_env(data_dir, flower_port),
        input=SHELL_SCRIPT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    out = proc.stdout + proc.stderr
    match = re.search(r"PARTITIONS \[(.*)\]", out)
    assert match, out
    assert match.group(1).count("orders_") == 4, out
    assert re.search(r"CONNECTOR (SupplierProduct|InvalidRecord)", out), out


def _check_budget_sees_the_stacks_accounts(data_dir: Path, flower_port: int) -> None:
    """`dropship budget` in a second terminal reports the accounts the stack's workers use (the
    sandbox's, when none are configured), not "no platform accounts configured"."""
    proc = subprocess.run(
        [sys.executable, "-m", "dropship.cli", "budget"],
        cwd=PROJECT_DIR,
        env=_stack_env(data_dir, flower_port),
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert re.search(r"domeggook:domeggook_main\b.*15,?000", out), out
    assert "no platform accounts configured" not in out


def test_up_embedded_servers_ready_flower_and_clean_stop(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    flower_port = free_port()
    stack = RunningStack(_stack_env(data_dir, flower_port), tmp_path / "up.log")
    try:
        stack.wait_ready()
        out = stack.output()
        assert "starting embedded PostgreSQL" in out and "starting embedded Redis" in out
        # Every service with its pid, the embedded servers included, and full URLs.
        for name in ("postgres", "redis (broker + results)"):
            assert re.search(rf"{re.escape(name)}\s*│\s*\S+://\S+\s*│\s*\d+\s*│", out), out
        for name in ("sandbox", "worker-main", "worker-high", "beat", "flower"):
            assert re.search(rf"│ {name}\s*│.*│\s*\d+\s*│", out), out
        assert f"http://127.0.0.1:{flower_port} " in out
        _check_who_runs_celery(data_dir, out)
        first_worker_log = (data_dir / "logs" / "worker-main.log").read_text()
        assert first_worker_log
        assert requests.get(f"http://127.0.0.1:{flower_port}/", timeout=5).status_code == 200
        # Flower's API stays closed without auth (README "Flower's API" says how to open it).
        api = requests.get(f"http://127.0.0.1:{flower_port}/api/workers", timeout=5)
        assert api.status_code == 401 and "FLOWER_UNAUTHENTICATED_API" in api.text
        _check_shell_reaches_the_stack(data_dir, flower_port)
        _check_budget_sees_the_stacks_accounts(data_dir, flower_port)
        # A second `up` on the same data folder refuses instead of fighting over it.
        second = subprocess.run(
            [sys.executable, "-m", "dropship.cli", "up"],
            cwd=PROJECT_DIR,
            env=_stack_env(data_dir, free_port()),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert "already running" in second.stdout + second.stderr
    finally:
        code = stack.terminate()
    assert code == 0, stack.output()
    assert "stopped postgres" in stack.output()
    markers = [data_dir]
    if os.geteuid() == 0:
        # tmp_path lies under a 0700 folder: the unprivileged server user cannot reach it, so
        # the data must have moved to a private temp folder, and start-up must say so.
        match = re.search(r"postgres data kept in (\S+):", stack.output())
        assert match, stack.output()
        markers.append(Path(match.group(1)))
    leftovers = [p for marker in markers for p in _processes_of(marker)]
    assert leftovers == [], [p.info for p in leftovers]

    # Data survives a restart: the partitions made on the first start already exist.
    again = RunningStack(_stack_env(data_dir, free_port()), tmp_path / "up2.log")
    try:
        again.wait_ready()
        assert "created partitions" not in again.output()
        # The first run's logs were kept, not overwritten.
        rotated = data_dir / "logs" / "worker-main.log.1"
        assert rotated.read_text().startswith(first_worker_log)
        assert (data_dir / "logs" / "postgres.log.1").exists()
    finally:
        assert again.terminate() == 0
    assert [p for marker in markers for p in _processes_of(marker)] == []


def test_up_with_configured_urls_starts_no_servers(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    data_dir = tmp_path / "data"
    flower_port = free_port()
    env = _stack_env(
        data_dir,
        flower_port,
        DROPSHIP_DATABASE_URL=database_url,
        DROPSHIP_REDIS_URL=redis_url,
        FLOWER_UNAUTHENTICATED_API="true",
    )
    stack = RunningStack(env, tmp_path / "up.log")
    try:
        stack.wait_ready()
        out = stack.output()
        assert "starting embedded" not in out
        assert re.search(r"redis://127\.0\.0\.1:\d+/\d", out)
        assert re.search(r"postgres\s*│\s*postgresql://\S+\s*│\s*external\s*│", out), out
        # The README's way to open Flower's API locally reaches Flower through `dropship up`.
        api = requests.get(f"http://127.0.0.1:{flower_port}/api/workers", timeout=10)
        assert api.status_code == 200, api.text
    finally:
        assert stack.terminate() == 0
    assert not (data_dir / "postgres").exists() and not (data_dir / "redis").exists()
    assert _processes_of(data_dir) == []


def test_up_stops_what_it_started_when_migrations_fail(tmp_path: Path, database_url: str) -> None:
    """A database that refuses our schema: clear error, exit 1, nothing left running."""
    data_dir = tmp_path / "data"
    bad_url = database_url.rsplit("/", 1)[0] + "/no_such_database"
    proc = subprocess.run(
        [sys.executable, "-m", "dropship.cli", "up", "--no-sandbox"],
        cwd=PROJECT_DIR,
        env=_stack_env(data_dir, free_port(), DROPSHIP_DATABASE_URL=bad_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "error:" in proc.stderr and "no_such_database" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _processes_of(data_dir) == []


def _reachable_python() -> str | None:
    """An interpreter of our minor version that the service user can run (e.g. the system's
    /usr/bin/python3.11, when ours lives under a 0700 /root)."""
    from dropship.embedded.system import can_reach

    name = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found = shutil.which(name, path="/usr/bin:/usr/local/bin:/opt/python/bin")
    if found and can_reach(Path(found).resolve(), service_user()):
        return found
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="privileges are dropped only as root")
def test_up_as_root_runs_celery_and_flower_unprivileged_when_python_is_reachable(
    tmp_path: Path,
) -> None:
    """The other branch of the decision: a virtualenv the service user can reach (a system
    Python plus this checkout's installed packages, all outside a 0700 home)."""
    python = _reachable_python()
    if python is None:
        pytest.skip("no Python of our version that the service user can reach")
    # Not tmp_path: pytest's base folder is 0700, which would hide the venv and data from it.
    base = Path(tempfile.mkdtemp(prefix="dropship-unprivileged-"))
    try:
        base.chmod(0o755)
        venv = base / "venv"
        subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True)
        venv_python = str(venv / "bin" / "python")
        purelib = Path(
            subprocess.check_output(
                [venv_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                text=True,
            ).strip()
        )
        # This checkout's packages (and its editable install, hence addsitedir, not a path).
        ours = sysconfig.get_paths()["purelib"]
        (purelib / "dropship-project.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
        if subprocess.run([venv_python, "-c", "import redis"], capture_output=True).returncode:
            # A system Python older than 3.11.3 makes redis-py import the async_timeout
            # backport, which our lock file (for newer Pythons) does not carry; the stdlib's
            # asyncio.timeout is the same context manager.
            (purelib / "async_timeout.py").write_text("from asyncio import timeout  # noqa\n")
        data_dir = base / "data"
        stack = RunningStack(_stack_env(data_dir, free_port()), tmp_path / "up.log", venv_python)
        try:
            stack.wait_ready()
            out = stack.output()
            assert "workers, beat and Flower run as unprivileged user" in out, out
            _check_who_runs_celery(data_dir, out)
            flower = [p for p in _processes_of(data_dir) if "flower" in " ".join(p.cmdline())]
            assert flower and {p.uids().real for p in flower} == {service_user().uid}
        finally:
            assert stack.terminate() == 0, stack.output()
        assert _processes_of(data_dir) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)
