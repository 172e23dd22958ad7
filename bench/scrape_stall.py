"""How long does a /metrics scrape stall the event loop?

Serves one registry of N accounts two ways in the same run: our handler
(exposition built on a worker thread) and prometheus-client's own aiohttp
handler (built on the loop), the baseline. A client thread scrapes each
repeatedly while a ticker on the loop measures its longest stall.

    python bench/scrape_stall.py --accounts 1000 --scrapes 30

Exits 1 when our longest stall is over the target (default 50 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml
from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from sidecar import testing as build
from sidecar.adapters.auth import Authenticator, StaticTokens
from sidecar.adapters.http import create_app
from sidecar.adapters.sqlite_state import SqliteStateStore
from sidecar.app import freeze_startup_objects
from sidecar.clock import SystemClock
from sidecar.config import load_config
from sidecar.service import Sidecar


def make_sidecar(accounts: int, state_dir: Path) -> Sidecar:
    config = state_dir / "bench.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "state_dir": str(state_dir),
                "accounts": [{"id": f"acct-{i:05d}"} for i in range(accounts)],
            }
        )
    )
    loaded = load_config(config)
    sidecar = Sidecar(loaded, SystemClock(), SqliteStateStore(state_dir))
    now = time.time()
    shapes = [build.text("x"), build.history_sync_notification(), build.app_state_key_share()]
    events = [build.message_event(s) for s in shapes]
    for account in sidecar.states:
        sidecar.pipeline.handle(account, build.connected(), now)
        for event in events:
            sidecar.pipeline.handle(account, event, now)
    return sidecar


class StallMeter:
    """Ticks every millisecond on the loop; the longest gap past the tick is a stall."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        interval = 0.001
        while True:
            before = time.perf_counter()
            await asyncio.sleep(interval)
            self.worst = max(self.worst, time.perf_counter() - before - interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def reset(self) -> None:
        self.worst = 0.0


def scrape_many(url: str, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as response:
            response.read()
        latencies.append(time.perf_counter() - started)
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(sidecar: Sidecar, scrapes: int) -> dict[str, tuple[float, float, float]]:
    app = create_app(sidecar, Authenticator(StaticTokens(())))
    baseline = make_aiohttp_handler(sidecar.registry, disable_compression=True)
    app.router.add_get("/baseline", baseline)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    freeze_startup_objects()  # as sidecar.app.serve does
    meter = StallMeter()
    meter.start()
    results = {}
    loop = asyncio.get_running_loop()
    for name, path in (("sidecar", "/metrics"), ("baseline", "/baseline")):
        warm_up = f"http://127.0.0.1:{port}{path}"
        await loop.run_in_executor(None, scrape_many, warm_up, 2)
        meter.reset()
        url = f"http://127.0.0.1:{port}{path}"
        latencies = await loop.run_in_executor(None, scrape_many, url, scrapes)
        results[name] = (statistics.median(latencies), percentile(latencies, 0.99), meter.worst)
    await runner.cleanup()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--scrapes", type=int, default=30)
    parser.add_argument("--max-stall-ms", type=float, default=50.0)
    parser.add_argument("--no-check", action="store_true", help="smoke run: print, never fail")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, force=True)
    with tempfile.TemporaryDirectory() as tmp:
        sidecar = make_sidecar(args.accounts, Path(tmp))
        results = asyncio.run(measure(sidecar, args.scrapes))
        sidecar.close()
    ours, base = results["sidecar"], results["baseline"]
    print(f"accounts={args.accounts} scrapes={args.scrapes} (each)")
    print(f"{'handler':<10} {'p50 ms':>9} {'p99 ms':>9} {'max loop stall ms':>18}")
    for name, (p50, p99, stall) in results.items():
        print(f"{name:<10} {p50 * 1000:9.1f} {p99 * 1000:9.1f} {stall * 1000:18.1f}")
    print(f"stall ratio sidecar/baseline: {ours[2] / base[2]:.3f}")
    print(f"p50 ratio sidecar/baseline: {ours[0] / base[0]:.2f}")
    if not args.no_check and ours[2] * 1000 > args.max_stall_ms:
        stall_ms = ours[2] * 1000
        print(f"FAIL: longest stall {stall_ms:.1f} ms > {args.max_stall_ms} ms", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
