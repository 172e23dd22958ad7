"""Events per second through the whole event path, against decoding alone.

Serialized neonize ``MessageEv`` payloads (a mix of real messages in many
chats and the protocol traffic that dominates a deaf session) go through
what a live callback does: decode, classify, count, and spool every real
message durably (the journal write, and the journal's move into SQLite,
timed in). Single thread. The baseline, in the same run on the same
payloads: ``MessageEv.FromString`` alone. Rounds alternate between the two
so that a noisy neighbour hits both; medians are quoted.

    .venv/bin/python -m bench.event_path            # full run, checks the targets
    .venv/bin/python -m bench.event_path --smoke    # short, never fails on timing
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from neonize.events import MessageEv

from bench.common import Result, median, report
from sidecar import testing as build
from sidecar.adapters.spool import Spool
from sidecar.compose import assemble
from sidecar.config import load_config
from sidecar.core.clock import SystemClock
from sidecar.core.service import Sidecar
from sidecar.domain.classify import MessageClass

ACCOUNT = "bench"
MIN_EVENTS_PER_S = 50_000
MAX_RATIO_TO_DECODE = 2.0


def make_payloads(count: int, real_share: float, chats: int) -> tuple[list[bytes], int]:
    """``count`` serialized MessageEv: ``real_share`` of them texts spread over ``chats``
    chats, the rest history-sync notifications and app-state key shares in turn.
    Returns the payloads and how many are real."""
    peers = [build.jid(f"1202555{i:04d}") for i in range(chats)]
    protocol = (build.history_sync_notification(), build.app_state_key_share())
    payloads, real_due, real = [], 0.0, 0
    for i in range(count):
        real_due += real_share
        if real_due >= 1.0:
            real_due -= 1.0
            real += 1
            content = build.text(f"benchmark message {i}")
        else:
            content = protocol[i % 2]
        event = build.message_event(
            content, chat=peers[i % chats], timestamp_ms=1_764_068_400_000 + i
        )
        payloads.append(event.SerializeToString())
    return payloads, real


def make_sidecar(state_dir: Path) -> Sidecar:
    config = state_dir / "bench.yaml"
    config.write_text(yaml.safe_dump({"state_dir": str(state_dir), "accounts": [{"id": ACCOUNT}]}))
    return assemble(load_config(config), SystemClock()).sidecar


def time_decode(payloads: list[bytes]) -> float:
    decode = MessageEv.FromString
    started = time.perf_counter()
    for data in payloads:
        decode(data)
    return time.perf_counter() - started


def time_pipeline(sidecar: Sidecar) -> Callable[[list[bytes]], float]:
    decode, handle = MessageEv.FromString, sidecar.handle
    assert sidecar.storage is not None
    spool = sidecar.storage.spool
    assert isinstance(spool, Spool)  # the real spool adapter, whose flush is measured

    def run(payloads: list[bytes]) -> float:
        started = time.perf_counter()
        now = time.time()
        for data in payloads:
            handle(ACCOUNT, decode(data), now)
        spool.flush()  # the last journaled messages' move into SQLite is part of the cost
        return time.perf_counter() - started

    return run


def real_messages(sidecar: Sidecar) -> tuple[int, int]:
    """Real messages the account counted, and messages the spool holds."""
    counts = sidecar.snapshot(ACCOUNT, time.time()).message_counts
    counted = sum(value for (cls, _), value in counts.items() if cls is MessageClass.REAL)
    assert sidecar.storage is not None
    spooled = sum(b.messages for b in sidecar.storage.spool.backlog().values())
    return counted, spooled


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000, help="payloads per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--real-share", type=float, default=0.25, help="real messages, 0..1")
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="short run, targets not checked")
    args = parser.parse_args()
    if args.smoke:
        args.events, args.rounds = 2_000, 2
    logging.basicConfig(level=logging.WARNING, force=True)
    payloads, real_per_round = make_payloads(args.events, args.real_share, args.chats)
    decode_times, pipeline_times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        sidecar = make_sidecar(Path(tmp))
        run_pipeline = time_pipeline(sidecar)
        for _ in range(args.rounds + 1):  # the first round warms up and is not timed
            decode_times.append(time_decode(payloads))
            pipeline_times.append(run_pipeline(payloads))
        counted, spooled = real_messages(sidecar)
        sidecar.close()
    decode_s, pipeline_s = median(decode_times[1:]), median(pipeline_times[1:])
    rate, decode_rate = args.events / pipeline_s, args.events / decode_s
    print(
        f"{args.events:,} events x {args.rounds} rounds, {args.real_share:.0%} real"
        f" over {args.chats} chats; real messages counted {counted:,}, spooled {spooled:,}"
    )
    results = [
        Result(
            "events/s (decode alone as baseline)",
            rate,
            decode_rate,
            "ev/s",
            f">= {MIN_EVENTS_PER_S:,} ev/s",
            rate >= MIN_EVENTS_PER_S,
        ),
        Result(
            "µs per event (decode alone as baseline)",
            pipeline_s / args.events * 1e6,
            decode_s / args.events * 1e6,
            "µs",
            f"<= {MAX_RATIO_TO_DECODE:g}x decode alone",
            pipeline_s / decode_s <= MAX_RATIO_TO_DECODE,
        ),
    ]
    status = report(results, check=not args.smoke)
    expected = real_per_round * (args.rounds + 1)
    if not counted == spooled == expected:
        print(
            f"FAIL: {expected} real messages sent, {counted} counted, {spooled} spooled",
            file=sys.stderr,
        )
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
