"""Fixtures for the collect flow: the platform sandbox (from ``tests/platforms``), a real Celery
worker consuming ``low`` and pointed at the sandbox, and helpers to wait for a run.

The worker's connectors use the sandbox accounts (``<platform>_main``) with the same generous
test rate limits as the connector tests (sandbox and client limiter alike).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dropship.sandbox.credentials import PLATFORMS, sandbox_account_config
from tests.conftest import WorkerProcess, start_worker, stop_worker
from tests.platforms.conftest import (  # noqa: F401  (fixtures)
    TEST_RATE_LIMIT_CALLS,
    SandboxFixture,
    connector_settings,
    frozen_world_clock,
    make_connector,
    sandbox,
    sandbox_server,
)

FINISHED = ("succeeded", "partial", "failed")


def worker_env(box: SandboxFixture, **extra: str) -> dict[str, str]:
    """Environment of a worker whose connectors talk to the sandbox ``box``."""
    env = {"DROPSHIP_PLATFORMS__ACCOUNTS": json.dumps(sandbox_account_config(box.base_url))}
    for platform in PLATFORMS:
        prefix = f"DROPSHIP_PLATFORMS__RATE_LIMITS__{platform.upper()}__"
        env[prefix + "CALLS"] = str(TEST_RATE_LIMIT_CALLS)
        env[prefix + "PERIOD_S"] = "1"
    env["DROPSHIP_PLATFORMS__HTTP__READ_TIMEOUT_S"] = "20"
    env.update(extra)
    return env


@pytest.fixture
def collect_worker(
    tmp_path: Path,
    sandbox: SandboxFixture,  # noqa: F811  (the imported fixture)
    redis_url: str,
    committed_db: Engine,
) -> Iterator[WorkerProcess]:
    """A real worker (queue ``low``, two processes) collecting from the test sandbox."""
    worker = start_worker(tmp_path, queues="low", concurrency=2, env=worker_env(sandbox))
    try:
        yield worker
    finally:
        stop_worker(worker)


def run_row(engine: Engine, run_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM collect_runs WHERE id = :r"), {"r": run_id}).one()
    return dict(row._mapping)


def wait_for_run(
    engine: Engine,
    run_id: int,
    until: Callable[[dict[str, Any]], bool] = lambda run: run["status"] in FINISHED,
    timeout: float = 120.0,
    worker: WorkerProcess | None = None,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    run = run_row(engine, run_id)
    while not until(run):
        if time.monotonic() > deadline:
            log = worker.log()[-4000:] if worker else ""
            raise AssertionError(f"run {run_id} did not get there: {run}\n{log}")
        time.sleep(0.2)
        run = run_row(engine, run_id)
    return run


def product_rows(engine: Engine, supplier: str) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT * FROM products WHERE supplier = :s"), {"s": supplier}
        ).all()
    return {row.supplier_sku: dict(row._mapping) for row in rows}


def reject_rows(engine: Engine, run_id: int) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT * FROM product_rejects WHERE run_id = :r"), {"r": run_id}
        ).all()
    return [dict(row._mapping) for row in rows]


def staging_count(engine: Engine, run_id: int | None = None) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM staging_products "
                    "WHERE CAST(:r AS bigint) IS NULL OR run_id = :r"
                ),
                {"r": run_id},
            ).scalar_one()
        )


@pytest.fixture
def collect_db(committed_db: Engine) -> Iterator[Engine]:
    """``committed_db`` plus the collect table it does not truncate (watermarks), emptied
    before and after: an earlier worker test's full run leaves a watermark behind."""
    with committed_db.begin() as conn:
        conn.execute(text("TRUNCATE collect_watermarks"))
    yield committed_db
    with committed_db.begin() as conn:
        conn.execute(text("TRUNCATE collect_watermarks"))
