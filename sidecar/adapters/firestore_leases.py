"""Replica membership and account holds in Firestore: the leases port of
:mod:`sidecar.core.ports`.

``wa_sidecar_replicas/{replicaId}`` = ``{expiresAtMs, incarnation}`` is renewed once
per cycle by its replica (one read and one write, in a transaction). An
``incarnation`` is a random token a replica draws each time it joins.

``wa_sidecar_leases/{accountId}`` = ``{holder, incarnation, generation, expiresAtMs}``
is written only when the account changes hands: taken (``generation`` counts the
takes), or released (``holder`` null). A replica may take an account whose holder's
membership has expired, or is there under another incarnation: a replica whose
membership expired before it renewed it (paused, cut off) joins again under a new
incarnation, so what it held is free to take and it cannot keep it, and it takes
nothing back from a live holder. The take locks only the account's record; the
holder's membership is read without a lock, so a take never holds up a renewal.

``expiresAtMs`` is for replicas of earlier versions, which renewed each account's
record: far in the future while held, so they never take an account from this
version during a rolling upgrade; and a record of theirs (no ``generation``) is
respected until its own ``expiresAtMs``.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from google.cloud import firestore

log = logging.getLogger(__name__)

LEASES = "wa_sidecar_leases"
REPLICAS = "wa_sidecar_replicas"
#: 9999-12-31: what older versions read as "held" on a record this version holds.
HELD_FOR_OLDER_VERSIONS_MS = 253_402_300_799_000
#: A dead replica's record is deleted this many ttls after it expired, so records of
#: replicas that are gone for good (pod names change) are not read forever.
FORGET_AFTER_TTLS = 3


def _now_ms() -> int:
    return int(time.time() * 1000)


def _fields(snapshot: Any) -> dict[str, Any]:
    """A document's fields; none for a document that does not exist."""
    return (snapshot.to_dict() or {}) if snapshot.exists else {}


class FirestoreLeases:
    def __init__(
        self, project: str, replica_id: str, ttl_s: float, *, database: str = "(default)"
    ) -> None:
        self._client = firestore.AsyncClient(project=project, database=database)
        self.replica_id = replica_id
        self.ttl_ms = int(ttl_s * 1000)
        self._incarnation: str | None = None
        self._generations: dict[str, int] = {}

    def _replica(self, replica_id: str) -> Any:
        return self._client.collection(REPLICAS).document(replica_id)

    def _lease(self, account_id: str) -> Any:
        return self._client.collection(LEASES).document(account_id)

    async def heartbeat(self) -> bool:
        ref = self._replica(self.replica_id)
        fresh = secrets.token_hex(8)  # the incarnation if this replica (re)joins now
        kept: list[bool] = []

        @firestore.async_transactional
        async def renew(tx: Any) -> None:
            kept.clear()
            record = _fields(await ref.get(transaction=tx))
            now = _now_ms()
            ours = (
                self._incarnation is not None
                and record.get("incarnation") == self._incarnation
                and record.get("expiresAtMs", 0) > now
            )
            incarnation = self._incarnation if ours else fresh
            tx.set(ref, {"expiresAtMs": now + self.ttl_ms, "incarnation": incarnation})
            kept.append(ours)

        first = self._incarnation is None
        await renew(self._client.transaction())
        if kept[0]:
            return True
        if not first:
            log.warning(
                "replica %s let its membership expire: joining again, holding nothing",
                self.replica_id,
            )
        self._incarnation = fresh
        self._generations.clear()
        return first

    async def live_replicas(self) -> list[str]:
        now = _now_ms()
        live: list[str] = []
        forget_before = now - FORGET_AFTER_TTLS * self.ttl_ms
        async for doc in self._client.collection(REPLICAS).stream():
            expires = (doc.to_dict() or {}).get("expiresAtMs", 0)
            if expires > now:
                live.append(doc.id)
            elif expires < forget_before:
                await doc.reference.delete()
        return sorted(live)

    async def take(self, account_id: str) -> bool:
        ref = self._lease(account_id)
        taken: list[int] = []

        @firestore.async_transactional
        async def take(tx: Any) -> None:
            taken.clear()
            data = _fields(await ref.get(transaction=tx))
            holder = data.get("holder")
            if holder and holder != self.replica_id:
                if "generation" not in data:  # an older version's record
                    if data.get("expiresAtMs", 0) > _now_ms():
                        return
                elif await self._still_holds(holder, data.get("incarnation")):
                    return  # a live member holds it: it releases it when it is done
            assert self._incarnation is not None, "take() before the first heartbeat()"
            generation = int(data.get("generation", 0)) + 1
            tx.set(
                ref,
                {
                    "holder": self.replica_id,
                    "incarnation": self._incarnation,
                    "generation": generation,
                    "expiresAtMs": HELD_FOR_OLDER_VERSIONS_MS,
                },
            )
            taken.append(generation)

        await take(self._client.transaction())
        if taken:
            self._generations[account_id] = taken[0]
        return bool(taken)

    async def _still_holds(self, holder: str, incarnation: object) -> bool:
        """Whether ``holder`` is a member now under the incarnation it took the account
        with. Read outside the transaction, so it never holds up the holder's renewal;
        an incarnation that lapsed never comes back, so a stale answer is a safe one."""
        record = _fields(await self._replica(holder).get())
        return bool(
            record.get("incarnation") == incarnation and record.get("expiresAtMs", 0) > _now_ms()
        )

    async def release(self, account_id: str) -> None:
        ref = self._lease(account_id)
        generation = self._generations.get(account_id)

        @firestore.async_transactional
        async def give_back(tx: Any) -> None:
            data = _fields(await ref.get(transaction=tx))
            if data.get("holder") == self.replica_id and data.get("generation") == generation:
                tx.update(ref, {"holder": None, "expiresAtMs": 0})

        await give_back(self._client.transaction())
        self._generations.pop(account_id, None)

    async def leave(self) -> None:
        await self._replica(self.replica_id).delete()
        self._incarnation = None

    async def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]
