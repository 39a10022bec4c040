"""Order ingestion: idempotent upsert of marketplace orders into the partitioned ``orders`` table.

An order whose month has no partition is not lost: the insert fails with a clear
``MissingPartitionError``, the partitions for those months are created, and the insert is retried
once. If that still fails the error propagates and the sweep task retries (its watermark has not
moved, so the same orders are fetched again).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg.errors
from sqlalchemy import Connection, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dropship.errors import MissingPartitionError
from dropship.maintenance.partitions import Month, ensure_partitions
from dropship.orders.models import Order, OrderEvent
from dropship.settings import get_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IncomingOrder:
    """A marketplace order, normalised. Personal data fields are excluded from repr."""

    account_id: int
    market: str
    market_order_id: str
    ordered_at: datetime
    raw_status: str
    market_item_id: str = ""
    quantity: int = 1
    sale_price: int | None = None
    listing_id: int | None = None
    product_id: int | None = None
    customer_id: str | None = None
    receiver_name: str | None = None
    receiver_phone: str | None = None
    receiver_address: str | None = None

    def __repr__(self) -> str:
        return f"IncomingOrder({self.market}:{self.market_order_id} at {self.ordered_at:%Y-%m-%d})"

    @property
    def order_key(self) -> str:
        return order_key(self.market, self.account_id, self.market_order_id, self.market_item_id)


def order_key(market: str, account_id: int, market_order_id: str, market_item_id: str = "") -> str:
    """Our idempotency key for one marketplace order item, sent to the supplier with its
    purchase. The item id is left out where it repeats the unit id (Naver product orders)."""
    key = f"{market}:{account_id}:{market_order_id}"
    if market_item_id and market_item_id != market_order_id:
        key += f":{market_item_id}"
    return key


def _is_missing_partition(exc: IntegrityError) -> bool:
    orig = exc.orig
    return isinstance(orig, psycopg.errors.CheckViolation) and "no partition of relation" in str(
        orig
    )


def _insert_new(session: Session, orders: Sequence[IncomingOrder]) -> list[tuple[int, datetime]]:
    """Insert orders not seen before; return (id, ordered_at) of the new ones only."""
    rows = [
        {
            "account_id": o.account_id,
            "market": o.market,
            "market_order_id": o.market_order_id,
            "market_item_id": o.market_item_id,
            "order_key": o.order_key,
            "ordered_at": o.ordered_at,
            "raw_status": o.raw_status,
            "quantity": o.quantity,
            "sale_price": o.sale_price,
            "listing_id": o.listing_id,
            "product_id": o.product_id,
            "customer_id": o.customer_id,
            "receiver_name": o.receiver_name,
            "receiver_phone": o.receiver_phone,
            "receiver_address": o.receiver_address,
        }
        for o in orders
    ]
    stmt = (
        insert(Order)
        .values(rows)
        .on_conflict_do_nothing(
            index_elements=["account_id", "market_order_id", "market_item_id", "ordered_at"]
        )
        .returning(Order.id, Order.ordered_at)
    )
    try:
        with session.begin_nested():
            result = session.execute(stmt).all()
    except IntegrityError as exc:
        if _is_missing_partition(exc):
            months = sorted({str(Month.of(o.ordered_at.astimezone(UTC))) for o in orders})
            raise MissingPartitionError("orders", ",".join(months)) from None
        raise
    return [(r[0], r[1]) for r in result]


def _ensure_months(conn: Connection, orders: Sequence[IncomingOrder]) -> None:
    cfg = get_settings().partitions
    ensure_partitions(
        conn,
        months_ahead=cfg.months_ahead,
        lock_timeout_ms=cfg.lock_timeout_ms,
        extra_months=[Month.of(o.ordered_at.astimezone(UTC)) for o in orders],
    )


def store_orders(session: Session, orders: Sequence[IncomingOrder]) -> list[int]:
    """Upsert orders idempotently; returns ids of orders that are new (to be forwarded).

    Orders already stored are left alone (``ON CONFLICT DO NOTHING``): a re-fetched page or a
    duplicated delivery never creates a second row, and so never a second purchase.
    """
    if not orders:
        return []
    try:
        created = _insert_new(session, orders)
    except MissingPartitionError as exc:
        log.warning("%s; creating it and retrying the insert", exc)
        # Same transaction on purpose: a second connection would wait on the locks this
        # transaction already holds (e.g. ROW EXCLUSIVE on accounts blocks the FK that ATTACH
        # adds). Partition DDL is transactional, so a rollback leaves no half-made partition.
        _ensure_months(session.connection(), orders)
        created = _insert_new(session, orders)
    for order_id, ordered_at in created:
        session.add(
            OrderEvent(
                order_id=order_id,
                ordered_at=ordered_at,
                kind="ingested",
                from_status=None,
                to_status="new",
            )
        )
    return [order_id for order_id, _ in created]


def count_orders(session: Session) -> int:
    return int(session.execute(text("SELECT count(*) FROM orders")).scalar_one())
