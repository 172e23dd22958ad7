"""The re-pair flow and the remediation ladder, through HTTP."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from sidecar import testing as build
from sidecar.core.clock import ReplayClock

from .support.config import TOKEN, AssemblyFactory, ConfigFactory
from .support.repair import AUTH, AiohttpClient, Harness, harness_factory


@pytest.fixture
async def harness(
    make_config: ConfigFactory, make_assembly: AssemblyFactory, aiohttp_client: AiohttpClient
) -> Harness:
    return await harness_factory(make_config, make_assembly, aiohttp_client)()


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


@pytest.mark.parametrize(
    "leave",
    [
        pytest.param([build.connected()], id="connected"),
        pytest.param([build.pair_status(success=False), build.disconnected()], id="disconnected"),
        pytest.param([build.logged_out()], id="logged-out"),
    ],
)
async def test_a_qr_code_is_never_shown_again_once_the_account_left_qr_pending(
    harness: Harness, clock: ReplayClock, leave: list[Any]
) -> None:
    """A QR code is shown while it waits to be scanned. Once the account leaves qr_pending
    (it connected, or the connection ended), a later return to qr_pending without a fresh
    code (a failed pairing, a QR event without codes) shows none: never the old one."""
    handle = harness.sidecar.handle
    handle("sales", build.qr_with_code("2@stale-code,xyz"), clock.now())
    assert harness.sidecar.pairing_view("sales").qr_code == "2@stale-code,xyz"
    for event in leave:
        handle("sales", event, clock.now())
    assert harness.sidecar.pairing_view("sales").qr_code is None
    for event in (build.pair_status(success=False), build.qr()):
        handle("sales", event, clock.now())
        view = harness.sidecar.pairing_view("sales")
        assert (view.status, view.qr_code) == ("qr_pending", None)
    response = await harness.client.get("/api/whatsapp/accounts/sales/pair/events", headers=AUTH)
    line = b""
    while not line.startswith(b"data: "):
        line = await asyncio.wait_for(response.content.readline(), 5)
    assert json.loads(line[6:])["qrSvg"] is None
    response.close()
    handle("sales", build.qr_with_code("2@fresh-code,xyz"), clock.now())
    assert harness.sidecar.pairing_view("sales").qr_code == "2@fresh-code,xyz"


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
    clock.advance_to(t0 + 370)  # the evidence, seen; confirmed 30 s later
    harness.sidecar.evaluate_verdicts()
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
    # a person re-pairs sales: it needs no re-pair any more (the alert resolves)
    handle("sales", build.pair_status(success=True), t0 + 410)
    assert value("whatsapp_account_needs_repair", {"account": "sales"}) == 0.0


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
