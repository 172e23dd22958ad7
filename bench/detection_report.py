"""The detection benchmark's report: each deaf account's way to its page against its
target, stage by stage, and what the controls got (bench/detection.py)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from bench.common import Result, report
from bench.detection_setup import CONTROLS, DEAFENING, NIGHT, PROBED, Onsets
from bench.detection_watch import Observations, Receiver

DEGRADED_ALERT = "WhatsappSessionDegraded"
PAGER = "pager"


@dataclass(frozen=True)
class Waits:
    """The configured waits and intervals, read back from the files the servers got."""

    silence_threshold_s: float
    confirm_s: float
    probe_interval_s: float
    probe_timeout_s: float
    probe_misses: int
    degraded_for_s: float
    scrape_interval_s: float
    evaluation_interval_s: float
    group_wait_s: float
    allowance_s: float

    @property
    def probe_evidence_s(self) -> float:
        """From the first lost probe to the verdict's evidence: ``misses`` overdue."""
        return (self.probe_misses - 1) * self.probe_interval_s + self.probe_timeout_s

    @property
    def probe_target_s(self) -> float:
        return 2 * self.probe_interval_s + self.allowance_s

    @property
    def after_evidence_s(self) -> float:
        """The longest the waits after the evidence may take: confirmation (and one more
        look, every 5 s), scrape, evaluation, ``for``, group_wait."""
        return (
            self.confirm_s
            + 5.0
            + self.scrape_interval_s
            + self.evaluation_interval_s
            + self.degraded_for_s
            + self.group_wait_s
        )


# -- the report ----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One deaf account's way to its page, in seconds after its onset."""

    account: str
    onset: str
    evidence: float
    target: float
    target_text: str
    verdict: float | None
    firing: float | None
    paged: float | None


def summarize(
    smoke: bool, waits: Waits, onsets: Onsets, seen: Observations, receiver: Receiver
) -> int:
    if seen.clock_offset_s is None:
        print("FAIL: the sidecar never exported the control's last real message", file=sys.stderr)
        return 1
    threshold = seen.threshold_s.get(DEAFENING, waits.silence_threshold_s)
    cases = [
        case(
            DEAFENING,
            "last real message",
            onsets.deaf - seen.clock_offset_s,
            threshold,
            threshold + waits.allowance_s,
            f"effective threshold + {waits.allowance_s:g} s",
            seen,
            receiver,
        ),
        case(
            PROBED,
            "first lost probe",
            onsets.probe - seen.clock_offset_s,
            waits.probe_evidence_s,
            waits.probe_target_s,
            f"2 x probe interval + {waits.allowance_s:g} s",
            seen,
            receiver,
        ),
    ]
    print(f"onsets measured on the sidecar's clock; its clock - wall {seen.clock_offset_s:+.2f} s")
    missing = [c for c in cases if c.paged is None or c.verdict is None or c.firing is None]
    for c in missing:
        print(
            f"FAIL: {DEGRADED_ALERT} for {c.account} never reached the pager; seconds after"
            f" its onset: verdict scraped {c.verdict}, Prometheus firing {c.firing}",
            file=sys.stderr,
        )
    paged = {c: receiver.received(c, PAGER) for c in CONTROLS}
    alerted = {c: receiver.received(c) | seen.control_firing.get(c, set()) for c in CONTROLS}
    results = [
        Result(
            f"{c.account}: {c.onset} -> page",
            c.paged,
            c.evidence,
            "s",
            f"<= {c.target:g} s ({c.target_text})",
            c.paged <= c.target,
        )
        for c in cases
        if c.paged is not None
    ]
    false_pages = sum(len(p) for p in paged.values())
    results.append(
        Result(
            "controls: pages", false_pages, None, "", f"0 ({', '.join(CONTROLS)})", not false_pages
        )
    )
    status = report(results, check=not smoke)
    for c in cases:
        decomposition(c, waits)
    print(f"\ncontrols (effective threshold of {NIGHT}: {seen.threshold_s.get(NIGHT, 0):,.0f} s)")
    for control in CONTROLS:
        verdict = "degraded at some poll" if control in seen.control_verdicts else "never degraded"
        others = sorted(alerted[control] - paged[control])
        print(
            f"  {control:<13} pages {len(paged[control])}; verdict {verdict};"
            f" other alerts: {', '.join(others) or 'none'}"
        )
    if missing or false_pages:
        if false_pages:
            print(
                f"FAIL: controls paged: { {c: sorted(p) for c, p in paged.items() if p} }",
                file=sys.stderr,
            )
        return 1
    return status


def case(
    account: str,
    onset_name: str,
    onset: float,
    evidence: float,
    target: float,
    target_text: str,
    seen: Observations,
    receiver: Receiver,
) -> Case:
    def after(at: float | None) -> float | None:
        return None if at is None else at - onset

    page = receiver.delivery(PAGER, DEGRADED_ALERT, account)
    return Case(
        account,
        onset_name,
        evidence,
        target,
        target_text,
        after(seen.verdict_at.get(account)),
        None if page is None else page.fired_at - onset,
        None if page is None else page.arrived_at - onset,
    )


def decomposition(c: Case, waits: Waits) -> None:
    if c.verdict is None or c.firing is None or c.paged is None:
        return
    print(f"\n{c.account}: {c.onset} -> page (seconds)")
    print(f"{'stage':<62} {'configured':>11} {'measured':>9}")
    scraped = waits.confirm_s + 5.0 + waits.scrape_interval_s
    for stage, configured, measured in (
        ("evidence: the threshold, or probes overdue", f"{c.evidence:.1f}", None),
        (
            "verdict.confirm, a look (5 s), a scrape: evidence -> scraped",
            f"{waits.confirm_s:.0f}-{scraped:.0f}",
            c.verdict - c.evidence,
        ),
        (
            "evaluation + for: scraped -> firing",
            f"0-{waits.evaluation_interval_s + waits.degraded_for_s:.0f}",
            c.firing - c.verdict,
        ),
        (
            "group_wait + delivery: firing -> receiver",
            f"{waits.group_wait_s:.1f}",
            c.paged - c.firing,
        ),
    ):
        shown = "" if measured is None else f"{measured:.1f}"
        print(f"{stage:<62} {configured:>11} {shown:>9}")
    print(
        f"{c.onset} -> page {c.paged:.1f} s; target {c.target:.1f} s, margin"
        f" {c.target - c.paged:.1f} s; past the evidence {c.paged - c.evidence:.1f} s"
    )
