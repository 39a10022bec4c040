"""Read-only views of orders for the CLI and operators. They never return personal data: a
receiver is shown only as stored or erased (``dropship orders show`` prints no name, phone or
address; an operator who must see them reads the row in the database)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

# Columns safe to show: order facts, never receiver_* fields.
_FACTS = (
    "o.id, a.name AS account, o.market, o.market_order_id, o.market_item_id, o.order_key, "
    "o.status, o.status_reason, o.raw_status, o.market_claim, o.external_sku, o.option_label, "
    "o.product_id, o.supplier, o.supplier_sku, o.supplier_option_code, o.quantity, "
    "o.sale_price, o.unit_cost, o.ordered_at, o.acknowledged_at, o.forwarded_at, "
    "o.supplier_order_ids, o.carrier, o.tracking_number, o.pii_erased_at, o.updated_at, "
    "(o.receiver_name IS NOT NULL) AS receiver_stored"
)


def list_orders(
    session: Session,
    status: str | None = None,
    account: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Latest order items (newest first), optionally of one status and/or account."""
    rows = session.execute(
        text(
            f"SELECT {_FACTS} FROM orders o JOIN accounts a ON a.id = o.account_id "
            "WHERE (CAST(:s AS text) IS NULL OR o.status = :s) "
            "AND (CAST(:a AS text) IS NULL OR a.name = :a) "
            "ORDER BY o.created_at DESC, o.id DESC LIMIT :limit"
        ),
        {"s": status, "a": account, "limit": limit},
    ).all()
    return [dict(r._mapping) for r in rows]


def status_counts(session: Session) -> list[dict[str, Any]]:
    """Order items per (account, status)."""
    rows = session.execute(
        text(
            "SELECT a.name AS account, o.status, count(*) AS items FROM orders o "
            "JOIN accounts a ON a.id = o.account_id GROUP BY a.name, o.status "
            "ORDER BY a.name, o.status"
        )
    ).all()
    return [dict(r._mapping) for r in rows]


def order_detail(session: Session, order_id: int) -> dict[str, Any] | None:
    """One item's facts, its purchase order and its events (oldest first)."""
    row = session.execute(
        text(
            f"SELECT {_FACTS} FROM orders o JOIN accounts a ON a.id = o.account_id WHERE o.id = :id"
        ),
        {"id": order_id},
    ).first()
    if row is None:
        return None
    detail = dict(row._mapping)
    purchase = session.execute(
        text(
            "SELECT id, status, supplier, supplier_order_ids, attempts, last_error, sheet_id, "
            "task_id, placed_at, updated_at FROM purchase_orders WHERE order_key = :k"
        ),
        {"k": detail["order_key"]},
    ).first()
    detail["purchase_order"] = dict(purchase._mapping) if purchase is not None else None
    detail["events"] = [
        dict(e._mapping)
        for e in session.execute(
            text(
                "SELECT created_at, kind, from_status, to_status, detail, task_id "
                "FROM order_events WHERE order_id = :id AND ordered_at = :t ORDER BY id"
            ),
            {"id": order_id, "t": detail["ordered_at"]},
        ).all()
    ]
    return detail
