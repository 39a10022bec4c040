"""Alerts: a forced backlog raises exactly one alert per cooldown period, delivered to the log and
a webhook by the evaluator task on a real worker; the evaluator never raises."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from sqlalchemy import Engine

from dropship.ops import alerts
from dropship.settings import get_settings
from tests.conftest import start_worker, stop_worker

COOLDOWN_S = 4


class Hook:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, rule: str) -> list[dict[str, Any]]:
        return [a for a in self.received if a["rule"] == rule]


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.server.shutdown()


def _backlog(client: redis_lib.Redis, queue: str, n: int) -> None:
    # Raw entries: only the depth matters here, and no worker consumes this queue.
    pipe = client.pipeline()
    for start in range(0, n, 500):
        pipe.rpush(queue, *[b"x"] * min(500, n - start))
    pipe.execute()


def _wait(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.1)


@pytest.mark.worker
def test_forced_backlog_raises_exactly_one_alert_per_cooldown(
    tmp_path: Path,
    redis_client: redis_lib.Redis,
    committed_db: Engine,
    hook: Hook,
) -> None:
    from tasks.ops import evaluate_alerts

    threshold = get_settings().alerts.queue_backlog
    assert threshold == 1000  # the performance notes' default
    _backlog(redis_client, "low", threshold + 1)
    env = {
        "DROPSHIP_ALERTS__WEBHOOK_URL": hook.url,
        "DROPSHIP_ALERTS__COOLDOWN_S": str(COOLDOWN_S),
    }
    worker = start_worker(tmp_path, queues="high", concurrency=1, name="alerts", env=env)
    try:
        for _ in range(3):  # three evaluations inside one cooldown period: one alert
            evaluate_alerts.delay()
        _wait(lambda: len(hook.of("queue_backlog")) >= 1)
        first_at = time.monotonic()
        _wait(lambda: worker.log().count("evaluate_alerts") >= 6)  # 3 received, 3 succeeded
        assert time.monotonic() - first_at < COOLDOWN_S, "too slow to prove the cooldown"
        assert len(hook.of("queue_backlog")) == 1
        time.sleep(max(0.0, COOLDOWN_S - (time.monotonic() - first_at)) + 0.3)
        evaluate_alerts.delay()  # the next period: one more
        _wait(lambda: len(hook.of("queue_backlog")) >= 2)
        time.sleep(0.5)
        assert len(hook.of("queue_backlog")) == 2
    finally:
        stop_worker(worker)
    first = hook.of("queue_backlog")[0]
    assert (first["subject"], first["value"], first["threshold"]) == ("low", threshold + 1, 1000)
    assert worker.log().count("ALERT queue_backlog") == 2
    # Shown as active until its cooldown ends.
    active = json.loads(redis_client.hget(alerts.ALERTS_ACTIVE_KEY, "queue_backlog:low") or b"{}")
    assert active["rule"] == "queue_backlog"


def test_no_alert_below_the_threshold_and_the_evaluator_never_raises(
    redis_client: redis_lib.Redis,
) -> None:
    quiet = {"queues": {"low": 1000}, "cpu_pct": 1.0, "memory": {"host_used_pct": 10.0}}
    result = alerts.evaluate(redis_client, snap=quiet)
    assert (result["firing"], result["delivered"], result["errors"]) == (0, 0, [])
    # Garbage in every part: each rule fails on its own, counted, and nothing raises.
    broken: dict[str, Any] = {
        "queues": "nonsense",
        "tasks": {"5": [{"task": "t"}]},
        "memory": 7,
        "business": [],
        "accounts": [1],
    }
    result = alerts.evaluate(redis_client, snap=broken)
    assert result["checked"] == len(alerts.RULES)
    assert any(e.startswith("rule queue_backlog") for e in result["errors"]), result
    # Even a Redis that is gone is an error in the result, not an exception.
    dead = redis_lib.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    assert alerts.evaluate(dead, snap=quiet)["errors"]


def test_error_rate_rule_uses_the_window_and_a_minimum_count(redis_client: redis_lib.Redis) -> None:
    cfg = get_settings().alerts
    row = {"task": "tasks.x", "succeeded": 998, "failed": 2}
    snap = {"tasks": {str(cfg.error_rate_window_minutes): [row]}}
    fired = alerts.RULES["error_rate"](snap, cfg)
    assert [f.rule for f in fired] == ["error_rate"] and fired[0].value == pytest.approx(0.2)
    row.update(succeeded=5, failed=1)  # 6 finished tasks: below the minimum, no alert
    assert alerts.RULES["error_rate"](snap, cfg) == []
