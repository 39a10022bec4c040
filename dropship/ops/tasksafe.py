"""What Flower (and the result backend) may show of a task: ids and counts, never secrets or
customer data.

Flower renders a task's arguments from the message's ``argsrepr``/``kwargsrepr`` headers (and
the ``task-sent`` event), and its result from the ``task-succeeded`` event and the result backend.
Tasks are meant to take ids and JSON primitives and return counts; this module makes that hold
even when a caller passes, or a task returns, something else:

* :func:`safe_repr` renders arguments with numbers, booleans, ``None`` and identifier-like ASCII
  strings (account names, suppliers, modes, slice keys) as they are; any other string becomes
  ``<text len=N>``, a phone-number-shaped one ``<phone>``, a configured credential ``***``, and a
  value under a personal-data key (``receiver_name``, ``phone``...) ``***``. Long lists are
  summarised by their length. :meth:`DropshipTask.apply_async` passes it as ``argsrepr`` /
  ``kwargsrepr``; a ``before_task_publish`` handler does the same for messages published another
  way (``app.send_task``).
* :func:`safe_result` applies the same rules to a task's return value, keeping its structure,
  before the worker stores or reports it (``DropshipTask.__call__``).
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

MASK = "***"
# ASCII identifiers, ISO timestamps, keys like "ownerclan:page:3" or "coupang_main".
_IDENT = re.compile(r"^[A-Za-z0-9_.:+@/=#\-]{0,100}$")
# Korean (and most other) phone numbers as written: 010-1234-5678, 0502-1234-5678, +82-10-...
_PHONE = re.compile(r"(?:\+?\d{1,3}[- .])?\(?0?\d{1,4}\)?[- .]\d{3,4}[- .]\d{4}")
# Keys whose value is customer data or a secret wherever they appear in a mapping.
PII_KEYS = frozenset(
    {
        "receiver",
        "receiver_name",
        "receiver_phone",
        "receiver_address",
        "name_of_receiver",
        "orderer",
        "orderer_name",
        "orderer_phone",
        "phone",
        "tel",
        "tel1",
        "tel2",
        "mobile",
        "address",
        "addr1",
        "addr2",
        "base_address",
        "detailed_address",
        "email",
        "password",
        "secret",
        "secret_key",
        "access_key",
        "client_secret",
        "api_key",
        "token",
        "access_token",
        "refresh_token",
        "credentials",
        "authorization",
    }
)
MAX_LIST_SHOWN = 20
# Values shown as they are (kombu's JSON carries dates, decimals and UUIDs as typed values).
_PLAIN = (bool, int, float, date, datetime, Decimal, uuid.UUID)
MIN_SECRET_LEN = 6
# Header carrying the publish time (epoch s): the worker measures queue wait from it.
PUBLISHED_AT_HEADER = "dropship_published_at"


@lru_cache(maxsize=1)
def known_secrets() -> frozenset[str]:
    """Every credential value and URL password this process is configured with."""
    from urllib.parse import urlsplit

    from dropship.settings import get_settings

    try:
        settings = get_settings()
    except Exception:  # settings are validated elsewhere; masking must not fail here
        return frozenset()
    values: set[str] = set()
    for account in settings.platforms.accounts.values():
        for secret in account.credentials.values():
            values.add(secret.get_secret_value())
    for url in (settings.database_url_value(), settings.redis_url_value()):
        if url:
            password = urlsplit(url).password
            if password:
                values.add(password)
    if settings.flower_basic_auth:
        values.update(settings.flower_basic_auth.get_secret_value().split(":", 1)[1:])
    return frozenset(v for v in values if len(v) >= MIN_SECRET_LEN)


def safe_str(value: str) -> str:
    """``value`` if it is an identifier-like string that holds no secret, else a placeholder."""
    if any(secret in value for secret in known_secrets()):
        return MASK
    if _PHONE.search(value):
        return "<phone>"
    if _IDENT.match(value):
        return value
    return f"<text len={len(value)}>"


def safe_value(value: Any, depth: int = 0) -> Any:
    """``value`` (JSON-like) with every unsafe string replaced, structure kept."""
    if value is None or isinstance(value, _PLAIN):
        return value
    if isinstance(value, str):
        return safe_str(value)
    if depth > 6:
        return "<nested>"
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            shown_key = safe_str(key) if isinstance(key, str) else key
            if isinstance(key, str) and key.lower() in PII_KEYS:
                out[shown_key] = MASK
            else:
                out[shown_key] = safe_value(item, depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [safe_value(item, depth + 1) for item in value]
    return f"<{type(value).__name__}>"


def _summary(value: Any, depth: int = 0) -> Any:
    """Like :func:`safe_value`, but long lists are shown by their length and first items."""
    if depth > 6:
        return "<nested>"
    if isinstance(value, list | tuple) and len(value) > MAX_LIST_SHOWN:
        head = [_summary(v, depth + 1) for v in value[:3]]
        return f"[{len(value)} items: {', '.join(map(repr, head))}, ...]"
    if isinstance(value, list | tuple):
        return [_summary(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {
            (safe_str(k) if isinstance(k, str) else k): (
                MASK if isinstance(k, str) and k.lower() in PII_KEYS else _summary(v, depth + 1)
            )
            for k, v in value.items()
        }
    return safe_value(value, depth)


def safe_repr(value: Any) -> str:
    """The repr Flower shows for a task's args or kwargs."""
    shown = _summary(list(value) if isinstance(value, tuple) else value)
    return repr(tuple(shown) if isinstance(value, tuple) else shown)[:1024]


def safe_result(value: Any) -> Any:
    """A task's return value as it may be stored and shown (see module doc)."""
    return safe_value(value)


def connect_publish_signal() -> None:
    """Rewrite ``argsrepr``/``kwargsrepr`` of every published task message (also those sent by
    ``app.send_task``) and stamp the publish time for the queue-wait metric."""
    from celery.signals import before_task_publish

    def _on_publish(body: Any = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
        if headers is None:
            return
        try:
            headers[PUBLISHED_AT_HEADER] = time.time()
            # Protocol 2 body: (args, kwargs, embed).
            if isinstance(body, tuple | list) and len(body) >= 2:
                headers["argsrepr"] = safe_repr(tuple(body[0] or ()))
                headers["kwargsrepr"] = safe_repr(dict(body[1] or {}))
        except Exception:  # never block a publish over its display text
            headers["argsrepr"] = headers["kwargsrepr"] = "<unavailable>"

    before_task_publish.connect(_on_publish, weak=False)
