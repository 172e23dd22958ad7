"""What ``POST /api/whatsapp/send-message`` does: queue the message in the outbox and,
when its account is connected here, wait a little for the worker to send it
(docs/sending.md, "The request").

There is one send path, the outbox: a message the endpoint sends "now" is one the
worker takes at once, so it has the same journal, lease, retries and proof of
delivery as one the app queued; a repeated ``clientMessageId`` finds its item and
is never sent twice.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from sidecar.core.clock import Clock
from sidecar.core.sender import OutboxWorker
from sidecar.domain import outbox
from sidecar.domain.outbox import OutboxItem, SendRate, UnreadableItem
from sidecar.domain.sending import Recipient, outbox_id

log = logging.getLogger(__name__)

#: How long a request waits for a connected account's send before answering "queued".
SEND_WAIT_S = 10.0


@dataclass(frozen=True, slots=True)
class Submitted:
    """The answer's facts: ``message_id`` is WhatsApp's id once sent, else the outbox
    item's (as the existing backend answers)."""

    message_id: str
    client_message_id: str
    queued: bool
    status: str
    duplicate: bool = False
    reason: str | None = None


class ItemUnreadable(Exception):
    """The clientMessageId's outbox document exists and is not an item (someone else
    wrote it): neither a duplicate to answer nor a place to queue."""


class IdReused(Exception):
    """The clientMessageId names another message: another account's, another
    recipient or text, or an id that differs only in characters a document id cannot
    hold (``order/7`` and ``order.7`` are both ``order_7``). Answering it as a duplicate
    would drop this message silently."""


class SendTooFast(Exception):
    """The account's send rate is spent; ``retry_after`` seconds until the next."""

    def __init__(self, wait_s: float) -> None:
        #: Whole seconds, as ``Retry-After`` takes them (rounded up: never "0 s").
        self.retry_after = max(1, math.ceil(wait_s))
        super().__init__(f"too many messages for this account; retry in {self.retry_after} s")


class SendService:
    def __init__(
        self,
        worker: OutboxWorker,
        clock: Clock,
        rate: tuple[float, int],
        wait_s: float = SEND_WAIT_S,
    ) -> None:
        self.worker = worker
        self._clock = clock
        self._rate = rate
        self._rates: dict[str, SendRate] = {}
        self._wait_s = wait_s

    async def submit(
        self,
        account_id: str,
        to: Recipient,
        thread_id: str,
        text: str,
        client_message_id: str,
        who: str,
    ) -> Submitted:
        """Queue (or find) the message and, if its account is connected, wait for its send."""
        now = self._clock.now()
        item = OutboxItem(
            id=outbox_id(client_message_id),
            account_id=account_id,
            to_jid=to.jid,
            thread_id=thread_id,
            text=text,
            client_message_id=client_message_id,
            next_attempt_at=now,
            created_at=now,
        )
        try:
            there = await self.worker.store.get(item.id)
        except UnreadableItem as exc:
            log.warning(
                "account=%s outbox item %s is unreadable: %s", account_id, item.id, exc.field
            )
            raise ItemUnreadable(str(exc)) from None
        if there is None:
            rate = self._rates.setdefault(account_id, SendRate(*self._rate))
            wait = rate.wait(now)
            if wait > 0:
                raise SendTooFast(wait)
            rate.take(now)
            try:
                there = await self.worker.store.add(item)
            except UnreadableItem as exc:
                raise ItemUnreadable(str(exc)) from None
        if there is not None:
            if not _same_message(there, item):
                raise IdReused(item.id)
            return _duplicate(there, client_message_id)
        log.info("account=%s message %s queued by %s", account_id, item.id, who)
        if not self.worker.connected(account_id):
            return Submitted(item.id, client_message_id, queued=True, status=outbox.QUEUED)
        after = await self.worker.outcome(item.id, self._wait_s)
        if after is None or after.status == outbox.QUEUED:
            reason = None if after is None else after.last_error
            return Submitted(item.id, client_message_id, True, outbox.QUEUED, reason=reason)
        if after.status == outbox.SENT and after.provider_message_id:
            return Submitted(after.provider_message_id, client_message_id, False, outbox.SENT)
        return Submitted(item.id, client_message_id, False, after.status, reason=after.last_error)


def _same_message(there: OutboxItem, asked: OutboxItem) -> bool:
    """A repeat of the same request: same account, clientMessageId, recipient and text
    (the thread may differ: a caller may name it or not)."""
    return (
        there.account_id == asked.account_id
        and there.client_message_id == asked.client_message_id
        and there.to_jid == asked.to_jid
        and there.text == asked.text
    )


def _duplicate(there: OutboxItem, client_message_id: str) -> Submitted:
    sent = there.status == outbox.SENT and there.provider_message_id
    return Submitted(
        there.provider_message_id if sent and there.provider_message_id else there.id,
        client_message_id,
        queued=there.status in (outbox.QUEUED, outbox.PROCESSING),
        status=there.status,
        duplicate=True,
        reason=there.last_error if there.status == outbox.FAILED else None,
    )
