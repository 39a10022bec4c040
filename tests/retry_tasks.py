"""Tasks used only by tests/test_retries.py, loaded into a real worker with ``--include``.

Each run of ``scripted`` pops its next step from a Redis list and records what the base task
told it (Celery's ``retries`` and our two budget counts), so a test can script "rate-limited 10
times, then two transient failures, then success" and check every hop.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import psycopg
import redis

from dropship.celery_app import (
    BUDGET_WAITS_HEADER,
    RATE_LIMIT_RETRIES_HEADER,
    TRANSIENT_RETRIES_HEADER,
    DropshipTask,
    app,
)
from dropship.errors import BudgetExhaustedError, RateLimitedError, TransientError
from dropship.platforms.ratelimit import RateLimit, RateLimiter


class FastRetryTask(DropshipTask):
    """The production base task with short delays, so a test can walk a dozen re-schedules."""

    abstract = True
    backoff_base_s = 0.02
    rate_limit_jitter_s = 0.05


def _record(client: redis.Redis, key: str, task: DropshipTask, step: str) -> None:
    counts = task.retry_counts()
    client.rpush(
        f"{key}:log",
        json.dumps(
            {
                "step": step,
                "retries": task.request.retries,
                "rate_limit": counts[RATE_LIMIT_RETRIES_HEADER],
                "transient": counts[TRANSIENT_RETRIES_HEADER],
                "budget": counts[BUDGET_WAITS_HEADER],
            }
        ),
    )


def _scripted(
    self: DropshipTask, key: str, broker_url: str, closed_port: int = 9
) -> dict[str, Any]:
    client = redis.Redis.from_url(broker_url)
    try:
        raw = client.lpop(key)
        step = raw.decode() if isinstance(raw, bytes) else "ok"
        _record(client, key, self, step)
    finally:
        client.close()
    if step == "rate":
        raise RateLimitedError("test: platform says wait", retry_after=0.05)
    if step == "rate-progress":  # a batch that got part of its work done before the wait
        raise RateLimitedError("test: platform says wait", retry_after=0.05, progressed=True)
    if step == "budget":
        raise BudgetExhaustedError(
            "test: daily budget spent", retry_after=0.0, resets_at=datetime.now(UTC)
        )
    if step == "transient":
        raise TransientError("test: platform hiccup")
    if step == "psycopg":
        # psycopg without SQLAlchemy: its message names host, port and user.
        psycopg.connect(
            f"postgresql://secret_user@127.0.0.1:{closed_port}/db", connect_timeout=2
        ).close()
    return {"step": step, "retries": self.request.retries, **self.retry_counts()}


scripted = app.task(bind=True, base=FastRetryTask, name="tests.retry_tasks.scripted")(_scripted)
# Small rate-limit and daily-budget budgets, so spending them is quick (and shallow in eager
# mode, where every retry nests a call).
scripted_small_budgets = app.task(
    bind=True,
    base=FastRetryTask,
    name="tests.retry_tasks.scripted_small_budgets",
    max_rate_limit_retries=3,
    max_budget_waits=2,
)(_scripted)


@app.task(bind=True, base=FastRetryTask, name="tests.retry_tasks.limited_call")
def limited_call(self: DropshipTask, limiter_url: str, key: str, broker_url: str) -> float:
    """Acquire one limiter slot in the Redis at ``limiter_url``; announce each attempt first."""
    marks = redis.Redis.from_url(broker_url)
    try:
        marks.rpush(f"{key}:attempts", self.request.retries)
    finally:
        marks.close()
    client = redis.Redis.from_url(limiter_url, socket_timeout=5, socket_connect_timeout=1)
    try:
        limiter = RateLimiter(client, {"coupang": RateLimit(1000, 1.0)})
        return limiter.acquire(key)
    finally:
        client.close()
