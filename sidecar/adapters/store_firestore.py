"""Real messages in Firestore, in the layout the existing Flutter app reads.

One batched write per spool batch (at most 500 operations). Each commit has
its own retry deadline; past it the spool writer retries the same batch with
its own backoff, for as long as it takes. Document ids are WhatsApp message
ids, so a retried or replayed batch leaves one document per message.

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

import functools
import os
from typing import Any

import grpc  # type: ignore[import-untyped]
from google.api_core import retry_async
from google.api_core.retry import if_transient_error
from google.cloud.firestore_v1 import types
from google.cloud.firestore_v1.field_path import FieldPath
from google.cloud.firestore_v1.services.firestore import FirestoreAsyncClient
from google.cloud.firestore_v1.services.firestore.transports import (
    FirestoreGrpcAsyncIOTransport,
)

from sidecar.adapters.spool import Batch
from sidecar.domain.records import SERVER_TIME, Timestamp

EMULATOR_HOST_VARIABLE = "FIRESTORE_EMULATOR_HOST"
#: The high-level client's channel options: keepalive, no message size limits.
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
]
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

    def prepare(self, batch: Batch) -> types.CommitRequest:
        """The batched write, encoded as ``set()`` would (merge for edits and threads)."""
        request = types.CommitRequest.pb()(database=self._database)
        for _, doc in batch.messages:
            name = f"{self._threads}/{_id(doc.thread_id)}/messages/{_id(doc.message_id)}"
            _add_set(request.writes.add(), name, doc.fields, merge=doc.merge)
        for thread in batch.threads:
            name = f"{self._threads}/{_id(thread.patch.thread_id)}"
            _add_set(request.writes.add(), name, thread.patch.fields, merge=True)
        prepared: types.CommitRequest = types.CommitRequest.wrap(request)  # no copy
        return prepared

    async def commit(self, request: types.CommitRequest) -> None:
        await self._firestore_api().commit(
            request=request, retry=self._retry, timeout=self._timeout, metadata=self._metadata
        )

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
