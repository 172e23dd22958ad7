"""The spool's vocabulary: what it hands the writer, what it reports, what it raises.

Plain values, declared by the core (the spool port speaks them) and used by the
spool adapter (:mod:`sidecar.adapters.spool`) and the stores.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

    @property
    def accounts(self) -> set[str]:
        return {d.account_id for _, d in self.messages} | {t.patch.account_id for t in self.threads}


@dataclass(frozen=True, slots=True)
class Backlog:
    messages: int
    oldest_enqueued_at: float | None
