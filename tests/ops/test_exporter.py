"""The exporter process serves real, changing numbers; deploy/ references only metrics it serves."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text

from dropship.embedded.system import free_port, port_open
from dropship.ops.taskmetrics import record
from tests import real_workers
from tests.conftest import PROJECT_DIR


@pytest.fixture
def exporter(tmp_path: Path, redis_url: str, committed_db: Engine) -> Iterator[str]:
    port = free_port()
    proc = real_workers.spawn(
        "exporter",
        [sys.executable, "-m", "dropship.cli", "exporter", "--port", str(port)],
        tmp_path,
        {},
    )
    try:
        deadline = time.monotonic() + 30
        while not port_open("127.0.0.1", port):
            assert proc.proc.poll() is None, proc.log()[-2000:]
            assert time.monotonic() < deadline, proc.log()[-2000:]
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        real_workers.stop(proc)


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body = requests.get(url, timeout=30).text
    samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_metrics_change_with_the_system(
    exporter: str, redis_client: redis_lib.Redis, committed_db: Engine
) -> None:
    first = _scrape(exporter)
    assert first[("dropship_queue_depth", (("queue", "low"),))] == 0
    assert first[("dropship_orders_waiting_to_forward", ())] == 0  # empty tables: 0
    assert first[("dropship_snapshot_errors", ())] == 0

    redis_client.rpush("low", *[b"x"] * 7)
    for _ in range(4):
        record(redis_client, "tasks.x.probe", "SUCCESS", 0.2, 0.01)
    with committed_db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO collect_runs (supplier, account, status, records, rejected) "
                "VALUES ('gentrade', 'gentrade_main', 'succeeded', 120, 3)"
            )
        )
    second = _scrape(exporter)
    assert second[("dropship_queue_depth", (("queue", "low"),))] == 7
    assert second[("dropship_task_runs", (("task", "tasks.x.probe"), ("window", "5m")))] == 4
    p95 = second[
        ("dropship_task_runtime_p95_seconds", (("task", "tasks.x.probe"), ("window", "5m")))
    ]
    assert 0.1 < p95 <= 0.25
    assert second[("dropship_collect_last_run_rejects", (("supplier", "gentrade"),))] == 3
    last = second[("dropship_task_last_success_timestamp_seconds", (("task", "tasks.x.probe"),))]
    assert abs(last - time.time()) < 60


def _names_in(expr_text: str) -> set[str]:
    return set(re.findall(r"\bdropship_[a-z0-9_]+", expr_text))


def test_deploy_rules_and_dashboard_use_served_metrics(exporter: str) -> None:
    body = requests.get(exporter, timeout=30).text
    served = set(re.findall(r"^# TYPE (dropship_[a-z0-9_]+) ", body, flags=re.MULTILINE))
    deploy = PROJECT_DIR / "deploy"

    rules = yaml.safe_load((deploy / "prometheus" / "alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert len(exprs) >= 9 and all(r.get("alert") for g in rules["groups"] for r in g["rules"])
    dashboard = json.loads((deploy / "grafana" / "dropship-dashboard.json").read_text())
    targets = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = set().union(*(_names_in(e) for e in exprs + targets))
    assert used and used <= served, used - served

    scrape = yaml.safe_load((deploy / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    assert jobs["dropship-exporter"]["static_configs"][0]["targets"] == ["127.0.0.1:9808"]
    assert scrape["rule_files"] == ["alerts.yml"]
    assert "password_file" in jobs["flower"]["basic_auth"]  # no password in the file


def test_up_moves_the_exporter_off_a_taken_default_port(tmp_path: Path) -> None:
    import socket

    from rich.console import Console

    from dropship.settings import Settings
    from dropship.stack import Stack, StackError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        default = Settings(data_dir=tmp_path)
        # The default port (not set by the operator) taken: another free port, with a note.
        stack = Stack(default.model_copy(update={"metrics_port": port}), Console(record=True))
        stack.settings.model_fields_set.discard("metrics_port")
        stack._choose_metrics_port()
        assert stack.settings.metrics_port != port
        assert any(f"metrics port {port} is in use" in n for n in stack.notes)
        # Set explicitly: an error naming the variable.
        explicit = Stack(Settings(data_dir=tmp_path, metrics_port=port), Console(record=True))
        with pytest.raises(StackError, match="DROPSHIP_METRICS_PORT"):
            explicit._choose_metrics_port()
