"""What coordinating replicas costs in Firestore, with 100 and with 1,000 accounts.

Starts 2, then 3, ``wa-sidecar run`` processes sharing N accounts through leases in
the Firestore emulator (real neonize, no route to WhatsApp: the accounts a replica
holds dial and fail, as behind a firewall), waits until every account is held
exactly once, then counts the gRPC calls and bytes between the replicas and the
emulator over a window (:mod:`bench.wire`). The baseline, in the same run: the same
replicas with 100 accounts. Target: 1,000 accounts cost within 1.5x of 100.

    .venv/bin/python -m bench.coordination            # full run (~12 min), checks targets
    .venv/bin/python -m bench.coordination --smoke    # short, never fails on targets
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.common import Result, report
from bench.wire import CountingProxy, Counts
from tests.support.cli import SidecarProcess, sidecar_cli, wait_ready
from tests.support.firestore import firestore_emulator
from tests.support.http import get, held_by

LOST = re.compile(r"^whatsapp_leases_lost_total ([\d.]+)$", re.MULTILINE)
MAX_RATIO = 1.5


@dataclass(frozen=True)
class Plan:
    replicas: tuple[int, ...]
    accounts: tuple[int, ...]
    ttl_s: float
    window_s: float
    settle_s: float


FULL = Plan(replicas=(2, 3), accounts=(100, 1000), ttl_s=30, window_s=90, settle_s=240)
SMOKE = Plan(replicas=(2,), accounts=(10, 40), ttl_s=6, window_s=12, settle_s=90)


@dataclass(frozen=True)
class Measured:
    replicas: int
    accounts: int
    per_minute: Counts
    settled_in_s: float


def holdings(ports: list[int]) -> list[set[str]]:
    return [held_by(port) for port in ports]


def lost(ports: list[int]) -> float:
    total = 0.0
    for port in ports:
        found = LOST.search(get(f"http://127.0.0.1:{port}/metrics"))
        total += float(found.group(1)) if found else 0.0
    return total


def start_replicas(
    work: Path,
    tokens: Path,
    project: str,
    proxy: str,
    replicas: int,
    accounts: list[str],
    ttl: float,
) -> list[SidecarProcess]:
    processes = []
    for n in range(replicas):
        name = f"r{n + 1}"
        config = work / f"{name}.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "http": {"listen": "127.0.0.1:0"},
                    "state_dir": str(work / name),
                    "auth": {"tokens_file": str(tokens)},
                    "store": {"backend": "sqlite", "firestore": {"project": project}},
                    "leases": {"ttl": f"{ttl:g}s", "replica_id_env": "WA_REPLICA"},
                    "accounts": [{"id": a} for a in accounts],
                }
            )
        )
        processes.append(
            sidecar_cli(
                "--log-level",
                "WARNING",
                "run",
                "--config",
                str(config),
                env={"FIRESTORE_EMULATOR_HOST": proxy, "WA_REPLICA": name},
            )
        )
    return processes


def measure(
    emulator: str, work: Path, tokens: Path, plan: Plan, replicas: int, count: int
) -> Measured:
    accounts = [f"acct-{i:04d}" for i in range(count)]
    proxy = CountingProxy(emulator)
    project = f"coordination-{replicas}-{count}-{os.getpid()}"
    here = work / f"{replicas}x{count}"
    here.mkdir()
    processes = start_replicas(here, tokens, project, proxy.address, replicas, accounts, plan.ttl_s)
    try:
        ports = [wait_ready(p, timeout=120) for p in processes]
        began = time.monotonic()
        while True:
            held = holdings(ports)
            every = sorted(a for h in held for a in h)
            share = -(-count // replicas)
            # every account held once, and spread: a replica that joined late has its share
            if every == accounts and all(1 <= len(h) <= share for h in held):
                break
            if time.monotonic() - began > plan.settle_s:
                raise SystemExit(f"{replicas}x{count}: not settled: {[len(h) for h in held]}")
            time.sleep(1)
        settled = time.monotonic() - began
        time.sleep(plan.ttl_s / 3)  # one more cycle: the takes' last writes are done
        before, lost_before = proxy.counts(), lost(ports)
        time.sleep(plan.window_s)
        during = proxy.counts().minus(before)
        held = holdings(ports)
        assert sorted(a for h in held for a in h) == accounts, "the accounts moved"
        assert lost(ports) == lost_before, "a replica lost leases in steady state"
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.communicate(timeout=120)
        proxy.close()
    scale = 60 / plan.window_s
    per_minute = Counts(
        round(during.calls * scale),
        round(during.bytes_up * scale),
        round(during.bytes_down * scale),
    )
    print(
        f"  {replicas} replicas, {count:>5} accounts: settled in {settled:5.1f} s;"
        f" {per_minute.calls:,} calls/min, {per_minute.bytes_up / 1024:,.1f} KiB/min up,"
        f" {per_minute.bytes_down / 1024:,.1f} KiB/min down",
        flush=True,
    )
    return Measured(replicas, count, per_minute, settled)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="short run, targets not checked")
    args = parser.parse_args()
    plan = SMOKE if args.smoke else FULL
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tokens = work / "tokens"
        tokens.write_text("bench-token-not-secret\n")
        tokens.chmod(0o600)
        with firestore_emulator(work / "emulator.log") as emulator:
            for replicas in plan.replicas:
                few, many = (
                    measure(emulator, work, tokens, plan, replicas, n) for n in plan.accounts
                )
                for what, unit, (measured, baseline) in (
                    ("calls", "/m", (many.per_minute.calls, few.per_minute.calls)),
                    ("bytes", "B", (many.per_minute.total_bytes, few.per_minute.total_bytes)),
                ):
                    results.append(
                        Result(
                            f"{replicas} replicas, {many.accounts} accts: {what}/min",
                            float(measured),
                            float(baseline),
                            unit,
                            f"<= {MAX_RATIO}x {few.accounts} accounts",
                            measured <= MAX_RATIO * baseline,
                        )
                    )
    return report(results, check=not args.smoke)


if __name__ == "__main__":
    raise SystemExit(main())
