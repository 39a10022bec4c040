"""``python -m dropship.sandbox --host 127.0.0.1 --port 0 --seed 42``

Runs the sandbox in the foreground, prints ``sandbox listening on http://HOST:PORT`` once it
accepts connections (``dropship up`` reads that line to learn the port), and stops cleanly on
SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from types import FrameType

from dropship.sandbox.core import SandboxConfig, SandboxServer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dropship.sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one")
    parser.add_argument("--seed", type=int, default=42, help="world seed (same seed, same world)")
    parser.add_argument(
        "--catalog-size", type=int, default=SandboxConfig.catalog_size, help="products per supplier"
    )
    parser.add_argument(
        "--order-rate",
        type=float,
        default=SandboxConfig.order_rate_per_min,
        help="new marketplace orders per minute per market",
    )
    parser.add_argument(
        "--buyer-cancel-share",
        type=float,
        default=SandboxConfig.buyer_cancel_share,
        help="share of arriving orders whose buyer asks to cancel (0..1)",
    )
    parser.add_argument(
        "--buyer-cancel-after",
        type=float,
        default=SandboxConfig.buyer_cancel_after_s,
        help="world seconds from an order to its buyer's cancel request",
    )
    parser.add_argument(
        "--tracking-delay",
        type=float,
        default=SandboxConfig.tracking_delay_s,
        help="seconds from purchase order to tracking number",
    )
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be within 0..65535, got {args.port}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = SandboxConfig(
            seed=args.seed,
            catalog_size=args.catalog_size,
            order_rate_per_min=args.order_rate,
            buyer_cancel_share=args.buyer_cancel_share,
            buyer_cancel_after_s=args.buyer_cancel_after,
            tracking_delay_s=args.tracking_delay,
        )
    except ValueError as exc:
        print(f"sandbox: invalid configuration: {exc}", file=sys.stderr)
        return 2
    # A plain list, not threading.Event: a signal handler runs between two bytecodes of the main
    # thread, and Event.set() would deadlock on the Event's own lock if the main thread holds it
    # inside Event.wait() at that moment.
    stop_signals: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop_signals.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    server = SandboxServer(config, host=args.host, port=args.port).start()
    print(f"sandbox listening on {server.base_url}", flush=True)
    try:
        while not stop_signals:
            time.sleep(0.2)
    finally:
        server.stop()
    print("sandbox stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
