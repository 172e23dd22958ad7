"""Failed bearer tokens: a budget per client address, and one for all clients together.

Each address has a bucket of ``failures`` attempts that refills evenly over
``window`` (10 per minute: ten at once, then one every six seconds); all
addresses together share a bucket of ``global_failures`` that refills the
same way, so no spread of addresses buys more guesses than that. A token is
charged to both before it is checked (so concurrent checks cannot overdraw
them) and given back if it is accepted: only failures cost. A client whose
address or the whole server is out of budget is answered 429 with the seconds
until it may try again, unless its token cannot be guessed (see
:class:`~sidecar.adapters.auth.Authenticator`): a valid strong token is never
refused because of someone else's failures.

Memory is bounded without ever refunding a budget: an address is forgotten
only once its bucket has refilled, and only attempts the global budget let
through fill it, so at most about twice ``global_failures`` addresses are
remembered at a time. IPv6 clients are counted per /64, the block one
subscriber usually holds.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


def client_key(remote: str | None) -> str:
    """The bucket a client's failures go to: its IPv4 address, or its IPv6 /64."""
    if not remote:
        return "unknown"
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote  # a Unix socket's peer, say
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request's standing: admitted (charged when it carried a token), or refused
    by a budget for ``wait`` more seconds."""

    key: str
    wait: float = 0.0
    budget: str = ""  # "address" or "global" when refused
    charged: bool = False

    @property
    def admitted(self) -> bool:
        return not self.budget


class _Bucket:
    __slots__ = ("at", "left")

    def __init__(self, left: float, at: float) -> None:
        self.left = left
        self.at = at


class FailureLimiter:
    """Token buckets of failed attempts: one per client (see :func:`client_key`), one for all."""

    def __init__(
        self,
        failures: int,
        window: float,
        *,
        global_failures: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        total = 10 * failures if global_failures is None else global_failures
        if failures < 1 or not 0 < window < math.inf or total < 1:
            raise ValueError("failures, global_failures and window must be positive and finite")
        self._capacity = float(failures)
        self._global_capacity = float(total)
        self._window = window
        self._clock = clock
        # key -> its bucket, least recently charged first; a key absent is full
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._global = _Bucket(self._global_capacity, clock())
        #: Failed attempts counted, and requests refused by each budget (for /metrics).
        self.failed = 0
        self.refused: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._buckets)

    def _left(self, bucket: _Bucket | None, capacity: float, now: float) -> float:
        if bucket is None:
            return capacity
        return min(capacity, bucket.left + (now - bucket.at) * capacity / self._window)

    def _wait(self, left: float, capacity: float) -> float:
        return 0.0 if left >= 1.0 else (1.0 - left) * self._window / capacity

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again; 0 when it may try now."""
        return self.attempt(key, charge=False).wait

    def attempt(self, key: str, *, charge: bool = True) -> Attempt:
        """Whether ``key`` may have a token checked now; if so and ``charge``, the attempt
        is paid for in advance (:meth:`settle` gives it back when the token is good)."""
        now = self._clock()
        own = self._wait(self._left(self._buckets.get(key), self._capacity, now), self._capacity)
        if own > 0:
            return Attempt(key, own, "address")
        common = self._left(self._global, self._global_capacity, now)
        if common < 1.0:
            return Attempt(key, self._wait(common, self._global_capacity), "global")
        if not charge:
            return Attempt(key)
        self._global.left, self._global.at = common - 1.0, now
        left = self._left(self._buckets.pop(key, None), self._capacity, now)
        self._buckets[key] = _Bucket(left - 1.0, now)
        self._forget(now)
        return Attempt(key, charged=True)

    def settle(self, attempt: Attempt, *, accepted: bool) -> None:
        """Count the outcome: an accepted token costs nothing, a refused one stays charged."""
        if not accepted:
            if not attempt.admitted:
                self.refused[attempt.budget] += 1
            elif attempt.charged:
                self.failed += 1
            return
        if not attempt.charged:
            return
        now = self._clock()
        common = self._left(self._global, self._global_capacity, now)
        self._global.left, self._global.at = min(self._global_capacity, common + 1.0), now
        bucket = self._buckets.pop(attempt.key, None)
        left = self._left(bucket, self._capacity, now) + 1.0
        if bucket is not None and left < self._capacity:
            self._buckets[attempt.key] = _Bucket(left, now)

    def _forget(self, now: float) -> None:
        """Drop the buckets that have refilled: their last charge is a window old."""
        while self._buckets:
            key, bucket = next(iter(self._buckets.items()))
            if now - bucket.at < self._window:
                break
            del self._buckets[key]
