"""What a person should do about an account's state, in one sentence: the health
object's ``nextStep``, the status page, and the log line of the change (an unpaired
account says how to pair it, instead of only ``qr_pending``)."""

from __future__ import annotations

from sidecar.domain.account import Status

#: States whose next step is in the gateway that holds an ingest account's session.
_IN_THE_GATEWAY = frozenset({Status.QR_PENDING, Status.LOGGED_OUT, Status.REPLACED})


def next_step(account_id: str, status: Status, source: str, unpaired: bool = False) -> str | None:
    """The sentence for ``status``, or None when nobody needs to act. ``unpaired``: the
    session store holds no paired device (the account is not paired whatever its status
    says while it tries to reach WhatsApp)."""
    if source == "ingest":
        if status in _IN_THE_GATEWAY:
            return "re-pair it in the gateway that holds its session (docs/ingest.md)"
        return "see the runbook, WhatsappAccountBanned" if status is Status.BANNED else None
    # the page first: it works while this sidecar runs, whatever the state
    pair = (
        f"on the page /accounts/{account_id}/pair or with"
        f" `wa-sidecar pair {account_id} --config CONFIG`"
    )
    if unpaired and status in (Status.CONNECTING, Status.DISCONNECTED, Status.QR_PENDING):
        return f"not paired: pair it {pair}"
    steps = {
        Status.QR_PENDING: f"not paired: pair it {pair}",
        Status.LOGGED_OUT: f"logged out: re-pair it {pair}",
        Status.REPLACED: "another client uses this device's keys: see the runbook,"
        " WhatsappStreamReplaced",
        Status.BANNED: "WhatsApp banned the number: see the runbook, WhatsappAccountBanned",
        Status.OUTDATED: "WhatsApp refuses this client's version: upgrade wa-sidecar",
    }
    return steps.get(status)
