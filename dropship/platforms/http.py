"""HTTP for platform connectors: pooled sessions, timeouts, the shared rate limiter, short retries.

What is retried here (inside one call, a few seconds at most, with ``tenacity``):

* connection failures and connect timeouts — always (the request never reached the platform);
* read timeouts and 5xx — for idempotent requests only (GET/HEAD/PUT/DELETE/OPTIONS by default;
  a connector passes ``idempotent=True`` for a POST that the platform de-duplicates, e.g. by our
  order key). A non-idempotent POST that timed out may have been executed, so it is *not* repeated
  blindly: it raises :class:`TransientError` and the task's retry looks the result up first;
* 429 — always (the platform refused it, so nothing happened), after feeding ``Retry-After`` and the
  rate-limit headers to the limiter. If the platform asks for a longer wait than ``max_wait_s`` the
  call raises :class:`RateLimitedError` at once so the Celery task re-schedules itself.

* a response body cut short (``ChunkedEncodingError``/``ContentDecodingError``) — like a read
  timeout: repeated for idempotent requests, :class:`TransientError` at once otherwise. On a
  ``stream=True`` response the body is read later by the connector; reading it then raises
  :class:`TransientHttpError` (a ``TransientError``) when it is cut short, so the task retries.
* the limiter's Redis unreachable before a call: :class:`TransientError` (the call is not made
  unlimited); after a call, the response is kept and only the adaptation is skipped.

When the retry budget (``max_attempts`` and ``max_retry_time_s``) is spent the call raises
:class:`TransientError` naming platform, method, path and the last failure; Celery's own retries
(exponential backoff with jitter) take over from there. Other 4xx raise :class:`HttpStatusError`
(a :class:`PermanentError`; :class:`AuthRejectedError` for 401/403) at once.

Messages name the platform, the method, the path *without its query string* (query strings carry
API keys on some platforms) and the status; never headers or bodies.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.adapters
import tenacity
from requests.exceptions import ChunkedEncodingError, ContentDecodingError

from dropship.errors import PermanentError, RateLimitedError, TransientError
from dropship.platforms.ratelimit import LimiterUnavailableError, RateLimiter, parse_retry_after

log = logging.getLogger(__name__)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
DEFAULT_TIMEOUT: tuple[float, float] = (3.05, 30.0)  # (connect, read) seconds
USER_AGENT = "dropship/0.1 (+https://github.com/dropship)"

AuthHook = Callable[[requests.PreparedRequest], requests.PreparedRequest]


class HttpStatusError(PermanentError):
    """The platform answered with a non-retryable status (4xx other than 429)."""

    def __init__(
        self, platform: str, method: str, path: str, status: int, code: str | None = None
    ) -> None:
        detail = f" ({code})" if code else ""
        super().__init__(f"{platform} {method} {path} -> HTTP {status}{detail}")
        self.platform = platform
        self.method = method
        self.path = path
        self.status = status
        self.code = code


class AuthRejectedError(HttpStatusError):
    """401/403: credentials or token rejected. Connectors with tokens refresh once on this."""


class TransientHttpError(TransientError):
    """Retry budget spent on connection failures, timeouts or 5xx."""

    def __init__(
        self,
        platform: str,
        method: str,
        path: str,
        reason: str,
        attempts: int,
        elapsed_s: float,
        status: int | None = None,
    ) -> None:
        super().__init__(
            f"{platform} {method} {path}: {reason} after {attempts} attempt(s) in {elapsed_s:.1f}s"
        )
        self.platform = platform
        self.method = method
        self.path = path
        self.status = status
        self.attempts = attempts


class _RetryableFailure(Exception):
    """Internal: one attempt failed in a way worth another attempt."""

    def __init__(self, reason: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


# One pooled Session per (platform, process). Keyed by pid because Celery's prefork pool
# forks workers: a session (its sockets) must never be shared across a fork.
_sessions: dict[tuple[str, int], requests.Session] = {}
_sessions_lock = threading.Lock()


def session_for(platform: str, pool_size: int = 10) -> requests.Session:
    key = (platform, os.getpid())
    with _sessions_lock:
        session = _sessions.get(key)
        if session is None:
            session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(
                pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0
            )
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers["User-Agent"] = USER_AGENT
            _sessions[key] = session
        return session


_SAFE_CODE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def _error_code(response: requests.Response) -> str | None:
    """A short platform error code from a JSON error body (``code``/``errorCode``), if it looks
    like a code; free text is never copied (it may echo input or personal data)."""
    try:
        body = response.json()
    except ValueError:
        return None
    candidates: list[Any] = []
    if isinstance(body, dict):
        candidates += [body.get("code"), body.get("errorCode")]
        errors = body.get("errors")
        if isinstance(errors, dict):
            candidates.append(errors.get("code"))
    for value in candidates:
        if isinstance(value, str | int) and _SAFE_CODE.match(str(value)):
            return str(value)
    return None


class PlatformHttp:
    """HTTP client for one platform account: ``base_url`` + a path, with its rate limiter."""

    def __init__(
        self,
        platform: str,
        account: str,
        base_url: str,
        limiter: RateLimiter | None = None,
        *,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        max_attempts: int = 4,
        max_retry_time_s: float = 20.0,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 3.0,
        max_wait_s: float = 1.0,
        default_headers: Mapping[str, str] | None = None,
        session: requests.Session | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise PermanentError(f"{platform}/{account}: base_url must be an http(s) URL")
        if max_attempts < 1:
            raise PermanentError(f"{platform}/{account}: max_attempts must be at least 1")
        self.platform = platform
        self.account = account
        self.base_url = base_url.rstrip("/")
        self.limiter = limiter
        self.limiter_key = f"{platform}:{account}"
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_retry_time_s = max_retry_time_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.max_wait_s = max_wait_s
        self.default_headers = dict(default_headers or {})
        self._session = session

    @property
    def session(self) -> requests.Session:
        return self._session or session_for(self.platform)

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        if not path.startswith("/"):
            path = "/" + path
        return self.base_url + path

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, **kwargs)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        auth_hook: AuthHook | None = None,
        stream: bool = False,
        timeout: tuple[float, float] | None = None,
        idempotent: bool | None = None,
        ok_statuses: Collection[int] = (),
    ) -> requests.Response:
        """Send one logical call (with short retries); return the 2xx response, or a response
        whose status is in ``ok_statuses`` (e.g. 404 for "not found" lookups).

        ``auth_hook`` is called on every attempt's prepared request (sign or add the token
        there: a signature with a timestamp must be fresh on each retry).
        """
        method = method.upper()
        url = self.url(path)
        safe_path = urlsplit(url).path  # never the query: it may carry API keys
        retry_unsafe = idempotent if idempotent is not None else method in IDEMPOTENT_METHODS
        merged_headers = {**self.default_headers, **(headers or {})}
        started = time.monotonic()
        attempts = 0

        def attempt() -> requests.Response:
            nonlocal attempts
            attempts += 1
            if self.limiter is not None:
                # Raises RateLimitedError (not retried here) when the wait is too long.
                self.limiter.acquire(self.limiter_key, self.max_wait_s)
            # Failures are raised after the try statement, not inside its except clauses, so
            # no requests/urllib3 exception (its text holds the URL with the query string,
            # i.e. API keys on some platforms) is chained to what the caller sees.
            failure: Exception
            try:
                response = self.session.request(
                    method,
                    url,
                    params=params,
                    json=json,
                    data=data,
                    headers=merged_headers,
                    auth=auth_hook,
                    stream=stream,
                    timeout=timeout or self.timeout,
                    allow_redirects=False,
                )
            except requests.ConnectTimeout:
                failure = _RetryableFailure("connect timeout")
            except requests.ReadTimeout:
                failure = unsafe_failure(
                    "read timeout",
                    "read timeout on a non-idempotent request (not repeated; it may have been "
                    "executed)",
                )
            except (ChunkedEncodingError, ContentDecodingError) as exc:
                # The platform answered but the body was cut short (or its gzip is broken):
                # the request was executed, so only a repeatable one is repeated here.
                reason = f"response body cut short ({type(exc).__name__})"
                failure = unsafe_failure(
                    reason, f"{reason} on a non-idempotent request (not repeated; it was executed)"
                )
            except requests.ConnectionError as exc:
                failure = (
                    _RetryableFailure("connection error")
                    if _never_sent(exc)
                    else unsafe_failure(
                        "connection error",
                        "connection lost on a non-idempotent request (not repeated)",
                    )
                )
            else:
                if stream:
                    _guard_body(response, self.platform, method, safe_path)
                return self._check(response, method, safe_path, retry_unsafe, ok_statuses)
            raise failure

        def unsafe_failure(reason: str, not_repeated: str) -> Exception:
            """Retry here only a request that may be repeated; otherwise fail to the task."""
            if retry_unsafe:
                return _RetryableFailure(reason)
            return TransientHttpError(
                self.platform, method, safe_path, not_repeated, attempts, time.monotonic() - started
            )

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_RetryableFailure),
            stop=tenacity.stop_after_attempt(self.max_attempts)
            | tenacity.stop_after_delay(self.max_retry_time_s),
            wait=self._wait,
            before_sleep=lambda rs: self._log_retry(rs, method, safe_path),
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _RetryableFailure as exc:
            last = exc
        raise TransientHttpError(  # outside the except clause: nothing chained
            self.platform,
            method,
            safe_path,
            last.reason,
            attempts,
            time.monotonic() - started,
            last.status,
        )

    def _check(
        self,
        response: requests.Response,
        method: str,
        safe_path: str,
        retry_unsafe: bool,
        ok_statuses: Collection[int],
    ) -> requests.Response:
        status = response.status_code
        if self.limiter is not None:
            try:
                self.limiter.observe(self.limiter_key, status, response.headers)
            except LimiterUnavailableError as exc:
                # The call was made and answered: losing its response (a POST's!) because the
                # adaptation could not be stored would be worse than missing one adaptation.
                log.warning("%s %s %s: %s; response kept", self.platform, method, safe_path, exc)
        if 200 <= status < 300 or status in ok_statuses:
            return response
        try:
            code = _error_code(response)  # error bodies are small, even on a streamed request
        except TransientError:
            code = None  # an error body cut short: the status alone decides
        response.close()  # release the pooled connection before retrying or raising
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if retry_after is not None and retry_after > self.max_wait_s:
                raise RateLimitedError(
                    f"{self.platform} {method} {safe_path} -> HTTP 429; retry after "
                    f"{retry_after:.1f}s",
                    retry_after=retry_after,
                )
            raise _RetryableFailure("HTTP 429", status, retry_after)
        if status >= 500:
            if retry_unsafe:
                raise _RetryableFailure(f"HTTP {status}", status)
            raise TransientHttpError(
                self.platform,
                method,
                safe_path,
                f"HTTP {status} on a non-idempotent request",
                1,
                0.0,
                status,
            )
        if status in (401, 403):
            raise AuthRejectedError(self.platform, method, safe_path, status, code)
        raise HttpStatusError(self.platform, method, safe_path, status, code)

    def _wait(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, _RetryableFailure) and exc.retry_after is not None:
            # Retry-After within max_wait_s; with a limiter the next acquire() also waits.
            return 0.0 if self.limiter is not None else exc.retry_after
        # Exponential backoff with "full" jitter on top, capped: 0.2, 0.4, 0.8 ... + U(0, 0.2).
        attempt = retry_state.attempt_number
        backoff = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (attempt - 1))
        return backoff + random.uniform(0, self.backoff_initial_s)

    def _log_retry(self, retry_state: tenacity.RetryCallState, method: str, safe_path: str) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        log.warning(
            "%s %s %s: %s; retry %d/%d in %.2fs",
            self.platform,
            method,
            safe_path,
            exc,
            retry_state.attempt_number,
            self.max_attempts - 1,
            retry_state.next_action.sleep if retry_state.next_action else 0.0,
        )


def _guard_body(response: requests.Response, platform: str, method: str, safe_path: str) -> None:
    """Make reading a streamed body raise :class:`TransientHttpError` when it is cut short.

    ``iter_content`` is what ``content``, ``text``, ``json()`` and ``iter_lines`` read through,
    so every way a connector consumes the body is covered. (A cut body raises
    ``ChunkedEncodingError``/``ContentDecodingError``, which are not ``ConnectionError``s.)
    """
    original = response.iter_content

    def iter_content(chunk_size: int | None = 1, decode_unicode: bool = False) -> Iterator[Any]:
        try:
            yield from original(chunk_size=chunk_size, decode_unicode=decode_unicode)
            return
        except (
            ChunkedEncodingError,
            ContentDecodingError,
            requests.ConnectionError,
            requests.Timeout,
        ) as exc:
            failure = TransientHttpError(
                platform,
                method,
                safe_path,
                f"response body cut short ({type(exc).__name__}) while streaming",
                1,
                0.0,
                response.status_code,
            )
        raise failure  # outside the except clause: the driver error (it names the URL) is dropped

    setattr(response, "iter_content", iter_content)  # noqa: B010 (an instance override)


def _never_sent(exc: requests.ConnectionError) -> bool:
    """True when the connection could not even be established (safe to repeat any request).

    Only the error's own explicit chain is followed (``__cause__``, requests' wrapped error,
    urllib3's ``reason``), never the implicit ``__context__``: that is whatever exception was
    being handled when this one was raised (a refused connection of an earlier call, a lookup
    made inside an ``except``) and says nothing about this request. Following it once made a
    reset ``createOrder``, already carried out, look unsent and be sent again: bought twice."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        name = type(current).__name__
        if name in ("NewConnectionError", "ConnectTimeoutError", "NameResolutionError"):
            return True
        if isinstance(current, ConnectionRefusedError):
            return True
        nxt = current.__cause__
        if nxt is None and current.args and isinstance(current.args[0], BaseException):
            nxt = current.args[0]
        if nxt is None and hasattr(current, "reason") and isinstance(current.reason, BaseException):
            nxt = current.reason
        current = nxt
    return False
