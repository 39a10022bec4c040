"""Customer data: the retention job erases receivers' personal data past the period and keeps
the order facts; ``dropship orders ...`` lists unmatched and failed items with their reasons,
retries with one call, and never prints a receiver's data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner, Result

from dropship.cli import cli
from dropship.orders import forwarding, retention, services
from dropship.settings import get_settings
from tests.catalog.conftest import worker_env
from tests.orders.conftest import (
    Catalog,
    SandboxFixture,
    listed_catalog,
    market_orders,
    order_rows,
    purchase_counts,
)

runner = CliRunner()


def dropship(*args: str) -> Result:
    return runner.invoke(cli, list(args), env={"COLUMNS": "250"})


@pytest.fixture
def catalog(rules_db: Engine, accounts: None, make_connector: Callable[[str], Any]) -> Catalog:
    return listed_catalog(rules_db, make_connector, optioned=False)


PII = ("receiver_name", "receiver_phone", "receiver_address", "receiver_zipcode")


def test_retention_erases_personal_data_past_the_period_and_keeps_the_facts(
    sandbox: SandboxFixture,
    catalog: Catalog,
    make_connector: Callable[[str], Any],
    rules_db: Engine,
    tmp_path: Path,
) -> None:
    market_orders(sandbox, "naver_main", catalog.skus[("naver_main", "plain")], count=3)
    services.sweep_account("naver_main", make_connector)
    old, recent, _ = order_rows(rules_db)
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("pordno,name\nk,someone\n")
    with rules_db.begin() as conn:
        conn.execute(
            text("UPDATE orders SET created_at = now() - interval '91 days' WHERE id = :id"),
            {"id": old["id"]},
        )
        conn.execute(
            text(
                "INSERT INTO purchase_order_sheets (supplier, format, path, created_at) VALUES "
                "('gentrade', 'csv', :p, now() - interval '100 days')"
            ),
            {"p": str(sheet)},
        )
    assert retention.erase_expired_pii() == {"orders": 1, "sheets": 1}
    rows = {r["id"]: r for r in order_rows(rules_db)}
    erased = rows[old["id"]]
    assert all(erased[f] is None for f in (*PII, "receiver_message"))
    assert erased["pii_erased_at"] is not None
    for fact in ("order_key", "status", "product_id", "quantity", "sale_price", "market_order_id"):
        assert erased[fact] == old[fact]
    assert all(rows[recent["id"]][f] for f in PII[:3])  # within the period: kept
    assert not sheet.exists()
    assert retention.erase_expired_pii() == {"orders": 0, "sheets": 0}  # idempotent


def test_cli_lists_reasons_retries_and_never_prints_personal_data(
    sandbox: SandboxFixture,
    catalog: Catalog,
    make_connector: Callable[[str], Any],
    rules_db: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in worker_env(sandbox).items():  # the CLI's connectors reach the sandbox
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    market_orders(sandbox, "coupang_main", catalog.skus[("coupang_main", "plain")], count=1)
    market_orders(sandbox, "coupang_main", None, count=1)
    ids = services.sweep_account("coupang_main", make_connector).forward
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 0})
    forwarding.forward_orders(ids, connector_factory=lambda s: make_connector(f"{s}_main"))
    rows = order_rows(rules_db)
    failed = next(r for r in rows if r["status"] == "failed")
    unmatched = next(r for r in rows if r["status"] == "unmatched")

    out = dropship("orders", "failed")
    assert out.exit_code == 0, out.output
    assert str(failed["id"]) in out.output and "no longer offers" in out.output
    out = dropship("orders", "unmatched")
    assert str(unmatched["id"]) in out.output and "no listing" in out.output
    shown = dropship("orders", "show", str(failed["id"]))
    assert shown.exit_code == 0 and "forward_failed" in shown.output
    assert "stored (not shown)" in shown.output
    listed = dropship("orders", "list")
    for r in rows:
        for field in PII:
            for output in (shown.output, listed.output, out.output):
                assert r[field] not in output, field

    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 500})
    retried = dropship("orders", "retry", str(failed["id"]), "--here")
    assert retried.exit_code == 0, retried.output
    assert "'placed': 1" in retried.output
    assert purchase_counts(sandbox, [failed["order_key"]]) == [1]
    again = dropship("orders", "retry", str(failed["id"]))
    assert again.exit_code == 1 and "only failed or unmatched" in again.output
