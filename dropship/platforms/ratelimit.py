"""One distributed rate limiter per platform account, in Redis, shared by every worker process.

Algorithm: GCRA (the generic cell rate algorithm, i.e. a token bucket stored as one timestamp).
Per key Redis holds the *theoretical arrival time* (TAT) of the next call. A call either reserves
the next free slot and sleeps until it, or — when that slot is more than ``max_wait`` seconds
away — reserves nothing and raises :class:`~dropship.errors.RateLimitedError` carrying the wait,
so the Celery task re-schedules itself instead of holding a worker slot.

Why GCRA with reservations: one ``GET``/``SET`` of a float per call (O(1) memory per key, unlike a
sliding-window log), the check-and-reserve is a single atomic Lua script using Redis' own clock
(``TIME``) so processes on different hosts agree on time, and reserving a slot (instead of
"try again later" polling) spaces the callers evenly with no thundering herd. With the default
``burst=1`` calls leave at most one per ``period/calls`` seconds: the achieved rate is the limit,
and the platform never sees a burst it could count as a violation. A larger ``burst`` lets that
many calls go back to back after an idle period.

Adapting down: platforms say when we are too fast. :meth:`RateLimiter.observe` reads

* ``Retry-After`` (429/503): every process pauses until then (the TAT is pushed forward);
* Naver's ``GNCP-GW-RateLimit-Replenish-Rate`` (tokens per second): if lower than our limit, the
  interval is widened to match, for ``adapt_ttl_s``;
* ``X-RateLimit-Remaining: 0`` / ``GNCP-GW-RateLimit-Remaining: 0``: pause until
  ``X-RateLimit-Reset`` (seconds) or one interval;
* a 429 without any hint: the interval is widened by 1.5x (at most 10x the configured one).

Adaptations live in Redis with a TTL, so every process slows down together and the configured
rate comes back by itself once the platform stops complaining.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from dropship.errors import ConfigurationError, RateLimitedError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RateLimit:
    """``calls`` per ``period_s`` seconds; ``burst`` calls may go back to back."""

    calls: int
    period_s: float
    burst: int = 1

    def __post_init__(self) -> None:
        if self.calls <= 0 or self.period_s <= 0:
            raise ConfigurationError(
                f"rate limit needs positive calls and period_s, got {self.calls}/{self.period_s}s"
            )
        if self.burst < 1:
            raise ConfigurationError(f"rate limit burst must be at least 1, got {self.burst}")

    @property
    def interval_s(self) -> float:
        return self.period_s / self.calls

    @property
    def per_second(self) -> float:
        return self.calls / self.period_s


# The design's defaults. Domeggook publishes no limit: 600/min is a conservative guess.
DEFAULT_RATE_LIMITS: Mapping[str, RateLimit] = {
    "gentrade": RateLimit(1000, 3600.0),
    "ownerclan": RateLimit(500, 3600.0),
    "coupang": RateLimit(100, 60.0),
    "naver": RateLimit(120, 60.0),  # 2/s: measured per application (docs/PLATFORMS.md)
    "domeggook": RateLimit(600, 60.0),
}

# KEYS[1] = TAT key, KEYS[2] = adapted-interval key
# ARGV[1] = configured interval (ms), ARGV[2] = burst, ARGV[3] = max wait (ms)
# Returns {granted (0/1), wait_ms as string} (strings keep the fraction: Lua numbers are
# truncated to integers in Redis replies).
ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
local adapted = tonumber(redis.call('GET', KEYS[2]) or '0')
if adapted > interval then interval = adapted end
local burst = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - (burst - 1) * interval - now
if wait < 0 then wait = 0 end
if wait > max_wait then
  return {0, string.format('%.3f', wait)}
end
local new_tat = tat + interval
local ttl = math.ceil(new_tat - now + burst * interval) + 1000
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', ttl)
return {1, string.format('%.3f', wait)}
"""

# KEYS[1] = TAT key, KEYS[2] = adapted-interval key
# ARGV[1] = pause (ms, 0 = none), ARGV[2] = adapted interval (ms, 0 = none),
# ARGV[3] = adaptation TTL (ms). Only ever slows down: takes the max of old and new values.
ADAPT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local pause = tonumber(ARGV[1])
local adapted = tonumber(ARGV[2])
if pause > 0 then
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  if tat < now + pause then
    redis.call('SET', KEYS[1], string.format('%.3f', now + pause), 'PX', math.ceil(pause) + 1000)
  end
end
if adapted > 0 then
  local current = tonumber(redis.call('GET', KEYS[2]) or '0')
  if adapted > current then
    redis.call('SET', KEYS[2], string.format('%.3f', adapted), 'PX', tonumber(ARGV[3]))
  end
end
return 1
"""


class RateLimiter:
    """GCRA limiter keyed by ``"<platform>:<account>"``.

    ``limits`` maps a full key (one account) or a platform name to its :class:`RateLimit`;
    the full key wins, then the platform, then :data:`DEFAULT_RATE_LIMITS`.
    """

    def __init__(
        self,
        client: redis.Redis,
        limits: Mapping[str, RateLimit] | None = None,
        *,
        max_wait_s: float = 1.0,
        key_prefix: str = "dropship:ratelimit",
        adapt_ttl_s: float = 600.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_wait_s < 0:
            raise ConfigurationError(f"max_wait_s must not be negative, got {max_wait_s}")
        self.redis = client
        self.limits: dict[str, RateLimit] = dict(limits or {})
        self.max_wait_s = max_wait_s
        self.key_prefix = key_prefix
        self.adapt_ttl_s = adapt_ttl_s
        self._sleep = sleep
        self._acquire_script = client.register_script(ACQUIRE_LUA)
        self._adapt_script = client.register_script(ADAPT_LUA)

    # ---- configuration

    def limit_for(self, key: str) -> RateLimit:
        platform = key.split(":", 1)[0]
        limit = (
            self.limits.get(key) or self.limits.get(platform) or DEFAULT_RATE_LIMITS.get(platform)
        )
        if limit is None:
            raise ConfigurationError(
                f"no rate limit configured for {key!r} (platform {platform!r}); "
                f"known platforms: {', '.join(sorted(DEFAULT_RATE_LIMITS))}"
            )
        return limit

    def _keys(self, key: str) -> list[str]:
        # {key} is a Redis Cluster hash tag: both keys of one account live in one slot,
        # as a multi-key script requires.
        return [f"{self.key_prefix}:{{{key}}}:tat", f"{self.key_prefix}:{{{key}}}:adapted"]

    # ---- acquiring

    def try_acquire(self, key: str, max_wait: float | None = None) -> tuple[bool, float]:
        """Reserve a slot if it is at most ``max_wait`` seconds away. Returns ``(granted, wait_s)``;
        does not sleep."""
        limit = self.limit_for(key)
        budget = self.max_wait_s if max_wait is None else max_wait
        granted, wait_ms = self._acquire_script(
            keys=self._keys(key),
            args=[limit.interval_s * 1000.0, limit.burst, budget * 1000.0],
        )
        return bool(int(granted)), float(wait_ms) / 1000.0

    def acquire(self, key: str, max_wait: float | None = None) -> float:
        """Wait for a slot (sleeping here for at most ``max_wait`` seconds, default
        ``max_wait_s``) and return the time waited; raise :class:`RateLimitedError` with the
        needed wait when it is longer."""
        granted, wait_s = self.try_acquire(key, max_wait)
        if not granted:
            raise RateLimitedError(
                f"rate limit for {key}: next slot in {wait_s:.2f}s, longer than the "
                f"{self.max_wait_s if max_wait is None else max_wait:.2f}s a caller may wait here",
                retry_after=wait_s,
            )
        if wait_s > 0:
            self._sleep(wait_s)
        return wait_s

    # ---- adapting

    def pause(self, key: str, seconds: float) -> None:
        """Nobody calls ``key`` for ``seconds`` (e.g. the platform sent Retry-After)."""
        if seconds > 0:
            self._adapt_script(keys=self._keys(key), args=[seconds * 1000.0, 0, 1])

    def slow_down(self, key: str, interval_s: float) -> None:
        """Space calls at least ``interval_s`` apart for ``adapt_ttl_s`` seconds."""
        if interval_s > self.limit_for(key).interval_s:
            log.warning("rate limit for %s adapted down to one call per %.3fs", key, interval_s)
            self._adapt_script(
                keys=self._keys(key), args=[0, interval_s * 1000.0, self.adapt_ttl_s * 1000.0]
            )

    def current_interval_s(self, key: str) -> float:
        adapted = self.redis.get(self._keys(key)[1])
        configured = self.limit_for(key).interval_s
        return max(configured, float(adapted) / 1000.0) if adapted else configured

    def observe(self, key: str, status: int, headers: Mapping[str, str]) -> None:
        """Adapt to what a platform response says about our rate (see the module docstring)."""
        lowered = {k.lower(): v for k, v in headers.items()}
        configured = self.limit_for(key)
        hinted = False

        replenish = _number(lowered.get("gncp-gw-ratelimit-replenish-rate"))
        if replenish is not None and replenish > 0 and replenish < configured.per_second:
            self.slow_down(key, 1.0 / replenish)
            hinted = True

        retry_after = parse_retry_after(lowered.get("retry-after"))
        if retry_after is not None and status in (429, 503):
            self.pause(key, retry_after)
            hinted = True

        remaining = _number(
            lowered.get("x-ratelimit-remaining", lowered.get("gncp-gw-ratelimit-remaining"))
        )
        if remaining is not None and remaining <= 0 and status < 500:
            reset = _number(lowered.get("x-ratelimit-reset"))
            # Reset is "seconds until the window resets" on most APIs; an epoch timestamp
            # (much larger than any window) is converted.
            if reset is not None and reset > 1e9:
                reset = reset - time.time()
            self.pause(
                key, reset if reset is not None and reset > 0 else self.current_interval_s(key)
            )
            hinted = True

        if status == 429 and not hinted:
            current = self.current_interval_s(key)
            self.slow_down(key, min(current * 1.5, configured.interval_s * 10))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), else ``None``."""
    if not value:
        return None
    number = _number(value)
    if number is not None:
        return max(0.0, number)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
