"""What the order-operation services (tracking, claims, purchase-order sheets) share: the
``order_events`` writer, connectors by account or supplier, and a non-blocking sweep lock.

Every state change of an order item goes through :func:`record_events` in the same transaction
as the change, with the Celery task id that made it (``None`` from a shell or the CLI).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from dropship import db
from dropship.errors import ConfigurationError
from dropship.settings import get_settings

ConnectorFactory = Callable[[str], Any]

# Order statuses before the supplier shipped: a cancellation can still stop the purchase.
# Name prefix of the per-order-key advisory lock: forwarding takes it for a whole batch,
# the cancellation flow for one key, and the order sweep reads it in pg_locks to tell an
# abandoned purchase from one being placed right now.
FORWARD_LOCK_PREFIX = "dropship.forward:"
BEFORE_SHIPMENT = ("new", "unmatched", "forwarding", "forwarded", "awaiting_placement", "failed")


def default_factory(account: str) -> Any:
    from dropship.platforms.registry import connector_for

    return connector_for(account)


def supplier_account(supplier: str) -> str:
    """The configured account that buys from ``supplier`` (the first enabled one)."""
    accounts = get_settings().platforms.accounts_for(supplier)
    if not accounts:
        raise ConfigurationError(f"no enabled account for supplier {supplier!r}")
    return accounts[0].name


def record_events(
    session: Session | Connection,
    rows: Sequence[tuple[int, datetime]],
    kind: str,
    from_status: str | None,
    to_status: str | None,
    task_id: str | None,
    detail: dict[str, Any] | None = None,
) -> None:
    """One ``order_events`` row per (order id, ordered_at). ``detail`` holds ids and reasons
    only, never personal data."""
    if not rows:
        return
    session.execute(
        text(
            "INSERT INTO order_events (order_id, ordered_at, kind, from_status, to_status, "
            "detail, task_id) VALUES (:id, :at, :kind, :f, :t, CAST(:d AS jsonb), :task)"
        ),
        [
            {
                "id": order_id,
                "at": ordered_at,
                "kind": kind,
                "f": from_status,
                "t": to_status,
                "d": json.dumps(detail or {}, ensure_ascii=False, default=str),
                "task": task_id,
            }
            for order_id, ordered_at in rows
        ],
    )


@contextmanager
def sweep_lock(name: str) -> Iterator[bool]:
    """A session-level advisory lock held on its own connection for the sweep's duration;
    yields False (and holds nothing) when another sweep has it: two sweeps of the same kind
    never run at once. The lock dies with the connection if the worker is killed."""
    key = zlib.crc32(f"dropship.orderops.{name}".encode()) - 2**31
    with db.get_engine().connect() as conn:
        got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        conn.commit()
        try:
            yield got
        finally:
            if got:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()


def short(message: object, limit: int = 500) -> str:
    text_ = str(message)
    return text_ if len(text_) <= limit else text_[: limit - 1] + "…"
