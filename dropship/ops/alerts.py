"""Alert rules with thresholds and a cooldown, evaluated by the beat task
``tasks.ops.evaluate_alerts`` on a :mod:`dropship.ops.snapshot`.

A rule that holds fires once per (rule, subject) per cooldown: the cooldown is a Redis key set
with ``SET NX EX``, so two evaluators running at once (a beat restarted mid-minute, a manual run)
still deliver one alert. Delivery: a WARNING log line always, and a JSON POST to
``DROPSHIP_ALERTS__WEBHOOK_URL`` when set. Fired alerts stay listed as active (``dropship
status``, ``/metrics``) until their cooldown ends. :func:`evaluate` never raises: a rule or a
delivery that fails is counted in the result and logged, and the other rules still run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import redis

from dropship.ops.snapshot import ALERTS_ACTIVE_KEY

logger = logging.getLogger("dropship.alerts")

COOLDOWN_PREFIX = "dropship:alerts:cooldown"
SINCE_KEY = "dropship:alerts:since"


@dataclass(frozen=True)
class Firing:
    rule: str
    subject: str
    severity: str
    value: float
    threshold: float
    message: str


Check = Callable[[dict[str, Any], Any], list[Firing]]


def _cpu(snap: dict[str, Any], cfg: Any) -> list[Firing]:
    cpu = snap.get("cpu_pct")
    if cpu is not None and cpu > cfg.cpu_pct:
        return [Firing("high_cpu", "host", "warning", cpu, cfg.cpu_pct, f"CPU at {cpu:.0f}%")]
    return []


def _memory(snap: dict[str, Any], cfg: Any) -> list[Firing]:
    mem = snap.get("memory") or {}
    used = mem.get("budget_used_pct")
    what = "of the memory budget"
    if used is None:
        used, what = mem.get("host_used_pct"), "of host memory"
    if used is not None and used > cfg.memory_pct:
        return [
            Firing(
                "high_memory", "workers", "critical", used, cfg.memory_pct, f"{used:.0f}% {what}"
            )
        ]
    return []


def _backlog(snap: dict[str, Any], cfg: Any) -> list[Firing]:
    return [
        Firing(
            "queue_backlog",
            queue,
            "critical",
            depth,
            cfg.queue_backlog,
            f"{depth} messages waiting",
        )
        for queue, depth in sorted((snap.get("queues") or {}).items())
        if depth > cfg.queue_backlog
    ]


def _error_rate(snap: dict[str, Any], cfg: Any) -> list[Firing]:
    rows = (snap.get("tasks") or {}).get(str(cfg.error_rate_window_minutes)) or []
    ok = sum(r["succeeded"] for r in rows)
    fail = sum(r["failed"] for r in rows)
    if ok + fail < cfg.error_rate_min_tasks:
        return []
    pct = fail * 100.0 / (ok + fail)
    if pct > cfg.error_rate_pct:
        worst = max(rows, key=lambda r: r["failed"])["task"]
        return [
            Firing(
                "error_rate",
                "tasks",
                "critical",
                round(pct, 3),
                cfg.error_rate_pct,
                f"{fail} of {ok + fail} tasks failed in {cfg.error_rate_window_minutes} min "
                f"(most: {worst})",
            )
        ]
    return []


def _orders_not_forwarded(snap: dict[str, Any], cfg: Any) -> list[Firing]:
    late = (snap.get("business") or {}).get("orders_not_forwarded_in_time") or 0
    if late > 0:
        return [
            Firing(
                "order_not_forwarded",
                "orders",
                "critical",
                late,
                0,
                f"{late} order(s) not forwarded within {cfg.order_forward_minutes} min",
            )
        ]
    return []


def _order_sweep(snap: dict[str, Any], cfg: Any) -> list[Firing]:
    # Only once the order sweep exists in this deployment (its task is registered).
    from dropship.celery_app import app

    if cfg.order_sweep_task not in app.tasks:
        return []
    now = time.time()
    last = (snap.get("last_success") or {}).get(cfg.order_sweep_task)
    since = float(snap.get("_evaluating_since") or now)
    reference = last if last is not None else since
    age_min = (now - reference) / 60
    if age_min > cfg.order_sweep_minutes:
        return [
            Firing(
                "order_sweep_stale",
                cfg.order_sweep_task,
                "critical",
                round(age_min, 1),
                cfg.order_sweep_minutes,
                f"no successful order sweep for {age_min:.0f} min",
            )
        ]
    return []


def _soldout_live(snap: dict[str, Any], cfg: Any) -> list[Firing]:
    live = (snap.get("business") or {}).get("soldout_still_live") or 0
    if live > 0:
        return [
            Firing(
                "soldout_still_live",
                "listings",
                "warning",
                live,
                0,
                f"{live} sold-out listing(s) still live after {cfg.soldout_live_minutes} min",
            )
        ]
    return []


def _accounts(snap: dict[str, Any], cfg: Any) -> list[Firing]:
    out = []
    for row in snap.get("accounts") or []:
        if row.get("blocked"):
            out.append(
                Firing(
                    "account_blocked",
                    row["account"],
                    "warning",
                    row.get("budget_used") or 0,
                    row.get("budget_limit") or 0,
                    "daily call budget spent",
                )
            )
        elif (row.get("rate_limited_s") or 0) > 0:
            out.append(
                Firing(
                    "account_rate_limited",
                    row["account"],
                    "warning",
                    row["rate_limited_s"],
                    0,
                    f"rate limited by the platform for {row['rate_limited_s']:.0f} s more",
                )
            )
    return out


RULES: dict[str, Check] = {
    "high_cpu": _cpu,
    "high_memory": _memory,
    "queue_backlog": _backlog,
    "error_rate": _error_rate,
    "order_not_forwarded": _orders_not_forwarded,
    "order_sweep_stale": _order_sweep,
    "soldout_still_live": _soldout_live,
    "accounts": _accounts,
}


def deliver(firing: Firing, webhook_url: str | None, timeout_s: float) -> bool:
    """Log the alert and POST it to the webhook; True when every delivery worked."""
    logger.warning(
        "ALERT %s [%s] %s: %s (value %s, threshold %s)",
        firing.rule,
        firing.severity,
        firing.subject,
        firing.message,
        firing.value,
        firing.threshold,
    )
    if not webhook_url:
        return True
    import requests

    try:
        response = requests.post(webhook_url, json=asdict(firing), timeout=timeout_s)
        response.raise_for_status()
    except requests.RequestException as exc:
        # Never the URL: a webhook URL often carries its token.
        logger.error("alert webhook failed for %s: %s", firing.rule, type(exc).__name__)
        return False
    return True


def evaluate(
    client: redis.Redis | None = None, snap: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Check every rule once; deliver the firings not in cooldown. Never raises."""
    result: dict[str, Any] = {"checked": 0, "firing": 0, "delivered": 0, "errors": []}
    try:
        from dropship.ops import snapshot, taskmetrics
        from dropship.settings import get_settings

        cfg = get_settings().alerts
        if client is None:
            client = taskmetrics._client()
        if client is None:
            result["errors"].append("redis: not configured")
            return result
        if snap is None:
            windows = tuple(sorted({1, 5, cfg.error_rate_window_minutes}))
            snap = snapshot.take(client, windows=windows)
        result["errors"].extend(snap.get("errors") or [])
        now = time.time()
        client.set(SINCE_KEY, f"{now:.3f}", nx=True)
        snap["_evaluating_since"] = float(client.get(SINCE_KEY) or now)
        webhook = cfg.webhook_url.get_secret_value() if cfg.webhook_url else None
        for name, check in RULES.items():
            result["checked"] += 1
            try:
                firings = check(snap, cfg)
            except Exception as exc:
                result["errors"].append(f"rule {name}: {type(exc).__name__}")
                logger.exception("alert rule %s failed", name)
                continue
            for firing in firings:
                result["firing"] += 1
                key = f"{COOLDOWN_PREFIX}:{firing.rule}:{firing.subject}"
                if not client.set(key, f"{now:.3f}", nx=True, ex=cfg.cooldown_s):
                    continue  # already sent in this cooldown period
                client.hset(
                    ALERTS_ACTIVE_KEY,
                    f"{firing.rule}:{firing.subject}",
                    json.dumps({**asdict(firing), "at": now, "until": now + cfg.cooldown_s}),
                )
                if deliver(firing, webhook, cfg.webhook_timeout_s):
                    result["delivered"] += 1
                else:
                    result["errors"].append(f"webhook: {firing.rule}")
    except Exception as exc:  # the evaluator never raises
        result["errors"].append(f"evaluator: {type(exc).__name__}")
        logger.exception("alert evaluation failed")
    return result
