"""The re-pair flow and the remediation ladder, through HTTP."""

from __future__ import annotations

import asyncio
import errno
import gc
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from sidecar import testing as build
from sidecar.adapters.audit import AuditLog
from sidecar.adapters.http import READY
from sidecar.compose import Assembly, build_app, build_repairs
from sidecar.core.clock import ReplayClock
from sidecar.core.repair import RecordingControl, Repairs

from .support.config import TOKEN, AssemblyFactory, ConfigFactory

AUTH = {"Authorization": f"Bearer {TOKEN}"}
Client = TestClient[Any, Any]


class Harness:
    def __init__(
        self, assembly: Assembly, client: Client, control: RecordingControl, repairs: Repairs
    ) -> None:
        self.assembly, self.client, self.control, self.repairs = assembly, client, control, repairs
        self.sidecar = assembly.sidecar
        self.state_dir = assembly.state_dir
        self.registry = assembly.metrics.registry


MakeHarness = Callable[..., Awaitable[Harness]]


@pytest.fixture
def make_harness(
    make_config: ConfigFactory,
    make_assembly: AssemblyFactory,
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> MakeHarness:
    async def make(control: RecordingControl | None = None) -> Harness:
        assembly = make_assembly(
            make_config(
                [{"id": "sales"}, {"id": "support"}], repair={"interval": "1h", "grace": "1s"}
            )
        )
        control = control or RecordingControl()
        repairs = build_repairs(assembly, control)
        app = build_app(assembly, repairs=repairs)
        app[READY].set()
        return Harness(assembly, await aiohttp_client(app), control, repairs)

    return make


@pytest.fixture
async def harness(make_harness: MakeHarness) -> Harness:
    return await make_harness()


async def test_regenerate_qr_starts_a_pairing_once_per_interval(harness: Harness) -> None:
    client = harness.client
    assert (await client.post("/api/whatsapp/regenerate-qr/sales")).status == 401
    assert (await client.post("/api/whatsapp/regenerate-qr/nobody", headers=AUTH)).status == 404
    started = await client.post("/api/whatsapp/regenerate-qr/sales", headers=AUTH)
    assert started.status == 202
    assert await started.json() == {"accountId": "sales", "status": "pairing"}
    assert started.headers["Cache-Control"] == "no-store"
    assert harness.control.requests == [("start_pairing", "sales")]
    again = await client.post("/api/whatsapp/regenerate-qr/sales", headers=AUTH)
    assert again.status == 429
    assert 3500 <= int(again.headers["Retry-After"]) <= 3600
    assert harness.control.requests == [("start_pairing", "sales")]
    other = await client.post("/api/whatsapp/regenerate-qr/support", headers=AUTH)
    assert other.status == 202
    audit = [
        json.loads(line) for line in (harness.state_dir / "audit.log").read_text().splitlines()
    ]
    assert [(a["action"], a["account"], a["outcome"]) for a in audit] == [
        ("regenerate_qr", "sales", "started"),
        ("regenerate_qr", "sales", "refused: too soon"),
        ("regenerate_qr", "support", "started"),
    ]
    assert all(a["who"].startswith("static:token:") for a in audit)
    assert TOKEN not in (harness.state_dir / "audit.log").read_text()
    assert (harness.state_dir / "audit.log").stat().st_mode & 0o777 == 0o600
    value = harness.registry.get_sample_value
    assert value("whatsapp_remediation_steps_total", {"account": "sales", "step": "repair"}) == 1.0


async def test_pair_code_validates_and_reports_no_live_session(harness: Harness) -> None:
    client = harness.client
    bad_json = await client.post(
        "/api/whatsapp/accounts/sales/pair-code", headers=AUTH, data=b"{not json"
    )
    assert (bad_json.status, await bad_json.json()) == (400, {"error": "body is not json"})
    bad_phone = await client.post(
        "/api/whatsapp/accounts/sales/pair-code", headers=AUTH, json={"phone": "12ab99"}
    )
    assert bad_phone.status == 400
    assert "12ab99" not in await bad_phone.text()
    replayed = await client.post(
        "/api/whatsapp/accounts/sales/pair-code", headers=AUTH, json={"phone": "+12025550100"}
    )
    assert replayed.status == 503
    assert "12025550100" not in await replayed.text()
    huge = await client.post(
        "/api/whatsapp/accounts/sales/pair-code", headers=AUTH, data=b"x" * 100_000
    )
    assert huge.status == 413


async def test_pair_events_stream_the_qr_and_the_pairing(
    harness: Harness, clock: ReplayClock
) -> None:
    handle = harness.sidecar.handle
    response = await harness.client.get("/api/whatsapp/accounts/sales/pair/events", headers=AUTH)
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-store"

    async def next_view() -> dict[str, Any]:
        line = b""
        while not line.startswith(b"data: "):
            line = await asyncio.wait_for(response.content.readline(), 5)
        return dict(json.loads(line[6:]))

    first = await next_view()
    assert (first["status"], first["qrSvg"], first["paired"]) == ("connecting", None, False)
    handle("sales", build.qr_with_code("2@first-code,xyz"), clock.now())
    view = await next_view()
    assert view["status"] == "qr_pending"
    assert view["qrSvg"].startswith("<svg")
    handle("sales", build.qr_with_code("2@second-code,xyz"), clock.now())
    second = await next_view()
    assert second["qrSvg"] != view["qrSvg"]  # updated in place
    handle("sales", build.pair_status(success=True), clock.now())
    paired = await next_view()
    assert (paired["paired"], paired["platform"], paired["qrSvg"]) == (True, "android", None)
    response.close()


async def test_webhook_ladder_reconnects_then_marks_needs_repair(
    harness: Harness, clock: ReplayClock
) -> None:
    handle = harness.sidecar.handle
    t0 = clock.now()
    for account in ("sales", "support"):
        handle(account, build.connected(), t0)
        handle(account, build.offline_sync_completed(), t0 + 1)
        handle(account, build.message_event(build.text("hi")), t0 + 2)
        handle(
            account, build.message_event(build.history_sync_notification(), from_me=True), t0 + 3
        )
    clock.advance_to(t0 + 400)  # both degraded now
    payload = {
        "version": "4",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {
                    "alertname": "WhatsappSessionDegraded",
                    "account": "sales",
                    "severity": "critical",
                },
            },
            {
                "status": "firing",
                "labels": {
                    "alertname": "WhatsappSessionDegraded",
                    "account": "support",
                    "severity": "critical",
                },
            },
            {
                "status": "firing",
                "labels": {"alertname": "WhatsappAccountLoggedOut", "account": "sales"},
            },
            {
                "status": "firing",
                "labels": {"alertname": "WhatsappSessionDegraded", "account": "stranger"},
            },
        ],
    }
    assert (await harness.client.post("/api/alertmanager/webhook", json=payload)).status == 401
    response = await harness.client.post("/api/alertmanager/webhook", headers=AUTH, json=payload)
    assert await response.json() == {"started": ["sales", "support"], "skipped": []}
    again = await harness.client.post("/api/alertmanager/webhook", headers=AUTH, json=payload)
    assert await again.json() == {
        "started": [],
        "skipped": ["sales", "support"],
    }  # a ladder is already running
    await asyncio.sleep(0.1)
    assert sorted(harness.control.requests) == [("reconnect", "sales"), ("reconnect", "support")]
    handle(
        "support", build.message_event(build.text("back")), t0 + 400.5
    )  # the reconnect cured support
    await asyncio.sleep(1.2)  # grace: 1 s
    value = harness.registry.get_sample_value
    assert value("whatsapp_account_needs_repair", {"account": "sales"}) == 1.0
    assert value("whatsapp_account_needs_repair", {"account": "support"}) == 0.0
    assert (
        value("whatsapp_remediation_steps_total", {"account": "sales", "step": "needs_repair"})
        == 1.0
    )
    assert (
        value("whatsapp_remediation_steps_total", {"account": "support", "step": "recovered"})
        == 1.0
    )
    assert (
        value("whatsapp_remediation_steps_total", {"account": "support", "step": "reconnect"})
        == 1.0
    )
    bad = await harness.client.post("/api/alertmanager/webhook", headers=AUTH, json={"nope": 1})
    assert bad.status == 400


@pytest.mark.parametrize(
    "payload",
    [
        {"alerts": "x"},
        {"alerts": [1, "two", None]},
        {"alerts": [{"labels": "x"}, {"labels": ["account", "sales"]}]},
        {"alerts": [{"labels": {"alertname": "WhatsappSessionDegraded", "account": 5}}]},
    ],
)
async def test_webhook_payloads_of_the_wrong_shape_start_nothing(
    harness: Harness, payload: dict[str, Any]
) -> None:
    assert await harness.repairs.on_alerts(payload, "test") == {"started": [], "skipped": []}
    assert harness.control.requests == []


# -- the audit log cannot be written: nothing is counted or reported that did not start ----


class CodeControl(RecordingControl):
    """A control with a live pairing session: it hands out a pairing code."""

    async def pair_code(self, account_id: str, phone: str) -> str:
        self.requests.append(("pair_code", account_id))
        return "WXYZ-9876"


def break_audit_log(state_dir: Path) -> None:
    """The real audit log, on a device that is always full: every write is ENOSPC."""
    path = state_dir / "audit.log"
    path.unlink()
    path.symlink_to("/dev/full")


def mend_audit_log(state_dir: Path) -> None:
    (state_dir / "audit.log").unlink()  # the next record creates it again


def audit_records(state_dir: Path) -> list[tuple[str, str, str]]:
    lines = (state_dir / "audit.log").read_text().splitlines()
    return [(a["action"], a["account"], a["outcome"]) for a in map(json.loads, lines)]


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What reaches the event loop's exception handler (a task that died unobserved)."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield seen
    gc.collect()  # a dropped task with an exception reports it when collected
    loop.set_exception_handler(None)
    assert seen == []


async def test_a_repair_that_cannot_be_audited_is_refused_uncounted_and_can_be_retried(
    make_harness: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    harness = await make_harness(CodeControl())
    client, value = harness.client, harness.registry.get_sample_value
    break_audit_log(harness.state_dir)
    refused = await client.post("/api/whatsapp/regenerate-qr/sales", headers=AUTH)
    assert (refused.status, await refused.json()) == (
        503,
        {"error": "the audit log cannot be written; nothing was done"},
    )
    code = await client.post(
        "/api/whatsapp/accounts/sales/pair-code", headers=AUTH, json={"phone": "+12025550100"}
    )
    assert code.status == 503
    assert "WXYZ-9876" not in await code.text()  # not handed out without its record
    assert harness.control.requests == [("pair_code", "sales")]  # no pairing started
    assert value("whatsapp_remediation_steps_total", {"account": "sales", "step": "repair"}) == 0
    assert value("whatsapp_audit_write_errors_total") == 2.0
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.getMessage() for r in errors] == [
        "audit log: writing a record failed: OSError (ENOSPC); re-pairs, pairing codes and"
        " remediations are refused while it fails (whatsapp_audit_write_errors_total)"
    ]  # once, with the error's kind; no principal, token, number or code

    mend_audit_log(harness.state_dir)
    started = await client.post("/api/whatsapp/regenerate-qr/sales", headers=AUTH)
    assert started.status == 202  # the refused attempt took no slot
    assert harness.control.requests[-1] == ("start_pairing", "sales")
    assert value("whatsapp_remediation_steps_total", {"account": "sales", "step": "repair"}) == 1
    assert audit_records(harness.state_dir) == [("regenerate_qr", "sales", "started")]


class FailingPairing(RecordingControl):
    async def start_pairing(self, account_id: str) -> None:
        await super().start_pairing(account_id)
        if len(self.requests) == 1:
            raise OSError(errno.EIO, "the session store could not be dropped")


async def test_a_repair_that_fails_to_start_gives_its_slot_back(make_harness: MakeHarness) -> None:
    harness = await make_harness(FailingPairing())
    failed = await harness.client.post("/api/whatsapp/regenerate-qr/sales", headers=AUTH)
    assert (failed.status, await failed.json()) == (500, {"error": "internal error"})
    value = harness.registry.get_sample_value
    assert value("whatsapp_remediation_steps_total", {"account": "sales", "step": "repair"}) == 0
    again = await harness.client.post("/api/whatsapp/regenerate-qr/sales", headers=AUTH)
    assert again.status == 202
    assert value("whatsapp_remediation_steps_total", {"account": "sales", "step": "repair"}) == 1
    assert audit_records(harness.state_dir) == [
        ("regenerate_qr", "sales", "started"),
        ("regenerate_qr", "sales", "failed: OSError (EIO)"),
        ("regenerate_qr", "sales", "started"),
    ]


def degrade(harness: Harness, clock: ReplayClock, account: str) -> None:
    t0 = clock.now()
    handle = harness.sidecar.handle
    handle(account, build.connected(), t0)
    handle(account, build.offline_sync_completed(), t0 + 1)
    handle(account, build.message_event(build.text("hi")), t0 + 2)
    handle(account, build.message_event(build.history_sync_notification(), from_me=True), t0 + 3)
    clock.advance_to(t0 + 400)


FIRING = {
    "alerts": [
        {"status": "firing", "labels": {"alertname": "WhatsappSessionDegraded", "account": "sales"}}
    ]
}


async def test_the_webhook_reports_only_ladders_that_started_when_the_audit_log_fails(
    harness: Harness, clock: ReplayClock, loop_errors: list[dict[str, Any]]
) -> None:
    degrade(harness, clock, "sales")
    value = harness.registry.get_sample_value
    break_audit_log(harness.state_dir)
    response = await harness.client.post("/api/alertmanager/webhook", headers=AUTH, json=FIRING)
    assert await response.json() == {"started": [], "skipped": [], "failed": ["sales"]}
    assert harness.control.requests == []
    assert value("whatsapp_remediation_steps_total", {"account": "sales", "step": "reconnect"}) == 0
    assert value("whatsapp_audit_write_errors_total") == 1.0

    mend_audit_log(harness.state_dir)
    response = await harness.client.post("/api/alertmanager/webhook", headers=AUTH, json=FIRING)
    assert await response.json() == {"started": ["sales"], "skipped": []}
    assert harness.control.requests == [("reconnect", "sales")]
    assert value("whatsapp_remediation_steps_total", {"account": "sales", "step": "reconnect"}) == 1
    break_audit_log(harness.state_dir)  # before the grace period ends: needs_repair's record fails

    deadline = asyncio.get_running_loop().time() + 10
    while value("whatsapp_account_needs_repair", {"account": "sales"}) != 1.0:
        assert asyncio.get_running_loop().time() < deadline, "needs_repair never marked"
        await asyncio.sleep(0.05)
    assert value("whatsapp_audit_write_errors_total") == 2.0
    mend_audit_log(harness.state_dir)
    again = await harness.client.post("/api/alertmanager/webhook", headers=AUTH, json=FIRING)
    assert (await again.json())["started"] == ["sales"]  # the ladder ended: a new one may start


class FailingReconnect(RecordingControl):
    async def reconnect(self, account_id: str) -> None:
        raise RuntimeError("the supervisor is gone")


async def test_a_ladder_whose_reconnect_fails_is_reported_failed_and_not_counted(
    make_harness: MakeHarness, clock: ReplayClock, loop_errors: list[dict[str, Any]]
) -> None:
    harness = await make_harness(FailingReconnect())
    degrade(harness, clock, "sales")
    for _ in range(2):  # nothing is left behind that would skip the next one
        response = await harness.client.post("/api/alertmanager/webhook", headers=AUTH, json=FIRING)
        assert await response.json() == {"started": [], "skipped": [], "failed": ["sales"]}
    value = harness.registry.get_sample_value
    assert value("whatsapp_remediation_steps_total", {"account": "sales", "step": "reconnect"}) == 0
    assert audit_records(harness.state_dir)[-1] == (
        "remediate_reconnect",
        "sales",
        "failed: RuntimeError",
    )


def test_an_audit_record_cut_short_leaves_no_torn_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit = AuditLog(tmp_path)
    audit.record("static:token:ab", "regenerate_qr", "sales", "started")
    before = audit.path.read_bytes()
    real_write = os.write

    def half(fd: int, data: bytes) -> int:  # the disk filled up halfway through the line
        return real_write(fd, data[: len(data) // 2])

    with monkeypatch.context() as patch:
        patch.setattr(os, "write", half)
        with pytest.raises(OSError, match="short write") as caught:
            audit.record("static:token:ab", "regenerate_qr", "support", "started")
    assert caught.value.errno == errno.ENOSPC
    assert audit.path.read_bytes() == before
    audit.record("static:token:ab", "regenerate_qr", "support", "started")
    assert [a for _, a, _ in audit_records(tmp_path)] == ["sales", "support"]
