"""Failed bearer tokens, counted per client address: past a budget, the address waits.

Each address has a bucket of ``failures`` attempts that refills evenly over
``window`` (10 per minute: ten at once, then one every six seconds). A
failed attempt takes one; an address with less than one left is answered
429 with the seconds until it may try again, before its token is even
looked at, so a guess made while waiting tells the guesser nothing.
Successful attempts cost nothing, and other addresses are not affected.

Memory is bounded: an address whose bucket has refilled is forgotten, and
beyond ``max_addresses`` the address that failed longest ago goes first.
IPv6 clients are counted per /64, the block one subscriber usually holds.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

#: Addresses remembered at most; an attacker with more addresses than this
#: only pushes out the oldest entries (its own among them).
MAX_ADDRESSES = 10_000


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


class FailureLimiter:
    """Token buckets of failed attempts, keyed by client (see :func:`client_key`)."""

    def __init__(
        self,
        failures: int,
        window: float,
        *,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1 or not 0 < window < math.inf or max_addresses < 1:
            raise ValueError("failures, window and max_addresses must be positive and finite")
        self._capacity = float(failures)
        self._per_second = failures / window
        self._window = window
        self._max = max_addresses
        self._clock = clock
        # key -> (attempts left, when that was counted); oldest failure first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        #: Failed attempts counted, and requests refused because of them (for /metrics).
        self.failed = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def _left(self, key: str, now: float) -> float:
        entry = self._buckets.get(key)
        if entry is None:
            return self._capacity
        left, at = entry
        return min(self._capacity, left + (now - at) * self._per_second)

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again; 0 when it may try now."""
        left = self._left(key, self._clock())
        return 0.0 if left >= 1.0 else (1.0 - left) / self._per_second

    def check(self, key: str) -> float:
        """Like :meth:`retry_after`, counting a refusal when the answer is not 0."""
        wait = self.retry_after(key)
        if wait > 0:
            self.refused += 1
        return wait

    def record_failure(self, key: str) -> None:
        now = self._clock()
        left = self._left(key, now)
        self._buckets.pop(key, None)
        self._buckets[key] = (max(0.0, left - 1.0), now)
        self.failed += 1
        self._forget(now)

    def _forget(self, now: float) -> None:
        """Drop buckets that have refilled (their last failure is a window old), then
        the oldest ones while there are too many."""
        while self._buckets:
            key, (_, at) = next(iter(self._buckets.items()))
            if now - at < self._window and len(self._buckets) <= self._max:
                break
            del self._buckets[key]


class LimiterCollector(Collector):
    """Two process-wide counters; the address is never a label."""

    def __init__(self, limiter: FailureLimiter) -> None:
        self._limiter = limiter

    def collect(self) -> Iterator[CounterMetricFamily]:
        failed = CounterMetricFamily(
            "whatsapp_http_auth_failures",
            "Requests to /api/ with a bearer token that was not accepted.",
        )
        failed.add_metric((), self._limiter.failed)
        refused = CounterMetricFamily(
            "whatsapp_http_auth_rate_limited",
            "Requests to /api/ refused with 429: their address failed too often.",
        )
        refused.add_metric((), self._limiter.refused)
        yield from (failed, refused)
