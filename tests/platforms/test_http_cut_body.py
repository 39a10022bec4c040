"""A response body cut short (a real connection closed mid-body) is a transient failure.

The server is a raw socket on loopback (tests/cut_server.py) that really closes the connection
after part of the body: ``requests`` raises ``ChunkedEncodingError``/``ContentDecodingError``,
which are not ``ConnectionError``s and once escaped the retry logic.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from dropship.errors import TransientError
from dropship.platforms.http import PlatformHttp, TransientHttpError
from tests.cut_server import BODY, CutServer


@pytest.fixture
def server() -> Iterator[CutServer]:
    with CutServer() as cut:
        yield cut


def client(server: CutServer) -> PlatformHttp:
    return PlatformHttp(
        "domeggook", "main", server.url, None, timeout=(1.0, 5.0), max_attempts=4,
        backoff_initial_s=0.01, backoff_max_s=0.02,
    )  # fmt: skip


def assert_nothing_chained(exc: BaseException) -> None:
    # The driver's exception names the URL with its query string (API keys on some platforms).
    assert exc.__cause__ is None and exc.__context__ is None


def test_cut_bodies_are_retried_then_succeed(server: CutServer) -> None:
    server.script("/items", ["cut-length", "cut-chunked", "bad-gzip"])
    response = client(server).get("/items", params={"aid": "SECRET-KEY"})
    assert response.json()["ok"] is True
    assert server.requests["/items"] == 4


def test_always_cut_body_spends_the_budget_then_a_clear_transient_error(
    server: CutServer,
) -> None:
    server.script("/items", ["cut-length"] * 4)
    with pytest.raises(TransientHttpError) as caught:
        client(server).get("/items", params={"aid": "SECRET-KEY"})
    assert str(caught.value).startswith(
        "domeggook GET /items: response body cut short (ChunkedEncodingError) after 4 attempt(s)"
    )
    assert "SECRET" not in str(caught.value)
    assert_nothing_chained(caught.value)
    assert server.requests["/items"] == 4


def test_cut_body_of_a_non_idempotent_post_is_not_repeated(server: CutServer) -> None:
    server.script("/orders", ["cut-chunked"])
    with pytest.raises(TransientError, match="not repeated; it was executed") as caught:
        client(server).post("/orders", json={"order": "po-1"})
    assert_nothing_chained(caught.value)
    assert server.requests["/orders"] == 1


@pytest.mark.parametrize("step", ["cut-length", "cut-chunked", "bad-gzip"])
def test_streamed_body_cut_mid_way_is_a_transient_error(server: CutServer, step: str) -> None:
    server.script("/feed", [step])
    response = client(server).get("/feed", params={"m_skey": "SECRET-KEY"}, stream=True)
    assert response.status_code == 200  # the headers arrived; the body is read below
    with pytest.raises(TransientHttpError) as caught:
        b"".join(response.iter_content(chunk_size=64))
    assert str(caught.value).startswith("domeggook GET /feed: response body cut short (")
    assert "while streaming" in str(caught.value) and "SECRET" not in str(caught.value)
    assert_nothing_chained(caught.value)


def test_every_way_of_reading_a_streamed_body_is_guarded(server: CutServer) -> None:
    http = client(server)
    server.script("/feed", ["cut-chunked"] * 3)
    with pytest.raises(TransientError):
        http.get("/feed", stream=True).json()
    with pytest.raises(TransientError):
        list(http.get("/feed", stream=True).iter_lines())
    with pytest.raises(TransientError):
        _ = http.get("/feed", stream=True).text
    # A whole streamed body reads as usual.
    assert json.loads(b"".join(http.get("/feed", stream=True).iter_content(100))) == json.loads(
        BODY
    )
