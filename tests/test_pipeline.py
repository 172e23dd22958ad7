"""Connection events drive the account status; handler faults are counted, never fatal."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from neonize.proto.Neonize_pb2 import ConnectFailureReason as Reason

from sidecar import testing as build
from sidecar.core.pipeline import EventPipeline, UnknownAccountError
from sidecar.domain.account import AccountSettings, AccountState, OfflineSync, Status
from sidecar.domain.classify import Classification, MessageClass


def make() -> tuple[EventPipeline, AccountState]:
    state = AccountState(AccountSettings("sales", 300.0, "UTC"))
    return EventPipeline({"sales": state}), state


@pytest.mark.parametrize(
    ("event", "status"),
    [
        (build.connected(), Status.CONNECTED),
        (build.disconnected(), Status.DISCONNECTED),
        (build.logged_out(), Status.LOGGED_OUT),
        (build.stream_replaced(), Status.REPLACED),
        (build.temporary_ban(), Status.BANNED),
        (build.client_outdated(), Status.OUTDATED),
        (build.qr(), Status.QR_PENDING),
        (build.pair_status(success=True), Status.CONNECTING),
        (build.pair_status(success=False), Status.QR_PENDING),
        (build.connect_failure(Reason.GENERIC), Status.DISCONNECTED),
        (build.connect_failure(Reason.SERVICE_UNAVAILABLE), Status.DISCONNECTED),
        (build.connect_failure(Reason.INTERNAL_SERVER_ERROR), Status.DISCONNECTED),
        (build.connect_failure(Reason.LOGGED_OUT), Status.LOGGED_OUT),
        (build.connect_failure(Reason.MAIN_DEVICE_GONE), Status.LOGGED_OUT),
        (build.connect_failure(Reason.UNKNOWN_LOGOUT), Status.LOGGED_OUT),
        (build.connect_failure(Reason.TEMP_BANNED), Status.BANNED),
        (build.connect_failure(Reason.CLIENT_OUTDATED), Status.OUTDATED),
        (build.connect_failure(Reason.BAD_USER_AGENT), Status.OUTDATED),
    ],
    ids=lambda value: getattr(value, "value", type(value).__name__),
)
def test_connection_event_sets_status(event: Any, status: Status) -> None:
    pipeline, state = make()
    pipeline.handle("sales", build.qr(), 50.0)  # start from a state every event leaves
    pipeline.handle("sales", event, 100.0)
    snap = state.snapshot()
    assert snap.status is status
    assert snap.status_since == (50.0 if status is Status.QR_PENDING else 100.0)


def test_status_starts_connecting_with_no_time() -> None:
    _, state = make()
    snap = state.snapshot()
    assert (snap.status, snap.status_since) == (Status.CONNECTING, None)


def test_reconnects_count_attempts_after_the_first() -> None:
    pipeline, state = make()
    pipeline.handle("sales", build.connected(), 1.0)
    assert state.snapshot().reconnects == 0
    pipeline.handle("sales", build.disconnected(), 2.0)
    pipeline.handle("sales", build.connect_failure(Reason.GENERIC), 3.0)
    pipeline.handle("sales", build.connected(), 9.0)
    snap = state.snapshot()
    assert (snap.connect_attempts, snap.reconnects) == (3, 2)
    assert snap.status is Status.CONNECTED
    assert snap.status_since == 9.0


def test_keepalive_timeout_is_remembered_until_restored() -> None:
    pipeline, state = make()
    pipeline.handle("sales", build.connected(), 1.0)
    pipeline.handle("sales", build.keepalive_timeout(errors=1), 10.0)
    pipeline.handle("sales", build.keepalive_timeout(errors=2), 30.0)
    snap = state.snapshot()
    assert snap.keepalive_failing_since == 10.0
    assert snap.status is Status.CONNECTED
    pipeline.handle("sales", build.keepalive_restored(), 40.0)
    assert state.snapshot().keepalive_failing_since is None


def test_offline_sync_progress_and_reset_on_disconnect() -> None:
    pipeline, state = make()
    pipeline.handle("sales", build.connected(), 1.0)
    assert state.snapshot().offline_sync is OfflineSync.UNKNOWN
    pipeline.handle("sales", build.offline_sync_preview(total=12), 2.0)
    assert state.snapshot().offline_sync is OfflineSync.IN_PROGRESS
    pipeline.handle("sales", build.offline_sync_completed(count=12), 3.0)
    assert state.snapshot().offline_sync is OfflineSync.COMPLETED
    pipeline.handle("sales", build.disconnected(), 4.0)
    assert state.snapshot().offline_sync is OfflineSync.UNKNOWN


def test_last_real_and_protocol_times_never_run_backwards() -> None:
    pipeline, state = make()
    pipeline.handle("sales", build.message_event(build.text("a")), 50.0)
    pipeline.handle("sales", build.message_event(build.text("late")), 40.0)
    pipeline.handle("sales", build.message_event(build.history_sync_notification()), 60.0)
    snap = state.snapshot()
    assert (snap.last_real_at, snap.last_protocol_at) == (50.0, 60.0)
    assert snap.class_total(MessageClass.REAL) == 2


def test_undecryptable_message_is_other_undecodable() -> None:
    pipeline, state = make()
    pipeline.handle("sales", build.undecryptable(), 5.0)
    snap = state.snapshot()
    assert snap.message_counts == {(MessageClass.OTHER, "undecodable"): 1}
    assert snap.last_real_at is None
    assert snap.event_counts == {"UndecryptableMessageEv": 1}


def test_events_without_a_handler_are_still_counted() -> None:
    from neonize.events import ReceiptEv

    pipeline, state = make()
    pipeline.handle("sales", ReceiptEv(), 5.0)
    assert state.snapshot().event_counts == {"ReceiptEv": 1}


def test_unknown_account_is_refused() -> None:
    pipeline, _ = make()
    with pytest.raises(UnknownAccountError):
        pipeline.handle("nobody", build.connected(), 1.0)


class ExplodingListener:
    """A message listener that fails on one message, as a broken store would."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_message(
        self, account_id: str, event: Any, classification: Classification, received_at: float
    ) -> None:
        body = event.Message.conversation
        if body == "boom":
            raise RuntimeError(f"cannot store {body!r} from {event.Info.MessageSource.Chat.User}")
        self.seen.append(body)


def test_handler_exception_is_counted_logged_and_pipeline_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline, state = make()
    listener = ExplodingListener()
    pipeline.add_message_listener(listener)
    caplog.set_level(logging.INFO)
    pipeline.handle("sales", build.message_event(build.text("before")), 1.0)
    pipeline.handle("sales", build.message_event(build.text("boom")), 2.0)
    pipeline.handle("sales", build.message_event(build.text("after")), 3.0)
    pipeline.handle("sales", build.connected(), 4.0)
    snap = state.snapshot()
    assert snap.event_errors == {"MessageEv": 1}
    assert snap.event_counts == {"MessageEv": 3, "ConnectedEv": 1}
    assert listener.seen == ["before", "after"]
    assert snap.status is Status.CONNECTED
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    line = errors[0].getMessage()
    assert "account=sales event=MessageEv handler failed: RuntimeError" in line
    assert "on_message@test_pipeline.py" in line
    # the exception's text quotes the message and the phone number: neither is logged at ERROR
    assert "boom" not in line
    assert build.FICTIONAL_PHONE not in line


def test_status_changes_are_logged_once_each(caplog: pytest.LogCaptureFixture) -> None:
    pipeline, _ = make()
    caplog.set_level(logging.INFO, logger="sidecar.core.pipeline")
    pipeline.handle("sales", build.connected(), 1.0)
    pipeline.handle("sales", build.connected(), 2.0)
    pipeline.handle("sales", build.logged_out(), 3.0)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "account=sales status connecting -> connected",
        "account=sales status connected -> logged_out: logged out: re-pair it on the page"
        " /accounts/sales/pair or with `wa-sidecar pair sales --config CONFIG`",
    ]
