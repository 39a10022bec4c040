"""What keeps registration at the markets' allowed call rate: a first registration costs one
call (no look-up for a claim that never sent anything), a rate-limit wait stops the batch
instead of spending look-ups, and batches are published one account after another."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis as redis_lib
from sqlalchemy import Engine

from dropship.errors import RateLimitedError, TransientError
from dropship.listings import services
from dropship.platforms.config import PlatformSettings, RateLimitSettings, RateLimitTable
from tasks.listings import interleaved_batches
from tests.images.conftest import image_store  # noqa: F401  (fixture)
from tests.listings.test_register import (  # noqa: F401  (fixtures)
    accounts,
    catalog,
    listing_rows,
    register_until_done,
)
from tests.platforms.conftest import (  # noqa: F401  (fixtures)
    SandboxFixture,
    connector_settings,
    make_connector,
    sandbox,
    sandbox_server,
)


def test_batches_alternate_between_accounts() -> None:
    planned = {"a": list(range(5)), "b": list(range(10, 12)), "c": []}
    assert interleaved_batches(planned, batch_size=2) == [
        ("a", [0, 1]),
        ("b", [10, 11]),
        ("a", [2, 3]),
        ("a", [4]),
    ]


@pytest.mark.parametrize("platform", ["coupang", "naver"])
def test_a_first_registration_is_one_call_a_retry_looks_the_key_up(
    sandbox: SandboxFixture,  # noqa: F811
    catalog: dict[str, list[int]],  # noqa: F811
    make_connector: Callable[[str], Any],  # noqa: F811
    rules_db: Engine,
    platform: str,
) -> None:
    account = f"{platform}_main"
    ids = services.plan_registrations(account)["publish"]
    sandbox.set_faults(platform, lost_response_rate=1.0, lost_response_mode="5xx")
    with pytest.raises(TransientError):  # the lost answer
        services.register_listings(account, ids[:1], make_connector)
    sandbox.set_faults(platform, lost_response_rate=0.0)
    assert services.register_listings(account, ids, make_connector)["active"] == 6
    calls = sandbox.counts()["calls"][platform]
    lookups = calls.get(
        "seller-products.by-external-sku" if platform == "coupang" else "products.search", 0
    )
    creates = calls.get("seller-products.create" if platform == "coupang" else "products.create", 0)
    # Six creates (the lost one counted once), one look-up: the retry of the lost one.
    assert (creates, lookups) == (6, 1)
    assert all(r["status"] == "active" for r in listing_rows(rules_db, account).values())
    assert all(int(n) == 1 for n in sandbox.counts()["listings"].values())


def test_a_rate_limit_wait_stops_the_batch(
    sandbox: SandboxFixture,  # noqa: F811
    catalog: dict[str, list[int]],  # noqa: F811
    connector_settings: PlatformSettings,  # noqa: F811
    redis_url: str,
    rules_db: Engine,
) -> None:
    from dropship.platforms.registry import connector_for

    # One call per minute for this account: the second call would wait far past max_wait.
    slow = connector_settings.model_copy(
        update={"rate_limits": RateLimitTable(coupang=RateLimitSettings(calls=1, period_s=60.0))}
    )
    client = redis_lib.Redis.from_url(redis_url)
    try:
        ids = services.plan_registrations("coupang_main")["publish"]
        with pytest.raises(RateLimitedError) as caught:
            services.register_listings(
                "coupang_main", ids, lambda a: connector_for(a, slow, redis_client=client)
            )
        # One listing done before the wait: the retry's rate-limit budget starts again.
        assert caught.value.progressed
        with pytest.raises(RateLimitedError) as again:
            services.register_listings(
                "coupang_main", ids, lambda a: connector_for(a, slow, redis_client=client)
            )
        assert not again.value.progressed  # nothing done: this wait counts against the budget
    finally:
        client.close()
    statuses = sorted(
        (r["status"], r["attempts"]) for r in listing_rows(rules_db, "coupang_main").values()
    )
    # One registered; the one that met the wait sent nothing, so it is a plain claim again
    # (its retry skips the look-up too); the rest never touched.
    assert statuses == [("active", 1), *[("claimed", 0)] * 5]
    assert sum(sandbox.counts()["calls"]["coupang"].values()) == 1
