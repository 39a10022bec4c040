"""Tracking: shipment numbers from the suppliers back to the markets.

:func:`sweep_tracking` (the beat sweep, queue ``high``) does two steps, each idempotent:

1. **Collect** (:func:`collect_shipments`): order items ``forwarded`` whose purchase order is
   ``placed`` are looked up at their supplier by our order keys
   (:meth:`SupplierConnector.get_shipments`; OwnerClan 20 keys per call, Zentrade by ``pordno``),
   oldest-checked first. A shipment found moves the item to ``shipped`` with the carrier (our
   canonical carrier id from :mod:`dropship.platforms.carriers`), the tracking number and the
   ship time. Items not shipped yet are touched (``updated_at``) so the next sweep looks at the
   others first.
2. **Dispatch** (:func:`dispatch_tracking`): ``shipped`` items are uploaded to their market
   account with the market's carrier codes, in the market's batch sizes (Coupang 50 invoices,
   Naver 30 dispatches per call), and move to ``dispatched``.

Partial shipments of a multi-item customer order: each market unit is dispatched as soon as it
has its own tracking number (a Naver product order; a Coupang shipment box), so the items that
shipped reach the buyer's tracking page while the others are still on their way. A Coupang
shipment box takes exactly one invoice for all of its vendor items (no split shipping), so a box
waits until every item in it has shipped; when its items came with different tracking numbers the
box keeps its items ``shipped`` with the reason (split shipping is done in Wing by an operator).

Failures: a transient error (timeout, 5xx, rate limit) leaves the rows as they are for the next
sweep. A refusal (unknown carrier, a box in the wrong state) is written to ``status_reason`` of
the item, which stays ``shipped`` (listed by ``dropship orders attention``) and is tried again
after :data:`REFUSED_RETRY_AFTER_S`. Every change writes an ``order_events`` row with the task id.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
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
from dropship.platforms import carriers
from dropship.platforms.interfaces import ShipmentInfo, TrackingUpload

log = logging.getLogger("dropship.orders.tracking")

# Keys per get_shipments call from this sweep (the connector may split further).
LOOKUP_CHUNK = 200
# Tracking uploads per market call, as the markets document them.
MARKET_BATCH = {"coupang": 50, "naver": 30}
REFUSED_RETRY_AFTER_S = 900
# Statuses of a Coupang box's other items that mean "not shipped yet: wait".
_WAITING = ("new", "unmatched", "forwarding", "forwarded", "awaiting_placement", "failed")


def sweep_tracking(
    task_id: str | None = None, factory: ConnectorFactory | None = None, limit: int = 2000
) -> dict[str, Any]:
    """Collect shipments, then dispatch them; one sweep at a time (a second one returns
    ``{"skipped": True}``)."""
    with sweep_lock("tracking") as got:
        if not got:
            return {"skipped": True}
        collected = collect_shipments(task_id, factory, limit)
        dispatched = dispatch_tracking(task_id, factory, limit)
    return {"skipped": False, **collected, **dispatched}


def _carrier_id(supplier: str, shipment: ShipmentInfo) -> tuple[str, str | None]:
    """Our carrier id for the supplier's carrier text, or the text itself and the reason."""
    try:
        if supplier == "ownerclan":
            return carriers.from_ownerclan(shipment.carrier).id, None
        if supplier == "gentrade":
            return carriers.from_zentrade(shipment.carrier).id, None
        return carriers.carrier(shipment.carrier, source=f"{supplier} carrier").id, None
    except PermanentError as exc:
        return shipment.carrier[:64], short(exc)


def collect_shipments(
    task_id: str | None = None, factory: ConnectorFactory | None = None, limit: int = 2000
) -> dict[str, Any]:
    make = factory or default_factory
    with db.session_scope() as session:
        rows = session.execute(
            text(
                "SELECT o.order_key, po.supplier FROM orders o "
                "JOIN purchase_orders po ON po.order_key = o.order_key "
                "WHERE o.status = 'forwarded' AND po.status = 'placed' "
                "ORDER BY o.updated_at LIMIT :limit"
            ),
            {"limit": limit},
        ).all()
    by_supplier: dict[str, list[str]] = defaultdict(list)
    for key, supplier in rows:
        by_supplier[supplier].append(key)
    shipped = 0
    errors: dict[str, str] = {}
    for supplier, keys in by_supplier.items():
        try:
            connector = make(supplier_account(supplier))
        except PermanentError as exc:
            errors[supplier] = short(exc, 200)
            continue
        for start in range(0, len(keys), LOOKUP_CHUNK):
            chunk = keys[start : start + LOOKUP_CHUNK]
            try:
                found = connector.get_shipments(chunk)
            except (TransientError, PermanentError) as exc:
                # Domeggook without its Private API has no lookup: its tracking is imported
                # by an operator (dropship orders tracking-import); others retry next sweep.
                errors[supplier] = short(exc, 200)
                break
            shipped += _record_shipped(supplier, chunk, found, task_id)
    return {"checked": len(rows), "shipped": shipped, "lookup_errors": errors}


def _record_shipped(
    supplier: str, keys: Sequence[str], found: Sequence[ShipmentInfo], task_id: str | None
) -> int:
    first: dict[str, ShipmentInfo] = {}
    extra: dict[str, list[str]] = defaultdict(list)
    for shipment in found:
        if shipment.order_key not in first:
            first[shipment.order_key] = shipment
        elif shipment.tracking_number != first[shipment.order_key].tracking_number:
            extra[shipment.order_key].append(shipment.tracking_number)
    count = 0
    with db.session_scope() as session:
        for key, shipment in first.items():
            carrier, reason = _carrier_id(supplier, shipment)
            changed = session.execute(
                text(
                    "UPDATE orders SET status = 'shipped', carrier = :c, tracking_number = :t, "
                    "shipped_at = :at, status_reason = :r, updated_at = now() "
                    "WHERE order_key = :k AND status = 'forwarded' RETURNING id, ordered_at"
                ),
                {
                    "c": carrier,
                    "t": shipment.tracking_number[:64],
                    "at": shipment.shipped_at or datetime.now(UTC),
                    "r": reason,
                    "k": key,
                },
            ).all()
            detail: dict[str, Any] = {
                "carrier": carrier,
                "tracking_number": shipment.tracking_number,
                "supplier_order_id": shipment.supplier_order_id,
            }
            if extra.get(key):
                detail["other_tracking_numbers"] = extra[key]
            if reason:
                detail["reason"] = reason
            record_events(
                session,
                [(r[0], r[1]) for r in changed],
                "shipped",
                "forwarded",
                "shipped",
                task_id,
                detail,
            )
            count += len(changed)
        waiting = [k for k in keys if k not in first]
        if waiting:
            session.execute(
                text(
                    "UPDATE orders SET updated_at = now() "
                    "WHERE order_key = ANY(:keys) AND status = 'forwarded'"
                ),
                {"keys": waiting},
            )
    return count


@dataclass
class _Unit:
    """One market upload: a Naver product order, or a Coupang box with all its items."""

    account: str
    market: str
    market_order_id: str
    rows: list[tuple[int, datetime]]
    item_ids: list[str]
    carrier: str
    tracking_number: str
    group_id: str | None = None

    def upload(self) -> TrackingUpload:
        return TrackingUpload(
            market_order_id=self.market_order_id,
            market_item_ids=tuple(self.item_ids),
            carrier=self.carrier,
            tracking_number=self.tracking_number,
            market_group_id=self.group_id,
        )


def _ready_units(limit: int) -> tuple[list[_Unit], list[tuple[list[tuple[int, datetime]], str]]]:
    """Units ready to upload, and (rows, reason) of Coupang boxes that cannot be uploaded."""
    with db.session_scope() as session:
        rows = session.execute(
            text(
                "SELECT o.id, o.ordered_at, o.account_id, a.name AS account, a.platform, "
                "o.market_order_id, o.market_item_id, o.market_group_id, o.carrier, "
                "o.tracking_number FROM orders o JOIN accounts a ON a.id = o.account_id "
                "WHERE o.status = 'shipped' AND (o.status_reason IS NULL OR "
                "o.updated_at < now() - make_interval(secs => :retry)) "
                "ORDER BY o.shipped_at LIMIT :limit"
            ),
            {"limit": limit, "retry": REFUSED_RETRY_AFTER_S},
        ).all()
        boxes: dict[tuple[int, str], list[Any]] = defaultdict(list)
        units: list[_Unit] = []
        for row in rows:
            if row.platform == "coupang":
                boxes[(row.account_id, row.market_order_id)].append(row)
            else:
                item = row.market_item_id or row.market_order_id
                units.append(
                    _Unit(
                        row.account,
                        row.platform,
                        row.market_order_id,
                        [(row.id, row.ordered_at)],
                        [item],
                        row.carrier,
                        row.tracking_number,
                    )
                )
        unsplittable = []
        if boxes:
            waiting = {
                (r[0], r[1])
                for r in session.execute(
                    text(
                        "SELECT DISTINCT account_id, market_order_id FROM orders "
                        "WHERE market_order_id = ANY(:ids) AND status = ANY(:waiting)"
                    ),
                    {"ids": sorted({b for _, b in boxes}), "waiting": list(_WAITING)},
                )
            }
            for (account_id, box), items in boxes.items():
                if (account_id, box) in waiting:
                    continue  # another item of this box has not shipped yet
                numbers = {(r.carrier, r.tracking_number) for r in items}
                refs = [(r.id, r.ordered_at) for r in items]
                if len(numbers) > 1:
                    unsplittable.append(
                        (
                            refs,
                            f"coupang box {box}: its items shipped with different tracking "
                            "numbers; split shipping is not supported here (upload in Wing)",
                        )
                    )
                    continue
                first = items[0]
                units.append(
                    _Unit(
                        first.account,
                        "coupang",
                        box,
                        refs,
                        [r.market_item_id for r in items if r.market_item_id],
                        first.carrier,
                        first.tracking_number,
                        first.market_group_id,
                    )
                )
    return units, unsplittable


def dispatch_tracking(
    task_id: str | None = None, factory: ConnectorFactory | None = None, limit: int = 2000
) -> dict[str, Any]:
    make = factory or default_factory
    units, unsplittable = _ready_units(limit)
    for refs, reason in unsplittable:
        _refuse(refs, reason, task_id)
    by_account: dict[str, list[_Unit]] = defaultdict(list)
    for unit in units:
        by_account[unit.account].append(unit)
    dispatched = refused = 0
    errors: dict[str, str] = {}
    for account, account_units in by_account.items():
        connector = make(account)
        size = MARKET_BATCH.get(account_units[0].market, 30)
        for start in range(0, len(account_units), size):
            batch = account_units[start : start + size]
            try:
                done, bad = _upload(connector, batch, task_id)
            except TransientError as exc:
                errors[account] = short(exc, 200)
                break  # the market is struggling: the next sweep tries again
            dispatched += done
            refused += bad
    return {
        "dispatched": dispatched,
        "refused": refused + len(unsplittable),
        "upload_errors": errors,
    }


def _upload(connector: Any, batch: list[_Unit], task_id: str | None) -> tuple[int, int]:
    try:
        connector.upload_tracking([u.upload() for u in batch])
    except PermanentError as exc:
        if len(batch) == 1:
            _refuse(batch[0].rows, f"tracking upload refused: {short(exc, 400)}", task_id)
            return 0, 1
        # One bad unit must not hold back the batch: find it by sending one at a time.
        done = bad = 0
        for unit in batch:
            d, b = _upload(connector, [unit], task_id)
            done, bad = done + d, bad + b
        return done, bad
    refs = [ref for unit in batch for ref in unit.rows]
    with db.session_scope() as session:
        changed = session.execute(
            text(
                "UPDATE orders SET status = 'dispatched', dispatched_at = now(), "
                "status_reason = NULL, updated_at = now() "
                "WHERE (id, ordered_at) IN (SELECT * FROM unnest(CAST(:ids AS bigint[]), "
                "CAST(:ats AS timestamptz[]))) AND status = 'shipped' RETURNING id, ordered_at"
            ),
            {"ids": [r[0] for r in refs], "ats": [r[1] for r in refs]},
        ).all()
        record_events(
            session,
            [(r[0], r[1]) for r in changed],
            "dispatched",
            "shipped",
            "dispatched",
            task_id,
            {"market": batch[0].market},
        )
    return len(changed), 0


def _refuse(refs: list[tuple[int, datetime]], reason: str, task_id: str | None) -> None:
    with db.session_scope() as session:
        changed = session.execute(
            text(
                "UPDATE orders SET status_reason = :r, updated_at = now() "
                "WHERE (id, ordered_at) IN (SELECT * FROM unnest(CAST(:ids AS bigint[]), "
                "CAST(:ats AS timestamptz[]))) AND status = 'shipped' RETURNING id, ordered_at"
            ),
            {"r": reason, "ids": [r[0] for r in refs], "ats": [r[1] for r in refs]},
        ).all()
        record_events(
            session,
            [(r[0], r[1]) for r in changed],
            "dispatch_refused",
            "shipped",
            "shipped",
            task_id,
            {"reason": reason},
        )
