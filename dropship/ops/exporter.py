"""The Prometheus exporter: ``/metrics`` of our own (prometheus_client), beside Flower's.

Every scrape takes a fresh :func:`dropship.ops.snapshot.take` and renders it; nothing is kept
in this process between scrapes, so several exporters (or a restarted one) show the same
numbers. Run it with ``dropship exporter`` (``dropship up`` starts one) or
``python -m dropship.ops.exporter --host 127.0.0.1 --port 9808``. Metric names are listed in
docs/OPERATIONS.md; deploy/prometheus/ scrapes and alerts on them.
"""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import REGISTRY, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dropship.ops import snapshot

logger = logging.getLogger("dropship.ops.exporter")

# Windows exported for the task figures (minutes).
EXPORT_WINDOWS = (1, 5, 15, 60)


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels or [])


def metrics_from(snap: dict[str, Any]) -> list[Metric]:
    """The metric families of one snapshot."""
    out: list[Metric] = []
    up = _gauge("dropship_snapshot_errors", "parts of the reading that failed (0 = all read)")
    up.add_metric([], len(snap.get("errors") or []))
    out.append(up)
    queues = _gauge("dropship_queue_depth", "messages waiting in the queue", ["queue"])
    for queue, depth in sorted((snap.get("queues") or {}).items()):
        queues.add_metric([queue], depth)
    out.append(queues)

    workers = snap.get("workers") or []
    rss = _gauge("dropship_worker_tree_rss_bytes", "RSS of a worker and its pool", ["worker"])
    pss = _gauge("dropship_worker_tree_pss_bytes", "PSS of a worker and its pool", ["worker"])
    pool = _gauge("dropship_worker_pool_processes", "pool processes now", ["worker"])
    pool_max = _gauge("dropship_worker_pool_max", "pool size bound (max)", ["worker"])
    pool_min = _gauge("dropship_worker_pool_min", "pool size bound (min)", ["worker"])
    for w in workers:
        label = [str(w.get("hostname"))]
        rss.add_metric(label, float(w.get("rss") or 0))
        if w.get("pss") is not None:
            pss.add_metric(label, float(w["pss"]))
        for family, key in (
            (pool, "pool_processes"),
            (pool_max, "pool_max"),
            (pool_min, "pool_min"),
        ):
            if w.get(key) is not None:
                family.add_metric(label, float(w[key]))
    out += [rss, pss, pool, pool_max, pool_min]

    mem = snap.get("memory") or {}
    budget = _gauge("dropship_memory_budget_bytes", "DROPSHIP_MEMORY_BUDGET (0: none)")
    budget.add_metric([], float(mem.get("budget_bytes") or 0))
    host_used = _gauge("dropship_host_memory_used_percent", "host memory in use, %")
    host_used.add_metric([], float(mem.get("host_used_pct") or 0))
    cpu = _gauge("dropship_host_cpu_percent", "host CPU in use, %")
    cpu.add_metric([], float(snap.get("cpu_pct") or 0))
    out += [budget, host_used, cpu]

    labels = ["task", "window"]
    families = {
        "count": _gauge("dropship_task_runs", "task runs finished in the window", labels),
        "succeeded": _gauge("dropship_task_succeeded", "runs that succeeded", labels),
        "failed": _gauge("dropship_task_failed", "runs that failed", labels),
        "retried": _gauge("dropship_task_retried", "runs re-scheduled", labels),
        "rate_per_min": _gauge("dropship_task_rate_per_minute", "runs per minute", labels),
        "success_rate": _gauge("dropship_task_success_ratio", "succeeded / finished", labels),
        "runtime_mean_s": _gauge("dropship_task_runtime_mean_seconds", "mean runtime", labels),
        "runtime_p95_s": _gauge("dropship_task_runtime_p95_seconds", "p95 runtime", labels),
        "runtime_p99_s": _gauge("dropship_task_runtime_p99_seconds", "p99 runtime", labels),
        "queue_wait_mean_s": _gauge(
            "dropship_task_queue_wait_mean_seconds", "mean queue wait", labels
        ),
        "queue_wait_p95_s": _gauge("dropship_task_queue_wait_p95_seconds", "p95 wait", labels),
        "queue_wait_p99_s": _gauge("dropship_task_queue_wait_p99_seconds", "p99 wait", labels),
    }
    for window, rows in sorted((snap.get("tasks") or {}).items(), key=lambda kv: int(kv[0])):
        for row in rows:
            for key, family in families.items():
                if row.get(key) is not None:
                    family.add_metric([row["task"], f"{window}m"], float(row[key]))
    out += list(families.values())

    business = snap.get("business") or {}
    for key, name, doc in (
        (
            "orders_waiting_to_forward",
            "dropship_orders_waiting_to_forward",
            "orders stored and not yet forwarded",
        ),
        (
            "oldest_unforwarded_order_age_s",
            "dropship_oldest_unforwarded_order_age_seconds",
            "age of the oldest unforwarded order",
        ),
        (
            "orders_not_forwarded_in_time",
            "dropship_orders_not_forwarded_in_time",
            "orders not forwarded within the alert limit",
        ),
        (
            "soldout_still_live",
            "dropship_soldout_still_live",
            "sold-out products still live on a market past the alert limit",
        ),
    ):
        if key in business:
            g = _gauge(name, doc)
            g.add_metric([], float(business[key] or 0))
            out.append(g)
    if business.get("listings_suspended_unconfirmed") is not None:
        g = _gauge("dropship_listings_suspended_unconfirmed", "suspensions not yet confirmed")
        g.add_metric([], float(business["listings_suspended_unconfirmed"]))
        out.append(g)
    orders = _gauge("dropship_orders", "orders by status", ["status"])
    for status, n in sorted((business.get("orders_by_status") or {}).items()):
        orders.add_metric([status], n)
    out.append(orders)
    listings = _gauge("dropship_listings", "listings by status", ["status"])
    for status, n in sorted((business.get("listings_by_status") or {}).items()):
        listings.add_metric([status], n)
    out.append(listings)
    rejects = _gauge("dropship_collect_last_run_rejects", "rejects of the latest run", ["supplier"])
    records = _gauge("dropship_collect_last_run_records", "records of the latest run", ["supplier"])
    for run in business.get("last_run_rejects") or []:
        rejects.add_metric([run["supplier"]], run["rejected"])
        records.add_metric([run["supplier"]], run["records"])
    out += [rejects, records]

    used = _gauge("dropship_api_budget_used", "daily API calls used", ["account", "platform"])
    limit = _gauge("dropship_api_budget_limit", "daily API call limit", ["account", "platform"])
    limited = _gauge(
        "dropship_account_rate_limited_seconds", "platform pause left", ["account", "platform"]
    )
    for row in snap.get("accounts") or []:
        label = [row["account"], row["platform"]]
        if row.get("budget_used") is not None:
            used.add_metric(label, row["budget_used"])
            limit.add_metric(label, row["budget_limit"])
        limited.add_metric(label, row.get("rate_limited_s") or 0)
    out += [used, limit, limited]

    last = _gauge(
        "dropship_task_last_success_timestamp_seconds",
        "when the task last succeeded (epoch seconds)",
        ["task"],
    )
    for task, at in sorted((snap.get("last_success") or {}).items()):
        last.add_metric([task], at)
    out.append(last)

    alerts = _gauge(
        "dropship_alert_active", "alerts fired within their cooldown", ["rule", "subject"]
    )
    for alert in snap.get("alerts") or []:
        alerts.add_metric([str(alert.get("rule")), str(alert.get("subject"))], 1)
    out.append(alerts)
    return out


class SnapshotCollector(Collector):
    def __init__(self) -> None:
        # One scrape at a time: a snapshot runs several queries.
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snap = snapshot.take(windows=EXPORT_WINDOWS, cpu_interval_s=0.1)
        yield from metrics_from(snap)


def serve(host: str, port: int) -> None:
    from prometheus_client import start_http_server

    REGISTRY.register(SnapshotCollector())
    start_http_server(port, addr=host)
    logger.warning("exporter: /metrics on http://%s:%s", host, port)
    print(f"exporter listening on http://{host}:{port}/metrics", flush=True)
    threading.Event().wait()


def main(argv: list[str] | None = None) -> None:
    from dropship.logsafe import configure_logging
    from dropship.settings import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(description="dropship Prometheus exporter")
    parser.add_argument("--host", default=settings.metrics_host)
    parser.add_argument("--port", type=int, default=settings.metrics_port)
    args = parser.parse_args(argv)
    configure_logging(settings.log_level)
    serve(args.host, args.port)


if __name__ == "__main__":
    main()
