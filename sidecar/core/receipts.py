"""Receipts move the message documents of what this replica sent: delivered, read
(docs/sending.md, "Outbound message documents").

A receipt names WhatsApp ids only; the send journal knows which message document
each of ours is. Receipts arrive on neonize's threads and are applied on the event
loop, in order; the queue is bounded, and a status lost to a full queue or a store
error is only a tick the app shows late (the next receipt of that message carries it).
"""

from __future__ import annotations

import asyncio
import logging

from sidecar.core.ports import OutboxStore, SendJournal

log = logging.getLogger(__name__)

#: Receipts waiting at most; past it the oldest are dropped.
MAX_WAITING = 10_000


class ReceiptMarker:
    def __init__(self, store: OutboxStore, journal: SendJournal) -> None:
        self._store = store
        self._journal = journal
        self._queue: asyncio.Queue[tuple[str, tuple[str, ...], str, float]] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Receipts applied (whether or not they moved a document).
        self.handled = 0

    def on_receipt(self, account_id: str, wa_ids: list[str], status: str, at: float) -> None:
        """The pipeline's hook, from any thread: ``wa_ids`` proved ``status`` at ``at``."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._put, (account_id, tuple(wa_ids), status, at))

    def _put(self, receipt: tuple[str, tuple[str, ...], str, float]) -> None:
        if self._queue.qsize() >= MAX_WAITING:
            self._queue.get_nowait()
        self._queue.put_nowait(receipt)

    async def run(self, stopping: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        stop = asyncio.create_task(stopping.wait())
        try:
            while not stopping.is_set():
                get = asyncio.create_task(self._queue.get())
                done, _ = await asyncio.wait({get, stop}, return_when="FIRST_COMPLETED")
                if get not in done:
                    get.cancel()
                    break
                await self.apply(*get.result())
                self.handled += 1
        finally:
            self._loop = None
            stop.cancel()

    async def apply(self, account_id: str, wa_ids: tuple[str, ...], status: str, at: float) -> int:
        """Move the documents of ours among ``wa_ids``; returns how many moved."""
        try:
            ours = await asyncio.to_thread(self._journal.sent, account_id, wa_ids)
            moved = 0
            for sent in ours:
                moved += await self._store.mark(sent.thread_id, sent.message_id, status, at)
        except Exception as exc:
            log.warning("account=%s receipt not applied: %s", account_id, type(exc).__name__)
            return 0
        return moved
