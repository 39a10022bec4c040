"""``dropship demo``: the whole business against the sandbox, in one command, on the stack
``dropship up`` runs (embedded PostgreSQL and Redis unless URLs are configured; sandbox, the
``high`` and bulk workers, beat, Flower).

What it does, with the real workers doing every step (the demo only publishes the sweeps that
beat would publish on its slower schedule, and plays the buyers and the operator):

1. Small supplier catalogs in the sandbox (``--catalog`` products each), demo rate limits.
2. Collects the three suppliers (``tasks.collect.collect_supplier``), adds a pricing rule and
   category mappings per market, registers on both markets (``tasks.listings.register_sweep``).
3. For ``--duration`` seconds, orders arrive at ``--rate`` per second for listed products (the
   sandbox markets' admin endpoints, like buyers); a share of them is cancelled by the buyer
   (``--cancel-share``), and a few listed products sell out at the supplier (``--sold-out``).
4. The sweeps run every ``--tick`` seconds: orders (acknowledge, forward exactly once), sheets,
   tracking, claims. The operator's part: each new purchase-order sheet is uploaded at its
   sandbox supplier; Domeggook uploads are confirmed and its tracking imported.
5. Then it drains (up to ``--drain``): every order must end ``dispatched`` or ``cancelled``, or
   wait with a stated reason (failed, unmatched, an operator's step) or on a sheet.

Live progress while it runs; at the end a summary (products, listings, orders by state, purchase
orders, sheets, duplicates found by the sandbox). Exit 0 only when the sandbox saw no duplicate
purchase or invoice and no order is left without a visible next step.
"""

from __future__ import annotations

import json
import os
import random
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from rich.console import Console
from rich.live import Live
from rich.table import Table
from sqlalchemy import text

SUPPLIERS = ("ownerclan", "domeggook", "gentrade")
MARKET_CATEGORY = {"coupang": "56137", "naver": "50000803"}
DEMO_ACCOUNTS = {"coupang": "coupang_main", "naver": "naver_main"}
DEMO_RATE_LIMIT = 50  # calls/s per platform, client and sandbox alike
# Order statuses that are over, or that wait with a reason / on a sheet an operator can see.
TERMINAL = ("dispatched", "cancelled")


@dataclass
class DemoOptions:
    catalog: int = 30
    rate: float = 2.0
    duration: float = 20.0
    cancel_share: float = 0.1
    sold_out: int = 2
    tracking_delay: float = 4.0
    tick: float = 2.0
    drain: float = 120.0
    seed: int = 7


@dataclass
class DemoState:
    arrived: int = 0
    units: list[tuple[str, str]] = field(default_factory=list)  # (market, unit id) that arrived
    cancel_asked: int = 0
    pending_cancels: list[tuple[str, str]] = field(default_factory=list)  # (market, unit id)
    uploaded_sheets: set[int] = field(default_factory=set)
    phase: str = "starting"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare_environment(data_dir: Path | None) -> Path:
    """Settings for the demo's own stack: a fresh data folder (so the counts are this run's),
    a free Flower port, demo rate limits for the workers' connectors."""
    if data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix="dropship-demo-"))
        data_dir.chmod(0o755)  # the embedded servers' unprivileged user must reach it
    os.environ["DROPSHIP_DATA_DIR"] = str(data_dir)
    os.environ["DROPSHIP_FLOWER_PORT"] = str(free_port())
    for platform in (*SUPPLIERS, "coupang", "naver"):
        prefix = f"DROPSHIP_PLATFORMS__RATE_LIMITS__{platform.upper()}__"
        os.environ[prefix + "CALLS"] = str(DEMO_RATE_LIMIT)
        os.environ[prefix + "PERIOD_S"] = "1"
    return data_dir


class Sandbox:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = requests.Session()

    def admin(self, method: str, name: str, body: Any = None, **kw: Any) -> Any:
        response = self.http.request(
            method, f"{self.base_url}/_sandbox/{name}", json=body, timeout=(2, 30), **kw
        )
        if response.status_code != 200:
            raise RuntimeError(f"sandbox {name}: HTTP {response.status_code} {response.text[:300]}")
        return response.json()

    def upload_sheet(self, supplier: str, path: Path) -> None:
        response = self.http.post(
            f"{self.base_url}/_sandbox/{supplier}/sheet_upload",
            params={"format": path.suffix.lstrip(".")},
            data=path.read_bytes(),
            timeout=(2, 30),
        )
        if response.status_code != 200:
            raise RuntimeError(f"sheet {path.name} refused: {response.text[:300]}")


def _rows(sql: str, **params: Any) -> list[Any]:
    from dropship import db

    with db.session_scope() as session:
        return list(session.execute(text(sql), params).all())


def configure_sandbox(box: Sandbox, options: DemoOptions) -> None:
    box.admin(
        "POST",
        "suppliers",
        {
            "catalog_sizes": {s: options.catalog for s in SUPPLIERS},
            "tracking_delay_s": options.tracking_delay,
        },
    )
    box.admin(
        "POST",
        "rate_limits",
        {
            p: {"calls": DEMO_RATE_LIMIT, "period_s": 1.0, "burst": DEMO_RATE_LIMIT}
            for p in (*SUPPLIERS, "coupang", "naver")
        },
    )


def add_rules() -> None:
    """A default pricing rule per market and every collected category mapped, so the register
    sweep has something to list (an operator does this with `dropship rules`)."""
    from dropship import db

    with db.session_scope() as session:
        for market, category in MARKET_CATEGORY.items():
            session.execute(
                text(
                    "INSERT INTO pricing_rules (market, category, margin_rate, fee_rate, "
                    "min_margin_krw, rounding_krw) "
                    "SELECT CAST(:m AS varchar), NULL, 0.2, 0.1, 0, 10 "
                    "WHERE NOT EXISTS (SELECT 1 FROM pricing_rules WHERE market = :m "
                    "AND category IS NULL)"
                ),
                {"m": market},
            )
            session.execute(
                text(
                    "INSERT INTO category_map (supplier, supplier_category, market, "
                    "market_category) SELECT DISTINCT supplier, category, CAST(:m AS varchar), "
                    "CAST(:c AS varchar) FROM products "
                    "WHERE category IS NOT NULL ON CONFLICT DO NOTHING"
                ),
                {"m": market, "c": category},
            )


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, refresh: Callable[[], None]
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        refresh()
        time.sleep(0.5)


def collect_and_register(refresh: Callable[[], None], state: DemoState) -> None:
    from dropship.images.services import pending_product_ids
    from tasks.collect import collect_supplier
    from tasks.images import process_sweep
    from tasks.listings import register_sweep

    state.phase = "collecting"
    for supplier in SUPPLIERS:
        collect_supplier.delay(supplier, mode="full").forget()

    def collected() -> bool:
        rows = _rows(
            "SELECT supplier, bool_and(status IN ('succeeded', 'partial', 'failed')) AS done "
            "FROM collect_runs GROUP BY supplier"
        )
        return len(rows) == len(SUPPLIERS) and all(r.done for r in rows)

    wait_until(collected, 600, "the collect runs", refresh)
    add_rules()
    # Registration lists only products whose images are processed (the beat sweep would do it
    # within minutes; the demo does not wait for it).
    state.phase = "images"
    process_sweep.delay().forget()

    def images_settled() -> bool:
        # Every active product's images claimed and settled (stored or refused), none in work.
        busy = _rows("SELECT count(*) AS n FROM images WHERE status = 'processing'")
        return not pending_product_ids(1) and not (busy and busy[0].n)

    wait_until(images_settled, 600, "the product images", refresh)
    state.phase = "registering"
    register_sweep.delay().forget()

    def registered() -> bool:
        rows = _rows(
            "SELECT count(*) FILTER (WHERE status IN ('claimed', 'registering')) AS busy, "
            "count(*) FILTER (WHERE status = 'active') AS active FROM listings"
        )
        return bool(rows and rows[0].active and not rows[0].busy)

    wait_until(registered, 600, "the registrations", refresh)


def listed_products() -> list[Any]:
    return _rows(
        "SELECT a.name AS account, a.platform, l.external_sku, p.supplier, p.supplier_sku "
        "FROM listings l JOIN accounts a ON a.id = l.account_id JOIN products p ON p.id = "
        "l.product_id WHERE l.status = 'active' AND a.name = ANY(:names) ORDER BY l.id",
        names=list(DEMO_ACCOUNTS.values()),
    )


def sell_out(box: Sandbox, listings: list[Any], count: int, rng: random.Random) -> list[Any]:
    """Sell out ``count`` listed OwnerClan products at the supplier (after they were listed):
    orders for them are refused by the supplier and end ``failed`` with the reason."""
    ownerclan = sorted({(r.supplier_sku,) for r in listings if r.supplier == "ownerclan"})
    chosen = [sku for (sku,) in rng.sample(ownerclan, min(count, len(ownerclan)))]
    indexes = [int("".join(ch for ch in sku if ch.isdigit())) for sku in chosen]
    if indexes:
        box.admin("POST", "suppliers", {"sold_out": {"ownerclan": indexes}})
    return [r for r in listings if r.supplier == "ownerclan" and r.supplier_sku in chosen]


def place_market_order(box: Sandbox, listing: Any) -> tuple[str, str]:
    if listing.platform == "coupang":
        ids = box.admin(
            "POST", "coupang/orders", {"count": 1, "external_sku": listing.external_sku}
        )
        return "coupang", str(ids["shipmentBoxIds"][0])
    ids = box.admin(
        "POST", "naver/orders", {"count": 1, "seller_management_code": listing.external_sku}
    )
    return "naver", str(ids["productOrderIds"][0])


def ask_cancellations(box: Sandbox, state: DemoState) -> None:
    """Buyers cancel once their order is in our system and not shipped yet."""
    still = []
    for market, unit in state.pending_cancels:
        row = _rows(
            "SELECT status FROM orders WHERE market = :m AND market_order_id = :u LIMIT 1",
            m=market,
            u=unit,
        )
        if not row:
            still.append((market, unit))
            continue
        if row[0].status in ("shipped", "dispatched", "cancelled"):
            continue  # too late for this buyer: shipped already
        if market == "coupang":
            box.admin("POST", "coupang/cancel_requests", {"shipmentBoxId": int(unit)})
        else:
            box.admin("POST", "naver/cancel_requests", {"productOrderId": unit})
        state.cancel_asked += 1
    state.pending_cancels = still


def operate_sheets(box: Sandbox, state: DemoState) -> None:
    """The operator: upload new sheets at their supplier; confirm Domeggook's uploads (it has
    no lookup) and import its tracking from the supplier's order list."""
    from dropship.orders.sheets import import_tracking, mark_sheet_placed

    for sheet in _rows(
        "SELECT id, supplier, path FROM purchase_order_sheets WHERE status <> 'placed' ORDER BY id"
    ):
        if sheet.id in state.uploaded_sheets or not Path(sheet.path).exists():
            continue
        box.upload_sheet(sheet.supplier, Path(sheet.path))
        state.uploaded_sheets.add(sheet.id)
        if sheet.supplier == "domeggook":
            mark_sheet_placed(sheet.id)
    shipped = box.admin("GET", "suppliers/orders", params={"supplier": "domeggook"})["orders"]
    rows = [(o["order_key"], o["carrier"], o["tracking_number"]) for o in shipped if o["shipped"]]
    if rows:
        import_tracking(rows)


def publish_sweeps() -> None:
    from tasks.fulfilment import claims_sweep, sheets_sweep, tracking_sweep
    from tasks.orders import sweep_order_accounts

    for task in (sweep_order_accounts, sheets_sweep, tracking_sweep, claims_sweep):
        task.delay().forget()


def stuck_orders() -> list[Any]:
    """Orders with no visible next step: not over, no reason stated, not on a sheet."""
    from dropship.orders.claims import OPERATOR

    return _rows(
        "SELECT o.id, o.status, o.order_key FROM orders o "
        "LEFT JOIN purchase_orders po ON po.order_key = o.order_key "
        "WHERE o.status <> ALL(:done) AND NOT (o.status IN ('failed', 'unmatched') "
        "AND o.status_reason IS NOT NULL) "
        "AND NOT (o.status = 'awaiting_placement' AND po.sheet_id IS NOT NULL) "
        # coalesce: a NULL reason (most open orders) must not turn the whole test NULL.
        "AND NOT coalesce(o.status_reason LIKE :op, false) "
        "AND NOT (o.status IN ('shipped', 'dispatched') AND o.status_reason IS NOT NULL)",
        done=list(TERMINAL),
        op=OPERATOR + "%",
    )


def missing_orders(state: DemoState) -> list[tuple[str, str]]:
    """Orders that arrived at a market but are not in our system (nothing vanishes)."""
    stored = {
        (r.market, r.market_order_id)
        for r in _rows("SELECT DISTINCT market, market_order_id FROM orders")
    }
    return [u for u in state.units if u not in stored]


def counts() -> dict[str, list[Any]]:
    return {
        "products": _rows("SELECT supplier, count(*) AS n FROM products GROUP BY 1 ORDER BY 1"),
        "listings": _rows(
            "SELECT a.name AS account, l.status, count(*) AS n FROM listings l JOIN accounts a "
            "ON a.id = l.account_id GROUP BY 1, 2 ORDER BY 1, 2"
        ),
        "orders": _rows("SELECT status, count(*) AS n FROM orders GROUP BY 1 ORDER BY 1"),
        "purchase orders": _rows(
            "SELECT supplier || ' ' || status AS status, count(*) AS n FROM purchase_orders "
            "GROUP BY 1 ORDER BY 1"
        ),
        "sheets": _rows(
            "SELECT supplier || ' ' || status AS status, count(*) AS n "
            "FROM purchase_order_sheets GROUP BY 1 ORDER BY 1"
        ),
    }


def duplicates(box: Sandbox) -> dict[str, int]:
    seen = box.admin("GET", "counts")
    return {
        "purchase orders bought twice": sum(
            1 for n in (seen.get("purchase_orders") or {}).values() if n > 1
        ),
        "invoices uploaded twice": sum(
            1 for n in (seen.get("coupang_invoices") or {}).values() if n > 1
        ),
        "listings registered twice": sum(1 for n in (seen.get("listings") or {}).values() if n > 1),
    }


def render(state: DemoState, started: float) -> Table:
    table = Table(title=f"dropship demo: {state.phase} ({time.monotonic() - started:.0f} s)")
    table.add_column("what")
    table.add_column("count", justify="right")
    for group, rows in counts().items():
        for row in rows:
            label = " ".join(str(v) for v in tuple(row)[:-1])
            table.add_row(f"{group}: {label}", str(row[-1]))
    table.add_row("orders arrived (buyers)", str(state.arrived))
    table.add_row("cancellations asked (buyers)", str(state.cancel_asked))
    return table


def run_business(box: Sandbox, options: DemoOptions, console: Console) -> int:
    state = DemoState()
    rng = random.Random(options.seed)
    started = time.monotonic()
    configure_sandbox(box, options)
    with Live(render(state, started), console=console, refresh_per_second=2) as live:

        def refresh() -> None:
            live.update(render(state, started))

        collect_and_register(refresh, state)
        listings = listed_products()
        if not listings:
            raise RuntimeError("nothing was listed: no order can arrive")
        sold_out = sell_out(box, listings, options.sold_out, rng)
        state.phase = "orders arriving"
        next_tick = time.monotonic()
        arrive_until = time.monotonic() + options.duration
        interval = 1.0 / options.rate if options.rate > 0 else options.duration
        next_order = time.monotonic()
        first_orders = list(sold_out)  # the sold-out products get an order each, first
        while time.monotonic() < arrive_until:
            now = time.monotonic()
            if now >= next_order:
                listing = first_orders.pop() if first_orders else rng.choice(listings)
                market, unit = place_market_order(box, listing)
                state.arrived += 1
                state.units.append((market, unit))
                if rng.random() < options.cancel_share:
                    state.pending_cancels.append((market, unit))
                next_order += interval
            if now >= next_tick:
                publish_sweeps()
                ask_cancellations(box, state)
                operate_sheets(box, state)
                refresh()
                next_tick = now + options.tick
            time.sleep(min(0.05, max(0.0, min(next_order, next_tick) - time.monotonic())))
        state.phase = "draining"
        deadline = time.monotonic() + options.drain
        settled = 0
        while time.monotonic() < deadline:
            publish_sweeps()
            ask_cancellations(box, state)
            operate_sheets(box, state)
            refresh()
            if not stuck_orders() and not state.pending_cancels and not missing_orders(state):
                settled += 1
            else:
                settled = 0
            # Settled on two rounds in a row: one reading can fall between a forward and the
            # sheets sweep that puts its purchase order on a sheet.
            if settled >= 2:
                break
            time.sleep(options.tick)
        state.phase = "done"
        refresh()
    return summary(box, console, state)


def summary(box: Sandbox, console: Console, state: DemoState) -> int:
    table = Table(title="dropship demo summary")
    table.add_column("group")
    table.add_column("what")
    table.add_column("count", justify="right")
    for group, rows in counts().items():
        for row in rows:
            table.add_row(group, " ".join(str(v) for v in tuple(row)[:-1]), str(row[-1]))
    table.add_row("buyers", "orders arrived", str(state.arrived))
    table.add_row("buyers", "cancellations asked", str(state.cancel_asked))
    dups = duplicates(box)
    for what, n in dups.items():
        table.add_row("duplicates found by the sandbox", what, str(n))
    stuck = stuck_orders()
    missing = missing_orders(state)
    table.add_row("orders without a visible next step", "", str(len(stuck)))
    table.add_row("orders at a market but not in the system", "", str(len(missing)))
    console.print(table)
    failed = sum(dups.values()) > 0 or bool(stuck) or bool(missing)
    if stuck:
        console.print("[red]stuck:[/] " + ", ".join(f"{r.id} ({r.status})" for r in stuck[:20]))
    # Plain print: one unwrapped line whatever the terminal width (tests and scripts parse it).
    print(
        json.dumps(
            {
                "duplicates": sum(dups.values()),
                "stuck": len(stuck),
                "missing": len(missing),
                "arrived": state.arrived,
                "cancellations_asked": state.cancel_asked,
                "orders": {r.status: r.n for r in counts()["orders"]},
            }
        ),
        flush=True,
    )
    return 1 if failed else 0
