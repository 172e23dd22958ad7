"""``wa-sidecar pair ACCOUNT``: link a device for a person at a terminal.

The QR code goes to the person's terminal and nowhere else: the command
refuses to draw it on anything that is not a TTY (a redirected stdout is
often a shared log). ``--phone`` pairs with a phone code instead. The
account's lock keeps a running sidecar from connecting it meanwhile; the
sidecar notices the new device and connects it by itself.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, TextIO

import segno
from neonize.client import NewClient
from neonize.events import ConnectedEv, LoggedOutEv, PairStatusEv

from sidecar.adapters.session_store import FileAccountLock, SessionStore
from sidecar.config import LoadedConfig

E164 = re.compile(r"^\+?[1-9]\d{6,14}$")


class PairingError(Exception):
    """Pairing could not start or did not finish; the message says what to do."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class _Progress:
    done: threading.Event = field(default_factory=threading.Event)
    paired: bool = False
    platform: str = ""
    error: str | None = None
    codes_shown: int = 0


def pair(
    loaded: LoadedConfig,
    account_id: str,
    *,
    phone: str | None = None,
    replace: bool = False,
    timeout_s: float = 300.0,
    out: TextIO | None = None,
) -> None:
    """Pair ``account_id``; raises :class:`PairingError` when it cannot. ``out``: where
    the QR code goes (standard output, as it is when called)."""
    out = sys.stdout if out is None else out
    sources = {a.id: a.source for a in loaded.config.accounts}
    if account_id not in sources:
        raise PairingError(f"no account {account_id!r} in {loaded.source}", exit_code=2)
    if sources[account_id] == "ingest":
        raise PairingError(
            f"{account_id!r} is an ingest account: its session lives in another gateway;"
            " pair it there (docs/ingest.md)",
            exit_code=2,
        )
    if phone is not None and not E164.match(phone.replace(" ", "")):
        raise PairingError(
            "--phone must be a phone number in international form, e.g. +12025550100", 2
        )
    if phone is None and not out.isatty():
        raise PairingError(
            "refusing to draw a QR code on something that is not a terminal (it could be a"
            " shared log); run this in a terminal, or pair with --phone",
            exit_code=2,
        )
    state_dir = loaded.config.state_dir
    lock = FileAccountLock(state_dir, account_id)
    if not lock.acquire():
        raise PairingError(
            f"account {account_id} is connected by another wa-sidecar process"
            f" (pid {lock.holder()}); stop it first, or re-pair from the sidecar's page"
        )
    try:
        url = loaded.postgres_urls.get(account_id)
        store = SessionStore.for_account(
            state_dir, account_id, url.get_secret_value() if url else None
        )
        if store.device_id() is not None:
            if not replace:
                raise PairingError(
                    f"account {account_id} already has a paired device; pass --replace to drop"
                    " the local session and link a new device"
                )
            _drop_sqlite_session(store)
        store.prepare()
        _run_pairing(store, phone, timeout_s, out)
    finally:
        lock.release()


def _drop_sqlite_session(store: SessionStore) -> None:
    if store.sqlite_path is None:
        raise PairingError("--replace only works with the SQLite session store")
    for suffix in ("", "-wal", "-shm"):
        path = store.sqlite_path.with_name(store.sqlite_path.name + suffix)
        path.unlink(missing_ok=True)


def _run_pairing(store: SessionStore, phone: str | None, timeout_s: float, out: TextIO) -> None:
    progress = _Progress()
    client = NewClient(store.location)

    def on_qr(_client: Any, data: bytes) -> None:
        progress.codes_shown += 1
        if phone is not None:
            if progress.codes_shown == 1:
                threading.Thread(target=request_phone_code, daemon=True).start()
            return
        out.write("\nScan with WhatsApp on the phone: Settings > Linked devices > Link a device\n")
        segno.make_qr(data).terminal(out=out, compact=True)
        out.write(f"(code {progress.codes_shown}; a new one follows when it expires)\n")
        out.flush()

    def request_phone_code() -> None:
        assert phone is not None
        try:
            code = client.PairPhone(phone.replace(" ", "").lstrip("+"), True)
        except Exception as exc:
            progress.error = f"WhatsApp refused the phone pairing request ({type(exc).__name__})"
            progress.done.set()
            return
        out.write(
            "\nOn the phone: Settings > Linked devices > Link a device > Link with phone number"
            f" instead, and enter: {code}\n"
        )
        out.flush()

    def on_pair_status(_client: Any, event: Any) -> None:
        if event.Status == PairStatusEv.PStatus.SUCCESS:
            progress.paired = True
            progress.platform = event.Platform
            out.write(f"Paired (device platform: {event.Platform or 'unknown'}). Connecting...\n")
            out.flush()
        else:
            progress.error = "the phone reported a pairing error; try again"
            progress.done.set()

    def on_connected(_client: Any, _event: Any) -> None:
        if progress.paired:
            progress.done.set()

    def on_logged_out(_client: Any, _event: Any) -> None:
        progress.error = "WhatsApp logged the new device out straight away; try again"
        progress.done.set()

    client.event.qr(on_qr)
    client.event(PairStatusEv)(on_pair_status)
    client.event(ConnectedEv)(on_connected)
    client.event(LoggedOutEv)(on_logged_out)

    def connect() -> None:
        try:
            client.connect()
        except Exception as exc:
            if not progress.done.is_set() and not progress.paired:
                progress.error = f"cannot reach WhatsApp ({type(exc).__name__}: dial failed)"
        finally:
            progress.done.set()

    worker = threading.Thread(target=connect, name="wa-pair", daemon=True)
    worker.start()
    finished = progress.done.wait(timeout_s)
    with contextlib.suppress(Exception):  # the client may already be gone
        client.stop()
    worker.join(10)
    if progress.paired and progress.error is None:
        out.write("Done: the device is linked. A running sidecar connects it within seconds.\n")
        return
    if not finished:
        raise PairingError(f"nobody scanned a code within {timeout_s:.0f} s; run the command again")
    raise PairingError(progress.error or "pairing ended without a linked device")
