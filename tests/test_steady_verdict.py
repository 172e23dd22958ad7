"""The verdict over time (sidecar/domain/steady.py): degraded once the evidence has held
for verdict.confirm, kept through a reconnect, cleared by proof that the session hears."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from sidecar import testing as build
from sidecar.compose import Assembly
from sidecar.config import Config
from sidecar.core.clock import ReplayClock
from sidecar.domain.steady import CONFIRM_S, HOLD_S

from .support.config import AssemblyFactory, ConfigFactory

T0 = 1_764_068_400.0  # where the test clock starts
#: Silence with protocol traffic is evidence from here (last real message at T0 + 10).
EVIDENCE = T0 + 10 + 300 + 1
SILENCE = ("silence_with_protocol_traffic",)


class Watched:
    """Account ``sales`` of a composed sidecar, fed events and looked at like the live one."""

    def __init__(self, assembly: Assembly, clock: ReplayClock) -> None:
        self.sidecar = assembly.sidecar
        self.metrics = assembly.metrics
        self.clock = clock

    def feed(self, at: float, event: Any) -> None:
        self.sidecar.handle("sales", event, at)

    def deaf_from(self) -> None:
        """Connected and synced at T0, a real message at T0 + 10, then protocol only."""
        self.feed(T0, build.connected())
        self.feed(T0 + 1, build.offline_sync_completed(count=0))
        self.feed(T0 + 10, build.message_event(build.text("hi")))
        self.feed(T0 + 60, build.message_event(build.history_sync_notification(), from_me=True))

    def degraded(self) -> float:
        """Deaf (:meth:`deaf_from`), looked at when the evidence appears and once it is
        confirmed; when it turned degraded."""
        self.deaf_from()
        assert self.at(EVIDENCE) == (False, ())
        assert self.at(EVIDENCE + CONFIRM_S) == (True, SILENCE)
        return EVIDENCE + CONFIRM_S

    def at(self, now: float) -> tuple[bool, tuple[str, ...]]:
        """The verdict a reader gets at ``now``: degraded, reasons."""
        self.clock.advance_to(now)
        verdict = self.sidecar.judge("sales", now)
        return verdict.degraded, verdict.reasons

    def scraped(self) -> float | None:
        return self.metrics.registry.get_sample_value(
            "whatsapp_session_degraded", {"account": "sales"}
        )


def watched(
    make_config: ConfigFactory,
    make_assembly: AssemblyFactory,
    clock: ReplayClock,
    **top: object,
) -> Watched:
    return Watched(make_assembly(make_config([{"id": "sales"}], **top)), clock)


def test_degraded_only_once_the_evidence_has_held_at_every_look_for_the_confirmation(
    make_config: ConfigFactory, make_assembly: AssemblyFactory, clock: ReplayClock
) -> None:
    account = watched(make_config, make_assembly, clock)
    account.deaf_from()
    assert account.at(EVIDENCE - 1) == (False, ())
    assert account.at(EVIDENCE) == (False, ())  # first seen
    assert account.scraped() == 0.0
    assert account.at(EVIDENCE + CONFIRM_S - 1) == (False, ())
    assert account.at(EVIDENCE + CONFIRM_S) == (True, SILENCE)
    assert account.scraped() == 1.0


def test_a_look_without_evidence_starts_the_confirmation_again(
    make_config: ConfigFactory, make_assembly: AssemblyFactory, clock: ReplayClock
) -> None:
    account = watched(make_config, make_assembly, clock)
    account.deaf_from()
    assert account.at(EVIDENCE) == (False, ())
    # a real message: the session hears after all; then silent again past the threshold
    account.feed(EVIDENCE + 10, build.message_event(build.text("back")))
    assert account.at(EVIDENCE + 20) == (False, ())
    account.feed(EVIDENCE + 30, build.message_event(build.app_state_key_share(), from_me=True))
    again = EVIDENCE + 10 + 301
    assert account.at(again) == (False, ())
    assert account.at(again + CONFIRM_S - 1) == (False, ())
    assert account.at(again + CONFIRM_S) == (True, SILENCE)


def test_a_reconnect_neither_clears_it_nor_starts_its_confirmation_again(
    make_config: ConfigFactory, make_assembly: AssemblyFactory, clock: ReplayClock
) -> None:
    account = watched(make_config, make_assembly, clock)
    degraded_at = account.degraded()
    account.feed(degraded_at + 10, build.disconnected())
    # not connected is never degraded (its status says what is wrong), but remembered
    assert account.at(degraded_at + 15) == (False, ())
    assert account.scraped() == 0.0
    account.feed(degraded_at + 20, build.connected())
    account.feed(degraded_at + 21, build.offline_sync_preview(total=2))
    assert account.at(degraded_at + 22) == (True, SILENCE)  # its backlog is arriving
    account.feed(degraded_at + 23, build.message_event(build.app_state_key_share(), from_me=True))
    account.feed(degraded_at + 24, build.offline_sync_completed(count=2))
    assert account.at(degraded_at + 25) == (True, SILENCE)  # judged again, at once
    history = account.sidecar.health("sales").verdict_history
    assert [(c.at_ms, c.degraded) for c in history] == [
        (round(degraded_at * 1000), True),
        (round((degraded_at + 15) * 1000), False),
        (round((degraded_at + 22) * 1000), True),
    ]


def test_proof_that_the_session_hears_clears_it_at_once(
    make_config: ConfigFactory, make_assembly: AssemblyFactory, clock: ReplayClock
) -> None:
    account = watched(make_config, make_assembly, clock)
    account.degraded()
    account.feed(EVIDENCE + CONFIRM_S + 1, build.message_event(build.text("back")))
    assert account.at(EVIDENCE + CONFIRM_S + 2) == (False, ())
    assert account.scraped() == 0.0


def test_a_status_that_says_what_is_wrong_clears_it_at_once(
    make_config: ConfigFactory, make_assembly: AssemblyFactory, clock: ReplayClock
) -> None:
    account = watched(make_config, make_assembly, clock)
    account.degraded()
    account.feed(EVIDENCE + CONFIRM_S + 1, build.logged_out())
    assert account.at(EVIDENCE + CONFIRM_S + 2) == (False, ())


def test_an_account_away_for_long_is_no_longer_held_degraded(
    make_config: ConfigFactory, make_assembly: AssemblyFactory, clock: ReplayClock
) -> None:
    account = watched(make_config, make_assembly, clock)
    away = account.degraded() + 1
    account.feed(away, build.disconnected())
    assert account.at(away + 1) == (False, ())  # not connected: not degraded
    assert account.at(away + HOLD_S) == (False, ())
    # back after longer than HOLD_S: the old verdict is forgotten; the evidence is
    # confirmed afresh
    back = away + HOLD_S + 1
    account.feed(back, build.connected())
    account.feed(back + 1, build.offline_sync_completed(count=0))
    assert account.at(back + 2) == (False, ())
    assert account.at(back + 2 + CONFIRM_S) == (True, SILENCE)


def test_the_confirmation_is_configured_by_verdict_confirm(
    make_config: ConfigFactory, make_assembly: AssemblyFactory, clock: ReplayClock
) -> None:
    assert Config.model_validate({"accounts": [{"id": "x"}]}).verdict.confirm == CONFIRM_S
    account = watched(make_config, make_assembly, clock, verdict={"confirm": "5m"})
    assert account.sidecar.confirm_s == 300.0
    account.deaf_from()
    assert account.at(EVIDENCE) == (False, ())
    assert account.at(EVIDENCE + 299) == (False, ())
    assert account.at(EVIDENCE + 300) == (True, SILENCE)


def test_a_verdict_change_is_logged_when_it_happens(
    make_config: ConfigFactory,
    make_assembly: AssemblyFactory,
    clock: ReplayClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    account = watched(make_config, make_assembly, clock)
    with caplog.at_level(logging.INFO, logger="sidecar.core.service"):
        account.degraded()
        account.at(EVIDENCE + CONFIRM_S + 5)  # no change: no line
        account.feed(EVIDENCE + CONFIRM_S + 60, build.message_event(build.text("back")))
        account.at(EVIDENCE + CONFIRM_S + 61)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if "verdict:" in r.getMessage()]
    assert lines == [
        (
            logging.WARNING,
            "account=sales verdict: degraded (silence_with_protocol_traffic): No real messages"
            " received in last 5 minutes - session may be degraded",
        ),
        (logging.INFO, "account=sales verdict: no longer degraded, after 61 s"),
    ]


def test_a_reconnect_is_not_logged_as_a_recovery(
    make_config: ConfigFactory,
    make_assembly: AssemblyFactory,
    clock: ReplayClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    account = watched(make_config, make_assembly, clock)
    degraded_at = account.degraded()
    caplog.clear()  # its turning degraded, logged already
    with caplog.at_level(logging.INFO, logger="sidecar.core.service"):
        account.feed(degraded_at + 10, build.disconnected())
        account.at(degraded_at + 12)
    lines = [r.getMessage() for r in caplog.records if "verdict:" in r.getMessage()]
    assert lines == [
        "account=sales verdict: not judged while disconnected (degraded for 12 s before)"
    ]
