"""Buyers who cancel by themselves: a share of the orders the sandbox markets create on their
own (``order_rate_per_min``) gets a cancel request ``buyer_cancel_after_s`` world seconds
later, which the connectors' claim reads then return, so `dropship up`'s claims sweep has work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from dropship.platforms.interfaces import MarketListingRequest
from tests.platforms.conftest import SandboxFixture
from tests.platforms.hosted_images import market_image_urls

pytestmark = pytest.mark.timeout(60)

CATEGORIES = {"coupang": "56137", "naver": "50000156"}


def _world(sandbox: SandboxFixture, share: float) -> None:
    sandbox.state.reset(
        replace(
            sandbox.state.initial_config,
            order_rate_per_min=20.0,
            buyer_cancel_share=share,
            buyer_cancel_after_s=300.0,
        )
    )
    sandbox.freeze_clock()


def _list_one(sandbox: SandboxFixture, connector: Any, market: str) -> None:
    connector.create_listing(
        MarketListingRequest(
            external_sku=f"dsk-cancel-{market}",
            name="접이식 캠핑의자",
            sale_price=32_000,
            stock=999,
            category_id=CATEGORIES[market],
            images=market_image_urls(sandbox, market),
            shipping_fee=3_000,
        )
    )


def _orders_and_claims(connector: Any, sandbox: SandboxFixture) -> tuple[set[str], list[Any]]:
    now = sandbox.state.now()
    since = now - timedelta(hours=2)
    until = now + timedelta(minutes=1)
    orders = {o.market_order_id for o in connector.iter_orders(since, until)}
    claims = list(connector.iter_claims(since, until))
    return orders, claims


@pytest.mark.parametrize("market", ["coupang", "naver"])
def test_a_share_of_arriving_orders_is_cancelled_by_its_buyer_later(
    sandbox: SandboxFixture, make_connector: Callable[[str], Any], market: str
) -> None:
    _world(sandbox, share=1.0)
    connector = make_connector(f"{market}_main")
    _list_one(sandbox, connector, market)
    sandbox.advance_clock(180)  # ~60 orders arrive; their buyers ask at +300 s
    orders, claims = _orders_and_claims(connector, sandbox)
    assert len(orders) > 10, orders
    assert claims == []  # not yet: the buyers ask 300 s after their order

    sandbox.advance_clock(400)
    _, claims = _orders_and_claims(connector, sandbox)
    asked = {c.market_order_id for c in claims}
    # Every order of the first 180 s is asked to be cancelled, before shipment (none shipped).
    assert orders <= asked, (len(orders), len(asked))
    assert {c.kind for c in claims} == {"cancel"}
    assert all(c.open for c in claims)


@pytest.mark.parametrize("market", ["coupang", "naver"])
def test_no_buyer_cancels_by_default(
    sandbox: SandboxFixture, make_connector: Callable[[str], Any], market: str
) -> None:
    _world(sandbox, share=0.0)
    connector = make_connector(f"{market}_main")
    _list_one(sandbox, connector, market)
    sandbox.advance_clock(180)
    orders, _ = _orders_and_claims(connector, sandbox)
    sandbox.advance_clock(400)
    _, claims = _orders_and_claims(connector, sandbox)
    assert len(orders) > 10 and claims == []
