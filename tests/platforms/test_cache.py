"""The Redis response cache: gzip round trip, TTL per kind, invalidation, the in-process LRU."""

from __future__ import annotations

import gzip
import json
import time

import pytest
import redis as redis_lib

from dropship.platforms.cache import ResponseCache

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


def test_lru_serves_hot_entries_briefly_and_invalidation_clears_it(
    redis_client: redis_lib.Redis,
) -> None:
    cache = make_cache(redis_client, lru_size=2, lru_ttl_s=0.5)
    cache.set("product_detail", "k", {"v": 1})
    redis_client.delete("dropship:cache:ownerclan_main:product_detail:k")
    assert cache.get("product_detail", "k") == {"v": 1}  # from the LRU
    time.sleep(0.6)
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
