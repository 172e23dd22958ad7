"""Ingest throughput: messages per second posted to ``/api/ingest/baileys/{account}``
against the same messages through the neonize path, in the same run.

The messages are the classifier's test shapes, round-robin, each with its own id.
Ingest: the real HTTP app on a real port (aiohttp's test server), an aiohttp client
posting batches of ``--batch`` messages in protobufjs ``toJSON`` form, one request at
a time: the request's JSON parsing, the conversion into neonize's protobuf, the dedupe
and the pipeline. Baseline: the neonize path as a live session feeds it, each
``MessageEv`` decoded from its bytes and handed to the pipeline. Rounds alternate
after a warm-up; the median counts. Afterwards both accounts must have counted every
message, by class and kind alike (a miss fails the run, ``--smoke`` included).

    .venv/bin/python -m bench.ingest [--messages 20000 --batch 100 --rounds 3]
    .venv/bin/python -m bench.ingest --smoke

Exits 1 when ingest is under 0.05x the neonize path's rate (not checked with
``--smoke``): a thousand busy accounts' gateways must never queue up.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from neonize.events import MessageEv

from sidecar import testing as build
from sidecar.compose import Assembly, assemble, build_app, live_source
from sidecar.config import load_config
from sidecar.core.clock import SystemClock
from tests.support.cases import CASES
from tests.support.gateway_json import protobufjs_json

from .common import Result, median, report

#: Ingest against the neonize path. A replica of a thousand busy accounts (5 messages a
#: second each) needs 5,000/s, about 0.05x of the neonize path's ~100,000/s here; measured
#: 0.10-0.14 (docs/performance.md, 8).
TARGET_RATIO = 0.05
SMOKE_MESSAGES, SMOKE_BATCH = 500, 50
TOKEN = "bench-token-0123456789abcdef0123456789"
SHAPES = [content for _, content, _, _, _ in CASES if content is not None]


def sidecar(work: Path) -> Assembly:
    (work / "tokens").write_text(TOKEN + "\n")
    config = work / "bench.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "state_dir": str(work / "state"),
                "auth": {"tokens_file": str(work / "tokens")},
                "accounts": [{"id": "gateway", "source": "ingest"}, {"id": "live"}],
            }
        )
    )
    assembly = assemble(load_config(config), SystemClock(), storage=False)
    live_source(assembly, None)  # wires the ingest account; nothing connects
    return assembly


def batches(tag: str, messages: int, size: int) -> list[dict[str, Any]]:
    bodies, batch = [], []
    for n in range(messages):
        batch.append(
            {
                "key": {"remoteJid": "12025550123@s.whatsapp.net", "id": f"{tag}{n:012X}"},
                "messageTimestamp": 1_764_068_400 + n,
                "message": protobufjs_json(SHAPES[n % len(SHAPES)]),
            }
        )
        if len(batch) == size:
            bodies.append(
                {"event": "messages.upsert", "data": {"type": "notify", "messages": batch}}
            )
            batch = []
    if batch:
        bodies.append({"event": "messages.upsert", "data": {"type": "notify", "messages": batch}})
    return bodies


async def ingest(server: TestServer, bodies: list[dict[str, Any]]) -> float:
    """Seconds to post every body, one request at a time."""
    url = str(server.make_url("/api/ingest/baileys/gateway"))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with ClientSession() as session:
        started = time.perf_counter()
        for body in bodies:
            async with session.post(url, json=body, headers=headers) as reply:
                if reply.status != 200:
                    raise RuntimeError(f"ingest answered {reply.status}: {await reply.text()}")
                await reply.read()
        return time.perf_counter() - started


def neonize_path(assembly: Assembly, messages: int) -> float:
    """Seconds for the same messages as a live session hands them over."""
    wire = [
        build.message_event(SHAPES[n % len(SHAPES)]).SerializeToString() for n in range(messages)
    ]
    handle, now = assembly.sidecar.handle, time.time()
    started = time.perf_counter()
    for data in wire:
        handle("live", MessageEv.FromString(data), now)
    return time.perf_counter() - started


def counts(assembly: Assembly, account: str) -> dict[tuple[str, str], float]:
    out = {}
    for metric in assembly.metrics.registry.collect():
        if metric.name == "whatsapp_messages_received":
            for s in metric.samples:
                if s.name.endswith("_total") and s.labels["account"] == account and s.value:
                    out[s.labels["class"], s.labels["kind"]] = s.value
    return out


async def measure(
    work: Path, messages: int, size: int, rounds: int
) -> tuple[list[float], list[float], list[str]]:
    assembly = sidecar(work)
    server = TestServer(build_app(assembly))
    await server.start_server()
    ingest_s: list[float] = []
    neonize_s: list[float] = []
    try:
        await ingest(server, batches("warm", min(messages, 1000), size))
        neonize_path(assembly, min(messages, 1000))
        for n in range(rounds):
            ingest_s.append(await ingest(server, batches(f"r{n}", messages, size)))
            neonize_s.append(neonize_path(assembly, messages))
        gateway, live = counts(assembly, "gateway"), counts(assembly, "live")
        problems = [] if gateway == live else [f"counts differ: ingest {gateway} live {live}"]
        total = sum(gateway.values())
        expected = min(messages, 1000) + rounds * messages
        if total != expected:
            problems.append(f"ingest counted {total:.0f} of {expected} messages")
    finally:
        await server.close()
        assembly.close()
    return ingest_s, neonize_s, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000, help="per round and side")
    parser.add_argument("--batch", type=int, default=100, help="messages per request")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="a short run; never fails on timing")
    args = parser.parse_args()
    messages, size, rounds = (
        (SMOKE_MESSAGES, SMOKE_BATCH, 1) if args.smoke else (args.messages, args.batch, args.rounds)
    )
    logging.basicConfig(level=logging.WARNING, force=True)
    with tempfile.TemporaryDirectory() as tmp:
        ingest_s, neonize_s, problems = asyncio.run(measure(Path(tmp), messages, size, rounds))
    requests = -(-messages // size)
    rate, base = messages / median(ingest_s), messages / median(neonize_s)
    print(f"messages={messages} batch={size} rounds={rounds}")
    for n, (a, b) in enumerate(zip(ingest_s, neonize_s, strict=True)):
        print(f"round {n}: ingest {messages / a:,.0f}/s, neonize path {messages / b:,.0f}/s")
    status = report(
        [
            Result(
                "ingest, messages/s",
                rate,
                base,
                "/s",
                f">= {TARGET_RATIO:g}x the neonize path",
                rate >= TARGET_RATIO * base,
            ),
            Result("ingest, requests/s", requests / median(ingest_s), None, "/s", "-", True),
        ],
        check=not args.smoke,
    )
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    if not problems:
        print(f"every message of every round counted alike on both sides ({len(SHAPES)} shapes)")
    return 1 if problems else status


if __name__ == "__main__":
    sys.exit(main())
