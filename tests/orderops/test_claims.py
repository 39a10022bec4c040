"""Cancellations and claims with a real worker against the sandbox: a cancellation before
shipment cancels the purchase at the supplier and is then confirmed at the market (Coupang
stoppedShipment, Naver cancel approve); one the supplier is too late for, and a claim after
shipment, are left to an operator with the reason; every change is an event with the task id."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine

from dropship.orders import claims
from dropship.platforms.interfaces import TrackingUpload
from dropship.sandbox.suppliers import SupplierWorld
from tests.conftest import WorkerProcess
from tests.orderops.conftest import (
    add_order,
    buy,
    events,
    order_row,
    ownerclan_item,
    po_row,
    sandbox_get,
    sandbox_post,
)
from tests.orderops.test_tracking import coupang_box, naver_order
from tests.platforms.conftest import SandboxFixture


def supplier_order(box: SandboxFixture, key: str) -> Any:
    (order,) = SupplierWorld(box.state).orders("ownerclan", note=key)
    return order


@pytest.mark.worker
def test_cancellations_before_and_after_shipment(
    sandbox: SandboxFixture,
    ops_db: Engine,
    high_worker: WorkerProcess,
    make_connector: Callable[[str], Any],
) -> None:
    from tasks.fulfilment import claims_sweep

    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 40}, tracking_delay_s=3600)
    sku = ownerclan_item(make_connector)
    # 1. Coupang, bought at OwnerClan, not shipped: the purchase is cancelled, then the box.
    box_id, vendor_item, _ = coupang_box(sandbox)
    bought = add_order(ops_db, "coupang_main", "coupang", box_id, vendor_item)
    buy(make_connector, bought["key"], sku)
    # 2. Naver, not bought yet: nothing to cancel at a supplier, the market cancel is approved.
    (fresh_id,) = naver_order(sandbox, items=1)
    fresh = add_order(
        ops_db, "naver_main", "naver", fresh_id, fresh_id, status="new", po_status=None
    )
    # 3. Naver, already dispatched: the buyer's request becomes a return, for an operator.
    (sent_id,) = naver_order(sandbox, items=1)
    sent = add_order(ops_db, "naver_main", "naver", sent_id, sent_id, status="dispatched")
    make_connector("naver_main").upload_tracking(
        [TrackingUpload(sent_id, (sent_id,), "cj", "555566667777")]
    )
    for body, name in (
        ({"shipmentBoxId": int(box_id)}, "coupang/cancel_requests"),
        ({"productOrderId": fresh_id}, "naver/cancel_requests"),
        ({"productOrderId": sent_id}, "naver/cancel_requests"),
    ):
        sandbox_post(sandbox, name, body)

    results = {r["account"]: r for r in claims_sweep.delay().get(timeout=90)}
    assert results["coupang_main"]["cancelled"] == 1, (results, high_worker.log()[-3000:])
    assert results["naver_main"]["cancelled"] == 1, results

    row = order_row(ops_db, bought["key"])
    assert row["status"] == "cancelled" and row["market_claim_id"]
    assert po_row(ops_db, bought["key"])["status"] == "cancelled"
    assert supplier_order(sandbox, bought["key"]).cancelled  # the purchase itself
    sheet = next(
        o
        for o in sandbox_get(sandbox, "coupang/orders")["orders"]
        if str(o["shipmentBoxId"]) == box_id
    )
    assert sheet["status"] == "CANCELED"
    kinds = [(e["kind"], e["task_id"]) for e in events(ops_db, bought["id"])]
    assert [k for k, _ in kinds] == ["cancel_requested", "purchase_cancelled", "cancelled"]
    assert all(t for _, t in kinds)

    assert order_row(ops_db, fresh["key"])["status"] == "cancelled"
    naver = {
        o["productOrder"]["productOrderId"]: o
        for o in sandbox_get(sandbox, "naver/orders")["productOrders"]
    }
    assert naver[fresh_id]["productOrder"]["productOrderStatus"] == "CANCELED"

    returned = order_row(ops_db, sent["key"])
    assert returned["status"] == "dispatched"
    assert returned["market_claim"] == "return:RETURN_REQUEST"
    assert "after shipment" in returned["status_reason"]
    assert sandbox.counts()["coupang_cancels_confirmed"] == {box_id: 1}
    assert sandbox.counts()["naver_cancels_approved"] == {fresh_id: 1}

    # A second sweep confirms nothing twice and changes nothing.
    again = {r["account"]: r for r in claims_sweep.delay().get(timeout=60)}
    assert again["coupang_main"]["cancelled"] == 0 and again["naver_main"]["claims_stored"] == 0
    assert sandbox.counts()["coupang_cancels_confirmed"] == {box_id: 1}


def test_cancellation_after_the_supplier_shipped_waits_for_an_operator(
    sandbox: SandboxFixture,
    ops_db: Engine,
    make_connector: Callable[[str], Any],
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 40}, tracking_delay_s=0)
    sku = ownerclan_item(make_connector)
    (po_id,) = naver_order(sandbox, items=1)
    late = add_order(ops_db, "naver_main", "naver", po_id, po_id)
    buy(make_connector, late["key"], sku)  # ships at once (tracking_delay 0)
    sandbox_post(sandbox, "naver/cancel_requests", {"productOrderId": po_id})

    result = claims.sweep_claims("naver_main", "task-1", factory=make_connector)
    assert result["cancelled"] == 0 and result["cancel_waiting"] == 1
    row = order_row(ops_db, late["key"])
    assert row["status"] == "cancel_requested"
    assert row["status_reason"].startswith(claims.OPERATOR) and "shipped" in row["status_reason"]
    assert po_row(ops_db, late["key"])["status"] == "placed"
    assert not supplier_order(sandbox, late["key"]).cancelled
    assert "naver_cancels_approved" not in sandbox.counts()
    # Left alone afterwards: the operator's reason is not overwritten by the next sweep.
    claims.sweep_claims("naver_main", "task-2", factory=make_connector)
    assert order_row(ops_db, late["key"])["status_reason"] == row["status_reason"]
    assert [e["kind"] for e in events(ops_db, late["id"])] == [
        "cancel_requested",
        "cancel_needs_operator",
    ]
