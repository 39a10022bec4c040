"""Tracking with a real worker against the sandbox: supplier shipments (looked up by our keys)
reach the markets with the markets' carrier codes; a multi-item order ships partially and each
item is dispatched when its own tracking number exists; every transition is an order_events row
carrying the task id; a second sweep changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine

from dropship.orders import tracking
from dropship.platforms import carriers
from tests.conftest import WorkerProcess
from tests.orderops.conftest import (
    add_order,
    buy,
    events,
    order_row,
    ownerclan_item,
    sandbox_get,
    sandbox_post,
)
from tests.platforms.conftest import SandboxFixture

pytestmark = pytest.mark.usefixtures("frozen_world_clock")


def naver_order(box: SandboxFixture, items: int) -> list[str]:
    ids: list[str] = sandbox_post(box, "naver/orders", {"count": 1, "items_per_order": items})[
        "productOrderIds"
    ]
    return ids


def coupang_box(box: SandboxFixture) -> tuple[str, str, str]:
    """(shipment box id, its vendor item id, its orderId) of a new INSTRUCT box."""
    (box_id,) = sandbox_post(box, "coupang/orders", {"count": 1, "status": "INSTRUCT"})[
        "shipmentBoxIds"
    ]
    sheet = next(
        o for o in sandbox_get(box, "coupang/orders")["orders"] if o["shipmentBoxId"] == box_id
    )
    return str(box_id), str(sheet["orderItems"][0]["vendorItemId"]), str(sheet["orderId"])


def naver_delivery(box: SandboxFixture, product_order_id: str) -> dict[str, Any] | None:
    orders = sandbox_get(box, "naver/orders")["productOrders"]
    po = next(o for o in orders if o["productOrder"]["productOrderId"] == product_order_id)
    delivery: dict[str, Any] | None = po["delivery"]
    return delivery


@pytest.mark.worker
def test_tracking_sweep_ships_partially_and_dispatches_once(
    sandbox: SandboxFixture,
    ops_db: Engine,
    high_worker: WorkerProcess,
    make_connector: Callable[[str], Any],
) -> None:
    from tasks.fulfilment import tracking_sweep

    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 40}, tracking_delay_s=60)
    sku = ownerclan_item(make_connector)
    first, second = naver_order(sandbox, items=2)
    box_id, vendor_item, coupang_order = coupang_box(sandbox)
    a = add_order(ops_db, "naver_main", "naver", first, first, market_group_id="G1")
    b = add_order(ops_db, "naver_main", "naver", second, second, market_group_id="G1")
    # As the order sweep stores it: with the box's orderId, so the upload reads no sheet.
    c = add_order(
        ops_db, "coupang_main", "coupang", box_id, vendor_item, market_group_id=coupang_order
    )
    buy(make_connector, a["key"], sku)
    buy(make_connector, c["key"], sku)
    sandbox.advance_clock(60)  # a and c shipped at the supplier; b is bought only now
    buy(make_connector, b["key"], sku)

    sheet_reads = sandbox.counts()["calls"].get("coupang", {}).get("ordersheets.get", 0)
    result = tracking_sweep.delay().get(timeout=60)
    assert result["shipped"] == 2 and result["dispatched"] == 2, (result, high_worker.log()[-3000:])
    assert sandbox.counts()["calls"]["coupang"].get("ordersheets.get", 0) == sheet_reads
    row_a, row_b, row_c = (order_row(ops_db, o["key"]) for o in (a, b, c))
    assert (row_a["status"], row_b["status"], row_c["status"]) == (
        "dispatched",
        "forwarded",
        "dispatched",
    )
    supplier_orders = {
        o["order_key"]: o
        for o in sandbox_get(sandbox, "suppliers/orders?supplier=ownerclan")["orders"]
    }
    # The market has the supplier's tracking number under its own carrier code.
    shipped_a = supplier_orders[a["key"]]
    delivery = naver_delivery(sandbox, first)
    assert delivery is not None
    assert delivery["trackingNumber"] == shipped_a["tracking_number"] == row_a["tracking_number"]
    assert delivery["deliveryCompany"] == carriers.market_code("naver", row_a["carrier"])
    assert naver_delivery(sandbox, second) is None  # partial: the second item waits
    sheet = next(
        o
        for o in sandbox_get(sandbox, "coupang/orders")["orders"]
        if str(o["shipmentBoxId"]) == box_id
    )
    assert sheet["status"] == "DEPARTURE"
    assert sheet["invoiceNumber"] == supplier_orders[c["key"]]["tracking_number"]

    # Every transition has its event with the sweep's task id.
    kinds = [(e["kind"], e["task_id"]) for e in events(ops_db, a["id"])]
    assert [k for k, _ in kinds] == ["shipped", "dispatched"]
    assert all(task_id for _, task_id in kinds)

    sandbox.advance_clock(60)
    again = tracking_sweep.delay().get(timeout=60)
    assert again["shipped"] == 1 and again["dispatched"] == 1
    assert order_row(ops_db, b["key"])["status"] == "dispatched"
    assert naver_delivery(sandbox, second) is not None

    # Nothing is sent twice.
    third = tracking_sweep.delay().get(timeout=60)
    assert third["shipped"] == 0 and third["dispatched"] == 0
    assert sandbox.counts()["coupang_invoices"] == {box_id: 1}


def test_coupang_box_waits_for_all_items_and_refuses_split_tracking(
    sandbox: SandboxFixture,
    ops_db: Engine,
    make_connector: Callable[[str], Any],
) -> None:
    """Two items of one Coupang box: nothing is uploaded while one has not shipped; with two
    different tracking numbers the box is left to an operator with the reason."""
    box_id, vendor_item, _ = coupang_box(sandbox)  # stored without its orderId: read first
    x = add_order(
        ops_db,
        "coupang_main",
        "coupang",
        box_id,
        vendor_item,
        status="shipped",
        carrier="cj",
        tracking_number="111122223333",
    )
    y = add_order(ops_db, "coupang_main", "coupang", box_id, "79000000001", status="forwarded")
    result = tracking.dispatch_tracking(factory=make_connector)
    assert result["dispatched"] == 0 and order_row(ops_db, x["key"])["status"] == "shipped"
    with ops_db.begin() as conn:
        from sqlalchemy import text

        conn.execute(
            text(
                "UPDATE orders SET status = 'shipped', carrier = 'cj', "
                "tracking_number = '999988887777' WHERE order_key = :k"
            ),
            {"k": y["key"]},
        )
    result = tracking.dispatch_tracking(factory=make_connector)
    assert result["dispatched"] == 0 and result["refused"] == 1
    row = order_row(ops_db, x["key"])
    assert row["status"] == "shipped" and "split shipping" in row["status_reason"]
    assert "coupang_invoices" not in sandbox.counts()
