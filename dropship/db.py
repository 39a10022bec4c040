"""Database engine and sessions (SQLAlchemy 2 + psycopg 3).

One engine per process, created lazily from ``DROPSHIP_DATABASE_URL`` (or the URL the embedded
stack published). Celery's prefork pool forks after import, so the engine is disposed in each
child (see ``dropship.celery_app``) rather than sharing sockets across processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from dropship.errors import ConfigurationError

_engine: Engine | None = None
_session_factory: sessionmaker[Session] | None = None


def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` URLs and pin the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def database_url() -> str:
    from dropship.runtime import resolved_database_url

    url = resolved_database_url()
    if not url:
        raise ConfigurationError(
            "no database configured: set DROPSHIP_DATABASE_URL or start the stack with "
            "`dropship up`, which runs an embedded PostgreSQL"
        )
    return normalise_url(url)


def get_engine() -> Engine:
    global _engine, _session_factory
    if _engine is None:
        _engine = create_engine(
            database_url(),
            pool_pre_ping=True,
            pool_size=5,
            max_overflow=5,
            connect_args={"application_name": "dropship"},
        )
        _session_factory = sessionmaker(bind=_engine, expire_on_commit=False)
    return _engine


def reset_engine() -> None:
    """Forget the engine (after fork, or when tests switch databases)."""
    global _engine, _session_factory
    if _engine is not None:
        _engine.dispose(close=False)
    _engine = None
    _session_factory = None


@contextmanager
def session_scope() -> Iterator[Session]:
    """A unit of work: commit on success, roll back on error, close always."""
    get_engine()
    assert _session_factory is not None
    session = _session_factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
