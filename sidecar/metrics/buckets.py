"""Histogram buckets as Prometheus wants them: cumulative, ending in +Inf."""

from __future__ import annotations

from collections.abc import Sequence


def cumulative_buckets(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, float]]:
    """Per-bucket counts (the last one past every bound) as a histogram's cumulative
    ``(le, count)`` pairs."""
    cumulative, running = [], 0
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        running += count
        cumulative.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
    return cumulative
