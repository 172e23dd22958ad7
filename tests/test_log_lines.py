"""One record, one line: nothing a client sends (a Firebase user id, say) can forge a
line of the log, at the principal and again where every record is formatted."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import pytest

from sidecar.adapters.auth import Authenticator, FirebaseVerifier, StaticTokens
from sidecar.adapters.logline import OneLineFormatter, printable
from sidecar.cli import _setup_logging
from sidecar.compose import Assembly, build_app, build_repairs
from sidecar.core.repair import RecordingControl

from .support.firebase import PROJECT, CertServer, KeyPair

FORGED = "2025-01-01 00:00:00,000 WARNING sidecar.core.repair forged"
EVIL_UIDS = [
    f"uid-eve\n{FORGED}",
    f"uid-eve\r{FORGED}",
    f"uid-eve\u2028{FORGED}",
    f"uid-eve\x1b[2K\r{FORGED}",
]


@pytest.mark.parametrize("uid", EVIL_UIDS)
async def test_a_firebase_user_id_cannot_forge_a_log_line_or_an_audit_entry(
    uid: str,
    assembly: Assembly,
    aiohttp_server: Any,
    aiohttp_client: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    keys = KeyPair("key-1")
    certs = await aiohttp_server(CertServer(keys).app())
    firebase = FirebaseVerifier(
        PROJECT, certs_url=str(certs.make_url("/certs")), allowed_uids=[uid]
    )
    app = build_app(
        assembly,
        auth=Authenticator(StaticTokens(()), firebase),
        repairs=build_repairs(assembly, RecordingControl()),
    )
    client = await aiohttp_client(app)
    caplog.set_level(logging.INFO)
    response = await client.post(
        "/api/whatsapp/regenerate-qr/sales",
        headers={"Authorization": f"Bearer {keys.token(sub=uid, user_id=uid)}"},
    )
    assert response.status == 202
    started = [r.getMessage() for r in caplog.records if "re-pair started by" in r.getMessage()]
    assert len(started) == 1
    assert started[0].isprintable()
    assert FORGED in started[0]  # still says who, escaped
    lines = (assembly.state_dir / "audit.log").read_text().splitlines()
    assert len(lines) == 1
    who = json.loads(lines[0])["who"]
    assert who.isprintable()
    assert who.removeprefix("firebase:").encode().decode("unicode_escape") == uid


def format_one(formatter: logging.Formatter, message: str, *args: Any) -> str:
    record = logging.LogRecord("sidecar.test", logging.INFO, __file__, 1, message, args, None)
    return formatter.format(record)


@pytest.mark.parametrize("uid", EVIL_UIDS)
def test_every_record_is_one_line_whatever_it_quotes(uid: str) -> None:
    formatter = OneLineFormatter("%(levelname)s %(name)s %(message)s")
    line = format_one(formatter, "account=%s re-pair started by %s", "sales", uid)
    assert line.isprintable()
    assert line.startswith("INFO sidecar.test account=sales re-pair started by uid-eve\\")
    assert format_one(formatter, "café: %s", "naïve \\n") == "INFO sidecar.test café: naïve \\n"


def test_a_traceback_stays_under_its_record() -> None:
    formatter = OneLineFormatter("%(levelname)s %(message)s")
    try:
        raise ValueError(f"bad input\n{FORGED}")
    except ValueError:
        record = logging.LogRecord(
            "sidecar.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    head, *rest = formatter.format(record).split("\n")
    assert head == "ERROR failed"
    assert rest
    assert all(line.startswith("    ") and line.isprintable() for line in rest)
    assert any(FORGED in line for line in rest)  # kept, indented, under its record


def test_the_cli_formats_every_record_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        _setup_logging("INFO")
        logging.getLogger("sidecar.test").warning("refused %s", EVIL_UIDS[0])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.rstrip("\n").isprintable()
    assert "WARNING sidecar.test refused uid-eve\\n2025-01-01" in err


def test_printable_leaves_plain_text_alone() -> None:
    assert printable("account=sales status connected -> disconnected") == (
        "account=sales status connected -> disconnected"
    )
    assert printable("a\tb\x00c\u202ed") == "a\\tb\\x00c\\u202ed"
