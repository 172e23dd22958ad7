"""/healthz while many pair pages stream their QR code, with a large spool waiting.

Serves one sidecar whose account waits for a QR scan and whose spool holds
18,800 messages (the store is down), as in the attack that found the problem.
A client process opens N event streams of the pair page, reads them, and times
/healthz meanwhile; a ticker on the server's loop measures its longest stall.
The baseline is the same server with no stream open, in the same run.

    .venv/bin/python -m bench.pair_streams            # 100 streams; checks the target
    .venv/bin/python -m bench.pair_streams --smoke    # 10 streams, never fails on timing

Target with 100 streams: /healthz p99 within 3x the baseline's (or 5 ms, if
more), and no loop stall over 50 ms. Before the streams shared one view per
account, each drew the QR code on every tick: 100 streams kept the loop busy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import yaml
from aiohttp import web

from bench.common import Result, median, percentile, report
from bench.scrape import StallMeter
from sidecar import testing as build
from sidecar.adapters.http import READY, HardenedAppRunner
from sidecar.app import freeze_startup_objects
from sidecar.compose import Assembly, assemble, build_app, build_repairs
from sidecar.config import load_config
from sidecar.core.clock import SystemClock
from sidecar.core.repair import RecordingControl

TOKEN = "bench-token-0123456789"
STREAMS = 100
SPOOLED = 18_800
MAX_RATIO = 3.0
FLOOR_S = 0.005
MAX_STALL_S = 0.050
#: A QR code as long as WhatsApp's (ref, public key, identity key, adv secret).
QR_CODE = "2@" + "R" * 150 + "," + "K" * 44 + "," + "I" * 44 + "," + "A" * 44


def make_sidecar(state_dir: Path, spooled: int) -> Assembly:
    """One account waiting for its QR to be scanned, ``spooled`` messages in its spool."""
    tokens = state_dir / "tokens"
    tokens.write_text(TOKEN + "\n")
    config = state_dir / "bench.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "state_dir": str(state_dir / "state"),
                "auth": {"tokens_file": str(tokens)},
                "http": {"event_streams": {"total": 1000, "per_principal": 1000}},
                "accounts": [{"id": "sales"}],
            }
        )
    )
    assembly = assemble(load_config(config), SystemClock())
    sidecar = assembly.sidecar
    now = time.time()
    for n in range(spooled):
        event = build.message_event(build.text("waiting"), message_id=f"M{n:06d}")
        sidecar.handle("sales", event, now)
    sidecar.handle("sales", build.qr_with_code(QR_CODE), now)
    return assembly


#: The client runs in a process of its own, so its reading does not compete with the server.
CLIENT = """
import asyncio, json, sys, time
import aiohttp

async def main(port, streams, probes, token):
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=0)  # one connection per stream, and more
    async with aiohttp.ClientSession(connector=connector) as session:
        opened = []
        for _ in range(streams):
            response = await session.get(base + "/api/whatsapp/accounts/sales/pair/events",
                                         headers=headers)
            assert response.status == 200, response.status
            while not (await response.content.readline()).startswith(b"data: "):
                pass
            opened.append(response)

        async def drain(response):
            async for _ in response.content:
                pass

        readers = [asyncio.create_task(drain(r)) for r in opened]
        await asyncio.sleep(1.0)  # every stream ticking
        latencies = []
        for _ in range(probes):
            started = time.perf_counter()
            async with session.get(base + "/healthz") as response:
                await response.read()
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)
        for reader in readers:
            reader.cancel()
        for response in opened:
            response.close()
    print(json.dumps(latencies))

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
"""


async def probe(port: int, streams: int, probes: int) -> list[float]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLIENT,
        str(port),
        str(streams),
        str(probes),
        TOKEN,
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the client failed with {streams} streams (exit {process.returncode})")
    latencies: list[float] = json.loads(stdout)
    return latencies


Figures = tuple[float, float, float]  # p50, p99, longest stall (seconds)


async def measure(assembly: Assembly, streams: int, probes: int) -> dict[int, Figures]:
    app = build_app(assembly, repairs=build_repairs(assembly, RecordingControl()))
    runner = HardenedAppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    app[READY].set()
    port = runner.addresses[0][1]
    freeze_startup_objects()  # as sidecar.app.serve does
    meter = StallMeter()
    meter.start()
    results = {}
    try:
        for count in (0, streams):
            meter.reset()
            latencies = await probe(port, count, probes)
            results[count] = (median(latencies), percentile(latencies, 0.99), meter.worst)
    finally:
        app[READY].clear()  # the streams end at their next tick
        await runner.cleanup()
    return results


def run(streams: int, spooled: int, probes: int) -> dict[int, Figures]:
    with tempfile.TemporaryDirectory() as tmp:
        assembly = make_sidecar(Path(tmp), spooled)
        try:
            return asyncio.run(measure(assembly, streams, probes))
        finally:
            assembly.close()
            if assembly.storage is not None:
                asyncio.run(assembly.storage.close())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=STREAMS)
    parser.add_argument("--spooled", type=int, default=SPOOLED)
    parser.add_argument("--probes", type=int, default=300, help="/healthz requests per run")
    parser.add_argument("--smoke", action="store_true", help="10 streams, targets not checked")
    args = parser.parse_args()
    if args.smoke:
        args.streams, args.spooled, args.probes = 10, 500, 30
    logging.basicConfig(level=logging.WARNING, force=True)
    figures = run(args.streams, args.spooled, args.probes)
    print(f"{'streams':>8} {'p50 ms':>9} {'p99 ms':>9} {'longest stall ms':>17}")
    for count, (p50, p99, stall) in figures.items():
        print(f"{count:>8} {p50 * 1e3:9.2f} {p99 * 1e3:9.2f} {stall * 1e3:17.1f}")
    (p50, p99, stall), (b50, b99, bstall) = figures[args.streams], figures[0]
    allowed = max(MAX_RATIO * b99, FLOOR_S)
    label = f"{args.streams} streams"
    results = [
        Result(f"{label}: /healthz p50 ms", p50 * 1e3, b50 * 1e3, "ms", "-", True),
        Result(
            f"{label}: /healthz p99 ms",
            p99 * 1e3,
            b99 * 1e3,
            "ms",
            f"<= {MAX_RATIO:.0f}x baseline or {FLOOR_S * 1e3:.0f} ms",
            p99 <= allowed,
        ),
        Result(
            f"{label}: longest stall ms",
            stall * 1e3,
            bstall * 1e3,
            "ms",
            f"< {MAX_STALL_S * 1e3:.0f} ms",
            stall < MAX_STALL_S,
        ),
    ]
    print(f"({args.probes} /healthz requests per run; {args.spooled:,} messages spooled)")
    return report(results, check=not args.smoke)


if __name__ == "__main__":
    sys.exit(main())
