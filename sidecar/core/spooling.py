"""The spool's vocabulary: what it hands the writer, what it reports, what it raises.

Plain values, declared by the core (the spool port speaks them) and used by the
spool adapter (:mod:`sidecar.adapters.spool`) and the stores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sidecar.domain.records import MessageDoc, ThreadPatch

MAX_BATCH_OPS = 500  # Firestore's limit for one batched write


class SpoolError(Exception):
    """The spool database cannot be opened or written."""


@dataclass(frozen=True, slots=True)
class SpooledThread:
    patch: ThreadPatch
    version: int


@dataclass
class Batch:
    messages: list[tuple[int, MessageDoc]] = field(default_factory=list)
    threads: list[SpooledThread] = field(default_factory=list)
    #: Seconds until a thread update that had to wait becomes due (None: none waits).
    next_due_s: float | None = None

    def __len__(self) -> int:
        return len(self.messages) + len(self.threads)

    def halves(self) -> tuple[Batch, Batch]:
        """The first and the second half of the operations, in spool order (messages
        first); each half at least one operation when the batch has two."""
        middle = (len(self) + 1) // 2
        if middle <= len(self.messages):
            first = Batch(self.messages[:middle])
            second = Batch(self.messages[middle:], self.threads, self.next_due_s)
        else:
            first = Batch(self.messages, self.threads[: middle - len(self.messages)])
            second = Batch([], self.threads[middle - len(self.messages) :], self.next_due_s)
        return first, second

    @property
    def accounts(self) -> set[str]:
        return {d.account_id for _, d in self.messages} | {t.patch.account_id for t in self.threads}


@dataclass(frozen=True, slots=True)
class Backlog:
    messages: int
    oldest_enqueued_at: float | None


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch as a store encoded it. Operations of the batch taken that are neither in
    ``batch`` nor in ``too_large`` did not fit in one request: they stay spooled for
    the next one."""

    #: The operations the request holds, in spool order.
    batch: Batch
    #: The store's own encoding of them.
    request: Any
    #: Operations larger than any request may be: the writer sets them aside.
    too_large: Batch = field(default_factory=Batch)


@dataclass(frozen=True, slots=True)
class Conflict:
    """A message operation the store did not apply as asked (sidecar.domain.authorship)."""

    account_id: str
    outcome: str
