"""A deaf session held by another gateway pages through the shipped rules (issue 17):
its gateway posts only protocol traffic to ``/api/ingest/baileys/...`` while a sibling
gets real messages; the sidecar's /metrics, scraped every minute, go through
``promtool test rules`` with the shipped alert rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from monitoring.config import MonitoringConfig
from monitoring.promtool_cases import INSTANCE, Cases
from sidecar.compose import assemble, build_app, live_source
from sidecar.core.clock import ReplayClock

from .support.config import TOKEN, ConfigFactory
from .support.paths import REPO
from .support.scrapes import Scrape, input_series, parse, promtool_test, sample

pytestmark = pytest.mark.services  # runs promtool

RULES = REPO / "alerts" / "wa-sidecar.rules.yml"
T0 = 1_764_068_400.0
MINUTES = 25
HISTORY_SYNC = {"protocolMessage": {"type": "HISTORY_SYNC_NOTIFICATION"}}


def upsert(message_id: str, content: dict[str, Any], at: float) -> dict[str, Any]:
    key = {"remoteJid": "12025550123@s.whatsapp.net", "fromMe": False, "id": message_id}
    message = {"key": key, "messageTimestamp": int(at), "message": content}
    return {"event": "messages.upsert", "data": {"type": "notify", "messages": [message]}}


async def test_a_deaf_ingest_session_turns_degraded_and_pages(
    tmp_path: Path, make_config: ConfigFactory
) -> None:
    clock = ReplayClock(speed=0)
    clock.start(T0)
    loaded = make_config([{"id": "deaf", "source": "ingest"}, {"id": "alive", "source": "ingest"}])
    assembly = assemble(loaded, clock, storage=False)
    live_source(assembly, None)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    scrapes: list[Scrape] = []
    async with TestClient(TestServer(build_app(assembly))) as client:

        async def post(account: str, body: dict[str, Any]) -> None:
            async with client.post(
                f"/api/ingest/baileys/{account}", json=body, headers=headers
            ) as reply:
                assert reply.status == 200, await reply.text()

        for account in ("deaf", "alive"):
            await post(account, {"event": "connection.update", "data": {"connection": "open"}})
            await post(account, upsert(f"{account}-first", {"conversation": "hi"}, T0))
        for minute in range(MINUTES + 1):
            at = T0 + 60 * minute
            clock.advance_to(at + 30)
            await post("deaf", upsert(f"deaf-{minute}", HISTORY_SYNC, at + 30))
            await post("alive", upsert(f"alive-{minute}", {"conversation": f"m{minute}"}, at))
            clock.advance_to(at + 59)
            assembly.sidecar.evaluate_verdicts()
            scrapes.append(parse(assembly.metrics.render().decode()))
    assembly.close()

    assert sample(scrapes[2], "whatsapp_session_degraded", account="deaf") == 0
    assert sample(scrapes[MINUTES], "whatsapp_session_degraded", account="deaf") == 1
    assert not any(sample(s, "whatsapp_session_degraded", account="alive") for s in scrapes)

    config = MonitoringConfig()
    c = Cases(config)
    deaf = c.account("deaf") | {"_reasons": "silence_with_protocol_traffic "}
    result = promtool_test(
        tmp_path,
        RULES,
        [
            {
                "name": "a deaf ingest account, as the sidecar exported it",
                "interval": "1m",
                "input_series": input_series(scrapes, T0, config.job, INSTANCE),
                "alert_rule_test": [
                    c.expect("WhatsappSessionDegraded", "3m"),
                    c.expect("WhatsappSessionDegraded", f"{MINUTES}m", deaf),
                ],
            }
        ],
    )
    assert result.returncode == 0, result.stdout + result.stderr
