"""A daily call budget per platform account, in Redis, shared by every worker process.

Domeggook allows 180 calls a minute **and** 15,000 calls a day per API key (openapi.domeggook.com
guide, notes in file id 60754891376 §5). The per-minute limit is the GCRA limiter
(:mod:`dropship.platforms.ratelimit`); this module adds the daily one. A 100,000-product catalog
needs about 500 list pages and 1,000 ``getItemView`` calls, so a collect run can spend a large part
of the day's budget and must stop cleanly when it is gone rather than be refused by the platform.

How it counts
-------------
* One Redis hash per account (``dropship:budget:{<platform>:<account>}``) holds ``day`` (the
  day number) and ``used``. One atomic Lua script reads Redis' own clock (``TIME``), so every
  process on every host agrees on the day, starts a fresh count when the day changed, and either
  charges the call or refuses it. There is no read-then-write race between workers.
* The day boundary is **midnight KST** (UTC+9, Korea has no daylight saving): a Korean platform
  counts its daily quota in Korean days, and an implementer's client that tracks the same quota
  keys its counter by the ``Asia/Seoul`` date (file id 58508630246, ``recordOpenApiCall``). Counting
  in UTC would let us believe the budget refilled at 09:00 KST while the platform still counts the
  old day.
* A call is charged **before** it is sent, once per real HTTP attempt (retries inside
  :class:`~dropship.platforms.http.PlatformHttp` are attempts the platform counts too). The call
  that would exceed the budget is never sent: it raises
  :class:`~dropship.errors.BudgetExhaustedError` with ``resets_at`` (the next KST midnight) and
  ``retry_after`` (seconds until then). A charged attempt that then fails to connect still counts:
  we err on the side of the platform's quota.
* A Redis failure is a :class:`~dropship.errors.TransientError`: without the shared count we must
  not call the platform, and the task retries later.

Wiring: :func:`dropship.platforms.registry.build_connector` wraps the account's rate limiter in a
:class:`BudgetedRateLimiter` when the account has a daily limit
(:meth:`dropship.platforms.config.PlatformSettings.daily_limit_for`), so every call made through
the account's :class:`~dropship.platforms.http.PlatformHttp` is charged, whatever the connector.
Operators see the numbers with :func:`budget_status` and ``dropship budget``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import redis

from dropship.errors import BudgetExhaustedError, TransientError
from dropship.platforms.ratelimit import RateLimiter

KST = timezone(timedelta(hours=9))
KST_OFFSET_S = 9 * 3600
DAY_S = 86_400
KEY_PREFIX = "dropship:budget"

# KEYS[1] = the account's budget hash
# ARGV[1] = daily limit, ARGV[2] = calls to charge (0 = only read), ARGV[3] = offset of the
# budget's day from UTC (s), ARGV[4] = "now" in epoch seconds for tests ("" = Redis TIME).
# Returns {granted (0/1), used after the call, resets_at (epoch s), now (epoch s, as string)}.
CHARGE_LUA = """
local now
if ARGV[4] ~= '' then
  now = tonumber(ARGV[4])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local limit = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local offset = tonumber(ARGV[3])
local day = math.floor((now + offset) / 86400)
local resets_at = (day + 1) * 86400 - offset
local used = 0
if tonumber(redis.call('HGET', KEYS[1], 'day') or '-1') == day then
  used = tonumber(redis.call('HGET', KEYS[1], 'used') or '0')
end
if cost > 0 then
  if used + cost > limit then
    return {0, used, resets_at, string.format('%.3f', now)}
  end
  used = used + cost
  redis.call('HSET', KEYS[1], 'day', day, 'used', used)
  redis.call('EXPIREAT', KEYS[1], resets_at + 86400)
end
return {1, used, resets_at, string.format('%.3f', now)}
"""


@dataclass(frozen=True)
class BudgetStatus:
    """What an operator sees: calls ``used`` today out of ``limit``, refilled at ``resets_at``."""

    key: str
    used: int
    limit: int
    resets_at: datetime

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    def line(self) -> str:
        local = self.resets_at.astimezone(KST)
        return (
            f"{self.key}: {self.used}/{self.limit} calls today, {self.remaining} left, "
            f"resets {local:%Y-%m-%d %H:%M} KST"
        )


class DailyBudget:
    """The daily call budget of one account key (``"<platform>:<account>"``).

    ``now`` (epoch seconds) replaces Redis' clock; only tests use it, to cross a day boundary
    without waiting for one.
    """

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        limit: int,
        *,
        day_offset_s: int = KST_OFFSET_S,
        key_prefix: str = KEY_PREFIX,
        now: Any = None,
    ) -> None:
        if limit < 1:
            raise ValueError(f"daily budget of {key} must be at least 1 call, got {limit}")
        self.redis = client
        self.key = key
        self.limit = limit
        self.day_offset_s = day_offset_s
        # {key} is a Redis Cluster hash tag, like the rate limiter's keys.
        self.redis_key = f"{key_prefix}:{{{key}}}"
        self._now = now
        self._script = client.register_script(CHARGE_LUA)

    def _run(self, cost: int) -> tuple[bool, int, datetime, float]:
        now = self._now() if callable(self._now) else self._now
        try:
            granted, used, resets_at, server_now = self._script(
                keys=[self.redis_key],
                args=[self.limit, cost, self.day_offset_s, "" if now is None else repr(float(now))],
            )
        except redis.RedisError as exc:
            raise TransientError(
                f"daily call budget of {self.key} unavailable ({type(exc).__name__}); not calling "
                "the platform without it"
            ) from None
        return (
            bool(int(granted)),
            int(used),
            datetime.fromtimestamp(int(resets_at), UTC),
            float(server_now),
        )

    def charge(self, calls: int = 1) -> int:
        """Count ``calls`` about to be sent and return the calls used today; raise
        :class:`BudgetExhaustedError` (and count nothing) when they would exceed the limit."""
        if calls < 1:
            raise ValueError(f"charge at least one call, got {calls}")
        granted, used, resets_at, now = self._run(calls)
        if not granted:
            retry_after = max(1.0, resets_at.timestamp() - now)
            raise BudgetExhaustedError(
                f"daily call budget of {self.key} spent ({used}/{self.limit}); refills at "
                f"{resets_at.astimezone(KST):%Y-%m-%d %H:%M} KST",
                retry_after=retry_after,
                resets_at=resets_at,
            )
        return used

    def ensure_available(self, calls: int) -> None:
        """Raise :class:`BudgetExhaustedError` when fewer than ``calls`` remain today, charging
        nothing. Advisory (another worker may spend the rest a moment later): the charge before
        each call stays the guarantee. Lets a collect slice stop before its first call instead
        of in its middle."""
        _, used, resets_at, now = self._run(0)
        if used + calls > self.limit:
            raise BudgetExhaustedError(
                f"daily call budget of {self.key}: {self.limit - used} call(s) left, this work "
                f"needs about {calls}; refills at {resets_at.astimezone(KST):%Y-%m-%d %H:%M} KST",
                retry_after=max(1.0, resets_at.timestamp() - now),
                resets_at=resets_at,
            )

    def status(self) -> BudgetStatus:
        _, used, resets_at, _ = self._run(0)
        return BudgetStatus(self.key, used, self.limit, resets_at)


class BudgetedRateLimiter(RateLimiter):
    """The account's rate limiter with the daily budget charged on every acquired slot.

    :class:`~dropship.platforms.http.PlatformHttp` calls ``acquire`` once before every attempt it
    sends, so charging here counts each real HTTP call exactly once without touching the HTTP
    layer. The per-minute slot is taken first: a call refused by the per-minute limiter (it
    raises :class:`~dropship.errors.RateLimitedError`) is not charged. Everything else is the
    wrapped limiter's (``observe``, ``pause``...), delegated unchanged.
    """

    def __init__(self, inner: RateLimiter, budget: DailyBudget) -> None:
        # Deliberately no super().__init__(): all state lives in ``inner``; attributes not
        # defined here are looked up there (see __getattr__).
        self._inner = inner
        self.budget = budget

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("_inner")
        if inner is None:  # half-built (copy/pickle): behave like a missing attribute
            raise AttributeError(name)
        return getattr(inner, name)

    def acquire(self, key: str, max_wait: float | None = None) -> float:
        waited = self._inner.acquire(key, max_wait)
        self.budget.charge()
        return waited

    def try_acquire(self, key: str, max_wait: float | None = None) -> tuple[bool, float]:
        return self._inner.try_acquire(key, max_wait)

    def observe(self, key: str, status: int, headers: Mapping[str, str]) -> None:
        self._inner.observe(key, status, headers)


def budget_for(account: Any, platforms: Any, client: redis.Redis) -> DailyBudget | None:
    """The daily budget of ``account`` (an :class:`~dropship.platforms.config.AccountSettings`)
    under ``platforms`` (:class:`~dropship.platforms.config.PlatformSettings`), or ``None`` when
    the account has no daily limit."""
    limit = platforms.daily_limit_for(account)
    if not limit:
        return None
    return DailyBudget(client, account.limiter_key, limit)


def budget_status(
    account: Any, platforms: Any = None, client: redis.Redis | None = None
) -> BudgetStatus | None:
    """Today's usage of ``account`` (an account name or
    :class:`~dropship.platforms.config.AccountSettings`): ``None`` when it has no daily limit.
    ``platforms`` and ``client`` default to the application settings and their Redis."""
    if platforms is None:
        from dropship.settings import get_settings

        platforms = get_settings().platforms
    if isinstance(account, str):
        account = platforms.account(account)
    if client is None:
        from dropship.platforms.registry import redis_client_for
        from dropship.runtime import resolved_redis_url

        url = resolved_redis_url()
        if not url:
            from dropship.errors import ConfigurationError

            raise ConfigurationError("no Redis configured for the daily call budgets")
        client = redis_client_for(url)
    budget = budget_for(account, platforms, client)
    return budget.status() if budget is not None else None


def calls_needed(pages: int, page_size: int, per_view_call: int = 100) -> int:
    """Calls one list+detail sweep of ``pages`` pages needs: the pages, plus the detail calls
    for up to ``page_size`` items each, ``per_view_call`` items per call."""
    return pages + pages * math.ceil(page_size / per_view_call)
