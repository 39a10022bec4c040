"""Forwarding: each matched order item becomes exactly one purchase order at its supplier.

Public API (stable; ``tasks/orders.py`` and the CLI call these):

* :func:`forward_orders` ``(order_ids, task_id=None, connector_factory=...) -> counts`` — one
  batch, with a fixed number of round trips whatever its size:

  1. session-level advisory locks on all the batch's order keys, tried in one statement (a
     second worker handed the same item at the same instant sees it held and skips it: ``busy``);
  2. **claim**, one committed transaction for the batch: the order rows ``FOR UPDATE`` in id
     order, ``INSERT INTO purchase_orders ... SELECT FROM unnest(...) ON CONFLICT (order_key) DO
     NOTHING`` (the unique key makes a second purchase row impossible whatever the task layer
     does), then each key's row: ``placed`` -> nothing to do (the order repaired to
     ``forwarded`` if that update was lost), ``failed``/``awaiting_placement``/cancelled -> not
     ours to touch, ``pending``/``placing`` -> continue (a redelivery after a crash: the outcome
     of the earlier call is unknown);
  3. in the same transaction, **committed before the supplier call**: purchases ``placing``
     (attempts + 1, task id) and orders ``forwarding``, one event each;
  4. suppliers without an ordering API (setting ``orders.sheet_suppliers``): purchase and order
     ``awaiting_placement`` with ``sheet_id`` NULL — **that pair means "to be put on a
     purchase-order sheet"**; the sheet flow picks such rows up, fills ``sheet_id``, and moves
     them to ``forwarded``/``placed`` when the supplier's lookup by key shows them placed;
  5. optional price/stock check against the supplier's live product (setting
     ``orders.price_check``, tolerance ``orders.price_tolerance_pct`` over ``orders.unit_cost``);
  6. the connector's ``place_orders`` (OwnerClan: one aliased look-up of every key, then one
     ``createOrder`` per key not found) or ``place_order`` per item, the order key in the
     supplier's own-order field (OwnerClan ``note``): a retry after an unknown outcome finds the
     first purchase;
  7. the successes in one transaction -> purchases ``placed`` (supplier ids, placed_at), orders
     ``forwarded`` (one the sweep moved to ``cancel_requested`` meanwhile keeps that status); a
     refusal (``PermanentError``: sold out, option gone, price beyond tolerance, ...) ->
     purchase and order ``failed`` with the supplier's reason; for a stock reason the product's
     listings are asked to be suspended (:func:`request_listing_suspension`); a transient error
     leaves ``placing`` with ``last_error`` and is raised after the batch (the task retries).

* :func:`give_up_forwarding` — a spent retry budget: items still ``forwarding`` become ``failed``
  with the reason (the outcome at the supplier is unknown; a retry looks the key up first).
* :func:`retry_order` ``(order_id) -> {"order_id", "status", "forward"}`` — one-call retry of a
  ``failed`` item (purchase back to ``pending``, order ``new``, ``unit_cost`` from the product's
  current cost) or re-matching of an ``unmatched`` one; the caller publishes ``forward_order``
  when ``forward`` is true.
* :func:`request_listing_suspension` ``(session, product_id, reason) -> listing ids`` — the one
  place the order flow asks for a product's listings to stop selling.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from dropship import db
from dropship.errors import (
    DropshipError,
    OrderingNotSupportedError,
    PermanentError,
    TransientError,
)
from dropship.orders.common import FORWARD_LOCK_PREFIX
from dropship.orders.matching import ListingIndex
from dropship.orders.services import FORWARDABLE_RAW_STATUSES, record_event
from dropship.platforms.interfaces import (
    BuyerInfo,
    MarketOrderItem,
    PurchaseOrderLine,
    PurchaseOrderRequest,
    PurchaseOrderResult,
    SupplierConnector,
)
from dropship.settings import get_settings

log = logging.getLogger("dropship.orders")

SupplierConnectorFactory = Callable[[str], SupplierConnector]
ERROR_MAX = 2000
# Words in a supplier's refusal that mean "no stock" (English and Korean as the APIs answer).
_STOCK_WORDS = ("sold out", "soldout", "not on sale", "stock", "품절", "재고", "unavailable")
_GONE_WORDS = ("discontinued", "unknown itemkey", "no longer offered", "판매중지", "단종")


def default_supplier_connector(supplier: str) -> SupplierConnector:
    """The connector of ``supplier``'s first configured account."""
    from dropship.catalog.services import default_account
    from dropship.platforms.registry import connector_for

    connector: SupplierConnector = connector_for(default_account(supplier))
    return connector


def refusal_kind(reason: str) -> str:
    """``stock``, ``gone``, ``option``, ``price`` or ``other``, from a refusal's words."""
    lowered = reason.casefold()
    if any(w in lowered for w in _GONE_WORDS):
        return "gone"
    if "option" in lowered or "옵션" in lowered:
        return "option"
    if any(w in lowered for w in _STOCK_WORDS):
        return "stock"
    if "price" in lowered or "가격" in lowered:
        return "price"
    return "other"


def request_listing_suspension(session: Session, product_id: int, reason: str) -> list[int]:
    """Ask for every listing of ``product_id`` to stop selling, because its supplier refused a
    purchase for lack of stock. Returns the ids of the product's listings that are selling.

    The product is marked ``soldout`` with stock 0 and a ``suspend`` row is written to the
    listing sync's outbox (``sync_outbox``) in the caller's transaction, exactly as a collect
    merge that sees a sell-out does: after the commit the forward task publishes it
    (``tasks.listings.publish_sync_outbox``; the sync sweep publishes it if that publish is lost),
    and :mod:`dropship.listings.sync` suspends the listings on every market, ahead of other
    listing work, confirmed by read-back. The next collect of the supplier sets the product back
    when the supplier has stock again (and sync resumes listings suspended for stock)."""
    session.execute(
        text(
            # The stored hash and source fingerprint are cleared: they describe the supplier's
            # record, which did not change, and the next collect must not skip it as
            # unchanged (it sets the product back when the supplier has stock again).
            "UPDATE products SET status = 'soldout', stock = 0, content_hash = NULL, "
            "source_fingerprint = NULL, updated_at = now() "
            "WHERE id = :p AND status = 'active'"
        ),
        {"p": product_id},
    )
    session.execute(
        text("INSERT INTO sync_outbox (product_id, kind) VALUES (:p, 'suspend')"),
        {"p": product_id},
    )
    listing_ids = [
        int(i)
        for i in session.execute(
            text("SELECT id FROM listings WHERE product_id = :p AND status = 'active' ORDER BY id"),
            {"p": product_id},
        ).scalars()
    ]
    log.warning(
        "product %s: supplier refused for stock; suspension requested for listings %s (%s)",
        product_id,
        listing_ids,
        reason[:200],
    )
    return listing_ids


# --------------------------------------------------------------------------- locking


def _lock_all(conn: Connection, keys: Sequence[str]) -> set[str]:
    """Try the session-level advisory lock of every key in one statement; the keys got."""
    got = conn.execute(
        text(
            "SELECT k FROM unnest(CAST(:keys AS text[])) AS k "
            "WHERE pg_try_advisory_lock(hashtextextended(CAST(:prefix AS text) || k, 0))"
        ),
        {"keys": list(keys), "prefix": FORWARD_LOCK_PREFIX},
    ).scalars()
    held = {str(k) for k in got}
    conn.commit()
    return held


def _unlock_all(conn: Connection, keys: Sequence[str]) -> None:
    if conn.in_transaction():
        conn.rollback()
    if keys:
        conn.execute(
            text(
                "SELECT pg_advisory_unlock(hashtextextended(CAST(:prefix AS text) || k, 0)) "
                "FROM unnest(CAST(:keys AS text[])) AS k"
            ),
            {"keys": list(keys), "prefix": FORWARD_LOCK_PREFIX},
        )
    conn.commit()


_COLUMNS = (
    "id, ordered_at, order_key, status, status_reason, market, raw_status, market_claim, supplier, "
    "supplier_sku, supplier_option_code, quantity, unit_cost, product_id, pii_erased_at, "
    "receiver_name, receiver_phone, receiver_address, receiver_zipcode, receiver_message"
)
_ORDER = text(f"SELECT {_COLUMNS} FROM orders WHERE id = :id FOR UPDATE")
# A batch's rows, locked in id order (every writer of several order rows locks that way, so two
# of them never wait on each other in a cycle): the order sweep cannot overwrite a status this
# transaction is changing, nor this one a status the sweep just set.
_ORDERS = text(f"SELECT {_COLUMNS} FROM orders WHERE id = ANY(:ids) ORDER BY id FOR UPDATE")


NOW = object()  # a field value meaning the transaction's now()


def _assignments(fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``, a = :a, ...`` for an UPDATE; jsonb columns cast, ``NOW`` as ``now()``."""
    parts, params = [], {}
    for name, value in fields.items():
        if value is NOW:
            parts.append(f", {name} = now()")
        elif name == "supplier_order_ids":
            parts.append(f", {name} = CAST(:{name} AS jsonb)")
            params[name] = value
        else:
            parts.append(f", {name} = :{name}")
            params[name] = value
    return "".join(parts), params


def _set_order(
    session: Session,
    row: Any,
    status: str,
    reason: str | None,
    kind: str,
    task_id: str | None,
    detail: dict[str, Any] | None = None,
    **fields: Any,
) -> None:
    extra, params = _assignments(fields)
    session.execute(
        text(
            f"UPDATE orders SET status = :status, status_reason = :reason, updated_at = now()"
            f"{extra} WHERE id = :id AND ordered_at = :t"
        ),
        {"status": status, "reason": reason, "id": row.id, "t": row.ordered_at, **params},
    )
    record_event(session, row.id, row.ordered_at, kind, row.status, status, detail, task_id)


def _set_purchase(session: Session, key: str, status: str, **fields: Any) -> None:
    extra, params = _assignments(fields)
    session.execute(
        text(
            f"UPDATE purchase_orders SET status = :status, updated_at = now(){extra} "
            "WHERE order_key = :k"
        ),
        {"status": status, "k": key, **params},
    )


@dataclass
class _Transitions:
    """Order status changes and their events, written with one statement each (executemany)
    instead of two round trips per item."""

    orders: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def add(
        self,
        row: Any,
        status: str,
        reason: str | None,
        kind: str,
        task_id: str | None,
        detail: dict[str, Any] | None = None,
        supplier_order_ids: str | None = None,
        forwarded: bool = False,
    ) -> None:
        self.orders.append(
            {
                "id": row.id,
                "t": row.ordered_at,
                "status": status,
                "reason": reason,
                "ids": supplier_order_ids,
                "fwd": forwarded,
            }
        )
        self.events.append(
            {
                "o": row.id,
                "t": row.ordered_at,
                "k": kind,
                "f": row.status,
                "s": status,
                "d": json.dumps(detail or {}, ensure_ascii=False),
                "task": task_id,
            }
        )

    def write(self, session: Session) -> None:
        if self.orders:
            session.execute(
                text(
                    "UPDATE orders SET status = :status, status_reason = :reason, "
                    "updated_at = now(), "
                    "supplier_order_ids = COALESCE(CAST(:ids AS jsonb), supplier_order_ids), "
                    "forwarded_at = CASE WHEN :fwd THEN now() ELSE forwarded_at END "
                    "WHERE id = :id AND ordered_at = :t"
                ),
                self.orders,
            )
        if self.events:
            session.execute(_EVENT, self.events)


_EVENT = text(
    "INSERT INTO order_events (order_id, ordered_at, kind, from_status, to_status, detail, "
    "task_id) VALUES (:o, :t, :k, :f, :s, CAST(:d AS jsonb), :task)"
)


# --------------------------------------------------------------------------- forwarding


def forward_orders(
    order_ids: Sequence[int],
    task_id: str | None = None,
    connector_factory: SupplierConnectorFactory = default_supplier_connector,
) -> dict[str, int]:
    """Forward each item of the batch once (see the module docstring). Returns counts by
    outcome; raises the first transient error after trying the whole batch."""
    counts = {
        "placed": 0,
        "already_placed": 0,
        "awaiting_placement": 0,
        "failed": 0,
        "busy": 0,
        "skipped": 0,
    }
    ids = list(dict.fromkeys(int(i) for i in order_ids))
    if not ids:
        return counts
    with db.session_scope() as session:
        key_of = {
            int(i): str(k)
            for i, k in session.execute(
                text("SELECT id, order_key FROM orders WHERE id = ANY(:ids)"), {"ids": ids}
            ).all()
        }
    counts["skipped"] += len(ids) - len(key_of)
    transient: TransientError | None = None
    with db.get_engine().connect() as lock_conn:
        held = _lock_all(lock_conn, list(dict.fromkeys(key_of.values())))
        try:
            mine = [i for i in ids if i in key_of and key_of[i] in held]
            counts["busy"] += len(key_of) - len(mine)  # another worker has these right now
            if mine:
                transient = _forward_locked(
                    mine, task_id, connector_factory, counts, lambda: _still_locked(lock_conn)
                )
        finally:
            _unlock_all(lock_conn, sorted(held))
    if transient is not None:
        raise transient
    return counts


def _forwardable(row: Any) -> bool:
    return (
        row.supplier is not None
        and row.market_claim is None
        and row.raw_status in FORWARDABLE_RAW_STATUSES.get(row.market, ())
    )


def _claim(order_ids: list[int], task_id: str | None, counts: dict[str, int]) -> list[Any]:
    """Steps 2-4 for the whole batch in one committed transaction: claim a purchase row per
    key, repair items whose purchase is placed, hand sheet suppliers' items to the sheet flow,
    and mark the rest ``placing``/``forwarding``. Returns the rows to place now."""
    cfg = get_settings().orders
    moves = _Transitions()
    with db.session_scope() as session:
        # Read again under the locks: another worker may have finished some meanwhile.
        rows = session.execute(_ORDERS, {"ids": order_ids}).all()
        todo = [r for r in rows if r.status in ("new", "forwarding") and _forwardable(r)]
        counts["skipped"] += len(order_ids) - len(todo)
        if not todo:
            return []
        session.execute(
            text(
                "INSERT INTO purchase_orders (order_key, supplier, status, order_id, ordered_at, "
                "task_id) SELECT * FROM unnest(CAST(:k AS text[]), CAST(:s AS text[]), "
                "CAST(:st AS text[]), CAST(:o AS bigint[]), CAST(:t AS timestamptz[]), "
                "CAST(:task AS text[])) ON CONFLICT (order_key) DO NOTHING"
            ),
            {
                "k": [r.order_key for r in todo],
                "s": [r.supplier for r in todo],
                "st": ["pending"] * len(todo),
                "o": [r.id for r in todo],
                "t": [r.ordered_at for r in todo],
                "task": [task_id] * len(todo),
            },
        )
        purchases = {
            str(p.order_key): p
            for p in session.execute(
                text(
                    "SELECT order_key, status, supplier_order_ids FROM purchase_orders "
                    "WHERE order_key = ANY(:k) ORDER BY order_key FOR UPDATE"
                ),
                {"k": [r.order_key for r in todo]},
            ).all()
        }
        place: list[Any] = []
        sheet_keys: list[str] = []
        for row in todo:
            purchase = purchases[row.order_key]
            if purchase.status == "placed":
                if row.status != "forwarded":  # placed, but the order update was lost: repair
                    moves.add(
                        row,
                        "forwarded",
                        None,
                        "forwarded",
                        task_id,
                        {"repaired": True},
                        supplier_order_ids=_json(purchase.supplier_order_ids),
                    )
                counts["already_placed"] += 1
            elif purchase.status not in ("pending", "placing"):
                counts["skipped"] += 1  # failed / on a sheet / cancelled: another flow owns it
            elif row.supplier in cfg.sheet_suppliers:
                sheet_keys.append(row.order_key)
                moves.add(
                    row,
                    "awaiting_placement",
                    "to be placed on a purchase-order sheet (supplier has no ordering API)",
                    "awaiting_placement",
                    task_id,
                )
                counts["awaiting_placement"] += 1
            else:
                place.append(row)
                if row.status != "forwarding":
                    moves.add(row, "forwarding", None, "forwarding", task_id)
        if sheet_keys:
            session.execute(
                text(
                    "UPDATE purchase_orders SET status = 'awaiting_placement', task_id = :task, "
                    "updated_at = now() WHERE order_key = ANY(:k)"
                ),
                {"k": sheet_keys, "task": task_id},
            )
        if place:
            session.execute(
                text(
                    "UPDATE purchase_orders SET status = 'placing', attempts = attempts + 1, "
                    "task_id = :task, updated_at = now() WHERE order_key = ANY(:k)"
                ),
                {"k": [r.order_key for r in place], "task": task_id},
            )
        moves.write(session)
    # Committed: from here on the outcome may be unknown, and the rows say so.
    return place


def _still_locked(conn: Connection) -> None:
    """Raise when the connection holding the forward locks is gone (PostgreSQL restarted): the
    locks went with it, so the sweep may hand the items to another worker
    (:func:`dropship.orders.services.abandoned_purchases`). The batch is retried under fresh
    locks instead of calling the supplier unguarded."""
    conn.execute(text("SELECT 1"))
    conn.commit()


def _forward_locked(
    order_ids: list[int],
    task_id: str | None,
    connector_factory: SupplierConnectorFactory,
    counts: dict[str, int],
    check_lock: Callable[[], None] = lambda: None,
) -> TransientError | None:
    cfg = get_settings().orders
    transient: TransientError | None = None
    by_supplier: dict[str, list[Any]] = {}
    for row in _claim(order_ids, task_id, counts):
        if row.pii_erased_at is not None or not row.receiver_name:
            counts[
                _refuse(
                    row,
                    "the receiver's data has been erased: the order cannot be shipped",
                    task_id,
                    "other",
                )
            ] += 1
            continue
        by_supplier.setdefault(row.supplier, []).append(row)
    for supplier, rows in by_supplier.items():
        connector = connector_factory(supplier)
        asking: list[Any] = []
        for row in rows:
            try:
                if cfg.price_check and row.unit_cost:
                    refusal = _check_supplier_product(connector, row, cfg.price_tolerance_pct)
                    if refusal is not None:
                        counts[_refuse(row, refusal[1], task_id, refusal[0])] += 1
                        continue
            except TransientError as exc:
                transient = transient or exc
                _note_errors([(row, exc)])
                continue
            except PermanentError as exc:
                counts[_refuse(row, str(exc), task_id)] += 1
                continue
            asking.append(row)
        if not asking:
            continue
        check_lock()
        try:
            answers = _place_all(connector, [_request(r) for r in asking])
        except TransientError as exc:  # the batch's look-up failed: nothing was created
            transient = transient or exc
            _note_errors([(r, exc) for r in asking])
            continue
        placed: list[tuple[Any, PurchaseOrderResult]] = []
        lost: list[tuple[Any, TransientError]] = []
        for row, answer in zip(asking, answers, strict=True):
            if isinstance(answer, PurchaseOrderResult):
                placed.append((row, answer))
            elif isinstance(answer, OrderingNotSupportedError):
                counts[_to_sheet(row, answer, task_id)] += 1
            elif isinstance(answer, PermanentError):
                counts[_refused_by_supplier(connector, row, answer, task_id)] += 1
            elif isinstance(answer, TransientError):
                lost.append((row, answer))
                transient = transient or answer
            else:  # pragma: no cover - connectors answer results or DropshipErrors only
                raise TypeError(f"unexpected answer {type(answer).__name__}")
        if lost:
            _note_errors(lost)
        if placed:
            _record_placed(placed, task_id, counts)
    return transient


def _place_all(
    connector: SupplierConnector, requests: list[PurchaseOrderRequest]
) -> list[PurchaseOrderResult | DropshipError]:
    """Each request's result or error, in order: the connector's batch call when it has one
    (OwnerClan: one look-up of all the keys, then the creates), else one ``place_order`` each."""
    batch = getattr(connector, "place_orders", None)
    if batch is not None:
        answers: list[PurchaseOrderResult | DropshipError] = batch(requests)
        return answers
    answers = []
    for request in requests:
        try:
            answers.append(connector.place_order(request))
        except (PermanentError, TransientError) as exc:
            answers.append(exc)
    return answers


def _note_errors(rows: list[tuple[Any, TransientError]]) -> None:
    """A transient failure leaves the purchase ``placing`` with its error; the task retries
    and the retry looks the key up before buying."""
    with db.session_scope() as session:
        session.execute(
            text(
                "UPDATE purchase_orders SET last_error = :e, updated_at = now() "
                "WHERE order_key = :k"
            ),
            [
                {"k": row.order_key, "e": f"{type(exc).__name__}: {exc}"[:ERROR_MAX]}
                for row, exc in rows
            ],
        )


def _record_placed(
    placed: list[tuple[Any, PurchaseOrderResult]], task_id: str | None, counts: dict[str, int]
) -> None:
    """Step 7 for every purchase the supplier confirmed, in one transaction: purchases
    ``placed``; orders ``forwarded``, except one the market asked to cancel meanwhile (the
    order sweep may set ``cancel_requested`` at any time): it keeps that status, with the
    supplier's ids, for the cancellation flow to cancel."""
    moves = _Transitions()
    with db.session_scope() as session:
        session.execute(
            text(
                "UPDATE purchase_orders SET status = 'placed', updated_at = now(), "
                "supplier_order_ids = CAST(:ids AS jsonb), placed_at = now(), last_error = NULL "
                "WHERE order_key = :k"
            ),
            [
                {"k": row.order_key, "ids": _json(list(result.supplier_order_ids))}
                for row, result in placed
            ],
        )
        current = {
            int(r.id): r
            for r in session.execute(_ORDERS, {"ids": [row.id for row, _ in placed]}).all()
        }
        for row, result in placed:
            now = current[int(row.id)]
            status = "forwarded" if now.status in ("new", "forwarding") else now.status
            moves.add(
                now,
                status,
                None if status == "forwarded" else now.status_reason,
                "forwarded",
                task_id,
                {
                    "supplier_order_ids": list(result.supplier_order_ids),
                    "already_existed": result.already_existed,
                },
                supplier_order_ids=_json(list(result.supplier_order_ids)),
                forwarded=True,
            )
            counts["already_placed" if result.already_existed else "placed"] += 1
        moves.write(session)


def _to_sheet(row: Any, exc: OrderingNotSupportedError, task_id: str | None) -> str:
    with db.session_scope() as session:
        _set_purchase(session, row.order_key, "awaiting_placement", task_id=task_id)
        current = session.execute(_ORDER, {"id": row.id}).one()
        _set_order(
            session,
            current,
            "awaiting_placement",
            f"to be placed on a purchase-order sheet: {str(exc)[:300]}",
            "awaiting_placement",
            task_id,
        )
    return "awaiting_placement"


def _refused_by_supplier(
    connector: SupplierConnector, row: Any, exc: PermanentError, task_id: str | None
) -> str:
    reason, kind = str(exc), refusal_kind(str(exc))
    if kind == "other":
        # Some refusals carry no reason (OwnerClan's createOrder errors are reduced to their
        # codes, since their text may echo the receiver): the product tells why.
        found = _diagnose(connector, row, get_settings().orders.price_tolerance_pct)
        if found is not None:
            kind, reason = found[0], f"{reason}; the supplier's product now: {found[1]}"
    return _refuse(row, reason, task_id, kind)


def _json(value: Any) -> str:
    return json.dumps(list(value) if value is not None else [])


def _request(row: Any) -> PurchaseOrderRequest:
    return PurchaseOrderRequest(
        order_key=row.order_key,
        lines=(
            PurchaseOrderLine(
                supplier_sku=row.supplier_sku,
                quantity=int(row.quantity),
                option=row.supplier_option_code,
                unit_cost=row.unit_cost,
            ),
        ),
        receiver=BuyerInfo(
            name=row.receiver_name or "",
            phone=row.receiver_phone or "",
            address=row.receiver_address or "",
            zipcode=row.receiver_zipcode or "",
            message=row.receiver_message or "",
        ),
    )


def _check_supplier_product(
    connector: SupplierConnector, row: Any, tolerance_pct: float
) -> tuple[str, str] | None:
    """(kind, reason) when the supplier's live product says the purchase would be refused or
    cost more than the tolerance over ``unit_cost``; None when it may go ahead. Read live:
    the connector's cached copy (product detail, minutes old) is dropped first, because a
    purchase is decided on it."""
    cache = getattr(connector, "cache", None)
    if cache is not None:
        from dropship.platforms._supplier_common import PRODUCT_DETAIL

        cache.invalidate(PRODUCT_DETAIL, row.supplier_sku)
    product = connector.get_product(row.supplier_sku)
    if product is None:
        return "gone", f"supplier no longer offers {row.supplier_sku}"
    if product.status == "gone":
        return "gone", f"{row.supplier_sku} is discontinued at the supplier"
    if product.status == "soldout" or product.stock < int(row.quantity):
        return "stock", f"{row.supplier_sku} is sold out at the supplier"
    cost = product.cost_price
    code = row.supplier_option_code
    if product.options and code:
        chosen = next(
            (
                o
                for o in product.options
                if o.supplier_option_code == code or f"{o.name}:{o.value}" == code
            ),
            None,
        )
        if chosen is None:
            return "option", f"option {code} of {row.supplier_sku} is gone at the supplier"
        if chosen.stock < int(row.quantity):
            return "stock", f"option {code} of {row.supplier_sku} is sold out at the supplier"
        cost += chosen.price_delta
    limit = int(row.unit_cost) * (1 + tolerance_pct / 100)
    if cost > limit:
        return "price", (
            f"supplier price of {row.supplier_sku} rose to {cost} KRW from {row.unit_cost} KRW "
            f"(more than {tolerance_pct:g}% tolerance)"
        )
    return None


def _diagnose(
    connector: SupplierConnector, row: Any, tolerance_pct: float
) -> tuple[str, str] | None:
    try:
        return _check_supplier_product(connector, row, tolerance_pct)
    except Exception as exc:  # the refusal stands on its own; the diagnosis is a courtesy
        log.info("order %s: could not read the product after a refusal: %s", row.order_key, exc)
        return None


def _refuse(row: Any, reason: str, task_id: str | None, kind: str | None = None) -> str:
    kind = kind or refusal_kind(reason)
    reason = reason[:ERROR_MAX]
    with db.session_scope() as session:
        _set_purchase(session, row.order_key, "failed", last_error=reason)
        current = session.execute(_ORDER, {"id": row.id}).one()
        _set_order(
            session,
            current,
            "failed",
            f"supplier refused ({kind}): {reason}",
            "forward_failed",
            task_id,
            {"kind": kind, "reason": reason[:500]},
        )
        if kind in ("stock", "gone") and row.product_id is not None:
            listings = request_listing_suspension(session, int(row.product_id), reason)
            record_event(
                session,
                row.id,
                row.ordered_at,
                "suspension_requested",
                "failed",
                "failed",
                {"product_id": int(row.product_id), "listing_ids": listings},
                task_id,
            )
    log.warning("order %s: forwarding refused (%s): %s", row.order_key, kind, reason[:300])
    return "failed"


def give_up_forwarding(order_ids: Sequence[int], error: str, task_id: str | None = None) -> int:
    """Items of a batch whose retries are spent and are still ``forwarding``: ``failed`` with the
    reason, visible in ``dropship orders failed``. Returns how many were marked."""
    marked = 0
    reason = (
        f"gave up after retries ({error[:500]}); the supplier may or may not have the purchase: "
        "`dropship orders retry ID` looks the order key up before buying"
    )
    with db.session_scope() as session:
        for row in session.execute(_ORDERS, {"ids": sorted({int(i) for i in order_ids})}).all():
            if row.status != "forwarding":
                continue
            _set_purchase(session, row.order_key, "failed", last_error=reason[:ERROR_MAX])
            _set_order(session, row, "failed", reason, "forward_gave_up", task_id)
            marked += 1
    return marked


def batches_of(task_ids: Sequence[str], task_meta: Callable[[str], dict[str, Any]]) -> list[int]:
    """The order ids of the ``forward_order`` batches ``task_ids`` were running when their
    worker died, from the result backend (``result_extended`` keeps a task's arguments, ids
    only, from the moment it starts). The other items of such a batch are still ``new`` with
    nothing to say their message is gone (it waits unacked at the broker until the visibility
    timeout); published again they are forwarded now, and items done meanwhile are skipped.
    A task the backend has forgotten (expired, Redis restarted without its data) or that
    finished adds nothing: its claimed item is re-published on its own."""
    ids: list[int] = []
    for task_id in task_ids:
        try:
            meta = task_meta(task_id)
        except Exception as exc:  # the backend is a help here, not a requirement
            log.info("forward task %s: no result backend record (%s)", task_id, type(exc).__name__)
            continue
        if meta.get("status") not in ("STARTED", "RETRY") or not meta.get("args"):
            continue
        if meta.get("name") not in (None, "tasks.orders.forward_order"):
            continue
        batch = meta["args"][0]
        if isinstance(batch, list):
            ids.extend(int(i) for i in batch if isinstance(i, int))
    return list(dict.fromkeys(ids))


# --------------------------------------------------------------------------- retry


def retry_order(order_id: int, task_id: str | None = None) -> dict[str, Any]:
    """One-call retry. ``failed``: the purchase goes back to ``pending`` and the order to
    ``new`` (forwarding looks the key up at the supplier first, so a purchase that did go
    through is found, not repeated). ``unmatched``: matched again against today's listings.
    Returns ``{"order_id", "status", "forward"}``; publish ``forward_order`` when ``forward``."""
    with db.session_scope() as session:
        row = session.execute(
            text(
                "SELECT id, ordered_at, account_id, order_key, status, external_sku, "
                "option_label, market, raw_status, market_claim FROM orders WHERE id = :id "
                "FOR UPDATE"
            ),
            {"id": order_id},
        ).first()
        if row is None:
            raise PermanentError(f"no order {order_id}")
        if row.status == "failed":
            session.execute(
                text(
                    "UPDATE purchase_orders SET status = 'pending', updated_at = now() "
                    "WHERE order_key = :k AND status = 'failed'"
                ),
                {"k": row.order_key},
            )
            # Priced again at the product's cost now (the catalog follows the supplier): an
            # operator retrying a "price rose" refusal accepts the new cost once collect saw it.
            session.execute(
                text(
                    """
                    UPDATE orders o SET unit_cost = p.price + coalesce((
                        SELECT (opt->>'price_delta')::int FROM jsonb_array_elements(p.options) opt
                        WHERE opt->>'supplier_option_code' = o.supplier_option_code
                           OR (opt->>'name') || ':' || (opt->>'value') = o.supplier_option_code
                        LIMIT 1), 0)
                    FROM products p
                    WHERE p.id = o.product_id AND o.id = :id AND o.ordered_at = :t
                    """
                ),
                {"id": row.id, "t": row.ordered_at},
            )
            _set_order(session, row, "new", None, "retry", task_id)
            return {"order_id": order_id, "status": "new", "forward": True}
        if row.status == "unmatched":
            item = MarketOrderItem(
                market_item_id="",
                market_product_id=None,
                external_sku=row.external_sku,
                name="",
                quantity=1,
                unit_price=0,
                option=row.option_label,
            )
            match = ListingIndex(session, int(row.account_id), [item]).match(item)
            if not match.matched:
                _set_order(session, row, "unmatched", match.reason, "rematch", task_id)
                return {"order_id": order_id, "status": "unmatched", "forward": False}
            _set_order(
                session,
                row,
                "new",
                None,
                "rematch",
                task_id,
                listing_id=match.listing_id,
                product_id=match.product_id,
                supplier=match.supplier,
                supplier_sku=match.supplier_sku,
                supplier_option_code=match.supplier_option_code,
                unit_cost=match.unit_cost,
            )
            forward = row.market_claim is None and row.raw_status in FORWARDABLE_RAW_STATUSES.get(
                row.market, ()
            )
            return {"order_id": order_id, "status": "new", "forward": forward}
    raise PermanentError(
        f"order {order_id} is {row.status}: only failed or unmatched orders can be retried"
    )
