"""Batched forwarding against the sandbox over HTTP, real PostgreSQL: a batch looks all its keys
up in one aliased call before it creates anything, a redelivered batch costs one call and buys
nothing, overlapping batches handed to two workers at the same instant (also while answers are
lost) buy each key once, a key with more than a page of near matches is still found, and an
order sweep running while a forward commits never writes an old status back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dropship.errors import TransientError
from dropship.orders import forwarding, services
from dropship.platforms.interfaces import BuyerInfo, PurchaseOrderLine, PurchaseOrderRequest
from dropship.sandbox.ownerclan import PLATFORM, item_index
from dropship.sandbox.suppliers import SupplierOrderLine, SupplierWorld
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


@pytest.fixture(autouse=True)
def no_price_check(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Calls are counted below: without the live product check a purchase is exactly the
    look-up and the create."""
    monkeypatch.setenv("DROPSHIP_ORDERS__PRICE_CHECK", "false")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def suppliers(make_connector: Factory) -> Factory:
    return lambda supplier: make_connector(f"{supplier}_main")


@pytest.fixture
def catalog(
    no_price_check: None, rules_db: Engine, accounts: None, make_connector: Factory
) -> Catalog:
    return listed_catalog(rules_db, make_connector, optioned=False)


def keys_of(engine: Engine, ids: list[int]) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text("SELECT order_key FROM orders WHERE id = ANY(:ids) ORDER BY id"), {"ids": ids}
            ).scalars()
        )


def graphql_calls(box: SandboxFixture) -> int:
    calls: dict[str, int] = box.counts()["calls"].get("ownerclan", {})
    return sum(n for name, n in calls.items() if "auth" not in name)


def test_a_batch_looks_its_keys_up_in_one_call_then_creates(
    sandbox: SandboxFixture,
    catalog: Catalog,
    make_connector: Factory,
    suppliers: Factory,
    rules_db: Engine,
) -> None:
    ids = swept(
        sandbox, make_connector, "coupang_main", catalog.skus[("coupang_main", "plain")], 10
    )
    assert len(ids) == 10
    before = graphql_calls(sandbox)
    counts = forwarding.forward_orders(ids, task_id="T1", connector_factory=suppliers)
    assert counts["placed"] == 10, counts
    # One aliased allOrders(note:) for the 10 keys, then one request with 10 aliased
    # createOrder (was a look-up and a createOrder per item: 20 calls).
    assert graphql_calls(sandbox) - before == 2
    assert purchase_counts(sandbox, keys_of(rules_db, ids)) == [1] * 10
    with rules_db.connect() as conn:
        kinds = conn.execute(
            text(
                "SELECT kind, count(*), count(DISTINCT order_id), bool_and(task_id = 'T1') "
                "FROM order_events WHERE order_id = ANY(:ids) AND kind LIKE 'forward%' GROUP BY 1"
            ),
            {"ids": ids},
        ).all()
    # One event per item and transition, each with the task id.
    assert set(kinds) == {("forwarding", 10, 10, True), ("forwarded", 10, 10, True)}

    # A redelivered batch: one look-up finds every key, nothing is created or written.
    before = graphql_calls(sandbox)
    again = forwarding.forward_orders(ids, task_id="T2", connector_factory=suppliers)
    assert again["placed"] == 0 and again["skipped"] == 10, again
    assert graphql_calls(sandbox) - before == 0  # already forwarded: not even a look-up
    with rules_db.begin() as conn:  # the forwarded update "lost": the rows still say placing
        conn.execute(
            text("UPDATE orders SET status = 'forwarding' WHERE id = ANY(:ids)"), {"ids": ids}
        )
        conn.execute(text("UPDATE purchase_orders SET status = 'placing'"))
    before = graphql_calls(sandbox)
    again = forwarding.forward_orders(ids, task_id="T3", connector_factory=suppliers)
    assert again["already_placed"] == 10, again
    assert graphql_calls(sandbox) - before == 1
    assert purchase_counts(sandbox, keys_of(rules_db, ids)) == [1] * 10
    assert {r["status"] for r in order_rows(rules_db)} == {"forwarded"}
    with rules_db.connect() as conn:
        tasks = conn.execute(
            text(
                "SELECT DISTINCT task_id FROM order_events WHERE kind = 'forwarded' "
                "AND order_id = ANY(:ids) AND detail->>'already_existed' = 'true'"
            ),
            {"ids": ids},
        ).scalars()
        assert list(tasks) == ["T3"]


@pytest.mark.parametrize("lost", [0.0, 1.0], ids=["clean", "lost-answers"])
def test_overlapping_batches_on_two_workers_at_once_buy_each_key_once(
    sandbox: SandboxFixture,
    catalog: Catalog,
    make_connector: Factory,
    suppliers: Factory,
    rules_db: Engine,
    lost: float,
) -> None:
    ids = swept(sandbox, make_connector, "naver_main", catalog.skus[("naver_main", "plain")], 16)
    assert len(ids) == 16
    if lost:
        sandbox.set_faults("ownerclan", lost_response_rate=lost, lost_response_mode="5xx")
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker(batch: list[int]) -> None:
        try:
            barrier.wait(10)
            for _ in range(20):  # the task's retries, as many as the faults need
                try:
                    result = forwarding.forward_orders(batch, connector_factory=suppliers)
                except TransientError:
                    continue
                if not result["busy"]:
                    return
                time.sleep(0.05)  # the other worker had some: delivered again, as a retry is
            raise AssertionError("batch never finished")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=worker, args=(ids[:11],)),
        threading.Thread(target=worker, args=(ids[5:],)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    if lost:
        assert sandbox.counts()["lost_responses"], "the fault never fired"
    assert purchase_counts(sandbox, keys_of(rules_db, ids)) == [1] * 16
    assert {r["status"] for r in order_rows(rules_db)} == {"forwarded"}
    with rules_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM purchase_orders")).scalar_one() == 16
        forwarded = conn.execute(
            text("SELECT count(DISTINCT order_id) FROM order_events WHERE kind = 'forwarded'")
        ).scalar_one()
    assert forwarded == 16


def test_a_refusal_inside_a_batch_of_creates_fails_that_item_only(
    sandbox: SandboxFixture,
    rules_db: Engine,
    accounts: None,
    make_connector: Factory,
    suppliers: Factory,
) -> None:
    """The sold-out item's createOrder errors in the middle of the aliased mutation: the
    answer's data is null (the field is non-null), so the others' outcomes are unknown; they
    are looked up by key and the missing ones created, each exactly once."""
    plain = sandbox_items(make_connector, lambda p: sellable(p) and not p.options, 1)[0]
    gone = sandbox_items(
        make_connector,
        lambda p: p.status == "soldout" and p.open_market_sellable and not p.options,
        1,
    )[0]
    catalog = list_products(
        rules_db,
        make_connector,
        {
            "plain": insert_product(rules_db, plain),
            "gone": insert_product(rules_db, gone, stock=10),  # the sell-out not seen yet
        },
    )
    account = "coupang_main"
    ids = swept(sandbox, make_connector, account, catalog.skus[(account, "plain")], 3)
    ids += swept(sandbox, make_connector, account, catalog.skus[(account, "gone")], 1)
    ids += swept(sandbox, make_connector, account, catalog.skus[(account, "plain")], 3)
    counts = forwarding.forward_orders(ids, connector_factory=suppliers)
    assert (counts["placed"] + counts["already_placed"], counts["failed"]) == (6, 1), counts
    rows = {r["id"]: r for r in order_rows(rules_db)}
    refused = rows[ids[3]]
    assert refused["status"] == "failed"
    assert refused["status_reason"].startswith("supplier refused (stock)")
    assert [rows[i]["status"] for i in ids if i != ids[3]] == ["forwarded"] * 6
    assert purchase_counts(sandbox, keys_of(rules_db, ids)) == [1, 1, 1, 0, 1, 1, 1]


def test_a_server_taking_one_mutation_per_request_gets_one_create_per_call(
    sandbox: SandboxFixture, catalog: Catalog, make_connector: Factory, rules_db: Engine
) -> None:
    """The aliased creates are refused as a whole (nothing executed): the same creates go out
    one per request, and the connector stays at one per request."""
    sandbox.set_faults("ownerclan", one_mutation_per_request=True)
    connector = make_connector("ownerclan_main")
    ids = swept(sandbox, make_connector, "coupang_main", catalog.skus[("coupang_main", "plain")], 8)
    before = graphql_calls(sandbox)
    counts = forwarding.forward_orders(ids[:4], connector_factory=lambda _: connector)
    assert counts["placed"] == 4, counts
    # look-up, the refused aliased mutation, then 4 single creates
    assert graphql_calls(sandbox) - before == 1 + 1 + 4
    assert connector.creates_per_call == 1
    before = graphql_calls(sandbox)
    counts = forwarding.forward_orders(ids[4:], connector_factory=lambda _: connector)
    assert counts["placed"] == 4, counts
    assert graphql_calls(sandbox) - before == 1 + 4  # no second try of the aliased form
    assert purchase_counts(sandbox, keys_of(rules_db, ids)) == [1] * 8


def test_a_key_behind_a_page_of_near_matches_is_found_not_bought_again(
    sandbox: SandboxFixture, make_connector: Factory
) -> None:
    """``allOrders(note:)`` matches by substring: 101 orders whose notes contain the key come
    before the key's own order, so its exact match is on the second page."""
    connector = make_connector("ownerclan_main")
    sku = sandbox_items(make_connector, lambda p: sellable(p) and not p.options, 1)[0].supplier_sku
    index = item_index(sku)
    assert index is not None
    world = SupplierWorld(sandbox.state)
    key = "coupang:9:77"
    for n in range(101):
        world.create_order(
            PLATFORM, f"{key}{n:03d}", [SupplierOrderLine(index, 1, None, 1000)], {}, "N{serial}"
        )
    request = PurchaseOrderRequest(
        order_key=key,
        lines=(PurchaseOrderLine(sku, 1),),
        receiver=BuyerInfo(name="수령인", phone="010-0000-0000", address="서울"),
    )
    (first,) = connector.place_orders([request])
    assert not first.already_existed
    (second,) = connector.place_orders([request])
    assert second.already_existed and second.supplier_order_ids == first.supplier_order_ids
    assert purchase_counts(sandbox, [key]) == [1]


def test_a_sweep_waits_for_a_forward_and_keeps_its_status(
    sandbox: SandboxFixture, catalog: Catalog, make_connector: Factory, rules_db: Engine
) -> None:
    """The market changes the item's status (acknowledged: ACCEPT -> INSTRUCT) while a forward
    holds the row and commits ``forwarding``: the sweep's update must not put ``new`` back."""
    account = "coupang_main"
    (order_id,) = swept(sandbox, make_connector, account, catalog.skus[(account, "plain")], 1)
    services.acknowledge_orders(account, [order_id], make_connector)
    finished = threading.Event()
    with rules_db.connect() as conn:
        conn.execute(
            text("SELECT id FROM orders WHERE id = :id FOR UPDATE"), {"id": order_id}
        )  # a forward's claim transaction, in flight
        conn.execute(
            text("UPDATE orders SET status = 'forwarding' WHERE id = :id"), {"id": order_id}
        )

        def run_sweep() -> None:
            services.sweep_account(account, make_connector)
            finished.set()

        sweep = threading.Thread(target=run_sweep)
        sweep.start()
        time.sleep(1.5)
        assert not finished.is_set(), "the sweep did not wait for the row"
        conn.commit()
    sweep.join(30)
    assert finished.is_set()
    (row,) = order_rows(rules_db, account)
    assert row["raw_status"] == "INSTRUCT"
    assert row["status"] == "forwarding"
