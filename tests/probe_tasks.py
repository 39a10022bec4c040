"""Tasks that only tests load (``celery worker ... -I tests.probe_tasks``): each records when it
started and finished in Redis, in the task's own process, so tests measure what really ran.

Their names follow the real routes (``TASK_ROUTES``): ``tasks.orders.*`` goes to ``high`` and
``tasks.diagnostics.*`` to ``low``, exactly like production tasks of those areas.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis

from dropship.celery_app import DropshipTask, app

PROBE_KEY = "probe:{tag}"


def _record(tag: str, event: str, task: DropshipTask, **extra: Any) -> None:
    client = redis.Redis.from_url(os.environ["DROPSHIP_REDIS_URL"])
    try:
        entry = {
            "event": event,
            "t": time.time(),
            "pid": os.getpid(),
            "hostname": task.request.hostname,
            "queue": (task.request.delivery_info or {}).get("routing_key"),
            **extra,
        }
        client.rpush(PROBE_KEY.format(tag=tag), json.dumps(entry))
    finally:
        client.close()


@app.task(bind=True, name="tasks.diagnostics.probe_bulk")
def probe_bulk(self: DropshipTask, tag: str, seconds: float, n: int = 0) -> None:
    """Bulk work stand-in (queue ``low``): holds its pool child for ``seconds``."""
    _record(tag, "start", self, n=n)
    time.sleep(seconds)
    _record(tag, "end", self, n=n)


@app.task(bind=True, name="tasks.orders.probe_order")
def probe_order(self: DropshipTask, tag: str, n: int = 0) -> None:
    """Order work stand-in (queue ``high``): records that it started."""
    _record(tag, "start", self, n=n)


def probe_events(client: redis.Redis, tag: str) -> list[dict[str, Any]]:
    raw: list[bytes] = client.lrange(PROBE_KEY.format(tag=tag), 0, -1)  # type: ignore[assignment]
    return [json.loads(item) for item in raw]
