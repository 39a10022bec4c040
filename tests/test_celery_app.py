"""The Celery app's contract: queues, routing, JSON only, reliability settings, real workers."""

from __future__ import annotations

import uuid

import pytest
from celery.result import AsyncResult
from kombu import Connection as KombuConnection
from kombu import Exchange, Producer

from dropship.celery_app import QUEUE_NAMES, app
from dropship.settings import get_settings
from tests.conftest import WorkerProcess


def test_queues_and_routes_by_task_name() -> None:
    assert [q.name for q in app.conf.task_queues] == list(QUEUE_NAMES)
    router = app.amqp.router
    assert router.route({}, "tasks.maintenance.ensure_partitions")["queue"].name == "high"
    assert router.route({}, "tasks.orders.forward_order")["queue"].name == "high"
    assert router.route({}, "tasks.listings.register_product")["queue"].name == "medium"
    assert router.route({}, "tasks.collect.collect_page")["queue"].name == "low"


def test_reliability_settings() -> None:
    conf = app.conf
    assert conf.accept_content == ["json"]
    assert conf.task_serializer == "json"
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.worker_send_task_events is True
    visibility = conf.broker_transport_options["visibility_timeout"]
    assert conf.task_soft_time_limit < conf.task_time_limit < visibility
    assert conf.result_backend.startswith("redis://")
    assert visibility == get_settings().celery.visibility_timeout


@pytest.mark.worker
def test_worker_consumes_all_three_queues(celery_worker: WorkerProcess) -> None:
    from tasks.diagnostics import ping

    for queue in QUEUE_NAMES:
        result = ping.apply_async(args=[queue], queue=queue)
        reply = result.get(timeout=30)
        assert reply["value"] == queue
        assert reply["queue"] == queue

    replies = app.control.inspect(timeout=5).active_queues() or {}
    consumed = {q["name"] for queues in replies.values() for q in queues}
    assert set(QUEUE_NAMES) <= consumed


@pytest.mark.worker
def test_pickled_message_is_refused(celery_worker: WorkerProcess) -> None:
    """A pickle message must never be executed; the JSON one sent after it runs normally."""
    pickled_id = str(uuid.uuid4())
    with KombuConnection(app.conf.broker_url) as conn:
        producer = Producer(conn, exchange=Exchange("dropship", type="direct"))
        producer.publish(
            [["pickled"], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}],
            routing_key="low",
            serializer="pickle",
            headers={
                "lang": "py",
                "task": "tasks.diagnostics.ping",
                "id": pickled_id,
                "root_id": pickled_id,
                "parent_id": None,
                "group": None,
                "retries": 0,
                "argsrepr": "('pickled',)",
                "kwargsrepr": "{}",
            },
        )
    from tasks.diagnostics import ping

    # prefetch=1 and one queue: by the time the JSON message is answered, the pickled one
    # ahead of it has been received and refused.
    assert ping.apply_async(args=["json"], queue="low").get(timeout=30)["value"] == "json"
    assert AsyncResult(pickled_id, app=app).state == "PENDING"
    log = celery_worker.log()
    assert "Refusing to deserialize untrusted content of type pickle" in log


@pytest.mark.worker
def test_ensure_partitions_task_runs_on_a_worker_and_is_idempotent(
    celery_worker: WorkerProcess,
) -> None:
    from tasks.maintenance import ensure_partitions

    first = ensure_partitions.delay().get(timeout=30)
    second = ensure_partitions.delay().get(timeout=30)
    assert second["created"] == []
    assert sorted(second["existing"]) == sorted(first["created"] + first["existing"])
    assert len(second["existing"]) == get_settings().partitions.months_ahead + 1
