"""The sandbox server's core: configuration, shared state, the base handler and the server.

One tornado application on one port serves all five platforms under path prefixes
(``/ownerclan``, ``/domeggook``, ``/gentrade``, ``/coupang``, ``/naver``); each platform module
(``dropship/sandbox/<platform>.py``) exposes ``routes(state) -> list[(pattern, handler, kwargs)]``
and its handlers subclass :class:`SandboxHandler`, whose ``prepare()``:

1. counts the call (per platform and endpoint),
2. enforces the platform's rate limit with a real ``429`` and the platform's headers
   (``Retry-After`` everywhere; Naver's ``GNCP-GW-RateLimit-*`` and ``GW.RATE_LIMIT`` body),
3. applies the platform's injected faults (5xx, timeouts, slow responses) and decides whether
   this request's answer will be *lost* (see :meth:`SandboxHandler.finish`).

Rate limiting model (why a token bucket): Naver documents its gateway as a token bucket per
application (replenish rate + burst capacity, the ``GNCP-GW-RateLimit-*`` headers), and Coupang
blocks "calls per second" above its standard, i.e. it counts over a short window with a little
slack. A token bucket with rate ``calls/period`` and a small capacity (``burst``) models both: the
long-run rate can never exceed the configured limit, and the capacity is the tolerance for
requests that were *sent* evenly spaced by our limiter but *arrive* bunched up by network and
scheduler jitter. A client pacing at exactly the limit is never rejected as long as its arrival
jitter stays under ``(burst - 1) / rate`` seconds; a client that ignores the limit is rejected
after ``burst`` calls.

Admin endpoints live under ``/_sandbox/`` and are neither counted nor limited: ``GET health``,
``GET counts``, ``POST faults``, ``POST rate_limits``, ``POST clock``, ``POST reset``.

Tornado runs handlers on a single IOLoop thread; the state is nevertheless guarded by a lock
because tests read and change it from their own thread. Slow and timeout faults ``await``
``asyncio.sleep`` so one held request never blocks the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import math
import random
import socket
import struct
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

import tornado.httpserver
import tornado.netutil
import tornado.web

from dropship.sandbox.credentials import PLATFORMS

log = logging.getLogger(__name__)

T = TypeVar("T")

# Platform modules mounted by build_app, in order. Missing modules are skipped (so the server
# runs while they are being written); a module that exists but fails to import is an error.
PLATFORM_MODULES: tuple[str, ...] = (
    "dropship.sandbox.suppliers",
    "dropship.sandbox.images",
    "dropship.sandbox.ownerclan",
    "dropship.sandbox.domeggook",
    "dropship.sandbox.gentrade",
    "dropship.sandbox.coupang",
    "dropship.sandbox.naver",
)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class SandboxRateLimit:
    """``calls`` per ``period_s`` seconds, with a bucket capacity of ``burst`` calls."""

    calls: int
    period_s: float
    burst: int = 0  # 0 = derive: about one second of calls, at least 2

    def __post_init__(self) -> None:
        if self.calls <= 0 or self.period_s <= 0:
            raise ValueError(
                f"rate limit needs positive calls and period_s, got {self.calls}/{self.period_s}s"
            )
        if self.burst < 0:
            raise ValueError(f"rate limit burst must not be negative, got {self.burst}")

    @property
    def rate_per_s(self) -> float:
        return self.calls / self.period_s

    @property
    def capacity(self) -> int:
        if self.burst:
            return self.burst
        return max(2, math.ceil(self.rate_per_s))


# The design's defaults (docs/PLATFORMS.md "Rate limits"); domeggook publishes none.
DEFAULT_SANDBOX_RATE_LIMITS: Mapping[str, SandboxRateLimit] = {
    "ownerclan": SandboxRateLimit(500, 3600.0),
    "domeggook": SandboxRateLimit(180, 60.0),
    "gentrade": SandboxRateLimit(1000, 3600.0),
    "coupang": SandboxRateLimit(100, 60.0),
    "naver": SandboxRateLimit(2, 1.0, burst=4),  # measured: 2/s, burst 4 per application
}

DEFAULT_TOKEN_TTLS_S: Mapping[str, int] = {
    "ownerclan": 30 * 86_400,  # OwnerClan seller JWTs are long-lived
    "naver": 3 * 3600,  # Naver OAuth2 access token: 3 hours
}


@dataclass(frozen=True)
class SandboxConfig:
    seed: int = 42
    catalog_size: int = 500  # products per supplier
    order_rate_per_min: float = 0.5  # new marketplace orders per minute per market
    # Share of the orders that arrive by themselves whose buyer asks to cancel, and when
    # (world seconds after the order): before shipment a cancel request, after it a return.
    buyer_cancel_share: float = 0.0
    buyer_cancel_after_s: float = 600.0
    soldout_rate: float = 0.05
    price_drift: float = 0.02  # max relative cost change (at most one change per world week)
    tracking_delay_s: float = 3600.0  # purchase order -> tracking number appears
    rate_limits: Mapping[str, SandboxRateLimit] = field(
        default_factory=lambda: dict(DEFAULT_SANDBOX_RATE_LIMITS)
    )
    token_ttls_s: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_TOKEN_TTLS_S))
    coupang_signature_max_skew_s: int = 300
    # True: the markets' limits apply per account (Coupang per vendorId, Naver per application),
    # as on the real platforms; False (default): one bucket per platform, stricter when several
    # accounts share it.
    per_account_rate_limits: bool = False

    def __post_init__(self) -> None:
        if self.catalog_size < 0:
            raise ValueError(f"catalog_size must not be negative, got {self.catalog_size}")
        if not 0.0 <= self.soldout_rate <= 1.0:
            raise ValueError(f"soldout_rate must be within [0, 1], got {self.soldout_rate}")
        if self.order_rate_per_min < 0:
            raise ValueError(
                f"order_rate_per_min must not be negative, got {self.order_rate_per_min}"
            )
        if not 0.0 <= self.buyer_cancel_share <= 1.0:
            raise ValueError(
                f"buyer_cancel_share must be within [0, 1], got {self.buyer_cancel_share}"
            )
        if self.buyer_cancel_after_s < 0:
            raise ValueError(
                f"buyer_cancel_after_s must not be negative, got {self.buyer_cancel_after_s}"
            )
        unknown = set(self.rate_limits) - set(PLATFORMS)
        if unknown:
            raise ValueError(f"rate_limits for unknown platform(s): {sorted(unknown)}")

    def with_rate_limit(
        self, platform: str, calls: int, period_s: float, burst: int = 0
    ) -> SandboxConfig:
        limits = dict(self.rate_limits)
        limits[platform] = SandboxRateLimit(calls, period_s, burst)
        return replace(self, rate_limits=limits)

    def with_all_rate_limits(self, calls: int, period_s: float, burst: int = 0) -> SandboxConfig:
        """Same limit on every platform (tests use a generous one)."""
        return replace(
            self, rate_limits={p: SandboxRateLimit(calls, period_s, burst) for p in PLATFORMS}
        )


@dataclass
class FaultConfig:
    """Per-platform fault injection. Rates are probabilities per request in [0, 1]."""

    error_rate: float = 0.0  # answer 500/502/503
    timeout_rate: float = 0.0  # hold the request ``timeout_s`` then answer 504
    timeout_s: float = 5.0
    slow_ms: int = 0  # delay every request by this much
    malformed_rate: float = 0.0  # platform modules corrupt a record (see fault_hit)
    duplicate_order_rate: float = 0.0  # platform modules deliver an order twice
    # A *lost response*: a mutating request is fully executed (orders, listings, counters), then
    # its answer never reaches the client. ``lost_response_mode`` says how it is lost:
    # "timeout" (held ``timeout_s``, past the client's read timeout, then 504), "5xx" (502 or 504
    # as from a gateway whose backend committed), "reset" (connection reset, no answer at all),
    # or "mixed" (one of the three per request, from the seeded generator).
    lost_response_rate: float = 0.0
    lost_response_mode: str = "mixed"
    # Markets (coupang, naver): the next N suspension / stock-zero requests are answered 200 as
    # usual and silently not applied (counter ``dropped_suspensions``). Each dropped request
    # lowers it by one. The overselling bug a client must catch by reading the listing back.
    drop_suspensions: int = 0
    # OwnerClan: refuse a mutation document with more than one root field, as a server that
    # takes one mutation per request would (an error without a path: nothing executed).
    one_mutation_per_request: bool = False

    RATE_FIELDS: ClassVar[tuple[str, ...]] = (
        "error_rate",
        "timeout_rate",
        "malformed_rate",
        "duplicate_order_rate",
        "lost_response_rate",
    )
    LOST_RESPONSE_MODES: ClassVar[tuple[str, ...]] = ("mixed", "timeout", "5xx", "reset")

    def validate(self) -> None:
        for name in self.RATE_FIELDS:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"fault {name} must be within [0, 1], got {value}")
        if self.error_rate + self.timeout_rate > 1.0:
            raise ValueError("fault error_rate + timeout_rate must not exceed 1")
        if self.slow_ms < 0 or self.timeout_s < 0:
            raise ValueError("fault slow_ms and timeout_s must not be negative")
        if self.drop_suspensions < 0:
            raise ValueError("fault drop_suspensions must not be negative")
        if self.lost_response_mode not in self.LOST_RESPONSE_MODES:
            raise ValueError(
                f"fault lost_response_mode must be one of {self.LOST_RESPONSE_MODES}, "
                f"got {self.lost_response_mode!r}"
            )


@dataclass(frozen=True)
class LostResponse:
    """How one executed request's answer is lost: ``kind`` "timeout", "5xx" or "reset";
    ``status`` is the gateway status sent for "5xx" (502/504) and after a "timeout" hold (504)."""

    kind: str
    status: int = 504


FAULT_FIELDS: frozenset[str] = frozenset(f.name for f in fields(FaultConfig))


# --------------------------------------------------------------------------- state


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    retry_after_s: float
    remaining: int
    limit: SandboxRateLimit


class _TokenBucket:
    def __init__(self, limit: SandboxRateLimit, now: float) -> None:
        self.limit = limit
        self.tokens = float(limit.capacity)
        self.updated = now

    def take(self, now: float) -> RateDecision:
        rate = self.limit.rate_per_s
        capacity = self.limit.capacity
        self.tokens = min(float(capacity), self.tokens + (now - self.updated) * rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return RateDecision(True, 0.0, int(self.tokens), self.limit)
        return RateDecision(False, (1.0 - self.tokens) / rate, 0, self.limit)


class SandboxState:
    """The world, the counters, the faults and the rate limiters; thread-safe."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.lock = threading.RLock()
        self.initial_config = config or SandboxConfig()
        self.mounted_platforms: list[str] = []
        # Base URL of the catalog images (dropship/sandbox/images.py); the server sets it to its
        # own address once listening, and reset keeps it.
        self.image_base = "https://img.sandbox.invalid"
        self._reset_locked(self.initial_config)

    # ---- lifecycle

    def _reset_locked(self, config: SandboxConfig) -> None:
        self.config = config
        self.clock_offset_s = 0.0
        # Wall-clock instant the world clock is frozen at (None: it runs with the wall clock).
        self._clock_frozen_at: datetime | None = None
        self.calls: dict[str, Counter[str]] = defaultdict(Counter)
        self.violations: Counter[str] = Counter()
        self.counters: dict[str, Counter[str]] = defaultdict(Counter)
        self.faults: dict[str, FaultConfig] = {p: FaultConfig() for p in PLATFORMS}
        self._fault_rngs = {p: random.Random(f"{config.seed}:faults:{p}") for p in PLATFORMS}
        self._buckets: dict[tuple[str, str | None], _TokenBucket] = {}
        self._stores: dict[str, Any] = {}

    def reset(self, config: SandboxConfig | None = None) -> None:
        """Forget everything (counts, faults, platform data, clock offset and freeze); back to
        ``config`` or the configuration the state was created with."""
        with self.lock:
            self._reset_locked(config or self.initial_config)

    # ---- world

    def now(self) -> datetime:
        """World time: wall clock (or the instant it was frozen at) plus the offset tests add
        with ``advance_clock``."""
        frozen = self._clock_frozen_at
        wall = frozen if frozen is not None else datetime.now(UTC)
        return wall + timedelta(seconds=self.clock_offset_s)

    def advance_clock(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"the world clock only moves forward, got {seconds}")
        with self.lock:
            self.clock_offset_s += seconds

    @property
    def clock_frozen(self) -> bool:
        return self._clock_frozen_at is not None

    def freeze_clock(self, frozen: bool = True) -> None:
        """Stop (or restart) the world clock's wall-clock part, so world time moves only by
        ``advance_clock``: two requests in a test then see the same world instant (no price
        drift step or expiry can land between them by chance). Unfreezing resumes from the wall
        clock, i.e. world time jumps forward by the time spent frozen (it never moves back).
        ``reset`` unfreezes."""
        with self.lock:
            if frozen and self._clock_frozen_at is None:
                self._clock_frozen_at = datetime.now(UTC)
            elif not frozen:
                self._clock_frozen_at = None

    def platform_store(self, platform: str, factory: Callable[[], T]) -> T:
        """Per-platform mutable data (orders, listings, tokens...), created on first use and
        dropped by ``reset``. Callers mutate it under ``state.lock``."""
        with self.lock:
            if platform not in self._stores:
                self._stores[platform] = factory()
            store: T = self._stores[platform]
            return store

    # ---- counting

    def record_call(self, platform: str, endpoint: str) -> None:
        with self.lock:
            self.calls[platform][endpoint] += 1

    def count(self, name: str, key: str | None = None, amount: int = 1) -> None:
        """Count an event, e.g. ``count("purchase_orders", order_key)``,
        ``count("listings", external_sku)``."""
        with self.lock:
            self.counters[name][key if key is not None else "_total"] += amount

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            calls = {p: dict(c) for p, c in self.calls.items()}
            out: dict[str, Any] = {
                "calls": calls,
                "calls_total": {p: sum(c.values()) for p, c in self.calls.items()},
                "rate_limit_violations": {p: self.violations.get(p, 0) for p in PLATFORMS},
                "purchase_orders": {},
                "listings": {},
                "lost_responses": {},
            }
            for name, counter in self.counters.items():
                out[name] = dict(counter)
            return out

    # ---- rate limits

    def set_rate_limit(self, platform: str, limit: SandboxRateLimit) -> None:
        self._check_platform(platform)
        with self.lock:
            limits = dict(self.config.rate_limits)
            limits[platform] = limit
            self.config = replace(self.config, rate_limits=limits)
            for key in [k for k in self._buckets if k[0] == platform]:
                del self._buckets[key]

    def rate_limit(self, platform: str) -> SandboxRateLimit:
        return self.config.rate_limits.get(platform) or DEFAULT_SANDBOX_RATE_LIMITS[platform]

    def take_token(self, platform: str, account: str | None = None) -> RateDecision:
        """One call's token. ``account`` (the caller's vendor / application) gets its own
        bucket when ``config.per_account_rate_limits`` is on; otherwise it is ignored."""
        with self.lock:
            now = time.monotonic()
            key = (platform, account if self.config.per_account_rate_limits else None)
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _TokenBucket(self.rate_limit(platform), now)
            decision = bucket.take(now)
            if not decision.allowed:
                self.violations[platform] += 1
            return decision

    # ---- faults

    def set_faults(self, platform: str, **settings: Any) -> FaultConfig:
        self._check_platform(platform)
        unknown = set(settings) - FAULT_FIELDS
        if unknown:
            raise ValueError(
                f"unknown fault setting(s) {sorted(unknown)}; known: {sorted(FAULT_FIELDS)}"
            )
        with self.lock:
            current = asdict(self.faults[platform])
            current.update(settings)
            try:
                updated = FaultConfig(**{k: type(current[k])(v) for k, v in current.items()})
            except (TypeError, ValueError) as exc:
                raise ValueError(f"invalid fault settings for {platform}: {exc}") from None
            updated.validate()
            self.faults[platform] = updated
            return updated

    def fault_roll(self, platform: str) -> float:
        with self.lock:
            return self._fault_rngs[platform].random()

    def roll_lost_response(self, platform: str) -> LostResponse | None:
        """Whether (and how) a mutating request's answer is lost, from the platform's seeded
        fault generator. Draws nothing while ``lost_response_rate`` is 0, so turning the fault
        on leaves the other faults' sequences as they were up to that point."""
        with self.lock:
            faults = self.faults[platform]
            rate = faults.lost_response_rate
            if rate <= 0:
                return None
            rng = self._fault_rngs[platform]
            if rng.random() >= rate:
                return None
            kind = faults.lost_response_mode
            if kind == "mixed":
                kind = rng.choice(("timeout", "5xx", "reset"))
            return LostResponse(kind, rng.choice((502, 504)) if kind == "5xx" else 504)

    def fault_hit(self, platform: str, rate_name: str) -> bool:
        """True with probability ``faults[platform].<rate_name>`` (seeded)."""
        if rate_name not in FaultConfig.RATE_FIELDS:
            raise ValueError(f"unknown fault rate {rate_name!r}; known: {FaultConfig.RATE_FIELDS}")
        with self.lock:
            rate = getattr(self.faults[platform], rate_name)
            return rate > 0 and self._fault_rngs[platform].random() < rate

    def drop_suspension(self, platform: str) -> bool:
        """True when this suspension / stock-zero request must be accepted and not applied (the
        ``drop_suspensions`` fault); spends one from the fault's count and counts it."""
        with self.lock:
            faults = self.faults[platform]
            if faults.drop_suspensions <= 0:
                return False
            self.faults[platform] = replace(faults, drop_suspensions=faults.drop_suspensions - 1)
            self.counters["dropped_suspensions"][platform] += 1
            return True

    @staticmethod
    def _check_platform(platform: str) -> None:
        if platform not in PLATFORMS:
            raise ValueError(f"unknown platform {platform!r}; known: {', '.join(PLATFORMS)}")


# --------------------------------------------------------------------------- handlers


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class _JsonMixin(tornado.web.RequestHandler):
    def write_json(self, obj: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.write(json.dumps(obj, ensure_ascii=False, default=_json_default).encode("utf-8"))

    def json_body(self) -> Any:
        """The request body parsed as JSON; a clear 400 when it is not."""
        try:
            return json.loads(self.request.body or b"null")
        except ValueError:
            raise tornado.web.HTTPError(400, reason="request body is not valid JSON") from None

    def check_xsrf_cookie(self) -> None:  # APIs, not browser forms
        return None


class SandboxHandler(_JsonMixin):
    """Base of every platform handler. Subclasses set ``platform`` (and optionally
    ``endpoint``, the name calls are counted under; default: the class name).

    ``mutating_methods``: the HTTP methods whose requests change the platform's state, the only
    ones whose answers the ``lost_response_rate`` fault loses (losing a read's answer is no
    different from the timeout and 5xx faults). Handlers whose POSTs only read (searches,
    token endpoints) set it to ``frozenset()``; one endpoint serving both (GraphQL) overrides
    :meth:`is_mutating`."""

    platform: ClassVar[str]
    endpoint: ClassVar[str | None] = None
    mutating_methods: ClassVar[frozenset[str]] = frozenset({"POST", "PUT", "PATCH", "DELETE"})

    def initialize(self, state: SandboxState, **_: Any) -> None:
        self.state = state
        self._client_gone = False
        self._lost_response: LostResponse | None = None
        self._losing_response: asyncio.Future[None] | None = None

    def is_mutating(self) -> bool:
        return self.request.method in self.mutating_methods

    def on_connection_close(self) -> None:
        self._client_gone = True
        super().on_connection_close()

    @property
    def platform_path(self) -> str:
        """The request path as the real platform sees it: without our ``/<platform>`` prefix
        (what Coupang signs, for instance)."""
        prefix = "/" + self.platform
        path = self.request.path
        return path[len(prefix) :] if path.startswith(prefix + "/") else path

    def count(self, name: str, key: str | None = None, amount: int = 1) -> None:
        self.state.count(name, key, amount)

    def fault_hit(self, rate_name: str) -> bool:
        return self.state.fault_hit(self.platform, rate_name)

    async def prepare(self) -> None:
        state = self.state
        state.record_call(self.platform, self.call_name())

        decision = state.take_token(self.platform, self.rate_limit_account())
        self.set_rate_limit_headers(decision)
        if not decision.allowed:
            self.write_rate_limited(decision)
            self.finish()
            return

        faults = state.faults[self.platform]
        if faults.slow_ms:
            await self._hold(faults.slow_ms / 1000.0)
        if faults.error_rate or faults.timeout_rate:
            roll = state.fault_roll(self.platform)
            if roll < faults.error_rate:
                status = (500, 502, 503)[int(roll * 1000) % 3]
                self.write_server_error(status)
                self.finish()
                return
            if roll < faults.error_rate + faults.timeout_rate:
                # Hold the request past any sane client read timeout, then give up like a
                # gateway would. Non-blocking: other requests keep being served meanwhile.
                await self._hold(faults.timeout_s)
                if self._client_gone:
                    self.finish()
                    return
                self.write_server_error(504)
                self.finish()
                return
        if faults.lost_response_rate and self.is_mutating():
            # Decided now (in request order, like the faults above, so it follows the seed);
            # carried out in finish(), once the handler has done its work.
            self._lost_response = state.roll_lost_response(self.platform)

    def finish(self, chunk: str | bytes | dict[str, Any] | None = None) -> asyncio.Future[None]:
        """Answer, or lose the answer: with a lost response pending, everything the handler
        wrote is dropped after its work is done (state changed, counters counted) and the client
        gets a held request, a gateway 5xx or a reset connection instead. Refusals (4xx) are
        answered as they are: the platform did nothing, so there is nothing to lose."""
        if self._losing_response is not None:  # the handler's own finish() came first
            return self._losing_response
        lost = self._lost_response
        if lost is None or self.get_status() >= 400:
            return super().finish(chunk)
        self._lost_response = None
        self.count("lost_responses", f"{self.platform}:{self.call_name()}")
        self.clear()  # status, headers and body the handler wrote never reach the client
        self._losing_response = asyncio.ensure_future(self._answer_lost(lost))
        return self._losing_response

    async def _answer_lost(self, lost: LostResponse) -> None:
        try:
            if lost.kind == "reset":
                self._reset_connection()
                return
            if lost.kind == "timeout":
                await self._hold(self.state.faults[self.platform].timeout_s)
            if not self._client_gone:
                self.write_server_error(lost.status)
            super().finish()
        except tornado.web.Finish:  # server shutting down while held
            return

    def _reset_connection(self) -> None:
        """Drop the connection with a TCP reset (SO_LINGER 0), as a crashed gateway does."""
        stream = getattr(self.request.connection, "stream", None)
        sock = getattr(stream, "socket", None)
        if sock is not None:
            with contextlib.suppress(OSError):  # already gone: closing is all that is left
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if stream is not None:
            stream.close()
        self._finished = True  # nothing more will be written; tornado must not try

    async def _hold(self, seconds: float) -> None:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            # The server is shutting down while a request is held: end it quietly instead of
            # logging a 500 for every held request.
            raise tornado.web.Finish() from None

    def call_name(self) -> str:
        """The name this call is counted under (``endpoint``, default the class name)."""
        return self.endpoint or type(self).__name__

    def rate_limit_account(self) -> str | None:
        """The account the platform counts this call against (per-account rate limits);
        ``None``: the platform's shared bucket. Markets override it."""
        return None

    # ---- platform-shaped responses (override per platform when its shape differs)

    def set_rate_limit_headers(self, decision: RateDecision) -> None:
        limit = decision.limit
        if self.platform == "naver":
            # Naver's gateway headers (token bucket per application and API).
            self.set_header("GNCP-GW-RateLimit-Replenish-Rate", _fmt_rate(limit.rate_per_s))
            self.set_header("GNCP-GW-RateLimit-Burst-Capacity", str(limit.capacity))
            self.set_header("GNCP-GW-RateLimit-Requested-Tokens", "1")
            self.set_header("GNCP-GW-RateLimit-Remaining", str(decision.remaining))
        else:
            self.set_header("X-RateLimit-Limit", str(limit.calls))
            self.set_header("X-RateLimit-Remaining", str(decision.remaining))

    def write_rate_limited(self, decision: RateDecision) -> None:
        retry_after = max(1, math.ceil(decision.retry_after_s))
        self.set_header("Retry-After", str(retry_after))
        if self.platform == "naver":
            body: Any = {
                "code": "GW.RATE_LIMIT",
                "message": "요청이 많아 서비스를 일시적으로 사용할 수 없습니다.",
                "timestamp": self.state.now().isoformat(),
            }
        elif self.platform == "coupang":
            body = {"code": "ERROR", "message": "Too Many Requests", "data": None}
        elif self.platform == "ownerclan":
            body = {"errors": [{"message": "Too many requests", "extensions": {"code": "429"}}]}
        else:
            body = {"errors": {"status": 429, "code": "429", "message": "Too Many Requests"}}
        self.write_json(body, status=429)

    def write_server_error(self, status: int) -> None:
        self.write_json(
            {"code": "ERROR", "message": f"sandbox injected fault ({status})"}, status=status
        )


def _fmt_rate(rate: float) -> str:
    return str(int(rate)) if rate == int(rate) else f"{rate:.4f}".rstrip("0")


class EchoHandler(SandboxHandler):
    """``/<platform>/_echo``: a minimal endpoint that goes through the platform's counting, rate
    limit and faults, for infrastructure tests and benchmarks (limiter, retries)."""

    endpoint = "_echo"

    def get(self) -> None:
        self._echo()

    def post(self) -> None:
        self._echo()

    def _echo(self) -> None:
        call_id = self.get_query_argument("id", None)
        if call_id is not None:
            self.count("echo", f"{self.platform}:{call_id}")
        # ?status=400 answers with that status: lets tests see how clients treat 4xx/5xx.
        status_text = self.get_query_argument("status", "200")
        status = int(status_text) if status_text.isdigit() else 0
        if not 200 <= status <= 599:
            raise tornado.web.HTTPError(400, reason="status must be an HTTP status code")
        body: dict[str, Any] = {"platform": self.platform, "id": call_id, "ok": status < 400}
        if status >= 400:
            body["code"] = f"ECHO_{status}"
        self.write_json(body, status=status)


# --------------------------------------------------------------------------- admin


class AdminHandler(_JsonMixin):
    """Base of ``/_sandbox/...`` handlers: not counted, not rate-limited, no faults."""

    def initialize(self, state: SandboxState) -> None:
        self.state = state

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.write_json({"error": self._reason}, status=status_code)

    def _body_dict(self) -> dict[str, Any]:
        body = self.json_body()
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise tornado.web.HTTPError(400, reason="expected a JSON object")
        return body


class HealthHandler(AdminHandler):
    def get(self) -> None:
        self.write_json(
            {"ok": True, "platforms": self.state.mounted_platforms, "seed": self.state.config.seed}
        )


class CountsHandler(AdminHandler):
    def get(self) -> None:
        self.write_json(self.state.snapshot())


class FaultsHandler(AdminHandler):
    """POST ``{"coupang": {"error_rate": 0.2, ...}, ...}``; GET the current faults."""

    def get(self) -> None:
        with self.state.lock:
            self.write_json({p: asdict(f) for p, f in self.state.faults.items()})

    def post(self) -> None:
        body = self._body_dict()
        result = {}
        try:
            for platform, settings in body.items():
                if not isinstance(settings, dict):
                    raise ValueError(f"faults for {platform!r} must be an object")
                result[platform] = asdict(self.state.set_faults(platform, **settings))
        except ValueError as exc:
            raise tornado.web.HTTPError(400, reason=str(exc)) from None
        self.write_json(result)


class RateLimitsHandler(AdminHandler):
    """POST ``{"coupang": {"calls": 20, "period_s": 1, "burst": 5}}``; GET current limits."""

    def get(self) -> None:
        self.write_json({p: asdict(self.state.rate_limit(p)) for p in PLATFORMS})

    def post(self) -> None:
        body = self._body_dict()
        try:
            for platform, spec in body.items():
                if not isinstance(spec, dict):
                    raise ValueError(f"rate limit for {platform!r} must be an object")
                limit = SandboxRateLimit(
                    int(spec["calls"]), float(spec["period_s"]), int(spec.get("burst", 0))
                )
                self.state.set_rate_limit(platform, limit)
        except (KeyError, TypeError, ValueError) as exc:
            raise tornado.web.HTTPError(400, reason=f"invalid rate limit: {exc}") from None
        self.get()


class ClockHandler(AdminHandler):
    """POST ``{"advance_s": 3600}`` moves the world clock forward, ``{"freeze": true}`` stops
    its wall-clock part (``false`` restarts it); GET shows it."""

    def get(self) -> None:
        self.write_json(
            {
                "now": self.state.now(),
                "offset_s": self.state.clock_offset_s,
                "frozen": self.state.clock_frozen,
            }
        )

    def post(self) -> None:
        body = self._body_dict()
        freeze = body.get("freeze")
        if freeze is not None and not isinstance(freeze, bool):
            raise tornado.web.HTTPError(400, reason="freeze must be true or false")
        try:
            advance_s = float(body.get("advance_s", 0))
        except (TypeError, ValueError) as exc:
            raise tornado.web.HTTPError(400, reason=f"invalid advance_s: {exc}") from None
        if advance_s < 0:
            raise tornado.web.HTTPError(400, reason="advance_s: the world clock only moves forward")
        if freeze is not None:
            self.state.freeze_clock(freeze)
        self.state.advance_clock(advance_s)
        self.get()


class ResetHandler(AdminHandler):
    def post(self) -> None:
        self.state.reset()
        self.write_json({"ok": True})


_AdminHandler = AdminHandler  # older name, still imported by platform modules

# --------------------------------------------------------------------------- app and server

RouteSpec = tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]


def _echo_routes(state: SandboxState) -> list[RouteSpec]:
    routes: list[RouteSpec] = []
    for platform in PLATFORMS:
        handler = type(
            f"{platform.capitalize()}EchoHandler", (EchoHandler,), {"platform": platform}
        )
        routes.append((f"/{platform}/_echo", handler, {"state": state}))
    return routes


def build_app(state: SandboxState) -> tornado.web.Application:
    """Admin + echo routes, then every platform module that exists."""
    routes: list[RouteSpec] = [
        (r"/_sandbox/health", HealthHandler, {"state": state}),
        (r"/_sandbox/counts", CountsHandler, {"state": state}),
        (r"/_sandbox/faults", FaultsHandler, {"state": state}),
        (r"/_sandbox/rate_limits", RateLimitsHandler, {"state": state}),
        (r"/_sandbox/clock", ClockHandler, {"state": state}),
        (r"/_sandbox/reset", ResetHandler, {"state": state}),
    ]
    routes.extend(_echo_routes(state))
    mounted: list[str] = []
    for module_name in PLATFORM_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # not written (yet): run without it
            raise
        routes_factory = getattr(module, "routes", None)
        if routes_factory is None:
            continue  # a helper module (e.g. shared supplier data), not a platform
        routes.extend(routes_factory(state))
        mounted.append(module_name.rsplit(".", 1)[1])
    state.mounted_platforms = mounted
    log.info("sandbox mounted platform modules: %s", ", ".join(mounted) or "(none)")
    return tornado.web.Application(routes)


class SandboxServer:
    """The sandbox on ``host:port`` (port 0 picks a free one) in a background thread."""

    def __init__(
        self,
        config: SandboxConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        state: SandboxState | None = None,
    ) -> None:
        self.state = state or SandboxState(config)
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: tornado.httpserver.HTTPServer | None = None
        self._started = threading.Event()
        self._startup_error: BaseException | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("sandbox server is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> SandboxServer:
        if self._thread is not None:
            raise RuntimeError("sandbox server already started")
        self._thread = threading.Thread(target=self._run, name="sandbox-server", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout_s):
            raise RuntimeError(f"sandbox server did not start within {timeout_s}s")
        if self._startup_error is not None:
            raise RuntimeError(f"sandbox server failed to start: {self._startup_error}") from (
                self._startup_error
            )
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._listen())
        except BaseException as exc:  # report to start() instead of dying silently
            self._startup_error = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:  # e.g. requests held by a timeout fault
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _listen(self) -> None:
        app = build_app(self.state)
        sockets = tornado.netutil.bind_sockets(
            self.requested_port, address=self.host, family=socket.AF_UNSPEC
        )
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets(sockets)
        self._server = server
        self.port = sockets[0].getsockname()[1]
        self.state.image_base = f"{self.base_url}/images"

    def stop(self, timeout_s: float = 10.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.stop()
                try:
                    await asyncio.wait_for(self._server.close_all_connections(), 2.0)
                except TimeoutError:
                    log.warning("sandbox: some connections did not close within 2s")
            loop.stop()

        if loop.is_running():
            loop.call_soon_threadsafe(lambda: loop.create_task(shutdown()))
        thread.join(timeout_s)
        self._thread = None
        self._loop = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
