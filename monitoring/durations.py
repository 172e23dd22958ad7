"""Prometheus durations (``30s``, ``5m``, ``1h30m``), read to check a value the generator
is given and to place promtool cases relative to a rule's ``for``."""

from __future__ import annotations

import argparse
import math
import re

_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")


def seconds(text: str) -> float:
    """``1h30m`` -> 5400.0; ValueError for what Prometheus would refuse."""
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r} (use e.g. 0s, 30s, 5m, 1h30m)")
    return float(sum(int(n) * _UNIT_S[u] for n, u in parts))


def duration_argument(text: str) -> str:
    """An argparse type: the text itself, once it reads as a duration."""
    try:
        seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def minutes_after(start_minute: int, duration: str) -> int:
    """The first whole minute at which a condition active from ``start_minute`` has held
    for ``duration``: where an alert with that ``for`` fires, evaluated every minute."""
    return start_minute + math.ceil(seconds(duration) / 60)
