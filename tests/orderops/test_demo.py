"""``dropship demo`` end to end, small: its own stack (the test's PostgreSQL server with a fresh
database, the test's Redis db), the sandbox, real workers. It must exit 0 with no duplicate at
the sandbox, no order without a visible next step and none missing, and the business must have
happened: orders arrived, items dispatched with tracking."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import PROJECT_DIR, SERVICES


@pytest.fixture
def demo_database() -> Iterator[str]:
    assert SERVICES.admin_url
    name = f"dropship_demo_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(SERVICES.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(SERVICES.admin_url).set(database=name)
    yield url.render_as_string(hide_password=False)
    with psycopg.connect(SERVICES.admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.worker
def test_demo_runs_the_business_and_exits_zero(demo_database: str, redis_url: str) -> None:
    env = {
        **os.environ,
        "DROPSHIP_DATABASE_URL": demo_database,
        "DROPSHIP_REDIS_URL": redis_url,
        "COLUMNS": "120",
    }
    env.pop("DROPSHIP_PLATFORMS__ACCOUNTS", None)
    args = ["--catalog", "8", "--rate", "4", "--duration", "4", "--cancel-share", "0.3"]
    args += ["--tracking-delay", "1", "--tick", "1", "--drain", "90"]
    proc = subprocess.run(
        [sys.executable, "-m", "dropship.cli", "demo", *args],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    result = json.loads(next(line for line in output.splitlines() if line.startswith('{"dup')))
    assert result["duplicates"] == 0 and result["stuck"] == 0 and result["missing"] == 0
    assert result["arrived"] >= 10
    assert result["orders"].get("dispatched", 0) > 0, result
    # Every order the buyers placed is in the system (the sandbox may add a few of its own).
    assert sum(result["orders"].values()) >= result["arrived"]
