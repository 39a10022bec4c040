"""The sandbox core over real HTTP: rate limits with real 429s, faults, counts, reset, the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from dropship.sandbox.core import SandboxConfig, SandboxRateLimit, SandboxServer, _TokenBucket
from dropship.sandbox.world import WORLD_EPOCH, CatalogItem, generate_item, iter_catalog

PROJECT_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    srv = SandboxServer(SandboxConfig(seed=7).with_all_rate_limits(100, 1.0, 50)).start()
    yield srv
    srv.stop()


@pytest.fixture
def base(server: SandboxServer) -> str:
    requests.post(f"{server.base_url}/_sandbox/reset", timeout=5).raise_for_status()
    return server.base_url


def admin(base: str, name: str, body: object) -> requests.Response:
    return requests.post(f"{base}/_sandbox/{name}", json=body, timeout=5)


def test_health_lists_mounted_platforms(base: str) -> None:
    body = requests.get(f"{base}/_sandbox/health", timeout=5).json()
    assert body["ok"] is True and body["seed"] == 7
    assert isinstance(body["platforms"], list)


def test_naver_over_limit_gets_429_with_gateway_headers(base: str) -> None:
    admin(
        base, "rate_limits", {"naver": {"calls": 2, "period_s": 1, "burst": 2}}
    ).raise_for_status()
    with requests.Session() as http:
        responses = [http.get(f"{base}/naver/_echo", timeout=5) for _ in range(4)]
    assert [r.status_code for r in responses[:2]] == [200, 200]
    limited = responses[2]
    assert limited.status_code == 429
    assert limited.json()["code"] == "GW.RATE_LIMIT"
    assert limited.headers["GNCP-GW-RateLimit-Replenish-Rate"] == "2"
    assert limited.headers["GNCP-GW-RateLimit-Burst-Capacity"] == "2"
    assert limited.headers["GNCP-GW-RateLimit-Requested-Tokens"] == "1"
    assert int(limited.headers["Retry-After"]) >= 1
    counts = requests.get(f"{base}/_sandbox/counts", timeout=5).json()
    assert counts["rate_limit_violations"]["naver"] == sum(r.status_code == 429 for r in responses)
    assert counts["rate_limit_violations"]["coupang"] == 0
    assert counts["calls"]["naver"]["_echo"] == 4


def test_bucket_refills_at_the_configured_rate(base: str) -> None:
    # One call per second, so the 429 does not depend on the two requests landing within a
    # tenth of a second of each other on a loaded machine; the exact refill arithmetic is
    # checked on the bucket's own clock below.
    admin(base, "rate_limits", {"coupang": {"calls": 1, "period_s": 1, "burst": 1}})
    with requests.Session() as http:
        assert http.get(f"{base}/coupang/_echo", timeout=5).status_code == 200
        second = http.get(f"{base}/coupang/_echo", timeout=5)
        assert second.status_code == 429
        assert second.headers["Retry-After"] == "1"
        assert "X-RateLimit-Remaining" in second.headers
        time.sleep(1.05)  # one interval later a token is back (a longer sleep changes nothing)
        assert http.get(f"{base}/coupang/_echo", timeout=5).status_code == 200


def test_token_bucket_arithmetic_on_its_own_clock() -> None:
    bucket = _TokenBucket(SandboxRateLimit(calls=10, period_s=1, burst=2), now=100.0)
    assert bucket.take(100.0).allowed and bucket.take(100.0).allowed  # the burst
    denied = bucket.take(100.04)
    assert not denied.allowed
    assert denied.retry_after_s == pytest.approx(0.06)  # 0.4 of a token back, 0.6 missing
    assert not bucket.take(100.09).allowed  # 0.9 of a token: still short
    assert bucket.take(100.11).allowed  # one interval (0.1 s) after the burst: a token
    assert not bucket.take(100.11).allowed


def test_error_fault_answers_5xx_and_can_be_switched_off(base: str) -> None:
    assert admin(base, "faults", {"gentrade": {"error_rate": 1.0}}).status_code == 200
    statuses = {requests.get(f"{base}/gentrade/_echo", timeout=5).status_code for _ in range(6)}
    assert statuses <= {500, 502, 503} and statuses
    admin(base, "faults", {"gentrade": {"error_rate": 0.0}})
    assert requests.get(f"{base}/gentrade/_echo", timeout=5).status_code == 200


def test_timeout_fault_holds_the_request_without_blocking_others(
    base: str, server: SandboxServer
) -> None:
    admin(base, "faults", {"ownerclan": {"timeout_rate": 1.0, "timeout_s": 5.0}})
    held: list[BaseException] = []
    finished: list[str] = []

    def call_held() -> None:
        try:
            requests.get(f"{base}/ownerclan/_echo", timeout=(1, 4.0))
        except requests.ReadTimeout as exc:
            held.append(exc)
        finished.append("ownerclan")

    thread = threading.Thread(target=call_held)
    thread.start()
    # Wait until the held request is inside the sandbox (calls are counted on arrival), so the
    # next request really is served while it is held; ordering, not a stopwatch, proves it.
    deadline = time.monotonic() + 10
    while server.state.snapshot()["calls"].get("ownerclan", {}).get("_echo", 0) < 1:
        assert time.monotonic() < deadline, "the held request never reached the sandbox"
        time.sleep(0.01)
    assert requests.get(f"{base}/coupang/_echo", timeout=5).status_code == 200
    finished.append("coupang")
    thread.join(10)
    assert finished == ["coupang", "ownerclan"]
    assert len(held) == 1


def test_slow_fault_delays_every_response(base: str) -> None:
    admin(base, "faults", {"domeggook": {"slow_ms": 300}})
    started = time.monotonic()
    assert requests.get(f"{base}/domeggook/_echo", timeout=5).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_bad_fault_settings_are_rejected_with_the_reason(base: str) -> None:
    response = admin(base, "faults", {"coupang": {"error_rate": 1.5}})
    assert response.status_code == 400
    assert "error_rate" in response.json()["error"]
    response = admin(base, "faults", {"coupang": {"explode": 1}})
    assert response.status_code == 400 and "explode" in response.json()["error"]
    response = admin(base, "faults", {"myshop": {"error_rate": 0.1}})
    assert response.status_code == 400 and "myshop" in response.json()["error"]


def test_counts_and_reset(base: str) -> None:
    for n in range(3):
        requests.get(f"{base}/coupang/_echo", params={"id": f"c{n}"}, timeout=5)
    requests.get(f"{base}/coupang/_echo", params={"id": "c0"}, timeout=5)
    admin(base, "faults", {"coupang": {"slow_ms": 10}})
    counts = requests.get(f"{base}/_sandbox/counts", timeout=5).json()
    assert counts["calls"]["coupang"]["_echo"] == 4
    assert counts["echo"] == {"coupang:c0": 2, "coupang:c1": 1, "coupang:c2": 1}
    assert "purchase_orders" in counts and "listings" in counts

    assert admin(base, "reset", {}).status_code == 200
    counts = requests.get(f"{base}/_sandbox/counts", timeout=5).json()
    assert counts["calls"] == {} and "echo" not in counts
    faults = requests.get(f"{base}/_sandbox/faults", timeout=5).json()
    assert faults["coupang"]["slow_ms"] == 0


def test_clock_only_moves_forward(base: str) -> None:
    before = requests.get(f"{base}/_sandbox/clock", timeout=5).json()["offset_s"]
    assert admin(base, "clock", {"advance_s": 3600}).json()["offset_s"] == before + 3600
    assert admin(base, "clock", {"advance_s": -1}).status_code == 400


def test_frozen_clock_moves_only_when_advanced(base: str) -> None:
    def clock() -> dict[str, Any]:
        body: dict[str, Any] = requests.get(f"{base}/_sandbox/clock", timeout=5).json()
        return body

    frozen = admin(base, "clock", {"freeze": True}).json()
    assert frozen["frozen"] is True
    time.sleep(0.05)
    assert clock()["now"] == frozen["now"]  # wall time passed, world time did not
    advanced = admin(base, "clock", {"advance_s": 90}).json()
    expected = datetime.fromisoformat(frozen["now"]) + timedelta(seconds=90)
    assert datetime.fromisoformat(advanced["now"]) == expected
    assert admin(base, "clock", {"freeze": "yes"}).status_code == 400
    resumed = admin(base, "clock", {"freeze": False}).json()
    assert resumed["frozen"] is False
    assert datetime.fromisoformat(resumed["now"]) > expected  # it never moves backwards
    admin(base, "clock", {"freeze": True})
    admin(base, "reset", {})
    assert clock()["frozen"] is False


def test_world_is_a_function_of_the_seed() -> None:
    at = WORLD_EPOCH + timedelta(days=3)

    def catalog(seed: int, supplier: str) -> list[CatalogItem]:
        return list(iter_catalog(seed, supplier, 50, now=at, price_drift=0.02, soldout_rate=0.1))

    first = catalog(42, "ownerclan")
    assert first == catalog(42, "ownerclan")
    assert first != catalog(43, "ownerclan")
    assert first != catalog(42, "domeggook")
    # Random access: product 17 on its own is the 18th of the stream.
    assert (
        generate_item(42, "ownerclan", 17, now=at, price_drift=0.02, soldout_rate=0.1) == first[17]
    )
    assert any(p.soldout for p in first)


def _start_sandbox_cli() -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "dropship.sandbox", "--host", "127.0.0.1", "--port", "0"]
    return subprocess.Popen(
        [*command, "--seed", "42"],
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_cli_prints_its_url_and_stops_on_sigterm() -> None:
    proc = _start_sandbox_cli()
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("sandbox listening on http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[1]
        assert requests.get(f"{url}/_sandbox/health", timeout=5).json()["seed"] == 42
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_stops_when_signals_arrive_in_a_burst(sig: int) -> None:
    """Ctrl-C under ``uv run`` delivers SIGINT twice (from the terminal and forwarded by uv), and
    ``timeout`` signals both the child and its group. A signal arriving while the previous one's
    handler runs must not deadlock it (it did, when the handler called ``Event.set()``); a burst
    makes that overlap near certain."""
    proc = _start_sandbox_cli()
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("sandbox listening on")
        for _ in range(300):
            if proc.poll() is not None:
                break
            proc.send_signal(sig)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
