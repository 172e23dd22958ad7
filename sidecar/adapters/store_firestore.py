"""Real messages in Firestore, in the layout the existing Flutter app reads.

One batched write per spool batch: at most 500 operations and
:data:`MAX_REQUEST_BYTES` (a margin under the emulator's 4 MiB gRPC limit and
production's 10 MiB request limit); the operations past that stay spooled for the
next batch, and an operation over :data:`MAX_WRITE_BYTES` (Firestore keeps at
most 1 MiB per document) is handed back to be set aside. Each commit has its own
retry deadline; past it the spool writer retries the same batch with its own
backoff, for as long as it takes. Document ids are WhatsApp message ids, so a
retried or replayed batch leaves one document per message.

Authorship (:mod:`sidecar.domain.authorship`) needs what is stored: a batch of new
messages is written with the precondition that none of them exists, the common
case, which costs no read; a batch with an edit, or one whose precondition failed,
reads the documents it touches first (one ``BatchGetDocuments``) and is written with
preconditions on what it read, so nothing changes between the read and the write.

The writes are encoded here, as raw protobufs, not by the client library:
``WriteBatch.set`` builds every value through proto-plus, which cost ~120 µs
per operation (a 550-operation batch: 66 ms), often longer than the emulator
took to commit it. Building the same ``Write`` messages directly takes ~10 µs per operation
(tests/test_store_firestore.py checks they equal the library's, field for
field). They are committed through the library's public GAPIC client.
``FIRESTORE_EMULATOR_HOST`` is honoured as the high-level client honours it: an
insecure channel to that host and the emulator's owner token, no credentials.
"""

from __future__ import annotations

import asyncio
import functools
import os
from dataclasses import dataclass, field
from typing import Any

import grpc  # type: ignore[import-untyped]
from google.api_core import exceptions as api_exceptions
from google.api_core import retry_async
from google.api_core.retry import if_transient_error
from google.cloud.firestore_v1 import types
from google.cloud.firestore_v1.field_path import FieldPath
from google.cloud.firestore_v1.services.firestore import FirestoreAsyncClient
from google.cloud.firestore_v1.services.firestore.transports import (
    FirestoreGrpcAsyncIOTransport,
)

from sidecar.adapters.spool import Batch
from sidecar.core.spooling import Conflict, Prepared
from sidecar.domain.authorship import CONFLICT_OUTCOMES, Stored, resolve
from sidecar.domain.records import SERVER_TIME, Timestamp

EMULATOR_HOST_VARIABLE = "FIRESTORE_EMULATOR_HOST"
#: The high-level client's channel options: keepalive, no message size limits.
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
]
#: One commit's encoded size at most: under the emulator's 4 MiB gRPC message limit
#: (production Firestore takes 10 MiB), with room for the request's own framing.
MAX_REQUEST_BYTES = 3 * 1024 * 1024
#: One write's encoded size at most. Firestore keeps 1 MiB (1,048,576 bytes) per
#: document, counted a little below the encoded size; a larger write is refused.
MAX_WRITE_BYTES = 1_000_000
#: Errors that say the preconditions did not hold: what was assumed stored was not.
_PRECONDITION_FAILED = (api_exceptions.AlreadyExists, api_exceptions.FailedPrecondition)
_REQUEST_TIME = types.DocumentTransform.FieldTransform.ServerValue.REQUEST_TIME
_NULL_VALUE = 0  # google.protobuf.NullValue.NULL_VALUE


class FirestoreStore:
    backend = "firestore"

    def __init__(
        self, project: str, *, database: str = "(default)", timeout_s: float = 10.0
    ) -> None:
        self._database = f"projects/{project}/databases/{database}"
        self._threads = f"{self._database}/documents/threads"
        self._emulator_host = os.environ.get(EMULATOR_HOST_VARIABLE)
        self._metadata = [("google-cloud-resource-prefix", self._database)]
        if self._emulator_host:
            self._metadata.append(("authorization", "Bearer owner"))
        self._api: FirestoreAsyncClient | None = None  # made in the event loop that commits
        self._timeout = timeout_s
        self._retry = retry_async.AsyncRetry(
            initial=0.2,
            maximum=2.0,
            multiplier=2.0,
            predicate=if_transient_error,
            timeout=timeout_s,
        )

    def prepare(self, batch: Batch) -> Prepared:
        """As much of ``batch`` as one request may hold, encoded on the assumption that
        none of its new messages is stored (a batch with an edit reads first)."""
        plan = self._encode(batch, None, limits=True)
        return Prepared(plan.batch, plan, plan.too_large)

    async def commit(self, prepared: Prepared) -> list[Conflict]:
        plan: _Plan = prepared.request
        if plan.reads_first:
            plan = await self._encode_after_reading(prepared.batch)
        try:
            await self._commit(plan.request)
        except _PRECONDITION_FAILED:
            if plan.reads_first:
                raise  # it changed since it was read: the writer tries the batch again
            plan = await self._encode_after_reading(prepared.batch)
            await self._commit(plan.request)
        return plan.conflicts

    def refuses(self, exc: BaseException) -> bool:
        """Firestore says the request itself is wrong (a value it cannot keep) or too
        large: sending it again never helps. Read from the error's class only."""
        if isinstance(exc, api_exceptions.RetryError) and exc.cause is not None:
            exc = exc.cause
        if isinstance(exc, api_exceptions.InvalidArgument):
            return True
        return isinstance(exc, api_exceptions.ResourceExhausted) and "maximum size" in str(exc)

    async def _commit(self, request: types.CommitRequest) -> None:
        await self._firestore_api().commit(
            request=request, retry=self._retry, timeout=self._timeout, metadata=self._metadata
        )

    async def _encode_after_reading(self, batch: Batch) -> _Plan:
        stored = await self._read(
            {self._message_path(d.thread_id, d.message_id) for _, d in batch.messages}
        )
        return await asyncio.to_thread(self._encode, batch, stored, limits=False)

    async def _read(self, paths: set[str]) -> dict[str, tuple[Stored, Any] | None]:
        """What is stored at ``paths``, as authorship needs it, with each document's
        update time (None: no document)."""
        if not paths:
            return {}
        found: dict[str, tuple[Stored, Any] | None] = {}
        responses = await self._firestore_api().batch_get_documents(
            request={
                "database": self._database,
                "documents": sorted(paths),
                "mask": {"field_paths": ["key", "editedAt"]},
            },
            retry=self._retry,
            timeout=self._timeout,
            metadata=self._metadata,
        )
        async for response in responses:
            result = types.BatchGetDocumentsResponse.pb(response)
            if result.HasField("found"):
                document = result.found
                found[document.name] = (_stored(document.fields), document.update_time)
            elif result.missing:
                found[result.missing] = None
        return found

    def _message_path(self, thread_id: str, message_id: str) -> str:
        return f"{self._threads}/{_id(thread_id)}/messages/{_id(message_id)}"

    def _encode(
        self,
        batch: Batch,
        stored: dict[str, tuple[Stored, Any] | None] | None,
        *,
        limits: bool,
    ) -> _Plan:
        """The commit for ``batch``, given what is stored (None: assume no message is).
        With ``limits``, operations past the request's size stay out of it."""
        request = types.CommitRequest.pb()(database=self._database)
        plan = _Plan(
            request, reads_first=stored is None and any(d.merge for _, d in batch.messages)
        )
        known: dict[str, Stored | None] = {}
        size = 0
        for seq, doc in batch.messages:
            path = self._message_path(doc.thread_id, doc.message_id)
            first = path not in known
            read = stored.get(path) if first and stored is not None else None
            if first:
                known[path] = read[0] if read is not None else None
            resolution = resolve(doc, known[path])
            written = resolution.write
            if written is not None:
                write = request.writes.add()
                target = self._message_path(doc.thread_id, written.message_id)
                _add_set(write, target, written.fields, merge=written.merge)
                if first and target == path:
                    _precondition(write, read)
                fit, size = _fit_last(request, size) if limits else (_FITS, size)
                if fit == _TOO_LARGE:
                    plan.too_large.messages.append((seq, doc))
                    if first:
                        del known[path]
                    continue
                if fit == _FULL:
                    break  # it and the ones after it wait for the next request
            known[path] = resolution.stored
            plan.batch.messages.append((seq, doc))
            if resolution.outcome in CONFLICT_OUTCOMES:
                plan.conflicts.append(Conflict(doc.account_id, resolution.outcome))
        for thread in batch.threads:
            write = request.writes.add()
            name = f"{self._threads}/{_id(thread.patch.thread_id)}"
            _add_set(write, name, thread.patch.fields, merge=True)
            fit, size = _fit_last(request, size) if limits else (_FITS, size)
            if fit == _TOO_LARGE:
                plan.too_large.threads.append(thread)
            elif fit == _FITS:
                plan.batch.threads.append(thread)
            # full: still due, the next batch takes it
        plan.batch.next_due_s = batch.next_due_s
        plan.request = types.CommitRequest.wrap(request)  # no copy
        return plan

    async def close(self) -> None:
        api, self._api = self._api, None
        if api is not None:
            await api.transport.close()  # type: ignore[no-untyped-call]

    def _firestore_api(self) -> FirestoreAsyncClient:
        if self._api is None:
            if self._emulator_host:
                host = self._emulator_host
                channel = grpc.aio.insecure_channel(host, options=CHANNEL_OPTIONS)
            else:  # default credentials, as the high-level client finds them
                host = FirestoreGrpcAsyncIOTransport.DEFAULT_HOST
                channel = FirestoreGrpcAsyncIOTransport.create_channel(
                    host, options=CHANNEL_OPTIONS
                )
            transport = FirestoreGrpcAsyncIOTransport(host=host, channel=channel)
            self._api = FirestoreAsyncClient(transport=transport)
        return self._api


@dataclass
class _Plan:
    """A commit and what it holds: the store's side of :class:`Prepared`."""

    request: Any
    reads_first: bool
    batch: Batch = field(default_factory=Batch)
    too_large: Batch = field(default_factory=Batch)
    conflicts: list[Conflict] = field(default_factory=list)


_FITS, _TOO_LARGE, _FULL = "fits", "too large", "full"


def _fit_last(request: Any, size: int) -> tuple[str, int]:
    """Whether the write just added to ``request`` (whose writes before it weigh
    ``size`` bytes) stays: it is taken out again when no request may hold it, or when
    this one is full. Returns the verdict and the request's size after it."""
    weight = request.writes[-1].ByteSize()
    if weight > MAX_WRITE_BYTES:
        verdict = _TOO_LARGE
    elif size + weight > MAX_REQUEST_BYTES:
        verdict = _FULL
    else:
        return _FITS, size + weight
    del request.writes[-1]
    return verdict, size


def _precondition(write: Any, read: tuple[Stored, Any] | None) -> None:
    """The document is as read: absent, or unchanged since its update time."""
    if read is None:
        write.current_document.exists = False
    else:
        write.current_document.update_time.CopyFrom(read[1])


def _stored(fields: Any) -> Stored:
    """Authorship from a read document's raw fields (``key`` and ``editedAt``)."""
    key = _value(fields, "key", "map_value")
    from_me = _value(key.fields, "fromMe", "boolean_value") if key is not None else None
    participant = _value(key.fields, "participant", "string_value") if key is not None else None
    stamp = _value(fields, "editedAt", "timestamp_value")
    return Stored(
        None if from_me is None else (from_me, participant),
        None if stamp is None else stamp.seconds * 1000 + stamp.nanos // 1_000_000,
    )


def _value(fields: Any, name: str, kind: str) -> Any:
    """``fields[name]`` when it holds a value of ``kind``, else None."""
    if name not in fields or fields[name].WhichOneof("value_type") != kind:
        return None
    return getattr(fields[name], kind)


def _id(document_id: str) -> str:
    if "/" in document_id:  # the library refuses it too: a path, not an id
        raise ValueError(f"a Firestore document id cannot contain '/': {document_id!r}")
    return document_id


def _add_set(write: Any, name: str, data: dict[str, Any], *, merge: bool) -> None:
    """Fill ``write`` as ``set(data, merge=merge)`` does: server times become transforms;
    a merge's mask names every field path written (nested maps: their leaves)."""
    write.update.name = name
    server_times: list[tuple[str, ...]] = []
    written: list[tuple[str, ...]] = []
    _encode_fields(write.update.fields, data, (), server_times, written)
    if merge:
        write.update_mask.SetInParent()  # present even when empty, as the library's
        write.update_mask.field_paths.extend(_field_path(path) for path in sorted(written))
    for path in sorted(server_times):
        write.update_transforms.add(field_path=_field_path(path), set_to_server_value=_REQUEST_TIME)


def _encode_fields(
    fields: Any,
    data: dict[str, Any],
    prefix: tuple[str, ...],
    server_times: list[tuple[str, ...]],
    written: list[tuple[str, ...]],
) -> None:
    for key, value in data.items():
        path = (*prefix, key)
        if value is SERVER_TIME:
            server_times.append(path)
        elif isinstance(value, dict) and value:
            nested = fields[key].map_value.fields
            _encode_fields(nested, value, path, server_times, written)
            if not nested:  # it held server times only: the library leaves the map out
                del fields[key]
        else:
            _encode_value(fields[key], value)
            written.append(path)


def _encode_value(target: Any, value: Any) -> None:
    if isinstance(value, str):
        target.string_value = value
    elif value is None:
        target.null_value = _NULL_VALUE
    elif isinstance(value, bool):
        target.boolean_value = value
    elif isinstance(value, int):
        target.integer_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, Timestamp):
        seconds, ms = divmod(value.ms, 1000)
        target.timestamp_value.seconds = seconds
        target.timestamp_value.nanos = ms * 1_000_000
    elif isinstance(value, dict):  # an empty one: _encode_fields descends into the others
        target.map_value.SetInParent()
    else:
        raise TypeError(f"cannot store {type(value).__name__} in Firestore")


@functools.lru_cache(maxsize=4096)
def _field_path(path: tuple[str, ...]) -> str:
    """As the library renders it (names that are not identifiers are quoted)."""
    return FieldPath(*path).to_api_repr()
