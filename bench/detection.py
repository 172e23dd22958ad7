"""Detection: from a session going deaf to the page at Alertmanager's receiver, and no
page for the sessions that only look deaf.

The sidecar replays a capture in real time (speed 1), with its shipped defaults
(silence threshold 5 minutes, ``verdict.confirm`` 30 s, probes every 5 minutes with a
2-minute timeout and 2 misses). Two accounts go deaf: ``deafening`` gets a real message
every few seconds, then, from a known onset (its last real message), only protocol
traffic; ``probed``, otherwise quiet, stops receiving the canary probes ``prober`` sends
it (its first probe arrives, the next ones never do). The controls must never page:
``healthy`` (busy), ``quiet`` (nothing at all), ``night`` (protocol traffic at night,
when the history it restarts with says the account is silent), ``reconnecting`` (a short
drop, then an outage longer than its threshold, each followed by an offline backlog that
brings protocol traffic first) and ``stalled`` (keepalives fail for 3 minutes, then
whatsmeow reconnects by itself), and ``prober``.

A real Prometheus scrapes the sidecar and evaluates the shipped rules with the shipped
intervals (deploy/container/prometheus.yml); a real Alertmanager routes with the shipped
alertmanager.yml, its receivers' URLs pointed at a webhook run here. Measured, in wall
seconds: the first scrape of each deaf account's degraded verdict
(``whatsapp_session_degraded``; the watcher reads /metrics only at the start, for the
sidecar's clock, as each read is a look at the verdicts), Prometheus firing
WhatsappSessionDegraded, and the page reaching the pager receiver;
targets: a deaf account's page within its effective threshold + 90 s of its last real
message, a probed one's within 2 probe intervals + 90 s of the first lost probe, and no
page (and no degraded verdict) for any control.

    python -m bench.detection          # shipped waits and intervals: ~14 minutes
    python -m bench.detection --smoke  # every time and wait divided by 30: ~40 s

Exits 1 when a page never arrives or a control is paged, and, on a full run, when a
page misses its target.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from bench.detection_report import DEGRADED_ALERT, PAGER, Waits, summarize
from bench.detection_setup import (
    DEAFENING,
    FULL,
    PROBED,
    PROBER,
    REPO,
    SHIPPED_PROMETHEUS,
    SMOKE,
    Timing,
    alertmanager_config,
    night_zone,
    prometheus_config,
    rules_text,
    save_night_history,
    sidecar_config,
    write_capture,
)
from bench.detection_watch import (
    Observations,
    Processes,
    Receiver,
    check_running,
    read_scraped_verdicts,
    sample_prometheus,
    sample_sidecar_clock,
    started,
)
from monitoring.durations import seconds
from sidecar.config import load_config
from tests.support.ports import free_port
from tests.support.services import installed

#: The targets' allowance past the evidence's own wait, in full-run seconds.
ALLOWANCE_S = 90.0
#: The sidecar's replay clock starts at the capture's first record once it serves
#: HTTP; starting the capture this far ahead keeps its clock close to wall time.
SIDECAR_START_S = 0.8
#: How long past the last target to keep waiting before calling a page lost.
GIVE_UP_AFTER_TARGET_S = 60.0
#: How long the sidecar serves after its capture ends.
LINGER_S = 60.0
#: /metrics reads for the sidecar's clock, at the start only.
CLOCK_SAMPLES = 10


def configured_waits(
    sidecar: Path,
    rules: Path,
    prometheus: dict[str, Any],
    alertmanager: dict[str, Any],
    timing: Timing,
) -> Waits:
    config = load_config(sidecar).config
    settings = {s.account_id: s for s in config.account_settings()}
    probe = settings[PROBER].probe
    assert probe is not None
    alerts = {
        rule["alert"]: rule
        for group in yaml.safe_load(rules.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    root = alertmanager["route"]
    pager_route = next(r for r in root["routes"] if r["receiver"] == PAGER)
    return Waits(
        silence_threshold_s=settings[DEAFENING].silence_threshold_s,
        confirm_s=config.verdict.confirm,
        probe_interval_s=probe.interval_s,
        probe_timeout_s=probe.timeout_s,
        probe_misses=probe.misses,
        degraded_for_s=seconds(alerts[DEGRADED_ALERT].get("for", "0s")),
        scrape_interval_s=seconds(prometheus["global"]["scrape_interval"]),
        evaluation_interval_s=seconds(prometheus["global"]["evaluation_interval"]),
        group_wait_s=seconds(pager_route.get("group_wait", root["group_wait"])),
        allowance_s=ALLOWANCE_S / timing.scale,
    )


def watch(
    sidecar_url: str,
    prometheus_url: str,
    receiver: Receiver,
    processes: Processes,
    watch_until: float,
    give_up_at: float,
    poll_s: float,
) -> Observations:
    """Poll until both pages have arrived and ``watch_until`` (wall time) has passed, or
    until ``give_up_at``."""
    seen = Observations()
    started_at = time.time()
    while time.time() < give_up_at:
        check_running(processes)
        if seen.clock_samples < CLOCK_SAMPLES:
            sample_sidecar_clock(sidecar_url, seen)
        sample_prometheus(prometheus_url, seen)
        paged = all(receiver.delivery(PAGER, DEGRADED_ALERT, a) for a in (DEAFENING, PROBED))
        if paged and time.time() >= watch_until:
            break
        time.sleep(poll_s)
    read_scraped_verdicts(prometheus_url, seen, started_at)
    return seen


def raise_system_exit(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so every server started here is stopped."""
    raise SystemExit(128 + signum)


# -- the run -------------------------------------------------------------------------


def run(smoke: bool, workdir: Path) -> int:
    timing = SMOKE if smoke else FULL
    prometheus_bin = installed("prometheus")
    alertmanager_bin = installed("prometheus-alertmanager")
    sidecar_address, prometheus_address, alertmanager_address = (
        f"127.0.0.1:{free_port()}" for _ in range(3)
    )
    sidecar_url = f"http://{sidecar_address}"
    prometheus_url = f"http://{prometheus_address}"

    receiver = Receiver()
    token_file = workdir / "sidecar-token"
    token_file.write_text("bench-token\n")
    sidecar_yaml, rules, prometheus_yml, alertmanager_yml, capture = (
        workdir / name
        for name in (
            "sidecar.yaml",
            "rules.yml",
            "prometheus.yml",
            "alertmanager.yml",
            "capture.jsonl",
        )
    )
    zone = night_zone(time.time())
    save_night_history(workdir / "state", zone, time.time())
    sidecar_yaml.write_text(
        yaml.safe_dump(sidecar_config(timing, sidecar_address, workdir / "state", zone))
    )
    rules.write_text(rules_text(timing))
    prometheus = prometheus_config(timing, rules, alertmanager_address, sidecar_address)
    prometheus_yml.write_text(yaml.safe_dump(prometheus))
    alertmanager = alertmanager_config(timing, receiver.url, token_file)
    alertmanager_yml.write_text(yaml.safe_dump(alertmanager))
    waits = configured_waits(sidecar_yaml, rules, prometheus, alertmanager, timing)
    # the capture's last page is due by then; a control's false page by `quiet_after`
    deaf_due = timing.at(timing.deaf_onset) + waits.silence_threshold_s + waits.allowance_s
    probe_due = timing.at(timing.probe_first) + waits.probe_interval_s + waits.probe_target_s
    run_s = max(deaf_due, probe_due) + GIVE_UP_AFTER_TARGET_S / timing.scale
    quiet_after = timing.controls_settled + waits.after_evidence_s + waits.allowance_s

    intervals_from = "scaled" if smoke else SHIPPED_PROMETHEUS.relative_to(REPO)
    print(
        f"{'smoke' if smoke else 'full'} run: silence threshold {waits.silence_threshold_s:g} s,"
        f" verdict.confirm {waits.confirm_s:g} s, probes every {waits.probe_interval_s:g} s"
        f" (timeout {waits.probe_timeout_s:g} s, {waits.probe_misses} misses); {DEGRADED_ALERT}"
        f" for {waits.degraded_for_s:g} s; scrape {waits.scrape_interval_s:g} s, evaluation"
        f" {waits.evaluation_interval_s:g} s ({intervals_from}); pager group_wait"
        f" {waits.group_wait_s:g} s; night-quiet account's zone {zone}",
        flush=True,
    )
    processes: Processes = {}
    with contextlib.ExitStack() as servers:
        servers.callback(receiver.close)
        servers.enter_context(
            started(
                "Alertmanager",
                [
                    alertmanager_bin,
                    f"--config.file={alertmanager_yml}",
                    f"--storage.path={workdir / 'alertmanager-data'}",
                    f"--web.listen-address={alertmanager_address}",
                    "--cluster.listen-address=",
                ],
                workdir / "alertmanager.log",
                f"http://{alertmanager_address}/-/ready",
                processes,
            )
        )
        start = time.time() + SIDECAR_START_S
        end = start + max(run_s, quiet_after) + 10
        onsets = write_capture(capture, start, end, timing, waits.probe_interval_s)
        servers.enter_context(
            started(
                "wa-sidecar",
                [
                    *(sys.executable, "-m", "sidecar", "replay", str(capture)),
                    *("--config", str(sidecar_yaml), "--speed", "1", "--linger", str(LINGER_S)),
                ],
                workdir / "sidecar.log",
                f"{sidecar_url}/readyz",
                processes,
            )
        )
        servers.enter_context(
            started(
                "Prometheus",
                [
                    prometheus_bin,
                    f"--config.file={prometheus_yml}",
                    f"--storage.tsdb.path={workdir / 'tsdb'}",
                    f"--web.listen-address={prometheus_address}",
                ],
                workdir / "prometheus.log",
                f"{prometheus_url}/-/ready",
                processes,
            )
        )
        print(
            f"servers up; polling the sidecar and Prometheus every {timing.poll_s:g} s until"
            f" both pages arrive and the controls have been through their reconnects (at"
            f" most {max(run_s, quiet_after):.0f} s)",
            flush=True,
        )
        seen = watch(
            sidecar_url,
            prometheus_url,
            receiver,
            processes,
            watch_until=start + quiet_after,
            give_up_at=start + max(run_s, quiet_after),
            poll_s=timing.poll_s,
        )
    return summarize(smoke, waits, onsets, seen, receiver)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="every time and wait divided by 30; print the tables, never fail on timing",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, raise_system_exit)
    with tempfile.TemporaryDirectory(prefix="bench-detection-") as workdir:
        try:
            return run(args.smoke, Path(workdir))
        except RuntimeError as exc:
            print(f"FAIL: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("interrupted; servers stopped", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
