"""Fixtures for connector tests: a real sandbox server on loopback and settings pointing at it.

* ``sandbox`` — the session's sandbox server (started once, on a free port), reset before each
  test (counts, faults, platform data, clock, and the test rate limits below). Helpers:
  ``.base_url``, ``.url(platform)``, ``.counts()``, ``.set_faults(platform, **kw)``,
  ``.set_rate_limit(platform, calls, period_s, burst=0)``, ``.advance_clock(seconds)``,
  ``.state`` (the in-process :class:`SandboxState`, for assertions).
* ``frozen_world_clock`` — the same sandbox with its world clock frozen (moves only by
  ``.advance_clock``), for tests that compare prices, timestamps or delays across requests.
* ``connector_settings`` — a :class:`PlatformSettings` with one account per platform named
  ``<platform>_main`` (plus ``coupang_second`` / ``naver_second``), base URLs at the sandbox, the
  sandbox credentials, the test rate limits and short HTTP timeouts.
* ``make_connector(account_name)`` — the registry's connector for that account, wired to the
  test's Redis (rate limiter + cache).

Rate limits: functional tests must not crawl at the real limits (OwnerClan's 500/hour is one
call per 7 s), so both the sandbox and the client limiter use ``TEST_RATE_LIMIT`` per platform.
Tests about limits set their own with ``sandbox.set_rate_limit``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis as redis_lib
import requests

from dropship.platforms.config import (
    AccountSettings,
    HttpSettings,
    PlatformSettings,
    RateLimitSettings,
    RateLimitTable,
)
from dropship.sandbox.core import SandboxConfig, SandboxServer, SandboxState
from dropship.sandbox.credentials import PLATFORMS, sandbox_account_config

TEST_SEED = 42
TEST_RATE_LIMIT_CALLS = 200  # per second, on every platform, sandbox and client alike
TEST_RATE_LIMIT_BURST = 50  # sandbox bucket capacity: generous tolerance for test bursts


def sandbox_test_config() -> SandboxConfig:
    return SandboxConfig(seed=TEST_SEED, catalog_size=500).with_all_rate_limits(
        TEST_RATE_LIMIT_CALLS, 1.0, TEST_RATE_LIMIT_BURST
    )


class SandboxFixture:
    """A running sandbox plus helpers that talk to its admin endpoints over HTTP."""

    def __init__(self, server: SandboxServer) -> None:
        self.server = server
        self.http = requests.Session()

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def state(self) -> SandboxState:
        return self.server.state

    def url(self, platform: str) -> str:
        return f"{self.base_url}/{platform}"

    def _admin(self, method: str, name: str, body: Any = None) -> Any:
        response = self.http.request(
            method, f"{self.base_url}/_sandbox/{name}", json=body, timeout=(2, 10)
        )
        if response.status_code != 200:
            raise AssertionError(
                f"sandbox admin {name}: HTTP {response.status_code} {response.text}"
            )
        return response.json()

    def counts(self) -> dict[str, Any]:
        counts: dict[str, Any] = self._admin("GET", "counts")
        return counts

    def set_faults(self, platform: str, **settings: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._admin("POST", "faults", {platform: settings})[platform]
        return result

    def set_rate_limit(self, platform: str, calls: int, period_s: float, burst: int = 0) -> None:
        self._admin(
            "POST",
            "rate_limits",
            {platform: {"calls": calls, "period_s": period_s, "burst": burst}},
        )

    def advance_clock(self, seconds: float) -> None:
        self._admin("POST", "clock", {"advance_s": seconds})

    def freeze_clock(self, frozen: bool = True) -> None:
        """World time then moves only by ``advance_clock`` (undone by the next test's reset)."""
        self._admin("POST", "clock", {"freeze": frozen})

    def configure_suppliers(self, **settings: Any) -> None:
        """``POST /_sandbox/suppliers``, e.g. ``catalog_sizes={"gentrade": 30}``."""
        self._admin("POST", "suppliers", settings)

    def reset(self) -> None:
        self._admin("POST", "reset")


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    server = SandboxServer(sandbox_test_config(), host="127.0.0.1", port=0).start()
    yield server
    server.stop()


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> Iterator[SandboxFixture]:
    fixture = SandboxFixture(sandbox_server)
    fixture.reset()
    yield fixture
    fixture.http.close()


@pytest.fixture
def frozen_world_clock(sandbox: SandboxFixture) -> SandboxFixture:
    """The sandbox with its world clock frozen for the test: every request sees the same world
    instant until the test advances it, so no price drift step, token expiry or tracking delay
    can land between two requests by chance. Use with
    ``pytestmark = pytest.mark.usefixtures("frozen_world_clock")``."""
    sandbox.freeze_clock()
    return sandbox


def sandbox_accounts(base_url: str) -> dict[str, AccountSettings]:
    return {
        name: AccountSettings.model_validate({"name": name, **config})
        for name, config in sandbox_account_config(base_url).items()
    }


@pytest.fixture
def connector_settings(sandbox: SandboxFixture) -> PlatformSettings:
    test_limit = RateLimitSettings(calls=TEST_RATE_LIMIT_CALLS, period_s=1.0, burst=1)
    return PlatformSettings(
        accounts=sandbox_accounts(sandbox.base_url),
        rate_limits=RateLimitTable(**{p: test_limit for p in PLATFORMS}),
        http=HttpSettings(
            connect_timeout_s=1.0,
            read_timeout_s=5.0,
            max_attempts=4,
            max_retry_time_s=8.0,
            backoff_initial_s=0.05,
            backoff_max_s=0.5,
            max_wait_s=1.0,
        ),
    )


@pytest.fixture
def make_connector(
    connector_settings: PlatformSettings, redis_url: str
) -> Iterator[Callable[[str], Any]]:
    from dropship.platforms.registry import connector_for

    client = redis_lib.Redis.from_url(redis_url)

    def make(account_name: str) -> Any:
        return connector_for(account_name, connector_settings, redis_client=client)

    yield make
    client.close()
