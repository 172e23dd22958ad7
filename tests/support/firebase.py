"""Firebase-style ID tokens signed by a test key pair, and a local HTTP server that serves
(or hangs on, or fails) the signing certificates, as Google's certificate URL would."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

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
            "firebase": {"sign_in_provider": "password", "identities": {}},
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        encoded: bytes = jwt.encode(self.signer, claims)  # type: ignore[no-untyped-call]
        return encoded.decode()


class CertServer:
    """Serves ``keys``' certificates at ``/certs``; ``mode`` makes it hang or fail instead.
    ``requests`` counts every request that arrived, ``hanging`` those held right now."""

    def __init__(self, *keys: KeyPair) -> None:
        self.keys = list(keys)
        self.mode = "serve"  # or "hang", "fail"
        self.requests = 0
        self.hanging = 0
        self.release = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/certs", self._certs)
        return app

    async def _certs(self, _request: web.Request) -> web.Response:
        self.requests += 1
        if self.mode == "hang":
            self.hanging += 1
            try:
                await self.release.wait()
            finally:
                self.hanging -= 1
        if self.mode == "fail":
            return web.Response(status=503, text="unavailable")
        body = {k.kid: k.cert_pem for k in self.keys}
        return web.Response(text=json.dumps(body), content_type="application/json")
