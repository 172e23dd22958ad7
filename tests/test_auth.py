"""Authentication with real signed Firebase-style ID tokens, from a test key pair whose
certificate a local HTTP endpoint serves, exactly as Google's certificate URL would."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt
from pydantic import SecretStr

from sidecar.adapters.auth import Authenticator, FirebaseVerifier, StaticTokens

PROJECT = "wa-sidecar-test"


class KeyPair:
    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "securetoken.test")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .sign(self.key, hashes.SHA256())
        )
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        pem = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.signer = crypt.RSASigner.from_string(pem, key_id=kid)  # type: ignore[no-untyped-call]

    def token(self, **overrides: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": f"https://securetoken.google.com/{PROJECT}",
            "aud": PROJECT,
            "auth_time": now - 60,
            "user_id": "uid-alice",
            "sub": "uid-alice",
            "iat": now - 60,
            "exp": now + 3600,
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        encoded: bytes = jwt.encode(self.signer, claims)  # type: ignore[no-untyped-call]
        return encoded.decode()


@pytest.fixture(scope="module")
def keys() -> KeyPair:
    return KeyPair("key-1")


@pytest.fixture
async def certs_url(keys: KeyPair, aiohttp_server: Any) -> str:
    app = web.Application()

    async def certs(_request: web.Request) -> web.Response:
        return web.Response(
            text=json.dumps({keys.kid: keys.cert_pem}), content_type="application/json"
        )

    app.router.add_get("/certs", certs)
    server = await aiohttp_server(app)
    return str(server.make_url("/certs"))


def verifier(certs_url: str, **options: Any) -> FirebaseVerifier:
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
    ],
)
async def test_refused_tokens(
    keys: KeyPair, certs_url: str, case: str, claims: dict[str, Any]
) -> None:
    assert await verifier(certs_url).verify(keys.token(**claims)) is None, case


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


async def test_unreachable_certificates_refuse_rather_than_crash(keys: KeyPair) -> None:
    assert await verifier("http://127.0.0.1:9/certs").verify(keys.token()) is None
