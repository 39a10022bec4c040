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

Adapting: platforms say when we are too fast. :meth:`RateLimiter.observe` reads

* ``Retry-After`` (429/503): every process pauses until then. The pause is its own key that the
  burst allowance never shortens (a 2 s pause with ``burst=20`` is 2 s), and afterwards calls
  resume one interval apart rather than as a burst;
* Naver's ``GNCP-GW-RateLimit-Replenish-Rate`` (tokens per second): the interval follows the
  advertised rate down *and back up*, never faster than our configured limit, for
  ``adapt_ttl_s``;
* ``X-RateLimit-Remaining: 0`` / ``GNCP-GW-RateLimit-Remaining: 0``: pause until
  ``X-RateLimit-Reset`` (seconds) or one interval;
* a 429 without any hint: the interval is widened by 1.5x (at most 10x the configured one).

Adaptations live in Redis with a TTL that every repeated signal refreshes, so every process slows
down together, a platform that keeps saying "slower" keeps us slower, and the configured rate comes
back by itself once it stops. A change is logged once (a repeated identical signal is silent).

Redis down or too slow: :class:`LimiterUnavailableError` (a ``TransientError``); a call is never
made unlimited.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from dropship.errors import ConfigurationError, RateLimitedError, TransientError

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


# The design's defaults, from each platform's published or measured limits (docs/PLATFORMS.md).
DEFAULT_RATE_LIMITS: Mapping[str, RateLimit] = {
    "gentrade": RateLimit(1000, 3600.0),
    "ownerclan": RateLimit(500, 3600.0),
    # 4 % under the design's 100/min: paced at exactly a bucket's rate, every call that
    # scheduling jitter delays past its slot lowers the market's bucket for good (the next call
    # arrives early and nothing refills it); the headroom refills one call every ~25 calls.
    # At 100/min the register bench saw 1 refusal in 10,001 calls on a loaded machine.
    "coupang": RateLimit(96, 60.0),
    "naver": RateLimit(120, 60.0),  # 2/s: measured per application (docs/PLATFORMS.md)
    "domeggook": RateLimit(180, 60.0),  # published: 180/min + 15,000/day (docs/PLATFORMS.md)
}

# KEYS[1] = TAT key, KEYS[2] = adapted-interval key, KEYS[3] = paused-until key
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
-- A pause (Retry-After, remaining 0) is a wall the burst allowance never shortens.
local paused = tonumber(redis.call('GET', KEYS[3]) or '0')
if paused - now > wait then wait = paused - now end
if wait < 0 then wait = 0 end
if wait > max_wait then
  return {0, string.format('%.3f', wait)}
end
local new_tat = tat + interval
if new_tat < now + wait + interval then new_tat = now + wait + interval end
local ttl = math.ceil(new_tat - now + burst * interval) + 1000
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', ttl)
return {1, string.format('%.3f', wait)}
"""

# KEYS[1] = TAT key, KEYS[3] = paused-until key. ARGV[1] = pause (ms), ARGV[2] = interval (ms),
# ARGV[3] = burst. Only ever lengthens a pause. The TAT is pushed to the pause's end plus a full
# burst, so calls resume one interval apart after it (the platform's own bucket is empty then)
# instead of as a burst at the instant the pause ends. Returns the pause end (ms, Redis clock).
PAUSE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local pause = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local until_ms = now + pause
local paused = tonumber(redis.call('GET', KEYS[3]) or '0')
if paused < until_ms then
  redis.call('SET', KEYS[3], string.format('%.3f', until_ms), 'PX', math.ceil(pause) + 1000)
else
  until_ms = paused
end
local floor = until_ms + (burst - 1) * interval
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < floor then
  redis.call('SET', KEYS[1], string.format('%.3f', floor),
             'PX', math.ceil(floor - now + burst * interval) + 1000)
end
return string.format('%.3f', until_ms)
"""

# KEYS[2] = adapted-interval key. ARGV[1] = interval (ms), ARGV[2] = configured interval (ms),
# ARGV[3] = TTL (ms), ARGV[4] = mode: 'raise' keeps the longer of the old and new interval (our
# own backoff after a bare 429), 'set' takes the platform's word both ways (an advertised rate),
# and an interval at or below the configured one removes the adaptation. Every signal refreshes
# the adaptation's lifetime. Returns the interval now in force (ms) and whether it changed.
ADAPT_LUA = """
local interval = tonumber(ARGV[1])
local configured = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
local before = current
if before < configured then before = configured end
if ARGV[4] == 'raise' and current > interval then interval = current end
if interval <= configured then
  redis.call('DEL', KEYS[2])
  interval = configured
else
  redis.call('SET', KEYS[2], string.format('%.3f', interval), 'PX', ttl)
end
local changed = 0
if math.abs(interval - before) > 0.0005 then changed = 1 end
return {string.format('%.3f', interval), changed}
"""


class LimiterUnavailableError(TransientError):
    """The limiter's Redis did not answer; the call was not made. Worth a retry: a caller must
    never go ahead unlimited, so this is not swallowed."""


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
        self._pause_script = client.register_script(PAUSE_LUA)
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
        # {key} is a Redis Cluster hash tag: every key of one account lives in one slot,
        # as a multi-key script requires.
        base = f"{self.key_prefix}:{{{key}}}"
        return [f"{base}:tat", f"{base}:adapted", f"{base}:paused"]

    def _run(self, script: Any, key: str, args: list[Any]) -> Any:
        """Run a limiter script; a Redis that is down or too slow becomes a TransientError
        (the driver's message, which names host and port, is not kept)."""
        try:
            return script(keys=self._keys(key), args=args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            failure = LimiterUnavailableError(
                f"rate limiter unavailable: {type(exc).__name__} for {key}"
            )
        raise failure  # outside the except clause: no driver exception chained

    # ---- acquiring

    def try_acquire(self, key: str, max_wait: float | None = None) -> tuple[bool, float]:
        """Reserve a slot if it is at most ``max_wait`` seconds away. Returns ``(granted, wait_s)``;
        does not sleep."""
        limit = self.limit_for(key)
        budget = self.max_wait_s if max_wait is None else max_wait
        granted, wait_ms = self._run(
            self._acquire_script, key, [limit.interval_s * 1000.0, limit.burst, budget * 1000.0]
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
        """Nobody calls ``key`` for ``seconds`` (e.g. the platform sent Retry-After), whatever
        the burst allowance; afterwards calls resume one interval apart."""
        if seconds > 0:
            limit = self.limit_for(key)
            self._run(
                self._pause_script,
                key,
                [seconds * 1000.0, self.current_interval_s(key) * 1000.0, limit.burst],
            )

    def slow_down(self, key: str, interval_s: float) -> None:
        """Space calls at least ``interval_s`` apart for ``adapt_ttl_s`` seconds (a longer
        adaptation in force is kept; a repeated signal refreshes its lifetime)."""
        self._adapt(key, interval_s, "raise")

    def adapt_to_rate(self, key: str, per_second: float) -> None:
        """The platform advertises ``per_second``: follow it down and back up, never above our
        configured limit."""
        if per_second > 0:
            self._adapt(key, 1.0 / per_second, "set")

    def _adapt(self, key: str, interval_s: float, mode: str) -> None:
        configured = self.limit_for(key).interval_s
        interval_ms, changed = self._run(
            self._adapt_script,
            key,
            [interval_s * 1000.0, configured * 1000.0, self.adapt_ttl_s * 1000.0, mode],
        )
        if int(changed):
            in_force = float(interval_ms) / 1000.0
            if in_force <= configured + 0.0005:
                log.warning(
                    "rate limit for %s back to the configured %.3fs per call", key, in_force
                )
            else:
                log.warning("rate limit for %s adapted to one call per %.3fs", key, in_force)

    def current_interval_s(self, key: str) -> float:
        try:
            adapted = self.redis.get(self._keys(key)[1])
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            failure = LimiterUnavailableError(
                f"rate limiter unavailable: {type(exc).__name__} for {key}"
            )
        else:
            configured = self.limit_for(key).interval_s
            return max(configured, float(adapted) / 1000.0) if adapted else configured
        raise failure

    def observe(self, key: str, status: int, headers: Mapping[str, str]) -> None:
        """Adapt to what a platform response says about our rate (see the module docstring)."""
        lowered = {k.lower(): v for k, v in headers.items()}
        configured = self.limit_for(key)
        hinted = False

        replenish = _number(lowered.get("gncp-gw-ratelimit-replenish-rate"))
        if replenish is not None and replenish > 0:
            self.adapt_to_rate(key, replenish)
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
