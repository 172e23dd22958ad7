"""Faults: SIGKILL at random points of a replay into Firestore, a full state disk,
corrupt state databases. Each test starts what it needs (the Firestore emulator, a
tmpfs) and fails loudly when it cannot.

"Restart" for a replay: the operator runs the rest of the capture, from the last
progress they saw (``whatsapp_events_total``), not the whole capture again. Live,
WhatsApp does not deliver again what the killed process acknowledged, so only the
spool carries it to the store; a restart that fed every message again would hide a
loss. Progress seen lags the real position, so some messages are handled twice,
as a redelivery after a reconnect is: the store must still hold one document each.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import random
import re
import signal
import sqlite3
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar import testing as build
from sidecar.adapters import deferred, neonize_session
from sidecar.adapters.capture import encode_record
from sidecar.adapters.health_json import health_json
from sidecar.adapters.session_store import FileAccountLock, SessionStore
from sidecar.adapters.spool import Batch, Spool, SpoolError
from sidecar.adapters.sqlite_files import integrity_problem
from sidecar.adapters.sqlite_state import SqliteStateStore, StateStoreError
from sidecar.adapters.store_sqlite import SqliteMessageStore
from sidecar.compose import assemble
from sidecar.core.clock import ReplayClock
from sidecar.core.spooling import Conflict, Prepared
from sidecar.core.storage import Storage
from sidecar.domain.account import PersistedState
from sidecar.domain.classify import classify
from sidecar.domain.records import build_records

from .support.backends import Backend
from .support.cli import SidecarProcess, sidecar_cli, wait_ready
from .support.config import TOKEN, ConfigFactory
from .support.http import get
from .support.paths import REPO
from .support.polling import wait_for

T0 = 1_764_068_400.0
CHATS = [build.jid(f"1202555{n:04d}") for n in (123, 147, 160, 171, 188)]
RUNBOOK = REPO / "docs" / "runbook.md"


# -- helpers ---------------------------------------------------------------------------


def message(i: int, t: float, body: str) -> Any:
    return build.message_event(
        build.text(body),
        chat=CHATS[i % len(CHATS)],
        from_me=i % 7 == 3,
        message_id=f"F{i:05d}",
        timestamp_ms=round(t * 1000),
    )


def write_capture(path: Path, records: list[tuple[float, str | None, Any]]) -> Path:
    path.write_text("".join(encode_record(t, a, e) + "\n" for t, a, e in records))
    return path


def write_config(
    path: Path, state_dir: Path, port: int, tokens_file: Path, store: dict[str, Any]
) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "http": {"listen": f"127.0.0.1:{port}"},
                "state_dir": str(state_dir),
                "auth": {"tokens_file": str(tokens_file)},
                "store": store,
                "accounts": [{"id": "sales"}],
            }
        )
    )
    return path


def metric(port: int, series: str) -> float:
    """The value of one series (``name{labels}``) on /metrics."""
    text = get(f"http://127.0.0.1:{port}/metrics")
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    assert match, f"{series} is not on /metrics"
    return float(match.group(1))


HANDLED = 'whatsapp_events_total{account="sales",event="MessageEv"}'
SPOOLED = 'whatsapp_spool_messages{account="sales"}'
REJECTED = 'whatsapp_spool_write_errors_total{account="sales"}'


def stop(process: SidecarProcess, sig: int = signal.SIGTERM) -> tuple[str, str]:
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        raise AssertionError(f"wa-sidecar did not stop on {sig!r}: {err[-3000:]}") from None


def stored_messages(state_dir: Path) -> dict[str, dict[str, Any]]:
    """message id -> document, read from the SQLite store without changing it."""
    db = sqlite3.connect(f"file:{state_dir / 'messages.sqlite3'}?mode=ro", uri=True)
    try:
        return {m: json.loads(doc) for m, doc in db.execute("SELECT message_id, doc FROM messages")}
    finally:
        db.close()


def abandon(spool: Spool) -> None:
    """What SIGKILL does to a spool: its files are closed, nothing more is written."""
    os.close(spool._journal.fd)
    spool._queue.db.close()


def spool_records(i: int, body: str) -> tuple[Any, Any]:
    event = message(i, T0 + i, body)
    built = build_records("sales", event, classify(event.Message))
    assert built is not None
    return built


# -- 1. SIGKILL at random points of a replay into Firestore ----------------------------

KILL_SEED = 20251125
KILL_MESSAGES = 3000
KILL_SPACING_S = 0.002  # of capture time: 6 s for the whole capture at --speed 1

#: Runs wa-sidecar, SIGKILLing itself inside the spool's journal->SQLite move: after the
#: rows went in, before COMMIT. Which move: the first of at least FAULT_KILL_IN_MOVE_OF
#: entries, or (FAULT_KILL_IN_RECOVERY=1) the one a start makes of a killed process's
#: journal. It first writes what it killed into FAULT_MARKER.
HARNESS = """
import json, os, signal, sys
from pathlib import Path

from sidecar.adapters.spool import facade, queue
from sidecar.cli import main

MARKER = Path(os.environ["FAULT_MARKER"])
MIN_ENTRIES = int(os.environ.get("FAULT_KILL_IN_MOVE_OF", "0"))
IN_RECOVERY = os.environ.get("FAULT_KILL_IN_RECOVERY") == "1"


class Connection:
    def __init__(self, db):
        self._db = db
        self.die_at_commit = None

    def execute(self, sql, *args):
        if sql == "COMMIT" and self.die_at_commit is not None:
            MARKER.write_text(self.die_at_commit)
            os.kill(os.getpid(), signal.SIGKILL)
        return self._db.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._db, name)


opened = queue.open_private
queue.open_private = lambda *args, **kwargs: Connection(opened(*args, **kwargs))
starting = False
init, flush = facade.Spool.__init__, facade.Spool._flush


def __init__(self, *args, **kwargs):
    global starting
    starting = True
    try:
        init(self, *args, **kwargs)
    finally:
        starting = False


def _flush(self, generation):
    entries = self._journal.pending
    if entries and (starting if IN_RECOVERY else len(entries) >= MIN_ENTRIES):
        self._queue.db.die_at_commit = json.dumps(
            {"entries": len(entries), "recovery": starting, "last": entries[-1].doc.message_id}
        )
    flush(self, generation)


facade.Spool.__init__, facade.Spool._flush = __init__, _flush
sys.exit(main(sys.argv[1:]))
"""


class KillChain:
    """Replays the capture from ``position`` on, run after run, into one Firestore project."""

    def __init__(self, tmp_path: Path, tokens_file: Path, backend: Backend) -> None:
        self.tmp_path = tmp_path
        self.tokens_file = tokens_file
        self.backend = backend
        self.bodies = [f"fault message {i} " + "x" * (i % 50) for i in range(KILL_MESSAGES)]
        self.times = [T0 + 1 + i * KILL_SPACING_S for i in range(KILL_MESSAGES)]
        self.position = 0  # the first message the next run replays
        self.runs = 0
        self.harness = tmp_path / "harness.py"
        self.harness.write_text(HARNESS)

    def launch(self, *extra: str, harness: dict[str, str] | None = None) -> SidecarProcess:
        self.runs += 1
        config = write_config(
            self.tmp_path / f"run{self.runs}.yaml",
            self.backend.state_dir,
            0,
            self.tokens_file,
            self.backend.store_config(write_timeout="5s"),
        )
        first = self.position
        records: list[tuple[float, str | None, Any]] = [
            (self.times[first] - 0.001, "sales", build.connected())
        ]
        records += [
            (self.times[i], "sales", message(i, self.times[i], self.bodies[i]))
            for i in range(first, KILL_MESSAGES)
        ]
        capture = write_capture(self.tmp_path / f"run{self.runs}.jsonl", records)
        args = ["replay", str(capture), "--config", str(config), *extra]
        if harness is None:
            return sidecar_cli(*args)
        marker = self.tmp_path / f"run{self.runs}.killed"
        env = {**harness, "FAULT_MARKER": str(marker)}
        return sidecar_cli(str(self.harness), *args, env=env)

    def killed_in_move(self, process: SidecarProcess, timeout: float) -> dict[str, Any]:
        """Wait for a harness run to kill itself; what it was moving when it did."""
        try:
            _, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
            raise AssertionError(f"no kill inside a journal->SQLite move: {err[-2000:]}") from None
        assert process.returncode == -signal.SIGKILL, err[-2000:]
        marker = self.tmp_path / f"run{self.runs}.killed"
        killed: dict[str, Any] = json.loads(marker.read_text())
        return killed

    def kill_after(self, handled: int) -> int:
        """Start a run at --speed 1, SIGKILL it once it has handled ``handled`` messages;
        returns how many it had handled at the last look before the kill."""
        process = self.launch("--speed", "1", "--linger", "60")
        try:
            port = wait_ready(process)
            seen = int(metric(port, HANDLED))
            while seen < handled and self.position + seen < KILL_MESSAGES:
                time.sleep(0.02)
                seen = int(metric(port, HANDLED))
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=15)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        assert process.returncode == -signal.SIGKILL
        return seen


@pytest.mark.services
def test_sigkill_at_random_points_of_a_firestore_replay_loses_and_duplicates_nothing(
    tmp_path: Path, tokens_file: Path, emulator_host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    began = time.monotonic()
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", emulator_host)
    backend = Backend("firestore", tmp_path / "state", emulator_host)
    chain = KillChain(tmp_path, tokens_file, backend)
    rng = random.Random(KILL_SEED)

    # 1. killed inside a large move into SQLite: as fast as it goes, the journal fills
    #    while the store commits. Every message up to the newest journaled one was handled.
    process = chain.launch("--linger", "60", harness={"FAULT_KILL_IN_MOVE_OF": "200"})
    moving = chain.killed_in_move(process, timeout=30)
    assert moving["recovery"] is False
    assert moving["entries"] >= 200
    chain.position = int(moving["last"][1:]) + 1

    # 2. killed inside the start's move of that journal: it holds exactly the entries
    #    whose move was killed, none lost and none more.
    process = chain.launch("--linger", "60", harness={"FAULT_KILL_IN_RECOVERY": "1"})
    recovering = chain.killed_in_move(process, timeout=30)
    assert recovering == {**moving, "recovery": True}
    # so far those messages are in the journal and nowhere else: only it can deliver them
    in_journal = {f"F{i:05d}" for i in range(chain.position - moving["entries"], chain.position)}
    in_firestore = {m for _, messages in backend.read().values() for m in messages}
    assert not in_journal & in_firestore

    # 3. SIGKILL from outside at random points: right after the start (while the
    #    recovered backlog drains), and after a random number of messages. The next run
    #    replays from the last progress seen, less the one message that may have been
    #    counted but not yet journaled when it was seen.
    targets = [rng.randint(0, 5), rng.randint(50, 300), rng.randint(300, 900)]
    rng.shuffle(targets)
    for target in targets:
        seen = chain.kill_after(target)
        chain.position = max(chain.position, chain.position + seen - 1)
    assert chain.position < KILL_MESSAGES - 100, "the kills should leave a tail to replay"

    # 4. the rest, to the end; the spool drains.
    process = chain.launch("--linger", "60")
    try:
        port = wait_ready(process)
        remaining = KILL_MESSAGES - chain.position
        wait_for(lambda: metric(port, HANDLED) == remaining, 30, "the rest to be handled")
        wait_for(lambda: metric(port, SPOOLED) == 0, 30, "the spool to drain")
        wait_for(
            lambda: not firestore_problems(chain, backend.read()), 30, "Firestore to hold it all"
        )
    finally:
        _, err = stop(process)
    assert process.returncode == 0, err[-3000:]
    assert "Traceback" not in err

    docs = backend.read()
    ids = [m for _, messages in docs.values() for m in messages]
    assert len(ids) == len(set(ids)) == KILL_MESSAGES  # one document per message, no more
    assert firestore_problems(chain, docs) == []
    assert chain.runs == 6
    assert time.monotonic() - began < 90


def firestore_problems(chain: KillChain, docs: dict[str, Any]) -> list[str]:
    """How Firestore differs from the capture: each message must be there once, in its
    thread, with its body; each thread's fields must come from its newest message (and
    its newest inbound one). Empty when it holds the capture."""
    expected: dict[str, tuple[dict[str, Any], dict[str, dict[str, Any]]]] = {}
    for i in range(KILL_MESSAGES):
        chat = CHATS[i % len(CHATS)]
        thread, messages = expected.setdefault(f"sales__{chat.User}@{chat.Server}", ({}, {}))
        ts = round(chain.times[i] * 1000)
        direction = "outbound" if i % 7 == 3 else "inbound"
        messages[f"F{i:05d}"] = {"body": chain.bodies[i], "direction": direction, "tsClient": ts}
        thread |= {"lastMessageAtMs": ts, "lastMessageDirection": direction}
        if direction == "inbound":
            thread |= {"lastInboundAtMs": ts, "lastMessageText": chain.bodies[i]}
    problems = [f"unexpected thread {t}" for t in docs if t not in expected]
    for thread_id, (thread, messages) in expected.items():
        doc, stored = docs.get(thread_id, (None, {}))
        if doc is None or any(doc.get(k) != v for k, v in thread.items()):
            problems.append(f"{thread_id}: thread {doc and {k: doc.get(k) for k in thread}}")
        missing, extra = messages.keys() - stored.keys(), stored.keys() - messages.keys()
        if missing or extra:
            problems.append(f"{thread_id}: {len(missing)} missing, {len(extra)} unexpected")
        for message_id in messages.keys() & stored.keys():
            fields = stored[message_id]
            if any(fields.get(k) != v for k, v in messages[message_id].items()):
                problems.append(f"{thread_id}/{message_id}: {fields}")
    return problems


# -- 2. the disk under state_dir fills up ----------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mounts a tmpfs of the given size; fails (never skips) when it cannot."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(
                f"cannot mount a {size} tmpfs at {folder}: the disk-full tests need root and"
                f" mount(8) ({done.stderr.strip() or done.returncode})"
            )
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        if subprocess.run(["umount", str(folder)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(folder: Path) -> Path:
    """Take every free byte of ``folder``'s file system with one file; return it."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        for chunk in (1 << 20, 1 << 16, 4096, 512, 1):
            error = None
            try:
                while True:
                    os.write(fd, bytes(chunk))
            except OSError as exc:
                error = exc.errno
            assert error == errno.ENOSPC
    finally:
        os.close(fd)
    assert os.statvfs(folder).f_bavail == 0
    return filler


@pytest.mark.services
def test_a_full_state_disk_refuses_what_it_cannot_journal_and_recovers(
    tmp_path: Path, tokens_file: Path, small_disk: Callable[[str], Path]
) -> None:
    """Phase A lands; the disk fills; phase B arrives (what the journal cannot take is
    counted and logged, the rest waits); the disk is freed; phase C and everything
    accepted land. The process answers HTTP throughout and exits 0."""
    state_dir = small_disk("16m")
    phases = {"A": (1.0, 60), "B": (5.0, 200), "C": (11.0, 60)}
    records: list[tuple[float, str | None, Any]] = [(T0, "sales", build.connected())]
    bodies, phase_of = {}, {}
    i = 0
    for phase, (start_s, count) in phases.items():
        for k in range(count):
            t = T0 + start_s + k * 0.005
            bodies[f"F{i:05d}"] = f"phase {phase} message {i} " + "lorem ipsum " * 100
            phase_of[f"F{i:05d}"] = phase
            records.append((t, "sales", message(i, t, bodies[f"F{i:05d}"])))
            i += 1
    capture = write_capture(tmp_path / "disk.jsonl", records)
    config = write_config(tmp_path / "disk.yaml", state_dir, 0, tokens_file, {})
    process = sidecar_cli(
        "replay", str(capture), "--config", str(config), "--speed", "1", "--linger", "60"
    )
    try:
        port = wait_ready(process)
        health_url = f"http://127.0.0.1:{port}/api/whatsapp/accounts/sales/health"
        wait_for(lambda: len(stored_messages(state_dir)) == 60, 15, "phase A to land")
        filler = fill(state_dir)
        wait_for(lambda: metric(port, HANDLED) == 260, 20, "phase B to be handled")
        time.sleep(1.5)  # a state flush and a few store retries fail meanwhile

        assert get(f"http://127.0.0.1:{port}/healthz") == {"status": "alive"}
        rejected = metric(port, REJECTED)
        assert 0 < rejected <= 200
        store = get(health_url, TOKEN)["store"]
        assert store["spoolWriteErrors"] == rejected
        assert store["spoolError"] in ("OSError (ENOSPC)", "OperationalError (SQLITE_FULL)")
        assert store["lastError"] == "OperationalError (SQLITE_FULL)"
        assert metric(port, SPOOLED) == 200 - rejected  # accepted: they wait
        assert len(stored_messages(state_dir)) == 60

        filler.unlink()
        wait_for(lambda: metric(port, HANDLED) == 320, 20, "phase C to be handled")
        # the store's backoff grew while the disk was full: up to ~15 s here
        wait_for(lambda: metric(port, SPOOLED) == 0, 40, "the spool to drain")
        assert metric(port, REJECTED) == rejected  # nothing refused once there was space
        store = get(health_url, TOKEN)["store"]
        assert (store["spoolError"], store["lastError"], store["backlog"]) == (None, None, 0)
    finally:
        _, err = stop(process)
    assert process.returncode == 0, err[-3000:]

    stored = stored_messages(state_dir)
    assert len(stored) == 320 - rejected  # every message accepted, and only those
    assert all(stored[m]["body"] == bodies[m] for m in stored)
    assert sorted(m for m in stored if phase_of[m] != "B") == sorted(
        m for m in bodies if phase_of[m] != "B"
    )
    # one ERROR line when it began, one when it ended; error kinds only, no content
    refused = [line for line in err.splitlines() if "making a real message durable" in line]
    assert len(refused) == 2, refused
    assert refused[0].endswith(
        "ERROR sidecar.core.storage account=sales spool: making a real message durable failed:"
        " OSError (ENOSPC); it is not stored (whatsapp_spool_write_errors_total)"
    )
    assert refused[1].endswith(f"works again, after {int(rejected)} failures")
    flush_lines = [line for line in err.splitlines() if "'state-flush'" in line]
    assert len(flush_lines) == 2, flush_lines  # not one traceback a second
    for secret in ("lorem", "phase B", "12025550", "Traceback"):
        assert secret not in err


def test_the_spool_on_a_full_disk_keeps_every_message_it_accepted(
    small_disk: Callable[[str], Path],
) -> None:
    """In process: a refused enqueue raises SpoolError and leaves no trace; a failed move
    keeps the journal; after the space returns, a killed process's restart has every
    accepted message and no refused one."""
    folder = small_disk("1m")
    spool = Spool(folder)
    accepted, refused = [], []
    spool.enqueue(*spool_records(0, "before"))
    accepted.append("F00000")
    spool.flush()
    filler = fill(folder)
    causes = set()
    for i in range(1, 200):
        try:
            spool.enqueue(*spool_records(i, f"while full {i} " + "y" * 300))
        except SpoolError as exc:
            causes.add(type(exc.__cause__))
            refused.append(f"F{i:05d}")
        else:
            accepted.append(f"F{i:05d}")
    assert causes == {OSError}
    assert refused
    spool.flush()  # the move fails: the journal keeps its entries
    assert spool.error() is not None
    filler.unlink()
    for i in range(200, 205):
        spool.enqueue(*spool_records(i, "after"))
        accepted.append(f"F{i:05d}")
    abandon(spool)  # killed here
    restarted = Spool(folder)
    ids = [doc.message_id for _, doc in restarted.take(limit=1000).messages]
    assert ids == accepted
    assert restarted.error() is None
    restarted.close()


def test_a_journal_that_cannot_start_over_refuses_messages_and_loses_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The header of a new journal generation cannot be written (the disk filled between
    the truncate and the write). Before, the next entry became the journal's first line,
    which the next start read as the header: it refused to start (TypeError)."""
    spool = Spool(tmp_path)
    spool.enqueue(*spool_records(0, "moved"))
    real_write = os.write
    failing = {"on": True}

    def write(fd: int, data: bytes) -> int:
        if failing["on"] and data.startswith(b'{"generation"'):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)  # the spool's os.write
    spool.flush()  # moved; the new journal's header fails
    error = spool.error()
    assert error is not None
    assert error[0] == "OSError (ENOSPC)"
    assert error[1] == pytest.approx(time.time(), abs=5)
    with pytest.raises(SpoolError):
        spool.enqueue(*spool_records(1, "refused"))  # it tries the header again, and fails
    failing["on"] = False
    spool.enqueue(*spool_records(2, "journaled"))
    assert spool.error() is None
    journal = (tmp_path / "spool.journal").read_bytes().splitlines()
    assert json.loads(journal[0]) == {"generation": 2}
    assert len(journal) == 2
    abandon(spool)  # killed here
    restarted = Spool(tmp_path)
    assert [d.message_id for _, d in restarted.take().messages] == ["F00000", "F00002"]
    restarted.close()


def test_an_unreadable_journal_header_recovers_every_entry(tmp_path: Path) -> None:
    killed = Spool(tmp_path)
    for i in range(3):
        killed.enqueue(*spool_records(i, f"kept {i}"))
    journal = tmp_path / "spool.journal"
    lines = journal.read_bytes().split(b"\n", 1)
    journal.write_bytes(b"\x00garbage\n" + lines[1])
    abandon(killed)
    restarted = Spool(tmp_path)
    assert [d.message_id for _, d in restarted.take().messages] == ["F00000", "F00001", "F00002"]
    restarted.close()


class RecordingStore:
    """A store that records the message ids it writes."""

    backend = "memory"

    def __init__(self) -> None:
        self.written: list[str] = []

    def prepare(self, batch: Batch) -> Prepared:
        return Prepared(batch, batch)

    async def commit(self, prepared: Prepared) -> list[Conflict]:
        self.written += [doc.message_id for _, doc in prepared.batch.messages]
        return []

    def refuses(self, exc: BaseException) -> bool:
        return False

    async def close(self) -> None:
        pass


async def test_the_writer_outlives_errors_of_the_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """take() and ack() fail (a full or failing disk): before, the writer task died with
    the first exception and nothing was written again until a restart."""
    spool = Spool(tmp_path, thread_interval_s=0.0)
    store = RecordingStore()
    storage = Storage(spool, store)
    storage.writer._backoff = type(storage.writer._backoff)(base_s=0.01, cap_s=0.02)
    real_take, real_ack = spool.take, spool.ack
    faults = {"take": 2, "ack": 2}

    def take(*args: Any, **kwargs: Any) -> Batch:
        if faults["take"]:
            faults["take"] -= 1
            raise SpoolError("cannot read") from sqlite3.OperationalError("disk I/O error")
        return real_take(*args, **kwargs)

    def ack(batch: Batch) -> None:
        if faults["ack"]:
            faults["ack"] -= 1
            raise SpoolError("cannot update") from OSError(errno.ENOSPC, "full")
        real_ack(batch)

    monkeypatch.setattr(spool, "take", take)
    monkeypatch.setattr(spool, "ack", ack)
    for i in range(3):
        spool.enqueue(*spool_records(i, f"m{i}"))
    task = asyncio.create_task(storage.writer.run())
    try:
        for _ in range(200):
            await asyncio.sleep(0.02)
            # the writer clears its error once the drain that emptied the spool returns
            if spool.is_empty() and storage.writer.spool_error is None:
                break
        assert not task.done()
        assert spool.is_empty()
        assert storage.writer.spool_error is None
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert sorted(set(store.written)) == ["F00000", "F00001", "F00002"]
    assert store.written.count("F00000") == 3  # written again until its ack went through
    assert "spool writer: taking or confirming a batch failed: OperationalError" in caplog.text
    assert "works again, after 4 failures" in caplog.text
    await storage.close()


def test_a_failed_state_save_is_written_with_the_next_one(
    small_disk: Callable[[str], Path],
) -> None:
    """Before, the states of a failed save were gone: the caller had taken them."""
    folder = small_disk("1m")
    store = SqliteStateStore(folder)
    store.save([("sales", PersistedState(T0, T0, {0: b"x" * 2048}))])
    filler = fill(folder)
    with pytest.raises(StateStoreError):
        store.save([("sales", PersistedState(T0 + 60, T0 + 61, {1: b"y" * 200_000}))])
    filler.unlink()
    # sales' phone was seen meanwhile: its newer state joins the one that failed
    later = PersistedState(T0 + 60, T0 + 61, phone_seen_at=T0 + 90)
    assert store.save([("support", PersistedState(T0 + 5, None)), ("sales", later)]) == 2
    saved = store.load()
    assert (saved["sales"].last_real_at, saved["sales"].last_protocol_at) == (T0 + 60, T0 + 61)
    assert saved["sales"].phone_seen_at == T0 + 90
    assert saved["sales"].gaps == {0: b"x" * 2048, 1: b"y" * 200_000}
    assert saved["support"].last_real_at == T0 + 5
    store.close()


def test_a_full_disk_at_start_up_starts_without_storage_and_opens_it_when_space_returns(
    small_disk: Callable[[str], Path],
    make_config: ConfigFactory,
    clock: ReplayClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The spool, the SQLite store and the state database cannot open on a full disk: the
    sidecar starts anyway, says what fails (health, metrics, one ERROR line each), refuses
    real messages meanwhile, and opens each part once there is space, keeping the state
    it had saved before and what it learned since."""
    monkeypatch.setattr(deferred, "RETRY_S", 0.0)
    folder = small_disk("16m")
    loaded = make_config([{"id": "sales"}], state_dir=str(folder / "state"))
    earlier = assemble(loaded, clock)  # a run with space left its files and its state
    earlier.sidecar.handle("sales", message(0, T0, "before the disk filled"), T0)
    assert earlier.sidecar.flush_state() == 1
    assert earlier.storage is not None
    asyncio.run(earlier.storage.close())
    earlier.close()

    filler = fill(folder)
    assembly = assemble(loaded, clock)
    sidecar, storage = assembly.sidecar, assembly.storage
    assert storage is not None
    assert isinstance(storage.spool, deferred.DeferredSpool)
    assert isinstance(storage.store, deferred.DeferredStore)
    health = health_json(sidecar.health("sales"))
    assert health["store"]["spoolError"] == "OperationalError (SQLITE_IOERR_SHMSIZE)"
    assert health["lastRealMessageMs"] is None  # the saved state cannot be read yet
    sidecar.handle("sales", message(1, T0 + 100, "while the disk is full"), T0 + 100)
    health = health_json(sidecar.health("sales"))
    assert (health["store"]["spoolError"], health["store"]["spoolWriteErrors"]) == (
        "OperationalError (SQLITE_IOERR_SHMSIZE)",
        1,
    )
    sidecar.handle("sales", build.message_event(build.app_state_key_share()), T0 + 101)
    assert sidecar.flush_state() == 0  # nothing written over the state it could not read
    assert storage.write_errors("sales") == 1
    text = assembly.metrics.render().decode()
    assert 'whatsapp_spool_write_errors_total{account="sales"} 1.0' in text

    filler.unlink()
    assert sidecar.flush_state() == 1  # opened, read, merged, written
    restored = sidecar.snapshot("sales")
    assert (restored.last_real_at, restored.last_protocol_at) == (T0 + 100, T0 + 101)
    # the writer's next take opens the spool (the event path never waits for that), and
    # the store with it: the message the earlier run left in the spool is written
    assert asyncio.run(storage.writer.drain_once()) == 2
    sidecar.handle("sales", message(2, T0 + 200, "after the space returned"), T0 + 200)
    sidecar.handle("sales", message(3, T0 + 201, "and one more"), T0 + 201)
    asyncio.run(drain(storage))
    assert storage.write_errors("sales") == 1
    health = health_json(sidecar.health("sales"))
    assert (health["store"]["spoolError"], health["store"]["lastError"]) == (None, None)
    assert sidecar.flush_state() == 1
    asyncio.run(storage.close())
    assembly.close()
    stored = stored_messages(folder / "state")
    assert sorted(stored) == ["F00000", "F00002", "F00003"]
    saved = SqliteStateStore(folder / "state").load()
    assert (saved["sales"].last_real_at, saved["sales"].last_protocol_at) == (T0 + 201, T0 + 101)
    # the learned traffic: the earlier run's message, and the three of this one, added up
    _, *hourly = struct.unpack("<d24I", saved["sales"].gaps[0])
    assert sum(hourly) == 4


def test_the_account_lock_is_held_on_a_full_disk(small_disk: Callable[[str], Path]) -> None:
    """Its holder's pid (for a waiting process's message) cannot be written: it is held."""
    folder = small_disk("1m")
    fill(folder)
    lock = FileAccountLock(folder, "sales")
    assert lock.acquire()
    lock.release()


def test_each_connection_attempt_makes_the_session_store_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk at start-up may have kept the session store from being made, and
    whatsmeow would make it open to all: each attempt makes it owner-only first, and one
    where that fails is a failed dial, tried again with backoff."""
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    store = SessionStore("sales", str(not_a_folder / "sales.sqlite3"), not_a_folder / "s.sqlite3")
    made: list[str] = []
    monkeypatch.setattr(neonize_session, "NewClient", made.append)
    delivered: list[Any] = []
    neonize_session.NeonizeSession("sales", store, delivered.append)._connect()
    assert (made, delivered) == ([], [neonize_session.DIAL_FAILED])


async def drain(storage: Storage) -> int:
    """Write batches until the spool is empty; how many operations were written."""
    written = 0
    for _ in range(20):
        written += await storage.writer.drain_once()
        if storage.spool.is_empty():
            return written
    raise AssertionError("the spool did not drain")


@pytest.mark.services
def test_a_sidecar_started_on_a_full_disk_serves_and_recovers(
    tmp_path: Path, tokens_file: Path, small_disk: Callable[[str], Path]
) -> None:
    """Started with state_dir's disk full, the CLI serves /healthz, /metrics and health
    (which name the failing spool), counts and logs the real messages it cannot take, and
    stores the later ones once space returns; it exits 0."""
    state_dir = small_disk("16m") / "state"
    filler = fill(state_dir.parent)
    records: list[tuple[float, str | None, Any]] = [(T0, "sales", build.connected())]
    records += [(T0 + 1 + i * 0.01, "sales", message(i, T0 + 1, f"full {i}")) for i in range(20)]
    records += [(T0 + 8, None, None)]
    records += [
        (T0 + 9 + i * 0.01, "sales", message(i, T0 + 9, f"room {i}")) for i in range(20, 40)
    ]
    capture = write_capture(tmp_path / "full.jsonl", records)
    config = write_config(tmp_path / "full.yaml", state_dir, 0, tokens_file, {})
    process = sidecar_cli(
        "replay", str(capture), "--config", str(config), "--speed", "1", "--linger", "60"
    )
    try:
        port = wait_ready(process)
        health_url = f"http://127.0.0.1:{port}/api/whatsapp/accounts/sales/health"
        wait_for(lambda: metric(port, REJECTED) == 20, 20, "the first messages to be refused")
        assert get(f"http://127.0.0.1:{port}/healthz") == {"status": "alive"}
        store = get(health_url, TOKEN)["store"]
        assert store["spoolError"] == "OperationalError (SQLITE_FULL)"
        assert store["spoolWriteErrors"] == 20
        filler.unlink()
        wait_for(lambda: metric(port, HANDLED) == 40, 20, "the later messages to be handled")
        wait_for(lambda: len(stored_messages(state_dir)) == 20, 30, "them to be stored")
        store = get(health_url, TOKEN)["store"]
        assert (store["spoolError"], store["lastError"], store["backlog"]) == (None, None, 0)
        assert metric(port, REJECTED) == 20
    finally:
        _, err = stop(process)
    assert process.returncode == 0, err[-3000:]
    assert sorted(stored_messages(state_dir)) == [f"F{i:05d}" for i in range(20, 40)]
    opening = [line for line in err.splitlines() if "sidecar.adapters.deferred" in line]
    assert any(
        line.endswith(
            "ERROR sidecar.adapters.deferred opening the spool spool.sqlite3 failed:"
            " OperationalError (SQLITE_FULL); real messages are not stored until it opens"
            " (whatsapp_spool_write_errors_total)"
        )
        for line in opening
    ), opening
    assert any("opening the spool spool.sqlite3 works again" in line for line in opening)
    for secret in ("full 1", "room 2", "12025550", "Traceback"):
        assert secret not in err


# -- 3. corrupt state databases --------------------------------------------------------

PAGE = 4096


def damage(path: Path, how: str) -> bytes:
    """Damage the SQLite file at ``path``; return its bytes as left."""
    size = path.stat().st_size
    rng = random.Random(f"{KILL_SEED}-{how}")
    with path.open("r+b") as file:
        if how == "garbage":
            file.write(rng.randbytes(size))
        elif how == "truncated mid-page":
            file.truncate((size * 3 // 5) // PAGE * PAGE + 1000)
        elif how == "a page overwritten":
            file.seek((size // PAGE // 2) * PAGE)
            file.write(b"\xa5" * PAGE)
        else:
            raise ValueError(how)
    return path.read_bytes()


def runbook_section(title: str) -> str:
    text = RUNBOOK.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def tick_capture(tmp_path: Path) -> Path:
    return write_capture(tmp_path / "tick.jsonl", [(T0 + 100, None, None)])


def only_line(err: str, pattern: str) -> re.Match[str]:
    matches = [m for m in (re.search(pattern, line) for line in err.splitlines()) if m]
    assert len(matches) == 1, err[-3000:]
    return matches[0]


@pytest.mark.services
@pytest.mark.parametrize("how", ["garbage", "truncated mid-page", "a page overwritten"])
def test_a_corrupt_spool_stops_the_start_and_the_documented_recovery_works(
    tmp_path: Path, tokens_file: Path, how: str
) -> None:
    state_dir = tmp_path / "state"
    spool = Spool(state_dir)
    bodies = {}
    for i in range(300):
        bodies[f"F{i:05d}"] = f"spooled {i} " + "z" * 500
        spool.enqueue(*spool_records(i, bodies[f"F{i:05d}"]))
    spool.close()  # all 300 in spool.sqlite3, none in the store
    spool_file = state_dir / "spool.sqlite3"
    damaged = damage(spool_file, how)
    config = write_config(tmp_path / "c.yaml", state_dir, 0, tokens_file, {})

    refused = sidecar_cli("replay", str(tick_capture(tmp_path)), "--config", str(config))
    _, err = refused.communicate(timeout=60)
    assert refused.returncode == 1
    only_line(
        err,
        rf" ERROR sidecar wa-sidecar replay: {re.escape(str(spool_file))} is corrupt \([^()]+\);"
        " it holds real messages not yet written to the store, so the sidecar does not start."
        rf" Stop it, run `wa-sidecar recover-db --config {re.escape(str(config))}`, and start"
        " it again; see docs/runbook.md#corrupt-state-database$",
    )
    assert "Traceback" not in err
    assert spool_file.read_bytes() == damaged  # nothing decided for the operator

    # the runbook's recovery
    section = runbook_section("Corrupt state database")
    assert "wa-sidecar recover-db --config /etc/wa-sidecar/config.yaml" in section
    recovery = sidecar_cli("recover-db", "--config", str(config))
    out, err = recovery.communicate(timeout=60)
    assert recovery.returncode == 0, err
    report = only_line(
        out,
        rf"^{re.escape(str(spool_file))}: corrupt \(.+\); moved to"
        r" (spool\.sqlite3\.corrupt-\d{8}T\d{6}Z); the new file holds the (\d+) rows that"
        r" could be read \(spool_journal \d, spool_messages (\d+), spool_threads \d\)$",
    )
    assert (state_dir / report.group(1)).read_bytes() == damaged
    assert integrity_problem(spool_file) is None
    db = sqlite3.connect(spool_file)
    salvaged = sorted(row[0] for row in db.execute("SELECT message_id FROM spool_messages"))
    db.close()
    assert len(salvaged) == int(report.group(3))
    if how == "garbage":
        assert salvaged == []
    elif how == "truncated mid-page":  # the rows on the pages before the cut
        assert 100 < len(salvaged) < 250
        assert salvaged[0] == "F00000"
        assert set(salvaged) < set(bodies)
    else:  # the rows before the damaged page and after it
        assert 250 < len(salvaged) < 300
        assert (salvaged[0], salvaged[-1]) == ("F00000", "F00299")

    config = write_config(tmp_path / "c.yaml", state_dir, 0, tokens_file, {})
    process = sidecar_cli(
        "replay", str(tick_capture(tmp_path)), "--config", str(config), "--linger", "30"
    )
    try:
        port = wait_ready(process)
        wait_for(lambda: metric(port, SPOOLED) == 0, 20, "the recovered spool to drain")
        # a row read back from a damaged page can be damaged itself: it is dropped, counted
        dropped = int(metric(port, REJECTED))
        wait_for(
            lambda: len(stored_messages(state_dir)) + dropped == len(salvaged), 20, "the store"
        )
    finally:
        _, err = stop(process)
    assert process.returncode == 0, err[-3000:]
    stored = stored_messages(state_dir)
    assert set(stored) <= set(salvaged)
    assert all(stored[m]["body"] == bodies[m] for m in stored)
    if how == "garbage":
        assert dropped == 0
    damaged_rows = re.findall(r"spool: (\d+) damaged rows of spool.sqlite3 could not be read", err)
    assert sum(map(int, damaged_rows)) == dropped


@pytest.mark.services
@pytest.mark.parametrize("how", ["garbage", "truncated mid-page"])
def test_a_corrupt_account_state_is_moved_aside_and_the_sidecar_starts(
    tmp_path: Path, tokens_file: Path, how: str
) -> None:
    state_dir = tmp_path / "state"
    states = {
        f"acct-{i:03d}": PersistedState(T0 + i, T0 + i + 0.5, {0: bytes([i]) * 3000})
        for i in range(100)
    }
    store = SqliteStateStore(state_dir)
    store.save(states.items())
    store.close()
    state_file = state_dir / "account_state.sqlite3"
    damaged = damage(state_file, how)
    capture = write_capture(
        tmp_path / "c.jsonl",
        [(T0, "sales", build.connected()), (T0 + 7, "sales", message(0, T0 + 7, "hello"))],
    )
    config = write_config(tmp_path / "c.yaml", state_dir, 0, tokens_file, {})
    process = sidecar_cli("replay", str(capture), "--config", str(config))
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-3000:]
    warning = only_line(
        err,
        rf" WARNING sidecar\.adapters\.sqlite_state the state database"
        rf" {re.escape(str(state_file))} is corrupt \([^()]+\): moved it to"
        r" (account_state\.sqlite3\.corrupt-\d{8}T\d{6}Z) and started a new one with the"
        r" (\d+) rows that could be read; last-real times and learned traffic that were lost"
        r" are learned again \(docs/runbook\.md#corrupt-state-database\)$",
    )
    assert (state_dir / warning.group(1)).read_bytes() == damaged
    assert integrity_problem(state_file) is None
    kept = SqliteStateStore(state_dir).load()
    assert kept.pop("sales").last_real_at == T0 + 7  # this run's, saved on the way out
    if how == "garbage":
        assert (kept, warning.group(2)) == ({}, "0")
    else:  # the account rows come first; traffic models were cut
        assert 0 < int(warning.group(2)) < 200
        assert 0 < len(kept) <= 100
        for account, state in kept.items():
            assert state.last_real_at == states[account].last_real_at
            assert state.gaps in ({}, states[account].gaps)


@pytest.mark.services
def test_a_corrupt_sqlite_message_store_stops_the_start(tmp_path: Path, tokens_file: Path) -> None:
    state_dir = tmp_path / "state"
    asyncio.run(SqliteMessageStore(state_dir).close())
    store_file = state_dir / "messages.sqlite3"
    damaged = damage(store_file, "garbage")
    config = write_config(tmp_path / "c.yaml", state_dir, 0, tokens_file, {})
    process = sidecar_cli("replay", str(tick_capture(tmp_path)), "--config", str(config))
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    only_line(
        err,
        rf" ERROR sidecar wa-sidecar replay: {re.escape(str(store_file))} is corrupt"
        r" \(file is not a database\); it holds the stored messages \(the SQLite message"
        r" store\), so the sidecar does not start\.",
    )
    assert store_file.read_bytes() == damaged


@pytest.mark.services
def test_recover_db_refuses_while_the_sidecar_runs(tmp_path: Path, tokens_file: Path) -> None:
    state_dir = tmp_path / "state"
    config = write_config(tmp_path / "c.yaml", state_dir, 0, tokens_file, {})
    process = sidecar_cli(
        "replay", str(tick_capture(tmp_path)), "--config", str(config), "--linger", "30"
    )
    try:
        port = wait_ready(process)
        # the operator's config names the port the sidecar answers on
        write_config(config, state_dir, port, tokens_file, {})
        recovery = sidecar_cli("recover-db", "--config", str(config))
        out, err = recovery.communicate(timeout=60)
    finally:
        stop(process)
    assert recovery.returncode == 1
    assert out == ""
    assert f"something answers on 127.0.0.1:{port}; stop the sidecar first" in err
