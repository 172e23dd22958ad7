"""Accounts spread over three sidecar processes through Firestore leases (the real emulator).

Every account is held by exactly one process once they settle; killing one moves its
accounts to the others within the lease time; no account is ever held by two.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from .support.cli import SidecarProcess, sidecar_cli, wait_ready
from .support.http import held_by
from .support.polling import wait_for

pytestmark = pytest.mark.services  # the Firestore emulator and three wa-sidecar processes

ACCOUNTS = [f"acct-{i}" for i in range(10)]
TTL_S = 10.0
#: An account is held from "lease taken" until it has stopped ("status ... -> stopped").
LOG_LINE = re.compile(r"^(\S+ \S+) INFO \S+ account=(\S+) (lease taken|status \S+ -> stopped)")


def intervals(stderr: str, replica: str, end: float) -> list[tuple[str, str, float, float]]:
    """(account, replica, from, to) for each time the replica held an account, from its log."""
    taken: dict[str, float] = {}
    out = []
    for line in stderr.splitlines():
        match = LOG_LINE.match(line)
        if not match:
            continue
        at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        account, what = match.group(2), match.group(3)
        if what == "lease taken":
            taken[account] = at
        elif account in taken:
            out.append((account, replica, taken.pop(account), at))
    out += [(account, replica, since, end) for account, since in taken.items()]
    return out


def test_three_replicas_share_ten_accounts_and_take_over_from_a_dead_one(
    tmp_path: Path, tokens_file: Path, emulator_host: str
) -> None:
    project = f"leases-{os.getpid()}-{int(time.time())}"
    processes: dict[str, tuple[SidecarProcess, int]] = {}
    started: dict[str, SidecarProcess] = {}
    for replica in ("r1", "r2", "r3"):
        config = tmp_path / f"{replica}.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "http": {"listen": "127.0.0.1:0"},
                    "state_dir": str(tmp_path / replica),
                    "auth": {"tokens_file": str(tokens_file)},
                    "store": {"backend": "sqlite", "firestore": {"project": project}},
                    "leases": {"ttl": f"{TTL_S:.0f}s", "replica_id_env": "WA_REPLICA"},
                    "accounts": [{"id": a} for a in ACCOUNTS],
                }
            )
        )
        os.environ["FIRESTORE_EMULATOR_HOST"] = emulator_host
        os.environ["WA_REPLICA"] = replica
        try:
            process = sidecar_cli("run", "--config", str(config))
        finally:
            os.environ.pop("WA_REPLICA", None)
            os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
        started[replica] = process
    outputs: dict[str, str] = {}
    victim, killed_wall = "", 0.0
    try:
        for replica, process in started.items():
            processes[replica] = (process, wait_ready(process))

        def settled(names: tuple[str, ...]) -> bool:
            """Every account held exactly once, and each replica at its fair share or under."""
            holdings = [held_by(processes[n][1]) for n in names]
            every = [a for h in holdings for a in h]
            share = -(-len(ACCOUNTS) // len(names))
            return sorted(every) == ACCOUNTS and all(1 <= len(h) <= share for h in holdings)

        wait_for(
            lambda: settled(("r1", "r2", "r3")), 60, "the accounts to spread over three replicas"
        )
        spread = {n: held_by(processes[n][1]) for n in processes}
        # each replica aims for its fair share, ceil(10 / 3) = 4, and no more
        assert all(1 <= len(h) <= 4 for h in spread.values()), spread
        victim = max(spread, key=lambda n: len(spread[n]))
        orphans = spread[victim]
        killed_at = time.monotonic()
        killed_wall = time.time()
        processes[victim][0].send_signal(signal.SIGKILL)
        outputs[victim] = processes[victim][0].communicate(timeout=15)[1]
        survivors = tuple(n for n in processes if n != victim)
        wait_for(
            lambda: settled(survivors),
            3 * TTL_S,
            "the survivors to take the dead replica's accounts",
        )
        takeover = time.monotonic() - killed_at
        assert takeover <= TTL_S + 2 * TTL_S / 3 + 2, (
            takeover
        )  # lease time + one renewal cycle (+ slack)
        after = {n: held_by(processes[n][1]) for n in survivors}
        assert orphans <= after[survivors[0]] | after[survivors[1]]
        assert all(len(h) == 5 for h in after.values()), after
        print(
            f"\n  spread {dict((n, len(h)) for n, h in spread.items())}; {victim} killed; taken over in {takeover:.1f} s"
        )
    finally:
        for name, process in started.items():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                outputs[name] = process.communicate(timeout=20)[1]
    end = time.time()
    held = defaultdict(list)
    for name, stderr in outputs.items():
        # a killed process holds nothing after its death, whatever its log left open
        for account, replica, start, stop in intervals(
            stderr, name, killed_wall if name == victim else end
        ):
            held[account].append((start, stop, replica))
    for name, stderr in outputs.items():
        (tmp_path / f"{name}.log").write_text(stderr)
    assert sorted(held) == ACCOUNTS
    for account, spans in held.items():
        spans.sort()
        for (_, first_end, first), (second_start, _, second) in itertools.pairwise(spans):
            assert second_start >= first_end or first == second, (
                f"{account} held by {first} and {second} at once"
            )
