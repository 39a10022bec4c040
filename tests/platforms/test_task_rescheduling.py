"""A task facing a long rate-limit wait re-schedules itself instead of holding its worker slot.

Real worker process (one slot), real Redis limiter, real sandbox over HTTP.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from celery.result import AsyncResult
from sqlalchemy import Engine

from dropship.sandbox.credentials import sandbox_account_config
from tests.conftest import start_worker, stop_worker
from tests.platforms.conftest import SandboxFixture

pytestmark = pytest.mark.worker


def test_rate_limited_task_is_rescheduled_and_frees_its_slot(
    tmp_path: Path, sandbox: SandboxFixture, redis_url: str, committed_db: Engine
) -> None:
    from tasks.diagnostics import check_account, ping

    env = {
        "DROPSHIP_PLATFORMS__ACCOUNTS": json.dumps(sandbox_account_config(sandbox.base_url)),
        # One call a minute for Coupang: the second check must wait ~60 s for its slot.
        "DROPSHIP_PLATFORMS__RATE_LIMITS__COUPANG__CALLS": "1",
        "DROPSHIP_PLATFORMS__RATE_LIMITS__COUPANG__PERIOD_S": "60",
    }
    worker = start_worker(tmp_path, queues="low", concurrency=1, env=env)
    try:
        first = check_account.delay("coupang_main").get(timeout=30)
        assert first["ok"] is True and first["platform"] == "coupang"

        second = check_account.delay("coupang_main")
        deadline = time.monotonic() + 20
        while second.state != "RETRY" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert second.state == "RETRY", worker.log()[-3000:]
        assert "RateLimitedError" in repr(second.info) or "rate" in str(second.info).lower()

        # The only slot is free: other work runs while the limited task waits for its eta (a
        # task holding the slot for its ~60 s wait would make this time out).
        assert ping.delay("still-serving").get(timeout=15)["value"] == "still-serving"
        assert AsyncResult(second.id).state == "RETRY"
        assert "Retry in" in worker.log()
    finally:
        stop_worker(worker)
    # The sandbox saw exactly one Coupang call: the rescheduled task did not sneak a call in.
    counts = sandbox.counts()
    assert counts["calls_total"].get("coupang") == 1, counts["calls"]
