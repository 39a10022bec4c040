"""Secrets never reach log output, even at DEBUG, where urllib3 logs every request line with its
query string (Domeggook's ``aid``, Zentrade's ``m_skey``). Real worker and CLI subprocesses, real
HTTP to the sandbox."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dropship.logsafe import REDACTED, redact
from dropship.sandbox.core import SandboxConfig, SandboxServer
from dropship.sandbox.credentials import (
    SANDBOX_CREDENTIALS,
    SANDBOX_SECOND_ACCOUNTS,
    sandbox_account_config,
)
from tests.conftest import PROJECT_DIR, WorkerProcess, stop_worker

PLATFORMS = ("ownerclan", "domeggook", "gentrade", "coupang", "naver")
# Identifiers that are not secrets (they appear in URLs and bodies on purpose).
NOT_SECRET = {"vendor_id", "client_id", "id", "username"}
SECRETS = sorted(
    value
    for accounts in (SANDBOX_CREDENTIALS, SANDBOX_SECOND_ACCOUNTS)
    for credentials in accounts.values()
    for name, value in credentials.items()
    if name not in NOT_SECRET
)


def _leaks(text: str) -> list[str]:
    found = [secret for secret in SECRETS if secret in text]
    # Issued tokens are not known in advance: any bearer token left in clear is a leak.
    found += re.findall(r"Bearer (?!\*\*\*)\S+", text)
    return found


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    server = SandboxServer(
        SandboxConfig(seed=42, catalog_size=50).with_all_rate_limits(200, 1.0, 50),
        host="127.0.0.1",
        port=0,
    ).start()
    yield server.base_url
    server.stop()


def _connector_env(sandbox_url: str) -> dict[str, str]:
    env = {
        "DROPSHIP_PLATFORMS__ACCOUNTS": json.dumps(sandbox_account_config(sandbox_url)),
        "DROPSHIP_LOG_LEVEL": "DEBUG",
    }
    # Real limits (OwnerClan's 500/hour) would re-schedule the second call of a check.
    for platform in PLATFORMS:
        env[f"DROPSHIP_PLATFORMS__RATE_LIMITS__{platform.upper()}__CALLS"] = "200"
        env[f"DROPSHIP_PLATFORMS__RATE_LIMITS__{platform.upper()}__PERIOD_S"] = "1"
    return env


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ('"GET /api?ver=4.1&mode=getItemView&aid=K3Y&om=json HTTP/1.1" 200 512', "K3Y"),
        ("GET /shop/proc/product_api.php?id=shop&m_skey=K3Y HTTP/1.1", "K3Y"),
        ("{'client_id': 'c', 'client_secret_sign': 'K3Y', 'timestamp': 1}", "K3Y"),
        ("client_id=c&client_secret=K3Y&grant_type=client_credentials", "K3Y"),
        ('{"username": "u", "password": "K3Y"}', "K3Y"),
        ('{"access_token": "K3Y", "expires_in": 10800}', "K3Y"),
        ("Authorization: CEA algorithm=HmacSHA256, access-key=AK, signature=K3Y", "K3Y"),
        ("Authorization: CEA algorithm=HmacSHA256, access-key=K3Y, signature=S", "K3Y"),
        ("{'Authorization': 'Bearer K3Y.part.two'}", "K3Y"),
        ("connecting to redis://:K3Y@10.0.0.1:6379/0", "K3Y"),
    ],
)
def test_redact_hides_each_secret_shape(line: str, secret: str) -> None:
    clean = redact(line)
    assert secret not in clean
    assert REDACTED in clean


def test_redact_keeps_lookalike_names() -> None:
    line = "GET /v2/ordersheets?nextToken=abc&paid=3&id=shop HTTP/1.1"
    assert redact(line) == line


def test_records_from_any_logger_are_redacted_before_handlers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The record factory installed on import cleans records of loggers nobody configured,
    including %-args and exception text."""
    logger = logging.getLogger("urllib3.connectionpool")
    with caplog.at_level(logging.DEBUG, logger="urllib3.connectionpool"):
        logger.debug('%s://%s:%s "%s %s %s" %s', "http", "h", 80, "GET", "/x?aid=K3Y", "1.1", 200)
        try:
            raise RuntimeError("refused: password=K3Y")
        except RuntimeError:
            logger.exception("call failed")
    text = caplog.text
    assert "aid=***" in text and "password=***" in text
    assert "K3Y" not in text


def _start_debug_worker(tmp_path: Path, env: dict[str, str]) -> WorkerProcess:
    log_path = tmp_path / "worker-debug.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "dropship.celery_app",
            "worker",
            "-Q",
            "low",
            "-c",
            "1",
            "-n",
            f"logsafe-{uuid.uuid4().hex[:6]}@%h",
            "--loglevel",
            "DEBUG",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=PROJECT_DIR,
        env={**os.environ, **env},
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    worker = WorkerProcess(proc, log_path)  # type: ignore[arg-type]
    deadline = time.monotonic() + 60
    while " ready." not in worker.log():
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"worker did not start:\n{worker.log()[-3000:]}")
        time.sleep(0.2)
    return worker


@pytest.mark.worker
def test_worker_debug_log_has_no_secret(tmp_path: Path, sandbox_url: str, redis_url: str) -> None:
    from tasks.diagnostics import check_account

    worker = _start_debug_worker(tmp_path, _connector_env(sandbox_url))
    try:
        results = [
            check_account.delay(f"{platform}_main").get(timeout=60) for platform in PLATFORMS
        ]
    finally:
        stop_worker(worker)
    assert [r["ok"] for r in results] == [True] * len(PLATFORMS)
    log = worker.log()
    # DEBUG really was on: urllib3's request lines are there, with the keys masked.
    assert re.search(r'"GET /domeggook/\S*aid=\*\*\*', log), log[-3000:]
    assert re.search(r'"GET /gentrade/\S*m_skey=\*\*\*', log), log[-3000:]
    assert _leaks(log) == []


def test_cli_debug_log_has_no_secret(sandbox_url: str, redis_url: str) -> None:
    """`dropship shell` at DEBUG: the command's own logging redacts too."""
    script = (
        "from dropship.platforms.health import check_account\n"
        "for name in ('domeggook_main', 'gentrade_main', 'ownerclan_main', 'naver_main',"
        " 'coupang_main'):\n"
        "    print('CHECK', check_account(name)['ok'])\n"
        "\n"  # ends the block in the interactive console
    )
    proc = subprocess.run(
        [sys.executable, "-m", "dropship.cli", "shell"],
        cwd=PROJECT_DIR,
        env={**os.environ, **_connector_env(sandbox_url)},
        input=script,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert out.count("CHECK True") == len(PLATFORMS), out[-3000:]
    assert re.search(r'"GET /domeggook/\S*aid=\*\*\*', out), out[-3000:]
    assert re.search(r'"GET /gentrade/\S*m_skey=\*\*\*', out), out[-3000:]
    assert _leaks(out) == []
