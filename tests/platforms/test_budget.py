"""The daily call budget (dropship.platforms.budget) against real Redis, real processes and the
sandbox over real HTTP: counted once per HTTP attempt, shared by processes, the exhausting call
never sent, the day boundary at midnight KST, visible to an operator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from dropship.errors import BudgetExhaustedError, TransientError
from dropship.platforms.budget import (
    KST,
    BudgetedRateLimiter,
    DailyBudget,
    budget_status,
    calls_needed,
)
from dropship.platforms.config import AccountSettings, PlatformSettings
from dropship.platforms.domeggook import DomeggookConnector
from dropship.platforms.registry import build_connector

PROJECT_DIR = Path(__file__).resolve().parents[2]


def _epoch(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


def test_the_call_that_would_exceed_is_refused_and_not_counted(
    redis_client: redis_lib.Redis,
) -> None:
    budget = DailyBudget(redis_client, "domeggook:t", 3)
    assert [budget.charge() for _ in range(3)] == [1, 2, 3]
    with pytest.raises(BudgetExhaustedError) as caught:
        budget.charge()
    assert budget.status().used == 3  # the refused call took nothing
    error = caught.value
    assert error.resets_at.astimezone(KST).time().isoformat() == "00:00:00"
    assert error.resets_at > datetime.now(UTC)
    assert 0 < error.retry_after <= 86_400
    # retry_after runs up to the reset (measured against Redis' clock, which the budget uses)
    server_now = float(redis_client.time()[0])
    assert abs(error.retry_after - (error.resets_at.timestamp() - server_now)) < 5


def test_the_day_ends_at_midnight_kst_not_utc(redis_client: redis_lib.Redis) -> None:
    now = {"t": _epoch(2026, 12, 1, 14, 59, 0)}  # 23:59 KST
    budget = DailyBudget(redis_client, "domeggook:t", 2, now=lambda: now["t"])
    budget.charge(2)
    with pytest.raises(BudgetExhaustedError) as caught:
        budget.charge()
    assert caught.value.resets_at == datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
    assert caught.value.retry_after == pytest.approx(60.0)
    now["t"] = _epoch(2026, 12, 1, 15, 0, 0)  # 00:00 KST: a new day at the platform
    assert budget.charge() == 1
    budget.charge()
    # UTC midnight is 09:00 KST, the middle of the platform's day: nothing refills there.
    now["t"] = _epoch(2026, 12, 2, 0, 0, 1)
    with pytest.raises(BudgetExhaustedError):
        budget.charge()
    status = budget.status()
    assert (status.used, status.limit, status.remaining) == (2, 2, 0)
    assert status.resets_at == datetime(2026, 12, 2, 15, 0, tzinfo=UTC)
    assert "2/2" in status.line() and "2026-12-03 00:00 KST" in status.line()


_CHARGER = """
import sys, redis
from dropship.errors import BudgetExhaustedError
from dropship.platforms.budget import DailyBudget
budget = DailyBudget(redis.Redis.from_url(sys.argv[1]), "domeggook:shared", int(sys.argv[2]))
granted = refused = 0
for _ in range(int(sys.argv[3])):
    try:
        budget.charge()
        granted += 1
    except BudgetExhaustedError:
        refused += 1
print(granted, refused)
"""


def test_the_budget_is_shared_by_processes(redis_url: str, redis_client: redis_lib.Redis) -> None:
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _CHARGER, redis_url, "100", "40"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=PROJECT_DIR,
        )
        for _ in range(4)
    ]
    results = []
    for process in processes:
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0
        results.append(tuple(int(n) for n in out.split()))
    assert sum(g for g, _ in results) == 100  # exactly the limit, across 4 processes
    assert sum(r for _, r in results) == 60
    assert DailyBudget(redis_client, "domeggook:shared", 100).status().used == 100


def test_a_redis_failure_is_transient() -> None:
    dead = redis_lib.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    with pytest.raises(TransientError, match="budget"):
        DailyBudget(dead, "domeggook:t", 10).charge()


def test_limits_are_configured_per_account(
    sandbox: Any, connector_settings: PlatformSettings
) -> None:
    accounts = connector_settings.accounts
    assert connector_settings.daily_limit_for(accounts["domeggook_main"]) == 15_000
    assert connector_settings.daily_limit_for(accounts["coupang_main"]) is None
    own = accounts["domeggook_main"].model_copy(update={"daily_limit": 1200})
    assert connector_settings.daily_limit_for(own) == 1200
    off = accounts["domeggook_main"].model_copy(update={"daily_limit": 0})
    assert connector_settings.daily_limit_for(off) is None
    parsed = AccountSettings.model_validate(
        {"platform": "gentrade", "base_url": "http://x", "daily_limit": 50}
    )
    assert connector_settings.daily_limit_for(parsed) == 50


def _settings_with_limit(settings: PlatformSettings, limit: int) -> PlatformSettings:
    return settings.model_copy(
        update={"daily_limits": {**settings.daily_limits, "domeggook": limit}}
    )


def _dg_calls(sandbox: Any) -> int:
    total: int = sandbox.counts()["calls_total"].get("domeggook", 0)
    return total


def test_the_exhausting_call_is_never_sent(
    sandbox: Any, connector_settings: PlatformSettings, redis_client: redis_lib.Redis
) -> None:
    settings = _settings_with_limit(connector_settings, 4)
    conn = build_connector(settings.accounts["domeggook_main"], settings, redis_client)
    assert isinstance(conn, DomeggookConnector)
    assert isinstance(conn.http.limiter, BudgetedRateLimiter)
    for n in range(4):  # distinct numbers: no answer comes from the response cache
        conn.get_product(str(30_000_010 + n))
    assert _dg_calls(sandbox) == 4
    with pytest.raises(BudgetExhaustedError):
        conn.get_product("30000020")
    assert _dg_calls(sandbox) == 4  # refused here, before the request left
    status = budget_status(settings.accounts["domeggook_main"], settings, redis_client)
    assert status is not None and (status.used, status.limit) == (4, 4)
    # Other platforms have no daily budget and are not wrapped.
    coupang = build_connector(settings.accounts["coupang_main"], settings, redis_client)
    assert not isinstance(coupang.http.limiter, BudgetedRateLimiter)
    assert budget_status(settings.accounts["coupang_main"], settings, redis_client) is None


def test_every_http_attempt_is_charged_once(
    sandbox: Any, connector_settings: PlatformSettings, redis_client: redis_lib.Redis
) -> None:
    conn = build_connector(
        connector_settings.accounts["domeggook_main"], connector_settings, redis_client
    )
    sandbox.set_faults("domeggook", error_rate=1.0)  # every answer a 5xx: the client retries
    with pytest.raises(TransientError):
        conn.get_product("30000001")
    sent = _dg_calls(sandbox)
    assert sent == connector_settings.http.max_attempts
    sandbox.set_faults("domeggook", error_rate=0.0)
    conn.get_product("30000002")
    status = budget_status(
        connector_settings.accounts["domeggook_main"], connector_settings, redis_client
    )
    assert status is not None and status.used == _dg_calls(sandbox) == sent + 1


def test_a_slice_that_does_not_fit_stops_before_its_first_call(
    sandbox: Any, connector_settings: PlatformSettings, redis_client: redis_lib.Redis
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"domeggook": 300})
    account = connector_settings.accounts["domeggook_main"].model_copy(
        update={"options": {"pages_per_slice": "3"}}
    )
    settings = connector_settings.model_copy(update={"accounts": {"domeggook_main": account}})
    conn = build_connector(account, settings, redis_client)
    conn.page_size = 20
    slices = conn.plan_slices()  # 1 category call + 8 probes
    assert _dg_calls(sandbox) == 9
    piece = slices[0]
    pages = piece.params["last_page"] - piece.params["first_page"] + 1
    needed = calls_needed(pages, 20)  # the pages + one detail call per page of 20
    assert needed == 2 * pages
    tight = _settings_with_limit(settings, 9 + needed - 1)
    with pytest.raises(BudgetExhaustedError) as caught:
        list(build_connector(account, tight, redis_client).iter_slice(piece))
    assert _dg_calls(sandbox) == 9  # stopped cleanly: nothing of the slice was sent
    assert caught.value.resets_at > datetime.now(UTC)
    assert 0 < caught.value.retry_after <= timedelta(days=1).total_seconds()
    enough = _settings_with_limit(settings, 9 + needed)
    records = list(build_connector(account, enough, redis_client).iter_slice(piece))
    assert records and _dg_calls(sandbox) <= 9 + needed


def test_cli_prints_one_line_per_account(
    sandbox: Any, redis_url: str, redis_client: redis_lib.Redis
) -> None:
    DailyBudget(redis_client, "domeggook:dg_cli", 15_000).charge(7)
    accounts = {
        "dg_cli": {"platform": "domeggook", "base_url": sandbox.url("domeggook")},
        "cp_cli": {"platform": "coupang", "base_url": sandbox.url("coupang")},
    }
    env = {
        **os.environ,
        "DROPSHIP_REDIS_URL": redis_url,
        "DROPSHIP_PLATFORMS__ACCOUNTS": json.dumps(accounts),
    }
    out = subprocess.run(
        [sys.executable, "-m", "dropship.cli", "budget"],
        env=env,
        capture_output=True,
        text=True,
        cwd=PROJECT_DIR,
        timeout=60,
        check=True,
    ).stdout
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 2
    assert lines[0].startswith("coupang:cp_cli: no daily budget")
    assert lines[1].startswith("domeggook:dg_cli: 7/15000 calls today, 14993 left")


def test_calls_needed() -> None:
    assert calls_needed(5, 200) == 15
    assert calls_needed(1, 1) == 2


def test_budgeted_limiter_delegates(redis_client: redis_lib.Redis) -> None:
    from dropship.platforms.ratelimit import RateLimit, RateLimiter

    inner = RateLimiter(redis_client, {"domeggook": RateLimit(100, 1.0)})
    wrapped = BudgetedRateLimiter(inner, DailyBudget(redis_client, "domeggook:w", 1))
    assert wrapped.limit_for("domeggook:w") == RateLimit(100, 1.0)  # delegated
    wrapped.acquire("domeggook:w")
    with pytest.raises(BudgetExhaustedError):
        wrapped.acquire("domeggook:w")
