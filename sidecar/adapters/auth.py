"""Bearer-token checks for the account API.

Static tokens are compared in constant time, against every configured token,
so neither the match position nor the length of a prefix leaks through timing.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from pydantic import SecretStr


class StaticTokens:
    def __init__(self, tokens: Iterable[SecretStr]) -> None:
        self._tokens = [t.get_secret_value().encode("utf-8") for t in tokens]

    @property
    def configured(self) -> bool:
        return bool(self._tokens)

    def verify(self, candidate: str) -> bool:
        presented = candidate.encode("utf-8", "surrogateescape")
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(presented, token)
        return matched


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
