"""The base task's retry budgets and error mapping, with real worker processes.

* Rate-limit re-schedules and transient failures are counted apart (message headers), so a task
  rate-limited more than 8 times still has its whole transient budget, and its backoff grows
  with transient failures only.
* A spent daily budget re-schedules without spending either budget.
* A spent budget ends in FAILURE with ``RetriesExhaustedError`` naming it, with no driver
  exception chained to it.
* psycopg and Redis connection failures become retries; a limiter whose Redis is killed mid-call
  retries and succeeds once Redis is back.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from celery.result import AsyncResult
from sqlalchemy import Engine

from dropship.celery_app import app
from dropship.embedded.redis import EmbeddedRedis
from dropship.embedded.system import free_port
from dropship.errors import RetriesExhaustedError
from tests.conftest import WorkerProcess, start_worker, stop_worker
from tests.own_redis import kill, own_redis_server

pytestmark = pytest.mark.worker


def start_test_worker(tmp_path: Path, name: str = "retries") -> WorkerProcess:
    """A real ``celery worker`` (one slot) that also loads ``tests.retry_tasks``."""
    return start_worker(
        tmp_path,
        queues="high,medium,low",
        concurrency=1,
        name=name,
        extra_args=("--include", "tests.retry_tasks"),
    )


@pytest.fixture
def retry_worker(tmp_path: Path, redis_url: str, committed_db: Engine) -> Iterator[WorkerProcess]:
    worker = start_test_worker(tmp_path)
    try:
        yield worker
    finally:
        stop_worker(worker)


def script(client: redis_lib.Redis, steps: list[str]) -> str:
    key = f"script:{uuid.uuid4().hex[:8]}"
    if steps:
        client.rpush(key, *steps)
    return key


def hops(client: redis_lib.Redis, key: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in client.lrange(f"{key}:log", 0, -1)]


def test_rate_limited_more_than_8_times_then_transient_still_retries_and_succeeds(
    retry_worker: WorkerProcess, redis_client: redis_lib.Redis, redis_url: str
) -> None:
    from tests.retry_tasks import scripted

    steps = ["rate"] * 10 + ["transient"] * 3
    key = script(redis_client, steps)
    result = scripted.delay(key, redis_url).get(timeout=90)
    assert result["step"] == "ok", result
    log = hops(redis_client, key)
    assert [h["step"] for h in log] == [*steps, "ok"]
    # Each budget counts only its own kind; Celery's retries is the total.
    assert [h["rate_limit"] for h in log] == [*range(11), 10, 10, 10]
    assert [h["transient"] for h in log] == [0] * 11 + [1, 2, 3]
    assert [h["retries"] for h in log] == list(range(14))
    # Backoff grows from the transient count only: transient retry n waited at most
    # base * 2^n with base 0.02 s (after 10 rate-limit hops a backoff from the total count would
    # be 10-20 s). Celery logs each chosen delay.
    delays = [
        float(line.split("Retry in ")[1].split("s:")[0])
        for line in retry_worker.log().splitlines()
        if "Retry in " in line and "TransientError" in line
    ]
    assert len(delays) == 3
    assert delays[0] <= 0.02 and delays[1] <= 0.04 and delays[2] <= 0.08, delays


def test_spent_transient_budget_fails_with_a_clear_message(
    retry_worker: WorkerProcess, redis_client: redis_lib.Redis, redis_url: str
) -> None:
    from tests.retry_tasks import scripted

    key = script(redis_client, ["transient"] * 9 + ["ok"])
    async_result = scripted.delay(key, redis_url)
    with pytest.raises(RetriesExhaustedError) as caught:
        async_result.get(timeout=120)
    message = str(caught.value)
    assert message == (
        "tests.retry_tasks.scripted: gave up after 8 transient retries; "
        "last error: TransientError: test: platform hiccup"
    )
    assert AsyncResult(async_result.id, app=app).state == "FAILURE"
    assert [h["transient"] for h in hops(redis_client, key)] == list(range(9))
    assert redis_client.lrange(key, 0, -1) == [b"ok"]  # the 10th run never happened


def test_daily_budget_waits_spend_neither_budget(
    retry_worker: WorkerProcess, redis_client: redis_lib.Redis, redis_url: str
) -> None:
    from tests.retry_tasks import scripted

    key = script(redis_client, ["budget", "budget", "rate", "transient"])
    assert scripted.delay(key, redis_url).get(timeout=60)["step"] == "ok"
    log = hops(redis_client, key)
    assert [(h["budget"], h["rate_limit"], h["transient"]) for h in log] == [
        (0, 0, 0), (1, 0, 0), (2, 0, 0), (2, 1, 0), (2, 1, 1),
    ]  # fmt: skip


def test_psycopg_connection_error_retries_and_never_leaks_the_url(
    retry_worker: WorkerProcess, redis_client: redis_lib.Redis, redis_url: str
) -> None:
    from tests.retry_tasks import scripted

    closed_port = free_port()
    key = script(redis_client, ["psycopg", "psycopg"])
    assert scripted.delay(key, redis_url, closed_port).get(timeout=60)["step"] == "ok"
    assert [h["transient"] for h in hops(redis_client, key)] == [0, 1, 2]
    log = retry_worker.log()
    assert "database unavailable: OperationalError" in log
    assert "secret_user" not in log and str(closed_port) not in log


def test_spent_budget_chains_no_driver_exception(redis_client: redis_lib.Redis) -> None:
    """In-process (eager) run: the final exception object itself has no cause or context that
    could carry the driver's text (host, user, URL) to a log handler or error tracker."""
    from tests.retry_tasks import scripted

    closed_port = free_port()
    key = script(redis_client, ["psycopg"] * 9)
    result = scripted.apply(args=[key, broker_url_of(redis_client), closed_port])
    exc = result.result
    assert isinstance(exc, RetriesExhaustedError), result.traceback
    assert "gave up after 8 transient retries" in str(exc)
    assert "database unavailable: OperationalError" in str(exc)
    assert exc.__cause__ is None and exc.__context__ is None
    assert "secret_user" not in (result.traceback or "")
    assert str(closed_port) not in (result.traceback or "")


def broker_url_of(client: redis_lib.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs['db']}"


def test_budgets_are_the_documented_ones() -> None:
    from dropship.celery_app import DropshipTask

    assert DropshipTask.max_retries == 8
    assert DropshipTask.max_rate_limit_retries == 1000


@pytest.mark.parametrize(
    "step, kind, limit",
    [("rate", "rate-limit retries", 3), ("budget", "daily-budget waits", 2)],
)
def test_spent_rate_limit_and_budget_waits_fail_with_a_clear_message(
    redis_client: redis_lib.Redis, step: str, kind: str, limit: int
) -> None:
    from tests.retry_tasks import scripted_small_budgets

    key = script(redis_client, [step] * (limit + 1) + ["ok"])
    result = scripted_small_budgets.apply(args=[key, broker_url_of(redis_client)])
    exc = result.result
    assert isinstance(exc, RetriesExhaustedError), result.traceback
    assert str(exc).startswith(
        f"tests.retry_tasks.scripted_small_budgets: gave up after {limit} {kind}; last error: "
    )
    assert exc.__cause__ is None and exc.__context__ is None
    assert len(hops(redis_client, key)) == limit + 1


def test_a_rate_limit_wait_after_progress_starts_the_budget_again(
    redis_client: redis_lib.Redis,
) -> None:
    """Budget 3: three waits, then a wait after progress (count back to 0, this wait is 1),
    then two more: seven hops, more than the budget in all, and the task still succeeds."""
    from tests.retry_tasks import scripted_small_budgets

    key = script(redis_client, ["rate"] * 3 + ["rate-progress"] + ["rate"] * 2 + ["ok"])
    result = scripted_small_budgets.apply(args=[key, broker_url_of(redis_client)])
    assert result.successful(), result.traceback
    assert [h["rate_limit"] for h in hops(redis_client, key)] == [0, 1, 2, 3, 1, 2, 3]


# --------------------------------------------------------------------------- Redis killed


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    yield from own_redis_server()


def test_limiter_redis_killed_mid_call_retries_and_succeeds_when_back(
    retry_worker: WorkerProcess,
    redis_client: redis_lib.Redis,
    redis_url: str,
    own_redis: EmbeddedRedis,
) -> None:
    from tests.retry_tasks import limited_call

    key = f"coupang:{uuid.uuid4().hex[:6]}"
    limiter_url = own_redis.url(0)
    admin = redis_lib.Redis.from_url(limiter_url)
    # Hold every script call in the server, so the task's EVALSHA is in flight when it dies.
    admin.execute_command("CLIENT", "PAUSE", 30000, "WRITE")
    admin.close()
    async_result = limited_call.delay(limiter_url, key, redis_url)
    deadline = time.monotonic() + 30
    while redis_client.llen(f"{key}:attempts") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert redis_client.llen(f"{key}:attempts") == 1, retry_worker.log()[-3000:]
    time.sleep(0.5)  # let the call reach the paused server
    kill(own_redis)
    # The task fails over to retries while the server is down ...
    while redis_client.llen(f"{key}:attempts") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert redis_client.llen(f"{key}:attempts") >= 2, retry_worker.log()[-3000:]
    assert async_result.state in ("RETRY", "STARTED")
    # ... and succeeds once it is back (same port).
    own_redis.start()
    assert limited_call.AsyncResult(async_result.id).get(timeout=60) == 0.0
    log = retry_worker.log()
    assert "rate limiter unavailable: ConnectionError" in log
    assert f":{own_redis.port}" not in log  # the driver's text (host:port) stays out
