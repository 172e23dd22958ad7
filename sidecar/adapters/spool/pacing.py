"""Thread-update pacing: updates are coalesced per thread and each thread is written at
most once per ``interval_s``, which keeps a busy chat under Firestore's sustained rate
of one write per second per document.

The rows of ``spool_threads`` are mirrored in memory, so that merging an update costs
no read and no decode. This module only decides; the spool writes the rows it computes
in the same transactions as the messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sidecar.adapters.spool.codec import encode_thread
from sidecar.core.spooling import SpooledThread
from sidecar.domain.facts import MessageFacts
from sidecar.domain.records import ThreadPatch, merge_thread_fields, thread_patch


@dataclass(slots=True)
class Thread:
    """A row of ``spool_threads``, mirrored in memory. Once written (and not pending
    again) only its times stay, in memory only, until its pacing is over.

    The update it holds is ``fields`` with the thread updates of ``unfolded`` merged
    in, in order: those of spooled facts are built only when the update is taken
    (:meth:`folded`), and a message's is dropped unbuilt once a later one makes it
    irrelevant (:func:`_supersedes`). A busy chat's update is built once per write,
    not once per message."""

    account_id: str
    fields: dict[str, Any]
    version: int
    pending: bool
    enqueued_at: float
    last_written_at: float | None
    unfolded: list[MessageFacts] = field(default_factory=list)

    def folded(self) -> dict[str, Any]:
        """The update's fields, with every unfolded message's merged in."""
        for facts in self.unfolded:
            patch = thread_patch(facts)
            if patch is not None:
                self.fields = merge_thread_fields(self.fields, patch.fields)
        self.unfolded = []
        return self.fields

    def row(self, thread_id: str) -> tuple[object, ...]:
        return (
            thread_id,
            self.account_id,
            encode_thread(self.fields, self.unfolded),
            self.version,
            int(self.pending),
            self.enqueued_at,
            self.last_written_at,
        )


#: The fields every thread update names whose values differ from message to message
#: (beside the inbound ones, which merge as a group; the others are the same for a chat).
_VARYING = ("lastMessageAt", "lastMessageAtMs", "lastMessageDirection")


def _alike(one: MessageFacts, other: MessageFacts) -> bool:
    """Of the same chat and kind of chat: their updates name the same fields, in the same
    order, with the same values but the times, the direction and the inbound text."""
    return (
        one.chat_user == other.chat_user
        and one.chat_server == other.chat_server
        and one.is_group == other.is_group
        and one.account_id == other.account_id
    )


def _supersedes(newer: MessageFacts, older: MessageFacts) -> bool:
    """Whether merging ``older``'s thread update and then ``newer``'s leaves what merging
    ``newer``'s alone leaves (``merge_thread_fields``), when every update waiting is
    :func:`_alike` and the fields are :func:`_complete`: ``newer`` is no older, and
    replaces the inbound fields ``older`` brings, if any. (A field ``older`` would add
    because it is missing, ``newer`` adds with the same value, in the same place.)"""
    return newer.ts_ms >= older.ts_ms and (older.from_me or not newer.from_me)


def _complete(fields: dict[str, Any]) -> bool:
    """Fields that are empty, or hold every field whose value differs between updates:
    an older update never fills one of those in where a newer one would not."""
    return not fields or all(name in fields for name in _VARYING)


#: A thread written to the store, its mirrored row, and whether a newer update waits.
Written = tuple[str, Thread, bool]


class Pacing:
    """The mirrored thread rows. Not thread-safe: the spool holds its lock around every call."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.threads: dict[str, Thread] = {}

    def load(self, threads: Iterable[tuple[str, Thread]]) -> None:
        """The rows a previous process left: pending (written rows are not kept on disk:
        after a restart, a thread written in the last ``interval_s`` may be written
        again at once, one write early)."""
        self.threads.update(threads)

    def any_pending(self) -> bool:
        return any(thread.pending for thread in self.threads.values())

    def merge(
        self, updates: Iterable[tuple[str, ThreadPatch | MessageFacts, float]]
    ) -> dict[str, Thread]:
        """The rows that thread updates (each with its thread's id and its enqueue time:
        the update, or the facts of the message that makes it) turn into; the mirror
        takes them only in :meth:`apply`, once they are committed."""
        merged: dict[str, Thread] = {}
        complete: dict[str, bool] = {}  # per thread here: whether its fields are _complete
        for thread_id, update, enqueued_at in updates:
            thread = merged.get(thread_id)
            if thread is None:  # the first update of this thread here: a copy to change
                known = self.threads.get(thread_id)
                if known is None:
                    thread = Thread(update.account_id, {}, 0, True, enqueued_at, None)
                else:
                    thread = Thread(
                        known.account_id,
                        known.fields if known.pending else {},
                        known.version,
                        True,
                        known.enqueued_at if known.pending else enqueued_at,
                        known.last_written_at,
                        list(known.unfolded) if known.pending else [],
                    )
                merged[thread_id] = thread
                complete[thread_id] = _complete(thread.fields)
            thread.version += 1
            if isinstance(update, ThreadPatch):
                thread.fields = merge_thread_fields(thread.folded(), update.fields)
                complete[thread_id] = _complete(thread.fields)
                continue
            waiting = thread.unfolded
            if complete[thread_id] and all(_alike(update, older) for older in waiting):
                thread.unfolded = [older for older in waiting if not _supersedes(update, older)]
            thread.unfolded.append(update)
        return merged

    def apply(self, merged: dict[str, Thread]) -> None:
        self.threads.update(merged)

    def due(
        self, now: float, limit: int, busy: set[str]
    ) -> tuple[list[SpooledThread], float | None]:
        """At most ``limit`` pending updates that are due, oldest first, none of a thread
        in ``busy``; and the seconds until the next one that had to wait becomes due."""
        due_before = now - self.interval_s
        self._forget_done(due_before)
        waiting = sorted(
            ((t.enqueued_at, thread_id, t) for thread_id, t in self.threads.items() if t.pending),
            key=lambda item: item[0],
        )
        taken: list[SpooledThread] = []
        next_due_s: float | None = None
        for _, thread_id, thread in waiting:
            if thread_id in busy:
                continue
            last_written = thread.last_written_at
            if last_written is not None and last_written > due_before:
                wait = last_written - due_before
                next_due_s = wait if next_due_s is None else min(next_due_s, wait)
                continue
            if len(taken) >= limit:
                break
            taken.append(
                SpooledThread(
                    ThreadPatch(thread.account_id, thread_id, thread.folded()), thread.version
                )
            )
        return taken, next_due_s

    def written(self, spooled: Iterable[SpooledThread]) -> list[Written]:
        """The store confirmed ``spooled``: each is still pending only if a newer update
        arrived meanwhile. The mirror changes only in :meth:`confirm`."""
        written = []
        for update in spooled:
            thread = self.threads.get(update.patch.thread_id)
            if thread is not None:
                still_pending = thread.pending and thread.version != update.version
                written.append((update.patch.thread_id, thread, still_pending))
        return written

    def confirm(self, written: list[Written], now: float) -> None:
        """:meth:`written` is committed: mark it, and forget rows whose pacing is over."""
        for _, thread, pending in written:
            thread.last_written_at, thread.pending = now, pending
            if not pending:
                thread.fields, thread.unfolded = {}, []  # written: pacing needs only the time
        self._forget_done(now - self.interval_s)

    def _forget_done(self, done_before: float) -> None:
        """Forget the threads written no later than ``done_before`` and not pending."""
        for thread_id in [
            thread_id
            for thread_id, thread in self.threads.items()
            if not thread.pending
            and thread.last_written_at is not None
            and thread.last_written_at <= done_before
        ]:
            del self.threads[thread_id]
