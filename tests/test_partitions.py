"""Monthly partitions of orders: created ahead, idempotent, retention, and no lost orders."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from dropship.accounts.models import Account
from dropship.errors import MissingPartitionError
from dropship.maintenance.partitions import Month, attached_partitions, ensure_partitions
from dropship.orders.services import IncomingOrder, _insert_new, store_orders


def test_orders_is_partitioned_by_range_on_ordered_at(db_connection: Connection) -> None:
    row = db_connection.execute(
        text(
            "SELECT p.partstrat, a.attname FROM pg_partitioned_table p "
            "JOIN pg_class c ON c.oid = p.partrelid "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = p.partattrs[0] "
            "WHERE c.relname = 'orders'"
        )
    ).one()
    assert tuple(row) == ("r", "ordered_at")


def test_creates_current_and_next_months_and_is_idempotent(db_connection: Connection) -> None:
    today = date(2031, 11, 15)
    first = ensure_partitions(db_connection, months_ahead=3, today=today)
    assert first.created == ["orders_2031_11", "orders_2031_12", "orders_2032_01", "orders_2032_02"]

    before = attached_partitions(db_connection)
    second = ensure_partitions(db_connection, months_ahead=3, today=today)
    assert second.created == []
    assert second.existing == first.created
    assert attached_partitions(db_connection) == before


def test_partition_bounds_route_rows_by_utc_month(db_connection: Connection) -> None:
    ensure_partitions(db_connection, months_ahead=1, today=date(2031, 1, 10))
    bounds = db_connection.execute(
        text(
            "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c "
            "WHERE c.relname = 'orders_2031_01'"
        )
    ).scalar_one()
    assert "2031-01-01 00:00:00+00" in bounds and "2031-02-01 00:00:00+00" in bounds


def test_retention_detaches_then_drops_old_partitions(db_connection: Connection) -> None:
    ensure_partitions(db_connection, months_ahead=0, today=date(2030, 1, 5))
    ensure_partitions(db_connection, months_ahead=0, today=date(2030, 2, 5))
    report = ensure_partitions(
        db_connection, months_ahead=0, today=date(2030, 6, 5), retention_months=3
    )
    assert "orders_2030_01" in report.detached and "orders_2030_02" in report.detached
    assert "orders_2030_01" not in attached_partitions(db_connection)
    # Detached is kept as a plain table for archiving...
    assert db_connection.execute(text("SELECT to_regclass('orders_2030_01')")).scalar() is not None

    ensure_partitions(db_connection, months_ahead=0, today=date(2029, 1, 5))
    dropped = ensure_partitions(
        db_connection,
        months_ahead=0,
        today=date(2030, 6, 5),
        retention_months=3,
        retention_action="drop",
    )
    # ...while "drop" removes it.
    assert dropped.dropped == ["orders_2029_01"]
    assert db_connection.execute(text("SELECT to_regclass('orders_2029_01')")).scalar() is None


def test_month_arithmetic() -> None:
    assert Month(2026, 12).shift(1) == Month(2027, 1)
    assert Month(2026, 1).shift(-1) == Month(2025, 12)
    assert Month(2026, 11).shift(14) == Month(2028, 1)


def _account(session: Session) -> Account:
    account = Account(name="coupang-test", platform="coupang", role="market", credentials_ref="x")
    session.add(account)
    session.flush()
    return account


def _order(account: Account, market_order_id: str, when: datetime) -> IncomingOrder:
    return IncomingOrder(
        account_id=account.id,
        market="coupang",
        market_order_id=market_order_id,
        ordered_at=when,
        raw_status="ACCEPT",
        receiver_name="홍길동",
    )


def test_order_in_month_without_partition_gets_clear_error(db_session: Session) -> None:
    account = _account(db_session)
    far_future = datetime(2041, 3, 2, 12, tzinfo=UTC)
    with pytest.raises(MissingPartitionError, match=r"no partition of orders for month 2041-03"):
        _insert_new(db_session, [_order(account, "A-1", far_future)])


def test_store_orders_creates_missing_partition_and_loses_nothing(db_session: Session) -> None:
    account = _account(db_session)
    far_future = datetime(2042, 7, 31, 23, 59, tzinfo=UTC)
    orders = [_order(account, "B-1", far_future), _order(account, "B-2", far_future)]
    new_ids = store_orders(db_session, orders)
    assert len(new_ids) == 2
    assert "orders_2042_07" in attached_partitions(db_session.connection())

    # Re-delivery of the same orders is a no-op: nothing new to forward.
    assert store_orders(db_session, orders) == []
    stored = db_session.execute(
        text("SELECT count(*) FROM orders WHERE market_order_id IN ('B-1', 'B-2')")
    ).scalar_one()
    assert stored == 2
    events = db_session.execute(
        text("SELECT count(*) FROM order_events WHERE kind = 'ingested' AND order_id = ANY(:ids)"),
        {"ids": new_ids},
    ).scalar_one()
    assert events == 2
