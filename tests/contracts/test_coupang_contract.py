"""Coupang Wing contract: the documented examples of the delivery API, rewritten as fixtures in
``fixtures/coupang/``, are parsed by the connector and are the shape the sandbox serves, and the
requests the connector builds have the documented shape, so both sides hold the same document.

Sources (``optionalg/coupang-developers.github.io``, ``assets/docs/season-2/delivery-api/ko/``):
``lookup-order-list-per-minute.document.ts`` (order-sheet list, ``code`` as the number 200),
``lookup-order-book.document.ts`` (one order sheet, ``code`` as the string "200"),
``product-preparation-processing.document.ts`` (acknowledgement, partial-error example),
``invoice-upload-processing.document.ts`` (invoice upload and its result codes).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from dropship.platforms.coupang import (
    OPENAPI_V4,
    CoupangConnector,
    _parse_order_sheet,
    acknowledgement_body,
    invoice_body,
    invoice_dto,
    parse_box_results,
    response_ok,
)
from dropship.platforms.interfaces import MarketListingRequest, TrackingUpload
from tests.contracts._shapes import fixture, same_shape, shape_gaps
from tests.platforms.hosted_images import coupang_image_urls

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("frozen_world_clock")]

KST = timezone(timedelta(hours=9))
ORDERED_AT = datetime(2024, 3, 1, 9, 12, tzinfo=KST)


def doc(name: str) -> Any:
    return fixture("coupang", name)


@pytest.fixture
def coupang(make_connector: Callable[[str], Any]) -> CoupangConnector:
    connector = make_connector("coupang_main")
    assert isinstance(connector, CoupangConnector)
    return connector


def add_orders(sandbox: Any, coupang: CoupangConnector, count: int) -> list[int]:
    """Orders for a listed product (so every documented line field has a value)."""
    sku = "dsk-tumbler-500"
    if coupang.find_listing_by_external_sku(sku) is None:
        coupang.create_listing(
            MarketListingRequest(
                external_sku=sku,
                name="스테인리스 보온 텀블러 500ml",
                sale_price=15_900,
                stock=10,
                category_id="56137",
                images=coupang_image_urls(sandbox, 1),
            )
        )
    body = {
        "count": count,
        "ordered_at": ORDERED_AT.isoformat(),
        "spacing_s": 30,
        "external_sku": sku,
        "quantity": 2,
    }
    answer = requests.post(f"{sandbox.base_url}/_sandbox/coupang/orders", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    ids: list[int] = answer.json()["shipmentBoxIds"]
    return ids


def v4(coupang: CoupangConnector, method: str, endpoint: str, **kw: Any) -> dict[str, Any]:
    _, body = coupang._call(method, f"{OPENAPI_V4}/{coupang.vendor_id}/{endpoint}", **kw)
    return body


# --------------------------------------------------------------------------- order sheets


def test_documented_order_sheet_list_is_parsed() -> None:
    answer = doc("ordersheets_timeframe_response.json")
    assert response_ok(answer) and answer["code"] == 200  # the list's sample: a number
    (order,) = [_parse_order_sheet(record) for record in answer["data"]]
    assert (order.market, order.market_order_id, order.status) == ("coupang", "612000101", "ACCEPT")
    assert order.ordered_at == ORDERED_AT + timedelta(seconds=40)  # KST, no offset in the text
    (item,) = order.items
    assert (item.market_item_id, item.external_sku) == ("4201550001", "dsk-tumbler-500")
    assert (item.quantity, item.unit_price, order.total_price) == (2, 15_900, 31_800 + 3_000)
    assert order.receiver is not None and order.receiver.zipcode == "341-41"
    assert "receiver" not in order.raw and "orderer" not in order.raw  # personal data stays out
    assert answer["nextToken"] == ""  # "마지막 페이지인 경우 빈 값"


def test_sandbox_serves_the_documented_order_sheet_list(
    sandbox: Any, coupang: CoupangConnector
) -> None:
    add_orders(sandbox, coupang, 2)
    request = doc("ordersheets_timeframe_request.json")
    served = v4(coupang, "GET", "ordersheets", params=request["query"])
    assert shape_gaps(doc("ordersheets_timeframe_response.json"), served) == []
    assert served["code"] == 200 and len(served["data"]) == 2
    # The connector reads exactly this (it asks the same query shape and pages on nextToken).
    orders = list(coupang.iter_orders(ORDERED_AT, ORDERED_AT + timedelta(hours=1)))
    assert [o.market_order_id for o in orders] == [str(r["shipmentBoxId"]) for r in served["data"]]


def test_documented_and_served_single_order_sheet(sandbox: Any, coupang: CoupangConnector) -> None:
    documented = doc("ordersheet_response.json")
    assert response_ok(documented) and documented["code"] == "200"  # the single's: a string
    assert _parse_order_sheet(documented["data"]).status == "DEPARTURE"

    (box_id,) = add_orders(sandbox, coupang, 1)
    coupang.acknowledge([str(box_id)])
    coupang.upload_tracking([TrackingUpload(str(box_id), (), "CJ대한통운", "440012345678")])
    served = v4(coupang, "GET", f"ordersheets/{box_id}")
    assert shape_gaps(documented, served) == []
    data = served["data"]
    assert (data["status"], data["invoiceNumber"]) == ("DEPARTURE", "440012345678")
    assert data["deliveryCompanyName"] == documented["data"]["deliveryCompanyName"] == "CJ 대한통운"


# --------------------------------------------------------------------------- acknowledgement


def test_acknowledgement_request_and_answer_follow_the_document(
    sandbox: Any, coupang: CoupangConnector
) -> None:
    documented_request = doc("acknowledgement_request.json")
    documented_answer = doc("acknowledgement_response.json")
    ours = acknowledgement_body(coupang.vendor_id, [1, 2])
    assert same_shape(documented_request, ours) == []

    results = parse_box_results(documented_answer, "acknowledgement")
    assert results[612000103].succeed and not results[612000104].succeed
    assert results[612000104].code == "NOT_FOUND_SHIPMENT_BOX"

    (box_id,) = add_orders(sandbox, coupang, 1)
    sent = dict(documented_request, vendorId=coupang.vendor_id, shipmentBoxIds=[box_id, 999_999])
    served = v4(coupang, "PUT", "ordersheets/acknowledgement", json=sent, idempotent=False)
    assert shape_gaps(documented_answer, served) == []
    # Like the document's example: one box done, one unknown -> responseCode 1 (partial).
    assert served["code"] == "200" and served["data"]["responseCode"] == 1
    by_box = parse_box_results(served, "acknowledgement")
    assert by_box[box_id].succeed and by_box[999_999].code == "NOT_FOUND_SHIPMENT_BOX"


# --------------------------------------------------------------------------- invoices


def test_invoice_request_and_answers_follow_the_document(
    sandbox: Any, coupang: CoupangConnector
) -> None:
    documented_request = doc("invoices_request.json")
    (documented_dto,) = documented_request["orderSheetInvoiceApplyDtos"]
    (box_id,) = add_orders(sandbox, coupang, 1)
    coupang.acknowledge([str(box_id)])
    sheet = coupang._order_sheet(str(box_id))
    item = sheet["orderItems"][0]["vendorItemId"]
    ours = invoice_body(coupang.vendor_id, [invoice_dto(sheet, item, "HANJIN", "512300098811")])
    assert same_shape(documented_request, ours) == []

    assert parse_box_results(doc("invoices_response.json"), "invoice upload")[612000105].succeed
    refused = parse_box_results(doc("invoices_invalid_status_response.json"), "invoice upload")
    assert (refused[612000105].code, refused[612000105].retry_required) == ("INVALID_STATUS", False)

    dto = dict(documented_dto, shipmentBoxId=box_id, orderId=sheet["orderId"], vendorItemId=item)
    sent = dict(documented_request, vendorId=coupang.vendor_id, orderSheetInvoiceApplyDtos=[dto])
    served = v4(coupang, "POST", "orders/invoices", json=sent, idempotent=False)
    assert shape_gaps(doc("invoices_response.json"), served) == []
    assert served["data"]["responseCode"] == 0
    again = v4(coupang, "POST", "orders/invoices", json=sent, idempotent=False)
    assert shape_gaps(doc("invoices_invalid_status_response.json"), again) == []
    (entry,) = again["data"]["responseList"]
    documented_entry = doc("invoices_invalid_status_response.json")["data"]["responseList"][0]
    assert {k: entry[k] for k in ("succeed", "resultCode", "retryRequired", "resultMessage")} == {
        k: documented_entry[k] for k in ("succeed", "resultCode", "retryRequired", "resultMessage")
    }
