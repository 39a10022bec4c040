"""``dropship up``: one command that runs the whole system on one machine.

Starts (when no URLs are configured) embedded PostgreSQL and Redis under the data folder, applies
migrations and partition maintenance, then the platform sandbox, Celery workers, one beat and
Flower. Ctrl-C or SIGTERM stops every process it started, in reverse order.

Workers (``worker_commands``): one consumes ``medium,low`` in priority order with memory-aware
autoscaling; a second, single-process worker is the only one on ``high``, so money work never
waits behind bulk tasks (DESIGN.md "Queues and workers").
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from dropship.embedded.postgres import EmbeddedPostgres, EmbeddedServerError, reachable_install
from dropship.embedded.redis import EmbeddedRedis, find_redis_server
from dropship.embedded.system import (
    RunAs,
    can_reach,
    chown,
    free_port,
    popen_as,
    port_open,
    private_tmp_dir,
    service_user,
)
from dropship.runtime import clear_stack_state, read_stack_state, write_stack_state
from dropship.settings import Settings

READY_TIMEOUT_SECONDS = 90.0


class StackError(RuntimeError):
    pass


@dataclass(frozen=True)
class WorkerCommand:
    name: str
    args: list[str]
    where: str


def worker_commands(settings: Settings, python: str = sys.executable) -> list[WorkerCommand]:
    """The Celery workers ``dropship up`` starts (tests start exactly these).

    ``high`` has a worker of its own and no other worker consumes it: with ``--autoscale`` Celery
    sets prefetch to MAX, so a worker that also took ``high`` could reserve an order behind a
    child busy with bulk work (and memory may keep it from growing). Prefetch 1 on the one-process
    ``high`` worker means it holds only the order it is running; the next one waits in Redis.
    """
    celery = [python, "-m", "celery", "-A", "dropship.celery_app", "worker"]
    c = settings.celery
    return [
        WorkerCommand(
            "worker-main",
            [
                *celery,
                "-Q",
                "medium,low",
                "-n",
                "main@%h",
                f"--autoscale={c.autoscale_max},{c.autoscale_min}",
                "--loglevel",
                settings.log_level,
            ],
            where=f"queues medium > low, autoscale {c.autoscale_min}-{c.autoscale_max} by memory",
        ),
        WorkerCommand(
            "worker-high",
            [*celery, "-Q", "high", "-c", "1", "-n", "high@%h", "--loglevel", settings.log_level],
            where="queue high only (orders never wait behind bulk work)",
        ),
    ]


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class FlowerCommand:
    name: str
    args: list[str]
    where: str
    env: dict[str, str]


def flower_command(settings: Settings, python: str = sys.executable) -> FlowerCommand:
    """Flower with the project's app (its argsrepr/kwargsrepr and results are the safe ones of
    dropship/ops/tasksafe.py), basic auth from ``DROPSHIP_FLOWER_BASIC_AUTH``. Listening beyond
    loopback without basic auth is refused: that is a deployment, and it must have auth."""
    host, port = settings.flower_host, settings.flower_port
    if host not in LOOPBACK_HOSTS and settings.flower_basic_auth is None:
        raise StackError(
            f"Flower would listen on {host} without authentication: set "
            "DROPSHIP_FLOWER_BASIC_AUTH=user:password (or DROPSHIP_FLOWER_HOST=127.0.0.1)"
        )
    env = {}
    if settings.flower_basic_auth is not None:
        env["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth.get_secret_value()
    args = [
        python,
        "-m",
        "celery",
        "-A",
        "dropship.celery_app",
        "flower",
        f"--address={host}",
        f"--port={port}",
        "--persistent=False",
    ]
    return FlowerCommand("flower", args, f"http://{host}:{port}", env)


def exporter_command(settings: Settings, python: str = sys.executable) -> WorkerCommand:
    """The Prometheus exporter (``dropship exporter``), beside Flower."""
    host, port = settings.metrics_host, settings.metrics_port
    return WorkerCommand(
        "exporter",
        [python, "-m", "dropship.ops.exporter", "--host", host, "--port", str(port)],
        where=f"http://{host}:{port}/metrics",
    )


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    where: str
    log: Path
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 30.0


@dataclass
class Stack:
    settings: Settings
    console: Console
    project_dir: Path = field(default_factory=Path.cwd)
    with_sandbox: bool = True
    children: list[Child] = field(default_factory=list)
    servers: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    database_url: str = ""
    redis_url: str = ""
    sandbox_url: str | None = None
    # DROPSHIP_IMAGES__* for the children, once the image server is up.
    image_env: dict[str, str] = field(default_factory=dict)
    server_pids: dict[str, int] = field(default_factory=dict)
    _children_run_as: RunAs | None = None
    _stopping: bool = False

    # --- paths ----------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir.resolve()

    @property
    def log_dir(self) -> Path:
        path = self.data_dir / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _server_data_dir(self, name: str, run_as: RunAs) -> Path:
        """<data_dir>/<name>, or a private temp folder when the server user cannot reach it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if can_reach(self.data_dir, run_as):
            path = self.data_dir / name
            path.mkdir(exist_ok=True, mode=0o700)
            chown(path, run_as)
            return path
        path = private_tmp_dir(name, self.data_dir, run_as)
        self.notes.append(
            f"{name} data kept in {path}: user {run_as.name!r} cannot reach {self.data_dir}"
        )
        return path

    # --- start ----------------------------------------------------------------------------

    def start(self) -> None:
        running = read_stack_state()
        if running:
            raise StackError(
                f"a dropship stack is already running (pid {running['pid']}); stop it first"
            )
        if port_open(self.settings.flower_host, self.settings.flower_port):
            raise StackError(
                f"port {self.settings.flower_port} on {self.settings.flower_host} is in use; "
                "set DROPSHIP_FLOWER_PORT to a free port"
            )
        self._choose_metrics_port()
        flower_command(self.settings)  # refuses an unauthenticated Flower beyond loopback
        started = time.monotonic()
        self._start_servers()
        self._publish_state()
        self._migrate()
        if self.with_sandbox:
            self._start_sandbox()
            self._publish_state()
            if not self.settings.platforms.accounts:
                self.notes.append(
                    "no platform accounts configured: connectors use the sandbox accounts "
                    "(<platform>_main, coupang_second, naver_second)"
                )
        self._start_image_server()
        self._start_celery()
        self._wait_ready(started)
        self._print_summary(time.monotonic() - started)

    def _choose_metrics_port(self) -> None:
        """The exporter's port: DROPSHIP_METRICS_PORT when set (an error if taken); the default
        9808, or a free port (with a note) when another stack or exporter already has it."""
        s = self.settings
        port = s.metrics_port
        if port_open(s.metrics_host, port):
            if "metrics_port" in s.model_fields_set:
                raise StackError(
                    f"port {port} on {s.metrics_host} is in use; set DROPSHIP_METRICS_PORT to a "
                    "free port"
                )
            port = free_port(s.metrics_host)
            self.notes.append(f"metrics port {s.metrics_port} is in use: exporter on {port}")
        self.settings = s.model_copy(update={"metrics_port": port})

    def _publish_state(self) -> None:
        write_stack_state(
            {
                "database_url": self.database_url,
                "redis_url": self.redis_url,
                "sandbox_url": self.sandbox_url,
                "flower": f"http://{self.settings.flower_host}:{self.settings.flower_port}",
                "metrics": f"http://{self.settings.metrics_host}:{self.settings.metrics_port}",
            }
        )

    def _start_servers(self) -> None:
        configured_db = self.settings.database_url_value()
        configured_redis = self.settings.redis_url_value()
        run_as: RunAs | None = None
        if not (configured_db and configured_redis):
            run_as = service_user()
            if run_as.is_other:
                self.notes.append(f"embedded servers run as unprivileged user {run_as.name!r}")
        if configured_db:
            self.database_url = configured_db
        else:
            assert run_as is not None
            pg = EmbeddedPostgres(
                self._server_data_dir("postgres", run_as),
                run_as,
                reachable_install(run_as, self.notes),
                log_file=self.log_dir / "postgres.log",
            )
            self._prepare_log(pg.log_file, run_as)
            self.console.print("[dim]starting embedded PostgreSQL...[/]")
            pg.start()
            self.servers.append(("postgres", pg.stop))
            if pg.process is not None:
                self.server_pids["postgres"] = pg.process.pid
            self.database_url = pg.url()
        if configured_redis:
            self.redis_url = configured_redis
        else:
            assert run_as is not None
            server = EmbeddedRedis(
                self._server_data_dir("redis", run_as),
                run_as,
                find_redis_server(run_as, self.notes),
                log_file=self.log_dir / "redis.log",
            )
            self._prepare_log(server.log_file, run_as)
            self.console.print("[dim]starting embedded Redis...[/]")
            server.start()
            self.servers.append(("redis", server.stop))
            if server.process is not None:
                self.server_pids["redis"] = server.process.pid
            self.redis_url = server.url(0)

    def _prepare_log(self, path: Path | None, run_as: RunAs) -> None:
        # The log is opened by us (root) before dropping privileges, so ownership is moot; keep
        # it private because server logs can contain query text.
        if path is not None:
            rotate_log(path, self.settings.log_keep)
            path.touch(mode=0o600, exist_ok=True)

    def children_run_as(self) -> RunAs:
        """Who the sandbox, workers, beat and Flower run as (see ``choose_children_run_as``)."""
        if self._children_run_as is None:
            run_as = service_user()
            if run_as.is_other:
                run_dir = self.data_dir / "run"
                run_dir.mkdir(parents=True, exist_ok=True)
                run_as, note = choose_children_run_as(
                    run_as, [*python_paths(), self.project_dir, run_dir]
                )
                if run_as.is_other:
                    chown(run_dir, run_as)  # beat writes its schedule there
                self.notes.append(note)
            self._children_run_as = run_as
        return self._children_run_as

    def _migrate(self) -> None:
        from dropship import migrate

        self.console.print("[dim]applying migrations...[/]")
        migrate.upgrade(self.database_url)
        from sqlalchemy import create_engine, pool

        from dropship.db import normalise_url
        from dropship.maintenance.partitions import ensure_partitions

        cfg = self.settings.partitions
        engine = create_engine(normalise_url(self.database_url), poolclass=pool.NullPool)
        with engine.begin() as conn:
            report = ensure_partitions(
                conn, months_ahead=cfg.months_ahead, lock_timeout_ms=cfg.lock_timeout_ms
            )
        engine.dispose()
        if report.created:
            self.console.print(f"[dim]created partitions {', '.join(report.created)}[/]")

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DROPSHIP_DATABASE_URL"] = self.database_url
        env["DROPSHIP_REDIS_URL"] = self.redis_url
        env["DROPSHIP_DATA_DIR"] = str(self.data_dir)
        if self.sandbox_url and not self.settings.platforms.accounts:
            # No real accounts configured: point every connector at the sandbox, with the
            # sandbox's own (sandbox-only) credentials.
            from dropship.sandbox.credentials import sandbox_account_config

            env["DROPSHIP_PLATFORMS__ACCOUNTS"] = json.dumps(
                sandbox_account_config(self.sandbox_url)
            )
        env.update(self.image_env)  # where workers store images and the URL markets fetch
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _spawn(self, name: str, args: list[str], where: str, **kw: float | int) -> Child:
        log = self.log_dir / f"{name}.log"
        rotate_log(log, self.settings.log_keep)
        log.touch(mode=0o600)
        process = popen_as(
            args, self.children_run_as(), env=self._child_env(), cwd=self.project_dir, log_file=log
        )
        child = Child(name, process, where, log, **kw)  # type: ignore[arg-type]
        self.children.append(child)
        return child

    def _start_sandbox(self) -> None:
        s = self.settings
        child = self._spawn(
            "sandbox",
            [
                sys.executable,
                "-m",
                "dropship.sandbox",
                "--host",
                s.sandbox_host,
                "--port",
                str(s.sandbox_port),
                "--seed",
                str(s.sandbox_seed),
                "--buyer-cancel-share",
                str(s.sandbox_buyer_cancel_share),
            ],
            where="",
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            match = re.search(r"listening on (http://\S+)", child.log.read_text(errors="replace"))
            if match:
                self.sandbox_url = match.group(1)
                child.where = self.sandbox_url
                return
            if child.process.poll() is not None:
                raise StackError(f"sandbox exited early; see {child.log}")
            time.sleep(0.1)
        raise StackError(f"sandbox did not start in 30 s; see {child.log}")

    def _start_image_server(self) -> None:
        """The local image store over HTTP (markets download our vendorPath URLs from it);
        not needed when images go to S3 or another server is configured."""
        images = self.settings.images
        if images.store != "local" or images.public_base_url:
            return
        root = images.local_dir or (self.data_dir / "images")
        root.mkdir(parents=True, exist_ok=True)
        run_as = self.children_run_as()
        if run_as.is_other and images.local_dir is None:
            chown(root, run_as)  # workers write the processed images there
        child = self._spawn(
            "images",
            [
                sys.executable,
                "-m",
                "dropship.images.server",
                "--dir",
                str(root),
                "--host",
                images.server_host,
                "--port",
                str(images.server_port),
            ],
            where="",
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            match = re.search(r"listening on (http://\S+)", child.log.read_text(errors="replace"))
            if match:
                child.where = match.group(1)
                self.image_env = {
                    "DROPSHIP_IMAGES__LOCAL_DIR": str(root.resolve()),
                    "DROPSHIP_IMAGES__PUBLIC_BASE_URL": match.group(1),
                }
                return
            if child.process.poll() is not None:
                raise StackError(f"image server exited early; see {child.log}")
            time.sleep(0.1)
        raise StackError(f"image server did not start in 30 s; see {child.log}")

    def _start_celery(self) -> None:
        s = self.settings
        celery = [sys.executable, "-m", "celery", "-A", "dropship.celery_app"]
        for worker in worker_commands(s):
            self._spawn(worker.name, worker.args, where=worker.where)
        run_dir = self.data_dir / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        self._spawn(
            "beat",
            [
                *celery,
                "beat",
                "--loglevel",
                s.log_level,
                "--schedule",
                str(run_dir / "celerybeat-schedule"),
                "--pidfile",
                "",
            ],
            where="schedule from beat_schedule.py",
        )
        flower = flower_command(s)
        if flower.env:
            # Flower reads FLOWER_BASIC_AUTH from its environment: keeps it off the command line.
            os.environ.update(flower.env)
        self._spawn(flower.name, flower.args, where=flower.where)
        exporter = exporter_command(s)
        self._spawn(exporter.name, exporter.args, where=exporter.where)

    def _wait_ready(self, started: float) -> None:
        from dropship.celery_app import app

        app.conf.broker_url = self.redis_url
        app.conf.result_backend = self.redis_url
        deadline = started + READY_TIMEOUT_SECONDS
        want_workers = {"main", "high"}
        flower_up = exporter_up = False
        seen: set[str] = set()
        while time.monotonic() < deadline:
            self.check_children()
            if seen != want_workers:
                replies = app.control.ping(timeout=1.0) or []
                seen = {name.split("@", 1)[0] for reply in replies for name in reply}
            if not flower_up:
                flower_up = port_open(self.settings.flower_host, self.settings.flower_port)
            if not exporter_up:
                exporter_up = port_open(self.settings.metrics_host, self.settings.metrics_port)
            if want_workers <= seen and flower_up and exporter_up:
                return
            time.sleep(0.5)
        missing = (
            sorted(want_workers - seen)
            + ([] if flower_up else ["flower"])
            + ([] if exporter_up else ["exporter"])
        )
        raise StackError(f"not ready after {READY_TIMEOUT_SECONDS:.0f} s: {', '.join(missing)}")

    def _print_summary(self, elapsed: float) -> None:
        table = Table(title="dropship stack", show_lines=False)
        # Fold rather than truncate: a URL cut to "http://127.0.0.1:4…" is no use to anyone.
        table.add_column("service", no_wrap=True)
        table.add_column("where", overflow="fold")
        table.add_column("pid", justify="right", no_wrap=True)
        table.add_row(
            "dropship up", "supervisor (Ctrl-C or SIGTERM stops everything)", str(os.getpid())
        )
        for row in self.service_rows():
            table.add_row(*row)
        self.console.print(table)
        for note in self.notes:
            self.console.print(f"[yellow]note:[/] {note}")
        self.console.print(f"logs: {self.log_dir} (previous runs kept as <name>.log.1 ...)")
        self.console.print(
            f"[bold green]ready[/] in {elapsed:.1f} s. Enqueue work from `dropship shell`; "
            "Ctrl-C stops everything."
        )

    def service_rows(self) -> list[tuple[str, str, str]]:
        """(service, full URL or role, pid) for every server and child; configured (external)
        servers have no pid of ours."""
        rows = [
            ("postgres", _redact(self.database_url), _pid_or(self.server_pids.get("postgres"))),
            (
                "redis (broker + results)",
                _redact(self.redis_url),
                _pid_or(self.server_pids.get("redis")),
            ),
        ]
        rows += [(child.name, child.where, str(child.process.pid)) for child in self.children]
        return rows

    # --- run / stop -----------------------------------------------------------------------

    def check_children(self) -> None:
        for child in self.children:
            code = child.process.poll()
            if code is not None and not self._stopping:
                tail = child.log.read_text(errors="replace")[-1500:]
                raise StackError(f"{child.name} exited with code {code}; last output:\n{tail}")

    def run_until_signalled(self) -> None:
        stop_requested: list[int] = []

        def _request_stop(signum: int, _frame: object) -> None:
            stop_requested.append(signum)

        signal.signal(signal.SIGINT, _request_stop)
        signal.signal(signal.SIGTERM, _request_stop)
        while not stop_requested:
            self.check_children()
            time.sleep(0.5)
        self.console.print(f"\n[dim]{signal.Signals(stop_requested[0]).name}: stopping...[/]")

    def stop(self) -> None:
        self._stopping = True
        for child in reversed(self.children):
            _stop_process_group(child)
            self.console.print(f"[dim]stopped {child.name}[/]")
        self.children.clear()
        for name, stop in reversed(self.servers):
            try:
                stop()
            except (OSError, EmbeddedServerError) as exc:
                self.console.print(f"[red]could not stop {name}: {exc}[/]")
            self.console.print(f"[dim]stopped {name}[/]")
        self.servers.clear()
        state = read_stack_state()
        if state and state.get("pid") == os.getpid():
            clear_stack_state()


def _stop_process_group(child: Child) -> None:
    proc = child.process
    if proc.poll() is not None:
        return
    try:
        # The whole group: Celery's pool children and Flower's threads go with their parent.
        os.killpg(proc.pid, child.stop_signal)
        proc.wait(child.stop_timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass
    # Pool children that outlived their parent are in the same group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _pid_or(pid: int | None) -> str:
    return str(pid) if pid is not None else "external"


def rotate_log(path: Path, keep: int) -> None:
    """Keep the previous runs' logs: ``name.log`` becomes ``name.log.1``, ``.1`` becomes ``.2``
    and so on; only ``keep`` old files remain (0 keeps none)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    if keep <= 0:
        path.unlink()
        return
    path.with_name(f"{path.name}.{keep}").unlink(missing_ok=True)
    for n in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{n + 1}"))
    path.replace(path.with_name(f"{path.name}.1"))


def python_paths() -> list[Path]:
    """What a child Python process must be able to read: the real interpreter, the standard
    library and the environment's installed packages."""
    paths = [Path(sys.executable).resolve(), Path(sysconfig.get_paths()["stdlib"]).resolve()]
    paths.append(Path(sysconfig.get_paths()["purelib"]).resolve())
    return paths


def choose_children_run_as(service: RunAs, needed: list[Path]) -> tuple[RunAs, str]:
    """The servers' unprivileged user when it can reach every path in ``needed`` (interpreter,
    packages, project, run folder), else ourselves; with the note start-up prints. Nothing is
    chmodded to make it fit: a checkout under a 0700 home keeps Celery running as root."""
    blocked = [p for p in needed if not can_reach(p, service)]
    if not blocked:
        return service, f"workers, beat and Flower run as unprivileged user {service.name!r}"
    return RunAs("self"), (
        f"workers, beat and Flower run as {pwd_name()} (Celery warns about it): user "
        f"{service.name!r} cannot reach {blocked[0]}. Install Python and the project outside "
        "a private home (e.g. under /opt) to run them unprivileged"
    )


def pwd_name() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def _redact(url: str) -> str:
    return re.sub(r"://([^:@/]+):[^@/]+@", r"://\1:***@", url)
