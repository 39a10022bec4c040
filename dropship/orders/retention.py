"""Customer data retention: receivers' personal data is kept only as long as shipping needs it.

:func:`erase_expired_pii` (beat task ``tasks.orders.erase_expired_pii``, daily) erases, for order
items created more than ``orders.pii_retention_days`` ago (``DROPSHIP_ORDERS__PII_RETENTION_DAYS``,
default 90): ``receiver_name``, ``receiver_phone``, ``receiver_address``, ``receiver_zipcode`` and
``receiver_message`` become NULL and ``pii_erased_at`` is set. The order facts stay: ids, keys,
product, quantity, prices, statuses, tracking, events, and the pseudonymous ``customer_id``.
Work goes in bounded batches (one transaction each), so a large backlog never holds long locks.

Purchase-order sheets (files the sheet flow writes with receivers' addresses) older than the same
period are deleted from disk and their rows get ``status = 'erased'``; the row (supplier, count,
time) stays as the record that a sheet existed.

Elsewhere personal data never leaves the order row: task arguments and results carry ids and
counts, ``order_events.detail`` ids and reasons, exceptions and logs name order keys only, and
:class:`~dropship.platforms.interfaces.BuyerInfo` and ``Order`` have redacted reprs.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from dropship import db
from dropship.settings import get_settings

log = logging.getLogger("dropship.orders")

BATCH = 1000


def erase_expired_pii(
    retention_days: int | None = None, now: datetime | None = None, batch: int = BATCH
) -> dict[str, int]:
    """Erase receivers' personal data older than the retention period; returns counts
    ``{"orders": n, "sheets": m}``."""
    days = get_settings().orders.pii_retention_days if retention_days is None else retention_days
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    erased = 0
    while True:
        with db.session_scope() as session:
            n = len(
                session.execute(
                    text(
                        """
                    WITH due AS (
                        SELECT id, ordered_at FROM orders
                        WHERE pii_erased_at IS NULL AND created_at < :cutoff
                        ORDER BY created_at LIMIT :batch
                        FOR UPDATE SKIP LOCKED
                    )
                    UPDATE orders o SET receiver_name = NULL, receiver_phone = NULL,
                           receiver_address = NULL, receiver_zipcode = NULL,
                           receiver_message = NULL, pii_erased_at = now(), updated_at = now()
                    FROM due WHERE o.id = due.id AND o.ordered_at = due.ordered_at
                    RETURNING o.id
                    """
                    ),
                    {"cutoff": cutoff, "batch": batch},
                ).all()
            )
        erased += n
        if n < batch:
            break
    sheets = _erase_sheets(cutoff)
    if erased or sheets:
        log.info("retention: erased personal data of %d order item(s), %d sheet(s)", erased, sheets)
    return {"orders": erased, "sheets": sheets}


def _erase_sheets(cutoff: datetime) -> int:
    with db.session_scope() as session:
        rows = session.execute(
            text(
                "SELECT id, path FROM purchase_order_sheets "
                "WHERE created_at < :cutoff AND status <> 'erased' FOR UPDATE SKIP LOCKED"
            ),
            {"cutoff": cutoff},
        ).all()
        for row in rows:
            Path(row.path).unlink(missing_ok=True)
            session.execute(
                text("UPDATE purchase_order_sheets SET status = 'erased' WHERE id = :id"),
                {"id": row.id},
            )
    return len(rows)
