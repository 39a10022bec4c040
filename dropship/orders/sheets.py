"""Purchase-order sheets for suppliers without an ordering API (Zentrade; Domeggook unless its
Private API is configured, which this project does not use).

Flow (:func:`sweep_sheets`, queue ``high``):

1. **Write** (:func:`write_sheets`): purchase orders of a sheet supplier that ``forward_order``
   handed over (purchase order and order item ``awaiting_placement``, no ``sheet_id`` yet) are
   collected, up to ``fulfilment.sheet_max_rows`` per sheet, into one file in the supplier's
   upload layout (:data:`LAYOUTS`), CSV or XLSX (``fulfilment.sheet_format``), with our order
   key in the supplier's own-order-number column (Zentrade ``pordno``). The
   ``purchase_order_sheets`` row and the purchase orders' ``sheet_id`` are committed together
   with the file written under a temporary name; the file gets its final name after the commit,
   so a crash never leaves a sheet file the database does not know (an operator could upload it
   and buy twice). A recorded sheet whose file is missing is written again from the rows.
   Files hold receivers' addresses: mode 0600 under the data folder, never logged.
2. **Follow** (:func:`follow_sheets`): for a written sheet, each purchase order still
   ``awaiting_placement`` is looked up at the supplier by our key (Zentrade ``order_api.php``
   by ``pordno``); when the supplier shows it, the purchase order becomes ``placed`` (its
   Zentrade ``ordno`` kept) and the order item ``forwarded``; tracking then follows by the same
   key. A sheet whose rows are all placed (or cancelled) is ``placed``.
   Domeggook has no lookup without the Private API: the operator confirms the upload with
   ``dropship orders sheet-placed SHEET_ID`` (:func:`mark_sheet_placed`) and imports tracking
   with ``dropship orders tracking-import FILE``.

Every item waits visibly: ``dropship orders sheets`` lists each sheet with its file, supplier,
row count, and how many rows still wait for the supplier.

**Layouts.** Neither supplier publishes its upload template. Zentrade's columns mirror the
fields its order lookup returns for an uploaded order (``pordno``, item = goodsno / option,
receiver name, phone, mobile, address: file id 15186231462), so what we write is what we later
read back; Domeggook's mirror its bulk-order form's fields (seller order number, item number,
option, quantity, receiver, phone, zip code, address, request). docs/ORDERS.md keeps the
decision; the sandbox's upload endpoint parses exactly these columns and refuses anything else.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text

from dropship import db
from dropship.errors import PermanentError, TransientError
from dropship.orders.common import (
    ConnectorFactory,
    default_factory,
    record_events,
    short,
    supplier_account,
    sweep_lock,
)
from dropship.settings import get_settings

log = logging.getLogger("dropship.orders.sheets")

# (header, order field) per supplier; the first column carries our order key.
LAYOUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "gentrade": (
        ("개인고유주문번호", "order_key"),
        ("상품번호", "supplier_sku"),
        ("옵션", "option"),
        ("수량", "quantity"),
        ("받는사람", "receiver_name"),
        ("받는사람 전화번호", "receiver_phone"),
        ("받는사람 핸드폰번호", "receiver_phone"),
        ("우편번호", "receiver_zipcode"),
        ("받는사람 주소", "receiver_address"),
        ("배송메세지", "receiver_message"),
    ),
    "domeggook": (
        ("판매자주문번호", "order_key"),
        ("상품번호", "supplier_sku"),
        ("옵션", "option"),
        ("수량", "quantity"),
        ("수령인", "receiver_name"),
        ("수령인 연락처", "receiver_phone"),
        ("우편번호", "receiver_zipcode"),
        ("주소", "receiver_address"),
        ("배송요청사항", "receiver_message"),
    ),
}


def sheet_dir() -> Path:
    settings = get_settings()
    return settings.fulfilment.sheet_dir or (settings.data_dir / "purchase-order-sheets")


def sweep_sheets(
    task_id: str | None = None, factory: ConnectorFactory | None = None
) -> dict[str, Any]:
    with sweep_lock("sheets") as got:
        if not got:
            return {"skipped": True}
        written = write_sheets(task_id)
        rewritten = restore_missing_files()
        followed = follow_sheets(task_id, factory)
    return {"skipped": False, "sheets_written": written, "files_restored": rewritten, **followed}


_ROWS_SQL = """
    SELECT po.id AS po_id, o.id, o.ordered_at, o.order_key, o.supplier_sku,
           o.supplier_option_code AS option, o.quantity,
           o.receiver_name, o.receiver_phone, o.receiver_zipcode, o.receiver_address,
           o.receiver_message
    FROM purchase_orders po
    JOIN orders o ON o.order_key = po.order_key
"""


def render_sheet(supplier: str, rows: Sequence[Any], fmt: str) -> bytes:
    """The sheet's bytes: the supplier's header row, then one row per purchase order."""
    layout = LAYOUTS[supplier]
    values = [
        ["" if getattr(row, field) is None else str(getattr(row, field)) for _, field in layout]
        for row in rows
    ]
    headers = [h for h, _ in layout]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(headers)
        writer.writerows(values)
        # UTF-8 with BOM: what Korean spreadsheet tools open without mangling Hangul.
        return out.getvalue().encode("utf-8-sig")
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "발주서"
    sheet.append(headers)
    for row_values in values:
        # Text cells: an order key or phone number must never become a number or a date.
        sheet.append(row_values)
        for cell in sheet[sheet.max_row]:
            cell.number_format = "@"
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _write_file(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())


def write_sheets(task_id: str | None = None) -> int:
    settings = get_settings()
    cfg = settings.fulfilment
    written = 0
    for supplier in settings.orders.sheet_suppliers:
        if supplier not in LAYOUTS:
            raise PermanentError(f"no purchase-order sheet layout for supplier {supplier!r}")
        while True:
            path = _write_one(supplier, cfg.sheet_format, cfg.sheet_max_rows, task_id)
            if path is None:
                break
            written += 1
    return written


def _write_one(supplier: str, fmt: str, max_rows: int, task_id: str | None) -> Path | None:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    with db.session_scope() as session:
        rows = session.execute(
            text(
                _ROWS_SQL + "WHERE po.supplier = :s AND po.status = 'awaiting_placement' "
                "AND po.sheet_id IS NULL AND o.status = 'awaiting_placement' "
                "ORDER BY po.id LIMIT :n FOR UPDATE OF po SKIP LOCKED"
            ),
            {"s": supplier, "n": max_rows},
        ).all()
        if not rows:
            return None
        sheet_id = int(
            session.execute(
                text(
                    "INSERT INTO purchase_order_sheets (supplier, format, path, order_count) "
                    "VALUES (:s, :f, '', :n) RETURNING id"
                ),
                {"s": supplier, "f": fmt, "n": len(rows)},
            ).scalar_one()
        )
        final = sheet_dir() / f"{supplier}-{stamp}-{sheet_id}.{fmt}"
        session.execute(
            text("UPDATE purchase_order_sheets SET path = :p WHERE id = :id"),
            {"p": str(final), "id": sheet_id},
        )
        session.execute(
            text(
                "UPDATE purchase_orders SET sheet_id = :sid, task_id = :t, updated_at = now() "
                "WHERE id = ANY(:ids)"
            ),
            {"sid": sheet_id, "t": task_id, "ids": [r.po_id for r in rows]},
        )
        record_events(
            session,
            [(r.id, r.ordered_at) for r in rows],
            "sheet_written",
            "awaiting_placement",
            "awaiting_placement",
            task_id,
            {"sheet_id": sheet_id, "supplier": supplier},
        )
        tmp = final.with_name(final.name + ".tmp")
        _write_file(tmp, render_sheet(supplier, rows, fmt))
    tmp.replace(final)  # after the commit: only a recorded sheet ever gets its final name
    log.info("purchase-order sheet %s for %s: %d rows", sheet_id, supplier, len(rows))
    return final


def restore_missing_files() -> int:
    """Write again, from the database, any recorded sheet whose file is missing (a crash
    between the commit and the rename, or a deleted file)."""
    restored = 0
    with db.session_scope() as session:
        sheets = session.execute(
            text(
                "SELECT id, supplier, format, path FROM purchase_order_sheets "
                "WHERE status <> 'placed'"
            )
        ).all()
        for sheet in sheets:
            path = Path(sheet.path)
            if not sheet.path or path.exists():
                continue
            rows = session.execute(
                text(_ROWS_SQL + "WHERE po.sheet_id = :id ORDER BY po.id"), {"id": sheet.id}
            ).all()
            tmp = path.with_name(path.name + ".tmp")
            _write_file(tmp, render_sheet(sheet.supplier, rows, sheet.format))
            tmp.replace(path)
            restored += 1
    return restored


def follow_sheets(
    task_id: str | None = None, factory: ConnectorFactory | None = None
) -> dict[str, Any]:
    make = factory or default_factory
    with db.session_scope() as session:
        waiting = session.execute(
            text(
                "SELECT po.id AS po_id, po.order_key, po.supplier, po.sheet_id "
                "FROM purchase_orders po JOIN purchase_order_sheets s ON s.id = po.sheet_id "
                "WHERE po.status = 'awaiting_placement' AND s.status <> 'placed' "
                "ORDER BY po.updated_at LIMIT 2000"
            )
        ).all()
    placed = 0
    errors: dict[str, str] = {}
    connectors: dict[str, Any] = {}
    for row in waiting:
        if row.supplier in errors:
            continue
        try:
            connector = connectors.get(row.supplier) or make(supplier_account(row.supplier))
            connectors[row.supplier] = connector
            lookup = getattr(connector, "lookup_orders", None)
            if lookup is None:
                continue  # no lookup API: the operator confirms with `orders sheet-placed`
            found = [o for o in lookup(pordno=row.order_key) if o.pordno == row.order_key]
        except (TransientError, PermanentError) as exc:
            errors[row.supplier] = short(exc, 200)
            continue
        if found:
            placed += _mark_placed([row.po_id], [o.ordno for o in found], task_id)
    _close_sheets()
    return {"placed_from_sheets": placed, "sheet_errors": errors}


def _mark_placed(po_ids: list[int], supplier_ids: list[str], task_id: str | None) -> int:
    import json

    with db.session_scope() as session:
        changed = session.execute(
            text(
                "UPDATE purchase_orders SET status = 'placed', placed_at = now(), "
                "supplier_order_ids = CASE WHEN :ids = '[]' THEN supplier_order_ids "
                "ELSE CAST(:ids AS jsonb) END, updated_at = now() "
                "WHERE id = ANY(:po) AND status = 'awaiting_placement' "
                "RETURNING order_key, sheet_id"
            ),
            {"po": po_ids, "ids": json.dumps(supplier_ids)},
        ).all()
        if changed:
            orders = session.execute(
                text(
                    "UPDATE orders SET status = 'forwarded', forwarded_at = now(), "
                    "supplier_order_ids = CAST(:ids AS jsonb), updated_at = now() "
                    "WHERE order_key = ANY(:keys) AND status = 'awaiting_placement' "
                    "RETURNING id, ordered_at"
                ),
                {"ids": json.dumps(supplier_ids), "keys": [r[0] for r in changed]},
            ).all()
            record_events(
                session,
                [(r[0], r[1]) for r in orders],
                "placed_from_sheet",
                "awaiting_placement",
                "forwarded",
                task_id,
                {"sheet_id": changed[0][1], "supplier_order_ids": supplier_ids},
            )
    return len(changed)


def _close_sheets() -> None:
    with db.session_scope() as session:
        session.execute(
            text(
                "UPDATE purchase_order_sheets s SET status = 'placed' WHERE s.status <> 'placed' "
                "AND NOT EXISTS (SELECT 1 FROM purchase_orders po WHERE po.sheet_id = s.id "
                "AND po.status = 'awaiting_placement')"
            )
        )


def mark_sheet_placed(sheet_id: int, task_id: str | None = None) -> int:
    """The operator uploaded sheet ``sheet_id`` at a supplier without a lookup API (Domeggook):
    its waiting purchase orders become placed and their items forwarded."""
    with db.session_scope() as session:
        ids = [
            int(r[0])
            for r in session.execute(
                text(
                    "SELECT id FROM purchase_orders WHERE sheet_id = :s "
                    "AND status = 'awaiting_placement'"
                ),
                {"s": sheet_id},
            )
        ]
    count = _mark_placed(ids, [], task_id) if ids else 0
    _close_sheets()
    return count


def list_sheets(limit: int = 50) -> list[dict[str, Any]]:
    with db.session_scope() as session:
        rows = session.execute(
            text(
                "SELECT s.id, s.supplier, s.format, s.path, s.order_count, s.status, s.created_at, "
                "count(po.id) FILTER (WHERE po.status = 'awaiting_placement') AS waiting, "
                "count(po.id) FILTER (WHERE po.status = 'placed') AS placed, "
                "count(po.id) FILTER (WHERE po.status = 'cancelled') AS cancelled "
                "FROM purchase_order_sheets s LEFT JOIN purchase_orders po ON po.sheet_id = s.id "
                "GROUP BY s.id ORDER BY s.id DESC LIMIT :n"
            ),
            {"n": limit},
        ).all()
    return [dict(r._mapping) | {"file_exists": Path(r.path).exists()} for r in rows]


def import_tracking(rows: Sequence[tuple[str, str, str]], task_id: str | None = None) -> int:
    """Tracking an operator got from a supplier without a lookup API: (order key, carrier,
    tracking number) per row; ``forwarded`` items become ``shipped`` (the tracking sweep then
    dispatches them). Returns how many items moved."""
    from dropship.orders.tracking import _carrier_id
    from dropship.platforms.interfaces import ShipmentInfo

    moved = 0
    with db.session_scope() as session:
        for key, carrier_text, number in rows:
            shipment = ShipmentInfo(order_key=key, carrier=carrier_text, tracking_number=number)
            carrier, reason = _carrier_id("import", shipment)
            changed = session.execute(
                text(
                    "UPDATE orders SET status = 'shipped', carrier = :c, tracking_number = :t, "
                    "shipped_at = now(), status_reason = :r, updated_at = now() "
                    "WHERE order_key = :k AND status = 'forwarded' RETURNING id, ordered_at"
                ),
                {"c": carrier, "t": number[:64], "r": reason, "k": key},
            ).all()
            record_events(
                session,
                [(r[0], r[1]) for r in changed],
                "shipped",
                "forwarded",
                "shipped",
                task_id,
                {"carrier": carrier, "tracking_number": number, "source": "import"},
            )
            moved += len(changed)
    return moved
