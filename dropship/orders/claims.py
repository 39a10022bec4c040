"""Cancellations and claims: a buyer's cancellation before shipment cancels our purchase at the
supplier and is then confirmed at the market; a claim after shipment is recorded for an operator.

:func:`sweep_claims` (per market account, queue ``high``):

1. Reads the claims created since the account's claims watermark (with overlap):
   Coupang ``returnRequests`` (``cancelType=CANCEL`` and returns), Naver product orders changed
   with ``CLAIM_REQUESTED``. Each claim is stored on its order item (``market_claim`` =
   ``kind:status``, ``market_claim_id``). A cancellation of an item not yet shipped moves it to
   ``cancel_requested``; anything else (a return, a cancellation after the supplier shipped)
   keeps the item's status and sets ``status_reason``: ``dropship orders claims`` lists them.
   The watermark moves only past claims that were stored: a claim for an order not ingested yet
   holds it back (for up to :data:`UNKNOWN_CLAIM_GRACE` so a claim for an order listed outside
   this system cannot stall the sweep forever).
2. Processes every ``cancel_requested`` item of the account without a reason (so a crash
   between the two steps loses nothing; the next sweep picks them up):

   * the purchase order, if any, is marked ``cancel_requested`` and committed **before** the
     supplier is called (``forward_order`` must not place a purchase in that state), then
     cancelled at the supplier by our order key (OwnerClan looks the key up and cancels what it
     finds). "Too late" (the supplier shipped) leaves the item for an operator with the reason.
   * a purchase on a purchase-order sheet (Zentrade, Domeggook without Private API; no cancel
     API): when the supplier's lookup by key finds nothing the purchase is cancelled (the event
     tells the operator not to upload that row); otherwise the item waits for an operator
     (cancel on the supplier's site) with that reason.
   * once nothing is bought any more, the cancellation is confirmed at the market (Coupang
     ``stoppedShipment``, Naver ``claim/cancel/approve``) and the item becomes ``cancelled``.

Every change writes an ``order_events`` row with the task id. Two sweeps of one account never
run at once (advisory lock).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from dropship import db
from dropship.errors import OrderingNotSupportedError, PermanentError, TransientError
from dropship.orders.common import (
    BEFORE_SHIPMENT,
    FORWARD_LOCK_PREFIX,
    ConnectorFactory,
    default_factory,
    record_events,
    short,
    supplier_account,
    sweep_lock,
)
from dropship.platforms.interfaces import MarketClaim

log = logging.getLogger("dropship.orders.claims")

OVERLAP = timedelta(minutes=10)
FIRST_LOOKBACK = timedelta(days=1)
UNKNOWN_CLAIM_GRACE = timedelta(hours=1)
CANCEL_BATCH = 200


def _account(name: str) -> tuple[int, str] | None:
    with db.session_scope() as session:
        row = session.execute(
            text("SELECT id, platform FROM accounts WHERE name = :n"), {"n": name}
        ).first()
    return (int(row[0]), str(row[1])) if row else None


def sweep_claims(
    account: str,
    task_id: str | None = None,
    factory: ConnectorFactory | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    make = factory or default_factory
    found = _account(account)
    if found is None:
        return {"account": account, "skipped": "no orders for this account yet"}
    account_id, _ = found
    with sweep_lock(f"claims:{account_id}") as got:
        if not got:
            return {"account": account, "skipped": "another claims sweep is running"}
        until = now or datetime.now(UTC)
        result = _read_claims(account_id, make(account), until, task_id)
        result |= process_cancellations(account_id, account, task_id, make)
    return {"account": account, **result}


def _read_claims(
    account_id: int, connector: Any, until: datetime, task_id: str | None
) -> dict[str, Any]:
    with db.session_scope() as session:
        watermark = session.execute(
            text("SELECT watermark FROM claim_sweeps WHERE account_id = :a"), {"a": account_id}
        ).scalar()
    since = (watermark - OVERLAP) if watermark else until - FIRST_LOOKBACK
    try:
        claims = list(connector.iter_claims(since, until))
    except (TransientError, PermanentError) as exc:
        with db.session_scope() as session:
            _save_sweep(session, account_id, watermark, short(exc), success=False)
        raise
    stored = unknown = 0
    hold: datetime | None = None
    with db.session_scope() as session:
        for claim in claims:
            outcome = _store_claim(session, account_id, claim, task_id)
            if outcome is None:
                unknown += 1
                if claim.requested_at > until - UNKNOWN_CLAIM_GRACE:
                    hold = min(hold or claim.requested_at, claim.requested_at)
            elif outcome:
                stored += 1
        new_mark = hold if hold is not None else until
        if watermark is not None:
            new_mark = max(new_mark, watermark)
        _save_sweep(session, account_id, new_mark, None, success=True)
    return {"claims_read": len(claims), "claims_stored": stored, "claims_unknown": unknown}


def _save_sweep(
    session: Any, account_id: int, watermark: datetime | None, error: str | None, success: bool
) -> None:
    session.execute(
        text(
            "INSERT INTO claim_sweeps (account_id, watermark, last_success_at, last_error) "
            "VALUES (:a, :w, CASE WHEN :ok THEN now() END, :e) "
            "ON CONFLICT (account_id) DO UPDATE SET watermark = EXCLUDED.watermark, "
            "last_error = EXCLUDED.last_error, last_success_at = "
            "COALESCE(EXCLUDED.last_success_at, claim_sweeps.last_success_at)"
        ),
        {"a": account_id, "w": watermark, "ok": success, "e": error},
    )


def _store_claim(
    session: Any, account_id: int, claim: MarketClaim, task_id: str | None
) -> bool | None:
    """Store one claim on its order item(s): None when the item is unknown, False when the
    same claim was stored before, True when something changed."""
    rows = session.execute(
        text(
            "SELECT id, ordered_at, status, market_claim, market_claim_id FROM orders "
            "WHERE account_id = :a AND market_order_id = :m "
            "AND (market_item_id = :i OR market_item_id = '' OR market_item_id = market_order_id) "
            "FOR UPDATE"
        ),
        {"a": account_id, "m": claim.market_order_id, "i": claim.market_item_id},
    ).all()
    if not rows:
        return None
    label = f"{claim.kind}:{claim.status}"[:32]
    changed = False
    for row in rows:
        if row.market_claim == label and row.market_claim_id == claim.claim_id:
            continue
        changed = True
        ref = [(row.id, row.ordered_at)]
        detail = {"claim": label, "claim_id": claim.claim_id}
        if row.status in ("cancelled", "cancel_requested"):
            new_status, reason = row.status, None
        elif claim.kind == "cancel" and claim.open and row.status in BEFORE_SHIPMENT:
            new_status, reason = "cancel_requested", None
        elif claim.open:
            new_status = row.status
            reason = (
                f"{claim.kind} requested at the market after shipment ({claim.status}): "
                "handle it at the market (return/collect) and with the supplier"
                if row.status in ("shipped", "dispatched")
                else f"{claim.kind} requested at the market ({claim.status}): handle it there"
            )
        else:
            new_status, reason = row.status, None  # a closed claim: recorded only
        session.execute(
            text(
                "UPDATE orders SET market_claim = :c, market_claim_id = :cid, status = :s, "
                "status_reason = COALESCE(:r, status_reason), updated_at = now() "
                "WHERE id = :id AND ordered_at = :at"
            ),
            {
                "c": label,
                "cid": claim.claim_id,
                "s": new_status,
                "r": reason,
                "id": row.id,
                "at": row.ordered_at,
            },
        )
        kind = (
            "cancel_requested"
            if new_status == "cancel_requested" != row.status
            else "claim_recorded"
        )
        if reason:
            detail["reason"] = reason
        record_events(session, ref, kind, row.status, new_status, task_id, detail)
    return changed


def process_cancellations(
    account_id: int, account: str, task_id: str | None, factory: ConnectorFactory | None = None
) -> dict[str, Any]:
    make = factory or default_factory
    with db.session_scope() as session:
        rows = session.execute(
            text(
                "SELECT id, ordered_at FROM orders WHERE account_id = :a AND ("
                "(status = 'cancel_requested' AND (status_reason IS NULL "
                "OR status_reason NOT LIKE :op)) "
                # A forward that finished after the claim may have moved the item on again:
                # its open cancellation still applies.
                "OR (status IN ('forwarding', 'forwarded', 'awaiting_placement') "
                "AND market_claim = ANY(:claims))) "
                "ORDER BY updated_at LIMIT :n"
            ),
            {
                "a": account_id,
                "n": CANCEL_BATCH,
                "op": OPERATOR + "%",
                "claims": list(OPEN_CANCEL_CLAIMS),
            },
        ).all()
    counts = {"cancelled": 0, "cancel_waiting": 0, "cancel_errors": 0}
    market = make(account) if rows else None
    for order_id, ordered_at in rows:
        try:
            outcome = cancel_one(order_id, ordered_at, market, task_id, make)
        except TransientError as exc:
            log.info("cancellation of order %s postponed: %s", order_id, short(exc, 200))
            counts["cancel_errors"] += 1
            continue
        counts["cancelled" if outcome == "cancelled" else "cancel_waiting"] += 1
    return counts


OPERATOR = "operator: "
# Claim labels (ours "kind:status", the order sweep's raw claim status) that ask us not to ship.
OPEN_CANCEL_CLAIMS = (
    "cancel:RELEASE_STOP_UNCHECKED",
    "cancel:CANCEL_REQUEST",
    "CANCEL_REQUEST",
    "CANCELING",
    "CANCEL_HOLD",
)


def _wait_for_operator(
    order_id: int,
    ordered_at: datetime,
    reason: str,
    task_id: str | None,
    po_status: str | None = None,
) -> str:
    with db.session_scope() as session:
        session.execute(
            text(
                "UPDATE orders SET status_reason = :r, updated_at = now() "
                "WHERE id = :id AND ordered_at = :at AND status = 'cancel_requested'"
            ),
            {"r": OPERATOR + reason, "id": order_id, "at": ordered_at},
        )
        if po_status:
            session.execute(
                text(
                    "UPDATE purchase_orders SET status = :s, updated_at = now() "
                    "WHERE order_id = :id AND ordered_at = :at AND status = 'cancel_requested'"
                ),
                {"s": po_status, "id": order_id, "at": ordered_at},
            )
        record_events(
            session,
            [(order_id, ordered_at)],
            "cancel_needs_operator",
            "cancel_requested",
            "cancel_requested",
            task_id,
            {"reason": reason},
        )
    return "waiting"


def cancel_one(
    order_id: int,
    ordered_at: datetime,
    market: Any,
    task_id: str | None,
    factory: ConnectorFactory,
) -> str:
    """Cancel one item the market asked to cancel: the purchase first, then at the market.
    Returns ``cancelled``, ``waiting`` (an operator must act, the reason is stored; or the
    market's claim id is not known yet) or ``busy`` (forwarding or another worker holds it).

    Holds the forwarding flow's advisory lock on the order key throughout, so a purchase being
    placed right now finishes first and is then cancelled, never placed after the cancel."""
    with db.session_scope() as session:
        key = session.execute(
            text("SELECT order_key FROM orders WHERE id = :id AND ordered_at = :at"),
            {"id": order_id, "at": ordered_at},
        ).scalar()
    if key is None:
        return "busy"
    lock = f"{FORWARD_LOCK_PREFIX}{key}"  # the forward flow's lock: one holder per key
    with db.get_engine().connect() as conn:
        got = conn.execute(
            text("SELECT pg_try_advisory_lock(hashtextextended(:k, 0))"), {"k": lock}
        ).scalar_one()
        conn.commit()
        if not got:
            return "busy"
        try:
            return _cancel_locked(order_id, ordered_at, market, task_id, factory)
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(hashtextextended(:k, 0))"), {"k": lock})
            conn.commit()


def _cancel_locked(
    order_id: int,
    ordered_at: datetime,
    market: Any,
    task_id: str | None,
    factory: ConnectorFactory,
) -> str:
    with db.session_scope() as session:
        order = session.execute(
            text(
                "SELECT id, order_key, market, market_order_id, market_item_id, market_claim_id, "
                "quantity, status FROM orders WHERE id = :id AND ordered_at = :at "
                "FOR UPDATE SKIP LOCKED"
            ),
            {"id": order_id, "at": ordered_at},
        ).first()
        if order is None or order.status not in (
            "cancel_requested",
            "forwarding",
            "forwarded",
            "awaiting_placement",
        ):
            return "busy"
        if order.status != "cancel_requested":
            session.execute(
                text(
                    "UPDATE orders SET status = 'cancel_requested', status_reason = NULL, "
                    "updated_at = now() WHERE id = :id AND ordered_at = :at"
                ),
                {"id": order_id, "at": ordered_at},
            )
            record_events(
                session,
                [(order_id, ordered_at)],
                "cancel_requested",
                order.status,
                "cancel_requested",
                task_id,
                {"after": "forwarding finished"},
            )
        po = session.execute(
            text(
                "SELECT id, supplier, status, sheet_id FROM purchase_orders "
                "WHERE order_key = :k FOR UPDATE"
            ),
            {"k": order.order_key},
        ).first()
        before = po.status if po else None
        if po is not None and po.status in ("pending", "placing", "placed", "awaiting_placement"):
            # Committed before the supplier call: forward_order does not place in this state.
            session.execute(
                text(
                    "UPDATE purchase_orders SET status = 'cancel_requested', updated_at = now() "
                    "WHERE id = :id"
                ),
                {"id": po.id},
            )
    ref = [(order_id, ordered_at)]
    if po is not None and po.status not in ("failed", "cancelled"):
        supplier = factory(supplier_account(po.supplier))
        no_cancel_api = (
            f"the purchase may be placed at {po.supplier}, which has no cancel API: cancel it "
            "on the supplier's site, then confirm the cancellation at the market"
        )
        try:
            if before == "awaiting_placement":
                raise OrderingNotSupportedError("purchase-order sheet")
            cancelled = supplier.cancel_order(order.order_key, "cancelled by the buyer")
        except OrderingNotSupportedError:
            sheet_cancelled = _sheet_cancel(supplier, order.order_key, po.sheet_id, ref, task_id)
            if sheet_cancelled is None:
                return _wait_for_operator(order_id, ordered_at, no_cancel_api, task_id)
            cancelled = sheet_cancelled
        except PermanentError as exc:
            return _wait_for_operator(
                order_id,
                ordered_at,
                f"{po.supplier} refused to cancel the purchase: {short(exc, 300)}",
                task_id,
                po_status=before,
            )
        if not cancelled:
            return _wait_for_operator(
                order_id,
                ordered_at,
                f"{po.supplier} shipped before the cancellation: refuse the cancellation at the "
                "market (it ships) or arrange a return",
                task_id,
                po_status="placed",
            )
        with db.session_scope() as session:
            session.execute(
                text(
                    "UPDATE purchase_orders SET status = 'cancelled', cancelled_at = now(), "
                    "updated_at = now() WHERE id = :id"
                ),
                {"id": po.id},
            )
            record_events(
                session,
                ref,
                "purchase_cancelled",
                "cancel_requested",
                "cancel_requested",
                task_id,
                {"supplier": po.supplier},
            )
    if order.market == "coupang" and not order.market_claim_id:
        return "waiting"  # the receipt id comes with the next claims read; confirm then
    claim = MarketClaim(
        market=getattr(market, "market", ""),
        kind="cancel",
        claim_id=order.market_claim_id or order.market_order_id,
        market_order_id=order.market_order_id,
        market_item_id=order.market_item_id or order.market_order_id,
        status="",
        requested_at=datetime.now(UTC),
        quantity=int(order.quantity or 1),
    )
    try:
        market.confirm_cancel(claim)
    except PermanentError as exc:
        return _wait_for_operator(
            order_id,
            ordered_at,
            f"the purchase is cancelled but the market refused to confirm: {short(exc, 300)}",
            task_id,
        )
    with db.session_scope() as session:
        session.execute(
            text(
                "UPDATE orders SET status = 'cancelled', closed_at = now(), updated_at = now() "
                "WHERE id = :id AND ordered_at = :at AND status = 'cancel_requested'"
            ),
            {"id": order_id, "at": ordered_at},
        )
        record_events(
            session,
            ref,
            "cancelled",
            "cancel_requested",
            "cancelled",
            task_id,
            {"claim_id": claim.claim_id},
        )
    return "cancelled"


def _sheet_cancel(
    supplier: Any,
    order_key: str,
    sheet_id: int | None,
    ref: list[tuple[int, datetime]],
    task_id: str | None,
) -> bool | None:
    """A purchase on a sheet: True (cancelled here) when the supplier has no order for the key,
    None when it has one or cannot tell (an operator cancels it there)."""
    lookup = getattr(supplier, "lookup_orders", None)
    if lookup is None:
        return None  # Domeggook without Private API: no way to tell whether it was uploaded
    if lookup(pordno=order_key):
        return None
    with db.session_scope() as session:
        record_events(
            session,
            ref,
            "sheet_row_withdrawn",
            "cancel_requested",
            "cancel_requested",
            task_id,
            {"sheet_id": sheet_id, "note": "do not upload this row of the sheet"},
        )
    return True
