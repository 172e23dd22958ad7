"""Replay: captures through the same pipeline, into metrics and health JSON."""

from __future__ import annotations

import base64
import json
import re
import socket
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from sidecar import testing as build
from sidecar.adapters import capture as capture_module
from sidecar.adapters.capture import (
    MAX_LINE_BYTES,
    CaptureWriter,
    RecordTooLongError,
    capture_records,
    encode_record,
)
from sidecar.adapters.health_json import health_json
from sidecar.adapters.sqlite_state import SqliteStateStore
from sidecar.compose import assemble
from sidecar.core.clock import ReplayClock
from sidecar.core.replay import Replayer, Unreadable

from .support.cli import sidecar_cli, wait_ready
from .support.config import TOKEN, ConfigFactory, cli_config
from .support.http import get

T0 = 1_764_068_400.0


def write_capture(
    path: Path,
    records: list[tuple[float, str | None, Any]],
    raw_lines: dict[int, str] | None = None,
) -> Path:
    lines = [encode_record(t, account, event) for t, account, event in records]
    for index, raw in sorted((raw_lines or {}).items()):
        lines.insert(index, raw)
    path.write_text("\n".join(lines) + "\n")
    return path


def story() -> list[tuple[float, str | None, Any]]:
    """sales: connects, 2 real messages, then only protocol traffic; support: never connects."""
    return [
        (T0, "sales", build.connected()),
        (T0 + 1, "sales", build.offline_sync_preview(total=2)),
        (T0 + 2, "sales", build.offline_sync_completed(count=2)),
        (T0 + 10.25, "sales", build.message_event(build.text("hello"))),
        (T0 + 20, "sales", build.message_event(build.text("again"), from_me=True)),
        (T0 + 30, "sales", build.message_event(build.history_sync_notification(), from_me=True)),
        (T0 + 200, "sales", build.message_event(build.app_state_key_share(), from_me=True)),
        (T0 + 250, "sales", build.disconnected()),
        (T0 + 254, "sales", build.connected()),
        (T0 + 255, "sales", build.offline_sync_completed(count=0)),
        (T0 + 300, "sales", build.message_event(None)),
        (T0 + 320, None, None),  # tick
        (T0 + 330, None, None),
    ]


BAD_LINES = {
    1: "this is not json",
    2: json.dumps({"t": T0, "account": "sales", "event": "NoSuchEv", "payload": ""}),
    3: json.dumps({"t": T0, "account": "sales", "event": "MessageEv", "payload": "!!not base64!!"}),
    4: json.dumps(
        {
            "t": T0,
            "account": "sales",
            "event": "MessageEv",
            "payload": base64.b64encode(b"\xff\xff\xff").decode(),
        }
    ),
    5: json.dumps({"t": T0, "account": "stranger", "event": "ConnectedEv", "payload": "CAE="}),
    6: json.dumps({"account": "sales", "event": "ConnectedEv", "payload": "CAE="}),
    7: json.dumps(["not", "an", "object"]),
}


async def test_replay_into_metrics_value_by_value(
    tmp_path: Path, make_config: ConfigFactory
) -> None:
    capture = write_capture(tmp_path / "c.jsonl", story(), BAD_LINES)
    clock = ReplayClock(speed=0)
    # silent past its 4 minutes at both ticks (T0 + 320 and 330), evidence confirmed in 10 s
    loaded = make_config(
        [{"id": "sales", "silence_threshold": "4m"}, {"id": "support"}],
        verdict={"confirm": "10s"},
    )
    assembly = assemble(loaded, clock, storage=False)
    sidecar = assembly.sidecar
    report = await Replayer(sidecar, clock, assembly.replay_errors).run(capture_records(capture))
    assert (report.events, report.ticks, report.errors) == (11, 2, len(BAD_LINES))

    def value(name: str, **labels: str) -> float | None:
        return assembly.metrics.registry.get_sample_value(name, labels)

    def received(cls: str, kind: str) -> float | None:
        return value(
            "whatsapp_messages_received_total", account="sales", **{"class": cls, "kind": kind}
        )

    assert clock.now() == T0 + 330
    assert received("real", "conversation") == 2.0
    assert received("protocol", "protocolMessage.HISTORY_SYNC_NOTIFICATION") == 1.0
    assert received("protocol", "protocolMessage.APP_STATE_SYNC_KEY_SHARE") == 1.0
    assert received("other", "empty") == 1.0
    assert value("whatsapp_last_real_message_timestamp_seconds", account="sales") == T0 + 20
    assert value("whatsapp_last_real_message_age_seconds", account="sales") == 310.0
    assert value("whatsapp_connection_state", account="sales", state="connected") == 1.0
    assert value("whatsapp_session_degraded", account="sales") == 1.0
    assert value("whatsapp_events_total", account="sales", event="MessageEv") == 5.0
    assert value("whatsapp_events_total", account="sales", event="ConnectedEv") == 2.0
    assert value("whatsapp_events_total", account="sales", event="DisconnectedEv") == 1.0
    assert value("whatsapp_reconnects_total", account="sales") == 1.0
    assert value("whatsapp_replay_errors_total") == float(len(BAD_LINES))
    # the account with no events in the capture is still there, and connecting
    assert value("whatsapp_connection_state", account="support", state="connecting") == 1.0
    assert value("whatsapp_events_total", account="support", event="MessageEv") == 0.0

    health = health_json(sidecar.health("sales"))
    assert health["status"] == "connected"
    assert health["lastRealMessageMs"] == 1_764_068_420_000
    assert health["timeSinceLastRealMs"] == 310_000
    assert health["isDegraded"] is True
    assert health["reasons"] == ["silence_with_protocol_traffic"]
    assert health["messages"] == {"real": 2, "protocol": 2, "other": 1}
    assert health["statusSinceMs"] == 1_764_068_654_000
    sidecar.close()


async def test_bad_records_are_logged_with_their_line_number(
    tmp_path: Path, make_config: ConfigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    capture = write_capture(tmp_path / "c.jsonl", story(), BAD_LINES)
    loaded = make_config([{"id": "sales"}])
    clock = ReplayClock(speed=0)
    assembly = assemble(loaded, clock, storage=False)
    sidecar = assembly.sidecar
    caplog.set_level("WARNING", logger="sidecar.core.replay")
    await Replayer(sidecar, clock, assembly.replay_errors).run(capture_records(capture))
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "capture line 2 skipped: not JSON: JSONDecodeError",
        "capture line 3 skipped: 'event' is not a neonize event class name or 'tick'",
        "capture line 4 skipped: 'payload' is not valid base64",
        messages[3],
        "capture line 6 skipped: 'account' is not configured",
        "capture line 7 skipped: 't' must be a number (Unix seconds)",
        "capture line 8 skipped: a record must be a JSON object",
    ]
    assert messages[3].startswith("capture line 5 skipped: payload is not a valid MessageEv")
    sidecar.close()


async def test_speed_factor_runs_the_clock_from_the_first_record(
    tmp_path: Path, make_config: ConfigFactory
) -> None:
    capture = write_capture(
        tmp_path / "c.jsonl",
        [
            (T0, "sales", build.connected()),
            (T0 + 1, "sales", build.message_event(build.text("x"))),
            (T0 + 2, None, None),
        ],
    )
    loaded = make_config()
    clock = ReplayClock(speed=10)
    assembly = assemble(loaded, clock, storage=False)
    sidecar = assembly.sidecar
    started = time.monotonic()
    await Replayer(sidecar, clock, assembly.replay_errors).run(capture_records(capture))
    elapsed = time.monotonic() - started
    assert elapsed >= 0.19  # 2 s of capture at 10x
    assert (
        health_json(sidecar.health("sales"))["lastRealMessageMs"] == 1_764_068_401_000
    )  # the record's t, not the clock's
    first = clock.now()
    time.sleep(0.05)
    assert clock.now() > first  # the clock keeps running after the last record
    sidecar.close()


@pytest.mark.services
def test_cli_replays_the_example_story_and_serves_it_while_lingering(
    tmp_path: Path, tokens_file: Path
) -> None:
    config = cli_config(tmp_path, tokens_file, ["sales", "support"])
    process = sidecar_cli(
        "replay", "examples/quiet-session.jsonl", "--config", str(config), "--linger", "30"
    )
    try:
        port = wait_ready(process)
        deadline = time.monotonic() + 20
        while True:
            accounts = {
                a["accountId"]: a
                for a in get(f"http://127.0.0.1:{port}/api/whatsapp/accounts", TOKEN)["accounts"]
            }
            if accounts["support"]["messages"]["real"] == 26 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        sales, support = accounts["sales"], accounts["support"]
        assert (sales["status"], sales["isDegraded"], sales["reasons"]) == (
            "connected",
            True,
            ["silence_with_protocol_traffic"],
        )
        assert sales["messages"] == {"real": 20, "protocol": 37, "other": 0}
        assert sales["reconnects"] == 1
        assert sales["lastRealMessageMs"] == 1_764_069_570_000
        assert (
            sales["timeSinceLastRealMs"] == 1_230_000
        )  # the replay clock stands at the last record
        assert (support["status"], support["isDegraded"], support["messages"]["real"]) == (
            "connected",
            False,
            26,
        )
        metrics = get(f"http://127.0.0.1:{port}/metrics")
        assert 'whatsapp_session_degraded{account="sales"} 1.0' in metrics
        assert 'whatsapp_session_degraded{account="support"} 0.0' in metrics
        process.send_signal(__import__("signal").SIGTERM)
        out, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert re.search(
        r"replay: 91 events from quiet-session.jsonl in [\d.]+ s \([\d,]+ events/s\), 0 bad records",
        out,
    )
    for secret in ("12025550123", "Hello, is order", "s.whatsapp.net"):
        assert secret not in err


@pytest.mark.services
def test_cli_replays_100k_events_at_speed_0_and_prints_the_rate(
    tmp_path: Path, tokens_file: Path
) -> None:
    contents = [
        build.text("hi"),
        build.history_sync_notification(),
        build.app_state_key_share(),
        None,
    ]
    events = [build.message_event(c) for c in contents]
    accounts = [f"acct-{i}" for i in range(10)]
    lines = [encode_record(T0, a, build.connected()) for a in accounts]
    lines += [encode_record(T0 + i * 0.01, accounts[i % 10], events[i % 4]) for i in range(100_000)]
    capture = tmp_path / "big.jsonl"
    capture.write_text("\n".join(lines) + "\n")
    config = cli_config(tmp_path, tokens_file, accounts)
    process = sidecar_cli("replay", str(capture), "--config", str(config))
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    match = re.search(
        r"replay: (\d+) events from big.jsonl in ([\d.]+) s \(([\d,]+) events/s\), 0 bad records",
        out,
    )
    assert match, out
    assert int(match.group(1)) == 100_010
    assert int(match.group(3).replace(",", "")) > 0
    # the last real message time of every account was saved on the way out
    saved = SqliteStateStore(tmp_path / "state").load()
    assert sorted(saved) == accounts
    assert saved["acct-0"].last_real_at == pytest.approx(T0 + 999.60)


@pytest.mark.services
def test_restart_keeps_the_last_real_time(tmp_path: Path, tokens_file: Path) -> None:
    config = cli_config(tmp_path, tokens_file, ["sales"])
    first = write_capture(
        tmp_path / "first.jsonl",
        [
            (T0, "sales", build.connected()),
            (T0 + 5.5, "sales", build.message_event(build.text("x"))),
        ],
    )
    process = sidecar_cli("replay", str(first), "--config", str(config))
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err

    config = cli_config(tmp_path, tokens_file, ["sales"])
    second = write_capture(
        tmp_path / "second.jsonl",
        [
            (T0 + 600, "sales", build.connected()),
            (T0 + 601, "sales", build.offline_sync_completed(count=0)),
            (T0 + 700, "sales", build.message_event(build.history_sync_notification())),
            # judged at the ticks: the evidence, then confirmed (verdict.confirm, 30 s)
            (T0 + 710, None, None),
            (T0 + 740, None, None),
        ],
    )
    process = sidecar_cli("replay", str(second), "--config", str(config), "--linger", "30")
    try:
        port = wait_ready(process)
        deadline = time.monotonic() + 10
        while True:
            health = get(f"http://127.0.0.1:{port}/api/whatsapp/accounts/sales/health", TOKEN)
            if health["timeSinceLastRealMs"] == 734_500 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert health["messages"]["protocol"] == 1
        assert health["lastRealMessageMs"] == 1_764_068_405_500
        assert health["timeSinceLastRealMs"] == 734_500
        assert health["isDegraded"] is True
        metrics = get(f"http://127.0.0.1:{port}/metrics")
        assert (
            'whatsapp_last_real_message_timestamp_seconds{account="sales"} 1.7640684055e+09'
            in metrics
        )
    finally:
        process.terminate()
        process.communicate(timeout=15)
    assert process.returncode == 0


@pytest.mark.services
def test_busy_port_is_a_clear_error_and_exit_1(tmp_path: Path, tokens_file: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config = cli_config(
            tmp_path, tokens_file, ["sales"], listen=f"127.0.0.1:{busy.getsockname()[1]}"
        )
        capture = write_capture(tmp_path / "c.jsonl", [(T0, "sales", build.connected())])
        process = sidecar_cli("replay", str(capture), "--config", str(config))
        _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "wa-sidecar replay failed" in err
    assert "address already in use" in err.lower()


async def test_an_overlong_line_is_skipped_unread_and_the_rest_replayed(
    tmp_path: Path, make_config: ConfigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line longer than MAX_LINE_BYTES (1 MiB here; the line, shaped like a record, is
    40 MiB) is one bad record: reading it never holds it whole (a 200 MB line took 686 MB),
    and the records after it are replayed."""
    limit = 1 << 20
    monkeypatch.setattr(capture_module, "MAX_LINE_BYTES", limit)
    capture = tmp_path / "c.jsonl"
    huge = 40 * limit
    with capture.open("wb") as out:
        out.write(encode_record(T0, "sales", build.connected()).encode() + b"\n")
        out.write(b'{"t": %d, "account": "sales", "event": "MessageEv", "payload": "' % T0)
        chunk = b"A" * (1 << 20)
        for _ in range(huge // len(chunk)):
            out.write(chunk)
        out.write(b'"}\n')
        out.write(encode_record(T0 + 1, "sales", build.message_event(build.text("x"))).encode())
        out.write(b"\n" + encode_record(T0 + 2, "sales", build.disconnected()).encode() + b"\n")
    clock = ReplayClock(speed=0)
    assembly = assemble(make_config([{"id": "sales"}]), clock, storage=False)
    tracemalloc.start()
    try:
        records = list(capture_records(capture))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * limit, f"{peak:,} bytes held to read a {huge:,}-byte line"
    assert [type(r).__name__ for r in records] == [
        "CaptureRecord",
        "Unreadable",
        "CaptureRecord",
        "CaptureRecord",
    ]
    assert records[1] == Unreadable(2, f"longer than {limit} bytes")
    report = await Replayer(assembly.sidecar, clock, assembly.replay_errors).run(records)
    assert (report.events, report.errors) == (3, 1)
    registry = assembly.metrics.registry
    assert registry.get_sample_value("whatsapp_replay_errors_total") == 1.0
    assert (
        registry.get_sample_value(
            "whatsapp_messages_received_total",
            {"account": "sales", "class": "real", "kind": "conversation"},
        )
        == 1.0
    )
    assert assembly.sidecar.snapshot("sales").status == "disconnected"
    assembly.close()


def test_a_line_of_exactly_the_limit_is_read_and_the_writer_writes_no_longer_one(
    tmp_path: Path,
) -> None:
    record = encode_record(T0, "sales", build.connected())
    pad = MAX_LINE_BYTES - len(record)
    line = record[:-1] + ", " + '"x": "' + "y" * (pad - 9) + '"}'
    assert len(line) == MAX_LINE_BYTES
    capture = tmp_path / "c.jsonl"
    capture.write_text(line + "\n" + line + "y\n")
    records = list(capture_records(capture))
    assert [type(r).__name__ for r in records] == ["CaptureRecord", "Unreadable"]
    writer = CaptureWriter(tmp_path / "w.jsonl")
    big = build.message_event(build.text("z" * MAX_LINE_BYTES))
    with pytest.raises(RecordTooLongError):
        writer.write(T0, "sales", big)
    writer.write(T0, "sales", build.connected())
    writer.close()
    assert (tmp_path / "w.jsonl").read_text() == record + "\n"
