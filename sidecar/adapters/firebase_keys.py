"""The signing certificates of Firebase ID tokens, fetched without making anyone wait.

A certificate URL that hangs or fails must cost one fetch per back-off, not
one per request, and a request whose key is cached must never wait for a
fetch. So: one fetch at a time, run as a task of its own (no lock is held
across the network); cached keys serve while it runs and for an hour after
the URL stopped answering; after a failure no fetch starts until a back-off
(5 s, doubling to 60 s) has passed, and a key id the cache does not know
fetches again at most every 30 s. A request that needs a key the cache lacks
and cannot fetch now is told so at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable

import aiohttp

log = logging.getLogger(__name__)

GOOGLE_CERTS_URL = (
    "https://www.googleapis.com/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com"
)
#: Keys this old are refreshed, in the background of the requests that use them.
REFRESH_AFTER_S = 300.0
#: Keys this old are no longer used (the URL has failed for this long).
MAX_AGE_S = 3600.0
#: A key id the cache lacks fetches again at most this often.
REFETCH_S = 30.0
#: After a failed fetch, the first wait and the longest.
BACKOFF_S = (5.0, 60.0)
FETCH_TIMEOUT_S = 10.0

FetchCerts = Callable[[str], Awaitable[dict[str, str]]]


async def fetch_certs(url: str) -> dict[str, str]:
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
        response.raise_for_status()
        certs: dict[str, str] = await response.json(content_type=None)
    return certs


class SigningKeys:
    """Key id -> PEM certificate, as the certificate URL last gave them."""

    def __init__(
        self,
        url: str,
        fetch: FetchCerts = fetch_certs,
        *,
        fetch_timeout: float = FETCH_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._fetch = fetch
        self._timeout = fetch_timeout
        self._clock = clock
        self._keys: dict[str, str] = {}
        self._fetched_at = -math.inf
        self._not_before = -math.inf  # no fetch starts before this
        self._backoff = 0.0
        self._fetching: asyncio.Task[None] | None = None
        #: Fetches started (for tests: what a burst of bad tokens cost).
        self.fetches = 0

    @property
    def fetching(self) -> bool:
        return self._fetching is not None

    async def certificate(self, kid: str, *, may_fetch: bool = True) -> str | None:
        """The certificate of ``kid``; None, without waiting, when the cache lacks it and
        no fetch may start now. Only a request that lacks its key waits for a fetch."""
        now = self._clock()
        age = now - self._fetched_at
        cert = self._keys.get(kid) if age < MAX_AGE_S else None
        if cert is not None:
            if may_fetch and age >= REFRESH_AFTER_S:
                self._start(now)  # this request goes on with the cached key
            return cert
        task = self._start(now) if may_fetch else None
        if task is None:
            return None
        await asyncio.shield(task)  # a client that goes away does not cancel the fetch
        if self._clock() - self._fetched_at >= MAX_AGE_S:
            return None
        return self._keys.get(kid)

    def _start(self, now: float) -> asyncio.Task[None] | None:
        if self._fetching is None and now >= self._not_before:
            self.fetches += 1
            self._fetching = asyncio.create_task(self._refresh(), name="firebase-certs")
        return self._fetching

    async def _refresh(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                certs = await self._fetch(self._url)
            if not certs or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in certs.items()
            ):
                raise ValueError("not a mapping of key ids to certificates")
        except Exception as exc:
            first, longest = BACKOFF_S
            self._backoff = min(longest, max(first, self._backoff * 2))
            self._not_before = self._clock() + self._backoff
            log.warning(
                "cannot fetch Firebase signing certificates (%s); next try in %.0f s",
                type(exc).__name__,
                self._backoff,
            )
        else:
            now = self._clock()
            self._keys, self._fetched_at = dict(certs), now
            self._backoff, self._not_before = 0.0, now + REFETCH_S
        finally:
            self._fetching = None

    async def close(self) -> None:
        """Cancel a fetch still running (at shutdown)."""
        task = self._fetching
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
