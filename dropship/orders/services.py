"""Order ingestion: the order sweep per market account, idempotent storage of order items in the
partitioned ``orders`` table, and acknowledgement at the market.

Public API (stable; ``tasks/orders.py``, the CLI and other order flows call these):

* :func:`sweep_account` ``(account, connector_factory=..., now=None) -> SweepResult`` — pull,
  store, match; ``SweepResult.forward`` / ``.acknowledge`` are the ids to publish after it
  returns (everything is committed by then). See its docstring for locking and the watermark.
* :func:`acknowledge_orders` ``(account, order_ids, ...) -> counts`` — repeatable.
* :func:`market_meaning` ``(market, raw_status, claim)`` — what a market status means for us.
* :func:`record_event` — one ``order_events`` row (ids and reasons only in ``detail``).
* :func:`forwardable_order_ids`, :func:`unacknowledged_order_ids` — what the sweep re-publishes.
* :func:`order_key` — our idempotency key per item; :func:`store_orders` — the plain upsert of
  already-normalised orders (:class:`IncomingOrder`).

Statuses the sweep sets and who acts next are listed above :data:`FORWARDABLE_RAW_STATUSES`;
``cancel_requested`` is for the cancellation flow. Matching is :mod:`dropship.orders.matching`,
forwarding :mod:`dropship.orders.forwarding`, retention :mod:`dropship.orders.retention`.

An order whose month has no partition is not lost: the insert fails with a clear
``MissingPartitionError``, the partitions for those months are created, and the insert is retried
once. If that still fails the error propagates and the sweep task retries (its watermark has not
moved, so the same orders are fetched again).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import psycopg.errors
from sqlalchemy import Connection, Table, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from dropship import db
from dropship.errors import MissingPartitionError, PermanentError, TransientError
from dropship.maintenance.partitions import Month, ensure_partitions
from dropship.ops.memory import batch_rows
from dropship.orders.common import FORWARD_LOCK_PREFIX
from dropship.orders.matching import ListingIndex, Match
from dropship.orders.models import Order, OrderEvent
from dropship.platforms.interfaces import (
    KnownOrderStates,
    MarketConnector,
    MarketOrder,
    MarketOrderItem,
    OrderChange,
)
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


# =========================================================================== the order sweep
#
# Public API (stable; tasks/orders.py and the CLI call these):
#
#   sweep_account(account, connector_factory=..., now=None) -> SweepResult
#   acknowledge_orders(account, order_ids, connector_factory=...) -> dict counts
#   forwardable_order_ids(session, account_id=None, stale_after_s=...) -> list[int]
#   abandoned_purchases(session, account_id=None, after_s=...) -> list[(order id, task id)]
#   record_event(session, order_id, ordered_at, kind, from_status, to_status, detail, task_id)
#   market_meaning(market, raw_status, claim) -> "open" | "unpaid" | "cancel_requested"
#                                                 | "cancelled" | "shipped"
#
# Statuses this sweep sets, and who acts next:
#   new                -> forward_order (dropship.orders.forwarding), and acknowledge
#   unmatched          -> an operator (`dropship orders unmatched`, then `orders retry ID`)
#   cancel_requested   -> the cancellation flow: the market asked to cancel an item we have not
#                         shipped; the purchase (if any) must be cancelled and the cancellation
#                         confirmed at the market. The sweep never calls a supplier for it.
#   cancelled          -> nothing: the market cancelled it before we bought anything.
# A cancel request for an item already shipped/dispatched keeps its status; the claim is kept in
# ``market_claim`` for an operator.

SweepConnectorFactory = Callable[[str], MarketConnector]

# The market statuses that mean "paid, not yet shipped": the only ones we buy for.
FORWARDABLE_RAW_STATUSES: dict[str, tuple[str, ...]] = {
    "coupang": ("ACCEPT", "INSTRUCT"),
    "naver": ("PAYED",),
}
_SHIPPED_RAW = {
    "coupang": {"DEPARTURE", "DELIVERING", "FINAL_DELIVERY", "NONE_TRACKING"},
    "naver": {"DELIVERING", "DELIVERED", "PURCHASE_DECIDED", "EXCHANGED", "RETURNED"},
}
_CANCELLED_RAW = {"coupang": set(), "naver": {"CANCELED", "CANCELED_BY_NOPAYMENT"}}
_UNPAID_RAW = {"coupang": set(), "naver": {"PAYMENT_WAITING"}}
# Claims that ask us not to ship (Naver claimStatus; ours for Coupang's cancel holds).
_CANCEL_CLAIMS = {"CANCEL_REQUEST", "CANCELING", "CANCEL_HOLD"}
_CANCELLED_CLAIMS = {"CANCEL_DONE", "CANCELED"}
# Our statuses before the goods leave the supplier: a cancel request can still stop them.
PRE_SHIPMENT_STATUSES = (
    "new",
    "unmatched",
    "forwarding",
    "forwarded",
    "awaiting_placement",
    "failed",
)
# Pre-shipment statuses with nothing bought (yet): a market cancellation just closes them.
_NOTHING_BOUGHT = ("new", "unmatched", "failed")
SWEEP_CHUNK = 500
ERROR_MAX = 2000


def market_meaning(market: str, raw_status: str, claim: str | None = None) -> str:
    """What a market's status (and claim) means for us: ``open`` (paid, to ship), ``unpaid``,
    ``cancel_requested``, ``cancelled`` or ``shipped``."""
    if claim in _CANCELLED_CLAIMS or raw_status in _CANCELLED_RAW.get(market, set()):
        return "cancelled"
    if raw_status in _SHIPPED_RAW.get(market, set()):
        return "shipped"
    if claim in _CANCEL_CLAIMS:
        return "cancel_requested"
    if raw_status in _UNPAID_RAW.get(market, set()):
        return "unpaid"
    return "open"


def _item_claim(order: MarketOrder, item_index: int) -> str | None:
    """The cancel/return claim the market reports for one item, if any (never buyer data)."""
    raw = order.raw or {}
    if order.market == "naver":
        po = raw.get("productOrder") or {}
        claim = po.get("claimStatus")
        return str(claim) if claim else None
    if order.market == "coupang":
        lines = raw.get("orderItems") or []
        line = lines[item_index] if item_index < len(lines) else {}
        if line.get("canceled"):
            return "CANCELED"
        if int(line.get("holdCountForCancel") or 0) > 0:
            return "CANCEL_HOLD"
    return None


@dataclass
class SweepResult:
    """Counts and ids (never buyer data) of one account's sweep."""

    account: str
    skipped: bool = False
    seen: int = 0
    # Changes the market listed for orders stored with that same status and claim: not read
    # again (see _known_states).
    unchanged: int = 0
    new: int = 0
    updated: int = 0
    unmatched: int = 0
    cancel_requested: int = 0
    forward: list[int] = field(default_factory=list)
    acknowledge: list[int] = field(default_factory=list)
    # Forward tasks that died mid-purchase (see abandoned_purchases): the task layer publishes
    # their whole batch again when the result backend still knows its arguments.
    abandoned_tasks: list[str] = field(default_factory=list)
    watermark: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "skipped": self.skipped,
            "seen": self.seen,
            "unchanged": self.unchanged,
            "new": self.new,
            "updated": self.updated,
            "unmatched": self.unmatched,
            "cancel_requested": self.cancel_requested,
            "forward": len(self.forward),
            "acknowledge": len(self.acknowledge),
            "abandoned_tasks": len(self.abandoned_tasks),
            "watermark": self.watermark,
        }


def default_market_connector(account: str) -> MarketConnector:
    from dropship.platforms.registry import connector_for

    connector: MarketConnector = connector_for(account)
    return connector


def ensure_market_account(session: Session, name: str) -> int:
    """The ``accounts`` row of a configured market account (created on first use)."""
    platform = get_settings().platforms.account(name).platform
    return int(
        session.execute(
            text(
                "INSERT INTO accounts (name, platform, role, credentials_ref) "
                "VALUES (:n, :p, 'market', :n) ON CONFLICT (name) DO UPDATE "
                "SET platform = EXCLUDED.platform RETURNING id"
            ),
            {"n": name, "p": platform},
        ).scalar_one()
    )


_EVENT = text(
    "INSERT INTO order_events (order_id, ordered_at, kind, from_status, to_status, "
    "detail, task_id) VALUES (:o, :t, :k, :f, :s, CAST(:d AS jsonb), :task)"
)


def _event_params(
    order_id: int,
    ordered_at: datetime,
    kind: str,
    from_status: str | None,
    to_status: str | None,
    detail: dict[str, Any] | None,
    task_id: str | None,
) -> dict[str, Any]:
    return {
        "o": order_id,
        "t": ordered_at,
        "k": kind,
        "f": from_status,
        "s": to_status,
        "d": json.dumps(detail or {}, ensure_ascii=False),
        "task": task_id,
    }


def record_event(
    session: Session,
    order_id: int,
    ordered_at: datetime,
    kind: str,
    from_status: str | None,
    to_status: str | None,
    detail: dict[str, Any] | None = None,
    task_id: str | None = None,
) -> None:
    """One ``order_events`` row. ``detail`` holds ids, codes and reasons only (no buyer data)."""
    session.execute(
        _EVENT,
        _event_params(order_id, ordered_at, kind, from_status, to_status, detail, task_id),
    )


def _sweep_lock_key(account_id: int) -> str:
    return f"dropship.orders.sweep:{account_id}"


def _row_for(
    account_id: int, order: MarketOrder, index: int, item: MarketOrderItem, match: Match
) -> dict[str, Any]:
    receiver = order.receiver
    claim = _item_claim(order, index)
    meaning = market_meaning(order.market, order.status, claim)
    status, reason = _initial_status(meaning, order.status, match)
    address = None
    if receiver is not None:
        address = " ".join(p for p in (receiver.address, receiver.address_detail) if p) or None
    group = order.raw.get("orderId") if order.market == "coupang" else None
    if order.market == "naver":
        group = (order.raw.get("order") or {}).get("orderId")
    return {
        "account_id": account_id,
        "market": order.market,
        "market_order_id": order.market_order_id,
        "market_item_id": item.market_item_id,
        "market_group_id": str(group) if group else None,
        "order_key": order_key(
            order.market, account_id, order.market_order_id, item.market_item_id
        ),
        "ordered_at": order.ordered_at,
        "raw_status": order.status,
        "market_claim": claim,
        "status": status,
        "status_reason": reason,
        "quantity": item.quantity,
        "sale_price": item.unit_price,
        "external_sku": item.external_sku,
        "option_label": item.option,
        "listing_id": match.listing_id,
        "product_id": match.product_id,
        "supplier": match.supplier,
        "supplier_sku": match.supplier_sku,
        "supplier_option_code": match.supplier_option_code,
        "unit_cost": match.unit_cost,
        "receiver_name": receiver.name if receiver else None,
        "receiver_phone": receiver.phone if receiver else None,
        "receiver_address": address,
        "receiver_zipcode": (receiver.zipcode or None) if receiver else None,
        "receiver_message": (receiver.message or None) if receiver else None,
        "closed_at": datetime.now(UTC) if status == "cancelled" else None,
    }


def _initial_status(meaning: str, raw_status: str, match: Match) -> tuple[str, str | None]:
    if meaning == "cancelled":
        return "cancelled", f"cancelled at the market ({raw_status}) before it was forwarded"
    if meaning == "cancel_requested":
        return "cancel_requested", "the market asked to cancel it before it was forwarded"
    if meaning == "shipped":
        return "unmatched", (
            f"first seen already {raw_status} at the market: not bought by this system"
        )
    if not match.matched:
        return "unmatched", match.reason
    if meaning == "unpaid":
        return "new", f"awaiting payment at the market ({raw_status}): not forwarded yet"
    return "new", None


_EXISTING = text(
    """
    SELECT o.id, o.ordered_at, o.market_order_id, o.market_item_id, o.status, o.raw_status,
           o.market_claim
    FROM orders o
    JOIN unnest(CAST(:mo AS text[]), CAST(:mi AS text[]), CAST(:ts AS timestamptz[]))
         AS k(mo, mi, ts)
      ON o.market_order_id = k.mo AND o.market_item_id = k.mi AND o.ordered_at = k.ts
    WHERE o.account_id = :a
    """
)
# The stored items whose market status or claim changed, read again FOR UPDATE in id order (as
# forwarding locks its batches): the status the update below starts from is the current one
# until this chunk commits. Without the lock a forward committing ``forwarding``/``forwarded``
# between the read and the update was overwritten with the stale status (an order left ``new``
# or ``forwarding`` with its purchase placed). Unchanged items (most of an overlapping re-read)
# are not locked, so forwards of them never wait for the sweep.
_CHANGED = text(
    """
    SELECT o.id, o.ordered_at, o.market_order_id, o.market_item_id, o.status, o.raw_status,
           o.market_claim
    FROM orders o
    WHERE o.id = ANY(:ids) AND o.ordered_at = ANY(:ts)
    ORDER BY o.id
    FOR UPDATE OF o
    """
)

_INSERT_COLUMNS = (
    "account_id",
    "market",
    "market_order_id",
    "market_item_id",
    "market_group_id",
    "order_key",
    "ordered_at",
    "raw_status",
    "market_claim",
    "status",
    "status_reason",
    "quantity",
    "sale_price",
    "external_sku",
    "option_label",
    "listing_id",
    "product_id",
    "supplier",
    "supplier_sku",
    "supplier_option_code",
    "unit_cost",
    "receiver_name",
    "receiver_phone",
    "receiver_address",
    "receiver_zipcode",
    "receiver_message",
    "closed_at",
)


# One statement object, executed with a list of rows: SQLAlchemy compiles it once and sends the
# rows as batched multi-row VALUES ("insertmanyvalues"). A ``.values(rows)`` statement built per
# chunk was compiled again every time, 27 columns x rows bind parameters: 15 % of the order
# workers' CPU in the orders benchmark (docs/BENCHMARKS.md "Orders").
_INSERT_ITEMS = (
    insert(cast(Table, Order.__table__))
    .on_conflict_do_nothing(
        index_elements=["account_id", "market_order_id", "market_item_id", "ordered_at"]
    )
    .returning(Order.id, Order.ordered_at, Order.status, Order.raw_status, Order.market)
)


def _insert_items(session: Session, rows: list[dict[str, Any]]) -> list[Any]:
    """Insert order items not stored yet; the rows inserted (a conflicting one is skipped)."""

    def attempt() -> list[Any]:
        with session.begin_nested():
            return list(session.execute(_INSERT_ITEMS, rows).all())

    try:
        return attempt()
    except IntegrityError as exc:
        if not _is_missing_partition(exc):
            raise
    months = list({Month.of(r["ordered_at"].astimezone(UTC)) for r in rows})
    log.warning("orders: no partition for %s; creating it", ",".join(map(str, months)))
    cfg = get_settings().partitions
    ensure_partitions(
        session.connection(),
        months_ahead=cfg.months_ahead,
        lock_timeout_ms=cfg.lock_timeout_ms,
        extra_months=months,
    )
    return attempt()


@dataclass
class _Writes:
    """A chunk's market-status updates and events, each sent as one executemany."""

    updates: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def event(
        self,
        order_id: int,
        ordered_at: datetime,
        kind: str,
        from_status: str | None,
        to_status: str | None,
        detail: dict[str, Any] | None = None,
        task_id: str | None = None,
    ) -> None:
        self.events.append(
            _event_params(order_id, ordered_at, kind, from_status, to_status, detail, task_id)
        )

    def write(self, session: Session) -> None:
        if self.updates:
            session.execute(_MARKET_CHANGE, self.updates)
        if self.events:
            session.execute(_EVENT, self.events)


_MARKET_CHANGE = text(
    "UPDATE orders SET raw_status = :raw, market_claim = :claim, status = :status, "
    "status_reason = CASE WHEN :changed THEN :reason "
    "WHEN status = 'new' AND :open THEN NULL ELSE status_reason END, "
    "closed_at = CASE WHEN :closing THEN now() ELSE closed_at END, "
    "updated_at = now() WHERE id = :id AND ordered_at = :t"
)


def _apply_market_change(
    writes: _Writes, existing: Any, row: dict[str, Any], result: SweepResult
) -> None:
    """An item stored before: keep the market's status and claim; act where they mean
    something for us (a cancellation before shipment; an order that got paid)."""
    if existing.raw_status == row["raw_status"] and existing.market_claim == row["market_claim"]:
        return
    meaning = market_meaning(row["market"], row["raw_status"], row["market_claim"])
    status, reason = existing.status, None
    if meaning == "cancel_requested" and existing.status in PRE_SHIPMENT_STATUSES:
        status, reason = "cancel_requested", "the market asked to cancel it before shipment"
    elif meaning == "cancelled" and existing.status in _NOTHING_BOUGHT:
        status, reason = "cancelled", f"cancelled at the market ({row['raw_status']})"
    elif meaning == "cancelled" and existing.status in PRE_SHIPMENT_STATUSES:
        # Bought or being bought: the purchase must be cancelled first.
        status, reason = "cancel_requested", f"cancelled at the market ({row['raw_status']})"
    writes.updates.append(
        {
            "raw": row["raw_status"],
            "claim": row["market_claim"],
            "status": status,
            "changed": status != existing.status,
            "closing": status == "cancelled" and existing.status != "cancelled",
            "open": meaning == "open",
            "reason": reason,
            "id": existing.id,
            "t": existing.ordered_at,
        }
    )
    writes.event(
        existing.id,
        existing.ordered_at,
        "market_status",
        existing.status,
        status,
        {"raw_status": row["raw_status"], "claim": row["market_claim"]},
    )
    result.updated += 1
    if status == "cancel_requested" and existing.status != status:
        result.cancel_requested += 1
    was_forwardable = existing.raw_status in FORWARDABLE_RAW_STATUSES.get(row["market"], ())
    if status == "new" and meaning == "open" and existing.status == "new" and not was_forwardable:
        result.forward.append(int(existing.id))  # e.g. paid now: its forward starts
        result.acknowledge.append(int(existing.id))


def _store_chunk(
    session: Session, account_id: int, orders: list[MarketOrder], result: SweepResult
) -> None:
    pairs = [(o, n, item) for o in orders for n, item in enumerate(o.items)]
    index = ListingIndex(session, account_id, [item for _, _, item in pairs])
    rows: dict[tuple[str, str, datetime], dict[str, Any]] = {}
    for order, n, item in pairs:
        row = _row_for(account_id, order, n, item, index.match(item))
        rows[(row["market_order_id"], row["market_item_id"], row["ordered_at"])] = row
    keys = list(rows)
    existing = {
        (e.market_order_id, e.market_item_id, e.ordered_at): e
        for e in session.execute(
            _EXISTING,
            {
                "a": account_id,
                "mo": [k[0] for k in keys],
                "mi": [k[1] for k in keys],
                "ts": [k[2] for k in keys],
            },
        ).all()
    }
    result.seen += len(rows)
    fresh = [row for key, row in rows.items() if key not in existing]
    changed = [
        e
        for key, e in existing.items()
        if (e.raw_status, e.market_claim) != (rows[key]["raw_status"], rows[key]["market_claim"])
    ]
    if changed:
        existing.update(
            ((e.market_order_id, e.market_item_id, e.ordered_at), e)
            for e in session.execute(
                _CHANGED,
                {"ids": [e.id for e in changed], "ts": list({e.ordered_at for e in changed})},
            ).all()
        )
    writes = _Writes()
    for e in changed:
        key = (e.market_order_id, e.market_item_id, e.ordered_at)
        _apply_market_change(writes, existing[key], rows[key], result)
    inserted = (
        _insert_items(session, [{c: row[c] for c in _INSERT_COLUMNS} for row in fresh])
        if fresh
        else []
    )
    forwardable = FORWARDABLE_RAW_STATUSES
    for r in inserted:
        writes.event(r.id, r.ordered_at, "ingested", None, r.status)
        result.new += 1
        if r.status == "unmatched":
            result.unmatched += 1
        elif r.status == "cancel_requested":
            result.cancel_requested += 1
        elif r.status == "new" and r.raw_status in forwardable.get(r.market, ()):
            result.forward.append(int(r.id))
            result.acknowledge.append(int(r.id))
    writes.write(session)


def sweep_account(
    account: str,
    connector_factory: SweepConnectorFactory = default_market_connector,
    now: datetime | None = None,
) -> SweepResult:
    """Pull the orders of market ``account`` changed since its watermark (minus the overlap),
    store every item once, match it, and move the watermark after all of it is committed.

    A session-level advisory lock per account makes a second concurrent sweep return
    ``skipped=True`` at once. Items are committed in chunks (forwarding can start while a long
    sweep goes on; the upsert makes re-reading them harmless); the watermark and
    ``order_sweeps.last_success_at`` move only in the last commit. A failure records
    ``order_sweeps.last_error`` (class and message, which name ids only) and re-raises; the
    watermark stays. The returned ``forward`` ids include older ``new`` items whose forward
    task was lost (see :func:`forwardable_order_ids`); publish them after this returns."""
    cfg = get_settings().orders
    until = now or datetime.now(UTC)
    result = SweepResult(account=account)
    engine = db.get_engine()
    with engine.connect() as lock_conn:
        with db.session_scope() as session:
            account_id = ensure_market_account(session, account)
        got = lock_conn.execute(
            text("SELECT pg_try_advisory_lock(hashtextextended(:k, 0))"),
            {"k": _sweep_lock_key(account_id)},
        ).scalar_one()
        lock_conn.commit()
        if not got:
            result.skipped = True
            return result
        try:
            _sweep_locked(account, account_id, until, cfg, connector_factory, result)
        finally:
            lock_conn.execute(
                text("SELECT pg_advisory_unlock(hashtextextended(:k, 0))"),
                {"k": _sweep_lock_key(account_id)},
            )
            lock_conn.commit()
    return result


def _sweep_locked(
    account: str,
    account_id: int,
    until: datetime,
    cfg: Any,
    connector_factory: SweepConnectorFactory,
    result: SweepResult,
) -> None:
    with db.session_scope() as session:
        watermark = session.execute(
            text("SELECT orders_watermark FROM accounts WHERE id = :a"), {"a": account_id}
        ).scalar()
        session.execute(
            text(
                "INSERT INTO order_sweeps (account_id, last_started_at) VALUES (:a, now()) "
                "ON CONFLICT (account_id) DO UPDATE SET last_started_at = now()"
            ),
            {"a": account_id},
        )
    since = (
        watermark - timedelta(seconds=cfg.sweep_overlap_s)
        if watermark is not None
        else until - timedelta(seconds=cfg.initial_lookback_s)
    )
    try:
        connector = connector_factory(account)
        chunk: list[MarketOrder] = []
        chunk_items = batch_rows(SWEEP_CHUNK)
        for order in connector.iter_orders(since, until, _known_states(account_id, result)):
            chunk.append(order)
            if sum(len(o.items) for o in chunk) >= chunk_items:
                with db.session_scope() as session:
                    _store_chunk(session, account_id, chunk, result)
                chunk = []
        with db.session_scope() as session:
            if chunk:
                _store_chunk(session, account_id, chunk, result)
            # Forward tasks lost between a commit and their publish (or never run). Touched as
            # they are re-published, so the next sweep does not publish them again while their
            # task waits in a backlog: each gets one more message per stale period, not one per
            # sweep (which flooded `high` when workers fell behind).
            stale = forwardable_order_ids(session, account_id, cfg.stale_after_s)
            if stale:
                session.execute(
                    text("UPDATE orders SET updated_at = now() WHERE id = ANY(:ids)"),
                    {"ids": stale},
                )
            # Purchases a dead worker left `placing` come back sooner than the stale period:
            # nobody holds their forward lock, so nobody is placing them.
            abandoned = abandoned_purchases(session, account_id, cfg.abandoned_after_s)
            if abandoned:
                session.execute(
                    text(
                        "UPDATE purchase_orders p SET updated_at = now() FROM orders o "
                        "WHERE o.id = ANY(:ids) AND p.order_key = o.order_key"
                    ),
                    {"ids": [order_id for order_id, _ in abandoned]},
                )
            stale += [order_id for order_id, _ in abandoned]
            result.abandoned_tasks = list(dict.fromkeys(t for _, t in abandoned if t))
            result.forward = list(dict.fromkeys([*result.forward, *stale]))
            result.acknowledge = list(
                dict.fromkeys([*result.acknowledge, *unacknowledged_order_ids(session, account_id)])
            )
            new_mark = max(watermark, until) if watermark is not None else until
            session.execute(
                text("UPDATE accounts SET orders_watermark = :w WHERE id = :a"),
                {"w": new_mark, "a": account_id},
            )
            session.execute(
                text(
                    "UPDATE order_sweeps SET last_success_at = now(), last_error = NULL, "
                    "orders_seen = orders_seen + :n, detail = CAST(:d AS jsonb) "
                    "WHERE account_id = :a"
                ),
                {"a": account_id, "n": result.seen, "d": json.dumps(result.as_dict())},
            )
            result.watermark = new_mark.isoformat()
    except Exception as exc:
        safe = _without_row_data(exc)
        with db.session_scope() as session:
            session.execute(
                text("UPDATE order_sweeps SET last_error = :e WHERE account_id = :a"),
                {"a": account_id, "e": f"{type(safe).__name__}: {safe}"[:ERROR_MAX]},
            )
        if safe is exc:
            raise
        raise safe from None


# Of a page of market changes, the orders whose stored items all have exactly that market status
# and claim. One probe per id through the (account, market order, item, ordered_at) unique
# index, per partition; the order time is not in a change entry.
_KNOWN_STATES = text(
    """
    SELECT k.id
    FROM unnest(CAST(:ids AS text[]), CAST(:st AS text[]), CAST(:cl AS text[])) AS k(id, st, cl)
    JOIN orders o ON o.account_id = :a AND o.market_order_id = k.id
    GROUP BY k.id
    HAVING bool_and(o.raw_status = k.st AND o.market_claim IS NOT DISTINCT FROM k.cl)
    """
)


def _known_states(account_id: int, result: SweepResult) -> KnownOrderStates:
    """The sweep's answer to a connector's "which of these changes do you hold already?": a
    re-read of the overlap then costs the change list only, not every order's details again.
    What is not stored, or stored with another status or claim, is read and stored as before."""

    def known(changes: Sequence[OrderChange]) -> set[str]:
        with db.session_scope() as session:
            ids = set(
                session.execute(
                    _KNOWN_STATES,
                    {
                        "a": account_id,
                        "ids": [c.market_order_id for c in changes],
                        "st": [c.status for c in changes],
                        "cl": [c.claim for c in changes],
                    },
                ).scalars()
            )
        result.unchanged += len(ids)
        return ids

    return known


def _without_row_data(exc: Exception) -> Exception:
    """``exc``, or for a database error one that names only its class and SQLSTATE: a driver's
    text can quote the failing row ("Failing row contains (...)", receivers' data included) or
    the server's address, and this message reaches order_sweeps, the task result and Flower."""
    if not isinstance(exc, DBAPIError):
        return exc
    orig = exc.orig
    state = getattr(orig, "sqlstate", None) or "?"
    message = f"database error {type(orig).__name__} (SQLSTATE {state}) while storing orders"
    if isinstance(exc, OperationalError):
        return TransientError(message)
    return PermanentError(message)


def _forwardable_clause() -> str:
    parts = [
        f"(o.market = '{market}' AND o.raw_status IN ({', '.join(repr(s) for s in statuses)}))"
        for market, statuses in FORWARDABLE_RAW_STATUSES.items()
    ]
    return "(" + " OR ".join(parts) + ")"


def forwardable_order_ids(
    session: Session, account_id: int | None = None, stale_after_s: int = 600, limit: int = 5000
) -> list[int]:
    """Order items that should be on their way to the supplier but whose task was lost: ``new``
    and paid, untouched for ``stale_after_s``, plus ``forwarding`` ones whose purchase is still
    ``pending``/``placing`` that long (a worker died mid-call: the retry looks the key up)."""
    rows = session.execute(
        text(
            f"""
            SELECT o.id FROM orders o
            WHERE (CAST(:a AS bigint) IS NULL OR o.account_id = :a)
              AND o.updated_at < now() - make_interval(secs => :stale)
              AND ((o.status = 'new' AND o.market_claim IS NULL AND {_forwardable_clause()})
                   OR (o.status = 'forwarding' AND EXISTS (
                        SELECT 1 FROM purchase_orders p WHERE p.order_key = o.order_key
                        AND p.status IN ('pending', 'placing')
                        AND p.updated_at < now() - make_interval(secs => :stale))))
            ORDER BY o.id LIMIT :limit
            """
        ),
        {"a": account_id, "stale": stale_after_s, "limit": limit},
    ).scalars()
    return [int(i) for i in rows]


# The forward flow's per-key advisory lock (dropship.orders.forwarding._lock_all), as pg_locks shows
# a bigint key: classid holds the high 32 bits, objid the low ones.
_FORWARD_LOCK_HELD = f"""
    EXISTS (SELECT 1 FROM pg_locks l
            WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND ((l.classid::bigint << 32) | l.objid::bigint)
                  = hashtextextended('{FORWARD_LOCK_PREFIX}' || o.order_key, 0))
"""


def abandoned_purchases(
    session: Session, account_id: int | None = None, after_s: int = 120, limit: int = 5000
) -> list[tuple[int, str | None]]:
    """``(order id, task id)`` of items whose purchase a forward task claimed and then left:
    ``forwarding`` with the purchase ``pending``/``placing``, nobody holding the item's forward
    lock, and untouched for ``after_s``. A live forward holds that lock from the claim to the
    end of the supplier call, and PostgreSQL releases it when the worker's connection dies, so
    such an item is not being placed by anyone: its worker was killed. Read from ``pg_locks``,
    never by taking the lock (a forward arriving at that instant would skip the item as busy).

    A purchase with an error recorded is waiting for its task's retry (lock free meanwhile):
    it counts as left only once that retry is overdue, i.e. ``after_s`` past the longest
    backoff its claims count allows (``attempts``; the backoff doubles from
    ``BACKOFF_BASE_SECONDS`` up to ``BACKOFF_CAP_SECONDS``). The retry's message may well be
    gone: a killed worker held it, or it could not be published."""
    from dropship.celery_app import BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS

    rows = session.execute(
        text(
            f"""
            SELECT o.id, p.task_id FROM orders o
            JOIN purchase_orders p ON p.order_key = o.order_key
            WHERE (CAST(:a AS bigint) IS NULL OR o.account_id = :a)
              AND o.status = 'forwarding' AND p.status IN ('pending', 'placing')
              AND p.updated_at < now() - make_interval(secs => :after + CASE
                    WHEN p.last_error IS NULL THEN 0
                    ELSE LEAST(:cap, :base * power(2, LEAST(p.attempts, 30))) END)
              AND NOT {_FORWARD_LOCK_HELD}
            ORDER BY o.id LIMIT :limit
            """
        ),
        {
            "a": account_id,
            "after": after_s,
            "cap": BACKOFF_CAP_SECONDS,
            "base": BACKOFF_BASE_SECONDS,
            "limit": limit,
        },
    ).all()
    return [(int(r.id), r.task_id) for r in rows]


def unacknowledged_order_ids(session: Session, account_id: int, limit: int = 5000) -> list[int]:
    """Matched, paid items of the account the market has not been told about yet."""
    rows = session.execute(
        text(
            f"""
            SELECT o.id FROM orders o
            WHERE o.account_id = :a AND o.acknowledged_at IS NULL AND o.market_claim IS NULL
              AND o.status IN ('new', 'forwarding', 'forwarded', 'awaiting_placement')
              AND {_forwardable_clause()}
            ORDER BY o.id LIMIT :limit
            """
        ),
        {"a": account_id, "limit": limit},
    ).scalars()
    return [int(i) for i in rows]


# =========================================================================== acknowledgement


def acknowledge_orders(
    account: str,
    order_ids: Sequence[int],
    connector_factory: SweepConnectorFactory = default_market_connector,
    task_id: str | None = None,
) -> dict[str, int]:
    """Tell the market we accepted these items (Coupang acknowledgement, Naver confirmation) and
    set ``acknowledged_at``. Safe to repeat: items acknowledged already are skipped, and the
    connectors treat a unit already past the acknowledged state as done. A transient failure
    propagates (the task retries). When the market refuses a batch, each unit is sent alone so
    the others still go through; refused ones get an ``acknowledge_failed`` event and are named
    in the PermanentError raised at the end (the next sweep offers them again)."""
    with db.session_scope() as session:
        rows = session.execute(
            text(
                "SELECT o.id, o.ordered_at, o.market_order_id, o.status FROM orders o "
                "JOIN accounts a ON a.id = o.account_id WHERE a.name = :acct "
                "AND o.id = ANY(:ids) AND o.acknowledged_at IS NULL "
                "AND o.status NOT IN ('cancelled', 'cancel_requested', 'unmatched')"
            ),
            {"acct": account, "ids": list(order_ids)},
        ).all()
    if not rows:
        return {"acknowledged": 0, "skipped": len(order_ids)}
    units = list(dict.fromkeys(str(r.market_order_id) for r in rows))
    connector = connector_factory(account)
    refused: dict[str, str] = {}
    try:
        connector.acknowledge(units)
    except PermanentError as exc:
        if len(units) == 1:
            refused[units[0]] = str(exc)
        else:
            # One refused unit must not hold back the others: one call each to find it.
            for unit in units:
                try:
                    connector.acknowledge([unit])
                except PermanentError as one:
                    refused[unit] = str(one)
    done = [r for r in rows if str(r.market_order_id) not in refused]
    writes = _Writes()
    for r in rows:
        if str(r.market_order_id) in refused:
            error = {"error": refused[str(r.market_order_id)][:500]}
            writes.event(
                r.id, r.ordered_at, "acknowledge_failed", r.status, r.status, error, task_id
            )
        else:
            writes.event(r.id, r.ordered_at, "acknowledged", r.status, r.status, {}, task_id)
    with db.session_scope() as session:
        if done:
            # Only acknowledged_at: the status is the forwarding flow's, never written here.
            session.execute(
                text(
                    "UPDATE orders SET acknowledged_at = now(), updated_at = now() "
                    "WHERE id = :id AND ordered_at = :t AND acknowledged_at IS NULL"
                ),
                [{"id": r.id, "t": r.ordered_at} for r in sorted(done, key=lambda r: r.id)],
            )
        writes.write(session)
    if refused:
        shown = ", ".join(sorted(refused)[:20])
        raise PermanentError(
            f"{account}: the market refused to acknowledge {len(refused)} unit(s): {shown} "
            f"({len(done)} acknowledged)"
        )
    return {"acknowledged": len(done), "skipped": len(order_ids) - len(rows)}
