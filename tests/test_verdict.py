"""The first verdict equals the existing backend's rule, so nothing regresses."""

from __future__ import annotations

import pytest

from sidecar.domain.account import AccountSettings, AccountState, Status
from sidecar.domain.classify import Classification, MessageClass
from sidecar.domain.verdict import describe_duration, legacy_verdict

REAL = Classification(MessageClass.REAL, "conversation")
PROTOCOL = Classification(MessageClass.PROTOCOL, "protocolMessage.HISTORY_SYNC_NOTIFICATION")


def state(status: Status, last_real: float | None, threshold: float = 300.0) -> AccountState:
    account = AccountState(AccountSettings("sales", threshold, "UTC"))
    account.set_status(status, 0.0)
    if last_real is not None:
        account.record_message(REAL, last_real)
    return account


def judge(account: AccountState, now: float):  # type: ignore[no-untyped-def]
    return legacy_verdict(account.snapshot(), account.settings, now)


def test_connected_and_silent_past_threshold_is_degraded_with_the_old_warning() -> None:
    verdict = judge(state(Status.CONNECTED, last_real=1000.0), now=1000.0 + 301)
    assert verdict.degraded is True
    assert (
        verdict.warning == "No real messages received in last 5 minutes - session may be degraded"
    )
    assert verdict.reasons == ("silence_over_threshold",)


def test_exactly_at_threshold_is_not_yet_degraded() -> None:
    assert judge(state(Status.CONNECTED, last_real=1000.0), now=1300.0).degraded is False


def test_recent_real_message_is_healthy() -> None:
    verdict = judge(state(Status.CONNECTED, last_real=1000.0), now=1010.0)
    assert (verdict.degraded, verdict.warning, verdict.reasons) == (False, None, ())


def test_never_had_a_real_message_is_not_degraded_by_the_legacy_rule() -> None:
    account = state(Status.CONNECTED, last_real=None)
    account.record_message(PROTOCOL, 10.0)
    assert judge(account, now=1e9).degraded is False


@pytest.mark.parametrize("status", [s for s in Status if s is not Status.CONNECTED])
def test_not_connected_is_never_degraded(status: Status) -> None:
    assert judge(state(status, last_real=0.0), now=1e9).degraded is False


def test_protocol_traffic_does_not_reset_the_silence() -> None:
    account = state(Status.CONNECTED, last_real=1000.0)
    account.record_message(PROTOCOL, 1290.0)
    assert judge(account, now=1400.0).degraded is True


def test_per_account_threshold_is_used_in_rule_and_warning() -> None:
    account = state(Status.CONNECTED, last_real=0.0, threshold=1800.0)
    assert judge(account, now=1700.0).degraded is False
    verdict = judge(account, now=1801.0)
    assert (
        verdict.warning == "No real messages received in last 30 minutes - session may be degraded"
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (300, "5 minutes"),
        (60, "1 minute"),
        (90, "90 seconds"),
        (3600, "1 hour"),
        (5400, "90 minutes"),
        (86400, "1 day"),
        (0.5, "0.5 seconds"),
    ],
)
def test_duration_wording(seconds: float, text: str) -> None:
    assert describe_duration(seconds) == text
