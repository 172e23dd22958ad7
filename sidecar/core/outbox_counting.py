"""Counting the outbox for the metrics at a cost that follows the sending, not the
accounts held (docs/sending.md, "Counting").

Open items (queued, processing) are read at every count: there are few, they change
by the second, and the store reads them for 30 accounts at a time. Settled items
(sent, failed) only grow, and Firestore counts them one account and status at a time,
so recounting them all at every count was most of the cost: 4,000 of 5,000 queries per
count for 1,000 accounts, most of them counting nothing new. Their counts are kept and
an account's are counted again only when they may have moved:

- it was not counted on this replica yet (just taken over, or held again);
- this replica settled one of its items since the last count (the usual way they
  move: seen at the next count);
- it has fewer open items than at the last count (someone else settled one: a claim
  marking an unreadable document failed, another writer);
- its settled counts are :data:`SETTLED_REFRESH_S` old (anything else: documents
  deleted, an item settled and another queued between two counts).

Reading only what changed (``updatedAt`` since the last count) would need another
query per 30 accounts and an index of its own, for counts an operator reads as totals.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from sidecar.core.clock import Clock
from sidecar.core.ports import OutboxStore
from sidecar.domain import outbox

#: How old an account's sent and failed counts may get when nothing says they moved.
SETTLED_REFRESH_S = 600.0


@dataclass
class OutboxCounts:
    """The outbox as last counted, for the accounts this replica held then."""

    #: Per account: items per status.
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Per account with queued items: when the oldest was created.
    oldest_queued: dict[str, float] = field(default_factory=dict)


class OutboxCounter:
    """Counts the outbox for the accounts it is given, recounting the settled items
    of an account only when they may have moved (the module's docstring)."""

    def __init__(self, store: OutboxStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self.counted = OutboxCounts()
        #: Per account: when its settled items were counted, and how many per status.
        self._settled: dict[str, tuple[float, dict[str, int]]] = {}
        #: Per account: its open items at the last count.
        self._open: dict[str, int] = {}
        #: Accounts this replica settled an item of since the last count.
        self._settled_here: set[str] = set()

    def settled(self, account_id: str) -> None:
        """This replica made an item of ``account_id`` sent or failed."""
        self._settled_here.add(account_id)

    async def count(self, accounts: Collection[str]) -> OutboxCounts:
        """Count ``accounts``' items into :attr:`counted`; a store error leaves the last
        counts (and what this replica settled meanwhile stays to be counted)."""
        held = sorted(set(accounts))
        now = self._clock.now()
        settled_here, self._settled_here = self._settled_here, set()
        try:
            found = await self._store.open_items(held)
            open_now = {account: 0 for account in held}
            for account, _, n in found.counts:
                open_now[account] = open_now.get(account, 0) + n
            due = [a for a in held if self._due(a, now, a in settled_here, open_now[a])]
            rows = await self._store.counts(due, outbox.SETTLED) if due else []
        except BaseException:
            self._settled_here |= settled_here
            raise
        for account in due:
            self._settled[account] = (now, {})
        for account, status, n in rows:
            self._settled[account][1][status] = n
        for gone in self._settled.keys() - set(held):  # held again later: counted anew
            del self._settled[gone]
        self._open = open_now
        per_account = {account: dict(self._settled[account][1]) for account in held}
        for account, status, n in found.counts:
            per_account.setdefault(account, {})[status] = n
        self.counted = OutboxCounts(per_account, found.oldest_queued)
        return self.counted

    def _due(self, account: str, now: float, settled_here: bool, open_now: int) -> bool:
        """Whether ``account``'s settled items may have moved since they were counted."""
        if account not in self._settled or settled_here:
            return True
        counted_at, _ = self._settled[account]
        # a clock set back counts as due, rather than freezing the counts until it is back
        stale = not 0 <= now - counted_at < SETTLED_REFRESH_S
        return stale or open_now < self._open.get(account, 0)
