"""The stack's image server: the local store's folder over HTTP (read-only, GET/HEAD), so the
markets can download the ``vendorPath`` URLs we give them.

``python -m dropship.images.server --dir DIR --host H --port P`` (``dropship up`` starts it);
:class:`ImageServer` runs the same app in a thread (tests)."""

from __future__ import annotations

import argparse
import asyncio
import socket
import threading
from pathlib import Path

import tornado.httpserver
import tornado.netutil
import tornado.web


class _Static(tornado.web.StaticFileHandler):
    def set_extra_headers(self, path: str) -> None:
        # Content-addressed: a key never changes content.
        self.set_header("Cache-Control", "public, max-age=31536000, immutable")


def build_app(root: Path) -> tornado.web.Application:
    return tornado.web.Application([(r"/(.*)", _Static, {"path": str(root)})])


class ImageServer:
    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.root = Path(root)
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ImageServer:
        self.root.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="image-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("image server did not start in 10 s")
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop

        async def listen() -> None:
            sockets = tornado.netutil.bind_sockets(
                self.requested_port, address=self.host, family=socket.AF_INET
            )
            server = tornado.httpserver.HTTPServer(build_app(self.root))
            server.add_sockets(sockets)
            self.port = sockets[0].getsockname()[1]

        loop.run_until_complete(listen())
        self._ready.set()
        loop.run_forever()
        loop.close()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)

    async def serve() -> None:
        sockets = tornado.netutil.bind_sockets(args.port, address=args.host, family=socket.AF_INET)
        server = tornado.httpserver.HTTPServer(build_app(args.dir))
        server.add_sockets(sockets)
        port = sockets[0].getsockname()[1]
        # The stack reads this line for the URL it gives the workers.
        print(f"image server listening on http://{args.host}:{port} for {args.dir}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
