"""Purchase-order sheets with a real worker against the sandbox: purchase orders handed over for
a sheet supplier are written into one file in the supplier's layout (XLSX and CSV) with our
order key in its own-order-number column; the sandbox's upload parses it strictly; the sweep's
lookup by key then moves the rows to placed/forwarded and tracking follows by the same key."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
import requests
from openpyxl import load_workbook
from sqlalchemy import Engine

from dropship.orders import sheets
from dropship.sandbox.suppliers import SupplierWorld
from dropship.settings import get_settings
from tests.conftest import WorkerProcess
from tests.orderops.conftest import add_order, events, order_row, po_row
from tests.orderops.test_tracking import naver_order
from tests.platforms.conftest import SandboxFixture

pytestmark = pytest.mark.usefixtures("frozen_world_clock")


def gentrade_items(box: SandboxFixture, count: int) -> list[tuple[str, str | None]]:
    """(product code, option label or None) of sellable gentrade items, with and without
    options."""
    world = SupplierWorld(box.state)
    found: list[tuple[str, str | None]] = []
    for index in range(200):
        item = world.item("gentrade", index)
        if item is None or item.soldout or item.malformed:
            continue
        found.append((str(500_000 + index), item.options[0].value if item.options else None))
        if len(found) == count:
            return found
    raise AssertionError("not enough gentrade items")


def hand_over(
    engine: Engine, box: SandboxFixture, supplier: str, items: list[tuple[str, str | None]]
) -> list[dict[str, Any]]:
    """Order items forward_order handed to the sheet flow: purchase and item
    ``awaiting_placement`` without a sheet."""
    rows = []
    for code, option in items:
        (po_id,) = naver_order(box, items=1)
        rows.append(
            add_order(
                engine,
                "naver_main",
                "naver",
                po_id,
                po_id,
                status="awaiting_placement",
                supplier=supplier,
                po_status="awaiting_placement",
                supplier_sku=code,
                supplier_option_code=option,
                receiver_zipcode="03154",
            )
        )
    return rows


def upload(box: SandboxFixture, supplier: str, path: Path) -> requests.Response:
    return requests.post(
        f"{box.base_url}/_sandbox/{supplier}/sheet_upload",
        params={"format": path.suffix.lstrip(".")},
        data=path.read_bytes(),
        timeout=10,
    )


@pytest.mark.worker
def test_sheet_written_uploaded_placed_and_tracked(
    sandbox: SandboxFixture,
    ops_db: Engine,
    high_worker: WorkerProcess,
) -> None:
    from tasks.fulfilment import sheets_sweep, tracking_sweep

    sandbox.configure_suppliers(tracking_delay_s=120)
    items = gentrade_items(sandbox, 3)
    assert any(o for _, o in items) and not all(o for _, o in items)
    rows = hand_over(ops_db, sandbox, "gentrade", items)

    result = sheets_sweep.delay().get(timeout=60)
    assert result["sheets_written"] == 1, (result, high_worker.log()[-3000:])
    (listed,) = sheets.list_sheets()
    assert listed["supplier"] == "gentrade" and listed["waiting"] == 3 and listed["file_exists"]
    path = Path(listed["path"])
    assert path.suffix == ".xlsx" and oct(path.stat().st_mode & 0o777) == "0o600"
    table = list(load_workbook(path).worksheets[0].iter_rows(values_only=True))
    assert table[0][0] == "개인고유주문번호"
    assert [r[0] for r in table[1:]] == [r["key"] for r in rows]  # our key, own-order column
    assert [(r[1], r[2]) for r in table[1:]] == [(c, o) for c, o in items]
    assert all(po_row(ops_db, r["key"])["sheet_id"] == listed["id"] for r in rows)
    # Nothing is placed until the supplier shows it: a sweep before the upload changes nothing.
    assert sheets_sweep.delay().get(timeout=60)["placed_from_sheets"] == 0
    assert order_row(ops_db, rows[0]["key"])["status"] == "awaiting_placement"

    response = upload(sandbox, "gentrade", path)
    assert response.status_code == 200, response.text
    placed = sheets_sweep.delay().get(timeout=60)
    assert placed["placed_from_sheets"] == 3 and placed["sheets_written"] == 0
    for row in rows:
        assert order_row(ops_db, row["key"])["status"] == "forwarded"
        purchase = po_row(ops_db, row["key"])
        assert purchase["status"] == "placed" and purchase["supplier_order_ids"]
    assert sheets.list_sheets()[0]["status"] == "placed"
    assert sandbox.counts()["purchase_orders"] == {r["key"]: 1 for r in rows}

    sandbox.advance_clock(120)
    tracked = tracking_sweep.delay().get(timeout=60)
    assert tracked["shipped"] == 3 and tracked["dispatched"] == 3, tracked
    kinds = [e["kind"] for e in events(ops_db, rows[0]["id"])]
    assert kinds == ["sheet_written", "placed_from_sheet", "shipped", "dispatched"]


def test_csv_sheet_strict_upload_and_domeggook_operator_confirmation(
    sandbox: SandboxFixture,
    ops_db: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DROPSHIP_FULFILMENT__SHEET_FORMAT", "csv")
    monkeypatch.setenv("DROPSHIP_FULFILMENT__SHEET_MAX_ROWS", "2")
    get_settings.cache_clear()
    gentrade = hand_over(ops_db, sandbox, "gentrade", gentrade_items(sandbox, 3))
    domeggook = hand_over(ops_db, sandbox, "domeggook", [("30000001", None)])
    assert sheets.write_sheets("t1") == 3  # 2 + 1 gentrade rows (max 2 per sheet), 1 domeggook
    listed = {s["id"]: s for s in sheets.list_sheets()}
    assert sorted(s["order_count"] for s in listed.values()) == [1, 1, 2]
    first = min((s for s in listed.values() if s["supplier"] == "gentrade"), key=lambda s: s["id"])
    path = Path(first["path"])
    text_ = path.read_bytes().decode("utf-8-sig")
    header, *body = list(csv.reader(io.StringIO(text_)))
    assert header[0] == "개인고유주문번호" and [r[0] for r in body] == [
        g["key"] for g in gentrade[:2]
    ]

    # The upload is strict: a sheet missing a column is refused whole, nothing registered.
    broken = path.with_name("broken.csv")
    out = io.StringIO()
    csv.writer(out).writerows([header[:-1], *[r[:-1] for r in body]])
    broken.write_bytes(out.getvalue().encode("utf-8-sig"))
    refused = upload(sandbox, "gentrade", broken)
    assert refused.status_code == 400 and "header" in refused.json()["error"]
    assert not sandbox.counts().get("purchase_orders")
    assert upload(sandbox, "gentrade", path).status_code == 200

    # A missing file (crash between commit and rename, or deleted) is written again.
    path.unlink()
    assert sheets.restore_missing_files() == 1 and path.exists()

    # Domeggook has no lookup: the operator confirms the upload, then imports tracking.
    (dg,) = (s for s in listed.values() if s["supplier"] == "domeggook")
    assert sheets.mark_sheet_placed(dg["id"], "t2") == 1
    assert order_row(ops_db, domeggook[0]["key"])["status"] == "forwarded"
    assert sheets.import_tracking([(domeggook[0]["key"], "CJ대한통운", "123412341234")]) == 1
    row = order_row(ops_db, domeggook[0]["key"])
    assert (row["status"], row["carrier"]) == ("shipped", "cj")
