"""Forwarding against the sandbox over HTTP, real PostgreSQL: one purchase per order key (the
sandbox's own count), as the option the customer chose, also with lost responses and with the
same batch handed to two workers at once; refusals end in ``failed`` with the supplier's reason
and are retried with one call; suppliers without an ordering API wait for a sheet."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dropship.errors import TransientError
from dropship.orders import forwarding
from dropship.sandbox.suppliers import SupplierWorld
from dropship.settings import get_settings
from tests.orders.conftest import (
    Catalog,
    SandboxFixture,
    insert_product,
    list_products,
    listed_catalog,
    order_rows,
    purchase_counts,
    sandbox_items,
    sellable,
    swept,
)

Factory = Callable[[str], Any]


@pytest.fixture
def suppliers(make_connector: Factory) -> Factory:
    return lambda supplier: make_connector(f"{supplier}_main")


@pytest.fixture
def catalog(rules_db: Engine, accounts: None, make_connector: Factory) -> Catalog:
    return listed_catalog(rules_db, make_connector)


def forward_until_done(ids: list[int], suppliers: Factory, rounds: int = 15) -> None:
    for _ in range(rounds):
        try:
            forwarding.forward_orders(ids, connector_factory=suppliers)
            return
        except TransientError:
            continue
    raise AssertionError(f"still failing after {rounds} rounds")


def keys_of(engine: Engine, ids: list[int]) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text("SELECT order_key FROM orders WHERE id = ANY(:ids) ORDER BY id"), {"ids": ids}
            ).scalars()
        )


def test_each_order_item_is_bought_once_as_the_chosen_option(
    sandbox: SandboxFixture,
    catalog: Catalog,
    make_connector: Factory,
    suppliers: Factory,
    rules_db: Engine,
) -> None:
    ids = swept(sandbox, make_connector, "naver_main", catalog.skus[("naver_main", "optioned")], 4)
    ids += swept(
        sandbox, make_connector, "coupang_main", catalog.skus[("coupang_main", "plain")], 2
    )
    counts = forwarding.forward_orders(ids, connector_factory=suppliers)
    assert counts["placed"] == 6, counts
    keys = keys_of(rules_db, ids)
    assert purchase_counts(sandbox, keys) == [1] * 6
    rows = {r["id"]: r for r in order_rows(rules_db)}
    world = SupplierWorld(sandbox.state)
    for order_id in ids:
        row = rows[order_id]
        assert row["status"] == "forwarded" and row["supplier_order_ids"] and row["forwarded_at"]
        (bought,) = world.orders("ownerclan", note=row["order_key"])
        if row["supplier_option_code"]:  # the option the customer chose, by the supplier's code
            assert (
                bought.lines[0].option
                and bought.lines[0].option.split(":")[1] in row["option_label"]
            )
        assert bought.lines[0].quantity == row["quantity"]
    with rules_db.connect() as conn:
        placed = conn.execute(
            text("SELECT count(*) FROM purchase_orders WHERE status = 'placed'")
        ).scalar_one()
        events = (
            conn.execute(
                text("SELECT kind FROM order_events WHERE order_id = :o ORDER BY id"), {"o": ids[0]}
            )
            .scalars()
            .all()
        )
    assert placed == 6
    assert events == ["ingested", "forwarding", "forwarded"]
    # Delivered again (a redelivered task, the sweep re-publishing): nothing is bought again.
    again = forwarding.forward_orders(ids, connector_factory=suppliers)
    assert again["placed"] == 0
    assert purchase_counts(sandbox, keys) == [1] * 6


def test_same_batch_to_two_workers_at_the_same_instant_buys_once(
    sandbox: SandboxFixture,
    catalog: Catalog,
    make_connector: Factory,
    suppliers: Factory,
    rules_db: Engine,
) -> None:
    ids = swept(sandbox, make_connector, "coupang_main", catalog.skus[("coupang_main", "plain")], 5)
    barrier = threading.Barrier(2)
    results: list[dict[str, int]] = []
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            barrier.wait(10)
            results.append(forwarding.forward_orders(ids, connector_factory=suppliers))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sum(r["placed"] for r in results) == 5
    assert purchase_counts(sandbox, keys_of(rules_db, ids)) == [1] * 5
    with rules_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM purchase_orders")).scalar_one() == 5


# "5xx" and "reset" (the purchase is made, then the answer is a 502/504 or a dropped
# connection); "timeout" loses the same way but holds each answer past the client's 5 s timeout.
@pytest.mark.parametrize("mode", ["5xx", "reset"])
def test_lost_responses_at_the_supplier_still_buy_once(
    sandbox: SandboxFixture,
    catalog: Catalog,
    make_connector: Factory,
    suppliers: Factory,
    rules_db: Engine,
    mode: str,
) -> None:
    ids = swept(sandbox, make_connector, "naver_main", catalog.skus[("naver_main", "plain")], 6)
    # Every mutation's answer lost (a batch's creates go out as one aliased mutation, so a
    # partial rate could miss it): each purchase must then be found by its key, never repeated.
    sandbox.set_faults("ownerclan", lost_response_rate=1.0, lost_response_mode=mode)
    forward_until_done(ids, suppliers)
    assert sandbox.counts()["lost_responses"], "the fault never fired"
    assert purchase_counts(sandbox, keys_of(rules_db, ids)) == [1] * 6
    assert {r["status"] for r in order_rows(rules_db)} == {"forwarded"}
    with rules_db.connect() as conn:
        found = conn.execute(
            text(
                "SELECT count(*) FROM order_events WHERE kind = 'forwarded' "
                "AND detail->>'already_existed' = 'true'"
            )
        ).scalar_one()
    assert found >= 1, "no purchase was found by its key after a lost answer"


@pytest.fixture
def no_price_check(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DROPSHIP_ORDERS__PRICE_CHECK", "false")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize("checked", [True, False], ids=["live-check", "supplier-refuses"])
def test_sold_out_at_the_supplier_fails_with_reason_and_asks_for_suspension(
    sandbox: SandboxFixture,
    rules_db: Engine,
    accounts: None,
    make_connector: Factory,
    suppliers: Factory,
    monkeypatch: pytest.MonkeyPatch,
    checked: bool,
) -> None:
    if not checked:
        monkeypatch.setenv("DROPSHIP_ORDERS__PRICE_CHECK", "false")
        get_settings.cache_clear()
    gone = sandbox_items(
        make_connector,
        lambda p: p.status == "soldout" and p.open_market_sellable and not p.options,
        1,
    )[0]
    # Our catalog has not seen the sell-out yet: it still thinks the product is in stock.
    catalog = list_products(
        rules_db, make_connector, {"gone": insert_product(rules_db, gone, stock=10)}
    )
    ids = swept(sandbox, make_connector, "coupang_main", catalog.skus[("coupang_main", "gone")], 1)
    assert forwarding.forward_orders(ids, connector_factory=suppliers)["failed"] == 1
    (row,) = order_rows(rules_db)
    assert row["status"] == "failed"
    assert row["status_reason"].startswith("supplier refused (stock)")
    if not checked:  # the supplier refused, and its product says why
        assert "createOrder failed" in row["status_reason"]
        assert "sold out" in row["status_reason"]
    assert purchase_counts(sandbox, [row["order_key"]]) == [0]
    with rules_db.connect() as conn:
        product = conn.execute(
            text("SELECT status, stock FROM products WHERE id = :p"), {"p": row["product_id"]}
        ).one()
        purchase = conn.execute(
            text("SELECT status, last_error FROM purchase_orders WHERE order_key = :k"),
            {"k": row["order_key"]},
        ).one()
        kinds = (
            conn.execute(
                text("SELECT kind FROM order_events WHERE order_id = :o"), {"o": row["id"]}
            )
            .scalars()
            .all()
        )
        outbox = conn.execute(
            text("SELECT kind FROM sync_outbox WHERE product_id = :p"), {"p": row["product_id"]}
        ).scalars()
        # The listing sync's input: its listings are suspended on every market after the commit.
        assert list(outbox) == ["suspend"]
    assert (product.status, product.stock) == ("soldout", 0)
    assert purchase.status == "failed" and purchase.last_error
    assert "suspension_requested" in kinds


def test_refusal_then_one_call_retry_buys_once(
    sandbox: SandboxFixture,
    catalog: Catalog,
    make_connector: Factory,
    suppliers: Factory,
    rules_db: Engine,
    no_price_check: None,
) -> None:
    ids = swept(sandbox, make_connector, "coupang_main", catalog.skus[("coupang_main", "plain")], 1)
    # The supplier stops offering the item (its catalog shrinks below it) ...
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 0})
    assert forwarding.forward_orders(ids, connector_factory=suppliers)["failed"] == 1
    (row,) = order_rows(rules_db)
    assert row["status"] == "failed" and "no longer offers" in row["status_reason"]
    # ... and offers it again: one call retries.
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 500})
    assert forwarding.retry_order(ids[0]) == {"order_id": ids[0], "status": "new", "forward": True}
    assert forwarding.forward_orders(ids, connector_factory=suppliers)["placed"] == 1
    (row,) = order_rows(rules_db)
    assert row["status"] == "forwarded" and row["status_reason"] is None
    assert purchase_counts(sandbox, [row["order_key"]]) == [1]
    with pytest.raises(Exception, match="only failed or unmatched"):
        forwarding.retry_order(ids[0])


@pytest.mark.parametrize(("ratio", "outcome"), [(0.8, "failed"), (0.97, "placed")])
def test_price_rise_beyond_the_tolerance_is_refused(
    sandbox: SandboxFixture,
    rules_db: Engine,
    accounts: None,
    make_connector: Factory,
    suppliers: Factory,
    ratio: float,
    outcome: str,
) -> None:
    item = sandbox_items(make_connector, lambda p: sellable(p) and not p.options, 1, start=40)[0]
    # We priced the listing on a cost below the supplier's price today.
    cost = int(item.cost_price * ratio)
    catalog = list_products(
        rules_db, make_connector, {"p": insert_product(rules_db, item, price=cost)}
    )
    ids = swept(sandbox, make_connector, "naver_main", catalog.skus[("naver_main", "p")], 1)
    assert forwarding.forward_orders(ids, connector_factory=suppliers)[outcome] == 1
    (row,) = order_rows(rules_db)
    if outcome == "failed":
        assert row["status_reason"].startswith("supplier refused (price)")
        assert purchase_counts(sandbox, [row["order_key"]]) == [0]
        # The catalog catches up with the supplier's price; the operator's retry accepts it.
        with rules_db.begin() as conn:
            conn.execute(
                text("UPDATE products SET price = :p WHERE id = :id"),
                {"p": item.cost_price, "id": row["product_id"]},
            )
        assert forwarding.retry_order(row["id"])["forward"]
        assert forwarding.forward_orders(ids, connector_factory=suppliers)["placed"] == 1
        assert purchase_counts(sandbox, [row["order_key"]]) == [1]
    else:
        assert row["status"] == "forwarded"


def test_supplier_without_ordering_api_waits_for_a_sheet(
    sandbox: SandboxFixture,
    rules_db: Engine,
    accounts: None,
    make_connector: Factory,
) -> None:
    from tests.listings.conftest import add_mapping

    with rules_db.begin() as conn:
        add_mapping(conn, supplier="gentrade", market="coupang")
        add_mapping(conn, supplier="gentrade", market="naver", market_category="50000803")
    product = insert_product(
        rules_db,
        sandbox_items(make_connector, sellable, 1)[0],
        supplier="gentrade",
        supplier_sku="G0001",
    )
    catalog = list_products(rules_db, make_connector, {"g": product})
    ids = swept(sandbox, make_connector, "coupang_main", catalog.skus[("coupang_main", "g")], 2)

    def no_connector(supplier: str) -> Any:
        raise AssertionError(f"{supplier} must not be called")

    counts = forwarding.forward_orders(ids, connector_factory=no_connector)
    assert counts["awaiting_placement"] == 2
    with rules_db.connect() as conn:
        rows = conn.execute(
            text("SELECT status, sheet_id FROM purchase_orders WHERE supplier = 'gentrade'")
        ).all()
    assert [(r.status, r.sheet_id) for r in rows] == [("awaiting_placement", None)] * 2
    assert {r["status"] for r in order_rows(rules_db)} == {"awaiting_placement"}


def test_spent_retries_leave_a_visible_failed_state(
    sandbox: SandboxFixture,
    catalog: Catalog,
    make_connector: Factory,
    suppliers: Factory,
    rules_db: Engine,
) -> None:
    ids = swept(sandbox, make_connector, "coupang_main", catalog.skus[("coupang_main", "plain")], 1)
    sandbox.set_faults("ownerclan", error_rate=1.0)
    with pytest.raises(TransientError):
        forwarding.forward_orders(ids, connector_factory=suppliers)
    (row,) = order_rows(rules_db)
    assert row["status"] == "forwarding"  # outcome unknown: the next attempt looks the key up
    assert forwarding.give_up_forwarding(ids, "RetriesExhaustedError: gave up") == 1
    (row,) = order_rows(rules_db)
    assert row["status"] == "failed" and "gave up after retries" in row["status_reason"]
    sandbox.set_faults("ownerclan", error_rate=0.0)
    assert forwarding.retry_order(ids[0])["forward"]
    assert forwarding.forward_orders(ids, connector_factory=suppliers)["placed"] == 1
    assert purchase_counts(sandbox, [row["order_key"]]) == [1]
