"""Parts of `dropship up` that need no running stack: log rotation, the service table, and who
the Celery processes run as."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from dropship.embedded.system import RunAs, service_user
from dropship.settings import Settings
from dropship.stack import Child, Stack, choose_children_run_as, rotate_log


def test_rotate_log_keeps_the_last_n_runs(tmp_path: Path) -> None:
    log = tmp_path / "worker-main.log"
    for run in range(1, 6):
        rotate_log(log, keep=3)
        log.write_text(f"run {run}\n")
    assert log.read_text() == "run 5\n"
    kept = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert kept == {
        "worker-main.log": "run 5\n",
        "worker-main.log.1": "run 4\n",
        "worker-main.log.2": "run 3\n",
        "worker-main.log.3": "run 2\n",
    }


def test_rotate_log_skips_empty_and_missing_logs(tmp_path: Path) -> None:
    log = tmp_path / "beat.log"
    rotate_log(log, keep=3)  # nothing there yet
    log.touch()
    rotate_log(log, keep=3)  # an empty log is not a run worth keeping
    assert sorted(p.name for p in tmp_path.iterdir()) == ["beat.log"]
    log.write_text("x")
    rotate_log(log, keep=0)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "30"])
    yield proc
    proc.kill()
    proc.wait()


def _where_column(text: str) -> str:
    """The 'where' cells of a rich table, folded lines joined back together."""
    cells = [line.split("│")[2].strip() for line in text.splitlines() if line.count("│") >= 4]
    return "".join(cells)


def test_service_table_shows_full_urls_and_every_pid_in_a_narrow_terminal(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    console = Console(width=60, record=True, color_system=None)
    stack = Stack(Settings(data_dir=tmp_path), console)  # type: ignore[call-arg]
    stack.database_url = "postgresql://postgres:pw@127.0.0.1:45678/dropship"
    stack.redis_url = "redis://127.0.0.1:45679/0"
    stack.server_pids = {"postgres": 1111, "redis": 2222}
    flower_url = "http://127.0.0.1:55555/some/rather/long/path/to/flower"
    stack.children.append(Child("flower", sleeper, flower_url, tmp_path / "flower.log"))
    stack._print_summary(1.0)
    text = console.export_text()
    assert "…" not in text  # nothing truncated
    where = _where_column(text)
    assert "postgresql://postgres:***@127.0.0.1:45678/dropship" in where, text
    assert "redis://127.0.0.1:45679/0" in where and flower_url in where, text
    for pid in ("1111", "2222", str(sleeper.pid), str(os.getpid())):
        assert pid in text, text


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="privileges are dropped only as root")


@root_only
def test_celery_runs_as_the_service_user_when_it_can_reach_everything() -> None:
    service = service_user()
    base = Path(tempfile.mkdtemp(prefix="dropship-reach-"))
    try:
        base.chmod(0o755)
        (base / "opt").mkdir(mode=0o755)
        (base / "home").mkdir(mode=0o700)
        (base / "home" / "venv").mkdir()
        run_as, note = choose_children_run_as(service, [base / "opt"])
        assert run_as == service and run_as.is_other
        assert "unprivileged" in note
        # A virtualenv under a 0700 home: the service user could not start Python there.
        run_as, note = choose_children_run_as(service, [base / "opt", base / "home" / "venv"])
        assert not run_as.is_other
        assert str(base / "home" / "venv") in note and service.name in note
    finally:
        shutil.rmtree(base)


def test_not_root_children_run_as_ourselves(tmp_path: Path) -> None:
    stack = Stack(Settings(data_dir=tmp_path), Console(record=True))  # type: ignore[call-arg]
    run_as = stack.children_run_as()
    if os.geteuid() != 0:
        assert run_as == RunAs(run_as.name) and not run_as.is_other
        assert stack.notes == []
    else:
        assert len(stack.notes) == 1  # root: the decision is always stated
