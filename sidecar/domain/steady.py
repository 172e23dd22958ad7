"""The verdict over time: degraded once the evidence has held, kept through a reconnect.

The rule (:data:`sidecar.core.service.VERDICT_RULE`) judges one moment. A page should
not follow every moment, and the rules should not need a long ``for:`` to smooth it:
the sidecar sees its accounts every few seconds and knows a reconnect from a cure.
So every reader of an account's verdict goes through its :class:`SteadyVerdict`:

- degraded only once the rule has found evidence at every look for ``confirm_s``
  (``verdict.confirm``): one odd moment is never a page;
- once degraded, it stays so while the account cannot be judged: while a connection
  catches up with its offline backlog; and it is remembered while the account is
  disconnected or connecting, for up to :data:`HOLD_S`, so a reconnect of a deaf session
  does not start its confirmation again. While not connected the account is not
  degraded (its status says what is wrong: docs/reference.md, the health object), and
  the page stays up through the reconnect by the rule's ``keep_firing_for``;
- it clears at once when the rule, judging a connected and caught-up session, finds no
  evidence (a real message, a probe, a receipt arrived), and when the account reaches a
  state that says what is wrong by itself (logged out, replaced, banned...).
"""

from __future__ import annotations

import threading
from dataclasses import replace

from sidecar.domain.account import AccountSnapshot, Status
from sidecar.domain.verdict import Verdict, catching_up

#: Default of ``verdict.confirm``: how long the evidence must hold before the verdict
#: turns degraded.
CONFIRM_S = 30.0
#: How long a degraded verdict is kept while the account is disconnected or connecting.
#: A reconnect takes seconds; an account away longer has its own alert
#: (WhatsappAccountDisconnected).
HOLD_S = 300.0
#: Statuses in which an account is on its way back: its verdict waits for it.
_RECONNECTING = frozenset({Status.DISCONNECTED, Status.CONNECTING})


class SteadyVerdict:
    """One account's verdict as every reader sees it; safe from any thread."""

    __slots__ = ("_away_since", "_degraded", "_evidence_since", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: When the rule first found evidence at the looks since (None: it found none).
        self._evidence_since: float | None = None
        #: The last degraded verdict given (None: healthy).
        self._degraded: Verdict | None = None
        #: Since when a degraded account has been disconnected or connecting.
        self._away_since: float | None = None

    def judge(
        self, verdict: Verdict, snapshot: AccountSnapshot, confirm_s: float, now: float
    ) -> Verdict:
        """What readers are told, given the rule's ``verdict`` of ``snapshot`` at ``now``."""
        if not verdict.degraded and self._degraded is None and self._evidence_since is None:
            return verdict  # the common case, read without the lock (a scrape asks 10,000)
        with self._lock:
            if verdict.degraded:
                self._away_since = None
                if self._evidence_since is None:
                    self._evidence_since = now
                if self._degraded is None and now - self._evidence_since < confirm_s:
                    return Verdict(degraded=False, evidence=verdict.evidence)
                self._degraded = verdict
                return verdict
            self._evidence_since = None
            held = self._degraded
            if held is not None and self._holds(snapshot, now):
                if snapshot.status is not Status.CONNECTED:
                    return verdict  # remembered, not shown: not connected is not degraded
                return replace(held, evidence=verdict.evidence)
            self._degraded = self._away_since = None
            return verdict

    def _holds(self, snapshot: AccountSnapshot, now: float) -> bool:
        """Whether a degraded verdict stands although the rule found no evidence because
        it could not judge: a connection still catching up, or the account away (for up
        to :data:`HOLD_S`)."""
        if snapshot.status is Status.CONNECTED:
            self._away_since = None
            return catching_up(snapshot, now)
        if snapshot.status not in _RECONNECTING:
            return False
        if self._away_since is None:
            left = snapshot.status_since
            self._away_since = left if left is not None and left <= now else now
        return now - self._away_since < HOLD_S
