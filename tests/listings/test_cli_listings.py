"""``dropship listings register|status|reconcile|discrepancies`` through the real CLI (typer's
CliRunner in process, the real database, the sandbox over HTTP, and a real worker for
``register --wait``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner, Result

from dropship.cli import cli
from dropship.listings import services
from tests.catalog.conftest import worker_env
from tests.conftest import start_worker, stop_worker
from tests.images.conftest import HostedStore, image_store  # noqa: F401  (fixture)
from tests.listings.conftest import add_mapping, add_product, add_rule
from tests.listings.test_reconcile import (  # noqa: F401  (autouse fixture)
    _market_images_box,
    scenario,
)
from tests.listings.test_register import (  # noqa: F401  (fixtures)
    accounts,
    catalog,
    listing_rows,
    process_images,
)
from tests.platforms.conftest import (  # noqa: F401  (fixtures)
    SandboxFixture,
    connector_settings,
    make_connector,
    sandbox,
    sandbox_server,
)

pytestmark = pytest.mark.timeout(120)
runner = CliRunner()


def dropship(*args: str) -> Result:
    return runner.invoke(cli, list(args), env={"COLUMNS": "250"})


def squeeze(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@pytest.mark.worker
def test_register_wait_follows_the_claimed_listings_until_done(
    sandbox: SandboxFixture,  # noqa: F811
    catalog: dict[str, list[int]],  # noqa: F811
    rules_db: Engine,
    tmp_path: Path,
    redis_url: str,
) -> None:
    worker = start_worker(tmp_path, queues="medium", concurrency=2, env=worker_env(sandbox))
    try:
        result = dropship("listings", "register", "--account", "coupang_main", "--wait")
        assert result.exit_code == 0, result.output + worker.log()[-2000:]
    finally:
        stop_worker(worker)
    output = squeeze(result.output)
    assert "coupang_main: claimed 6, blocked 2, publishing 6" in output
    assert "published 6 listings in 1 batch(es)" in output
    assert "registered 6, refused 0 of 6 claimed" in output
    assert "6/6" in output  # the bar reached the end
    rows = listing_rows(rules_db, "coupang_main")
    assert len(rows) == 6 and all(r["status"] == "active" for r in rows.values())
    assert listing_rows(rules_db, "naver_main") == {}  # --account kept to one account


def test_register_refuses_an_unknown_account(accounts: None, rules_db: Engine) -> None:  # noqa: F811
    result = dropship("listings", "register", "--account", "nope")
    assert result.exit_code == 1 and "unknown market account 'nope'" in squeeze(result.output)


def test_status_shows_states_by_account_and_the_top_refusals(
    sandbox: SandboxFixture,  # noqa: F811
    accounts: None,  # noqa: F811
    rules_db: Engine,
    make_connector: Callable[[str], Any],  # noqa: F811
    image_store: HostedStore,  # noqa: F811
) -> None:
    with rules_db.begin() as conn:
        add_rule(conn, margin="0.2", fee="0.1")
        add_mapping(conn, supplier_category="KITCHEN", market_category="56137")
        add_mapping(conn, supplier_category="BAD", market_category="not-a-category")
        for _ in range(3):
            add_product(conn)
        for _ in range(2):
            add_product(conn, category="BAD")
    process_images(rules_db, sandbox)
    ids = services.plan_registrations("coupang_main")["publish"]
    assert services.register_listings("coupang_main", ids, make_connector) == {
        "active": 3,
        "refused": 2,
        "skipped": 0,
    }
    result = dropship("listings", "status")
    assert result.exit_code == 0, result.output
    output = squeeze(result.output)
    # claimed registering active suspending suspended suspend_failed failed refused deleted total
    assert "coupang_main │ 0 │ 0 │ 3 │ 0 │ 0 │ 0 │ 0 │ 2 │ 0 │ 0 │ 5" in output, output
    # The refusal reason with how many listings it refused (here our own check of the
    # category code, before anything was sent).
    reason = "invalid literal for int() with base 10: 'not-a-category'"
    assert f"coupang_main │ {reason} │ 2 │" in output, output
    assert "no latest reconciliation" in output


def test_reconcile_and_discrepancies_through_the_cli(
    sandbox: SandboxFixture,  # noqa: F811
    catalog: dict[str, list[int]],  # noqa: F811
    make_connector: Callable[[str], Any],  # noqa: F811
    rules_db: Engine,
) -> None:
    made = scenario(sandbox, "naver_main", make_connector, rules_db)
    sandbox.set_faults("naver", error_rate=1.0)
    failed = dropship("listings", "reconcile", "--account", "naver_main")
    assert failed.exit_code == 1
    assert "aborted for naver_main: nothing of theirs changed" in squeeze(failed.output)
    assert dropship("listings", "discrepancies").output.strip() == "no discrepancies (0)"
    sandbox.set_faults("naver", error_rate=0.0)

    result = dropship("listings", "reconcile", "--account", "naver_main")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "naver_main" in line)
    # account run status pages seen matched adopted marked_suspended ... reported busy
    assert squeeze(row).split(" │ ")[2:9] == ["succeeded", "1", "8", "4", "2", "1", "0"], row
    listed = dropship("listings", "discrepancies", "--account", "naver_main")
    assert listed.exit_code == 0
    line = next(x for x in listed.output.splitlines() if "HANDMADE-1" in x)
    assert made["foreign_id"] in line and "unknown_sku" in line
    assert "external SKU is not one of our keys" in line
    status = squeeze(dropship("listings", "status", "--account", "naver_main").output)
    assert "naver_main │ 2 │ succeeded" in status and "│ 1 │" in status
