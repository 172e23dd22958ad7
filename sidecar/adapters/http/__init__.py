"""The HTTP side: /metrics, liveness and readiness, the account API, the re-pair flow,
the send endpoint, the ingest endpoint.

Errors are JSON ``{"error": "..."}`` and never echo what the client sent
(an unknown account id could be a phone number), not even for requests
that do not parse as HTTP (:class:`HardenedAppRunner`). Nothing under
/api/ or the pages is cacheable: QR codes and pairing codes must not linger.

Abuse is bounded: every endpoint takes a body of at most what it needs
(413 on the declared length, before anything is read), a client has
:class:`HttpLimits` seconds to send its headers, its body and to take its
response, and an address that presents wrong bearer tokens too often is
answered 429 (:mod:`sidecar.adapters.ratelimit`). No CORS headers are ever
sent: browsers keep other sites' pages away from the API.

The pair page's event streams are capped per principal and in all
(``http.event_streams``; 429 beyond), and share one view per account.

The modules, each importing only those listed before it: ``common`` (app keys,
limits, the error shape), ``streams`` (the event streams' caps and shared views),
``hardening`` (aiohttp's connection handling, the one place that touches its
internals), ``routes``, ``send``, ``ingest``, ``pages``, ``middleware``, ``app``.
"""

from sidecar.adapters.http.app import create_app
from sidecar.adapters.http.common import READY, HttpLimits
from sidecar.adapters.http.hardening import HardenedAppRunner
from sidecar.adapters.http.ingest import INGEST_BODY_BYTES
from sidecar.adapters.http.routes import NO_BODY_BYTES, PAIR_CODE_BODY_BYTES, WEBHOOK_BODY_BYTES
from sidecar.adapters.http.send import SEND_BODY_BYTES
from sidecar.adapters.http.streams import StreamLimits

__all__ = [
    "INGEST_BODY_BYTES",
    "NO_BODY_BYTES",
    "PAIR_CODE_BODY_BYTES",
    "READY",
    "SEND_BODY_BYTES",
    "WEBHOOK_BODY_BYTES",
    "HardenedAppRunner",
    "HttpLimits",
    "StreamLimits",
    "create_app",
]
