"""The config's sections: one validated, frozen model each (docs/reference.md, "Config").

:mod:`sidecar.config` puts them together, reads the file and reports every problem.
"""

from __future__ import annotations

import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from sidecar.config_input import at_least, parse_duration

ACCOUNT_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"


def _check_timezone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name such as Europe/Bucharest)"
        ) from exc
    return name


Duration = Annotated[float, BeforeValidator(parse_duration)]
TimeZone = Annotated[str, AfterValidator(_check_timezone)]


def _at_most_an_hour(value: float) -> float:
    if value > 3600:
        raise ValueError(
            "must be at most 1h: a longer confirmation holds back every page; raise"
            " silence_threshold or the rule's for instead"
        )
    return value


def _at_most_a_minute(value: float) -> float:
    if value > 60:
        raise ValueError("must be at most 1m: every reconnect waits up to this long")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ListenAddress(_Strict):
    host: str
    port: int


def _parse_listen(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError(f"expected host:port, got {value!r}")
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected host:port (e.g. 127.0.0.1:9464), got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if len(port) > 10:  # never int() of thousands of digits
        raise ValueError(f"port {port[:10]}... ({len(port)} digits) is out of range 0-65535")
    number = int(port)
    if not 0 <= number <= 65535:
        raise ValueError(f"port {number} is out of range 0-65535")
    return {"host": host, "port": number}


class EventStreamsConfig(_Strict):
    """The pair page's event streams open at once; one more is refused with 429."""

    total: Annotated[int, Field(ge=1, le=10_000)] = 32
    per_principal: Annotated[int, Field(ge=1, le=10_000)] = 4

    @model_validator(mode="after")
    def _per_principal_within_total(self) -> EventStreamsConfig:
        if self.per_principal > self.total:
            raise ValueError("per_principal must not be more than total")
        return self


#: Listen addresses that mean "every interface".
WILDCARDS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 (compared with, never bound)


def _check_url(value: str | None) -> str | None:
    """An http(s) address people and a pager can open: no credentials, query or fragment
    (links are made by appending paths); a trailing slash is dropped."""
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("must not hold credentials, a query or a fragment")
    return value.rstrip("/")


Url = Annotated[str | None, AfterValidator(_check_url)]


class HttpConfig(_Strict):
    listen: Annotated[ListenAddress, BeforeValidator(_parse_listen)] = Field(
        default_factory=lambda: ListenAddress(host="127.0.0.1", port=9464)
    )
    event_streams: EventStreamsConfig = Field(default_factory=EventStreamsConfig)
    #: Where people and the pager reach the sidecar (re-pair links in alerts).
    external_url: Url = None
    #: The runbook alerts link to; the one the sidecar serves at /runbook by default.
    runbook_url: Url = None

    @property
    def links(self) -> tuple[str, str]:
        """The external URL (the listen address when not set) and the runbook's URL."""
        host = self.listen.host
        # a wildcard listen address is no address to open: the loopback one is
        shown = "127.0.0.1" if host in WILDCARDS else host
        shown = f"[{shown}]" if ":" in shown else shown
        external = self.external_url or f"http://{shown}:{self.listen.port}"
        return external, self.runbook_url or f"{external}/runbook"


class FirestoreConfig(_Strict):
    project: str
    database: str = "(default)"
    #: Deadline of one batched write, the client library's retries included;
    #: past it the spool writer backs off and tries the batch again.
    write_timeout: Duration = 10.0


class StoreConfig(_Strict):
    backend: Literal["sqlite", "firestore"] = "sqlite"
    firestore: FirestoreConfig | None = None

    @model_validator(mode="after")
    def _firestore_needs_project(self) -> StoreConfig:
        if self.backend == "firestore" and self.firestore is None:
            raise ValueError("backend 'firestore' needs a 'firestore' section with 'project'")
        return self


class RequiredClaim(_Strict):
    name: str
    value: str | bool | int


class FirebaseAuthConfig(_Strict):
    project_id: str
    #: Where the project's signing certificates are fetched (tests serve their own).
    certs_url: str = (
        "https://www.googleapis.com/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com"
    )
    #: Only these users may act. This or ``required_claim`` is required: a project's
    #: users include anyone who signs up, anonymous sign-ins too.
    allowed_uids: list[str] = Field(default_factory=list)
    #: A custom claim the token must carry, e.g. {name: whatsapp_admin, value: true}.
    required_claim: RequiredClaim | None = None

    @model_validator(mode="after")
    def _someone_named(self) -> FirebaseAuthConfig:
        if not self.allowed_uids and self.required_claim is None:
            raise ValueError(
                "set allowed_uids or required_claim: without them anyone who can sign in"
                " to the Firebase project's app could re-pair accounts"
            )
        return self


class RateLimitConfig(_Strict):
    """Failed bearer tokens allowed per client address, ``failures`` per ``window``, and
    from all addresses together, ``global_failures`` per ``window`` (beyond either, 429
    with Retry-After, except for tokens that cannot be guessed)."""

    failures: Annotated[int, Field(ge=1, le=100_000)] = 10
    global_failures: Annotated[int, Field(ge=1, le=100_000)] = 100
    window: Annotated[
        Duration, at_least(1.0, "a shorter window gives a guesser its failures every instant")
    ] = 60.0


class AuthConfig(_Strict):
    tokens_file: Path | None = None
    tokens_env: str | None = None
    firebase: FirebaseAuthConfig | None = None
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)


class ProbeConfig(_Strict):
    """This account sends a canary probe to ``peer`` (another configured account)."""

    peer: str
    interval: Duration = 300.0
    timeout: Duration = 120.0
    misses: Annotated[int, Field(ge=1, le=10)] = 2

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> ProbeConfig:
        if self.timeout > self.interval:
            raise ValueError("timeout must not be longer than interval")
        return self


class LeasesConfig(_Strict):
    """Spread accounts over replicas with leases in Firestore (store.firestore.project)."""

    ttl: Duration = 30.0
    #: Environment variable naming this replica (a StatefulSet pod's HOSTNAME).
    replica_id_env: str = "HOSTNAME"


class ConnectionsConfig(_Strict):
    """How this replica dials WhatsApp (sidecar/core/dialing.py): a reconnect storm
    after a network blip is spread out and capped, not a thousand dials at once."""

    #: Accounts in a connection attempt at once (each holds two threads while it dials).
    max_concurrent_dials: Annotated[int, Field(ge=1, le=10_000)] = 16
    #: Each dial first waits a random time up to this long (a re-pair does not).
    dial_jitter: Annotated[Duration, AfterValidator(_at_most_a_minute)] = 2.0


class RepairConfig(_Strict):
    #: At most one re-pair per account per this long (429 otherwise).
    interval: Duration = 300.0
    #: After the webhook's reconnect, how long a degraded session gets before needs_repair.
    grace: Duration = 300.0


class VerdictConfig(_Strict):
    """How the degraded verdict moves (sidecar/domain/steady.py)."""

    #: Evidence must hold this long before the verdict turns degraded (and pages).
    confirm: Annotated[Duration, AfterValidator(_at_most_an_hour)] = 30.0


class AccountConfig(_Strict):
    id: Annotated[str, Field(pattern=ACCOUNT_ID_PATTERN)]
    probe: ProbeConfig | None = None
    silence_threshold: Duration | None = None
    timezone: TimeZone | None = None
    #: Environment variable holding a Postgres URL for this account's session
    #: store (one database per account: neonize resumes the first device it finds).
    postgres_url_env: str | None = None
    #: ``neonize``: the sidecar holds the session; ``ingest``: another gateway holds it
    #: and posts its events to ``/api/ingest/{format}/{id}`` (docs/ingest.md).
    source: Literal["neonize", "ingest"] = "neonize"
    #: Store the account's real messages; by default yes for a session the sidecar
    #: holds, no for an ingest account (its gateway stores them already).
    store_messages: bool | None = None

    @model_validator(mode="after")
    def _ingest_holds_no_session(self) -> AccountConfig:
        if self.source == "ingest":
            if self.probe is not None:
                raise ValueError(
                    "an ingest account cannot send probes (the sidecar holds no session for it)"
                )
            if self.postgres_url_env is not None:
                raise ValueError("an ingest account has no session store (postgres_url_env)")
        return self

    @property
    def stores_messages(self) -> bool:
        return self.store_messages if self.store_messages is not None else self.source != "ingest"


class SendConfig(_Strict):
    """The send path (docs/sending.md). Off unless ``enabled``: a sidecar set up to
    watch sessions never starts sending as them. A send the server accepted with no
    delivered receipt after ``delivery_timeout`` counts as undelivered."""

    #: Serve ``POST /api/whatsapp/send-message`` and drain the outbox.
    enabled: bool = False
    delivery_timeout: Annotated[
        Duration, at_least(1.0, "a delivered receipt takes a round trip to the recipient")
    ] = 300.0
    #: Attempts before a message is ``failed`` (not connected is not an attempt).
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 5
    #: Messages an account may send per minute, after a burst of ``burst``: bursts
    #: get accounts banned.
    rate_per_minute: Annotated[float, Field(gt=0, le=600)] = 20.0
    burst: Annotated[int, Field(ge=1, le=100)] = 5
    #: How long a claimed outbox message is held for its one attempt.
    lease: Annotated[Duration, at_least(10.0, "an attempt waits up to a minute for WhatsApp")] = (
        60.0
    )
    #: How often the outbox is looked at for messages written by others (the app).
    poll_interval: Annotated[Duration, at_least(0.1, "each look queries the store")] = 2.0
