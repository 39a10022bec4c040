"""Flower, started the way ``dropship up`` starts it, shows ids and counts only: a real worker
runs tasks whose arguments and return values carry a sandbox customer's name, phone and address
and a configured credential, and nothing of them is found in Flower's task API."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import Engine

from dropship.embedded.system import free_port, port_open
from dropship.ops import tasksafe
from dropship.sandbox.coupang import fake_receiver
from dropship.sandbox.credentials import SANDBOX_CREDENTIALS, sandbox_account_config
from dropship.settings import Settings, get_settings
from dropship.stack import StackError, flower_command
from tests import real_workers
from tests.conftest import start_worker, stop_worker

AUTH = ("ops", "flower-pass-9f3a")
SECRET = SANDBOX_CREDENTIALS["coupang"]["secret_key"]


@pytest.fixture
def accounts_configured(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Sandbox accounts configured in this process (the publisher) and inherited by the
    worker, so their credentials are known secrets on both sides."""
    accounts = json.dumps(sandbox_account_config("http://127.0.0.1:9"))
    monkeypatch.setenv("DROPSHIP_PLATFORMS__ACCOUNTS", accounts)
    get_settings.cache_clear()
    tasksafe.known_secrets.cache_clear()
    yield accounts
    monkeypatch.delenv("DROPSHIP_PLATFORMS__ACCOUNTS")
    get_settings.cache_clear()
    tasksafe.known_secrets.cache_clear()


def _wait_tasks(base: str, ids: list[str], timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    tasks: dict[str, Any] = {}
    while time.monotonic() < deadline:
        tasks = requests.get(f"{base}/api/tasks", auth=AUTH, timeout=5).json()
        if all(tasks.get(i, {}).get("state") == "SUCCESS" for i in ids):
            return tasks
        time.sleep(0.3)
    raise AssertionError(f"Flower did not see every task succeed: {tasks}")


def _text(response: requests.Response) -> str:
    # Flower escapes non-ASCII as \\uXXXX: scan the decoded values, not the raw bytes.
    return json.dumps(response.json(), ensure_ascii=False)


@pytest.mark.worker
def test_flower_task_api_holds_no_customer_data_or_credentials(
    tmp_path: Path, redis_url: str, committed_db: Engine, accounts_configured: str
) -> None:
    from tasks.diagnostics import ping

    receiver = fake_receiver(random.Random(7))
    name, phone = receiver["name"], receiver["safeNumber"]
    address = f"{receiver['addr1']} {receiver['addr2']}"
    forbidden = [name, phone, receiver["addr1"], receiver["addr2"], SECRET]

    port = free_port()
    settings = Settings(flower_port=port, flower_basic_auth=":".join(AUTH))
    flower = flower_command(settings)
    proc = real_workers.spawn("flower", flower.args, tmp_path, flower.env)
    worker = None
    try:
        deadline = time.monotonic() + 30
        while not port_open("127.0.0.1", port):
            assert proc.proc.poll() is None, proc.log()[-2000:]
            assert time.monotonic() < deadline, proc.log()[-2000:]
            time.sleep(0.2)
        base = f"http://127.0.0.1:{port}"
        assert requests.get(f"{base}/api/tasks", timeout=5).status_code == 401
        worker = start_worker(tmp_path, queues="low", concurrency=1, name="flowerscan")
        order = {"order_id": 17, "receiver_name": name, "phone": phone, "address": address}
        results = [
            ping.delay(name),
            ping.delay(phone),
            ping.delay(value=address),
            ping.delay(SECRET),
            ping.delay(order),
            ping.delay("coupang_main"),
        ]
        replies = [r.get(timeout=30) for r in results]
        # The caller too gets ids and counts only; identifiers pass unchanged.
        assert replies[-1]["value"] == "coupang_main"
        assert replies[4]["value"]["order_id"] == 17
        ids = [r.id for r in results]
        tasks = _wait_tasks(base, ids)
        scanned = [json.dumps(tasks, ensure_ascii=False)]
        for task_id in ids:
            for path in (f"/api/task/info/{task_id}", f"/api/task/result/{task_id}"):
                response = requests.get(f"{base}{path}", auth=AUTH, timeout=5)
                assert response.status_code == 200, (path, response.text)
                scanned.append(_text(response))
            # The task's HTML page too (what an operator sees in the dashboard).
            page = requests.get(f"{base}/task/{task_id}", auth=AUTH, timeout=5)
            assert page.status_code == 200 and task_id in page.text
            scanned.append(page.text)
        everything = "\n".join(scanned)
        for value in forbidden:
            assert value not in everything, value
        # Flower did show the arguments and results (placeholders, ids), so the scan saw them.
        info = requests.get(f"{base}/api/task/info/{ids[4]}", auth=AUTH, timeout=5).json()
        assert "'order_id': 17" in info["args"] and "***" in info["args"]
        assert "<text len=" in tasks[ids[0]]["args"] and "<phone>" in tasks[ids[1]]["args"]
        assert "coupang_main" in tasks[ids[5]]["result"]
    finally:
        if worker is not None:
            stop_worker(worker)
        real_workers.stop(proc)


def test_flower_beyond_loopback_requires_basic_auth() -> None:
    with pytest.raises(StackError, match="DROPSHIP_FLOWER_BASIC_AUTH"):
        flower_command(Settings(flower_host="0.0.0.0", flower_basic_auth=None))
    command = flower_command(Settings(flower_host="0.0.0.0", flower_basic_auth="a:b-secret"))
    assert command.env == {"FLOWER_BASIC_AUTH": "a:b-secret"}
    assert not any("b-secret" in arg for arg in command.args)
    assert command.args[command.args.index("-A") + 1] == "dropship.celery_app"
