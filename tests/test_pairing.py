"""`wa-sidecar pair`: where the QR may go, locks, and neonize's own failure to dial."""

from __future__ import annotations

import os
import pty
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.adapters.session_store import FileAccountLock as AccountLock
from sidecar.adapters.session_store import SessionStore
from sidecar.cli import main

from .support.config import cli_config
from .support.paths import REPO


@pytest.fixture
def config(tmp_path: Path, tokens_file: Path) -> Path:
    return cli_config(tmp_path, tokens_file, ["sales"])


def test_refuses_to_draw_a_qr_code_where_it_could_be_logged(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pair", "sales", "--config", str(config)]) == 2
    assert (
        "refusing to draw a QR code on something that is not a terminal" in capsys.readouterr().err
    )


@pytest.mark.parametrize("phone", ["12ab", "0712345678", "+", "1" * 16])
def test_bad_phone_numbers_are_refused_without_echo(
    config: Path, phone: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pair", "sales", "--config", str(config), "--phone", phone]) == 2
    err = capsys.readouterr().err
    assert "--phone must be a phone number in international form" in err
    assert phone not in err.replace("+12025550100", "")


def test_unknown_account_is_a_usage_error(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pair", "nobody", "--config", str(config), "--phone", "+12025550100"]) == 2
    assert "no account 'nobody'" in capsys.readouterr().err


def test_phone_pairing_without_network_fails_clearly(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pair", "sales", "--config", str(config), "--phone", "+12025550100"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach WhatsApp (NeonizeError: dial failed)" in err
    assert "12025550100" not in err


def test_qr_pairing_in_a_terminal_reaches_neonize_and_fails_to_dial(config: Path) -> None:
    """In a real pseudo-terminal the command gets past the TTY check and dials."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sidecar",
            "pair",
            "sales",
            "--config",
            str(config),
            "--timeout",
            "30",
        ],
        cwd=REPO,
        stdin=follower,
        stdout=follower,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(follower)
    _, err = process.communicate(timeout=60)
    os.close(leader)
    assert process.returncode == 1
    assert "cannot reach WhatsApp" in err
    assert "refusing" not in err


def test_account_held_by_a_running_sidecar_is_not_paired(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    held = AccountLock(tmp_path / "state", "sales")
    assert held.acquire()
    try:
        assert main(["pair", "sales", "--config", str(config), "--phone", "+12025550100"]) == 1
    finally:
        held.release()
    assert f"connected by another wa-sidecar process (pid {os.getpid()})" in capsys.readouterr().err


def make_paired_store(path: Path) -> None:
    """A session store with one device row, as whatsmeow leaves it after pairing (test data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE whatsmeow_device (jid TEXT PRIMARY KEY)")
        db.execute("INSERT INTO whatsmeow_device VALUES ('12025550199:7@s.whatsapp.net')")


def test_an_already_paired_account_needs_replace(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = SessionStore.for_account(tmp_path / "state", "sales", None)
    assert store.sqlite_path is not None
    make_paired_store(store.sqlite_path)
    assert store.device_id() == "12025550199:7@s.whatsapp.net"
    assert main(["pair", "sales", "--config", str(config), "--phone", "+12025550100"]) == 1
    err = capsys.readouterr().err
    assert "already has a paired device; pass --replace" in err
    assert "12025550199" not in err
    # --replace drops the local session, then tries to pair (and fails to dial here)
    assert (
        main(["pair", "sales", "--config", str(config), "--phone", "+12025550100", "--replace"])
        == 1
    )
    assert "cannot reach WhatsApp" in capsys.readouterr().err
    assert store.device_id() is None
    assert store.sqlite_path.stat().st_mode & 0o777 == 0o600


def test_device_id_of_missing_or_foreign_files_is_none(tmp_path: Path) -> None:
    store = SessionStore.for_account(tmp_path, "sales", None)
    assert store.device_id() is None
    assert store.sqlite_path is not None
    store.sqlite_path.parent.mkdir(parents=True)
    store.sqlite_path.write_bytes(b"not a database")
    assert store.device_id() is None
    assert SessionStore.for_account(tmp_path, "sales", "postgres://u:p@db/x").device_id() is None


def test_an_ingest_account_is_paired_in_its_gateway_not_here(
    tmp_path: Path, tokens_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "ingest.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        f"auth: {{tokens_file: {tokens_file}}}\n"
        "accounts:\n  - id: shop\n    source: ingest\n"
    )
    assert main(["pair", "shop", "--config", str(config), "--phone", "+12025550100"]) == 2
    assert "its session lives in another gateway" in capsys.readouterr().err
    assert not (tmp_path / "state" / "sessions").exists()  # nothing made, nothing dialled
