"""A tiny raw-socket HTTP/1.1 server on loopback that cuts real connections mid-body.

``CutServer.script(path, [...])`` queues what the next requests to ``path`` get:

* ``"cut-length"``  — the full ``Content-Length``, 100 bytes of the body, then the connection
  closes;
* ``"cut-chunked"`` — chunked encoding, one chunk, then the connection closes (no last chunk);
* ``"bad-gzip"``    — ``Content-Encoding: gzip`` with a body that is not gzip;
* ``"full"``        — the whole JSON body (also what an unscripted request gets).

Written on a raw socket (not ``http.server``) because a well-behaved server library will not send
a body shorter than its own ``Content-Length``.
"""

from __future__ import annotations

import json
import socket
import threading
from collections import defaultdict, deque
from types import TracebackType

BODY = json.dumps({"ok": True, "items": [f"item-{n:04d}" for n in range(40)]}).encode()


class CutServer:
    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._scripts: dict[str, deque[str]] = defaultdict(deque)
        self.requests: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, path: str, steps: list[str]) -> None:
        with self._lock:
            self._scripts[path].extend(steps)

    def close(self) -> None:
        self._listener.close()

    def __enter__(self) -> CutServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                request += chunk
            head, _, rest = request.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1].split("?")[0]
            length = next(
                (int(line.split(":", 1)[1]) for line in lines if line.lower().startswith(
                    "content-length:")), 0,
            )  # fmt: skip
            while len(rest) < length:  # read a POST body fully before answering
                rest += conn.recv(65536)
            with self._lock:
                self.requests[path] += 1
                steps = self._scripts[path]
                step = steps.popleft() if steps else "full"
            base = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            if step == "cut-length":
                conn.sendall(f"{base}Content-Length: {len(BODY)}\r\n\r\n".encode() + BODY[:100])
            elif step == "cut-chunked":
                first = BODY[:100]
                conn.sendall(
                    f"{base}Transfer-Encoding: chunked\r\n\r\n{len(first):x}\r\n".encode()
                    + first
                    + b"\r\n"
                )
            elif step == "bad-gzip":
                junk = b"\x1f\x8b\x08\x00 this is not a gzip stream at all"
                conn.sendall(
                    f"{base}Content-Encoding: gzip\r\nContent-Length: {len(junk)}\r\n\r\n".encode()
                    + junk
                )
            else:
                conn.sendall(f"{base}Content-Length: {len(BODY)}\r\n\r\n".encode() + BODY)
            conn.shutdown(socket.SHUT_RDWR)
