"""Who may use the account API: static bearer tokens and Firebase ID tokens.

Static tokens (for machines) are compared in constant time against every
configured token. Firebase ID tokens (for people using the existing app's
login) are verified with Google's own library against the project's
signing certificates, fetched from a URL the config may override (tests
serve their own keys). An optional allow-list of user ids, or a required
custom claim, narrows who among the project's users may act.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
from google.auth import jwt
from pydantic import SecretStr

log = logging.getLogger(__name__)

GOOGLE_CERTS_URL = (
    "https://www.googleapis.com/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com"
)
CERTS_TTL_S = 300.0


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request, as the audit log names them (never the token itself)."""

    kind: str  # "static" or "firebase"
    id: str


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class StaticTokens:
    """Only SHA-256 digests are kept and compared: every comparison is of 32 bytes
    with 32 bytes, in constant time, against every configured token, so how long a
    refusal takes says nothing about a token's content or length."""

    def __init__(self, tokens: Iterable[SecretStr]) -> None:
        self._digests = [_digest(t.get_secret_value()) for t in tokens]

    @property
    def configured(self) -> bool:
        return bool(self._digests)

    def match(self, candidate: str) -> Principal | None:
        presented = _digest(candidate)
        found: bytes | None = None
        for digest in self._digests:
            if hmac.compare_digest(presented, digest):
                found = digest
        if found is None:
            return None
        # the audit log's fingerprint: the first 12 hex digits of the token's SHA-256
        return Principal("static", "token:" + found.hex()[:12])


FetchCerts = Callable[[str], Awaitable[dict[str, str]]]


async def fetch_certs(url: str) -> dict[str, str]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
        response.raise_for_status()
        certs: dict[str, str] = await response.json(content_type=None)
    return certs


class FirebaseVerifier:
    def __init__(
        self,
        project_id: str,
        *,
        certs_url: str = GOOGLE_CERTS_URL,
        allowed_uids: Iterable[str] = (),
        required_claim: tuple[str, Any] | None = None,
        fetch: FetchCerts = fetch_certs,
    ) -> None:
        self.project_id = project_id
        self._certs_url = certs_url
        self._allowed = frozenset(allowed_uids)
        self._required_claim = required_claim
        self._fetch = fetch
        self._certs: dict[str, str] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def _current_certs(self) -> dict[str, str]:
        async with self._lock:
            if not self._certs or time.monotonic() - self._fetched_at > CERTS_TTL_S:
                self._certs = await self._fetch(self._certs_url)
                self._fetched_at = time.monotonic()
            return self._certs

    async def verify(self, token: str) -> Principal | None:
        """The user behind a valid ID token of this project, or None (the reason is logged)."""
        try:
            certs = await self._current_certs()
        except Exception as exc:
            log.warning("cannot fetch Firebase signing certificates: %s", type(exc).__name__)
            return None
        try:
            claims: dict[str, Any] = jwt.decode(  # type: ignore[no-untyped-call]
                token, certs=certs, audience=self.project_id
            )
        except Exception as exc:  # google-auth raises several kinds for bad tokens
            log.info("Firebase token refused: %s", _reason(exc))
            return None
        if claims.get("iss") != f"https://securetoken.google.com/{self.project_id}":
            log.info("Firebase token refused: wrong issuer")
            return None
        uid = claims.get("sub")
        if not isinstance(uid, str) or not uid:
            log.info("Firebase token refused: no subject")
            return None
        if self._allowed and uid not in self._allowed:
            log.info("Firebase token refused: user not in the allow-list")
            return None
        if self._required_claim is not None:
            name, value = self._required_claim
            if claims.get(name) != value:
                log.info("Firebase token refused: claim %r missing or different", name)
                return None
        return Principal("firebase", uid)


def _reason(exc: Exception) -> str:
    text = str(exc).lower()
    for word in ("expired", "audience", "signature", "certificate", "malformed"):
        if word in text:
            return word
    return type(exc).__name__


class Authenticator:
    def __init__(self, static: StaticTokens, firebase: FirebaseVerifier | None = None) -> None:
        self.static = static
        self.firebase = firebase

    @property
    def configured(self) -> bool:
        return self.static.configured or self.firebase is not None

    async def authenticate(self, header: str | None) -> Principal | None:
        token = bearer_token(header)
        if token is None:
            return None
        principal = self.static.match(token)
        if principal is None and self.firebase is not None and token.count(".") == 2:
            principal = await self.firebase.verify(token)
        return principal


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
