"""Where the running stack's services are.

Configured URLs win. Without them, ``dropship up`` publishes the embedded servers' URLs in
``<data_dir>/run/stack.json`` so a second terminal (``dropship shell``, ``celery inspect``) finds
the same stack without the user copying ports around.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psutil
from kombu.transport import TRANSPORT_ALIASES, virtual

from dropship.settings import get_settings

STATE_FILE = "stack.json"

NO_BROKER_MESSAGE = (
    "no broker configured: DROPSHIP_REDIS_URL is not set and no running stack was found "
    "(start one with `dropship up`, or set DROPSHIP_REDIS_URL=redis://host:6379/0)"
)
# The broker URL Celery gets when there is none: its transport refuses to connect, naming the
# variable, rather than Celery falling back to amqp://guest@localhost.
UNCONFIGURED_BROKER_URL = "dropship-unconfigured://"


class BrokerNotConfiguredError(RuntimeError):
    """Raised on the first broker connection when no broker URL is known. Not one of the
    transport's ``connection_errors``, so kombu and Celery do not retry it forever."""


class UnconfiguredTransport(virtual.Transport):
    driver_type = driver_name = "dropship-unconfigured"

    def establish_connection(self) -> Any:
        raise BrokerNotConfiguredError(NO_BROKER_MESSAGE)

    def driver_version(self) -> str:
        return "n/a"


TRANSPORT_ALIASES["dropship-unconfigured"] = f"{__name__}:UnconfiguredTransport"


def state_path() -> Path:
    return get_settings().data_dir / "run" / STATE_FILE


def read_stack_state() -> dict[str, Any] | None:
    path = state_path()
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if not _same_process_alive(state.get("pid"), state.get("pid_started_at")):
        return None
    return state


def write_stack_state(state: dict[str, Any]) -> None:
    """Publish ``state`` for the current process (its pid and start time are added)."""
    me = psutil.Process()
    state = {**state, "pid": me.pid, "pid_started_at": me.create_time()}
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.chmod(0o600)  # URLs may carry passwords
    tmp.replace(path)


def clear_stack_state() -> None:
    state_path().unlink(missing_ok=True)


def _same_process_alive(pid: object, started_at: object) -> bool:
    """Is the process that wrote the state still running? Pid and start time together: after a
    crash or reboot the pid may belong to an unrelated process, which must not count."""
    if not isinstance(pid, int) or not isinstance(started_at, int | float):
        return False
    try:
        return abs(psutil.Process(pid).create_time() - started_at) < 1.0
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True


def resolved_database_url() -> str | None:
    configured = get_settings().database_url_value()
    if configured:
        return configured
    state = read_stack_state()
    return state.get("database_url") if state else None


def resolved_redis_url() -> str | None:
    configured = get_settings().redis_url_value()
    if configured:
        return configured
    state = read_stack_state()
    return state.get("redis_url") if state else None


def resolved_result_backend_url() -> str | None:
    settings = get_settings()
    if settings.result_backend_url:
        return settings.result_backend_url.get_secret_value()
    return resolved_redis_url()
