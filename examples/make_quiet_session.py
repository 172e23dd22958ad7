"""Write examples/quiet-session.jsonl: a session that goes deaf while it looks alive.

Story (40 minutes, two accounts, every number fictional):
- 11:00 both accounts connect and finish offline sync.
- 11:00-11:20 ``sales`` gets a real message about every minute (inbound text,
  replies sent from the phone, a photo, a reaction), with the usual protocol
  traffic beside it. ``support`` is quieter: a real message every 3 minutes.
- 11:20 ``sales`` goes deaf: from here on it only sees history-sync
  notifications, app-state key shares and sender-key distributions.
- 11:25 the legacy rule (5 minutes of silence) calls ``sales`` degraded.
- 11:30 ``sales`` disconnects and reconnects; it stays deaf.
- ``support`` stays healthy to the end.

Run ``python examples/make_quiet_session.py`` to regenerate; a test checks
that the committed file is what this script writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from neonize.proto.waCommon.WACommon_pb2 import MessageKey
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import (
    ExtendedTextMessage,
    ImageMessage,
    ReactionMessage,
    SenderKeyDistributionMessage,
)
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as WAMessage

from sidecar import testing as build
from sidecar.adapters.capture import encode_record

START = 1_764_068_400.0  # 2025-11-25 11:00:00 UTC
MINUTE = 60.0
DEAF_AT = START + 20 * MINUTE
END = START + 40 * MINUTE
CUSTOMER = build.jid("12025550123")
OTHER_CUSTOMER = build.jid("12025550147")


def _events() -> list[tuple[float, str | None, object | None]]:
    out: list[tuple[float, str | None, object | None]] = []
    serial = iter(range(1, 10_000))

    def msg(t: float, account: str, content: WAMessage, **info: object) -> None:
        out.append(
            (
                t,
                account,
                build.message_event(
                    content,
                    message_id=f"EXAMPLE{next(serial):08d}",
                    timestamp_ms=int((t - 0.4) * 1000),
                    **info,
                ),
            )
        )

    for account in ("sales", "support"):
        out.append((START, account, build.connected()))
        out.append((START + 1, account, build.offline_sync_preview(total=4)))
        out.append((START + 3, account, build.offline_sync_completed(count=4)))

    # sales: lively until it goes deaf
    t = START + 30
    n = 0
    while t < DEAF_AT:
        n += 1
        if n % 4 == 1:
            msg(t, "sales", build.text(f"Hello, is order {1000 + n} ready?"), chat=CUSTOMER)
        elif n % 4 == 2:
            msg(
                t,
                "sales",
                WAMessage(extendedTextMessage=ExtendedTextMessage(text="Yes, it ships today.")),
                chat=CUSTOMER,
                from_me=True,
            )
        elif n % 4 == 3:
            msg(
                t,
                "sales",
                WAMessage(imageMessage=ImageMessage(mimetype="image/jpeg", caption="The receipt")),
                chat=OTHER_CUSTOMER,
            )
        else:
            key = MessageKey(remoteJID="12025550123@s.whatsapp.net", fromMe=True, ID="EXAMPLE0")
            msg(
                t,
                "sales",
                WAMessage(reactionMessage=ReactionMessage(key=key, text="👍")),
                chat=CUSTOMER,
            )
        if n % 2 == 0:
            msg(t + 20, "sales", build.app_state_key_share(), chat=build.jid(build.OWN_PHONE))
        t += MINUTE

    # sales after it went deaf: protocol traffic only, and a reconnect that does not help
    t = DEAF_AT + 15
    n = 0
    while t < END:
        n += 1
        if n % 3 == 0:
            msg(t, "sales", build.app_state_key_share(), chat=build.jid(build.OWN_PHONE))
        elif n % 5 == 0:
            skd = SenderKeyDistributionMessage(groupID="120363000000000001@g.us")
            msg(t, "sales", WAMessage(senderKeyDistributionMessage=skd), chat=CUSTOMER)
        else:
            msg(t, "sales", build.history_sync_notification(), chat=build.jid(build.OWN_PHONE))
        t += 45
    out.append((START + 30 * MINUTE, "sales", build.disconnected()))
    out.append((START + 30 * MINUTE + 4, "sales", build.connected()))

    # support: quiet but healthy all along
    t = START + 90
    while t < END:
        msg(t, "support", build.text("Can you call me back?"), chat=OTHER_CUSTOMER)
        msg(t + 5, "support", build.text("Calling you now."), chat=OTHER_CUSTOMER, from_me=True)
        t += 3 * MINUTE

    # the clock ticks every 30 s so ages keep moving between events
    t = START
    while t <= END:
        out.append((t, None, None))
        t += 30
    out.sort(key=lambda item: item[0])
    return out


def render() -> str:
    return "".join(encode_record(t, account, event) + "\n" for t, account, event in _events())  # type: ignore[arg-type]


def main() -> int:
    target = Path(__file__).with_name("quiet-session.jsonl")
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
