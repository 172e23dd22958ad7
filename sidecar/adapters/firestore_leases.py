"""Account leases kept in Firestore: the leases port of :mod:`sidecar.core.ports`.

Each account has one lease document, ``wa_sidecar_leases/{accountId}`` =
``{holder, expiresAtMs}``, taken and renewed in Firestore transactions.
Replicas announce themselves in ``wa_sidecar_replicas/{replicaId}``. How many
leases a replica aims for is :class:`sidecar.core.leases.LeaseKeeper`'s policy.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from google.cloud import firestore

log = logging.getLogger(__name__)

LEASES = "wa_sidecar_leases"
REPLICAS = "wa_sidecar_replicas"


def _now_ms() -> int:
    return int(time.time() * 1000)


class FirestoreLeases:
    def __init__(
        self, project: str, replica_id: str, ttl_s: float, *, database: str = "(default)"
    ) -> None:
        self._client = firestore.AsyncClient(project=project, database=database)
        self.replica_id = replica_id
        self.ttl_ms = int(ttl_s * 1000)

    async def heartbeat(self) -> None:
        await (
            self._client.collection(REPLICAS)
            .document(self.replica_id)
            .set({"expiresAtMs": _now_ms() + self.ttl_ms})
        )

    async def live_replicas(self) -> int:
        now = _now_ms()
        count = 0
        async for doc in self._client.collection(REPLICAS).stream():
            if (doc.to_dict() or {}).get("expiresAtMs", 0) > now:
                count += 1
        return max(1, count)

    async def try_hold(self, account_id: str) -> bool:
        """Take or renew the lease when it is free, expired or already ours."""
        ref = self._client.collection(LEASES).document(account_id)
        transaction = self._client.transaction()

        @firestore.async_transactional
        async def take(tx: Any) -> bool:
            snapshot = await ref.get(transaction=tx)
            data = snapshot.to_dict() if snapshot.exists else None
            now = _now_ms()
            if data and data.get("holder") != self.replica_id and data.get("expiresAtMs", 0) > now:
                return False
            tx.set(ref, {"holder": self.replica_id, "expiresAtMs": now + self.ttl_ms})
            return True

        result: bool = await take(transaction)
        return result

    async def release(self, account_id: str) -> None:
        ref = self._client.collection(LEASES).document(account_id)
        transaction = self._client.transaction()

        @firestore.async_transactional
        async def give_back(tx: Any) -> None:
            snapshot = await ref.get(transaction=tx)
            if snapshot.exists and (snapshot.to_dict() or {}).get("holder") == self.replica_id:
                tx.delete(ref)

        await give_back(transaction)

    async def leave(self) -> None:
        await self._client.collection(REPLICAS).document(self.replica_id).delete()

    async def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]
