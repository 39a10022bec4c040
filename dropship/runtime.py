"""Where the running stack's services are.

Configured URLs win. Without them, ``dropship up`` publishes the embedded servers' URLs in
``<data_dir>/run/stack.json`` so a second terminal (``dropship shell``, ``celery inspect``) finds
the same stack without the user copying ports around.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dropship.settings import get_settings

STATE_FILE = "stack.json"


def state_path() -> Path:
    return get_settings().data_dir / "run" / STATE_FILE


def read_stack_state() -> dict[str, Any] | None:
    path = state_path()
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    pid = state.get("pid")
    if not isinstance(pid, int) or not _pid_alive(pid):
        return None
    return state


def write_stack_state(state: dict[str, Any]) -> None:
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.chmod(0o600)  # URLs may carry passwords
    tmp.replace(path)


def clear_stack_state() -> None:
    state_path().unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
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
