"""Which live replica runs which account: worked out by every replica alike.

Every replica knows the configured accounts and reads the same list of live
replicas, so each works out the whole assignment itself and no per-account record
has to be renewed: coordination costs grow with replicas, not with accounts
(docs/deploy.md, "Several replicas").

Rendezvous (highest random weight) hashing with bounded loads: each account ranks
the replicas by a hash of (replica, account); accounts, taken in the order of their
own hash, go to the first replica in their ranking that has fewer than
ceil(accounts / replicas). So no replica runs more than its fair share, and a
replica that joins or leaves moves few accounts besides its own share.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable


def _weight(*parts: str) -> int:
    """A stable 64-bit hash (the same in every process, unlike ``hash``)."""
    digest = hashlib.blake2b("\x00".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def assign(accounts: Iterable[str], replicas: Iterable[str]) -> dict[str, str]:
    """Each account's replica; empty when there are no replicas."""
    members = sorted(set(replicas))
    names = sorted(set(accounts))
    if not members:
        return {}
    cap = math.ceil(len(names) / len(members))
    load = dict.fromkeys(members, 0)
    owner: dict[str, str] = {}
    for account in sorted(names, key=lambda a: (_weight(a), a)):
        ranking = sorted(members, key=lambda r: (_weight(r, account), r), reverse=True)
        chosen = next(r for r in ranking if load[r] < cap)
        load[chosen] += 1
        owner[account] = chosen
    return owner


def share_of(replica: str, accounts: Iterable[str], replicas: Iterable[str]) -> set[str]:
    """The accounts ``replica`` should run, among ``replicas`` (it included)."""
    return {a for a, r in assign(accounts, [*replicas, replica]).items() if r == replica}
