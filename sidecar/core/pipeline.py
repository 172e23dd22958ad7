"""The one handler that every neonize event reaches, live or replayed.

Live clients call :meth:`EventPipeline.handle` from neonize's callbacks;
replay decodes capture records with the same neonize classes and calls the
same method. A failing handler is counted and logged, and the next event is
handled as usual.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import neonize.events as neonize_events
from google.protobuf.message import Message as ProtoMessage
from neonize.proto.Neonize_pb2 import ConnectFailureReason

from sidecar.domain.account import AccountState, OfflineSync, Status, StatusChange
from sidecar.domain.classify import UNDECODABLE, Classification, MessageClass, classify
from sidecar.domain.delivery import SendResult, proven_status
from sidecar.domain.next_step import next_step
from sidecar.domain.own_events import OwnEvent
from sidecar.domain.phone import phone_seen_at
from sidecar.domain.probes import ProbeSent, probe_id_of
from sidecar.domain.records import text_of
from sidecar.domain.signals import CLIENT_OUTDATED, TEMP_BANNED, ban_of, connect_failure_reason

PROBE = Classification(MessageClass.PROTOCOL, "probe")
#: The source of accounts whose session the sidecar holds (``AccountSettings.source``).
NEONIZE = "neonize"
#: Probes are plain texts; only messages classified as one of these can be a probe.
PROBE_KINDS = frozenset({"conversation", "extendedTextMessage"})

log = logging.getLogger(__name__)

#: Capture/event names exactly as ``neonize.events`` exports them.
EVENT_CLASSES: dict[str, type[ProtoMessage]] = {
    name: cls
    for name, cls in vars(neonize_events).items()
    if isinstance(cls, type) and cls in neonize_events.EVENT_TO_INT and name != "Device"
}
EVENT_NAMES: dict[type[ProtoMessage], str] = {cls: name for name, cls in EVENT_CLASSES.items()}

#: ConnectFailure reasons after which whatsmeow does not reconnect by itself.
_FAILURE_STATUS: dict[int, Status] = {
    ConnectFailureReason.LOGGED_OUT: Status.LOGGED_OUT,
    ConnectFailureReason.MAIN_DEVICE_GONE: Status.LOGGED_OUT,
    ConnectFailureReason.UNKNOWN_LOGOUT: Status.LOGGED_OUT,
    ConnectFailureReason.TEMP_BANNED: Status.BANNED,
    ConnectFailureReason.CLIENT_OUTDATED: Status.OUTDATED,
    ConnectFailureReason.BAD_USER_AGENT: Status.OUTDATED,
}


def event_name(event: ProtoMessage | OwnEvent) -> str:
    return EVENT_NAMES.get(type(event), type(event).__name__)


class MessageListener(Protocol):
    """Told about every message after it was classified (storage hooks in here)."""

    def on_message(
        self, account_id: str, event: Any, classification: Classification, received_at: float
    ) -> None: ...


StatusListener = Callable[[StatusChange], None]
#: Told ``(account, WhatsApp ids, status proved, at)`` for every receipt that proves
#: delivery (the send path moves its message documents with it).
ReceiptListener = Callable[[str, list[str], str, float], None]
_Handler = Callable[[AccountState, Any, float], None]


class UnknownAccountError(KeyError):
    """An event named an account that is not configured."""


class EventPipeline:
    def __init__(
        self,
        accounts: Mapping[str, AccountState],
        message_listeners: Iterable[MessageListener] = (),
        status_listeners: Iterable[StatusListener] = (),
    ) -> None:
        self._accounts = accounts
        self._message_listeners = list(message_listeners)
        self._status_listeners = list(status_listeners)
        self._receipt_listeners: list[ReceiptListener] = []
        self._handlers: dict[type[ProtoMessage], _Handler] = {
            neonize_events.MessageEv: self._on_message,
            neonize_events.UndecryptableMessageEv: self._on_undecryptable,
            neonize_events.ConnectedEv: self._on_connected,
            neonize_events.DisconnectedEv: self._status(Status.DISCONNECTED),
            neonize_events.LoggedOutEv: self._on_logged_out,
            neonize_events.StreamReplacedEv: self._status(Status.REPLACED),
            neonize_events.TemporaryBanEv: self._on_temporary_ban,
            neonize_events.ClientOutdatedEv: self._on_client_outdated,
            neonize_events.ConnectFailureEv: self._on_connect_failure,
            neonize_events.QREv: self._on_qr,
            neonize_events.PairStatusEv: self._on_pair_status,
            neonize_events.KeepAliveTimeoutEv: self._on_keepalive(failing=True),
            neonize_events.KeepAliveRestoredEv: self._on_keepalive(failing=False),
            neonize_events.OfflineSyncPreviewEv: self._on_offline_sync(OfflineSync.IN_PROGRESS),
            neonize_events.OfflineSyncCompletedEv: self._on_offline_sync(OfflineSync.COMPLETED),
            neonize_events.ReceiptEv: self._on_receipt,
            ProbeSent: self._on_probe_sent,
            SendResult: self._on_send_result,
        }

    def add_message_listener(self, listener: MessageListener) -> None:
        self._message_listeners.append(listener)

    def add_status_listener(self, listener: StatusListener) -> None:
        self._status_listeners.append(listener)

    def add_receipt_listener(self, listener: ReceiptListener) -> None:
        self._receipt_listeners.append(listener)

    def handle(self, account_id: str, event: ProtoMessage | OwnEvent, received_at: float) -> None:
        """Apply one event. Never raises for a handler fault: it is counted and logged."""
        state = self._accounts.get(account_id)
        if state is None:
            raise UnknownAccountError(account_id)
        name = event_name(event)
        state.record_event(name)
        handler = self._handlers.get(type(event))
        try:
            # whether the account's phone is online (an ingest gateway's events do not say
            # which of the account's devices acted)
            seen = phone_seen_at(event, received_at) if state.settings.source == NEONIZE else None
            if seen is not None:
                state.record_phone_seen(seen)
            if handler is not None:
                handler(state, event, received_at)
        except Exception as exc:
            state.record_event_error(name)
            _log_handler_fault(account_id, name, exc)

    def set_status(self, state: AccountState, status: Status, at: float) -> None:
        change = state.set_status(status, at)
        if change is None:
            return
        step = next_step(change.account_id, change.new, state.settings.source)
        if step is None:
            log.info("account=%s status %s -> %s", change.account_id, change.old, change.new)
        else:  # a person has to act: say what to do, where it is seen
            log.warning(
                "account=%s status %s -> %s: %s", change.account_id, change.old, change.new, step
            )
        for listener in self._status_listeners:
            listener(change)

    # -- handlers ---------------------------------------------------------

    def _on_message(self, state: AccountState, event: Any, received_at: float) -> None:
        message = (
            event.Message
            if event.HasField("Message")
            else event.Raw
            if event.HasField("Raw")
            else None
        )
        classification = classify(message)
        probe_id = probe_id_of(message) if classification.kind in PROBE_KINDS else None
        # only a probe sent to this account is one; any other text is what it looks like
        if probe_id is not None and state.record_probe_delivery(probe_id, received_at):
            classification = PROBE
        self._record(state, event, classification, received_at)

    def _on_probe_sent(self, state: AccountState, event: ProbeSent, at: float) -> None:
        state.record_probe_sent(event.ok, event.reason)
        peer = self._accounts.get(event.peer)
        if event.ok and peer is not None:
            peer.expect_probe(event.probe_id, at)

    def _on_send_result(self, state: AccountState, event: SendResult, at: float) -> None:
        state.record_send(event, at)

    def _on_receipt(self, state: AccountState, event: Any, at: float) -> None:
        status = proven_status(event)
        if status is not None:
            wa_ids = [text_of(i) for i in event.MessageIDs]
            state.record_receipt(wa_ids, status, at)
            for listener in self._receipt_listeners:
                listener(state.account_id, wa_ids, status, at)

    def _on_undecryptable(self, state: AccountState, event: Any, received_at: float) -> None:
        self._record(state, event, UNDECODABLE, received_at)

    def _record(
        self, state: AccountState, event: Any, classification: Classification, received_at: float
    ) -> None:
        state.record_message(classification, received_at)
        for listener in self._message_listeners:
            listener.on_message(state.account_id, event, classification, received_at)

    def _on_connected(self, state: AccountState, _event: Any, at: float) -> None:
        state.record_connect_attempt()
        state.record_connected(at)
        self.set_status(state, Status.CONNECTED, at)

    def _on_connect_failure(self, state: AccountState, event: Any, at: float) -> None:
        state.record_connect_attempt()
        state.record_connect_failure(connect_failure_reason(event))
        self.set_status(state, _FAILURE_STATUS.get(event.Reason, Status.DISCONNECTED), at)

    # whatsmeow reports these refused connections as events of their own, not as a
    # ConnectFailureEv; each is a connection attempt, as a ConnectFailureEv is

    def _on_temporary_ban(self, state: AccountState, event: Any, at: float) -> None:
        state.record_connect_attempt()
        state.record_connect_failure(TEMP_BANNED)
        state.set_ban(ban_of(event, at))  # before the status: the supervisor reads it next
        self.set_status(state, Status.BANNED, at)

    def _on_logged_out(self, state: AccountState, event: Any, at: float) -> None:
        if event.OnConnect:  # refused at connect; otherwise removed while connected
            state.record_connect_attempt()
            state.record_connect_failure(connect_failure_reason(event))
        self.set_status(state, Status.LOGGED_OUT, at)

    def _on_client_outdated(self, state: AccountState, _event: Any, at: float) -> None:
        state.record_connect_attempt()
        state.record_connect_failure(CLIENT_OUTDATED)
        self.set_status(state, Status.OUTDATED, at)

    def _on_qr(self, state: AccountState, event: Any, at: float) -> None:
        if event.Codes:
            state.set_qr(text_of(event.Codes[0]), at)
        self.set_status(state, Status.QR_PENDING, at)

    def _on_pair_status(self, state: AccountState, event: Any, at: float) -> None:
        # A successful pairing is followed by a fresh connection.
        paired = event.Status == neonize_events.PairStatusEv.PStatus.SUCCESS
        if paired:
            state.set_paired(text_of(event.Platform) or "unknown", at)
        self.set_status(state, Status.CONNECTING if paired else Status.QR_PENDING, at)

    def _status(self, status: Status) -> _Handler:
        def handler(state: AccountState, _event: Any, at: float) -> None:
            self.set_status(state, status, at)

        return handler

    @staticmethod
    def _on_keepalive(failing: bool) -> _Handler:
        def handler(state: AccountState, _event: Any, at: float) -> None:
            state.set_keepalive_failing(failing, at)

        return handler

    @staticmethod
    def _on_offline_sync(sync: OfflineSync) -> _Handler:
        def handler(state: AccountState, _event: Any, at: float) -> None:
            state.set_offline_sync(sync, at)

        return handler


def _log_handler_fault(account_id: str, event: str, exc: BaseException) -> None:
    """Log where a handler failed without its message, which may quote message content."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = " <- ".join(
        f"{f.name}@{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in reversed(frames)
    )
    log.error(
        "account=%s event=%s handler failed: %s at %s", account_id, event, type(exc).__name__, where
    )
    log.debug("account=%s event=%s handler failure detail", account_id, event, exc_info=exc)
