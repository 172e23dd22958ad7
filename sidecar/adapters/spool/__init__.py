"""The durable queue between the event handler and the message store.

A real message is made durable here before the handler returns, so a store
that is slow or down, or a process that is killed, loses nothing. The
handler only appends one line to a journal file (one ``write`` call, for a
replay's batch too: what is written survives a killed process, as a WAL commit
with ``synchronous=NORMAL`` does), holding the few values the message's
documents are built from; the writer builds them when it takes the message.
Batches of journal entries move into SQLite (WAL) in one transaction each, off
the handler's critical path, and the journal starts over. A restart moves
whatever the journal still holds before anything else. Rows leave SQLite only
after the store confirmed them.

Thread updates are coalesced per thread and written at most once per
``thread_interval_s``, which keeps a busy chat under Firestore's sustained
rate of one write per second per document.

When the disk is full, a message the journal cannot take is refused with
:class:`SpoolError` (the caller counts and logs it: it is not stored); a move
into SQLite that fails leaves the entries in the journal and is tried again.
A spool database that is corrupt is refused at start
(:class:`~sidecar.adapters.sqlite_files.CorruptDatabaseError`): it may hold
messages that are in no other place, so an operator decides (docs/runbook.md).
"""

from __future__ import annotations

from sidecar.adapters.spool.facade import FLUSH_EVERY, FLUSH_RETRY_S, Spool
from sidecar.adapters.spool.queue import HOLDS, SCHEMA
from sidecar.core.spooling import MAX_BATCH_OPS, Backlog, Batch, SpooledThread, SpoolError

__all__ = [
    "FLUSH_EVERY",
    "FLUSH_RETRY_S",
    "HOLDS",
    "MAX_BATCH_OPS",
    "SCHEMA",
    "Backlog",
    "Batch",
    "Spool",
    "SpoolError",
    "SpooledThread",
]
