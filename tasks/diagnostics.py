"""Diagnostics (queue ``low``): prove a worker consumes and answers, from a shell or a test."""

from __future__ import annotations

import os
from typing import Any

from dropship.celery_app import DropshipTask, app


@app.task(bind=True, name="tasks.diagnostics.ping")
def ping(self: DropshipTask, value: str = "pong") -> dict[str, Any]:
    """Echo ``value`` with the worker's pid and the queue the message came from."""
    delivery = self.request.delivery_info or {}
    return {"value": value, "pid": os.getpid(), "queue": delivery.get("routing_key")}


@app.task(bind=True, name="tasks.diagnostics.check_account")
def check_account(self: DropshipTask, account_name: str) -> dict[str, Any]:
    """One authenticated call to ``account_name`` through its connector and the shared limiter.

    When the limiter says the next slot is more than a second away, the task is re-scheduled
    (state RETRY in Flower) instead of holding its worker slot.
    """
    from dropship.platforms.health import check_account as run_check

    return run_check(account_name)
