"""Canary probes: a message one account sends another, to prove the receiver hears.

The probe is an ordinary WhatsApp text with a marker and an id; the receiving
sidecar recognises one of the probes sent to it by that id, records when it
arrived, and neither stores nor forwards it as a chat message. Any other text,
the marker or not, is an ordinary message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as WAMessage

from sidecar.domain.classify import unwrap

PROBE_PREFIX = "wa-sidecar:probe:v1:"
#: The capture/event name of a probe send (an addition to neonize's event names).
PROBE_SENT = "ProbeSent"


@dataclass(frozen=True, slots=True)
class ProbeSent:
    """An account tried to send a probe to ``peer``: the sender's side of a probe."""

    #: Its capture record: ``{"event": EVENT, KEY: to_json()}``.
    EVENT: ClassVar[str] = PROBE_SENT
    KEY: ClassVar[str] = "probe"

    probe_id: str
    peer: str
    ok: bool
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.probe_id, "peer": self.peer, "ok": self.ok, "reason": self.reason}

    @classmethod
    def from_json(cls, data: Any) -> ProbeSent:
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("id"), str)
            or not isinstance(data.get("peer"), str)
        ):
            raise ValueError("'probe' must hold 'id' and 'peer'")
        reason = data.get("reason")
        return cls(
            data["id"],
            data["peer"],
            bool(data.get("ok")),
            reason if isinstance(reason, str) else None,
        )


def probe_text(probe_id: str) -> str:
    return PROBE_PREFIX + probe_id


def probe_id_of(message: WAMessage | None) -> str | None:
    """The id after the probe marker when ``message`` is a text that starts with it, else
    None. Anyone can type the marker: only the receiving account can tell whether the id
    is one of the probes sent to it (:meth:`AccountState.record_probe_delivery`)."""
    if message is None:
        return None
    content = unwrap(message)
    if content.HasField("conversation"):
        text = content.conversation
    elif content.HasField("extendedTextMessage"):
        text = content.extendedTextMessage.text
    else:
        return None
    # A text that is not valid UTF-8 reaches Python as bytes (Go does not check proto2
    # strings): it is no probe, and must still count as the real message it is.
    if not isinstance(text, str) or not text.startswith(PROBE_PREFIX):
        return None
    return text[len(PROBE_PREFIX) :] or None
