"""docker-compose.yml and the Dockerfile describe the stack the design asks for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return command if isinstance(command, list) else command.split()


def test_services_present() -> None:
    services = _compose()["services"]
    expected = {"postgres", "redis", "migrate", "worker-high", "worker-bulk", "beat", "flower"}
    assert expected <= set(services)
    assert services["sandbox"]["profiles"] == ["sandbox"]


def test_migrate_is_one_shot_and_gates_the_app() -> None:
    services = _compose()["services"]
    assert _command(services["migrate"]) == ["dropship", "db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    for name in ("worker-high", "worker-bulk", "beat", "flower"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name


def test_workers_split_high_from_bulk_with_memory_autoscaling() -> None:
    services = _compose()["services"]
    high = _command(services["worker-high"])
    bulk = _command(services["worker-bulk"])
    assert high[high.index("-Q") + 1] == "high"
    assert bulk[bulk.index("-Q") + 1] == "medium,low"
    assert any(arg.startswith("--autoscale=") for arg in bulk)
    assert any(arg.startswith("--max-memory-per-child=") for arg in bulk)
    assert "-A" in bulk and bulk[bulk.index("-A") + 1] == "dropship.celery_app"


def test_exactly_one_beat() -> None:
    services = _compose()["services"]
    beats = [name for name, svc in services.items() if "beat" in svc.get("command", [])]
    assert beats == ["beat"]
    assert services["beat"].get("deploy", {}).get("replicas", 1) == 1


def test_flower_has_basic_auth_from_env_and_no_secret_in_file() -> None:
    flower = _compose()["services"]["flower"]
    assert "flower" in _command(flower)
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH")
    text = (ROOT / "docker-compose.yml").read_text()
    assert "password@" not in text.lower()


def test_app_services_use_the_dockerfile_and_real_urls() -> None:
    services = _compose()["services"]
    for name in ("migrate", "worker-high", "worker-bulk", "beat", "flower"):
        svc = services[name]
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        assert svc["environment"]["DROPSHIP_REDIS_URL"].startswith("redis://redis:")
        assert "@postgres:5432/" in svc["environment"]["DROPSHIP_DATABASE_URL"]
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "uv sync --frozen" in dockerfile
    assert "USER dropship" in dockerfile


def _k8s(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((ROOT / "deploy" / "k8s" / name).read_text()) if d]


def test_k8s_one_beat_and_workers_per_queue_group() -> None:
    (beat,) = _k8s("beat.yaml")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate"
    queues = {}
    for deployment in _k8s("workers.yaml"):
        command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
        queues[deployment["metadata"]["name"]] = command[command.index("-Q") + 1]
    assert queues == {"dropship-worker-high": "high", "dropship-worker-bulk": "medium,low"}


def test_k8s_autoscaling_follows_queue_lengths() -> None:
    lists = {
        obj["spec"]["scaleTargetRef"]["name"]: sorted(
            t["metadata"]["listName"] for t in obj["spec"]["triggers"]
        )
        for obj in _k8s("autoscaling.yaml")
    }
    assert lists == {"dropship-worker-high": ["high"], "dropship-worker-bulk": ["low", "medium"]}
    (job,) = _k8s("migrate-job.yaml")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "dropship",
        "db",
        "upgrade",
    ]


def test_env_example_settings_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example configuration loads: a typo in a variable name or value would fail here."""
    from dropship.settings import load_settings

    for line in (ROOT / "deploy" / "dropship.env.example").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            key, _, value = line.partition("=")
            monkeypatch.setenv(key, value.strip())
    loaded = load_settings()
    assert loaded.partitions.retention_months == 60
    assert loaded.platforms.accounts["coupang_main"].platform == "coupang"
    assert loaded.celery.hard_time_limit < loaded.celery.visibility_timeout


def test_k8s_exporter_serves_metrics_from_the_shared_settings() -> None:
    deployment, service = _k8s("exporter.yaml")
    assert deployment["spec"]["replicas"] == 1
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["dropship", "exporter"]
    assert container["command"][container["command"].index("--port") + 1] == "9808"
    assert container["envFrom"] == [{"secretRef": {"name": "dropship-env"}}]
    assert container["readinessProbe"]["httpGet"]["path"] == "/metrics"
    assert service["spec"]["ports"][0]["targetPort"] == 9808
