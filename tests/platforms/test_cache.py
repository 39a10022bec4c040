"""The Redis response cache: gzip round trip, TTL per kind, invalidation, the in-process LRU."""

from __future__ import annotations

import gzip
import json
import logging
import time
from collections.abc import Iterator

import pytest
import redis as redis_lib

from dropship.embedded.redis import EmbeddedRedis
from dropship.errors import TransientError
from dropship.platforms.cache import CacheUnavailableError, ResponseCache
from tests.own_redis import kill, own_redis_server

PRODUCT = {
    "sku": "OC0000001",
    "name": "프리미엄 텀블러 00001",
    "price": 12_340,
    "options": [{"name": "색상", "value": v, "stock": 3} for v in ("블랙", "화이트", "네이비")]
    * 20,
}


def make_cache(redis_client: redis_lib.Redis, **kwargs: object) -> ResponseCache:
    options: dict[str, object] = {"ttl_s": {"product_detail": 600, "short": 1}, "lru_size": 0}
    options.update(kwargs)
    return ResponseCache(redis_client, "ownerclan_main", **options)  # type: ignore[arg-type]


def test_gzip_round_trip(redis_client: redis_lib.Redis) -> None:
    cache = make_cache(redis_client)
    cache.set("product_detail", "OC0000001", PRODUCT)
    stored = redis_client.get("dropship:cache:ownerclan_main:product_detail:OC0000001")
    assert isinstance(stored, bytes) and stored[:2] == b"\x1f\x8b"  # gzip magic
    assert json.loads(gzip.decompress(stored)) == PRODUCT
    assert len(stored) < len(json.dumps(PRODUCT, ensure_ascii=False).encode()) / 4
    assert cache.get("product_detail", "OC0000001") == PRODUCT
    assert cache.get("product_detail", "missing") is None


def test_ttl_per_kind(redis_client: redis_lib.Redis) -> None:
    cache = make_cache(redis_client, default_ttl_s=42)
    cache.set("product_detail", "a", {"x": 1})
    cache.set("other_kind", "a", {"x": 1})
    cache.set("short", "a", {"x": 1})
    assert 590 < redis_client.ttl("dropship:cache:ownerclan_main:product_detail:a") <= 600
    assert 40 < redis_client.ttl("dropship:cache:ownerclan_main:other_kind:a") <= 42
    time.sleep(1.1)
    assert cache.get("short", "a") is None
    assert cache.get("product_detail", "a") == {"x": 1}


def test_invalidate_one_key_and_a_prefix(redis_client: redis_lib.Redis) -> None:
    cache = make_cache(redis_client)
    for sku in ("A-1", "A-2", "A*3", "B-1"):
        cache.set("product_detail", sku, {"sku": sku})
    cache.set("product_list", "A-1", {"page": 1})
    assert cache.invalidate("product_detail", "B-1") is True
    assert cache.invalidate("product_detail", "B-1") is False
    assert cache.invalidate_prefix("product_detail", "A*") == 1  # '*' matches literally
    assert cache.invalidate_prefix("product_detail", "A-", batch=1) == 2
    assert cache.get("product_list", "A-1") == {"page": 1}  # other kinds untouched
    assert [cache.get("product_detail", s) for s in ("A-1", "A-2", "A*3", "B-1")] == [None] * 4


def test_get_or_load_loads_once(redis_client: redis_lib.Redis) -> None:
    cache = make_cache(redis_client)
    loads: list[str] = []

    def load() -> dict[str, int]:
        loads.append("x")
        return {"v": 1}

    assert cache.get_or_load("product_detail", "k", load) == {"v": 1}
    assert cache.get_or_load("product_detail", "k", load) == {"v": 1}
    assert loads == ["x"]
    assert cache.get_or_load("product_detail", "none", lambda: None) is None
    assert redis_client.exists("dropship:cache:ownerclan_main:product_detail:none") == 0


class FakeClock:
    """The LRU's clock, moved only by the test (a loaded machine cannot expire an entry early)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lru_serves_hot_entries_briefly_and_invalidation_clears_it(
    redis_client: redis_lib.Redis,
) -> None:
    clock = FakeClock()
    cache = make_cache(redis_client, lru_size=2, lru_ttl_s=0.5, clock=clock)
    cache.set("product_detail", "k", {"v": 1})
    redis_client.delete("dropship:cache:ownerclan_main:product_detail:k")
    clock.now += 0.49
    assert cache.get("product_detail", "k") == {"v": 1}  # from the LRU
    clock.now += 0.02
    assert cache.get("product_detail", "k") is None  # LRU entry expired, Redis has none
    cache.set("product_detail", "k", {"v": 2})
    cache.invalidate("product_detail", "k")
    assert cache.get("product_detail", "k") is None


def test_corrupt_entry_is_a_miss(redis_client: redis_lib.Redis) -> None:
    cache = make_cache(redis_client)
    redis_client.set("dropship:cache:ownerclan_main:product_detail:bad", b"not gzip")
    assert cache.get("product_detail", "bad") is None
    assert redis_client.exists("dropship:cache:ownerclan_main:product_detail:bad") == 0


def test_bad_keys_are_rejected_clearly(redis_client: redis_lib.Redis) -> None:
    cache = make_cache(redis_client)
    with pytest.raises(ValueError, match="kind"):
        cache.set("a:b", "k", {"v": 1})
    with pytest.raises(ValueError, match="must not be empty"):
        cache.get("product_detail", "")
    with pytest.raises(ValueError, match="None"):
        cache.set("product_detail", "k", None)


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    yield from own_redis_server()


def test_redis_killed_reads_degrade_to_misses_and_invalidations_fail_loudly(
    own_redis: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """A cache is optional: with its Redis gone, reads are misses and writes are skipped (one
    warning, naming no host or port), so callers load from the platform. An invalidation that
    cannot be done is a TransientError (the task retries) rather than stale data later."""
    client = redis_lib.Redis.from_url(own_redis.url(0), socket_timeout=2, socket_connect_timeout=1)
    cache = make_cache(client)
    cache.set("product_detail", "k", {"v": 1})
    assert cache.get("product_detail", "k") == {"v": 1}
    kill(own_redis)
    caplog.set_level(logging.WARNING, logger="dropship.platforms.cache")
    loads: list[str] = []
    assert cache.get("product_detail", "k") is None
    assert cache.get_or_load("product_detail", "k", lambda: loads.append("x") or {"v": 2}) == {
        "v": 2
    }
    cache.set("product_detail", "other", {"v": 3})  # no exception: skipped
    assert loads == ["x"]
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [  # once, not per call
        "cache ownerclan_main: Redis unavailable (ConnectionError) on get; "
        "serving without the cache"
    ]
    for invalidate in (
        lambda: cache.invalidate("product_detail", "k"),
        lambda: cache.invalidate_prefix("product_detail", "k"),
    ):
        with pytest.raises(TransientError) as caught:
            invalidate()
        assert isinstance(caught.value, CacheUnavailableError)
        assert str(own_redis.port) not in str(caught.value)
        assert caught.value.__cause__ is None and caught.value.__context__ is None
    # Redis is back (same port): the cache works again without a new client.
    own_redis.start()
    cache.set("product_detail", "k", {"v": 4})
    assert cache.get("product_detail", "k") == {"v": 4}
    assert cache.invalidate("product_detail", "k") is True
    client.close()
