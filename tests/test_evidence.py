"""The evidence-based verdict: quiet is not deaf, and deafness is caught without a real message."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from sidecar import testing as build
from sidecar.adapters.health_json import health_json
from sidecar.config import LoadedConfig
from sidecar.core.clock import ReplayClock
from sidecar.core.pipeline import EventPipeline
from sidecar.core.service import Sidecar
from sidecar.domain.account import AccountSettings, AccountState, ProbeSettings
from sidecar.domain.classify import Classification, MessageClass
from sidecar.domain.gaps import GapModel
from sidecar.domain.probes import ProbeSent, probe_text
from sidecar.domain.records import build_records
from sidecar.domain.verdict import evidence_verdict

from .support.config import ConfigFactory

T0 = datetime(2025, 11, 24, 9, 0, tzinfo=UTC).timestamp()  # a Monday, 09:00 UTC
PROBES = ProbeSettings(peer="b", interval_s=300, timeout_s=120, misses=2)


class Account:
    def __init__(self, threshold: float = 300, **settings: object) -> None:
        self.state = AccountState(AccountSettings("a", threshold, "UTC", **settings))  # type: ignore[arg-type]
        self.pipeline = EventPipeline({"a": self.state})

    def feed(self, at: float, event: object) -> None:
        self.pipeline.handle("a", event, at)

    def connect(self, at: float, synced: bool = True) -> None:
        self.feed(at, build.connected())
        if synced:
            self.feed(at + 1, build.offline_sync_completed(count=0))

    def real(self, at: float) -> None:
        self.feed(at, build.message_event(build.text("hi")))

    def protocol(self, at: float) -> None:
        self.feed(at, build.message_event(build.history_sync_notification(), from_me=True))

    def verdict(self, now: float):  # type: ignore[no-untyped-def]
        return evidence_verdict(self.state.snapshot(now), self.state.settings, now)


def test_silence_without_protocol_traffic_is_quiet_not_degraded() -> None:
    account = Account()
    account.connect(T0)
    account.real(T0 + 10)
    assert account.verdict(T0 + 6 * 3600).degraded is False


def test_silence_with_protocol_traffic_is_degraded_after_the_threshold() -> None:
    account = Account()
    account.connect(T0)
    account.real(T0 + 10)
    account.protocol(T0 + 60)
    assert account.verdict(T0 + 10 + 300).degraded is False
    verdict = account.verdict(T0 + 10 + 301)
    assert verdict.reasons == ("silence_with_protocol_traffic",)
    assert (
        verdict.warning == "No real messages received in last 5 minutes - session may be degraded"
    )


def test_never_a_real_message_with_protocol_traffic_is_degraded() -> None:
    account = Account(threshold=600)
    account.connect(T0)  # synced at T0 + 1
    account.protocol(T0 + 30)
    assert account.verdict(T0 + 1 + 600).degraded is False
    verdict = account.verdict(T0 + 1 + 601)
    assert verdict.reasons == ("never_real_with_protocol_traffic",)
    assert verdict.warning == (
        "No real message since the session started listening 10 minutes ago, though protocol"
        " traffic arrives - session may be degraded"
    )


def test_listening_starts_after_a_grace_when_offline_sync_never_completes() -> None:
    account = Account()
    account.connect(T0, synced=False)
    account.protocol(T0 + 200)
    assert account.verdict(T0 + 120 + 300).degraded is False
    assert account.verdict(T0 + 120 + 301).reasons == ("never_real_with_protocol_traffic",)


def test_a_reconnect_does_not_reset_the_evidence() -> None:
    account = Account()
    account.connect(T0)
    account.real(T0 + 10)
    account.protocol(T0 + 100)
    account.feed(T0 + 200, build.disconnected())
    account.connect(T0 + 205)
    account.protocol(T0 + 250)
    assert account.verdict(T0 + 311).reasons == ("silence_with_protocol_traffic",)


def test_not_connected_is_never_degraded() -> None:
    account = Account()
    account.connect(T0)
    account.protocol(T0 + 30)
    account.feed(T0 + 40, build.logged_out())
    assert account.verdict(T0 + 3600).degraded is False


def test_keepalive_failing_for_a_while_is_evidence_of_its_own() -> None:
    account = Account(threshold=3600)
    account.connect(T0)
    account.real(T0 + 5)
    account.feed(T0 + 100, build.keepalive_timeout(errors=1))
    assert account.verdict(T0 + 339).degraded is False
    verdict = account.verdict(T0 + 340)
    assert verdict.reasons == ("keepalive_lost",)
    assert verdict.warning == "Keepalives have failed for 4 minutes"
    account.feed(T0 + 350, build.keepalive_restored())
    assert account.verdict(T0 + 360).degraded is False


def test_whatsmeows_own_reconnect_after_failing_keepalives_is_no_evidence() -> None:
    """Keepalives failing for 3 minutes make whatsmeow reconnect by itself: no
    DisconnectedEv, a new ConnectedEv, and no KeepAliveRestoredEv after it (the new
    connection's keepalives never failed). Nothing of the old connection counts."""
    account = Account(threshold=3600)
    account.connect(T0)
    account.real(T0 + 5)
    for n, at in enumerate(range(140, 330, 30)):  # last success at T0 + 110
        account.feed(T0 + at, build.keepalive_timeout(errors=n + 1))
    account.feed(T0 + 331, build.connected())
    account.feed(T0 + 332, build.offline_sync_completed(count=0))
    assert account.state.snapshot().keepalive_failing_since is None
    assert all(not account.verdict(T0 + t).degraded for t in range(140, 4000, 10))


def test_nothing_is_judged_while_a_reconnects_backlog_arrives() -> None:
    """A session back after a long drop gets its offline backlog, protocol traffic often
    first: until the backlog is in (or SYNC_GRACE_S passed) its silence proves nothing."""
    account = Account()
    account.connect(T0)
    account.real(T0 + 10)
    account.feed(T0 + 60, build.disconnected())
    account.feed(T0 + 400, build.connected())
    account.feed(T0 + 401, build.offline_sync_preview(total=3))
    account.protocol(T0 + 402)
    assert account.verdict(T0 + 403).degraded is False
    account.real(T0 + 404)  # the backlog's real message
    account.feed(T0 + 405, build.offline_sync_completed(count=3))
    assert account.verdict(T0 + 406).degraded is False
    # a backlog that never says it is complete: judged SYNC_GRACE_S after the connect
    account.feed(T0 + 500, build.disconnected())
    account.feed(T0 + 1000, build.connected())
    account.protocol(T0 + 1001)
    assert account.verdict(T0 + 1119).degraded is False
    assert account.verdict(T0 + 1120).reasons == ("silence_with_protocol_traffic",)


def probe_pair() -> tuple[AccountState, AccountState, EventPipeline]:
    sender = AccountState(AccountSettings("a", 300, "UTC", probe=PROBES))
    receiver = AccountState(AccountSettings("b", 300, "UTC", expects_probes=PROBES))
    pipeline = EventPipeline({"a": sender, "b": receiver})
    for name in ("a", "b"):
        pipeline.handle(name, build.connected(), T0)
        pipeline.handle(name, build.offline_sync_completed(), T0 + 1)
    return sender, receiver, pipeline


def judge(state: AccountState, now: float):  # type: ignore[no-untyped-def]
    return evidence_verdict(state.snapshot(now), state.settings, now)


def test_missed_probes_degrade_the_receiver_and_are_counted() -> None:
    sender, receiver, pipeline = probe_pair()
    pipeline.handle("a", ProbeSent("p1", "b", ok=True), T0 + 300)
    pipeline.handle("b", build.message_event(build.text(probe_text("p1"))), T0 + 320)
    pipeline.handle("a", ProbeSent("p2", "b", ok=True), T0 + 600)
    pipeline.handle("a", ProbeSent("p3", "b", ok=True), T0 + 900)
    assert judge(receiver, T0 + 900 + 120).degraded is False  # one miss so far
    verdict = judge(receiver, T0 + 900 + 121)
    assert verdict.reasons == ("probe_not_received",)
    assert verdict.warning == "2 canary probes in a row did not arrive"
    snap = receiver.snapshot()
    assert snap.probe_failures == {"not_received": 1}  # p2, counted when p3 was sent
    assert snap.last_probe_success_at == T0 + 320
    assert sum(snap.probe_latency_counts) == 1
    assert snap.probe_latency_sum == 20
    assert judge(sender, T0 + 1100).degraded is False
    # the probe text is never a real message, nor protocol evidence
    assert snap.last_real_at is None
    assert snap.last_protocol_at is None


def test_probes_that_arrive_prove_the_session_hears() -> None:
    _, receiver, pipeline = probe_pair()
    pipeline.handle("b", build.message_event(build.text("real")), T0 + 10)
    pipeline.handle("b", build.message_event(build.app_state_key_share(), from_me=True), T0 + 20)
    for n in range(1, 5):
        pipeline.handle("a", ProbeSent(f"p{n}", "b", ok=True), T0 + n * 300)
        pipeline.handle(
            "b", build.message_event(build.text(probe_text(f"p{n}"))), T0 + n * 300 + 90
        )
    assert judge(receiver, T0 + 4 * 300 + 100).degraded is False


class Stored:
    """The storage's hook: what the message store would be given."""

    def __init__(self) -> None:
        self.bodies: list[str] = []

    def on_message(
        self, account_id: str, event: Any, classification: Classification, received_at: float
    ) -> None:
        records = build_records(account_id, event, classification)
        if records is not None:
            self.bodies.append(records[0].fields["body"])


def test_a_text_that_only_looks_like_a_probe_is_an_ordinary_message() -> None:
    """Anyone can type the probe marker: on an account that expects no probes, and with an
    id that was never sent to the account, the text is stored and counted as real, and no
    probe failure is counted."""
    sender, receiver, pipeline = probe_pair()
    stored = Stored()
    pipeline.add_message_listener(stored)
    forged = [probe_text("0123456789abcdef"), probe_text("p1"), probe_text("p1 ")]
    for n, text in enumerate(forged):  # p1 is not sent yet
        pipeline.handle("a", build.message_event(build.text(text)), T0 + 10 + n)  # no probes
        pipeline.handle("b", build.message_event(build.text(text)), T0 + 20 + n)
    assert stored.bodies == [body for text in forged for body in (text, text)]
    for state in (sender, receiver):
        snap = state.snapshot()
        assert snap.class_total(MessageClass.REAL) == 3
        assert snap.class_total(MessageClass.PROTOCOL) == 0
        assert snap.probe_failures == {}
        assert snap.last_real_at is not None

    pipeline.handle("a", ProbeSent("p1", "b", ok=True), T0 + 300)
    pipeline.handle("b", build.message_event(build.text(probe_text("p1"))), T0 + 310)
    pipeline.handle("b", build.message_event(build.text(probe_text("p1"))), T0 + 311)  # again
    pipeline.handle("b", build.message_event(build.text(probe_text("p2"))), T0 + 312)  # not sent
    snap = receiver.snapshot()
    assert stored.bodies[6:] == [probe_text("p2")]
    assert snap.message_counts[(MessageClass.PROTOCOL, "probe")] == 2
    assert snap.class_total(MessageClass.REAL) == 4
    assert snap.probe_failures == {"unexpected": 1}  # the second copy of p1
    assert snap.last_probe_success_at == T0 + 310


def test_probes_that_cannot_be_sent_mark_the_sender() -> None:
    sender, receiver, pipeline = probe_pair()
    pipeline.handle("a", ProbeSent("p1", "b", ok=False, reason="not_connected"), T0 + 300)
    assert judge(sender, T0 + 301).degraded is False
    pipeline.handle("a", ProbeSent("p2", "b", ok=False, reason="send_failed"), T0 + 600)
    verdict = judge(sender, T0 + 601)
    assert verdict.reasons == ("probe_send_failed",)
    assert sender.snapshot().probe_failures == {"send_failed": 2}
    assert judge(receiver, T0 + 601).degraded is False  # nothing was sent to it


def busy_history(model: GapModel, days: int, per_hour: int) -> None:
    """Traffic 09:00-18:00 on ``days`` days, ``per_hour`` messages an hour."""
    for day in range(days):
        for hour in range(9, 18):
            for n in range(per_hour):
                model.record(T0 - (days - day) * 86400 + (hour - 9) * 3600 + n * 3600 / per_hour)


def test_learned_rates_make_night_silence_normal_and_keep_busy_hours_strict() -> None:
    model = GapModel("UTC")
    assert model.abnormal_after(T0, T0) is None  # no history yet
    busy_history(model, days=7, per_hour=30)
    # a silence starting at 18:00 (no traffic until 09:00): abnormal only mid-morning
    evening = T0 + 9 * 3600
    after = model.abnormal_after(evening, T0 + 86400)
    assert after is not None
    assert 15 * 3600 < after < 15 * 3600 + 15 * 60
    # a silence starting at 10:00: ~30 messages an hour over 7 days -> 4 expected in ~8 minutes
    morning = T0 + 3600
    assert model.abnormal_after(morning, T0) == pytest.approx(8 * 60, abs=30)


def test_learned_model_survives_a_restart(
    make_config: ConfigFactory, make_sidecar: Callable[[LoadedConfig], Sidecar]
) -> None:
    loaded = make_config()
    first = make_sidecar(loaded)
    for day in range(5):
        for n in range(40):
            first.handle("sales", build.connected(), T0 - 5 * 86400)
            first.handle(
                "sales", build.message_event(build.text("x")), T0 - (5 - day) * 86400 + n * 90
            )
    before = first.snapshot("sales", T0).learned_gap_s
    assert before is not None
    first.flush_state()
    first.close()
    second = make_sidecar(loaded)
    assert second.snapshot("sales", T0).learned_gap_s == pytest.approx(before)


def test_verdict_history_records_changes_with_reasons(
    make_config: ConfigFactory, make_sidecar: Callable[[LoadedConfig], Sidecar], clock: ReplayClock
) -> None:
    sidecar = make_sidecar(make_config())
    handle = sidecar.handle
    T0 = clock.now()
    handle("sales", build.connected(), T0)
    handle("sales", build.offline_sync_completed(), T0 + 1)
    handle("sales", build.message_event(build.text("x")), T0 + 10)
    handle("sales", build.message_event(build.history_sync_notification(), from_me=True), T0 + 20)
    # evidence from T0 + 311, first seen at T0 + 400, confirmed 30 s later
    for at in (T0 + 100, T0 + 400, T0 + 429, T0 + 430, T0 + 500):
        clock.advance_to(at)
        sidecar.evaluate_verdicts()
    handle("sales", build.message_event(build.text("back")), T0 + 510)
    clock.advance_to(T0 + 520)
    health = health_json(sidecar.health("sales"))
    assert [(h["atMs"], h["isDegraded"], h["reasons"]) for h in health["verdictHistory"]] == [
        (round((T0 + 430) * 1000), True, ["silence_with_protocol_traffic"]),
        (round((T0 + 520) * 1000), False, []),
    ]
    assert health["evidence"]["thresholdSeconds"] == 300
    assert health["quiet"] is False  # a message 10 s ago: no silence to speak of
    clock.advance_to(T0 + 510 + 300)
    assert health_json(sidecar.health("sales"))["quiet"] is True  # silent since 'back': quiet
