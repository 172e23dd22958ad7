"""Where people and the pager reach the sidecar (issue 19): ``http.external_url`` and
``http.runbook_url``, exported as ``whatsapp_sidecar_links_info`` for the shipped rules
to read, and the runbook the sidecar serves itself at /runbook."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from sidecar.cli import EXIT_USAGE, main
from sidecar.compose import assemble, build_app
from sidecar.core.clock import ReplayClock

from .support.config import ConfigFactory
from .support.paths import REPO


@pytest.mark.parametrize(
    ("http", "links"),
    [
        ({"listen": "127.0.0.1:9464"}, ("http://127.0.0.1:9464", "http://127.0.0.1:9464/runbook")),
        ({"listen": "0.0.0.0:8080"}, ("http://127.0.0.1:8080", "http://127.0.0.1:8080/runbook")),
        ({"listen": "[::1]:9464"}, ("http://[::1]:9464", "http://[::1]:9464/runbook")),
        (
            {"external_url": "https://wa.example.org/sidecar/"},
            ("https://wa.example.org/sidecar", "https://wa.example.org/sidecar/runbook"),
        ),
        (
            {"external_url": "https://wa.example.org", "runbook_url": "https://wiki.example.org/r"},
            ("https://wa.example.org", "https://wiki.example.org/r"),
        ),
    ],
)
def test_the_links_come_from_the_config_or_the_listen_address(
    make_config: ConfigFactory, clock: ReplayClock, http: dict[str, str], links: tuple[str, str]
) -> None:
    loaded = make_config(http=http)
    assert loaded.config.http.links == links
    assembly = assemble(loaded, clock, storage=False)
    try:
        labels = {"external_url": links[0], "runbook_url": links[1]}
        got = assembly.metrics.registry.get_sample_value("whatsapp_sidecar_links_info", labels)
        assert got == 1.0
    finally:
        assembly.close()


def test_a_url_with_credentials_is_refused_without_echoing_them(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "http": {"external_url": "https://someone:hunter2@wa.example.org"},
                "accounts": [{"id": "sales"}],
            }
        )
    )
    assert main(["check-config", "--config", str(config)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "http.external_url: must not hold credentials" in err
    assert "hunter2" not in err


async def test_the_sidecar_serves_its_runbook_with_an_anchor_for_every_alert(
    make_config: ConfigFactory, clock: ReplayClock
) -> None:
    assembly = assemble(make_config(), clock, storage=False)
    rules = yaml.safe_load((REPO / "alerts" / "wa-sidecar.rules.yml").read_text())
    alerts = [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
    try:
        async with (
            TestClient(TestServer(build_app(assembly))) as client,
            client.get("/runbook") as reply,
        ):
            assert reply.status == 200
            assert reply.content_type == "text/html"
            page = await reply.text()
    finally:
        assembly.close()
    anchors = set(re.findall(r'<h2 id="([^"]+)"', page))
    assert {alert.lower() for alert in alerts} <= anchors
    assert "re-pair-an-account" in anchors  # the runbook's own links point at it
    assert "<script" not in page
