"""Test harness: real PostgreSQL and Redis, isolated state per test.

* ``DROPSHIP_TEST_DATABASE_URL`` / ``DROPSHIP_TEST_REDIS_URL`` point the suite at existing servers;
  otherwise embedded ones are started for the session in a temporary folder.
* A fresh database is created for the session and migrated; each test then gets either a
  transaction that is rolled back (``db_session``) or, when other processes must see its data,
  committed state that is truncated afterwards (``committed_db``).
* ``redis_url`` is a Redis database flushed before the test.

Servers are started in ``pytest_configure`` (before collection), because importing
``dropship.celery_app`` reads the settings and the broker URL must be right by then.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis as redis_lib
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

PROJECT_DIR = Path(__file__).resolve().parent.parent


class _Services:
    database_url: str
    admin_url: str | None = None
    database_name: str | None = None
    redis_url: str
    tmp_dir: Path | None = None
    stoppers: list[Any]

    def __init__(self) -> None:
        self.stoppers = []


SERVICES = _Services()


def _start_embedded_postgres(tmp: Path) -> str:
    from dropship.embedded.postgres import EmbeddedPostgres, reachable_install
    from dropship.embedded.system import service_user

    run_as = service_user()
    notes: list[str] = []
    pg = EmbeddedPostgres(
        tmp / "pg", run_as, reachable_install(run_as, notes), log_file=tmp / "pg.log"
    )
    pg.start()
    SERVICES.stoppers.append(pg.stop)
    return pg.url("postgres")


def _start_embedded_redis(tmp: Path) -> str:
    from dropship.embedded.redis import EmbeddedRedis, find_redis_server
    from dropship.embedded.system import service_user

    run_as = service_user()
    server = EmbeddedRedis(
        tmp / "redis",
        run_as,
        find_redis_server(run_as, []),
        persist=False,
        log_file=tmp / "redis.log",
    )
    server.start()
    SERVICES.stoppers.append(server.stop)
    return server.url(1)


def _fresh_database(server_url: str) -> str:
    """Create a database just for this run; return its URL."""
    name = f"dropship_test_{uuid.uuid4().hex[:8]}"
    url = make_url(server_url)
    admin = url.set(drivername="postgresql", database=url.database or "postgres")
    admin_str = admin.render_as_string(hide_password=False)
    with psycopg.connect(admin_str, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    SERVICES.admin_url = admin_str
    SERVICES.database_name = name
    return url.set(drivername="postgresql", database=name).render_as_string(hide_password=False)


def pytest_configure(config: pytest.Config) -> None:
    tmp: Path | None = None
    external_db = os.environ.get("DROPSHIP_TEST_DATABASE_URL")
    external_redis = os.environ.get("DROPSHIP_TEST_REDIS_URL")
    if not (external_db and external_redis):
        tmp = Path(tempfile.mkdtemp(prefix="dropship-tests-"))
        tmp.chmod(0o755)  # the servers' unprivileged user must reach it
        SERVICES.tmp_dir = tmp
    server_url = external_db or _start_embedded_postgres(tmp)  # type: ignore[arg-type]
    SERVICES.redis_url = external_redis or _start_embedded_redis(tmp)  # type: ignore[arg-type]
    SERVICES.database_url = _fresh_database(server_url)

    # Everything below (settings, engine, Celery app, worker subprocesses) reads these.
    os.environ["DROPSHIP_DATABASE_URL"] = SERVICES.database_url
    os.environ["DROPSHIP_REDIS_URL"] = SERVICES.redis_url
    os.environ.pop("DROPSHIP_RESULT_BACKEND_URL", None)
    os.environ["DROPSHIP_DATA_DIR"] = str(tmp or tempfile.mkdtemp(prefix="dropship-tests-"))

    from dropship import migrate

    migrate.upgrade(SERVICES.database_url)


def pytest_unconfigure(config: pytest.Config) -> None:
    from dropship import db

    db.reset_engine()
    if SERVICES.admin_url and SERVICES.database_name and not SERVICES.stoppers:
        # External server: leave it as we found it.
        with psycopg.connect(SERVICES.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{SERVICES.database_name}" WITH (FORCE)')
    for stop in reversed(SERVICES.stoppers):
        stop()
    if SERVICES.tmp_dir:
        shutil.rmtree(SERVICES.tmp_dir, ignore_errors=True)


# --- database ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def database_url() -> str:
    return SERVICES.database_url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    from dropship.db import normalise_url

    eng = create_engine(normalise_url(database_url))
    yield eng
    eng.dispose()


@pytest.fixture
def db_connection(engine: Engine) -> Iterator[Connection]:
    """A connection inside a transaction that is rolled back after the test."""
    conn = engine.connect()
    trans = conn.begin()
    try:
        yield conn
    finally:
        trans.rollback()
        conn.close()


@pytest.fixture
def db_session(db_connection: Connection) -> Iterator[Session]:
    """An ORM session whose commits become savepoints of the rolled-back outer transaction."""
    session = Session(bind=db_connection, join_transaction_mode="create_savepoint")
    try:
        yield session
    finally:
        session.close()


DATA_TABLES = (
    "order_events",
    "purchase_orders",
    "orders",
    "listings",
    "sync_outbox",
    "image_uploads",
    "images",
    "product_rejects",
    "staging_products",
    "collect_runs",
    "products",
    "pricing_rules",
    "category_map",
    "banned_words",
    "accounts",
)


@pytest.fixture
def committed_db(engine: Engine) -> Iterator[Engine]:
    """For tests whose data must be visible to other processes (workers): commit freely;
    every data table is truncated afterwards."""
    yield engine
    from dropship import db

    db.reset_engine()
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(DATA_TABLES)} RESTART IDENTITY CASCADE"))


# --- redis ------------------------------------------------------------------------------------


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database private to this test, flushed before it runs."""
    client = redis_lib.Redis.from_url(SERVICES.redis_url)
    client.flushdb()
    client.close()
    yield SERVICES.redis_url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(redis_url)
    yield client
    client.close()


# --- celery worker ----------------------------------------------------------------------------


class WorkerProcess:
    def __init__(self, proc: subprocess.Popen[str], log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_worker(
    tmp_path: Path,
    queues: str = "high,medium,low",
    concurrency: int = 2,
    name: str = "test",
    env: dict[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
) -> WorkerProcess:
    log_path = tmp_path / f"worker-{name}.log"
    hostname = f"{name}-{uuid.uuid4().hex[:6]}@%h"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "dropship.celery_app",
            "worker",
            "-Q",
            queues,
            "-c",
            str(concurrency),
            "-n",
            hostname,
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            *extra_args,
        ],
        cwd=PROJECT_DIR,
        env={**os.environ, **(env or {})},
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    worker = WorkerProcess(proc, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited early:\n{worker.log()[-3000:]}")
        if " ready." in worker.log():
            return worker
        time.sleep(0.2)
    stop_worker(worker)
    raise RuntimeError(f"worker not ready in 60 s:\n{worker.log()[-3000:]}")


def stop_worker(worker: WorkerProcess) -> None:
    if worker.proc.poll() is None:
        os.killpg(worker.proc.pid, signal.SIGTERM)
        try:
            worker.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.proc.pid, signal.SIGKILL)
            worker.proc.wait()


@pytest.fixture
def celery_worker(tmp_path: Path, redis_url: str, committed_db: Engine) -> Iterator[WorkerProcess]:
    """A real ``celery worker`` process consuming high, medium and low."""
    worker = start_worker(tmp_path)
    try:
        yield worker
    finally:
        stop_worker(worker)
