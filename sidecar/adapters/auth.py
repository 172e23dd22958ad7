"""Who may use the account API: static bearer tokens and Firebase ID tokens.

Static tokens (for machines) are compared in constant time against every
configured token. Firebase ID tokens (for people using the existing app's
login) are verified with Google's own library against the project's
signing certificates (:mod:`sidecar.adapters.firebase_keys`). A Firebase
user is accepted only when an allow-list of user ids or a required custom
claim names them: nobody by default, and never an anonymous sign-in.

A client over its failed-attempt budget is still heard when its token cannot
be guessed (``limited``): a static token of at least :data:`STRONG_TOKEN_CHARS`
characters, or a Firebase token whose key is already cached. A shorter static
token is refused with its address, so a guess made while waiting learns nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from google.auth import jwt
from pydantic import SecretStr

from sidecar.adapters.firebase_keys import GOOGLE_CERTS_URL, FetchCerts, SigningKeys, fetch_certs

log = logging.getLogger(__name__)

#: Static tokens at least this long are taken as unguessable (``secrets.token_urlsafe(32)``
#: gives 43 characters): they are accepted even from an address over its budget.
STRONG_TOKEN_CHARS = 32
#: Firebase's own limit on a user id.
MAX_UID_CHARS = 128


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request, as the logs and the audit log name them (never the token).

    The name is made printable ASCII here, whatever the token said (a Firebase
    uid may hold a newline): no principal can forge a log line. The escaping
    (Python's ``unicode_escape``) is reversible, so two users never share a name."""

    kind: str  # "static" or "firebase"
    id: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", self.id.encode("unicode_escape").decode("ascii"))


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class StaticTokens:
    """Only SHA-256 digests are kept and compared: every comparison is of 32 bytes
    with 32 bytes, in constant time, against every configured token, so how long a
    refusal takes says nothing about a token's content or length."""

    def __init__(self, tokens: Iterable[SecretStr]) -> None:
        values = [t.get_secret_value() for t in tokens]
        self._digests = [(_digest(v), len(v) >= STRONG_TOKEN_CHARS) for v in values]

    @property
    def configured(self) -> bool:
        return bool(self._digests)

    @property
    def weak(self) -> int:
        """How many tokens are shorter than :data:`STRONG_TOKEN_CHARS`."""
        return sum(not strong for _, strong in self._digests)

    def match(self, candidate: str, *, strong_only: bool = False) -> Principal | None:
        presented = _digest(candidate)
        found: tuple[bytes, bool] | None = None
        for entry in self._digests:
            if hmac.compare_digest(presented, entry[0]):
                found = entry
        if found is None or (strong_only and not found[1]):
            return None
        # the audit log's fingerprint: the first 12 hex digits of the token's SHA-256
        return Principal("static", "token:" + found[0].hex()[:12])


class FirebaseVerifier:
    def __init__(
        self,
        project_id: str,
        *,
        certs_url: str = GOOGLE_CERTS_URL,
        allowed_uids: Iterable[str] = (),
        required_claim: tuple[str, Any] | None = None,
        fetch: FetchCerts = fetch_certs,
        keys: SigningKeys | None = None,
    ) -> None:
        self.project_id = project_id
        self.certs_url = certs_url
        self._allowed = frozenset(allowed_uids)
        self._required_claim = required_claim
        self.keys = keys or SigningKeys(certs_url, fetch)

    @property
    def admits_anyone(self) -> bool:
        """False without an allow-list or a required claim: then nobody is accepted."""
        return bool(self._allowed) or self._required_claim is not None

    async def verify(self, token: str, *, limited: bool = False) -> Principal | None:
        """The user behind a valid ID token of this project, or None (the reason is logged,
        unless ``limited``: then only cached keys are used, and nothing is logged)."""
        outcome = await self._check(token, limited)
        if isinstance(outcome, Principal):
            return outcome
        if not limited:
            log.info("Firebase token refused: %s", outcome)
        return None

    async def _check(self, token: str, limited: bool) -> Principal | str:
        if not self.admits_anyone:
            return "no user is allowed (set allowed_uids or required_claim)"
        try:
            header = jwt.decode_header(token)  # type: ignore[no-untyped-call]
        except Exception:
            return "malformed"
        kid = header.get("kid") if isinstance(header, dict) else None
        if not isinstance(kid, str) or header.get("alg") != "RS256":
            return "malformed"
        cert = await self.keys.certificate(kid, may_fetch=not limited)
        if cert is None:
            return "no signing certificate for its key id (now)"
        try:
            claims: dict[str, Any] = jwt.decode(  # type: ignore[no-untyped-call]
                token, certs={kid: cert}, audience=self.project_id
            )
        except Exception as exc:  # google-auth raises several kinds for bad tokens
            return _reason(exc)
        return self._refusal(claims) or Principal("firebase", claims["sub"])

    def _refusal(self, claims: dict[str, Any]) -> str | None:
        """Why a correctly signed token of this project is not accepted, if it is not."""
        if claims.get("iss") != f"https://securetoken.google.com/{self.project_id}":
            return "wrong issuer"
        uid = claims.get("sub")
        if not isinstance(uid, str) or not 0 < len(uid) <= MAX_UID_CHARS:
            return "no subject"
        firebase = claims.get("firebase")
        if isinstance(firebase, dict) and firebase.get("sign_in_provider") == "anonymous":
            return "anonymous sign-in"  # never, allow-listed or not
        if self._allowed and uid not in self._allowed:
            return "user not in the allow-list"
        if self._required_claim is not None:
            name, value = self._required_claim
            if claims.get(name) != value:
                return f"claim {name!r} missing or different"
        return None


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

    async def authenticate(self, header: str | None, *, limited: bool = False) -> Principal | None:
        """Who sent ``header``, or None. ``limited``: the client is over its failed-attempt
        budget, so only tokens that cannot be guessed are accepted, at no extra cost."""
        token = bearer_token(header)
        if token is None:
            return None
        principal = self.static.match(token, strong_only=limited)
        if principal is None and self.firebase is not None and token.count(".") == 2:
            principal = await self.firebase.verify(token, limited=limited)
        return principal

    def weaknesses(self) -> list[str]:
        """What an operator should be told at start-up about these settings."""
        found = []
        if self.static.weak:
            found.append(
                f"{self.static.weak} static token(s) shorter than {STRONG_TOKEN_CHARS} characters:"
                " they can be guessed, so they are refused like a guess while their address,"
                " or all clients together, are over the failed-attempt budget (anyone who"
                " reaches the port can bring that about); use secrets.token_urlsafe(32)"
            )
        if self.firebase is not None:
            if not self.firebase.admits_anyone:
                found.append(
                    "auth.firebase has neither allowed_uids nor required_claim:"
                    " no Firebase user is accepted"
                )
            if not self.firebase.certs_url.startswith("https://"):
                found.append(
                    "auth.firebase.certs_url is not https: whoever sits on the path can"
                    " sign tokens the sidecar accepts"
                )
        return found

    async def close(self) -> None:
        if self.firebase is not None:
            await self.firebase.keys.close()


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
