"""Helpers for the order-operation tests (tracking, claims, sheets): order items and purchase
orders written straight into real PostgreSQL (committed, so worker processes see them), the
sandbox's markets and suppliers driven over HTTP, and a real worker on queue ``high``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dropship.maintenance.partitions import ensure_partitions
from dropship.orders.services import order_key
from dropship.platforms.interfaces import BuyerInfo, PurchaseOrderLine, PurchaseOrderRequest
from dropship.sandbox.credentials import sandbox_account_config
from dropship.settings import get_settings
from tests.catalog.conftest import worker_env
from tests.conftest import WorkerProcess, start_worker, stop_worker
from tests.platforms.conftest import (  # noqa: F401  (fixtures)
    SandboxFixture,
    connector_settings,
    frozen_world_clock,
    make_connector,
    sandbox,
    sandbox_server,
)

RECEIVER = BuyerInfo(name="김철수", phone="010-9876-5432", address="서울특별시 종로구 세종대로 175")


@pytest.fixture
def ops_db(
    committed_db: Engine,
    sandbox: SandboxFixture,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[Engine]:
    """Committed state + settings whose accounts are the sandbox's; sheets under tmp_path."""
    monkeypatch.setenv(
        "DROPSHIP_PLATFORMS__ACCOUNTS", json.dumps(sandbox_account_config(sandbox.base_url))
    )
    monkeypatch.setenv("DROPSHIP_FULFILMENT__SHEET_DIR", str(tmp_path / "sheets"))
    get_settings.cache_clear()
    with committed_db.begin() as conn:
        ensure_partitions(conn)
        conn.execute(text("TRUNCATE purchase_order_sheets, claim_sweeps CASCADE"))
    yield committed_db
    with committed_db.begin() as conn:
        conn.execute(text("TRUNCATE purchase_order_sheets, claim_sweeps CASCADE"))
    get_settings.cache_clear()


def account_id(engine: Engine, name: str, platform: str, role: str = "market") -> int:
    with engine.begin() as conn:
        return int(
            conn.execute(
                text(
                    "INSERT INTO accounts (name, platform, role, credentials_ref) "
                    "VALUES (:n, :p, :r, :n) ON CONFLICT (name) DO UPDATE "
                    "SET platform = EXCLUDED.platform RETURNING id"
                ),
                {"n": name, "p": platform, "r": role},
            ).scalar_one()
        )


def add_order(
    engine: Engine,
    account: str,
    market: str,
    market_order_id: str,
    market_item_id: str = "",
    *,
    status: str = "forwarded",
    supplier: str = "ownerclan",
    po_status: str | None = "placed",
    **fields: Any,
) -> dict[str, Any]:
    """One order item (and its purchase order unless ``po_status`` is None)."""
    acc = account_id(engine, account, market)
    key = order_key(market, acc, market_order_id, market_item_id)
    row = {
        "account_id": acc,
        "market": market,
        "market_order_id": market_order_id,
        "market_item_id": market_item_id,
        "order_key": key,
        "status": status,
        "ordered_at": datetime.now(UTC),
        "supplier": supplier,
        "quantity": 1,
        "receiver_name": RECEIVER.name,
        "receiver_phone": RECEIVER.phone,
        "receiver_address": RECEIVER.address,
        **fields,
    }
    columns = ", ".join(row)
    values = ", ".join(f":{c}" for c in row)
    with engine.begin() as conn:
        order_id = conn.execute(
            text(f"INSERT INTO orders ({columns}) VALUES ({values}) RETURNING id"), row
        ).scalar_one()
        if po_status is not None:
            conn.execute(
                text(
                    "INSERT INTO purchase_orders (order_key, supplier, status, order_id, "
                    "ordered_at) VALUES (:k, :s, :st, :id, :at)"
                ),
                {"k": key, "s": supplier, "st": po_status, "id": order_id, "at": row["ordered_at"]},
            )
    return {"id": order_id, "key": key, "ordered_at": row["ordered_at"], "account_id": acc}


def order_row(engine: Engine, key: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM orders WHERE order_key = :k"), {"k": key}).one()
    return dict(row._mapping)


def po_row(engine: Engine, key: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT * FROM purchase_orders WHERE order_key = :k"), {"k": key}
        ).one()
    return dict(row._mapping)


def events(engine: Engine, order_id: int) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT * FROM order_events WHERE order_id = :i ORDER BY id"), {"i": order_id}
        ).all()
    return [dict(r._mapping) for r in rows]


def ownerclan_item(make_connector: Callable[[str], Any]) -> str:  # noqa: F811
    """An OwnerClan sandbox item without options, in stock."""
    from dropship.platforms.interfaces import SupplierProduct

    for p in make_connector("ownerclan_main").iter_products():
        if isinstance(p, SupplierProduct) and p.status == "active" and not p.options:
            return p.supplier_sku
    raise AssertionError("no plain OwnerClan item in the sandbox catalog")


def buy(make_connector: Callable[[str], Any], key: str, sku: str) -> None:  # noqa: F811
    make_connector("ownerclan_main").place_order(
        PurchaseOrderRequest(order_key=key, lines=(PurchaseOrderLine(sku, 1),), receiver=RECEIVER)
    )


def sandbox_post(box: SandboxFixture, name: str, body: Any) -> Any:
    return box._admin("POST", name, body)


def sandbox_get(box: SandboxFixture, name: str) -> Any:
    return box._admin("GET", name)


@pytest.fixture
def high_worker(
    tmp_path: Path,
    sandbox: SandboxFixture,  # noqa: F811
    redis_url: str,
    ops_db: Engine,
) -> Iterator[WorkerProcess]:
    """A real worker consuming ``high``, its connectors pointed at the sandbox."""
    worker = start_worker(
        tmp_path,
        queues="high",
        concurrency=2,
        env=worker_env(sandbox, DROPSHIP_FULFILMENT__SHEET_DIR=str(tmp_path / "sheets")),
    )
    try:
        yield worker
    finally:
        stop_worker(worker)


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
