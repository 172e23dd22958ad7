"""A clock a test sets by hand, for the parts that take ``now`` as a callable."""

from __future__ import annotations


class SettableClock:
    """Starts at 1000.0; a test moves ``now`` itself."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
