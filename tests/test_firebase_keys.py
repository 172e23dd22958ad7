"""The signing-certificate cache under a certificate URL that hangs or fails, against a
real local HTTP server: a valid user whose key is cached never waits for a fetch, a bad
token cannot make a fetch of its own, and a failing URL is asked once per back-off."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sidecar.adapters.auth import FirebaseVerifier
from sidecar.adapters.firebase_keys import BACKOFF_S, REFETCH_S, REFRESH_AFTER_S, SigningKeys

from .support.clock import SettableClock
from .support.firebase import PROJECT, CertServer, KeyPair

#: A deadlock guard only: each wait below ends on an event long before it.
GUARD_S = 10.0


@pytest.fixture(scope="module")
def keys() -> KeyPair:
    return KeyPair("key-1")


@pytest.fixture
async def server(keys: KeyPair, aiohttp_server: Any) -> AsyncIterator[tuple[CertServer, str]]:
    certs = CertServer(keys)
    running = await aiohttp_server(certs.app())
    yield certs, str(running.make_url("/certs"))
    certs.release.set()  # let a hanging request end before the server closes


def verifier(url: str, clock: SettableClock, fetch_timeout: float = 10.0) -> FirebaseVerifier:
    return FirebaseVerifier(
        PROJECT,
        certs_url=url,
        allowed_uids=["uid-alice"],
        keys=SigningKeys(url, clock=clock, fetch_timeout=fetch_timeout),
    )


_STRANGERS: dict[str, KeyPair] = {}


def stranger(kid: str) -> KeyPair:
    """A key pair the certificate URL does not serve (made once per key id)."""
    return _STRANGERS.setdefault(kid, KeyPair(kid))


def bad_tokens(keys: KeyPair) -> list[str]:
    """What an unauthenticated client sends: an unknown key id, junk, a forged signature
    under the known key id, another project's token."""
    return [
        stranger("kid-nobody-knows").token(),
        "a.b.c",
        _impostor(keys),
        keys.token(aud="another-project"),
    ]


def _impostor(keys: KeyPair) -> str:
    header, payload, _ = keys.token().split(".")
    _, _, signature = stranger("impostor").token().split(".")
    return f"{header}.{payload}.{signature}"


async def until(condition: Any) -> None:
    async with asyncio.timeout(GUARD_S):
        while not condition():
            await asyncio.sleep(0.005)


async def test_a_hanging_refresh_does_not_hold_up_a_user_whose_key_is_cached(
    keys: KeyPair, server: tuple[CertServer, str]
) -> None:
    certs, url = server
    clock = SettableClock()
    check = verifier(url, clock)
    assert await check.verify(keys.token()) is not None
    clock.now += REFRESH_AFTER_S + 1  # the keys are due for a refresh...
    certs.mode = "hang"  # ...and the URL hangs
    bad = [asyncio.create_task(check.verify(t)) for t in bad_tokens(keys)]
    await until(lambda: certs.hanging == 1)
    async with asyncio.timeout(GUARD_S):
        user = await check.verify(keys.token())
    assert user is not None
    assert user.id == "uid-alice"
    assert certs.hanging == 1  # answered while the refresh still hangs
    assert certs.requests == 2  # the first fetch, and one refresh for everyone
    assert check.keys.fetches == 2
    certs.mode = "serve"
    certs.release.set()
    results = await asyncio.gather(*bad)
    assert results == [None] * len(bad)
    assert certs.requests == 2


async def test_a_hanging_first_fetch_is_made_once_and_then_fails_fast(
    keys: KeyPair, server: tuple[CertServer, str]
) -> None:
    certs, url = server
    clock = SettableClock()
    certs.mode = "hang"
    check = verifier(url, clock, fetch_timeout=0.2)
    waiting = [asyncio.create_task(check.verify(t)) for t in [*bad_tokens(keys), keys.token()]]
    async with asyncio.timeout(GUARD_S):
        results = await asyncio.gather(*waiting)
    assert results == [None] * len(waiting)  # no key: nothing can be verified
    assert certs.requests == 1  # one fetch in flight at a time, shared by every request
    for token in [*bad_tokens(keys), keys.token()] * 5:  # within the back-off: no fetch, no wait
        assert await check.verify(token) is None
    assert certs.requests == 1
    assert check.keys.fetches == 1
    certs.mode = "serve"
    certs.release.set()
    clock.now += BACKOFF_S[0]
    assert await check.verify(keys.token()) is not None  # the back-off over, a fetch again
    assert certs.requests == 2


async def test_a_failing_certificate_url_is_fetched_once_per_back_off(
    keys: KeyPair, server: tuple[CertServer, str]
) -> None:
    certs, url = server
    certs.mode = "fail"
    check = FirebaseVerifier(PROJECT, certs_url=url, allowed_uids=["uid-alice"])
    results = await asyncio.gather(*(check.verify(keys.token()) for _ in range(10)))
    assert results == [None] * 10
    for token in bad_tokens(keys) * 5:
        assert await check.verify(token) is None
    assert certs.requests == 1


async def test_unknown_key_ids_fetch_at_most_once_per_interval(
    keys: KeyPair, server: tuple[CertServer, str]
) -> None:
    certs, url = server
    clock = SettableClock()
    check = verifier(url, clock)
    assert await check.verify(keys.token()) is not None
    strangers = [stranger(f"kid-{i}") for i in range(3)]
    for _ in range(10):
        for other in strangers:
            assert await check.verify(other.token()) is None
    assert certs.requests == 1  # the keys are fresh: an unknown key id is no reason to fetch
    clock.now += REFETCH_S
    results = await asyncio.gather(*(check.verify(s.token()) for s in strangers * 10))
    assert results == [None] * 30
    assert certs.requests == 2  # one fetch for all of them
    assert await check.verify(keys.token()) is not None


async def test_a_rotated_key_is_fetched_for_the_user_who_needs_it(
    keys: KeyPair, server: tuple[CertServer, str]
) -> None:
    certs, url = server
    clock = SettableClock()
    check = verifier(url, clock)
    assert await check.verify(keys.token()) is not None
    rotated = KeyPair("key-2")
    certs.keys.append(rotated)
    clock.now += REFETCH_S
    assert await check.verify(rotated.token()) is not None
    assert certs.requests == 2


async def test_a_client_that_goes_away_does_not_cancel_the_fetch(
    keys: KeyPair, server: tuple[CertServer, str]
) -> None:
    certs, url = server
    certs.mode = "hang"
    check = verifier(url, SettableClock())
    gone = asyncio.create_task(check.verify(keys.token()))
    await until(lambda: certs.hanging == 1)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    certs.mode = "serve"
    certs.release.set()
    async with asyncio.timeout(GUARD_S):
        assert await check.verify(keys.token()) is not None
    assert certs.requests == 1


async def test_keys_stop_serving_an_hour_after_the_url_stopped_answering(
    keys: KeyPair, server: tuple[CertServer, str]
) -> None:
    certs, url = server
    clock = SettableClock()
    check = verifier(url, clock)
    assert await check.verify(keys.token()) is not None
    certs.mode = "fail"
    clock.now += REFRESH_AFTER_S
    assert await check.verify(keys.token()) is not None  # cached; a refresh starts, and fails
    await until(lambda: not check.keys.fetching)
    assert certs.requests == 2
    clock.now += 3600
    assert await check.verify(keys.token()) is None
