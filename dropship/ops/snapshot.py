"""One reading of everything an operator looks at: queues, workers and their pools, task rates
and timings, memory against the budget, business figures, platform accounts, active alerts.

``dropship status`` prints it, the exporter turns it into Prometheus metrics, the alert
evaluator checks it. Each part is read on its own: a part that cannot be read (database down,
say) is left out and named in ``errors``; :func:`take` itself never raises.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import psutil
import redis

from dropship.ops import taskmetrics

logger = logging.getLogger("dropship.ops.snapshot")

ALERTS_ACTIVE_KEY = "dropship:alerts:active"


def queue_depths(client: redis.Redis) -> dict[str, int]:
    from dropship.celery_app import QUEUE_NAMES

    pipe = client.pipeline(transaction=False)
    for name in QUEUE_NAMES:
        pipe.llen(name)
    return {name: int(n) for name, n in zip(QUEUE_NAMES, pipe.execute(), strict=True)}


def accounts(client: redis.Redis) -> list[dict[str, Any]]:
    """Per configured platform account: daily budget used/limit, and whether it is paused by
    the platform (rate limited: Retry-After or remaining 0) or out of its daily budget."""
    from dropship.platforms.budget import budget_for
    from dropship.settings import get_settings

    platforms = get_settings().platforms
    server_ms = None
    rows = []
    for name in sorted(platforms.accounts):
        account = platforms.accounts[name]
        budget = budget_for(account, platforms, client)
        status = budget.status() if budget is not None else None
        paused_raw = client.get(f"dropship:ratelimit:{{{account.limiter_key}}}:paused")
        paused_s = 0.0
        if paused_raw is not None:
            if server_ms is None:
                seconds, micros = client.time()
                server_ms = seconds * 1000 + micros / 1000
            paused_s = max(0.0, (float(paused_raw) - server_ms) / 1000)
        rows.append(
            {
                "account": name,
                "platform": account.platform,
                "budget_used": status.used if status else None,
                "budget_limit": status.limit if status else None,
                "rate_limited_s": round(paused_s, 1),
                "blocked": bool(status and status.remaining == 0),
            }
        )
    return rows


def memory(workers: list[dict[str, Any]]) -> dict[str, Any]:
    from dropship.settings import get_settings

    budget = get_settings().memory_budget
    host = psutil.virtual_memory()
    rss = sum(int(w.get("rss") or 0) for w in workers)
    pss_values = [w.get("pss") for w in workers]
    pss = sum(int(p) for p in pss_values if p is not None) if workers else 0
    pss_known = all(p is not None for p in pss_values)
    used = pss if pss_known else rss
    return {
        "budget_bytes": int(budget) if budget else None,
        "workers_rss_bytes": rss,
        "workers_pss_bytes": pss if pss_known else None,
        "budget_used_pct": round(used * 100.0 / int(budget), 1) if budget else None,
        "host_used_pct": round(host.percent, 1),
        "host_total_bytes": host.total,
    }


def take(
    client: redis.Redis | None = None,
    *,
    windows: tuple[int, ...] = taskmetrics.WINDOWS_MINUTES,
    with_database: bool = True,
    cpu_interval_s: float = 0.2,
) -> dict[str, Any]:
    """The snapshot (JSON-ready). ``client`` defaults to the configured/stack Redis."""
    from dropship.settings import get_settings

    errors: list[str] = []
    snap: dict[str, Any] = {"at": datetime.now(UTC).isoformat(timespec="seconds")}

    def part(name: str, fn: Any, default: Any) -> Any:
        try:
            return fn()
        except Exception as exc:  # one unreadable part never hides the others
            errors.append(f"{name}: {type(exc).__name__}")
            logger.debug("snapshot part %s failed", name, exc_info=True)
            return default

    if client is None:
        client = part("redis", taskmetrics._client, None)
    if client is None:
        errors.append("redis: not configured")
    settings = get_settings()
    snap["cpu_pct"] = part("cpu", lambda: psutil.cpu_percent(interval=cpu_interval_s), None)
    if client is not None:
        snap["queues"] = part("queues", lambda: queue_depths(client), {})
        snap["workers"] = part("workers", lambda: taskmetrics.read_workers(client), [])
        snap["tasks"] = {
            str(m): part(
                f"tasks {m}m",
                lambda m=m: [
                    w.as_dict()
                    for w in sorted(
                        taskmetrics.read_windows(client, m).values(), key=lambda w: w.name
                    )
                ],
                [],
            )
            for m in windows
        }
        snap["last_success"] = part("last success", lambda: taskmetrics.last_successes(client), {})
        snap["accounts"] = part("accounts", lambda: accounts(client), [])
        snap["alerts"] = part("alerts", lambda: active_alerts(client), [])
    else:
        snap.update(queues={}, workers=[], tasks={}, last_success={}, accounts=[], alerts=[])
    snap["memory"] = part("memory", lambda: memory(snap["workers"]), {})
    if with_database:
        snap["business"] = part("database", lambda: _business(settings), {})
        snap["images"] = part("images", _image_counts, {})
    snap["errors"] = errors
    return snap


def _business(settings: Any) -> dict[str, Any]:
    from dropship.db import get_engine
    from dropship.ops.business import figures

    with get_engine().connect() as conn:
        return figures(
            conn,
            soldout_minutes=settings.alerts.soldout_live_minutes,
            forward_minutes=settings.alerts.order_forward_minutes,
        )


def _image_counts() -> dict[str, int]:
    from dropship.images.services import image_counts

    return image_counts()


def active_alerts(client: redis.Redis, now: float | None = None) -> list[dict[str, Any]]:
    """Alerts fired within their cooldown (see :mod:`dropship.ops.alerts`)."""
    import json

    now = time.time() if now is None else now
    active, expired = [], []
    for key, raw in client.hgetall(ALERTS_ACTIVE_KEY).items():
        try:
            alert = json.loads(raw)
        except ValueError:
            expired.append(key)
            continue
        if float(alert.get("until", 0)) >= now:
            active.append(alert)
        else:
            expired.append(key)
    if expired:
        client.hdel(ALERTS_ACTIVE_KEY, *expired)
    return sorted(active, key=lambda a: str(a.get("rule")))
