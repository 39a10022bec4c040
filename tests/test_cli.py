"""The dropship command against the test database and Redis (real subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import dropship
from dropship.embedded.system import free_port
from dropship.migrate import head_revision
from tests.conftest import PROJECT_DIR


def _dropship(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dropship.cli", *args],
        cwd=PROJECT_DIR,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_db_upgrade_is_idempotent_and_reports_head() -> None:
    first = _dropship("db", "upgrade")
    assert first.returncode == 0, first.stderr
    second = _dropship("db", "upgrade")
    assert second.returncode == 0, second.stderr
    assert f"schema at {head_revision()}" in second.stdout
    assert "partitions created: []" in second.stdout
    current = _dropship("db", "current")
    assert f"applied: {head_revision()}" in current.stdout


def test_partitions_list_shows_current_and_next_months() -> None:
    ensure = _dropship("partitions", "ensure")
    assert ensure.returncode == 0, ensure.stderr
    listed = _dropship("partitions", "list")
    assert listed.returncode == 0, listed.stderr
    assert len([line for line in listed.stdout.splitlines() if line.startswith("orders_")]) >= 4


def test_status_shows_the_three_queues() -> None:
    status = _dropship("status")
    assert status.returncode == 0, status.stderr
    for queue in ("high", "medium", "low"):
        assert queue in status.stdout


def _isolated_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No configured servers and an empty data folder (no running stack to find)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPSHIP_")}
    # A narrow terminal: the error must still be one line.
    env.update(DROPSHIP_DATA_DIR=str(tmp_path), COLUMNS="60", **extra)
    return env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dropship.cli", *args],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


COMMANDS = [["status"], ["db", "current"], ["partitions", "list"]]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_command_without_configured_servers_prints_one_line(
    tmp_path: Path, args: list[str]
) -> None:
    proc = _run(args, _isolated_env(tmp_path))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "DROPSHIP_" in lines[0] or "dropship up" in lines[0]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_command_with_unreachable_server_prints_one_line(tmp_path: Path, args: list[str]) -> None:
    closed = free_port()  # nothing listens there
    env = _isolated_env(
        tmp_path,
        DROPSHIP_DATABASE_URL=f"postgresql://u:s3cret-pw@127.0.0.1:{closed}/x",
        DROPSHIP_REDIS_URL=f"redis://:s3cret-pw@127.0.0.1:{closed}/0",
    )
    proc = _run(args, env)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "unreachable" in lines[0] and str(closed) in lines[0]
    assert "s3cret-pw" not in proc.stderr


def test_celery_command_without_broker_says_so(tmp_path: Path) -> None:
    """Not Celery's silent default amqp://localhost: the error names the variable."""
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "dropship.celery_app", "inspect", "ping"],
        cwd=tmp_path,
        env=_isolated_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "DROPSHIP_REDIS_URL" in out, out
    assert "No nodes replied" not in out


def test_version() -> None:
    proc = _dropship("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"dropship {dropship.__version__}"


def test_upgrade_and_downgrade_take_a_positional_revision() -> None:
    down = _dropship("db", "downgrade", "base")
    assert down.returncode == 0, down.stderr
    assert "schema at None" in down.stdout
    up = _dropship("db", "upgrade", head_revision() or "head")
    assert up.returncode == 0, up.stderr
    assert f"schema at {head_revision()}" in up.stdout
    for command in ("upgrade", "downgrade"):
        usage = _dropship("db", command, "--help").stdout
        assert f"db {command} [OPTIONS] [REV]" in usage, usage


def test_status_help_describes_what_it_shows() -> None:
    help_text = " ".join(_dropship("status", "--help").stdout.split())
    shown = _dropship("status").stdout
    assert "partitions" not in help_text  # it does not show partitions
    assert "Queue depths" in help_text and "queues each running worker consumes" in help_text
    assert "queues" in shown and "waiting" in shown
