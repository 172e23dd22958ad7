"""Events of accounts whose session lives in another gateway: each request's events,
less the ones already taken (gateways retry), handed to the core as a live session's
are (docs/ingest.md).

A message or a receipt from the gateway proves its session is open: an account not
connected then is connected first. A gateway whose socket stayed open while the
sidecar restarted never says ``open`` again, and an account that is not connected is
never judged.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from neonize.events import ConnectedEv, MessageEv, ReceiptEv, UndecryptableMessageEv

#: Events only an open session delivers.
_PROOF_OF_OPEN = (MessageEv, UndecryptableMessageEv, ReceiptEv)

#: Message keys remembered per account, for the gateways' retries; the oldest go first.
DEDUPE_KEYS = 20_000


@dataclass(frozen=True, slots=True)
class Taken:
    """What a request's events came to."""

    accepted: int
    duplicates: int


class Ingest:
    """Hands ingest accounts' events to the core (through ``deliver``, which records
    them when recording), each message once."""

    def __init__(
        self,
        accounts: Iterable[str],
        deliver: Callable[[str, Any], None],
        connected: Callable[[str], bool],
    ) -> None:
        self.accounts = frozenset(accounts)
        self._deliver = deliver
        self._connected = connected
        self._seen: dict[str, OrderedDict[Hashable, None]] = {
            a: OrderedDict() for a in self.accounts
        }
        self._lock = threading.Lock()

    def take(self, account_id: str, events: Iterable[tuple[Any, Hashable | None]]) -> Taken:
        """Deliver ``events`` in order; one whose key was taken before is skipped."""
        accepted = duplicates = 0
        seen = self._seen[account_id]
        for event, key in events:
            if key is not None:
                with self._lock:
                    if key in seen:
                        seen.move_to_end(key)
                        duplicates += 1
                        continue
                    seen[key] = None
                    while len(seen) > DEDUPE_KEYS:
                        seen.popitem(last=False)
            if isinstance(event, _PROOF_OF_OPEN) and not self._connected(account_id):
                self._deliver(account_id, ConnectedEv(status=True))
            self._deliver(account_id, event)
            accepted += 1
        return Taken(accepted, duplicates)
