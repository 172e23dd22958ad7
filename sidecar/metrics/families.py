"""Every metric family the sidecar exports, declared once.

Collectors build their samples from these declarations (never from names typed
again), the reference (docs/reference.md, "Metrics") is checked against
:data:`ALL`, and a registry refuses a family declared twice. Families whose
series carry ``account`` are rendered by the fast per-account exposition.
"""

from __future__ import annotations

from sidecar.metrics.exposition import Family

# -- per account: traffic, state and the verdict ---------------------------------

MESSAGES = Family(
    "whatsapp_messages_received",
    "Message events received, by class (real, protocol, other) and content kind.",
    "counter",
    ("class", "kind"),
)

LAST_REAL = Family(
    "whatsapp_last_real_message_timestamp_seconds",
    "When the sidecar received the account's last real message (Unix time).",
    "gauge",
)

LAST_REAL_AGE = Family(
    "whatsapp_last_real_message_age_seconds",
    "Seconds since the account's last real message, at scrape time.",
    "gauge",
)

PHONE_LAST_SEEN = Family(
    "whatsapp_primary_phone_last_seen_timestamp_seconds",
    "When the account's own phone was last seen online (Unix time, to the hour; absent until"
    " seen): WhatsApp logs the linked device out after about 14 days without it.",
    "gauge",
)

CONNECTION_STATE = Family(
    "whatsapp_connection_state",
    "1 for the account's current connection state, 0 for the others.",
    "gauge",
    ("state",),
)

DEGRADED = Family(
    "whatsapp_session_degraded",
    "1 when the sidecar judges a connected session deaf (see reasons in the health API).",
    "gauge",
)

DEGRADED_REASON = Family(
    "whatsapp_session_degraded_reason",
    "1 for each piece of evidence behind the degraded verdict, 0 for the others.",
    "gauge",
    ("reason",),
)

QUIET = Family(
    "whatsapp_session_quiet",
    "1 when a connected account is silent longer than its threshold with no protocol"
    " traffic and no probes: quiet, not degraded.",
    "gauge",
)

EFFECTIVE_THRESHOLD = Family(
    "whatsapp_effective_silence_threshold_seconds",
    "The silence that would count as evidence now: the configured threshold, or the"
    " account's usual gap at this hour (with a margin) when that is longer.",
    "gauge",
)

PROBES_SENT = Family("whatsapp_probes_sent", "Canary probes this account tried to send.", "counter")

PROBE_FAILURES = Family(
    "whatsapp_probe_failures",
    "Canary probes that failed: send_failed (sender), not_received, unexpected (receiver: a"
    " second copy of a probe it had received).",
    "counter",
    ("reason",),
)

PROBE_DELIVERY = Family(
    "whatsapp_probe_delivery_seconds",
    "Time from a probe's send to its arrival at this account.",
    "histogram",
)

PROBE_SUCCESS = Family(
    "whatsapp_probe_last_success_timestamp_seconds",
    "When this account last received an expected probe (Unix time).",
    "gauge",
)

EVENTS = Family("whatsapp_events", "neonize events received, by class name.", "counter", ("event",))

EVENT_ERRORS = Family(
    "whatsapp_event_errors",
    "Events whose handling raised an error, by class name.",
    "counter",
    ("event",),
)

RECONNECTS = Family("whatsapp_reconnects", "Connection attempts after the first.", "counter")

# -- per account: early signs of trouble (sidecar.domain.signals) -----------------------

CONNECT_FAILURES = Family(
    "whatsapp_connect_failures",
    "Connections WhatsApp refused, by reason: whatsmeow's connect failure reason in lower"
    " snake case (other: one neonize has no name for); a reason's series appears with its"
    " first failure.",
    "counter",
    ("reason",),
)

TEMPORARY_BAN_EXPIRY = Family(
    "whatsapp_temporary_ban_expiry_timestamp_seconds",
    "When the account's temporary ban ends (Unix time): it connects again after that;"
    " absent when not banned, or banned for a time WhatsApp did not tell.",
    "gauge",
)

SILENCE_THRESHOLD = Family(
    "whatsapp_silence_threshold_seconds",
    "The account's configured silence threshold, for rules that judge silence themselves.",
    "gauge",
)

SPOOL_MESSAGES = Family(
    "whatsapp_spool_messages",
    "Real messages committed to the local spool and not yet confirmed by the store.",
    "gauge",
)

SPOOL_OLDEST = Family(
    "whatsapp_spool_oldest_message_timestamp_seconds",
    "When the oldest spooled message was committed (Unix time); absent when empty.",
    "gauge",
)

SPOOL_OLDEST_AGE = Family(
    "whatsapp_spool_oldest_message_age_seconds",
    "Age of the oldest spooled message, at scrape time; absent when empty.",
    "gauge",
)

SPOOL_WRITE_ERRORS = Family(
    "whatsapp_spool_write_errors",
    "Real messages the local spool could not take (disk full or failing) or keep (a damaged"
    " row): they are not stored.",
    "counter",
)

MESSAGE_CONFLICTS = Family(
    "whatsapp_message_conflicts",
    "Message operations the store did not apply as asked: edit_refused (an edit by someone"
    " else than the message's author), id_reused (a message id another sender used first;"
    " the message is kept under an id of its own).",
    "counter",
    ("outcome",),
)

REMEDIATION_STEPS = Family(
    "whatsapp_remediation_steps",
    "Re-pairs started and remediation steps taken: repair, reconnect, recovered, needs_repair.",
    "counter",
    ("step",),
)

NEEDS_REPAIR = Family(
    "whatsapp_account_needs_repair",
    "1 when a reconnect did not cure a degraded session: a person has to re-pair it.",
    "gauge",
)

MESSAGES_SENT = Family(
    "whatsapp_messages_sent",
    "Messages sent through the send path, by result: ok (WhatsApp's server accepted it)"
    " or a short word for why not.",
    "counter",
    ("result",),
)

DELIVERY_SECONDS = Family(
    "whatsapp_message_delivery_seconds",
    "Seconds from a send the server accepted to the first receipt from the recipient"
    " proving it delivered.",
    "histogram",
)

UNDELIVERED = Family(
    "whatsapp_sent_messages_undelivered",
    "Sends the server accepted longer than the delivery timeout ago that no receipt has"
    " proved delivered, at scrape time.",
    "gauge",
)

SEND_DURATION = Family(
    "whatsapp_send_duration_seconds",
    "Seconds from handing a message to WhatsApp until its server accepted it (or the send failed).",
    "histogram",
)

SEND_OUTCOME_UNKNOWN = Family(
    "whatsapp_send_outcome_unknown",
    "Send attempts whose outcome a crash left unknown (the process stopped during the"
    " send); each was sent again, so its recipient may have it twice.",
    "counter",
)

OUTBOX_MESSAGES = Family(
    "whatsapp_outbox_messages",
    "Messages in the outbox, by status (queued, processing, sent, failed), as last counted:"
    " queued and processing every 30 s, sent and failed when this replica settles one or"
    " at most 10 minutes apart; only from the replica that holds the account.",
    "gauge",
    ("status",),
)

OUTBOX_OLDEST_QUEUED_AGE = Family(
    "whatsapp_outbox_oldest_queued_age_seconds",
    "Age of the account's oldest queued outbox message, at scrape time; absent when none"
    " is queued.",
    "gauge",
)

# -- ingest: what another gateway posted (docs/ingest.md) -------------------------------

INGEST_EVENTS = Family(
    "whatsapp_ingest_events",
    "Events the account's gateway posted to the ingest endpoint, by outcome: accepted,"
    " duplicate (a retry, not counted again), ignored (says nothing measured), unreadable.",
    "counter",
    ("outcome",),
)

INGEST_REQUESTS_REFUSED = Family(
    "whatsapp_ingest_requests_refused",
    "Ingest requests refused whole, by reason (bad_body, unknown_event, too_large): none of"
    " their events was measured.",
    "counter",
    ("reason",),
)

INGEST_LAST_REQUEST = Family(
    "whatsapp_ingest_last_request_timestamp_seconds",
    "When the account's gateway last posted a request the sidecar took (Unix seconds); the"
    " sidecar's start until it has.",
    "gauge",
)

# -- the process: store writer, capture replay, HTTP auth, leases, build ---------------

STORE_WRITES = Family(
    "whatsapp_store_writes",
    "Documents written to the message store.",
    "counter",
    ("backend",),
    per_account=False,
)
STORE_WRITE_ERRORS = Family(
    "whatsapp_store_write_errors",
    "Batched writes to the message store that failed (and were retried).",
    "counter",
    ("backend",),
    per_account=False,
)
STORE_WRITE_DURATION = Family(
    "whatsapp_store_write_duration_seconds",
    "How long one batched write to the message store took.",
    "histogram",
    ("backend",),
    per_account=False,
)
REPLAY_ERRORS = Family(
    "whatsapp_replay_errors",
    "Capture records that could not be parsed or decoded.",
    "counter",
    per_account=False,
)
BUILD_INFO = Family(
    "whatsapp_sidecar_build_info",
    "Always 1; the version label says which build runs.",
    "gauge",
    ("version",),
    per_account=False,
)
LINKS_INFO = Family(
    "whatsapp_sidecar_links_info",
    "Always 1; where people reach this sidecar (external_url) and its runbook (runbook_url),"
    " for the links in alerts.",
    "gauge",
    ("external_url", "runbook_url"),
    per_account=False,
)
HTTP_AUTH_FAILURES = Family(
    "whatsapp_http_auth_failures",
    "Requests to /api/ whose bearer token was checked and not accepted (401).",
    "counter",
    per_account=False,
)
HTTP_AUTH_RATE_LIMITED = Family(
    "whatsapp_http_auth_rate_limited",
    "Requests to /api/ refused with 429: their address, or all clients together, failed too often.",
    "counter",
    ("budget",),
    per_account=False,
)
AUDIT_WRITE_ERRORS = Family(
    "whatsapp_audit_write_errors",
    "Audit records that could not be written (a full or failing disk); the actions that"
    " needed them were refused.",
    "counter",
    per_account=False,
)
LEASE_HELD = Family(
    "whatsapp_lease_held", "1 when this replica holds the account's lease.", "gauge"
)
LEASES_LOST = Family(
    "whatsapp_leases_lost",
    "Leases this replica lost before giving them back.",
    "counter",
    per_account=False,
)

DIALS_IN_PROGRESS = Family(
    "whatsapp_dials_in_progress",
    "Accounts in a connection attempt now, from the session's start until WhatsApp answered"
    " or the attempt ended; at most whatsapp_dial_slots.",
    "gauge",
    per_account=False,
)
DIALS_WAITING = Family(
    "whatsapp_dials_waiting",
    "Accounts waiting for a dial slot before they connect (after their random jitter).",
    "gauge",
    per_account=False,
)
DIAL_SLOTS = Family(
    "whatsapp_dial_slots",
    "The most accounts this replica dials at once (connections.max_concurrent_dials).",
    "gauge",
    per_account=False,
)

#: Every family, in no particular order: the reference and the registry check this list.
ALL: tuple[Family, ...] = tuple(
    value for value in tuple(globals().values()) if isinstance(value, Family)
)
