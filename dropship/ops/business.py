"""Business figures for ``dropship status``, ``/metrics`` and the alerts, read from the tables
as they are now. Every figure is 0 (or an empty list) on empty tables.

"Suspended but unconfirmed" counts the listing sync's states (``suspending``,
``suspend_failed``): a suspension counts as done only once the market's read-back shows it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

# Orders that still wait for their purchase order at the supplier.
UNFORWARDED_STATUSES = ("new", "forwarding")
# The column (on listings) that records when a market confirmed a suspension we asked for.


def orders_waiting_to_forward(conn: Connection) -> int:
    return int(conn.execute(text("SELECT count(*) FROM orders WHERE status = 'new'")).scalar() or 0)


def oldest_unforwarded_order_age_s(conn: Connection) -> float:
    """Seconds since the oldest order still ``new`` or ``forwarding`` was stored (0: none)."""
    age = conn.execute(
        text(
            "SELECT EXTRACT(EPOCH FROM now() - min(created_at)) FROM orders "
            "WHERE status = ANY(:statuses)"
        ),
        {"statuses": list(UNFORWARDED_STATUSES)},
    ).scalar()
    return max(0.0, float(age or 0))


def orders_older_than(conn: Connection, minutes: int) -> int:
    """Orders not forwarded ``minutes`` after they were stored."""
    return int(
        conn.execute(
            text(
                "SELECT count(*) FROM orders WHERE status = ANY(:statuses) "
                "AND created_at < now() - make_interval(mins => :minutes)"
            ),
            {"statuses": list(UNFORWARDED_STATUSES), "minutes": minutes},
        ).scalar()
        or 0
    )


def orders_by_status(conn: Connection) -> dict[str, int]:
    rows = conn.execute(text("SELECT status, count(*) FROM orders GROUP BY status")).all()
    return {str(status): int(n) for status, n in rows}


def listings_by_status(conn: Connection) -> dict[str, int]:
    rows = conn.execute(text("SELECT status, count(*) FROM listings GROUP BY status")).all()
    return {str(status): int(n) for status, n in rows}


def listings_suspended_unconfirmed(conn: Connection) -> int:
    """Listings whose suspension the market has not confirmed by read-back yet: ``suspending``
    (being sent or re-sent) and ``suspend_failed`` (gave up after the bounded re-sends; waits
    for ``dropship listings retry-suspend``). See :mod:`dropship.listings.sync`."""
    return int(
        conn.execute(
            text("SELECT count(*) FROM listings WHERE status IN ('suspending', 'suspend_failed')")
        ).scalar()
        or 0
    )


def soldout_still_live(conn: Connection, minutes: int) -> int:
    """Listings possibly still buyable on a market (``active``, or a suspension not confirmed
    yet) whose product has been sold out (or gone from the supplier) for more than ``minutes``."""
    return int(
        conn.execute(
            text(
                "SELECT count(*) FROM listings l JOIN products p ON p.id = l.product_id "
                "WHERE l.status IN ('active', 'suspending', 'suspend_failed') "
                "AND p.status IN ('soldout', 'gone') "
                "AND p.updated_at < now() - make_interval(mins => :minutes)"
            ),
            {"minutes": minutes},
        ).scalar()
        or 0
    )


def last_run_rejects(conn: Connection) -> list[dict[str, Any]]:
    """Per supplier, its latest collect run: id, status, records and rejects."""
    rows = conn.execute(
        text(
            "SELECT DISTINCT ON (supplier) id, supplier, status, records, rejected "
            "FROM collect_runs ORDER BY supplier, started_at DESC, id DESC"
        )
    ).all()
    return [
        {
            "run_id": int(r.id),
            "supplier": str(r.supplier),
            "status": str(r.status),
            "records": int(r.records),
            "rejected": int(r.rejected),
        }
        for r in rows
    ]


def figures(conn: Connection, soldout_minutes: int, forward_minutes: int) -> dict[str, Any]:
    by_status = listings_by_status(conn)
    return {
        "orders_by_status": orders_by_status(conn),
        "orders_waiting_to_forward": orders_waiting_to_forward(conn),
        "oldest_unforwarded_order_age_s": round(oldest_unforwarded_order_age_s(conn), 1),
        "orders_not_forwarded_in_time": orders_older_than(conn, forward_minutes),
        "listings_by_status": by_status,
        "listings_suspended_unconfirmed": listings_suspended_unconfirmed(conn),
        "soldout_still_live": soldout_still_live(conn, soldout_minutes),
        "last_run_rejects": last_run_rejects(conn),
    }
