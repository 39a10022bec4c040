"""Response cache in Redis for supplier product detail, with a small in-process LRU in front.

Values are JSON documents stored gzip-compressed (product detail JSON shrinks 4-8x, and Redis
memory is the scarce thing) under ``<prefix>:<namespace>:<kind>:<key>`` with a TTL per *kind*
(``product_detail``, ``product_list``...). The optional LRU keeps the hottest entries in the
process for a few seconds; it is deliberately short-lived because an invalidation in another
process cannot reach it (``lru_ttl_s`` bounds that staleness).

Invalidation: :meth:`ResponseCache.invalidate` drops one key, :meth:`invalidate_prefix` drops
every key of a kind starting with a prefix (``SCAN`` in bounded batches + ``UNLINK``, never
``KEYS``).

Redis down or too slow: the cache is an optimisation, so ``get`` degrades to a miss and ``set``
to a no-op, with a warning (at most one per ``warn_every_s``); callers then load from the
platform. An invalidation is a correctness matter (stale data would be served once Redis is
back), so ``invalidate``/``invalidate_prefix`` raise :class:`CacheUnavailableError`, a
``TransientError``, and the task retries.
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import redis

from dropship.errors import ConfigurationError, TransientError

log = logging.getLogger(__name__)

GZIP_LEVEL = 5  # most of level 9's ratio at a fraction of the CPU
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)


class CacheUnavailableError(TransientError):
    """An invalidation could not reach Redis (reads and writes degrade instead)."""


def _glob_escape(text: str) -> str:
    """Escape Redis glob metacharacters so a prefix matches literally."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class _Lru:
    def __init__(self, size: int, ttl_s: float, clock: Callable[[], float]) -> None:
        self.size = size
        self.ttl_s = ttl_s
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[bool, Any]:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return False, None
            expires, value = item
            if expires < self._clock():
                del self._items[key]
                return False, None
            self._items.move_to_end(key)
            return True, value

    def put(self, key: str, value: Any, ttl_s: float) -> None:
        with self._lock:
            self._items[key] = (self._clock() + min(ttl_s, self.ttl_s), value)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def drop(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)

    def drop_prefix(self, prefix: str) -> None:
        with self._lock:
            for key in [k for k in self._items if k.startswith(prefix)]:
                del self._items[key]


class ResponseCache:
    """``get``/``set``/``get_or_load`` JSON-able values by ``(kind, key)``."""

    def __init__(
        self,
        client: redis.Redis,
        namespace: str,
        *,
        ttl_s: Mapping[str, int] | None = None,
        default_ttl_s: int = 300,
        lru_size: int = 256,
        lru_ttl_s: float = 5.0,
        key_prefix: str = "dropship:cache",
        warn_every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not namespace or ":" in namespace:
            raise ConfigurationError(
                f"cache namespace must be non-empty without ':', got {namespace!r}"
            )
        if default_ttl_s <= 0:
            raise ConfigurationError(f"cache default_ttl_s must be positive, got {default_ttl_s}")
        self.redis = client
        self.namespace = namespace
        self.ttl_s = dict(ttl_s or {})
        self.default_ttl_s = default_ttl_s
        self.key_prefix = key_prefix
        self._lru = _Lru(lru_size, lru_ttl_s, clock) if lru_size > 0 and lru_ttl_s > 0 else None
        self.warn_every_s = warn_every_s
        self._clock = clock
        self._warned_at: float | None = None

    # ---- keys

    def redis_key(self, kind: str, key: str) -> str:
        if not kind or ":" in kind:
            raise ValueError(f"cache kind must be non-empty without ':', got {kind!r}")
        if not key:
            raise ValueError(f"cache key for kind {kind!r} must not be empty")
        return f"{self.key_prefix}:{self.namespace}:{kind}:{key}"

    def ttl_for(self, kind: str) -> int:
        return self.ttl_s.get(kind, self.default_ttl_s)

    # ---- encoding

    @staticmethod
    def encode(value: Any) -> bytes:
        raw = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
        return gzip.compress(raw.encode("utf-8"), compresslevel=GZIP_LEVEL, mtime=0)

    @staticmethod
    def decode(blob: bytes) -> Any:
        return json.loads(gzip.decompress(blob).decode("utf-8"))

    # ---- Redis unavailable

    def _degraded(self, operation: str, exc: BaseException) -> None:
        """Log (class name only: the driver's text names host and port), rate-limited."""
        now = self._clock()
        if self._warned_at is None or now - self._warned_at >= self.warn_every_s:
            self._warned_at = now
            log.warning(
                "cache %s: Redis unavailable (%s) on %s; serving without the cache",
                self.namespace,
                type(exc).__name__,
                operation,
            )

    def _unavailable(self, operation: str, exc: BaseException) -> CacheUnavailableError:
        return CacheUnavailableError(
            f"cache {self.namespace}: Redis unavailable ({type(exc).__name__}) on {operation}"
        )

    # ---- operations

    def get(self, kind: str, key: str) -> Any | None:
        """The cached value, or ``None`` on a miss (so ``None`` itself is not cacheable)."""
        rkey = self.redis_key(kind, key)
        if self._lru is not None:
            hit, value = self._lru.get(rkey)
            if hit:
                return value
        try:
            blob = self.redis.get(rkey)
        except REDIS_DOWN as exc:
            self._degraded("get", exc)
            return None
        if blob is None:
            return None
        try:
            value = self.decode(blob)  # type: ignore[arg-type]
        except (OSError, ValueError, EOFError):
            # Corrupt or foreign entry: treat as a miss and drop it.
            try:
                self.redis.unlink(rkey)
            except REDIS_DOWN as exc:
                self._degraded("get", exc)
            return None
        if self._lru is not None:
            self._lru.put(rkey, value, self.ttl_for(kind))
        return value

    def set(self, kind: str, key: str, value: Any, ttl_s: int | None = None) -> None:
        if value is None:
            raise ValueError("cannot cache None (it means 'miss')")
        rkey = self.redis_key(kind, key)
        ttl = ttl_s if ttl_s is not None else self.ttl_for(kind)
        try:
            self.redis.set(rkey, self.encode(value), ex=ttl)
        except REDIS_DOWN as exc:
            self._degraded("set", exc)
        if self._lru is not None:
            self._lru.put(rkey, value, ttl)

    def get_or_load(self, kind: str, key: str, load: Callable[[], Any]) -> Any:
        """Cached value, or ``load()`` stored for next time (a ``None`` result is not stored)."""
        value = self.get(kind, key)
        if value is not None:
            return value
        value = load()
        if value is not None:
            self.set(kind, key, value)
        return value

    def invalidate(self, kind: str, key: str) -> bool:
        rkey = self.redis_key(kind, key)
        if self._lru is not None:
            self._lru.drop(rkey)
        try:
            return bool(self.redis.unlink(rkey))
        except REDIS_DOWN as exc:
            failure = self._unavailable("invalidate", exc)
        raise failure  # outside the except clause: no driver exception chained

    def invalidate_prefix(self, kind: str, prefix: str = "", batch: int = 500) -> int:
        """Drop every ``kind`` entry whose key starts with ``prefix``; returns how many."""
        if not kind or ":" in kind:
            raise ValueError(f"cache kind must be non-empty without ':', got {kind!r}")
        base = f"{self.key_prefix}:{self.namespace}:{kind}:{prefix}"
        if self._lru is not None:
            self._lru.drop_prefix(base)
        removed = 0
        pending: list[bytes] = []
        try:
            for rkey in self.redis.scan_iter(match=_glob_escape(base) + "*", count=batch):
                pending.append(rkey)
                if len(pending) >= batch:
                    removed += int(self.redis.unlink(*pending))
                    pending.clear()
            if pending:
                removed += int(self.redis.unlink(*pending))
        except REDIS_DOWN as exc:
            failure = self._unavailable("invalidate_prefix", exc)
        else:
            return removed
        raise failure
