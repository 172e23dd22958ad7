"""Authentication with real signed Firebase-style ID tokens, from a test key pair whose
certificate a local HTTP endpoint serves, exactly as Google's certificate URL would."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from pydantic import SecretStr

from sidecar.adapters.auth import Authenticator, FirebaseVerifier, Principal, StaticTokens
from sidecar.app import serve
from sidecar.compose import Assembly
from sidecar.core.repair import RecordingControl

from .support.config import TOKEN
from .support.firebase import PROJECT, CertServer, KeyPair

STRONG = "s" * 32  # long enough to be taken as unguessable


@pytest.fixture(scope="module")
def keys() -> KeyPair:
    return KeyPair("key-1")


@pytest.fixture
async def certs_url(keys: KeyPair, aiohttp_server: Any) -> str:
    server = await aiohttp_server(CertServer(keys).app())
    return str(server.make_url("/certs"))


def verifier(certs_url: str, **options: Any) -> FirebaseVerifier:
    """A verifier that allows uid-alice unless told otherwise."""
    if "required_claim" not in options:
        options.setdefault("allowed_uids", ["uid-alice"])
    return FirebaseVerifier(PROJECT, certs_url=certs_url, **options)


async def test_valid_token_names_the_user(keys: KeyPair, certs_url: str) -> None:
    principal = await verifier(certs_url).verify(keys.token())
    assert principal is not None
    assert (principal.kind, principal.id) == ("firebase", "uid-alice")


@pytest.mark.parametrize(
    ("case", "claims"),
    [
        ("expired", {"iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}),
        ("wrong project", {"aud": "someone-elses-project"}),
        ("wrong issuer", {"iss": "https://securetoken.google.com/someone-elses-project"}),
        ("no subject", {"sub": None}),
        ("subject too long", {"sub": "u" * 129}),
    ],
)
async def test_refused_tokens(
    keys: KeyPair, certs_url: str, case: str, claims: dict[str, Any]
) -> None:
    if "sub" in claims and claims["sub"] is not None:
        options: dict[str, Any] = {"allowed_uids": [claims["sub"]]}
    else:
        options = {}
    assert await verifier(certs_url, **options).verify(keys.token(**claims)) is None, case


async def test_wrong_signature_is_refused(keys: KeyPair, certs_url: str) -> None:
    impostor = KeyPair(keys.kid)  # same key id, another key: the served certificate does not match
    assert await verifier(certs_url).verify(impostor.token()) is None
    tampered = keys.token()
    header, payload, signature = tampered.split(".")
    assert await verifier(certs_url).verify(f"{header}.{payload}.{signature[::-1]}") is None


async def test_required_claim_and_allow_list(keys: KeyPair, certs_url: str) -> None:
    claimed = verifier(certs_url, required_claim=("whatsapp_admin", True))
    assert await claimed.verify(keys.token()) is None  # missing claim
    assert await claimed.verify(keys.token(whatsapp_admin=False)) is None
    assert await claimed.verify(keys.token(whatsapp_admin=True)) is not None
    listed = verifier(certs_url, allowed_uids=["uid-bob"])
    assert await listed.verify(keys.token()) is None
    assert await listed.verify(keys.token(sub="uid-bob", user_id="uid-bob")) is not None


async def test_nobody_is_accepted_without_an_allow_list_or_a_claim(
    keys: KeyPair, certs_url: str
) -> None:
    anyone = FirebaseVerifier(PROJECT, certs_url=certs_url)
    assert await anyone.verify(keys.token()) is None
    assert not anyone.admits_anyone
    assert anyone.keys.fetches == 0  # refused before any certificate is fetched
    weaknesses = Authenticator(StaticTokens(()), anyone).weaknesses()
    assert any("no Firebase user is accepted" in w for w in weaknesses)


@pytest.mark.parametrize("how", ["allow-listed uid", "required claim"])
async def test_anonymous_sign_ins_are_never_accepted(
    keys: KeyPair, certs_url: str, how: str
) -> None:
    options: dict[str, Any] = (
        {"allowed_uids": ["uid-alice"]}
        if how == "allow-listed uid"
        else {"required_claim": ("whatsapp_admin", True)}
    )
    check = verifier(certs_url, **options)
    anonymous = {"sign_in_provider": "anonymous", "identities": {}}
    assert await check.verify(keys.token(whatsapp_admin=True, firebase=anonymous)) is None
    assert await check.verify(keys.token(whatsapp_admin=True)) is not None  # a password user


async def test_authenticator_static_firebase_and_none(keys: KeyPair, certs_url: str) -> None:
    auth = Authenticator(StaticTokens([SecretStr("machine-token")]), verifier(certs_url))
    static = await auth.authenticate("Bearer machine-token")
    assert static is not None
    assert static.kind == "static"
    assert "machine-token" not in static.id  # a fingerprint, never the token
    firebase = await auth.authenticate(f"Bearer {keys.token()}")
    assert firebase is not None
    assert firebase.id == "uid-alice"
    assert await auth.authenticate(None) is None
    assert await auth.authenticate("Bearer nope") is None
    assert await auth.authenticate(f"Basic {keys.token()}") is None


async def test_over_budget_only_unguessable_tokens_are_accepted(
    keys: KeyPair, certs_url: str
) -> None:
    """``limited``: a strong static token, or a Firebase token whose key is cached."""
    firebase = verifier(certs_url)
    auth = Authenticator(StaticTokens([SecretStr("machine-token"), SecretStr(STRONG)]), firebase)
    assert await auth.authenticate(f"Bearer {keys.token()}", limited=True) is None  # no key yet
    assert firebase.keys.fetches == 0  # and none fetched for a client over budget
    assert await auth.authenticate(f"Bearer {keys.token()}") is not None
    assert await auth.authenticate(f"Bearer {keys.token()}", limited=True) is not None
    assert await auth.authenticate(f"Bearer {STRONG}", limited=True) is not None
    assert await auth.authenticate("Bearer machine-token", limited=True) is None  # guessable
    assert await auth.authenticate("Bearer machine-token") is not None
    assert firebase.keys.fetches == 1


def test_weak_settings_are_named_for_the_start_up_warning() -> None:
    weak = Authenticator(
        StaticTokens([SecretStr("short-token"), SecretStr(STRONG)]),
        FirebaseVerifier(PROJECT, certs_url="http://certs.test/", allowed_uids=["u"]),
    )
    found = weak.weaknesses()
    assert len(found) == 2
    assert found[0].startswith("1 static token(s) shorter than 32 characters")
    assert "certs_url is not https" in found[1]
    assert "short-token" not in " ".join(found)
    strong = Authenticator(
        StaticTokens([SecretStr(STRONG)]),
        FirebaseVerifier(PROJECT, allowed_uids=["u"]),  # Google's https URL
    )
    assert strong.weaknesses() == []


@pytest.mark.parametrize(
    "uid",
    [
        "uid-alice\n2025-01-01 00:00:00,000 INFO sidecar.core.repair forged",
        "uid\r\x1b[2Kforged",
        "uid\u2028forged\u202e",
        "uid\\nforged",  # a backslash and an n: must not name the same user as a newline
    ],
)
async def test_no_user_id_can_forge_a_log_line(keys: KeyPair, certs_url: str, uid: str) -> None:
    principal = await verifier(certs_url, allowed_uids=[uid]).verify(keys.token(sub=uid))
    assert principal is not None
    assert principal.id.isascii()
    assert principal.id.isprintable()
    assert principal.id.encode().decode("unicode_escape") == uid  # still names the user exactly


def test_every_principal_name_is_printable() -> None:
    assert Principal("firebase", "a\nb").id == "a\\nb"
    assert Principal("firebase", "a\\nb").id == "a\\\\nb"
    assert Principal("static", "token:0123456789ab").id == "token:0123456789ab"


async def test_unreachable_certificates_refuse_rather_than_crash(keys: KeyPair) -> None:
    assert await verifier("http://127.0.0.1:9/certs").verify(keys.token()) is None


async def test_weak_auth_settings_are_warned_about_at_start_up(
    assembly: Assembly, caplog: pytest.LogCaptureFixture
) -> None:
    async def no_events(_stop: asyncio.Event) -> None:
        return None

    caplog.set_level(logging.WARNING, logger="sidecar.app")
    await serve(assembly, no_events, RecordingControl())  # serves, and stops when the source ends
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # the tokens_file fixture's two tokens are short; the tokens themselves are never named
    assert any(w.startswith("auth: 2 static token(s) shorter than 32") for w in warnings)
    assert not any(TOKEN in w or "second-token" in w for w in warnings)
