"""All configuration, read once from ``DROPSHIP_*`` environment variables and an optional ``.env``.

Nested groups use ``__`` as the delimiter, e.g. ``DROPSHIP_PARTITIONS__MONTHS_AHEAD=6``.
An invalid value stops start-up with a message that names the variable (see ``load_settings``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ByteSize,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from dropship.images.config import ImageSettings
from dropship.platforms.config import PlatformSettings

ENV_PREFIX = "DROPSHIP_"
NESTED_DELIMITER = "__"


class SettingsError(RuntimeError):
    """Configuration is invalid; the message names the offending environment variable(s)."""


class PartitionSettings(BaseModel):
    months_ahead: int = Field(3, ge=1, le=36, description="future monthly partitions kept ready")
    retention_months: int = Field(
        0, ge=0, le=600, description="drop/detach order partitions older than this; 0 keeps all"
    )
    retention_action: Literal["detach", "drop"] = "detach"
    lock_timeout_ms: int = Field(2000, ge=50, le=60000)


class CelerySettings(BaseModel):
    # Soft < hard < broker visibility timeout: a task killed by its hard limit is redelivered
    # only after the visibility timeout, so a running task is never handed to a second worker.
    soft_time_limit: int = Field(300, ge=1)
    hard_time_limit: int = Field(360, ge=2)
    visibility_timeout: int = Field(3600, ge=10)
    worker_max_memory_per_child_kb: int = Field(400_000, ge=10_000)
    autoscale_max: int = Field(4, ge=1, le=64)
    autoscale_min: int = Field(1, ge=1, le=64)
    memory_high_watermark_pct: float = Field(
        30.0, gt=0, lt=100, description="grow only while available memory is above this %"
    )
    memory_low_watermark_pct: float = Field(
        15.0, gt=0, lt=100, description="shrink while available memory is below this %"
    )
    # The autoscaler's check interval. Celery ticks every AUTOSCALE_KEEPALIVE (30 s), which is
    # also how long an idle pool waits before shrinking; memory pressure must be seen sooner.
    autoscale_tick_seconds: float = Field(
        2.0, ge=0.1, le=60, description="how often the autoscaler re-checks memory and work"
    )
    # Tests only: a file holding the available-memory percentage, read instead of psutil. Unset
    # by default, so production always measures; a missing or unreadable file falls back to
    # psutil with a warning (see dropship/autoscale.py).
    memory_reading_file: Path | None = Field(
        None, description="TESTS ONLY: read available memory % from this file, not psutil"
    )

    @model_validator(mode="after")
    def _limits_ordered(self) -> CelerySettings:
        if not self.soft_time_limit < self.hard_time_limit < self.visibility_timeout:
            raise ValueError(
                "need soft_time_limit < hard_time_limit < visibility_timeout, got "
                f"{self.soft_time_limit} / {self.hard_time_limit} / {self.visibility_timeout}"
            )
        if self.autoscale_min > self.autoscale_max:
            raise ValueError("autoscale_min must not exceed autoscale_max")
        if self.memory_low_watermark_pct >= self.memory_high_watermark_pct:
            raise ValueError("memory_low_watermark_pct must be below memory_high_watermark_pct")
        return self


class CollectSettings(BaseModel):
    """The collect flow (docs/ARCHITECTURE.md "Collect"); memory is bounded by these sizes."""

    copy_chunk_rows: int = Field(
        2000, ge=1, le=100_000, description="rows buffered per COPY into staging"
    )
    reject_raw_max_bytes: int = Field(
        8192, ge=256, le=1_000_000, description="raw payload kept per reject, JSON bytes"
    )
    slice_time_limit_s: int = Field(
        1800, ge=10, description="soft time limit of one slice task (a whole feed can be one)"
    )
    stall_timeout_s: int = Field(
        2400, ge=10, description="a running run with no slice finished for this long is stalled"
    )
    max_resubmits: int = Field(
        2, ge=0, le=20, description="times the sweep re-publishes a stalled run's slices"
    )
    incremental_overlap_s: int = Field(
        600, ge=0, description="incremental runs re-read this much before the watermark"
    )
    skip_unchanged_parse: bool = Field(
        True,
        description="records whose source bytes a stored product was built from are not "
        "parsed again (connectors with source fingerprints: gentrade); false parses all",
    )


class AlertSettings(BaseModel):
    """Alert rules evaluated by the beat task ``tasks.ops.evaluate_alerts`` (docs/OPERATIONS.md).
    Defaults for the system rules come from the performance notes."""

    cooldown_s: int = Field(300, ge=1, description="one alert per rule (and subject) per period")
    cpu_pct: float = Field(80.0, gt=0, le=100, description="host CPU use above this %")
    memory_pct: float = Field(
        85.0, gt=0, le=100, description="memory used above this % (of the budget when one is set)"
    )
    queue_backlog: int = Field(1000, ge=1, description="messages waiting in any one queue")
    error_rate_pct: float = Field(0.1, ge=0, le=100, description="failed share of finished tasks")
    error_rate_window_minutes: int = Field(5, ge=1, le=60)
    error_rate_min_tasks: int = Field(
        10, ge=1, description="finished tasks in the window before the error rate counts"
    )
    order_forward_minutes: int = Field(30, ge=1, description="an order not forwarded after this")
    order_sweep_minutes: int = Field(15, ge=1, description="no successful order sweep for this")
    order_sweep_task: str = Field(
        "tasks.orders.sweep_orders", description="the order sweep's task name"
    )
    soldout_live_minutes: int = Field(
        60, ge=1, description="a sold-out product still live on a market after this"
    )
    webhook_url: SecretStr | None = Field(
        None, description="POST each alert as JSON here (optional; the log always gets it)"
    )
    webhook_timeout_s: float = Field(5.0, gt=0, le=60)


class FulfilmentSettings(BaseModel):
    """Purchase-order sheets (which suppliers get them: ``orders.sheet_suppliers``)."""

    sheet_format: Literal["xlsx", "csv"] = "xlsx"
    sheet_dir: Path | None = Field(
        None, description="where sheets are written; default <data_dir>/purchase-order-sheets"
    )
    sheet_max_rows: int = Field(500, ge=1, le=10_000, description="purchase orders per sheet")


class OrderSettings(BaseModel):
    """The order flow (docs/ARCHITECTURE.md "Orders"); env ``DROPSHIP_ORDERS__<FIELD>``."""

    sweep_overlap_s: int = Field(
        600, ge=0, description="each order sweep re-reads this much before the watermark"
    )
    initial_lookback_s: int = Field(
        3 * 86_400, ge=60, description="first sweep of an account reads this far back"
    )
    forward_batch_size: int = Field(20, ge=1, le=500, description="order items per forward task")
    stale_after_s: int = Field(
        600, ge=10, description="a claimed order untouched this long is re-published by the sweep"
    )
    abandoned_after_s: int = Field(
        120,
        ge=10,
        description="a purchase left 'placing' by a dead worker (no error recorded, its forward "
        "lock free) is re-published after this long; keep it above the longest supplier call",
    )
    price_check: bool = Field(
        True, description="read the supplier's current price and stock before buying"
    )
    price_tolerance_pct: float = Field(
        5.0, ge=0, le=100, description="refuse to buy when the supplier's cost rose more than this"
    )
    sheet_suppliers: tuple[str, ...] = Field(
        ("gentrade", "domeggook"),
        description="suppliers whose purchase orders go out on purchase-order sheets",
    )
    pii_retention_days: int = Field(
        90, ge=1, description="receiver name/phone/address are erased after this many days"
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    # None means "start the embedded server" (dropship up / the test suite).
    database_url: SecretStr | None = None
    redis_url: SecretStr | None = None
    result_backend_url: SecretStr | None = None

    data_dir: Path = Path(".dropship")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_keep: int = Field(
        5, ge=0, le=100, description="previous runs' logs `dropship up` keeps per process"
    )

    flower_host: str = "127.0.0.1"
    flower_port: int = Field(5555, ge=1, le=65535)
    flower_basic_auth: SecretStr | None = Field(
        None, description="user:password; required by deployments, optional locally"
    )

    # The exporter (dropship/ops/exporter.py) serving Prometheus' /metrics, beside Flower.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9808, ge=1, le=65535)
    # One figure sizing the worker tree (dropship/ops/memory.py): "1GB", "512MiB"...
    memory_budget: ByteSize | None = Field(
        None, description="memory the whole worker tree must stay under; sizes pools and chunks"
    )
    # Per-task row batches (order sweep, listing evaluation, reconcile) are their defaults times
    # this; the memory budget sets it (dropship.ops.memory.batch_rows).
    row_batch_scale: float = Field(
        1.0, gt=0, le=1, description="scales the rows a task holds per batch (the budget sets it)"
    )

    sandbox_host: str = "127.0.0.1"
    sandbox_port: int = Field(0, ge=0, le=65535, description="0 picks a free port")
    sandbox_seed: int = 42
    # `dropship up`'s sandbox: a share of the orders that arrive by themselves are cancelled by
    # their buyer, so the claims sweep has work as in a real shop.
    sandbox_buyer_cancel_share: float = Field(0.05, ge=0.0, le=1.0)

    partitions: PartitionSettings = PartitionSettings()
    celery: CelerySettings = CelerySettings()
    collect: CollectSettings = CollectSettings()
    alerts: AlertSettings = AlertSettings()
    orders: OrderSettings = OrderSettings()
    fulfilment: FulfilmentSettings = FulfilmentSettings()
    # Accounts, base URLs, credentials, rate limits: see docs/PLATFORMS.md.
    platforms: PlatformSettings = PlatformSettings()
    # Image download limits, processing and the store: see docs/ARCHITECTURE.md "Images".
    images: ImageSettings = ImageSettings()

    @field_validator("database_url")
    @classmethod
    def _database_url_usable(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_database_url(value.get_secret_value())
        return value

    @field_validator("redis_url", "result_backend_url")
    @classmethod
    def _redis_url_usable(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_redis_url(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _slice_limit_below_visibility(self) -> Settings:
        # A slice task running past the visibility timeout would be handed to a second worker.
        hard = self.collect.slice_time_limit_s + 60
        if hard >= self.celery.visibility_timeout:
            raise ValueError(
                f"collect.slice_time_limit_s + 60 ({hard}) must stay below "
                f"celery.visibility_timeout ({self.celery.visibility_timeout})"
            )
        return self

    def database_url_value(self) -> str | None:
        return self.database_url.get_secret_value() if self.database_url else None

    def redis_url_value(self) -> str | None:
        return self.redis_url.get_secret_value() if self.redis_url else None

    def result_backend_value(self) -> str | None:
        if self.result_backend_url:
            return self.result_backend_url.get_secret_value()
        return self.redis_url_value()


# psycopg 3 is the only PostgreSQL driver installed; ``db.normalise_url`` pins it for the plain
# forms.
DATABASE_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
REDIS_SCHEMES = ("redis", "rediss")


def check_database_url(url: str) -> None:
    """Raise ``ValueError`` when ``url`` is not a PostgreSQL URL we can use. The message never
    repeats the URL: it may carry a password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not url.strip():
        raise ValueError("empty; unset it to use the embedded PostgreSQL")
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ValueError(
            "not a database URL; expected postgresql://user:password@host:5432/dbname "
            "(percent-encode @ : / in the password)"
        ) from None
    if parsed.drivername not in DATABASE_SCHEMES:
        backend = parsed.drivername.split("+", 1)[0]
        if backend in ("postgresql", "postgres"):
            driver = parsed.drivername.split("+", 1)[1]
            reason = f"driver {driver!r} is not installed (psycopg 3 is)"
        else:
            reason = f"scheme {parsed.drivername!r} is not PostgreSQL"
        raise ValueError(f"{reason}; expected postgresql://user:password@host:5432/dbname")


def check_redis_url(url: str) -> None:
    """Raise ``ValueError`` when ``url`` is not a Redis URL (redis:// or rediss://)."""
    from urllib.parse import urlsplit

    if not url.strip():
        raise ValueError("empty; unset it to use the embedded Redis")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a non-numeric or out-of-range port)
    except ValueError:
        raise ValueError("not a URL; expected redis://[:password@]host:6379/0") from None
    if parts.scheme not in REDIS_SCHEMES:
        shown = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise ValueError(f"{shown} is not Redis; expected redis://[:password@]host:6379/0")
    if not parts.hostname:
        raise ValueError("no host; expected redis://[:password@]host:6379/0")
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise ValueError(f"database {db!r} is not a number; expected redis://host:6379/0")


def _env_name(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if not isinstance(p, int)]
    return ENV_PREFIX + NESTED_DELIMITER.join(parts).upper()


def load_settings() -> Settings:
    """Read settings, turning pydantic's error into one naming each bad variable."""
    try:
        settings = Settings()
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = _env_name(err["loc"]) if err["loc"] else ENV_PREFIX + "*"
            lines.append(f"{name}: {err['msg']}")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None
    # DROPSHIP_MEMORY_BUDGET sizes pools, recycle limit, watermarks and chunks (dropship/ops).
    from dropship.ops.memory import MemoryBudgetError, apply_memory_budget

    try:
        return apply_memory_budget(settings)
    except (MemoryBudgetError, ValidationError) as exc:
        raise SettingsError(f"invalid configuration:\n  DROPSHIP_MEMORY_BUDGET: {exc}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
