"""Settings: defaults, nested env variables, and errors that name the variable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dropship.settings import Settings, SettingsError, load_settings
from tests.conftest import PROJECT_DIR


def test_nested_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROPSHIP_PARTITIONS__MONTHS_AHEAD", "6")
    monkeypatch.setenv("DROPSHIP_CELERY__AUTOSCALE_MAX", "8")
    settings = load_settings()
    assert settings.partitions.months_ahead == 6
    assert settings.celery.autoscale_max == 8


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DROPSHIP_FLOWER_PORT", "not-a-port"),
        ("DROPSHIP_PARTITIONS__MONTHS_AHEAD", "0"),
        ("DROPSHIP_LOG_LEVEL", "LOUD"),
    ],
)
def test_invalid_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()


def test_time_limits_must_stay_below_visibility_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROPSHIP_CELERY__HARD_TIME_LIMIT", "7200")
    with pytest.raises(SettingsError, match="DROPSHIP_CELERY") as info:
        load_settings()
    assert "visibility_timeout" in str(info.value)


def test_secrets_are_not_shown_in_repr() -> None:
    settings = Settings(database_url="postgresql://u:hunter2@db/x")  # type: ignore[arg-type]
    assert "hunter2" not in repr(settings)
    assert settings.database_url_value() == "postgresql://u:hunter2@db/x"


def test_cli_refuses_to_start_with_invalid_settings() -> None:
    env = dict(os.environ, DROPSHIP_FLOWER_PORT="99999")
    proc = subprocess.run(
        [sys.executable, "-m", "dropship.cli", "status"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "DROPSHIP_FLOWER_PORT" in proc.stderr


def test_stale_stack_state_with_a_reused_pid_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state file left by a crashed stack whose pid now belongs to another program."""
    from dropship import runtime
    from dropship.settings import get_settings

    monkeypatch.setenv("DROPSHIP_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DROPSHIP_REDIS_URL")
    get_settings.cache_clear()
    try:
        runtime.write_stack_state({"redis_url": "redis://127.0.0.1:1/0"})
        assert runtime.resolved_redis_url() == "redis://127.0.0.1:1/0"
        state = json.loads(runtime.state_path().read_text())
        other = subprocess.Popen(["sleep", "30"])
        try:
            # Same file, but its pid now names another process (as after a crash and pid reuse).
            state["pid"] = other.pid
            runtime.state_path().write_text(json.dumps(state))
            assert runtime.read_stack_state() is None
            assert runtime.resolved_redis_url() is None
        finally:
            other.kill()
            other.wait()
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DROPSHIP_DATABASE_URL", "not a url at all"),
        ("DROPSHIP_DATABASE_URL", "mysql://u:s3cret-pw@db:3306/shop"),
        ("DROPSHIP_DATABASE_URL", "postgresql+psycopg2://u:s3cret-pw@db/shop"),
        ("DROPSHIP_DATABASE_URL", "postgresql://u:s3cret-pw@db:port/shop"),
        ("DROPSHIP_REDIS_URL", "amqp://guest:s3cret-pw@localhost//"),
        ("DROPSHIP_REDIS_URL", "localhost:6379"),
        ("DROPSHIP_REDIS_URL", "redis://:s3cret-pw@cache:99999/0"),
        ("DROPSHIP_REDIS_URL", "redis://:s3cret-pw@cache:6379/zero"),
        ("DROPSHIP_RESULT_BACKEND_URL", "rpc://"),
    ],
)
def test_bad_server_url_names_the_variable_and_hides_the_password(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name) as info:
        load_settings()
    assert "s3cret-pw" not in str(info.value)


@pytest.mark.parametrize(
    "value",
    ["postgresql://u:p@db:5432/x", "postgres://db/x", "postgresql+psycopg://db/x"],
)
def test_supported_database_urls_are_accepted(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DROPSHIP_DATABASE_URL", value)
    assert load_settings().database_url_value() == value


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DROPSHIP_DATABASE_URL", "mysql://u:pw@127.0.0.1/shop"),
        ("DROPSHIP_REDIS_URL", "amqp://guest@127.0.0.1//"),
    ],
)
def test_up_with_a_bad_url_stops_before_any_server_starts(
    tmp_path: Path, name: str, value: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPSHIP_")}
    env.update({"DROPSHIP_DATA_DIR": str(tmp_path / "data"), name: value})
    proc = subprocess.run(
        [sys.executable, "-m", "dropship.cli", "up"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert name in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "starting" not in proc.stdout
    assert not (tmp_path / "data").exists()  # no server data, logs or state were created


def test_celery_with_a_bad_url_names_the_variable_without_a_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPSHIP_")}
    env.update(DROPSHIP_DATA_DIR=str(tmp_path), DROPSHIP_REDIS_URL="amqp://guest@127.0.0.1//")
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "dropship.celery_app", "worker"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "DROPSHIP_REDIS_URL" in proc.stderr and "Traceback" not in proc.stderr
