"""The events of the sidecar's own, recorded and replayed beside neonize's: a probe
sent, a message sent (docs/reference.md, "Capture format")."""

from __future__ import annotations

from sidecar.domain.delivery import SendResult
from sidecar.domain.probes import ProbeSent

OwnEvent = ProbeSent | SendResult
#: By capture event name.
OWN_EVENTS: dict[str, type[ProbeSent] | type[SendResult]] = {
    ProbeSent.EVENT: ProbeSent,
    SendResult.EVENT: SendResult,
}
