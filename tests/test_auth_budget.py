"""The failed-token budgets: per client address and for all clients together. No spread
of addresses buys more checked guesses than the global budget, and a token that cannot be
guessed is never refused because of someone else's failures."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from pydantic import SecretStr

from sidecar.adapters.auth import Authenticator, FirebaseVerifier, Principal, StaticTokens
from sidecar.adapters.firebase_keys import REFETCH_S, SigningKeys
from sidecar.adapters.http import READY
from sidecar.adapters.http.middleware import require_token
from sidecar.adapters.ratelimit import FailureLimiter
from sidecar.compose import Assembly, build_app, build_repairs
from sidecar.core.repair import RecordingControl

from .support.clock import SettableClock
from .support.config import TOKEN, AssemblyFactory, ConfigFactory
from .support.firebase import PROJECT, CertServer, KeyPair

STRONG = "strong-token-" + "x" * 30  # 43 characters, as secrets.token_urlsafe(32) gives
ACCOUNTS = "/api/whatsapp/accounts"


class CountingAuthenticator(Authenticator):
    """Counts the full checks (``limited`` ones accept only strong tokens, quietly)."""

    def __init__(self, *tokens: str, firebase: FirebaseVerifier | None = None) -> None:
        super().__init__(StaticTokens([SecretStr(t) for t in tokens]), firebase)
        self.checks = 0

    async def authenticate(self, header: str | None, *, limited: bool = False) -> Principal | None:
        self.checks += not limited
        return await super().authenticate(header, limited=limited)


async def test_ten_thousand_and_one_64s_get_no_more_checks_than_the_global_budget(
    assembly: Assembly,
) -> None:
    limiter = FailureLimiter(
        10, 60, clock=SettableClock()
    )  # the global budget: 10 addresses' worth
    auth = CountingAuthenticator(TOKEN, STRONG)
    app = build_app(assembly, auth=auth, limiter=limiter)
    base = make_mocked_request("GET", ACCOUNTS, app=app)

    async def ok(_request: web.Request) -> web.StreamResponse:
        return web.json_response({"accounts": []})

    async def send(remote: str, token: str) -> web.StreamResponse:
        request = base.clone(remote=remote, headers={"Authorization": f"Bearer {token}"})
        return await require_token(request, ok)

    statuses: Counter[int] = Counter()
    for block in range(10_001):  # each its own /64, as a /48 has 65,536 of them
        statuses[(await send(f"2001:db8:{block:x}::1", f"guess-{block}")).status] += 1
    assert statuses == {401: 100, 429: 10_001 - 100}  # 100 answers, then 429 for everyone
    assert auth.checks == 100  # no more tokens checked in full than the budget
    assert limiter.failed == 100
    assert limiter.refused == {"global": 10_001 - 100}
    assert len(limiter) == 100  # memory follows the budget, not the addresses tried
    # a strong token is answered at once, from any address; a short one waits like a guess
    assert (await send("2001:db8:ffff::1", STRONG)).status == 200
    assert (await send("2001:db8::1", STRONG)).status == 200
    limited = await send("2001:db8:ffff::1", TOKEN)
    assert limited.status == 429
    assert limited.headers["Retry-After"] == "1"  # the global budget earns one back per 0.6 s


def test_no_crowd_of_addresses_refunds_a_budget() -> None:
    """Addresses are forgotten only once their bucket has refilled, never to make room."""
    clock = SettableClock()
    limiter = FailureLimiter(10, 60, global_failures=100_000, clock=clock)
    for _ in range(10):
        limiter.settle(limiter.attempt("192.0.2.1"), accepted=False)
    for block in range(10_001):
        limiter.settle(limiter.attempt(f"2001:db8:{block:x}::/64"), accepted=False)
    assert limiter.attempt("192.0.2.1").budget == "address"
    assert len(limiter) == 10_002
    clock.now += 60
    limiter.settle(limiter.attempt("192.0.2.2"), accepted=False)
    assert len(limiter) == 1  # all refilled, all forgotten


@pytest.fixture
async def serve(assembly: Assembly) -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []

    async def start(auth: Authenticator, limiter: FailureLimiter) -> str:
        app = build_app(
            assembly,
            auth=auth,
            repairs=build_repairs(assembly, RecordingControl()),
            limiter=limiter,
        )
        runner = web.AppRunner(app)
        runners.append(runner)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        app[READY].set()
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def get(base: str, token: str | None, source: str = "127.0.0.1") -> aiohttp.ClientResponse:
    """GET the accounts from ``source`` (Linux answers for all of 127/8: one client each)."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(base + ACCOUNTS, headers=headers) as response,
    ):
        await response.read()
        return response


async def test_a_strong_token_is_never_refused_for_someone_elses_failures(serve: Any) -> None:
    """One address behind a shared ingress fails over and over; the operators behind the
    same ingress still get in with their strong token, and so does everyone once the
    failures come from everywhere."""
    clock = SettableClock()
    auth = CountingAuthenticator(TOKEN, STRONG)
    base = await serve(auth, FailureLimiter(3, 60, clock=clock))  # 30 for all together
    for guess in ("guess-1", "guess-2", "guess-3"):
        assert (await get(base, guess)).status == 401
    checks = auth.checks
    assert (await get(base, "guess-4")).status == 429  # this address now waits...
    assert (await get(base, STRONG)).status == 200  # ...but not its strong token
    assert (await get(base, TOKEN)).status == 429  # a short token waits: it could be guessed
    assert auth.checks == checks  # and no guess was checked in full meanwhile
    spread = [
        (await get(base, guess, f"127.0.0.{host}")).status  # the rest spent from elsewhere
        for host in range(2, 12)
        for guess in ("guess-a", "guess-b", "guess-c")
    ]
    assert spread == [401] * 27 + [429] * 3
    fresh = "127.0.0.12"
    refused = await get(base, "guess-5", fresh)
    assert refused.status == 429  # an address that never failed: the global budget is spent
    assert refused.headers["Retry-After"] == "2"  # 30 a minute: one more try every 2 s
    assert (await get(base, STRONG, fresh)).status == 200
    clock.now += 2
    assert (await get(base, "guess-6", fresh)).status == 401
    async with aiohttp.ClientSession() as session, session.get(base + "/metrics") as metrics:
        text = await metrics.text()
    assert "whatsapp_http_auth_failures_total 31.0" in text  # 3 + 27 + guess-6
    assert 'whatsapp_http_auth_rate_limited_total{budget="address"} 2.0' in text
    assert 'whatsapp_http_auth_rate_limited_total{budget="global"} 4.0' in text
    # no client's address: the one 127.0.0.1 is the sidecar's own link (links_info)
    assert [line for line in text.splitlines() if "127.0.0" in line] == [
        line for line in text.splitlines() if line.startswith("whatsapp_sidecar_links_info{")
    ]


async def test_a_firebase_user_over_budget_is_answered_with_the_cached_key(
    serve: Any, aiohttp_server: Any
) -> None:
    keys = KeyPair("key-1")
    certs = CertServer(keys)
    url = str((await aiohttp_server(certs.app())).make_url("/certs"))
    keys_clock = SettableClock()
    firebase = FirebaseVerifier(
        PROJECT,
        certs_url=url,
        allowed_uids=["uid-alice"],
        keys=SigningKeys(url, clock=keys_clock),
    )
    auth = CountingAuthenticator(TOKEN, firebase=firebase)
    base = await serve(auth, FailureLimiter(2, 60, clock=SettableClock()))
    assert (await get(base, keys.token())).status == 200  # the key is fetched, and cached
    stranger = KeyPair("kid-nobody-knows")
    for _ in range(2):
        assert (await get(base, stranger.token())).status == 401
    keys_clock.now += REFETCH_S  # an unknown key id could fetch again now...
    for _ in range(5):  # ...but not from a client over its budget
        assert (await get(base, stranger.token())).status == 429
    assert (await get(base, keys.token())).status == 200  # the user's key is cached: 200
    assert certs.requests == 1


async def test_the_global_budget_comes_from_the_config(
    make_config: ConfigFactory, make_assembly: AssemblyFactory, tokens_file: Any, serve: Any
) -> None:
    loaded = make_config(
        auth={
            "tokens_file": str(tokens_file),
            "rate_limit": {"failures": 5, "global_failures": 2, "window": "1m"},
        }
    )
    assert loaded.config.auth is not None
    assert loaded.config.auth.rate_limit.global_failures == 2
    app = build_app(make_assembly(loaded))
    base = make_mocked_request("GET", ACCOUNTS, app=app)

    async def ok(_request: web.Request) -> web.StreamResponse:
        return web.json_response({})

    statuses = []
    for i in range(3):
        request = base.clone(remote=f"192.0.2.{i}", headers={"Authorization": f"Bearer g{i}"})
        statuses.append((await require_token(request, ok)).status)
    assert statuses == [401, 401, 429]
