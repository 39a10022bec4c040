"""Naver Commerce contract: the documented examples, rewritten as fixtures in ``fixtures/naver/``,
are parsed by the connector and are the shape the sandbox serves, and the requests the connector
builds have the documented shape.

Sources: ``last-changed-statuses`` (apicenter page ``seller-get-last-changed-status-pay-order-
seller``, copy at file id 46062719477: ``more`` paging, inclusive ``lastChangedTo``, ``data``
optional), implementer notes from real calls (file id 71297095581: an empty range has no
``data``), the dispatch page (``seller-dispatch-product-orders-pay-order-seller``, copy at file id
71060339404: request fields and the carrier code table) and the order-claim result structure
(``successProductOrderIds`` / ``failProductOrderInfos``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from dropship.platforms.naver import (
    PAY_ORDER,
    NaverConnector,
    _failed_ids,
    dispatch_item,
    parse_change_page,
)
from tests.contracts._shapes import fixture, same_shape, shape_gaps

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("frozen_world_clock")]

KST = timezone(timedelta(hours=9))
WINDOW_START = datetime(2024, 3, 1, 9, 0, tzinfo=KST)


def doc(name: str) -> Any:
    return fixture("naver", name)


@pytest.fixture
def naver(make_connector: Callable[[str], Any]) -> NaverConnector:
    connector = make_connector("naver_main")
    assert isinstance(connector, NaverConnector)
    return connector


def add_orders(sandbox: Any, count: int) -> list[str]:
    body = {"count": count, "ordered_at": WINDOW_START.isoformat(), "spacing_s": 60}
    answer = requests.post(f"{sandbox.base_url}/_sandbox/naver/orders", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    ids: list[str] = answer.json()["productOrderIds"]
    return ids


def get_changes(naver: NaverConnector, params: dict[str, str]) -> dict[str, Any]:
    _, body = naver._call("GET", f"{PAY_ORDER}/last-changed-statuses", params=params)
    return body


# --------------------------------------------------------------------------- last-changed


def test_documented_change_pages_are_parsed() -> None:
    changes, cursor = parse_change_page(doc("last_changed_statuses_has_more_response.json"))
    assert [c["productOrderId"] for c in changes] == ["2024030155012101", "2024030155012201"]
    assert cursor == ("2024-03-01T10:15:03.000+09:00", "00000000000000001042")
    last, no_cursor = parse_change_page(doc("last_changed_statuses_not_more_response.json"))
    assert len(last) == 1 and no_cursor is None
    # No ``data`` at all: the documented answer for a range without changes.
    assert parse_change_page(doc("last_changed_statuses_empty_response.json")) == ([], None)


def test_sandbox_serves_the_documented_change_pages(sandbox: Any, naver: NaverConnector) -> None:
    ids = add_orders(sandbox, 3)  # changed at 09:00:03, 09:01:03, 09:02:03
    request = doc("last_changed_statuses_request.json")
    query = dict(request["query"], limitCount="2")

    first = get_changes(naver, query)
    assert shape_gaps(doc("last_changed_statuses_has_more_response.json"), first) == []
    more = first["data"]["more"]
    # The documented continuation: moreFrom -> lastChangedFrom, moreSequence -> moreSequence.
    assert set(request["continuation_query"]) == {"lastChangedFrom", "moreSequence"}
    second = get_changes(
        naver,
        dict(
            query,
            lastChangedFrom=more["moreFrom"],
            moreSequence=more["moreSequence"],
        ),
    )
    assert shape_gaps(doc("last_changed_statuses_not_more_response.json"), second) == []
    assert "more" not in second["data"]
    pages = first["data"]["lastChangeStatuses"] + second["data"]["lastChangeStatuses"]
    assert [c["productOrderId"] for c in pages] == ids  # in order, none twice, none missing

    empty = get_changes(
        naver,
        {
            "lastChangedFrom": (WINDOW_START + timedelta(hours=5)).isoformat(),
            "lastChangedTo": (WINDOW_START + timedelta(hours=6)).isoformat(),
        },
    )
    assert (
        set(empty)
        == set(doc("last_changed_statuses_empty_response.json"))
        == {
            "timestamp",
            "traceId",
        }
    )


def test_the_documented_query_reads_what_the_connector_reads(
    sandbox: Any, naver: NaverConnector
) -> None:
    # The documented query (lastChangedTo inclusive, so it stops 1 ms before the window's end,
    # as the connector asks it) finds what the connector's sweep finds.
    request = doc("last_changed_statuses_request.json")
    ids = add_orders(sandbox, 2)
    until = WINDOW_START + timedelta(hours=12)
    assert [o.market_order_id for o in naver.iter_orders(WINDOW_START, until)] == ids
    answer = get_changes(naver, request["query"])
    assert [c["productOrderId"] for c in answer["data"]["lastChangeStatuses"]] == ids
    assert request["query"]["lastChangedTo"].endswith("59.999+09:00")


# --------------------------------------------------------------------------- dispatch


def test_dispatch_request_and_answer_follow_the_document(
    sandbox: Any, naver: NaverConnector
) -> None:
    documented_request = doc("dispatch_request.json")
    documented_answer = doc("dispatch_response.json")
    (documented_item,) = documented_request["dispatchProductOrders"]
    ours = dispatch_item("1", "HYUNDAI", "310044556677", "2024-03-02T11:20:00.000+09:00")
    assert same_shape(documented_item, ours) == []
    assert _failed_ids(documented_answer, "dispatch") == ["2024030155012999"]

    (product_order_id,) = add_orders(sandbox, 1)
    items = [
        dict(documented_item, productOrderId=product_order_id),
        dict(documented_item, productOrderId="2024030155012999"),
    ]
    _, served = naver._call(
        "POST", f"{PAY_ORDER}/dispatch", json={"dispatchProductOrders": items}, idempotent=True
    )
    assert shape_gaps(documented_answer, served) == []
    assert served["data"]["successProductOrderIds"] == [product_order_id]
    (fail,) = served["data"]["failProductOrderInfos"]
    assert fail == {
        "productOrderId": "2024030155012999",
        "code": "100001",  # the order-claim structure's "product order not found"
        "message": documented_answer["data"]["failProductOrderInfos"][0]["message"],
    }
