"""The ``dropship`` command: run the stack, manage the schema, open a shell, one-off jobs."""

from __future__ import annotations

import code
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from dropship.settings import SettingsError, get_settings

cli = typer.Typer(
    help="dropship: collect supplier products, list them on marketplaces, forward orders.",
    no_args_is_help=True,
    add_completion=False,
)
db_cli = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
partitions_cli = typer.Typer(help="Monthly partitions of the orders table.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
cli.add_typer(partitions_cli, name="partitions")

console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    # soft_wrap: one line whatever the terminal width, so scripts can grep it.
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(code)


@cli.command()
def up(
    sandbox: Annotated[
        bool, typer.Option(help="Start the platform sandbox and point connectors at it.")
    ] = True,
    memory_budget: Annotated[
        str | None,
        typer.Option(
            "--memory-budget",
            help="Memory the worker tree must stay under, e.g. 1GB (DROPSHIP_MEMORY_BUDGET).",
        ),
    ] = None,
) -> None:
    """Start everything: PostgreSQL and Redis (embedded unless URLs are configured), migrations,
    sandbox, workers, beat, Flower and the metrics exporter. Ctrl-C or SIGTERM stops all of it."""
    from dropship.embedded.postgres import EmbeddedServerError
    from dropship.stack import Stack, StackError

    if memory_budget is not None:
        # Through the environment, so every child (workers, beat, exporter) sizes itself alike.
        os.environ["DROPSHIP_MEMORY_BUDGET"] = memory_budget
        get_settings.cache_clear()
        try:
            get_settings()
        except SettingsError as exc:
            raise _fail(str(exc), code=2) from None

    stack = Stack(get_settings(), console, with_sandbox=sandbox)
    try:
        stack.start()
        stack.run_until_signalled()
    except (StackError, EmbeddedServerError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        stack.stop()
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("\n[dim]interrupted: stopping...[/]")
    except Exception as exc:
        # Anything else (a failing migration, say): stop what was started, then name the error.
        # psycopg's messages name host and port, never the password.
        err_console.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}")
        stack.stop()
        raise typer.Exit(1) from None
    stack.stop()
    console.print("stopped.")


# Both take the revision the same way: an optional positional REV.
RevisionArg = Annotated[str, typer.Argument(metavar="REV", show_default=True)]


@db_cli.command("upgrade")
def db_upgrade(revision: RevisionArg = "head") -> None:
    """Apply migrations up to REV (default: head, e.g. +1), then ensure order partitions."""
    from dropship import migrate
    from dropship.db import session_scope
    from dropship.maintenance.services import run_partition_maintenance

    migrate.upgrade(revision=revision)
    with session_scope() as session:
        report = run_partition_maintenance(session)
    console.print(
        f"schema at {migrate.current_revision()}; partitions created: {report['created']}"
    )


@db_cli.command("current")
def db_current() -> None:
    """Show the applied and the latest migration revision."""
    from dropship import migrate

    console.print(f"applied: {migrate.current_revision()}  head: {migrate.head_revision()}")


@db_cli.command("downgrade")
def db_downgrade(revision: RevisionArg = "-1") -> None:
    """Revert migrations down to REV (default: -1, one step; base reverts all)."""
    from dropship import migrate

    migrate.downgrade(revision=revision)
    console.print(f"schema at {migrate.current_revision()}")


@partitions_cli.command("ensure")
def partitions_ensure(
    months_ahead: Annotated[
        int | None, typer.Option(help="Override DROPSHIP_PARTITIONS__MONTHS_AHEAD.")
    ] = None,
) -> None:
    """Create this month's and the next months' partitions now and apply retention."""
    from dropship.db import session_scope
    from dropship.maintenance.services import run_partition_maintenance

    with session_scope() as session:
        report = run_partition_maintenance(session, months_ahead=months_ahead)
    for key, names in report.items():
        console.print(f"{key}: {', '.join(names) or '-'}")


@partitions_cli.command("list")
def partitions_list() -> None:
    """List the attached partitions of orders."""
    from dropship.db import get_engine
    from dropship.maintenance.partitions import attached_partitions

    with get_engine().connect() as conn:
        for name in attached_partitions(conn):
            console.print(name)


SHELL_BANNER = """dropship shell: the Celery app is loaded as `app`.
  from tasks.maintenance import ensure_partitions
  ensure_partitions.delay().get(timeout=30)
  from tasks.diagnostics import ping; ping.delay("hi").get(timeout=10)"""


def _use_stack_sandbox_accounts() -> None:
    """With no accounts configured and a running stack that serves the sandbox, use the same
    sandbox accounts as the stack's workers, so this process sees what they see."""
    from dropship.runtime import read_stack_state

    state = read_stack_state() or {}
    if state.get("sandbox_url") and not get_settings().platforms.accounts:
        import json

        from dropship.sandbox.credentials import sandbox_account_config

        os.environ["DROPSHIP_PLATFORMS__ACCOUNTS"] = json.dumps(
            sandbox_account_config(state["sandbox_url"])
        )
        get_settings.cache_clear()


@cli.command()
def shell() -> None:
    """A Python shell with the Celery app loaded and pointed at the running stack."""
    from dropship.runtime import resolved_redis_url

    if not resolved_redis_url():
        raise _fail(
            "no broker: start the stack with `dropship up` in another terminal, "
            "or set DROPSHIP_REDIS_URL"
        )
    _use_stack_sandbox_accounts()
    from dropship.celery_app import app

    app.loader.import_default_modules()
    namespace = {"app": app}
    try:
        from IPython import start_ipython  # optional nicety

        start_ipython(argv=[], user_ns=namespace, display_banner=False)
        return
    except ImportError:
        pass
    import readline  # noqa: F401  (line editing and history for code.interact)
    import rlcompleter  # noqa: F401

    code.interact(banner=SHELL_BANNER, local=namespace, exitmsg="")


@cli.command()
def sandbox(
    host: Annotated[
        str | None, typer.Option(help="Bind address (default DROPSHIP_SANDBOX_HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port, 0 for a free one.")] = None,
    seed: Annotated[int | None, typer.Option(help="World seed.")] = None,
) -> None:
    """Run the platform sandbox (all five platforms) in the foreground."""
    settings = get_settings()
    args = [
        sys.executable,
        "-m",
        "dropship.sandbox",
        "--host",
        host or settings.sandbox_host,
        "--port",
        str(settings.sandbox_port if port is None else port),
        "--seed",
        str(settings.sandbox_seed if seed is None else seed),
    ]
    os.execv(sys.executable, args)


@cli.command()
def status(
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between --watch refreshes.")] = 2.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document, for scripts.")
    ] = False,
) -> None:
    """Queue depths (messages waiting in high, medium, low) and the queues each running worker
    consumes with its pool size and memory; task rates, success and p95/p99 times over 5 min;
    memory against DROPSHIP_MEMORY_BUDGET; business figures; platform accounts; active alerts.
    """
    import json

    from dropship.ops import snapshot
    from dropship.ops.status_view import render
    from dropship.platforms.registry import redis_client_for
    from dropship.runtime import resolved_redis_url

    url = resolved_redis_url()
    if not url:
        raise _fail("no broker configured and no running stack found (dropship up)")
    _use_stack_sandbox_accounts()
    client = redis_client_for(url)
    client.ping()  # an unreachable Redis is one error line (main), not a screen of blanks
    if as_json:
        console.print_json(json.dumps(snapshot.take(client), default=str))
        return
    if not watch:
        console.print(render(snapshot.take(client)))
        return
    import time

    from rich.live import Live

    if not console.is_terminal:  # piped to a file or a log: one screen after another
        try:
            while True:
                console.print(render(snapshot.take(client)))
                time.sleep(max(0.2, interval))
        except KeyboardInterrupt:
            return
    with Live(render(snapshot.take(client)), console=console, screen=True) as live:
        try:
            while True:
                time.sleep(max(0.2, interval))
                live.update(render(snapshot.take(client)))
        except KeyboardInterrupt:
            pass


@cli.command()
def exporter(
    host: Annotated[str | None, typer.Option(help="Bind address (DROPSHIP_METRICS_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (DROPSHIP_METRICS_PORT).")] = None,
) -> None:
    """Serve Prometheus metrics at /metrics (queues, tasks, workers, business, alerts)."""
    from dropship.ops.exporter import serve

    settings = get_settings()
    _use_stack_sandbox_accounts()
    serve(host or settings.metrics_host, settings.metrics_port if port is None else port)


@cli.command()
def budget() -> None:
    """Daily call budgets: one line per platform account (calls used today, limit, reset)."""
    from dropship.errors import DropshipError
    from dropship.platforms.budget import budget_status

    _use_stack_sandbox_accounts()
    platforms = get_settings().platforms
    if not platforms.accounts:
        console.print("no platform accounts configured")
        return
    for name in sorted(platforms.accounts):
        account = platforms.accounts[name]
        try:
            status = budget_status(account, platforms)
        except DropshipError as exc:
            raise _fail(str(exc)) from None
        console.print(status.line() if status else f"{account.limiter_key}: no daily budget")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"dropship {version('dropship')}")
        raise typer.Exit()


@cli.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    pass


def _unavailable(exc: BaseException) -> str | None:
    """A one-line reason when ``exc`` means a server is unreachable or not configured, else None.

    Only the driver's own first line is shown: psycopg and redis name host and port there, never
    the password; SQLAlchemy's wrapper would add the SQL and a help link."""
    import kombu.exceptions
    import psycopg
    import redis
    import sqlalchemy.exc

    from dropship.errors import ConfigurationError
    from dropship.runtime import BrokerNotConfiguredError

    if isinstance(exc, ConfigurationError | BrokerNotConfiguredError):
        return str(exc)
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None:
        if not isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
            return None
        exc = exc.orig
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"database unreachable: {first}"
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return f"Redis unreachable: {str(exc).strip() or type(exc).__name__}"
    if isinstance(exc, kombu.exceptions.OperationalError):
        return f"broker unreachable: {str(exc).strip() or type(exc).__name__}"
    return None


# --- collect ----------------------------------------------------------------------------------

COLLECT_HELP = """Collect supplier catalogs into products (queue low).

\b
  dropship collect SUPPLIER [--incremental] [--wait]   enqueue a run of ownerclan/domeggook/gentrade
  dropship collect runs [--limit N]                    recent runs with their counts and state
  dropship collect rejects [RUN] [--limit N]           rejected records with their reasons
"""


@cli.command("collect", help=COLLECT_HELP)
def collect(
    target: Annotated[str, typer.Argument(help="A supplier, or `runs`, or `rejects`.")],
    run: Annotated[int | None, typer.Argument(help="With `rejects`: only this run.")] = None,
    incremental: Annotated[
        bool, typer.Option("--incremental", help="Only changes since the last complete run.")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="Show progress until the run finishes.")
    ] = False,
    account: Annotated[
        str | None, typer.Option(help="Supplier account (default: its first one).")
    ] = None,
    limit: Annotated[int, typer.Option(help="Rows shown by `runs` / `rejects`.")] = 20,
    timeout: Annotated[float, typer.Option(help="--wait gives up after this many seconds.")] = 3600,
) -> None:
    if target == "runs":
        _collect_runs(limit)
    elif target == "rejects":
        _collect_rejects(run, limit)
    else:
        _collect_start(target, account, "incremental" if incremental else "full", wait, timeout)


def _release_result(result: Any) -> None:
    """Drop the result backend's pub/sub subscriptions for ``result`` and the results it
    spawned (a collect's chord) now. Publishing a task subscribes to its result, and reading
    its state subscribes to its children; left to ``AsyncResult.__del__`` at interpreter exit,
    the unsubscribe reconnects to Redis while Python shuts down and prints a traceback."""
    from celery.result import ResultSet

    pending = [result]
    while pending:
        node = pending.pop()
        if isinstance(node, ResultSet):
            pending.extend(node.results)
            continue
        node.backend.remove_pending_result(node)
        pending.extend(node.children or [])


def _collect_start(
    supplier: str, account: str | None, mode: str, wait: bool, timeout: float
) -> None:
    from dropship.platforms.config import SUPPLIER_PLATFORMS
    from dropship.runtime import resolved_redis_url

    if supplier not in SUPPLIER_PLATFORMS:
        raise _fail(
            f"unknown supplier {supplier!r}: one of {', '.join(sorted(SUPPLIER_PLATFORMS))}, "
            "or `runs` / `rejects`"
        )
    if not resolved_redis_url():
        raise _fail("no broker: start the stack with `dropship up`, or set DROPSHIP_REDIS_URL")
    from tasks.collect import collect_supplier

    result = collect_supplier.delay(supplier, account, mode)
    console.print(f"collect {supplier} ({mode}) enqueued: task {result.id}")
    if not wait:
        _release_result(result)
        return
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from dropship.catalog.services import get_run

    opened_by = time.monotonic() + min(timeout, 600)
    while not result.ready():
        if time.monotonic() > opened_by:
            raise _fail("no worker opened the run in time (is a worker consuming `low`?)")
        time.sleep(0.2)
    if result.failed():
        raise _fail(f"collect {supplier} could not start: {result.result}")
    run_id = int(result.result["run_id"])
    _release_result(result)
    deadline = time.monotonic() + timeout
    columns = (
        TextColumn("run {task.fields[run]} [bold]{task.fields[state]}[/]"),
        BarColumn(),
        TextColumn("slices {task.fields[slices]}"),
        TextColumn("records {task.fields[records]:,}  rejects {task.fields[rejected]:,}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task(
            "collect", total=None, run=run_id, state="", slices="?", records=0, rejected=0
        )
        while True:
            current = get_run(run_id)
            progress.update(
                bar,
                total=current["slices_expected"] or None,
                completed=current["slices_done"],
                state=current["status"],
                slices=f"{current['slices_done']}/{current['slices_expected'] or '?'}",
                records=current["records"],
                rejected=current["rejected"],
            )
            if current["status"] in ("succeeded", "partial", "failed"):
                break
            if time.monotonic() > deadline:
                raise _fail(f"run {run_id} still {current['status']} after {timeout:.0f} s")
            time.sleep(0.5)
    _print_runs([current])
    if current["status"] != "succeeded":
        raise _fail(f"run {run_id} {current['status']}: {current['error']}")


def _print_runs(runs: list[dict[str, object]]) -> None:
    from rich.table import Table

    table = Table(title="collect runs")
    for name in (
        "run",
        "supplier",
        "mode",
        "state",
        "slices",
        "records",
        "inserted",
        "updated",
        "unchanged",
        "rejected",
        "gone",
        "started",
        "note",
    ):
        table.add_column(name, justify="right" if name in ("run", "records") else "left")
    for r in runs:
        table.add_row(
            str(r["run_id"]),
            str(r["supplier"]),
            str(r["mode"]),
            str(r["status"]),
            f"{r['slices_done']}/{'?' if r['slices_expected'] is None else r['slices_expected']}",
            *(
                str(r[k])
                for k in ("records", "inserted", "updated", "unchanged", "rejected", "gone")
            ),
            str(r["started_at"])[:19],
            str(r["error"] or (f"paused until {r['paused_until']}" if r["paused_until"] else "")),
        )
    console.print(table)


def _collect_runs(limit: int) -> None:
    from dropship.catalog.services import recent_runs

    runs = recent_runs(limit)
    if not runs:
        console.print("no collect runs yet")
        return
    _print_runs(runs)


def _collect_rejects(run: int | None, limit: int) -> None:
    import json

    from rich.table import Table

    from dropship.catalog.services import iter_rejects

    table = Table(title=f"rejects of run {run}" if run else "rejects")
    for name in ("id", "run", "supplier", "sku", "reason", "raw"):
        table.add_column(name, overflow="fold")
    count = 0
    for r in iter_rejects(run, limit):
        raw = json.dumps(r["raw"], ensure_ascii=False)
        table.add_row(
            str(r["id"]),
            str(r["run_id"]),
            str(r["supplier"]),
            str(r["supplier_sku"] or "-"),
            str(r["reason"]),
            raw[:120] + ("..." if len(raw) > 120 else ""),
        )
        count += 1
    console.print(table if count else "no rejected records")


# --- rules and listings -----------------------------------------------------------------------

rules_cli = typer.Typer(
    help="Catalog rules: pricing, category mapping, word lists, banned products (also from CSV).",
    no_args_is_help=True,
)
listings_cli = typer.Typer(help="Marketplace listings.", no_args_is_help=True)
cli.add_typer(rules_cli, name="rules")
cli.add_typer(listings_cli, name="listings")

RULE_HELP = {
    "pricing": "Pricing rules per market, optionally per market category (CSV columns: "
    "market,category,margin_rate,fee_rate,min_margin_krw,rounding_krw).",
    "category": "Supplier category -> market category per market (CSV columns: "
    "supplier,supplier_category,market,market_category).",
    "words": "Word lists: `exclude` words are masked first, then `ban` words block a product "
    "(CSV columns: word,kind,match,market,reason).",
    "banned": "Banned products: never listed again (CSV columns: supplier,supplier_sku,reason).",
}


def _rule_kind(name: str):  # type: ignore[no-untyped-def]
    from dropship.listings.rule_store import KINDS

    return KINDS[name]


def _rule_call(action: str, name: str, **values: object) -> object:
    """Run one rule-store call in its own transaction; a refused value is a clean error."""
    from dropship.db import session_scope
    from dropship.listings import rule_store

    kind = _rule_kind(name)
    try:
        with session_scope() as session:
            if action == "add":
                return rule_store.add(session, kind, **values)
            if action == "remove":
                return rule_store.remove(session, kind, **values)
            if action == "import":
                return rule_store.import_csv(session, kind, str(values["path"]))
            return rule_store.list_rows(session, kind)
    except rule_store.RuleError as exc:
        raise _fail(str(exc)) from None


def _print_rows(title: str, rows: list[dict[str, object]]) -> None:
    from rich.table import Table

    if not rows:
        console.print(f"no {title}")
        return
    table = Table(title=title)
    for column in rows[0]:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("-" if v is None else str(v) for v in row.values()))
    console.print(table)


def _rule_group(name: str) -> typer.Typer:
    group = typer.Typer(help=RULE_HELP[name], no_args_is_help=True)
    rules_cli.add_typer(group, name=name)

    @group.command("list")
    def _list() -> None:
        """Show every entry."""
        rows = _rule_call("list", name)
        _print_rows(f"{name} rules", rows)  # type: ignore[arg-type]

    @group.command("import")
    def _import(
        path: Annotated[str, typer.Argument(help="CSV file with a header row.")],
    ) -> None:
        """Add or replace entries from a CSV file, all or nothing."""
        count = _rule_call("import", name, path=path)
        console.print(f"imported {count} {name} rows from {path}")

    return group


pricing_rules_cli = _rule_group("pricing")
category_rules_cli = _rule_group("category")
words_rules_cli = _rule_group("words")
banned_rules_cli = _rule_group("banned")

MarketArg = Annotated[str, typer.Argument(help="coupang or naver.")]
CategoryOpt = Annotated[
    str | None, typer.Option(help="A market category; without it, the market's default rule.")
]


@pricing_rules_cli.command("add")
def pricing_add(
    market: MarketArg,
    margin: Annotated[str, typer.Option(help="Margin rate: 0.15 or 15%.")],
    fee: Annotated[str, typer.Option(help="Market fee rate: 0.108 or 10.8% (at most 50%).")],
    min_margin: Annotated[int, typer.Option(help="Minimum margin, KRW.")] = 0,
    rounding: Annotated[int, typer.Option(help="Round the price up to this many KRW.")] = 10,
    category: CategoryOpt = None,
) -> None:
    """Add or replace the pricing rule of MARKET (and --category)."""
    row = _rule_call(
        "add",
        "pricing",
        market=market,
        category=category,
        margin_rate=margin,
        fee_rate=fee,
        min_margin_krw=min_margin,
        rounding_krw=rounding,
    )
    console.print(f"pricing rule stored: {row}")


@pricing_rules_cli.command("remove")
def pricing_remove(market: MarketArg, category: CategoryOpt = None) -> None:
    """Remove the pricing rule of MARKET (and --category)."""
    gone = _rule_call("remove", "pricing", market=market, category=category)
    console.print(f"removed {gone} pricing rule(s)")


@category_rules_cli.command("add")
def category_add(
    supplier: Annotated[str, typer.Argument(help="ownerclan, domeggook or gentrade.")],
    supplier_category: Annotated[str, typer.Argument(help="The supplier's category code.")],
    market: MarketArg,
    market_category: Annotated[str, typer.Argument(help="The market's category code.")],
) -> None:
    """Map a supplier category to a market category (replaces an existing mapping)."""
    _rule_call(
        "add",
        "category",
        supplier=supplier,
        supplier_category=supplier_category,
        market=market,
        market_category=market_category,
    )
    console.print(f"{supplier} {supplier_category} -> {market} {market_category}")


@category_rules_cli.command("remove")
def category_remove(
    supplier: Annotated[str, typer.Argument()],
    supplier_category: Annotated[str, typer.Argument()],
    market: MarketArg,
) -> None:
    """Remove a category mapping."""
    gone = _rule_call(
        "remove", "category", supplier=supplier, supplier_category=supplier_category, market=market
    )
    console.print(f"removed {gone} mapping(s)")


KindOpt = Annotated[str, typer.Option(help="ban (blocks a product) or exclude (masked first).")]
WordMarketOpt = Annotated[str | None, typer.Option(help="Only this market (default: all).")]


@words_rules_cli.command("add")
def words_add(
    word: Annotated[str, typer.Argument()],
    kind: KindOpt = "ban",
    match: Annotated[str, typer.Option(help="substring or word (whole word).")] = "substring",
    market: WordMarketOpt = None,
    reason: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Add a word to a list (or change its match mode and reason)."""
    row = _rule_call(
        "add", "words", word=word, kind=kind, match=match, market=market, reason=reason
    )
    console.print(f"{row['kind']} word stored: {row['word']!r} ({row['match']})")  # type: ignore[index]


@words_rules_cli.command("remove")
def words_remove(
    word: Annotated[str, typer.Argument()], kind: KindOpt = "ban", market: WordMarketOpt = None
) -> None:
    """Remove a word from a list."""
    gone = _rule_call("remove", "words", word=word, kind=kind, market=market)
    console.print(f"removed {gone} word(s)")


@banned_rules_cli.command("add")
def banned_add(
    supplier: Annotated[str, typer.Argument()],
    supplier_sku: Annotated[str, typer.Argument()],
    reason: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Ban a product (by supplier and supplier SKU): it is never listed again."""
    _rule_call("add", "banned", supplier=supplier, supplier_sku=supplier_sku, reason=reason)
    console.print(f"banned {supplier} {supplier_sku}")


@banned_rules_cli.command("remove")
def banned_remove(
    supplier: Annotated[str, typer.Argument()], supplier_sku: Annotated[str, typer.Argument()]
) -> None:
    """Lift a product ban."""
    gone = _rule_call("remove", "banned", supplier=supplier, supplier_sku=supplier_sku)
    console.print(f"removed {gone} ban(s)")


@rules_cli.command("check")
def rules_check(
    account: Annotated[str, typer.Argument(help="A market account name from the settings.")],
    product_ids: Annotated[list[int], typer.Argument(help="Product ids.")],
) -> None:
    """Evaluate products for ACCOUNT now: listable with prices and category, or the reason."""
    from dropship.listings.rules import evaluate

    for d in evaluate(product_ids, account):
        if d.listable:
            options = "".join(
                f"\n    {o.name}={o.value}: {o.sale_price} KRW (margin {o.margin_krw})"
                for o in d.options
            )
            console.print(
                f"{d.product_id}: listable at {d.sale_price} KRW (margin {d.margin_krw} KRW), "
                f"category {d.market_category}{options}",
                soft_wrap=True,
            )
        else:
            console.print(f"{d.product_id}: not listable ({d.code}): {d.reason}", soft_wrap=True)


@listings_cli.command("blocked")
def listings_blocked(
    account: Annotated[str | None, typer.Option(help="Only this market account.")] = None,
    code: Annotated[str | None, typer.Option(help="Only this reason code.")] = None,
    limit: Annotated[int, typer.Option(help="Latest blocked products shown.")] = 20,
) -> None:
    """Why products are not listable: counts by account and reason, then the latest ones."""
    from rich.table import Table

    from dropship.db import session_scope
    from dropship.listings.rules import blocked_summary

    with session_scope() as session:
        counts, latest = blocked_summary(session, account, code, limit)
    if not counts:
        console.print("no blocked products recorded")
        return
    summary = Table(title="blocked products by reason")
    for column in ("account", "reason", "products"):
        summary.add_column(column, justify="right" if column == "products" else "left")
    for r in counts:
        summary.add_row(str(r["account"]), str(r["code"]), str(r["products"]))
    console.print(summary)
    _print_rows(
        "latest blocked products",
        [
            {
                "account": r["account"],
                "product": r["product_id"],
                "supplier": r["supplier"],
                "sku": r["supplier_sku"],
                "reason": r["reason"],
            }
            for r in latest
        ],
    )


@listings_cli.command("unmapped")
def listings_unmapped(
    market: Annotated[str | None, typer.Option(help="coupang or naver (default: both).")] = None,
    limit: Annotated[int, typer.Option(help="Rows shown.")] = 20,
) -> None:
    """Supplier categories without a market category mapping, by products they hold back."""
    from dropship.catalog.models import MARKETS
    from dropship.db import session_scope
    from dropship.listings.rules import unmapped_categories

    if market is not None and market not in MARKETS:
        raise _fail(f"unknown market {market!r}: one of {', '.join(MARKETS)}")
    with session_scope() as session:
        rows = unmapped_categories(session, market, limit)
    if not rows:
        console.print("every sellable product has a category mapping")
        return
    from rich.table import Table

    table = Table(title="unmapped categories")
    for column in ("market", "supplier", "category", "products"):
        table.add_column(column, justify="right" if column == "products" else "left")
    for r in rows:
        category = "(none)" if r["category"] is None else str(r["category"])
        table.add_row(str(r["market"]), str(r["supplier"]), category, str(r["products"]))
    console.print(table)


# --- listing sync: protected fields and suspensions ---------------------------------------


ProtectField = Annotated[str, typer.Option("--field", help="name or price.")]


@listings_cli.command("protect")
def listings_protect(
    listing_id: Annotated[int, typer.Argument(help="Listing id.")], field: ProtectField
) -> None:
    """Protect a field an operator set by hand: sync never overwrites it (the margin is still
    checked: a protected price that falls below the minimum margin suspends the listing)."""
    from dropship.errors import PermanentError
    from dropship.listings.sync import protect

    try:
        fields = protect(listing_id, field, on=True)
    except PermanentError as exc:
        raise _fail(str(exc)) from None
    console.print(f"listing {listing_id}: protected {', '.join(fields) or '(none)'}")


@listings_cli.command("unprotect")
def listings_unprotect(
    listing_id: Annotated[int, typer.Argument(help="Listing id.")], field: ProtectField
) -> None:
    """Let sync manage a protected field again (from the next change of the product)."""
    from dropship.errors import PermanentError
    from dropship.listings.sync import protect

    try:
        fields = protect(listing_id, field, on=False)
    except PermanentError as exc:
        raise _fail(str(exc)) from None
    console.print(f"listing {listing_id}: protected {', '.join(fields) or '(none)'}")


@listings_cli.command("suspensions")
def listings_suspensions(
    limit: Annotated[int, typer.Option(help="Rows shown.")] = 50,
) -> None:
    """Suspensions not confirmed by the market yet (suspending) or given up (suspend_failed)."""
    from dropship.listings.sync import suspensions

    rows = suspensions(limit)
    if not rows:
        console.print("every suspension is confirmed")
        return
    _print_rows(
        "unconfirmed suspensions",
        [
            {
                "listing": r["id"],
                "account": r["account"],
                "product": r["product_id"],
                "status": r["status"],
                "reason": r["suspend_reason"],
                "attempts": r["suspend_attempts"],
                "error": r["error"] or "",
            }
            for r in rows
        ],
    )


# --- images -----------------------------------------------------------------------------------

images_cli = typer.Typer(
    help="Product images: fetch, check, normalise, store.", no_args_is_help=True
)
cli.add_typer(images_cli, name="images")


@images_cli.command("process")
def images_process(
    wait: Annotated[
        bool, typer.Option("--wait", help="Show a progress bar until every image is settled.")
    ] = False,
    limit: Annotated[int, typer.Option(help="At most this many products.")] = 100_000,
    timeout: Annotated[float, typer.Option(help="--wait gives up after this many seconds.")] = 3600,
) -> None:
    """Publish image batches (queue low) for active products with unprocessed images."""
    import time
    from datetime import UTC, datetime

    from dropship.images import services
    from dropship.runtime import resolved_redis_url

    if not resolved_redis_url():
        raise _fail("no broker: start the stack with `dropship up`, or set DROPSHIP_REDIS_URL")
    from tasks.images import publish_batches

    started = datetime.now(UTC)
    ids = services.pending_product_ids(limit)
    if not ids:
        console.print("every product's images are processed")
        return
    batches = publish_batches(ids)
    console.print(f"{len(ids)} products with unprocessed images: {batches} batches enqueued")
    if not wait:
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    deadline = time.monotonic() + timeout
    columns = (
        TextColumn("images"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("ok {task.fields[ok]:,}  failed {task.fields[failed]:,}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("images", total=None, ok=0, failed=0)
        while True:
            state = services.batch_progress(ids, started)
            progress.update(
                bar,
                total=state["total"],
                completed=state["done"],
                ok=state["ok"],
                failed=state["failed"],
            )
            if state["done"] >= state["total"]:
                break
            if time.monotonic() > deadline:
                raise _fail(
                    f"{state['total'] - state['done']} images unsettled after {timeout:.0f} s"
                )
            time.sleep(0.5)
    if state["failed"]:
        console.print("refused images and the products waiting for them: dropship images failed")


@images_cli.command("failed")
def images_failed(limit: Annotated[int, typer.Option(help="Rows shown.")] = 20) -> None:
    """Refused images with their reasons, and the products waiting for a usable image."""
    from dropship.images import services

    failed = services.failed_images(limit)
    waiting = services.waiting_products(limit)
    if not failed and not waiting:
        console.print("no refused images, no product waiting for images")
        return
    _print_rows(
        "refused images",
        [
            {
                "url": r["source_url"],
                "reason": r["reason"],
                "retry": "next run" if r["transient"] else "after 24 h",
                "products": r["products"],
            }
            for r in failed
        ],
    )
    _print_rows(
        "products waiting for images",
        [
            {"product": r["product_id"], "account": r["account"], "reason": r["reason"]}
            for r in waiting
        ],
    )


@listings_cli.command("retry-suspend")
def listings_retry_suspend(
    listing_ids: Annotated[
        list[int] | None, typer.Argument(help="Listing ids (default: every suspend_failed).")
    ] = None,
) -> None:
    """Send given-up suspensions again with a fresh attempt budget (queue high)."""
    from dropship.listings.sync import retry_suspensions
    from tasks.listings import publish_sync

    products = retry_suspensions(listing_ids or None)
    if products:
        publish_sync("suspend", products)
    console.print(f"re-sent suspensions for {len(products)} product(s)")


# --------------------------------------------------------------------------- orders

orders_cli = typer.Typer(
    help="Marketplace orders: sweep, list, show, unmatched, failed, retry. Never prints "
    "receivers' personal data.",
    no_args_is_help=True,
)
cli.add_typer(orders_cli, name="orders")

_ORDER_COLUMNS = ("id", "account", "market_order_id", "status", "supplier", "qty", "reason")


def _print_orders(title: str, rows: list[dict[str, Any]], empty: str) -> None:
    if not rows:
        console.print(empty)
        return
    from rich.table import Table

    table = Table(title=title)
    for column in _ORDER_COLUMNS:
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(
            str(r["id"]),
            str(r["account"]),
            str(r["market_order_id"]),
            str(r["status"]),
            str(r["supplier"] or "-"),
            str(r["quantity"]),
            str(r["status_reason"] or ""),
        )
    console.print(table)


def _orders_of(status: str | None, account: str | None, limit: int) -> list[dict[str, Any]]:
    from dropship.db import session_scope
    from dropship.orders.queries import list_orders

    with session_scope() as session:
        return list_orders(session, status=status, account=account, limit=limit)


OrderAccountOpt = Annotated[str | None, typer.Option(help="Only this market account.")]
OrderLimitOpt = Annotated[int, typer.Option(help="Rows shown (newest first).")]


@orders_cli.command("list")
def orders_list(
    status: Annotated[str | None, typer.Option(help="Only this status.")] = None,
    account: OrderAccountOpt = None,
    limit: OrderLimitOpt = 50,
) -> None:
    """Order items per account and status, then the latest ones."""
    from dropship.db import session_scope
    from dropship.orders.models import ORDER_STATUSES
    from dropship.orders.queries import status_counts

    if status is not None and status not in ORDER_STATUSES:
        raise _fail(f"unknown status {status!r}: one of {', '.join(ORDER_STATUSES)}")
    with session_scope() as session:
        counts = status_counts(session)
    _print_rows("order items by status", counts)
    _print_orders("latest order items", _orders_of(status, account, limit), "no orders")


@orders_cli.command("unmatched")
def orders_unmatched(account: OrderAccountOpt = None, limit: OrderLimitOpt = 50) -> None:
    """Items no listing/product/option could be found for, with the reason."""
    _print_orders("unmatched order items", _orders_of("unmatched", account, limit), "none")


@orders_cli.command("failed")
def orders_failed(account: OrderAccountOpt = None, limit: OrderLimitOpt = 50) -> None:
    """Items the supplier refused (or whose retries ran out), with the reason."""
    _print_orders("failed order items", _orders_of("failed", account, limit), "none")


@orders_cli.command("show")
def orders_show(order_id: Annotated[int, typer.Argument(help="Order item id.")]) -> None:
    """One item: its facts, purchase order and events (no personal data)."""
    from dropship.db import session_scope
    from dropship.orders.queries import order_detail

    with session_scope() as session:
        detail = order_detail(session, order_id)
    if detail is None:
        raise _fail(f"no order {order_id}")
    events = detail.pop("events")
    purchase = detail.pop("purchase_order")
    stored = detail.pop("receiver_stored")
    detail["receiver"] = (
        f"erased at {detail['pii_erased_at']}"
        if detail["pii_erased_at"]
        else ("stored (not shown)" if stored else "none")
    )
    for key, value in detail.items():
        console.print(f"{key}: {value}", soft_wrap=True)
    console.print(f"purchase_order: {purchase}", soft_wrap=True)
    _print_rows("events", events)


@orders_cli.command("retry")
def orders_retry(
    order_id: Annotated[int, typer.Argument(help="A failed or unmatched order item id.")],
    here: Annotated[
        bool, typer.Option("--here", help="Forward in this process instead of via a worker.")
    ] = False,
) -> None:
    """Retry a failed item (it is looked up at the supplier by its key before anything is
    bought) or re-match an unmatched one, then forward it."""
    from dropship.errors import PermanentError
    from dropship.orders import forwarding

    try:
        result = forwarding.retry_order(order_id)
    except PermanentError as exc:
        raise _fail(str(exc)) from None
    if not result["forward"]:
        console.print(f"order {order_id}: {result['status']} (nothing to forward)")
        return
    if here:
        counts = forwarding.forward_orders([order_id])
        console.print(f"order {order_id}: {counts}")
        return
    from tasks.orders import forward_order

    _release_result(forward_order.delay([order_id]))
    console.print(f"order {order_id}: {result['status']}, forward_order published")


@orders_cli.command("sweep")
def orders_sweep(
    account: Annotated[
        str | None, typer.Argument(metavar="ACCOUNT", help="A market account (default: all).")
    ] = None,
) -> None:
    """Sweep orders now through a worker (what beat does every minute) and show the counts."""
    from tasks.orders import sweep_orders

    result = sweep_orders.delay(account)
    try:
        rows = result.get(timeout=300)
    finally:
        _release_result(result)
    _print_rows("order sweep", rows)


# --------------------------------------------------------------------------- order operations
# (tracking, claims, purchase-order sheets: dropship.orders.tracking / claims / sheets)


@orders_cli.command("sheets")
def orders_sheets(limit: OrderLimitOpt = 50) -> None:
    """Purchase-order sheets: file, supplier, rows, and how many still wait for the supplier."""
    from dropship.orders.sheets import list_sheets

    rows = list_sheets(limit)
    if not rows:
        console.print("no purchase-order sheets")
        return
    _print_rows(
        "purchase-order sheets (upload each file at its supplier)",
        [
            {
                "id": r["id"],
                "supplier": r["supplier"],
                "status": r["status"],
                "rows": r["order_count"],
                "waiting": r["waiting"],
                "placed": r["placed"],
                "cancelled": r["cancelled"],
                "file": r["path"] + ("" if r["file_exists"] else " (missing: sweep restores it)"),
            }
            for r in rows
        ],
    )


@orders_cli.command("sheet-placed")
def orders_sheet_placed(
    sheet_id: Annotated[int, typer.Argument(help="A sheet uploaded at a supplier without lookup.")],
) -> None:
    """Confirm that a sheet was uploaded at a supplier that cannot be looked up (Domeggook
    without Private API): its waiting rows become placed."""
    from dropship.orders.sheets import mark_sheet_placed

    console.print(f"sheet {sheet_id}: {mark_sheet_placed(sheet_id)} purchase orders placed")


@orders_cli.command("tracking-import")
def orders_tracking_import(
    path: Annotated[
        str, typer.Argument(help="CSV with columns order_key,carrier,tracking_number.")
    ],
) -> None:
    """Tracking numbers from a supplier without a lookup API; the tracking sweep dispatches
    them to the markets."""
    import csv

    from dropship.orders.sheets import import_tracking

    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"order_key", "carrier", "tracking_number"} - set(reader.fieldnames or ())
        if missing:
            raise _fail(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        rows = [(r["order_key"], r["carrier"], r["tracking_number"]) for r in reader]
    console.print(f"{import_tracking(rows)} of {len(rows)} order items shipped")


@orders_cli.command("claims")
def orders_claims(account: OrderAccountOpt = None, limit: OrderLimitOpt = 50) -> None:
    """Items an operator must act on: claims after shipment (returns), cancellations the
    supplier was too late for or that cannot be cancelled by API, tracking uploads refused."""
    from dropship.db import session_scope
    from dropship.orders.queries import list_orders

    with session_scope() as session:
        rows = [
            r
            for status in ("cancel_requested", "shipped", "dispatched")
            for r in list_orders(session, status=status, account=account, limit=limit)
            if r["status_reason"]
        ]
    _print_orders("order items waiting for an operator", rows, "none")


@orders_cli.command("track")
def orders_track() -> None:
    """Run the tracking and claims sweeps now through a worker and show the counts."""
    from tasks.fulfilment import claims_sweep, sheets_sweep, tracking_sweep

    for task in (sheets_sweep, tracking_sweep, claims_sweep):
        result = task.delay()
        try:
            value = result.get(timeout=300)
        finally:
            _release_result(result)
        _print_rows(task.name, value if isinstance(value, list) else [value])


# --------------------------------------------------------------------------- demo


@cli.command()
def demo(
    catalog: Annotated[int, typer.Option(help="Products per supplier in the sandbox.")] = 30,
    rate: Annotated[float, typer.Option(help="Orders arriving per second.")] = 2.0,
    duration: Annotated[float, typer.Option(help="Seconds during which orders arrive.")] = 20.0,
    cancel_share: Annotated[
        float, typer.Option(help="Share of orders the buyer cancels (0..1).")
    ] = 0.1,
    sold_out: Annotated[int, typer.Option(help="Listed products that sell out.")] = 2,
    tracking_delay: Annotated[
        float, typer.Option(help="Seconds from purchase to tracking number (sandbox).")
    ] = 4.0,
    drain: Annotated[float, typer.Option(help="Seconds to let every order settle.")] = 120.0,
    tick: Annotated[float, typer.Option(help="Seconds between two rounds of sweeps.")] = 2.0,
    data_dir: Annotated[
        str | None, typer.Option(help="Data folder (default: a fresh temporary one).")
    ] = None,
) -> None:
    """Run the whole business against the sandbox on the embedded stack: collect, register,
    orders arriving, forward, sheets, ship, track, cancellations, sold-out; live progress and
    a summary. Exit 1 when the sandbox saw a duplicate or an order has no visible next step."""
    from dropship import db
    from dropship import demo as business
    from dropship.embedded.postgres import EmbeddedServerError
    from dropship.stack import Stack, StackError

    if not (0.0 <= cancel_share <= 1.0) or rate <= 0 or catalog < 1:
        raise _fail("--cancel-share must be within 0..1, --rate > 0, --catalog >= 1")
    demo_dir = business.prepare_environment(Path(data_dir) if data_dir else None)
    get_settings.cache_clear()
    db.reset_engine()
    options = business.DemoOptions(
        catalog=catalog,
        rate=rate,
        duration=duration,
        cancel_share=cancel_share,
        sold_out=sold_out,
        tracking_delay=tracking_delay,
        drain=drain,
        tick=tick,
    )
    stack = Stack(get_settings(), console, with_sandbox=True)
    exit_code = 1
    try:
        stack.start()
        assert stack.sandbox_url is not None
        # The demo's stack lives in its own data folder: this is how to watch it.
        console.print(
            f"watch it from another terminal: DROPSHIP_DATA_DIR={demo_dir} "
            "uv run dropship status --watch"
        )
        exit_code = business.run_business(business.Sandbox(stack.sandbox_url), options, console)
    except (StackError, EmbeddedServerError, RuntimeError) as exc:
        err_console.print(f"[bold red]demo failed:[/] {exc}")
    except KeyboardInterrupt:
        console.print("\n[dim]interrupted: stopping...[/]")
    except Exception as exc:
        err_console.print(f"[bold red]demo failed:[/] {type(exc).__name__}: {str(exc)[:500]}")
    finally:
        db.reset_engine()
        stack.stop()
    raise typer.Exit(exit_code)


# --- listings: register, status, reconcile -----------------------------------------------------

AccountOpt = Annotated[
    str | None, typer.Option("--account", help="Only this market account (default: every one).")
]


def _market_account_names(account: str | None) -> list[str]:
    from dropship.listings.services import market_accounts

    _use_stack_sandbox_accounts()
    names = market_accounts()
    if account is not None:
        if account not in names:
            raise _fail(f"unknown market account {account!r}: one of {', '.join(names) or '-'}")
        return [account]
    if not names:
        raise _fail("no market accounts configured (DROPSHIP_PLATFORMS__ACCOUNTS)")
    return names


def listing_progress(ids: list[int]) -> dict[str, int]:
    """Of the given listings: registered (active), refused, pending (claimed or registering),
    other (any other status)."""
    from sqlalchemy import text

    from dropship.db import session_scope

    counts = {"registered": 0, "refused": 0, "pending": 0, "other": 0}
    if not ids:
        return counts
    with session_scope() as session:
        rows = session.execute(
            text("SELECT status, count(*) FROM listings WHERE id = ANY(:ids) GROUP BY status"),
            {"ids": ids},
        ).all()
    for status, n in rows:
        key = {"active": "registered", "refused": "refused", "claimed": "pending"}.get(
            status, "pending" if status == "registering" else "other"
        )
        counts[key] += int(n)
    return counts


@listings_cli.command("register")
def listings_register(
    account: AccountOpt = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Show progress until every claimed listing is done.")
    ] = False,
    limit: Annotated[int, typer.Option(help="At most this many products per account.")] = 5000,
    timeout: Annotated[float, typer.Option(help="--wait gives up after this many seconds.")] = 3600,
) -> None:
    """Run the register sweep now: claim listings for sellable products not yet listed and
    publish their registrations (queue medium) for the workers."""
    from dropship.listings import services
    from dropship.runtime import resolved_redis_url
    from tasks.listings import interleaved_batches, register_batch

    names = _market_account_names(account)
    if not resolved_redis_url():
        raise _fail("no broker: start the stack with `dropship up`, or set DROPSHIP_REDIS_URL")
    ids_by_account: dict[str, list[int]] = {}
    for name in names:
        planned = services.plan_registrations(name, limit=limit)  # commits before publishing
        ids_by_account[name] = planned["publish"]
        console.print(
            f"{name}: claimed {planned['claimed']}, blocked {planned['blocked']}, "
            f"publishing {len(planned['publish'])}"
        )
    batches = interleaved_batches(ids_by_account)
    for name, batch in batches:  # one account after another, so every limit is used
        _release_result(register_batch.delay(name, batch))
    ids = [i for batch_ids in ids_by_account.values() for i in batch_ids]
    console.print(f"published {len(ids)} listings in {len(batches)} batch(es)")
    if not wait or not ids:
        return
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    deadline = time.monotonic() + timeout
    columns = (
        TextColumn("[bold]register[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "registered {task.fields[registered]}  refused {task.fields[refused]}  "
            "pending {task.fields[pending]}"
        ),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("register", total=len(ids), registered=0, refused=0, pending=0)
        while True:
            done = listing_progress(ids)
            progress.update(
                bar,
                completed=len(ids) - done["pending"],
                registered=done["registered"],
                refused=done["refused"],
                pending=done["pending"],
            )
            if done["pending"] == 0:
                break
            if time.monotonic() > deadline:
                raise _fail(
                    f"{done['pending']} of {len(ids)} listings still pending after "
                    f"{timeout:.0f} s (is a worker consuming `medium`?)"
                )
            time.sleep(0.5)
    console.print(
        f"registered {done['registered']}, refused {done['refused']} of {len(ids)} claimed"
        + (f", {done['other']} in another state" if done["other"] else "")
    )


@listings_cli.command("status")
def listings_status(
    account: AccountOpt = None,
    limit: Annotated[int, typer.Option(help="Refusal reasons shown.")] = 10,
) -> None:
    """Listings by state and account, the top refusal reasons, the latest reconciliation."""
    from rich.table import Table

    from dropship.listings import reconcile
    from dropship.listings.models import LISTING_STATUSES
    from dropship.listings.services import listing_counts, refusal_reasons

    counts = listing_counts(account)
    if not counts:
        console.print("no listings yet")
    else:
        by_account: dict[str, dict[str, int]] = {}
        for r in counts:
            by_account.setdefault(str(r["account"]), {})[str(r["status"])] = int(r["listings"])
        table = Table(title="listings by state")
        table.add_column("account")
        for status in (*LISTING_STATUSES, "total"):
            table.add_column(status, justify="right")
        for name, states in sorted(by_account.items()):
            cells = [str(states.get(s, 0)) for s in LISTING_STATUSES]
            table.add_row(name, *cells, str(sum(states.values())))
        console.print(table)
    _print_rows("refusals", refusal_reasons(account, limit))
    runs = [r for r in reconcile.latest_runs() if account is None or r["account"] == account]
    open_by_account: dict[str, int] = {}
    for d in reconcile.discrepancies(account):
        open_by_account[str(d["account"])] = open_by_account.get(str(d["account"]), 0) + 1
    _print_rows(
        "latest reconciliation",
        [
            {
                "account": r["account"],
                "run": r["id"],
                "state": r["status"],
                "started": str(r["started_at"])[:19],
                "counts": ", ".join(f"{k} {v}" for k, v in (r["counts"] or {}).items() if v),
                "discrepancies": open_by_account.get(str(r["account"]), 0),
                "error": r["error"],
            }
            for r in runs
        ],
    )


@listings_cli.command("reconcile")
def listings_reconcile(account: AccountOpt = None) -> None:
    """Reconcile now, in this process: page through each market account's listings, adopt
    ours by key, mark the ones the market suspended, report the rest."""
    from dropship.listings import reconcile

    failed = []
    rows = []
    for name in _market_account_names(account):
        summary = reconcile.reconcile_account(name)
        rows.append(
            {
                k: summary.get(k)
                for k in ("account", "run_id", "status", "pages", *reconcile.COUNT_KEYS, "error")
            }
        )
        if summary["status"] != "succeeded":
            failed.append(name)
    _print_rows("reconciliation", rows)
    if failed:
        raise _fail(f"reconciliation aborted for {', '.join(failed)}: nothing of theirs changed")


@listings_cli.command("discrepancies")
def listings_discrepancies(
    account: AccountOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Also resolved ones.")] = False,
    limit: Annotated[int, typer.Option(help="Rows shown.")] = 50,
) -> None:
    """Market listings reconciliation reported instead of adopting (with the reason)."""
    from dropship.listings import reconcile

    rows = reconcile.discrepancies(account, include_resolved=all_)
    _print_rows(
        f"discrepancies ({len(rows)})",
        [
            {
                "account": d["account"],
                "market id": d["market_product_id"],
                "sku": d["external_sku"],
                "kind": d["kind"],
                "market state": d["market_state"],
                "reason": d["reason"],
                "last seen": str(d["last_seen_at"])[:19],
                **({"resolved": str(d["resolved_at"])[:19]} if all_ else {}),
            }
            for d in rows[:limit]
        ],
    )


def main() -> None:
    from dropship.logsafe import configure_logging

    try:
        settings = get_settings()
    except SettingsError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise SystemExit(2) from None
    configure_logging(settings.log_level)
    try:
        cli()
    except Exception as exc:
        reason = _unavailable(exc)
        if reason is None:
            raise
        err_console.print(f"[bold red]error:[/] {reason}", soft_wrap=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
