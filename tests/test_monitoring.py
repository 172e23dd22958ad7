"""The shipped rules, Alertmanager config and dashboards, against the real servers.

promtool and amtool check the files; then the sidecar replays a capture in
real time, a real Prometheus scrapes it and evaluates the shipped rules
(only their durations shortened), and a real Alertmanager with the shipped
routing delivers to a webhook receiver run by the test.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitoring.__main__ import render, render_rules
from monitoring.config import MonitoringConfig
from sidecar import testing as build
from sidecar.adapters.capture import encode_record
from sidecar.domain.probes import ProbeSent, probe_text

from .support.cli import sidecar_cli, wait_ready
from .support.http import get
from .support.paths import REPO
from .support.polling import wait_for
from .support.services import PROMETHEUS, alertmanager_config_for, installed, post_alerts, server
from .support.services import alertmanager as start_alertmanager


def test_generated_files_are_up_to_date() -> None:
    stale = [
        str(p.relative_to(REPO))
        for p, text in render(MonitoringConfig()).items()
        if not p.exists() or p.read_text() != text
    ]
    assert not stale, f"run `python -m monitoring`: stale {stale}"


@pytest.mark.services
def test_promtool_checks_and_unit_tests_pass() -> None:
    check = subprocess.run(
        [installed("promtool"), "check", "rules", "alerts/wa-sidecar.rules.yml"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    groups = yaml.safe_load((REPO / "alerts/wa-sidecar.rules.yml").read_text())["groups"]
    assert f"SUCCESS: {sum(len(g['rules']) for g in groups)} rules found" in check.stdout
    unit = subprocess.run(
        [installed("promtool"), "test", "rules", "alerts/tests/wa-sidecar.test.yml"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr


def test_every_alert_has_a_firing_and_a_quiet_case_and_the_required_annotations() -> None:
    rules = yaml.safe_load((REPO / "alerts/wa-sidecar.rules.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    required = {
        "WhatsappSessionDegraded",
        "WhatsappNoRealMessages",
        "WhatsappAccountLoggedOut",
        "WhatsappAccountDisconnected",
        "WhatsappReconnectStorm",
        "WhatsappSidecarDown",
        "WhatsappEventHandlerErrors",
        "WhatsappStoreWriteErrors",
        "WhatsappSpoolBacklogGrowing",
        "WhatsappSpoolOldestMessageTooOld",
    }
    assert required <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), name
        anchor = rule["annotations"]["runbook_url"].split("#")[1]
        assert f"## {name}" in (REPO / "docs/runbook.md").read_text(), (
            f"runbook has no section for {name}"
        )
        assert anchor == name.lower()
    for name in (
        "WhatsappSessionDegraded",
        "WhatsappNoRealMessages",
        "WhatsappAccountDisconnected",
    ):
        assert "keep_firing_for" in alerts[name]
    assert (
        "/accounts/{{ $labels.account }}/pair"
        in alerts["WhatsappSessionDegraded"]["annotations"]["description"]
    )
    cases = yaml.safe_load((REPO / "alerts/tests/wa-sidecar.test.yml").read_text())["tests"]

    def accounts_in(group: dict[str, Any]) -> set[str]:
        return set(
            re.findall(r'account="([^"]+)"', " ".join(s["series"] for s in group["input_series"]))
        )

    fires = {t["alertname"] for g in cases for t in g["alert_rule_test"] if t["exp_alerts"]}
    # a case where the alert stays silent: no alert expected at all, or series of an
    # account that the expected alerts leave out
    stays_quiet = {
        t["alertname"]
        for g in cases
        for t in g["alert_rule_test"]
        if not t["exp_alerts"]
        or accounts_in(g) - {e["exp_labels"].get("account") for e in t["exp_alerts"]}
    }
    assert fires == set(alerts)
    assert stays_quiet == set(alerts)


@pytest.mark.services
def test_dashboards_show_one_table_thresholds_units_and_descriptions() -> None:
    """What Grafana shows: a table of several queries is one table (merged), every stat
    colours its value, every panel says what it shows, a rate of messages is not
    "requests"."""
    for path in sorted((REPO / "grafana/dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            if panel["type"] == "row":
                continue
            where = f"{path.name} / {panel['title']}"
            assert panel.get("description"), f"{where}: no description"
            defaults = panel.get("fieldConfig", {}).get("defaults", {})
            exprs = " ".join(t["expr"] for t in panel["targets"])
            if "requests_refused" not in exprs:
                assert defaults.get("unit") != "reqps", f"{where}: its rates are not requests"
            if panel["type"] == "table" and len(panel["targets"]) > 1:
                kinds = [t["id"] for t in panel.get("transformations", [])]
                assert {"merge", "joinByField"} & set(kinds), f"{where}: shows one table a query"
            if panel["type"] == "stat":
                steps = defaults.get("thresholds", {}).get("steps", [])
                assert steps, f"{where}: no thresholds"
                assert steps[0]["value"] is None


def test_the_monitoring_page_names_every_alert() -> None:
    rules = yaml.safe_load((REPO / "alerts/wa-sidecar.rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    page = (REPO / "docs/monitoring.md").read_text()
    assert sorted(a for a in alerts if f"`{a}`" not in page) == []


def test_amtool_accepts_the_alertmanager_config() -> None:
    result = subprocess.run(
        [installed("amtool"), "check-config", "alertmanager/alertmanager.yml"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- real servers ---------------------------------------------------------------------


class Webhook:
    """An HTTP receiver for Alertmanager's webhook notifications."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        received = self.notifications

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                received.append({"path": self.path, **json.loads(self.rfile.read(length))})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, status: str = "firing") -> list[dict[str, Any]]:
        return [a for n in self.notifications for a in n["alerts"] if a["status"] == status]

    def close(self) -> None:
        self.server.shutdown()


@contextlib.contextmanager
def alertmanager(tmp_path: Path, webhook: Webhook) -> Iterator[str]:
    config = tmp_path / "alertmanager.yml"
    config.write_text(yaml.safe_dump(alertmanager_config_for(webhook.url)))
    with start_alertmanager(config, tmp_path) as url:
        yield url


@pytest.mark.services
def test_shipped_inhibitions(tmp_path: Path) -> None:
    webhook = Webhook()
    try:
        with alertmanager(tmp_path, webhook) as am:
            base = {"job": "wa-sidecar", "instance": "sidecar:9464"}
            post_alerts(
                am,
                [
                    {
                        **base,
                        "alertname": "WhatsappAccountLoggedOut",
                        "account": "gone",
                        "severity": "critical",
                    },
                    {
                        **base,
                        "alertname": "WhatsappSessionDegraded",
                        "account": "gone",
                        "severity": "critical",
                    },
                    {
                        **base,
                        "alertname": "WhatsappSessionDegraded",
                        "account": "deaf",
                        "severity": "critical",
                    },
                ],
            )
            time.sleep(1.0)  # inhibition applies to alerts Alertmanager has seen together
            wait_for(
                lambda: (
                    {(a["labels"]["alertname"], a["labels"]["account"]) for a in webhook.alerts()}
                    >= {("WhatsappAccountLoggedOut", "gone"), ("WhatsappSessionDegraded", "deaf")}
                ),
                30,
                "the notifications",
            )
            time.sleep(3)
            delivered = {
                (a["labels"]["alertname"], a["labels"]["account"]) for a in webhook.alerts()
            }
            assert ("WhatsappSessionDegraded", "gone") not in delivered
            assert all(n["path"] == "/pager" for n in webhook.notifications)
            webhook.notifications.clear()
            post_alerts(
                am,
                [
                    {**base, "alertname": "WhatsappSidecarDown", "severity": "critical"},
                    {
                        **base,
                        "alertname": "WhatsappAccountDisconnected",
                        "account": "x",
                        "severity": "warning",
                    },
                ],
            )
            wait_for(lambda: webhook.alerts(), 30, "the sidecar-down page")
            time.sleep(3)
            assert [a["labels"]["alertname"] for a in webhook.alerts()] == ["WhatsappSidecarDown"]
    finally:
        webhook.close()


T_REAL = 1.0  # seconds between real messages of the healthy account


def live_capture(path: Path, start: float) -> None:
    """degrading: real messages for 8 s, then protocol only; healthy: real throughout, and
    canary probes to quiet, which receives nothing else."""
    records: list[tuple[float, str | None, Any]] = [
        (start, a, build.connected()) for a in ("degrading", "healthy", "quiet")
    ]
    records += [
        (start + 1, a, build.offline_sync_completed()) for a in ("degrading", "healthy", "quiet")
    ]
    for k in range(1, 11):
        sent = start + 10 * k
        records.append((sent, "healthy", ProbeSent(f"p{k}", "quiet", ok=True)))
        records.append(
            (
                sent + 1.5,
                "quiet",
                build.message_event(build.text(probe_text(f"p{k}")), message_id=f"PR{k}"),
            )
        )
    n = 0
    t = start + 0.5
    while t < start + 110:
        n += 1
        ts = int(t * 1000)
        records.append(
            (
                t,
                "healthy",
                build.message_event(build.text("still here"), message_id=f"H{n}", timestamp_ms=ts),
            )
        )
        if t < start + 8:
            records.append(
                (
                    t,
                    "degrading",
                    build.message_event(build.text("hello"), message_id=f"D{n}", timestamp_ms=ts),
                )
            )
        else:
            records.append(
                (
                    t,
                    "degrading",
                    build.message_event(
                        build.history_sync_notification(),
                        message_id=f"P{n}",
                        from_me=True,
                        timestamp_ms=ts,
                    ),
                )
            )
        records.append((t + 0.5, None, None))
        t += T_REAL
    records.sort(key=lambda r: r[0])
    path.write_text("".join(encode_record(t, a, e) + "\n" for t, a, e in records))


def prometheus_query(url: str, expr: str) -> list[Any]:
    with urllib.request.urlopen(
        f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}), timeout=10
    ) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    result: list[Any] = body["data"]["result"]
    return result


#: Exported by the send worker and the ingest endpoint, which a replay does not run, or
#: only while there is something to say (the oldest queued age with something queued, a
#: ban's end while banned, a phone once seen, a refused connection's reason once it came):
#: panels on them need valid queries, not data.
NOT_ALWAYS_THERE = {
    "whatsapp_temporary_ban_expiry_timestamp_seconds",
    "whatsapp_primary_phone_last_seen_timestamp_seconds",
    "whatsapp_connect_failures_total",
    "whatsapp_send_duration_seconds",
    "whatsapp_outbox_messages",
    "whatsapp_outbox_oldest_queued_age_seconds",
    "whatsapp_ingest_events_total",
    "whatsapp_ingest_requests_refused_total",
    "whatsapp_ingest_last_request_timestamp_seconds",
}


def dashboard_queries() -> list[tuple[str, str, str]]:
    out = []
    for path in sorted((REPO / "grafana/dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                out.append((path.name, panel["title"], target["expr"]))
    return out


@pytest.mark.services
def test_end_to_end_degraded_page_reaches_the_receiver_and_dashboards_have_data(
    tmp_path: Path, tokens_file: Path
) -> None:
    webhook = Webhook()
    config = tmp_path / "sidecar.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "http": {
                    "listen": "127.0.0.1:0",
                    # where the pager's links lead: read by the rules from the sidecar
                    "external_url": "https://wa.example.org",
                    "runbook_url": "https://wiki.example.org/runbook",
                },
                "state_dir": str(tmp_path / "state"),
                "auth": {"tokens_file": str(tokens_file)},
                "silence_threshold": "12s",
                "accounts": [
                    {"id": "degrading"},
                    {
                        "id": "healthy",
                        "probe": {"peer": "quiet", "interval": "10s", "timeout": "5s", "misses": 2},
                    },
                    {"id": "quiet"},
                ],
            }
        )
    )
    rules = tmp_path / "rules.yml"
    rules.write_text(render_rules(MonitoringConfig().with_durations("3s")))
    capture = tmp_path / "live.jsonl"
    live_capture(capture, time.time() + 1)
    try:
        with alertmanager(tmp_path, webhook) as am:
            sidecar = sidecar_cli(
                "replay", str(capture), "--config", str(config), "--speed", "1", "--linger", "120"
            )
            try:
                sidecar_port = wait_ready(sidecar)
                prom_config = tmp_path / "prometheus.yml"
                prom_config.write_text(
                    yaml.safe_dump(
                        {
                            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                            "rule_files": [str(rules)],
                            "alerting": {
                                "alertmanagers": [
                                    {"static_configs": [{"targets": [am.removeprefix("http://")]}]}
                                ]
                            },
                            "scrape_configs": [
                                {
                                    "job_name": "wa-sidecar",
                                    "static_configs": [{"targets": [f"127.0.0.1:{sidecar_port}"]}],
                                }
                            ],
                        }
                    )
                )
                args = [
                    installed(PROMETHEUS),
                    f"--config.file={prom_config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                ]
                with server(args, tmp_path / "prometheus.log", "Prometheus") as prom:
                    wait_for(
                        lambda: any(
                            a["labels"]["alertname"] == "WhatsappSessionDegraded"
                            for a in webhook.alerts()
                        ),
                        90,
                        "the degraded page",
                    )
                    # give the other accounts every chance to (wrongly) page too
                    time.sleep(8)
                    delivered = webhook.alerts()
                    pages = {
                        (a["labels"]["alertname"], a["labels"].get("account")) for a in delivered
                    }
                    assert ("WhatsappSessionDegraded", "degrading") in pages
                    assert not [p for p in pages if p[1] in {"healthy", "quiet"}], pages
                    degraded = next(
                        a
                        for a in delivered
                        if a["labels"]["alertname"] == "WhatsappSessionDegraded"
                    )
                    # the shipped rules, never regenerated, link to where this sidecar is
                    annotations = degraded["annotations"]
                    assert annotations["repair_url"] == (
                        "https://wa.example.org/accounts/degrading/pair"
                    )
                    assert annotations["runbook_url"] == (
                        "https://wiki.example.org/runbook#whatsappsessiondegraded"
                    )
                    assert (
                        "Re-pair it: https://wa.example.org/accounts/degrading/pair"
                        in (annotations["description"])
                    )
                    assert degraded["labels"]["severity"] == "critical"
                    assert all(
                        n["path"] == "/pager"
                        for n in webhook.notifications
                        if any(
                            a["labels"]["alertname"] == "WhatsappSessionDegraded"
                            for a in n["alerts"]
                        )
                    )

                    exported = set(
                        re.findall(
                            r"^(whatsapp_[a-z_]+)",
                            get(f"http://127.0.0.1:{sidecar_port}/metrics"),
                            re.MULTILINE,
                        )
                    )
                    recorded = {
                        r["record"]
                        for g in yaml.safe_load(rules.read_text())["groups"]
                        for r in g["rules"]
                        if "record" in r
                    }
                    queries = dashboard_queries()
                    assert len(queries) >= 15
                    for board, title, expr in queries:
                        names = set(re.findall(r"(?<![\w:])whatsapp_[a-z_]+(?![\w:])", expr))
                        worker_only = {
                            n
                            for n in names
                            if re.sub(r"_(bucket|sum|count)$", "", n) in NOT_ALWAYS_THERE
                        }
                        for name in names - worker_only:
                            assert name in exported, (
                                f"{board} / {title} queries {name}, which the sidecar does not export"
                            )
                        for name in set(re.findall(r"[a-z_]+:whatsapp_[a-z_]+:\w+", expr)):
                            assert name in recorded, (
                                f"{board} / {title} queries {name}, which no shipped rule records"
                            )
                        concrete = (
                            expr.replace("$__rate_interval", "30s")
                            .replace("$job", "wa-sidecar")
                            .replace('account=~"$account"', 'account=~".*"')
                            .replace('account="$account"', 'account=~".*"')
                            .replace("$account", "degrading")
                        )
                        found = prometheus_query(prom, concrete)  # fails on invalid PromQL
                        assert found or worker_only, f"{board} / {title}: no data for {concrete}"
            finally:
                sidecar.terminate()
                sidecar.communicate(timeout=15)
    finally:
        webhook.close()
