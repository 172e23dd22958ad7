"""Real messages in Firestore, in the layout the existing Flutter app reads.

One batched write per spool batch (at most 500 operations). Each commit has
its own retry deadline; past it the spool writer retries the same batch with
its own backoff, for as long as it takes. Document ids are WhatsApp message
ids, so a retried or replayed batch leaves one document per message.
``FIRESTORE_EMULATOR_HOST`` is honoured by the client library.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.api_core import retry_async
from google.api_core.retry import if_transient_error
from google.cloud import firestore

from sidecar.adapters.spool import Batch
from sidecar.domain.records import SERVER_TIME, Timestamp


class FirestoreStore:
    backend = "firestore"

    def __init__(
        self, project: str, *, database: str = "(default)", timeout_s: float = 10.0
    ) -> None:
        self._client = firestore.AsyncClient(project=project, database=database)
        self._timeout = timeout_s
        self._retry = retry_async.AsyncRetry(
            initial=0.2,
            maximum=2.0,
            multiplier=2.0,
            predicate=if_transient_error,
            timeout=timeout_s,
        )

    def prepare(self, batch: Batch) -> Any:
        """The batched write, encoded (the costly part: ~0.1 ms per document)."""
        writes = self._client.batch()
        for _, doc in batch.messages:
            ref = self._client.collection("threads").document(doc.thread_id)
            writes.set(
                ref.collection("messages").document(doc.message_id),
                _firestore_values(doc.fields),
                merge=doc.merge,
            )
        for thread in batch.threads:
            writes.set(
                self._client.collection("threads").document(thread.patch.thread_id),
                _firestore_values(thread.patch.fields),
                merge=True,
            )
        return writes

    async def commit(self, writes: Any) -> None:
        await writes.commit(retry=self._retry, timeout=self._timeout)

    async def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]


def _firestore_values(value: Any) -> Any:
    if isinstance(value, Timestamp):
        return datetime.fromtimestamp(value.ms / 1000, tz=UTC)
    if value is SERVER_TIME:
        return firestore.SERVER_TIMESTAMP
    if isinstance(value, dict):
        return {k: _firestore_values(v) for k, v in value.items()}
    return value
