"""Keep secrets out of log output, at every level.

urllib3 logs every request line at DEBUG (``"GET /api?ver=4.1&mode=..&aid=KEY HTTP/1.1" 200``),
so Domeggook's ``aid`` and Zentrade's ``m_skey`` would reach the worker log as soon as someone
turns on ``DROPSHIP_LOG_LEVEL=DEBUG``; tokens, client secrets and ``Authorization`` headers can
show up in exception texts and reprs. Redaction happens in two places:

* a log-record factory (``install``), installed when ``dropship`` is imported, so every record
  any library creates in any of our processes (CLI, worker and its pool children, beat, Flower)
  is cleaned before a handler sees it, whoever configured the handlers;
* a ``logging.Filter`` (``RedactingFilter``) on the handlers we or Celery set up
  (``configure_logging``, ``connect_celery_signals``), for records made before the factory was
  installed or by a factory some other library put in front of ours.
"""

from __future__ import annotations

import logging
import re
import traceback
from typing import Any

REDACTED = "***"

# Names whose value is a secret wherever they appear as ``name=value``, ``name: value`` or
# ``"name": "value"`` (query strings, form bodies, JSON, Python reprs).
SECRET_NAMES = (
    "aid",  # Domeggook API key (query string)
    "m_skey",  # Zentrade (gentrade) key (query string)
    "access_token",
    "refresh_token",
    "token",
    "client_secret_sign",  # Naver token request (form body)
    "client_secret",
    "password",
    "passwd",
    "api_key",
    "secret_key",
    "access-key",  # Coupang's CEA Authorization parts
    "signature",
)

_NAMES = "|".join(re.escape(n) for n in sorted(SECRET_NAMES, key=len, reverse=True))
# Not preceded by a name character, so "nextToken=" or "paid=" are left alone.
_PAIR = re.compile(
    rf"""(?<![A-Za-z0-9_-])(?P<key>["']?(?:{_NAMES})["']?\s*[=:]\s*["']?)(?P<value>[^\s&"',;)}}\]]+)""",
    re.IGNORECASE,
)
# The whole header value: Coupang's is "CEA algorithm=.., access-key=.., signature=..".
_AUTH_HEADER = re.compile(
    r"""(?P<key>\bauthorization["']?\s*[:=]\s*["']?)(?P<value>[^"'\r\n]+)""", re.IGNORECASE
)
_BEARER = re.compile(r"\b(?P<key>bearer\s+)(?P<value>[A-Za-z0-9._~+/=-]+)", re.IGNORECASE)
# user:password@ in any URL (database and broker URLs).
_USERINFO = re.compile(r"(?P<key>://[^:@/\s]*:)(?P<value>[^@/\s]+)(?=@)")

_PATTERNS = (_AUTH_HEADER, _BEARER, _PAIR, _USERINFO)


def _mask(match: re.Match[str]) -> str:
    return match.group("key") + REDACTED


def redact(text: str) -> str:
    """``text`` with every secret value we recognise replaced by ``***``."""
    for pattern in _PATTERNS:
        text = pattern.sub(_mask, text)
    return text


def redact_record(record: logging.LogRecord) -> None:
    """Clean ``record`` in place: message (formatted once, args dropped when something was
    redacted), exception text and stack text."""
    if getattr(record, "_dropship_redacted", False):
        return
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: let the handler report it as usual
        return
    clean = redact(message)
    if clean != message:
        record.msg = clean
        record.args = None
    if record.exc_info and not record.exc_text:
        # Formatter.format uses exc_text when set, so the traceback is rendered (and cleaned)
        # here, once, instead of by each handler from the raw exception.
        record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip())
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    record._dropship_redacted = True


class RedactingFilter(logging.Filter):
    """Handler filter: redacts and never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


_FILTER = RedactingFilter()
_installed = False


def install() -> None:
    """Put the redacting record factory in front of the current one (idempotent)."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        redact_record(record)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True


def add_filter(logger: logging.Logger) -> None:
    """Add the redacting filter to each of ``logger``'s handlers (once)."""
    for handler in logger.handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)


def configure_logging(level: str) -> None:
    """Logging for the ``dropship`` command: stderr at ``level`` (DROPSHIP_LOG_LEVEL), redacted."""
    install()
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    # Other libraries' INFO chatter (alembic's plugin set-up, say) stays out of the command's
    # output unless DEBUG is asked for; dropship's own loggers follow the level.
    root.setLevel(level if level == "DEBUG" else max(logging.WARNING, logging.getLevelName(level)))
    logging.getLogger("dropship").setLevel(level)
    add_filter(root)


def connect_celery_signals() -> None:
    """Redact in Celery's processes too: Celery sets its handlers up after importing the app,
    so the filter is added when its logging signals fire (worker, beat, Flower)."""
    from celery.signals import after_setup_logger, after_setup_task_logger

    def _on_setup(logger: logging.Logger | None = None, **_: Any) -> None:
        install()
        add_filter(logging.getLogger())
        if logger is not None:
            add_filter(logger)

    after_setup_logger.connect(_on_setup, weak=False)
    after_setup_task_logger.connect(_on_setup, weak=False)
