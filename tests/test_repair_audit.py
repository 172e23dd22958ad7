"""Re-pairs and the remediation ladder when the audit log cannot be written, or a step
fails: nothing is counted or reported as started that did not start, and no task dies
unobserved."""

from __future__ import annotations

import asyncio
import errno
import gc
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sidecar import testing as build
from sidecar.adapters.audit import AuditLog
from sidecar.core.clock import ReplayClock
from sidecar.core.repair import RecordingControl

from .support.config import AssemblyFactory, ConfigFactory
from .support.repair import AUTH, AiohttpClient, Harness, MakeHarness, harness_factory


@pytest.fixture
def make_harness(
    make_config: ConfigFactory, make_assembly: AssemblyFactory, aiohttp_client: AiohttpClient
) -> MakeHarness:
    return harness_factory(make_config, make_assembly, aiohttp_client)


@pytest.fixture
async def harness(make_harness: MakeHarness) -> Harness:
    return await make_harness()


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
    clock.advance_to(t0 + 370)  # the evidence, seen; confirmed (verdict.confirm) 30 s later
    harness.sidecar.evaluate_verdicts()
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
