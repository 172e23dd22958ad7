"""Nothing a person wrote, and no phone number or JID, leaves the sidecar by a side door.

A capture full of unique, searchable fictional values (phone numbers in the
+1 202 555 01xx range, a group JID, a LID, push names, texts, captions, a poll,
a reaction, an edit, a QR code, a pairing error, a business name) is replayed
through the real CLI with the SQLite store. None of those values may appear in
/metrics (text and OpenMetrics), in the logs at INFO or WARNING, in the health
objects, or in any error the HTTP API answers; the store holds them (that is its
job), and every file the sidecar creates is owner-only.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import sqlite3
import stat
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from neonize.events import (
    ChatPresenceEv,
    ConnectFailureEv,
    PairStatusEv,
    PresenceEv,
    QREv,
    ReceiptEv,
)
from neonize.proto.Neonize_pb2 import Node
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import (
    ContactMessage,
    DocumentMessage,
    ExtendedTextMessage,
    FutureProofMessage,
    ImageMessage,
    LocationMessage,
    PollCreationMessage,
    ReactionMessage,
)
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as WAMessage

from sidecar import testing as build
from sidecar.adapters.capture import encode_record
from sidecar.adapters.session_store import SessionStore
from sidecar.adapters.spool import Spool
from sidecar.domain.probes import ProbeSent

from .support.cli import sidecar_cli, wait_ready
from .support.config import TOKEN, cli_config

T0 = 1_764_068_400.0

# -- the values that must not leak (all fictional, all unique) -------------------------

CHAT_PHONE = "12025550131"
OUTBOUND_PHONE = "12025550132"
GROUP_SENDER_PHONE = "12025550147"
PAIRED_PHONE = "12025550163"
RECEIPT_PHONE = "12025550175"
STRANGER_PHONE = "12025550188"
PAIR_CODE_PHONE = "+12025550164"
GROUP_USER = "120363025550177001"
LID_USER = "84736251900112"
MESSAGE_ID = "3EB0PRIVACYHERON7308"
PUSH_NAME = "Quillon Privacy-Pushname"
TEXT = "privacy-text-aardvark-7301"
EXTENDED_TEXT = "privacy-exttext-bison-7302"
CAPTION = "privacy-caption-cormorant-7303"
POLL_NAME = "privacy-poll-dugong-7304"
REACTION = "privacy-reaction-egret-7305"
EDITED_TEXT = "privacy-edited-fossa-7306"
QR_CODE = "2@privacy-qr-gharial-7307,c2VjcmV0,a2V5"
FILE_NAME = "privacy-file-ibis-7309.pdf"
CONTACT_NAME = "Privacy Contact Jacana-7310"
LOCATION_NAME = "privacy-location-kinkajou-7311"
FAILURE_TEXT = "privacy-failure-lemur-7312"
BUSINESS_NAME = "Privacy Business Margay-7313"
PAIR_ERROR = "privacy-pair-error-numbat-7314"
EPHEMERAL_TEXT = "privacy-ephemeral-ocelot-7315"
GARBAGE_TEXT = "privacy-garbage-pangolin-7316"

SECRETS = (
    CHAT_PHONE,
    OUTBOUND_PHONE,
    GROUP_SENDER_PHONE,
    PAIRED_PHONE,
    RECEIPT_PHONE,
    STRANGER_PHONE,
    PAIR_CODE_PHONE.lstrip("+"),
    GROUP_USER,
    LID_USER,
    MESSAGE_ID,
    PUSH_NAME,
    TEXT,
    EXTENDED_TEXT,
    CAPTION,
    POLL_NAME,
    REACTION,
    EDITED_TEXT,
    QR_CODE,
    "privacy-qr-gharial",
    FILE_NAME,
    CONTACT_NAME,
    LOCATION_NAME,
    FAILURE_TEXT,
    BUSINESS_NAME,
    PAIR_ERROR,
    EPHEMERAL_TEXT,
    GARBAGE_TEXT,
    "s.whatsapp.net",
    "@g.us",
    "@lid",
)


def leaked(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


# -- the capture ---------------------------------------------------------------------------


def chat(phone: str) -> Any:
    return build.jid(phone)


def group_message(content: WAMessage) -> Any:
    return build.message_event(
        content,
        chat=build.jid(GROUP_USER, "g.us"),
        sender=chat(GROUP_SENDER_PHONE),
        is_group=True,
        push_name=PUSH_NAME,
    )


def inbound(content: WAMessage, **info: Any) -> Any:
    info.setdefault("chat", chat(CHAT_PHONE))
    return build.message_event(content, push_name=PUSH_NAME, **info)


def source(phone: str) -> Any:
    return build.message_info(chat=chat(phone)).MessageSource


def privacy_story() -> list[tuple[float, str | None, Any]]:
    """(t, account, event): every kind of content, on both accounts; the number of message
    events per account is in :data:`MESSAGES`."""
    edit = build.edit(MESSAGE_ID, f"{CHAT_PHONE}@s.whatsapp.net", EDITED_TEXT)
    sales: list[Any] = [
        QREv(Codes=[QR_CODE, QR_CODE + "-2"]),
        PairStatusEv(
            ID=chat(PAIRED_PHONE),
            BusinessName=BUSINESS_NAME,
            Platform="android",
            Status=PairStatusEv.PStatus.SUCCESS,
        ),
        build.connected(),
        build.offline_sync_preview(total=3),
        build.offline_sync_completed(count=3),
        inbound(build.text(TEXT), message_id=MESSAGE_ID),
        inbound(build.text("x"), chat=build.jid(LID_USER, "lid")),
        inbound(WAMessage(extendedTextMessage=ExtendedTextMessage(text=EXTENDED_TEXT))),
        group_message(WAMessage(imageMessage=ImageMessage(caption=CAPTION, mimetype="image/jpeg"))),
        group_message(
            WAMessage(documentMessage=DocumentMessage(caption=CAPTION, fileName=FILE_NAME))
        ),
        inbound(WAMessage(pollCreationMessage=PollCreationMessage(name=POLL_NAME))),
        inbound(WAMessage(reactionMessage=ReactionMessage(text=REACTION))),
        inbound(edit),
        inbound(WAMessage(contactMessage=ContactMessage(displayName=CONTACT_NAME))),
        inbound(WAMessage(locationMessage=LocationMessage(name=LOCATION_NAME))),
        inbound(
            WAMessage(
                ephemeralMessage=FutureProofMessage(message=WAMessage(conversation=EPHEMERAL_TEXT))
            )
        ),
        build.message_event(
            build.text(TEXT), chat=chat(OUTBOUND_PHONE), from_me=True, push_name=PUSH_NAME
        ),
        inbound(build.history_sync_notification()),
        build.undecryptable(chat=chat(CHAT_PHONE), push_name=PUSH_NAME),
        ReceiptEv(
            MessageSource=source(RECEIPT_PHONE), MessageIDs=[MESSAGE_ID], Timestamp=1, Type=1
        ),
        PresenceEv(From=chat(RECEIPT_PHONE), Unavailable=False, LastSeen=1),
        ChatPresenceEv(MessageSource=source(RECEIPT_PHONE), State=1, Media=1),
        ConnectFailureEv(Reason=8, Message=FAILURE_TEXT, Raw=Node(Tag=FAILURE_TEXT)),
        build.connected(),
        ProbeSent("privacy-probe-1", "support", ok=False, reason=FAILURE_TEXT),
    ]
    support: list[Any] = [
        PairStatusEv(
            ID=chat(PAIRED_PHONE),
            BusinessName=BUSINESS_NAME,
            Platform="smbi",
            Status=PairStatusEv.PStatus.ERROR,
            Error=PAIR_ERROR,
        ),
        build.connected(),
        inbound(build.text(TEXT)),
        build.logged_out(),
    ]
    records: list[tuple[float, str | None, Any]] = []
    for index, event in enumerate(sales):
        records.append((T0 + index, "sales", event))
    for index, event in enumerate(support):
        records.append((T0 + 0.5 + index, "support", event))
    records.sort(key=lambda record: record[0])
    records.append((T0 + 100, None, None))
    return records


#: Message events per account in :func:`privacy_story`.
MESSAGES = {"sales": 14, "support": 1}


def bad_lines() -> list[str]:
    """Records the replay must refuse without quoting them."""
    payload = base64.b64encode(f"{CHAT_PHONE} {TEXT}".encode()).decode()
    return [
        f"{CHAT_PHONE}@s.whatsapp.net said {GARBAGE_TEXT}",
        json.dumps(
            {
                "t": T0 + 100,
                "account": f"{STRANGER_PHONE}@s.whatsapp.net",
                "event": "ConnectedEv",
                "payload": "CAE=",
            }
        ),
        json.dumps(
            {"t": T0 + 100, "account": "sales", "event": f"{GARBAGE_TEXT}Ev", "payload": ""}
        ),
        json.dumps({"t": T0 + 100, "account": "sales", "event": "MessageEv", "payload": payload}),
        json.dumps({"t": f"{CHAT_PHONE}", "account": "sales", "event": "tick"}),
        json.dumps(
            {
                "t": T0 + 100,
                "account": "sales",
                "event": "ProbeSent",
                "probe": {"id": GARBAGE_TEXT, "peer": 12025550131},
            }
        ),
    ]


def write_privacy_capture(path: Path) -> Path:
    lines = [encode_record(t, account, event) for t, account, event in privacy_story()]
    path.write_text("\n".join([*lines, *bad_lines()]) + "\n")
    return path


# -- HTTP ------------------------------------------------------------------------------------


def call(
    port: int,
    method: str,
    path: str,
    *,
    token: str | None = TOKEN,
    body: bytes | None = None,
    accept: str | None = None,
) -> tuple[int, str, str]:
    """(status, headers, body) of one request, errors included."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if accept is not None:
        headers["Accept"] = accept
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, str(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, str(error.headers), error.read().decode()


def wait_until_replayed(port: int) -> dict[str, Any]:
    """The health objects once every message event is counted and the store has all."""
    deadline = time.monotonic() + 30
    while True:
        status, _, body = call(port, "GET", "/api/whatsapp/accounts")
        assert status == 200, body
        accounts = {a["accountId"]: a for a in json.loads(body)["accounts"]}
        counted = {a: sum(accounts[a]["messages"].values()) for a in accounts}
        stored = all(accounts[a]["store"]["backlog"] == 0 for a in accounts)
        if counted == MESSAGES and stored:
            return accounts
        assert time.monotonic() < deadline, (counted, accounts)
        time.sleep(0.1)


#: Requests that must fail, each with the status it must fail with; the paths and
#: bodies carry phone numbers, JIDs and texts that must not come back.
FAILING_REQUESTS: tuple[tuple[str, str, str | None, bytes | None, int], ...] = (
    ("GET", f"/api/whatsapp/accounts/{CHAT_PHONE}/health", None, None, 401),
    ("GET", "/api/whatsapp/accounts", CHAT_PHONE, None, 401),
    ("GET", f"/api/whatsapp/accounts/{CHAT_PHONE}@s.whatsapp.net/health", CHAT_PHONE, None, 401),
    ("GET", f"/api/whatsapp/accounts/{CHAT_PHONE}/health", TOKEN, None, 404),
    ("GET", f"/api/whatsapp/accounts/{CHAT_PHONE}@s.whatsapp.net/health", TOKEN, None, 404),
    ("GET", f"/api/whatsapp/accounts/%2B{CHAT_PHONE}/health", TOKEN, None, 404),
    ("GET", f"/api/whatsapp/accounts/{GROUP_USER}@g.us/health", TOKEN, None, 404),
    ("GET", f"/api/whatsapp/accounts/{LID_USER}@lid/health", TOKEN, None, 404),
    ("GET", f"/api/whatsapp/accounts/{CHAT_PHONE}/pair/events", TOKEN, None, 404),
    ("POST", f"/api/whatsapp/regenerate-qr/{CHAT_PHONE}@s.whatsapp.net", TOKEN, None, 404),
    (
        "POST",
        f"/api/whatsapp/accounts/{CHAT_PHONE}/pair-code",
        TOKEN,
        json.dumps({"phone": PAIR_CODE_PHONE}).encode(),
        404,
    ),
    ("GET", f"/api/whatsapp/{CHAT_PHONE}/{TEXT}", TOKEN, None, 404),
    ("GET", f"/{CHAT_PHONE}@s.whatsapp.net", None, None, 404),
    ("GET", f"/static/{TEXT}.js", None, None, 404),
    ("GET", f"/api/whatsapp/regenerate-qr/{CHAT_PHONE}", TOKEN, None, 405),
    ("DELETE", f"/api/whatsapp/accounts/sales/health?phone={CHAT_PHONE}", TOKEN, None, 405),
    ("POST", "/api/whatsapp/accounts", TOKEN, json.dumps({"text": TEXT}).encode(), 405),
    (
        "POST",
        "/api/whatsapp/accounts/sales/pair-code",
        TOKEN,
        f"{{'phone': {PAIR_CODE_PHONE}, 'note': {TEXT}".encode(),
        400,
    ),
    (
        "POST",
        "/api/whatsapp/accounts/sales/pair-code",
        TOKEN,
        json.dumps([PAIR_CODE_PHONE, TEXT]).encode(),
        400,
    ),
    (
        "POST",
        "/api/whatsapp/accounts/sales/pair-code",
        TOKEN,
        json.dumps({"phone": f"{PAIR_CODE_PHONE} {TEXT}"}).encode(),
        400,
    ),
    (
        "POST",
        "/api/whatsapp/accounts/sales/pair-code",
        TOKEN,
        json.dumps({"phone": PAIR_CODE_PHONE}).encode(),
        503,  # replay has no session to pair: the phone number is not echoed
    ),
    (
        "POST",
        "/api/whatsapp/accounts/sales/pair-code",
        TOKEN,
        json.dumps({"phone": PAIR_CODE_PHONE, "note": TEXT * 5000}).encode(),
        413,
    ),
    (
        "POST",
        "/api/alertmanager/webhook",
        TOKEN,
        json.dumps({"alerts": {"account": CHAT_PHONE, "text": TEXT}}).encode(),
        400,
    ),
)


def exercise_http(port: int) -> dict[str, str]:
    """Every response worth reading, by a name for the failure message."""
    seen: dict[str, str] = {}
    for method, path, token, body, expected in FAILING_REQUESTS:
        status, headers, text = call(port, method, path, token=token, body=body)
        assert status == expected, (method, path, status, text)
        assert set(json.loads(text)) == {"error"}, text
        seen[f"{method} {path[:60]} -> {status}"] = headers + text
    # an alert that names a phone number instead of an account is ignored, not echoed
    alert = {
        "alerts": [
            {
                "status": "firing",
                "labels": {
                    "alertname": "WhatsappSessionDegraded",
                    "account": CHAT_PHONE,
                    "text": TEXT,
                },
            }
        ]
    }
    status, headers, text = call(
        port, "POST", "/api/alertmanager/webhook", body=json.dumps(alert).encode()
    )
    assert (status, json.loads(text)) == (200, {"started": [], "skipped": []})
    seen["webhook"] = headers + text
    for name, accept in (("text", None), ("openmetrics", "application/openmetrics-text")):
        status, headers, text = call(port, "GET", "/metrics", token=None, accept=accept)
        assert status == 200
        assert 'whatsapp_messages_received_total{account="sales",class="real"' in text
        if accept:
            assert text.endswith("# EOF\n")
        seen[f"metrics {name}"] = headers + text
    for account in ("sales", "support"):
        status, headers, text = call(port, "GET", f"/api/whatsapp/accounts/{account}/health")
        assert status == 200
        seen[f"health {account}"] = headers + text
    status, headers, text = call(port, "GET", "/api/whatsapp/accounts")
    seen["accounts"] = headers + text
    status, headers, text = call(port, "GET", "/accounts/sales/pair", token=None)
    assert status == 200
    seen["pair page"] = headers + text
    # a re-pair, and one too soon after it
    status, headers, text = call(port, "POST", "/api/whatsapp/regenerate-qr/sales")
    assert (status, json.loads(text)) == (202, {"accountId": "sales", "status": "pairing"})
    status, headers, text = call(port, "POST", "/api/whatsapp/regenerate-qr/sales")
    assert status == 429
    assert set(json.loads(text)) == {"error"}
    seen["regenerate-qr too soon"] = headers + text
    return seen


# -- files -------------------------------------------------------------------------------------


def modes(root: Path) -> dict[str, int]:
    """Permission bits of ``root`` and of everything under it, by relative path."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def assert_owner_only(found: dict[str, int], root: Path) -> None:
    wrong = {
        name: oct(mode)
        for name, mode in found.items()
        if mode != (0o700 if (root / name).is_dir() else 0o600)
    }
    assert wrong == {}, f"not owner-only: {wrong}"


# -- the tests ---------------------------------------------------------------------------------


@pytest.mark.services
@pytest.mark.parametrize("log_level", ["INFO", "WARNING"])
def test_replayed_secrets_stay_out_of_metrics_logs_and_errors(
    tmp_path: Path, tokens_file: Path, log_level: str
) -> None:
    capture = write_privacy_capture(tmp_path / "privacy.jsonl")
    config = cli_config(tmp_path, tokens_file, ["sales", "support"])
    state_dir = tmp_path / "state"
    old_umask = os.umask(0o022)  # the usual umask: files come out 0644 unless made private
    try:
        process = sidecar_cli(
            "--log-level",
            log_level,
            "replay",
            str(capture),
            "--config",
            str(config),
            "--linger",
            "60",
        )
    finally:
        os.umask(old_umask)
    try:
        port = wait_ready(process)
        accounts = wait_until_replayed(port)
        responses = exercise_http(port)
        running = modes(state_dir)  # with the WAL and shared-memory files still there
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err

    # the capture went all the way through: counted, judged and stored
    assert accounts["sales"]["messages"] == {"real": 12, "protocol": 1, "other": 1}
    assert accounts["support"]["status"] == "logged_out"
    assert f"{len(bad_lines())} bad records" in out
    with contextlib.closing(sqlite3.connect(state_dir / "messages.sqlite3")) as db:
        stored = "\n".join(doc for (doc,) in db.execute("SELECT doc FROM messages"))
        stored += "\n".join(doc for (doc,) in db.execute("SELECT doc FROM threads"))
    for value in (
        TEXT,
        EXTENDED_TEXT,
        CAPTION,
        POLL_NAME,
        REACTION,
        EDITED_TEXT,
        CONTACT_NAME,
        LOCATION_NAME,
        EPHEMERAL_TEXT,
        CHAT_PHONE,
        GROUP_USER,
    ):
        assert value in stored, value

    for name, text in responses.items():
        assert leaked(text) == [], name
    assert leaked(out) == [], "stdout"
    assert leaked(err) == [], f"stderr at {log_level}"
    if log_level == "INFO":
        assert "capture line" in err
        assert "status connecting -> qr_pending" in err
    else:
        assert "capture line" in err
        assert " INFO " not in err
    audit = (state_dir / "audit.log").read_text()
    assert '"action": "pair_code"' in audit
    assert leaked(audit) == []

    for name in (
        "account_state.sqlite3",
        "spool.sqlite3",
        "spool.journal",
        "messages.sqlite3",
        "audit.log",
        "messages.sqlite3-wal",
        "spool.sqlite3-shm",
    ):
        assert name in running, sorted(running)
    assert_owner_only(running, state_dir)
    assert_owner_only(modes(state_dir), state_dir)


def test_session_store_is_created_owner_only(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        store = SessionStore.for_account(tmp_path / "state", "sales", None)
        store.prepare()
    finally:
        os.umask(old_umask)
    assert store.sqlite_path == tmp_path / "state" / "sessions" / "sales.sqlite3"
    assert stat.S_IMODE(store.sqlite_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.sqlite_path.parent.stat().st_mode) == 0o700
    # a file left readable by an older version is tightened
    store.sqlite_path.chmod(0o644)
    store.prepare()
    assert stat.S_IMODE(store.sqlite_path.stat().st_mode) == 0o600
    # and so is a folder an operator made with the usual umask
    store.sqlite_path.parent.chmod(0o755)
    store.prepare()
    assert stat.S_IMODE(store.sqlite_path.parent.stat().st_mode) == 0o700
    assert SessionStore.for_account(tmp_path, "x", "postgres://u@h/db").sqlite_path is None


def test_a_state_dir_open_to_others_is_made_owner_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o755)
    state_dir.chmod(0o755)
    Spool(state_dir).close()
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert "was open to group or others (755): now owner-only" in caplog.text


@pytest.mark.services
def test_live_run_without_network_keeps_its_files_private(
    tmp_path: Path, tokens_file: Path
) -> None:
    """The real neonize dials, fails (no route here) and retries; everything it and the
    sidecar created meanwhile, and the recording, is owner-only."""
    config = cli_config(tmp_path, tokens_file, ["sales"])
    recording = tmp_path / "live.jsonl"
    state_dir = tmp_path / "state"
    old_umask = os.umask(0o022)
    try:
        process = sidecar_cli("run", "--config", str(config), "--record", str(recording))
    finally:
        os.umask(old_umask)
    try:
        port = wait_ready(process)
        deadline = time.monotonic() + 30
        while True:
            _, _, metrics = call(port, "GET", "/metrics", token=None)
            if 'whatsapp_reconnects_total{account="sales"} 1.0' in metrics:
                break
            assert time.monotonic() < deadline, "neonize never retried"
            time.sleep(0.1)
        running = modes(state_dir)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "sessions/sales.sqlite3" in running
    assert "sessions/sales.lock" in running
    assert_owner_only(running, state_dir)
    assert_owner_only(modes(state_dir), state_dir)
    assert stat.S_IMODE(recording.stat().st_mode) == 0o600  # it would hold message texts
    assert leaked(err) == []
