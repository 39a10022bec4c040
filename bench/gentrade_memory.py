"""Peak memory of parsing a gentrade (= Zentrade) catalog: streamed vs naive, 10k vs 100k.

    uv run python bench/gentrade_memory.py [--sizes 10000 100000] [--seed 42]

Starts the sandbox as a separate process (so its memory is not counted), then measures each
(method, size) pair in a fresh child process, so RSS figures do not carry over:

* ``streamed`` — the project's path: ``GentradeConnector.iter_products`` (``iter_content`` 64 KiB
  chunks -> the record splitter -> one record decoded and parsed by lxml at a time), records
  consumed one at a time and not kept.
* ``naive`` — what one would write first: ``response.content``, ``lxml.etree.fromstring`` of the
  whole document (``xml.etree`` cannot even read it: expat refuses the multi-byte declared
  encoding), then :func:`parse_record` on every ``<product>`` (records not kept either, so the
  difference is the document and its tree).

For each it reports the RSS growth (the child's peak RSS, the kernel's ``VmHWM`` reset just
before the parse, minus its RSS at that moment: this includes libxml2's C memory, which
tracemalloc cannot see) and the wall time. Output: a Markdown table (paste into docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import requests
from lxml import etree

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from dropship.platforms.config import AccountSettings  # noqa: E402
from dropship.platforms.gentrade import GentradeConnector, parse_record  # noqa: E402
from dropship.platforms.http import PlatformHttp  # noqa: E402
from dropship.platforms.interfaces import SupplierProduct  # noqa: E402
from dropship.sandbox.credentials import SANDBOX_CREDENTIALS  # noqa: E402

FEED_PATH = "/gentrade/shop/proc/product_api.php"


def _connector(base_url: str) -> GentradeConnector:
    account = AccountSettings.model_validate(
        {
            "name": "gentrade_bench",
            "platform": "gentrade",
            "base_url": f"{base_url}/gentrade",
            "credentials": SANDBOX_CREDENTIALS["gentrade"],
        }
    )
    http = PlatformHttp("gentrade", "gentrade_bench", account.base_url, None, timeout=(3, 300))
    return GentradeConnector(account=account, http=http)


def _reset_peak() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def _peak_rss() -> int:
    """VmHWM of this process, not ``ru_maxrss``: Linux carries a forking parent's high-water
    mark into an exec'd child, so ``ru_maxrss`` can report the parent's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(method: str, base_url: str) -> dict[str, Any]:
    """Runs in a child process: one parse, its memory and time."""
    creds = SANDBOX_CREDENTIALS["gentrade"]
    _reset_peak()
    rss_before = psutil.Process().memory_info().rss
    started = time.perf_counter()
    products = invalid = 0
    if method == "streamed":
        for record in _connector(base_url).iter_products():
            if isinstance(record, SupplierProduct):
                products += 1
            else:
                invalid += 1
    elif method == "naive":
        response = requests.get(
            base_url + FEED_PATH, params={"id": creds["id"], "m_skey": creds["key"]}, timeout=300
        )
        root = etree.fromstring(response.content, parser=etree.XMLParser(huge_tree=True))
        for element in root.iter("product"):
            try:
                parse_record(element)
                products += 1
            except Exception:
                invalid += 1
    else:
        raise SystemExit(f"unknown method {method!r}")
    elapsed = time.perf_counter() - started
    max_rss = _peak_rss()
    return {
        "method": method,
        "products": products,
        "invalid": invalid,
        "rss_growth_mb": max(0, max_rss - rss_before) / 2**20,
        "seconds": elapsed,
    }


def _start_sandbox(seed: int) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "dropship.sandbox", "--port", "0", "--seed", str(seed)],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if "listening on" not in line:
        process.kill()
        raise SystemExit(f"sandbox did not start: {line!r}")
    base_url = line.rsplit(" ", 1)[1]
    # One call per parse: lift the sandbox's 1000/hour bucket (burst 2) for the benchmark.
    requests.post(
        f"{base_url}/_sandbox/rate_limits",
        json={"gentrade": {"calls": 100, "period_s": 1, "burst": 100}},
        timeout=5,
    ).raise_for_status()
    return process, base_url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "BASE_URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1])))
        return 0

    sandbox, base_url = _start_sandbox(args.seed)
    rows = []
    try:
        for size in args.sizes:
            requests.post(
                f"{base_url}/_sandbox/suppliers",
                json={"catalog_sizes": {"gentrade": size}},
                timeout=5,
            ).raise_for_status()
            head = requests.get(
                base_url + FEED_PATH,
                params={
                    "id": SANDBOX_CREDENTIALS["gentrade"]["id"],
                    "m_skey": SANDBOX_CREDENTIALS["gentrade"]["key"],
                },
                stream=True,
                timeout=300,
            )
            document_bytes = sum(len(c) for c in head.iter_content(1 << 20))
            for method in ("streamed", "naive"):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", method, base_url],
                    cwd=PROJECT,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                row = json.loads(out.stdout)
                row["size"] = size
                row["document_mb"] = document_bytes / 2**20
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
    finally:
        sandbox.terminate()
        sandbox.wait(10)

    cpu = platform.processor() or platform.machine()
    print(
        f"machine: {platform.node()} — {os.cpu_count()} CPUs ({cpu}), "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM, Python {platform.python_version()}, "
        f"lxml {'.'.join(map(str, etree.LXML_VERSION))}, {platform.system()} {platform.release()}"
    )
    print()
    print("| products | document (EUC-KR) | method | RSS growth | time | parsed / invalid |")
    print("|---:|---:|---|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['size']:,} | {row['document_mb']:.1f} MB | {row['method']} "
            f"| {row['rss_growth_mb']:.1f} MB | {row['seconds']:.1f} s "
            f"| {row['products']:,} / {row['invalid']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
