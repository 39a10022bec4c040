"""``dropship status``: one screen of the :mod:`dropship.ops.snapshot` (rich)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

STATUS_WINDOW = "5"


def _mb(value: Any) -> str:
    return "-" if value is None else f"{int(value) / 1_000_000:,.0f} MB"


def _s(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _side_by_side(left: RenderableType, right: RenderableType) -> RenderableType:
    grid = Table.grid(padding=(0, 2))
    grid.add_column()
    grid.add_column()
    grid.add_row(left, right)
    return grid


def render(snap: dict[str, Any]) -> RenderableType:
    parts: list[RenderableType] = []
    mem = snap.get("memory") or {}
    budget = mem.get("budget_bytes")
    used = mem.get("workers_pss_bytes") or mem.get("workers_rss_bytes")
    what = "PSS" if mem.get("workers_pss_bytes") is not None else "RSS"
    memory_line = (
        f"workers {what} {_mb(used)} of budget {_mb(budget)} ({_pct(mem.get('budget_used_pct'))})"
        if budget
        else f"workers {what} {_mb(used)} (no DROPSHIP_MEMORY_BUDGET)"
    )
    parts.append(
        Text.from_markup(
            f"[bold]dropship status[/] {snap.get('at')}   {memory_line}   host memory "
            f"{_pct(mem.get('host_used_pct'))}   CPU {_pct(snap.get('cpu_pct'))}"
        )
    )

    queues = Table(title="queues")
    queues.add_column("queue")
    queues.add_column("waiting", justify="right")
    for name, depth in (snap.get("queues") or {}).items():
        queues.add_row(name, f"{depth:,}")

    workers = Table(title="workers")
    for column in ("worker", "queues", "pool", "min-max", "RSS", "PSS"):
        workers.add_column(column, justify="left" if column in ("worker", "queues") else "right")
    for w in snap.get("workers") or []:
        workers.add_row(
            str(w.get("hostname")),
            ", ".join(w.get("queues") or []),
            str(w.get("pool_processes", "-")),
            f"{w.get('pool_min', '-')}-{w.get('pool_max', '-')}",
            _mb(w.get("rss")),
            _mb(w.get("pss")),
        )
    if not snap.get("workers"):
        workers.add_row("[yellow]no workers reporting[/]", "", "", "", "", "")
    parts.append(_side_by_side(queues, workers))

    tasks = Table(title=f"tasks, last {STATUS_WINDOW} min")
    for column in ("task", "runs", "/min", "ok", "p95 run", "p99 run", "p95 wait", "retried"):
        tasks.add_column(column, justify="left" if column == "task" else "right")
    for row in (snap.get("tasks") or {}).get(STATUS_WINDOW) or []:
        rate = row.get("success_rate")
        tasks.add_row(
            row["task"],
            str(row["count"]),
            f"{row['rate_per_min']:.1f}",
            "-" if rate is None else f"{rate * 100:.1f}%",
            _s(row.get("runtime_p95_s")),
            _s(row.get("runtime_p99_s")),
            _s(row.get("queue_wait_p95_s")),
            str(row["retried"]),
        )
    parts.append(tasks)

    business = snap.get("business") or {}
    figures = Table(title="business")
    figures.add_column("figure")
    figures.add_column("value", justify="right")
    if business:
        orders = business.get("orders_by_status") or {}
        figures.add_row("orders", ", ".join(f"{k} {v}" for k, v in sorted(orders.items())) or "0")
        figures.add_row("orders waiting to forward", str(business["orders_waiting_to_forward"]))
        figures.add_row(
            "oldest unforwarded order", _age(business["oldest_unforwarded_order_age_s"])
        )
        figures.add_row("orders late to forward", str(business["orders_not_forwarded_in_time"]))
        figures.add_row("sold out, still live", str(business["soldout_still_live"]))
        figures.add_row(
            "listings suspended, unconfirmed",
            str(business.get("listings_suspended_unconfirmed", 0)),
        )
        listed = business.get("listings_by_status") or {}
        figures.add_row("listings", ", ".join(f"{k} {v}" for k, v in sorted(listed.items())) or "0")
        images = snap.get("images") or {}
        if images:
            figures.add_row(
                "images stored/refused/pending",
                "{ok:,}/{failed:,}/{pending:,}".format(**images),
            )
            figures.add_row("products waiting for images", f"{images['products_waiting']:,}")
        for run in business.get("last_run_rejects") or []:
            figures.add_row(
                f"last {run['supplier']} run #{run['run_id']}",
                f"{run['status']}: {run['records']:,} records, {run['rejected']:,} rejects",
            )
    accounts = Table(title="platform accounts")
    for column in ("account", "API budget today", "rate limited"):
        accounts.add_column(column, justify="left" if column == "account" else "right")
    for row in snap.get("accounts") or []:
        used_calls = row.get("budget_used")
        accounts.add_row(
            row["account"],
            "-" if used_calls is None else f"{used_calls:,}/{row['budget_limit']:,}",
            "blocked (budget spent)"
            if row.get("blocked")
            else (f"{row['rate_limited_s']:.0f} s" if row.get("rate_limited_s") else "no"),
        )
    parts.append(_side_by_side(figures, accounts))

    alerts = snap.get("alerts") or []
    if alerts:
        table = Table(title="active alerts", title_style="bold red")
        for column in ("rule", "subject", "severity", "message", "fired"):
            table.add_column(column)
        now = datetime.now(UTC).timestamp()
        for alert in alerts:
            table.add_row(
                str(alert["rule"]),
                str(alert["subject"]),
                str(alert["severity"]),
                str(alert["message"]),
                f"{_age(now - float(alert['at']))} ago",
            )
        parts.append(table)
    else:
        parts.append(Text("no active alerts", style="green"))
    if snap.get("errors"):
        parts.append(Text("not read: " + "; ".join(snap["errors"]), style="yellow"))
    return Group(*parts)
