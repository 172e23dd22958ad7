"""The append-only journal: what makes a message durable before the handler returns.

The handler appends one line per message, a message's or a replay's batch's lines in
one ``write`` call (what is written survives a killed process, as a WAL commit with
``synchronous=NORMAL`` does). A line holds the facts the writer builds the message's
documents from (older lines, and ``Spool.enqueue``'s, hold the documents). A
header line names the journal's generation: SQLite records the newest generation
it holds all of, so a restart can tell moved entries from those not yet moved. A
line torn by a full disk is taken back, or skipped when the journal is read again.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import orjson

from sidecar.adapters.spool.codec import decode_facts, decode_fields, encode_facts, encode_fields
from sidecar.core.failures import Failures
from sidecar.core.spooling import SpoolError
from sidecar.domain.facts import MessageFacts
from sidecar.domain.records import MessageDoc, ThreadPatch, message_doc, thread_of

log = logging.getLogger(__package__)  # one logger for the whole spool


#: The first element of a journal line that holds a message's facts (older lines hold its
#: documents, and start with the account).
FACTS_LINE = 1


@dataclass(slots=True)  # not frozen (slower to make, and one is made per message); never changed
class Entry:
    """One enqueued message as the journal holds it: the facts the event path read off
    it (:mod:`sidecar.domain.facts`), or its documents (``enqueue``, and journals an
    earlier version wrote)."""

    account_id: str
    enqueued_at: float
    facts: MessageFacts | None
    built: tuple[MessageDoc, ThreadPatch | None] | None
    #: What the SQLite row's ``doc`` holds, encoded once: the facts as a JSON array,
    #: or the document's fields as an object.
    row_json: str

    @classmethod
    def of(cls, doc: MessageDoc, patch: ThreadPatch | None, enqueued_at: float) -> Entry:
        return cls(doc.account_id, enqueued_at, None, (doc, patch), encode_fields(doc.fields))

    @classmethod
    def of_facts(cls, facts: MessageFacts, enqueued_at: float) -> Entry:
        return cls(facts.account_id, enqueued_at, facts, None, encode_facts(facts))

    @property
    def doc(self) -> MessageDoc:
        """The message document (built, for facts: the fault tests' harness names the
        last entry of a move by it)."""
        return message_doc(self.facts) if self.built is None else self.built[0]  # type: ignore[arg-type]

    def thread_update(self) -> tuple[str, ThreadPatch | MessageFacts] | None:
        """The thread's id and what updates it: the update itself, or the message's facts
        (the spool's pacing builds the update from them once it is written)."""
        if self.built is None:
            facts = self.facts
            assert facts is not None
            return None if facts.edit else (thread_of(facts), facts)
        patch = self.built[1]
        return None if patch is None else (patch.thread_id, patch)

    def row(self) -> tuple[str, str, str, str, int, float]:
        """The ``spool_messages`` row (without its seq). A row of facts names its thread
        and the message's own id; its documents are built from ``doc`` alone."""
        if self.built is None:
            facts = self.facts
            assert facts is not None
            return (
                self.account_id,
                thread_of(facts),
                facts.message_id,
                self.row_json,
                int(facts.edit),
                self.enqueued_at,
            )
        doc = self.built[0]
        return (
            doc.account_id,
            doc.thread_id,
            doc.message_id,
            self.row_json,
            int(doc.merge),
            self.enqueued_at,
        )

    def encode(self) -> bytes:
        if self.built is None:  # [FACTS_LINE, enqueued_at, facts], the facts encoded already
            return b"[%d,%b,%b]\n" % (
                FACTS_LINE,
                orjson.dumps(self.enqueued_at),
                self.row_json.encode(),
            )
        doc, patch = self.built
        patch_json = None if patch is None else encode_fields(patch.fields)
        return orjson.dumps(
            [
                doc.account_id,
                doc.thread_id,
                doc.message_id,
                doc.merge,
                self.enqueued_at,
                self.row_json,
                None if patch is None else patch.thread_id,
                patch_json,
            ],
            option=orjson.OPT_APPEND_NEWLINE,
        )

    @classmethod
    def decode(cls, line: bytes) -> Entry:
        data = json.loads(line)
        if data[0] == FACTS_LINE:
            _, at, values = data
            facts = decode_facts(values)
            if facts is None or isinstance(at, bool) or not isinstance(at, int | float):
                raise ValueError("not a journal entry")
            return cls.of_facts(facts, float(at))
        account, thread, message, merge, at, doc_json, patch_thread, patch_json = data
        doc = MessageDoc(account, thread, message, decode_fields(doc_json), bool(merge))
        patch = (
            None
            if patch_json is None
            else ThreadPatch(account, patch_thread, decode_fields(patch_json))
        )
        return cls(account, float(at), None, (doc, patch), doc_json)


class Journal:
    """The journal file, its generation, and the entries it holds that are not yet in
    SQLite. Not thread-safe: the spool holds its lock around every call."""

    def __init__(self, path: Path, failures: Failures) -> None:
        self.path = path
        self.failures = failures  # of starting a new generation
        self.pending: list[Entry] = []
        self.generation = 0
        self.ready = False  # it holds a whole header line of ``generation``
        self._torn_tail = False  # a torn line could not be taken back: start on a new line
        self.fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_APPEND, 0o600)

    def append(self, entries: list[Entry], lines: bytes) -> None:
        """Write ``lines``, the encoded ``entries``, in one call; raise :class:`SpoolError`
        when they are not wholly written (none of those messages is then stored)."""
        if not self.ready:
            self.start()
        if self._torn_tail:
            lines = b"\n" + lines
        try:
            written = os.write(self.fd, lines)
        except OSError as exc:
            raise SpoolError(f"cannot write to the spool {self.path}: {exc}") from exc
        if written != len(lines):  # out of space half-way: take the torn lines back
            self._take_back(written)
            raise SpoolError(f"cannot write to the spool {self.path}: disk full") from OSError(
                errno.ENOSPC, os.strerror(errno.ENOSPC)
            )
        self._torn_tail = False
        self.pending.extend(entries)

    def _take_back(self, written: int) -> None:
        try:
            os.ftruncate(self.fd, os.lseek(self.fd, 0, os.SEEK_END) - written)
        except OSError:
            self._torn_tail = True  # recovery skips the torn line; the next entry starts anew

    def reopen(self, flushed: int) -> bool:
        """Read what a previous process left, given the newest generation SQLite holds
        all of. True: ``pending`` holds entries to move before anything else, and new
        ones go on in this generation until then. False: the next generation started."""
        data = os.pread(self.fd, os.fstat(self.fd).st_size, 0)
        header, _, body = data.partition(b"\n")
        generation = _generation_of(header)
        if generation is None:
            if header:
                # Entries already moved would be written again: harmless, documents are
                # keyed by message id. Losing unmoved ones would not be.
                log.warning("spool: the journal's header is unreadable; recovering every entry")
                generation = flushed + 1
            else:
                generation = flushed
        if generation <= flushed or not body:
            self.generation = max(generation, flushed) + 1
            self.start_or_log()
            return False
        entries, torn = [], 0
        for line in body.splitlines():
            try:
                entries.append(Entry.decode(line))
            except (ValueError, KeyError, TypeError, IndexError):
                torn += 1
        if torn:
            log.warning("spool: %d unreadable journal entries skipped", torn)
        if not body.endswith(b"\n"):  # a torn last line must not swallow the next entry
            self._torn_tail = True
        self.pending = entries
        self.generation = generation
        self.ready = True
        return True

    def moved(self) -> None:
        """Every pending entry is in SQLite now."""
        self.pending = []

    def next_generation(self) -> None:
        """Start over, empty, once what this generation held is in SQLite."""
        self.generation += 1
        self.start_or_log()

    def start(self) -> None:
        """Empty the journal and write the header of ``generation``; every entry must
        have moved. Raises :class:`SpoolError`."""
        if self.pending:  # never: it would throw entries away
            raise SpoolError("the spool journal holds entries not yet moved into SQLite")
        self.ready = False
        header = json.dumps({"generation": self.generation}).encode() + b"\n"
        try:
            os.ftruncate(self.fd, 0)
            written = os.write(self.fd, header)
            if written != len(header):
                os.ftruncate(self.fd, 0)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            self.failures.failed(exc)
            raise SpoolError(f"cannot start the spool journal {self.path}: {exc}") from exc
        self.ready, self._torn_tail = True, False
        self.failures.succeeded()

    def start_or_log(self) -> None:
        """As :meth:`start`; a failure is logged and the next append tries again."""
        with contextlib.suppress(SpoolError):
            self.start()

    def close(self) -> None:
        os.close(self.fd)


def _generation_of(header: bytes) -> int | None:
    """The generation a journal header names (None: no header, or an unreadable one)."""
    try:
        generation = json.loads(header)["generation"]
    except (ValueError, TypeError, KeyError, IndexError):
        return None
    return generation if isinstance(generation, int) and not isinstance(generation, bool) else None
