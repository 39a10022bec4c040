"""``dropship status``: business figures and active alerts on one screen, ``--json``, and
``--watch`` refreshing with the system's changing numbers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis as redis_lib
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from dropship.cli import cli
from dropship.ops import alerts
from tests.conftest import PROJECT_DIR


def _status(*args: str) -> str:
    # In process (the command's own code path, without a fresh interpreter per call).
    result = CliRunner().invoke(cli, ["status", *args], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def _late_order(engine: Engine) -> None:
    from dropship.maintenance.partitions import ensure_partitions

    with engine.begin() as conn:
        ensure_partitions(conn, months_ahead=1, lock_timeout_ms=2000)
        account_id = conn.execute(
            text(
                "INSERT INTO accounts (name, platform, role, credentials_ref) "
                "VALUES ('coupang_main', 'coupang', 'market', 'coupang_main') RETURNING id"
            )
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO orders (ordered_at, account_id, market, market_order_id, order_key, "
                "status, created_at) VALUES (now() - interval '2 hours', :a, 'coupang', 'M-1', "
                "'coupang:1:M-1', 'new', now() - interval '2 hours')"
            ),
            {"a": account_id},
        )


def test_status_shows_business_figures_and_active_alerts(
    redis_client: redis_lib.Redis, committed_db: Engine
) -> None:
    empty = json.loads(_status("--json"))
    assert empty["business"]["orders_waiting_to_forward"] == 0
    assert empty["business"]["oldest_unforwarded_order_age_s"] == 0
    assert empty["errors"] == []

    _late_order(committed_db)
    result = alerts.evaluate(redis_client)
    assert result["delivered"] >= 1, result
    data = json.loads(_status("--json"))
    business = data["business"]
    assert business["orders_waiting_to_forward"] == 1
    assert 7000 < business["oldest_unforwarded_order_age_s"] < 7400
    assert business["orders_not_forwarded_in_time"] == 1
    assert "order_not_forwarded" in {a["rule"] for a in data["alerts"]}

    screen = _status()
    assert "active alerts" in screen and "order_not_forwarded" in screen
    assert "orders waiting to forward" in screen and "2.0 h" in screen


def test_watch_refreshes_with_changing_numbers(
    tmp_path: Path, redis_client: redis_lib.Redis, committed_db: Engine
) -> None:
    out = tmp_path / "watch.txt"
    with out.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dropship.cli", "status", "--watch", "--interval", "0.3"],
            cwd=PROJECT_DIR,
            env={**os.environ, "COLUMNS": "200"},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while "│ low    │       0 │" not in out.read_text():
                assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
                time.sleep(0.1)
            redis_client.rpush("low", *[b"x"] * 42)
            while "│ low    │      42 │" not in out.read_text():
                assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGINT)
            code = proc.wait(15)
    assert code == 0
    assert out.read_text().count("dropship status") >= 2
