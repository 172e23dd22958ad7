"""What every benchmark shares: percentiles, the result table, the verdict on targets.

Machines here are shared and noisy, so each benchmark measures its baseline in
the same run and quotes the ratio; a target is checked only on a full run
(``--smoke`` runs print the same table and never fail on timing).
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of a non-empty sample."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


@dataclass(frozen=True)
class Result:
    """One line of the table in docs/performance.md."""

    name: str
    measured: float
    baseline: float | None
    unit: str
    target: str
    met: bool

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.measured / self.baseline


def report(results: Sequence[Result], *, check: bool) -> int:
    """Print the table; exit status 1 when ``check`` and any target was missed."""
    print(f"{'figure':<40} {'measured':>14} {'baseline':>14} {'ratio':>8}  target")
    for r in results:
        base = "-" if r.baseline is None else f"{r.baseline:,.1f}"
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        mark = "ok" if r.met else "MISSED"
        print(
            f"{r.name:<40} {r.measured:>11,.1f} {r.unit:<2} {base:>14} {ratio:>8}"
            f"  {r.target} [{mark}]"
        )
    missed = [r.name for r in results if not r.met]
    if missed and check:
        print(f"FAIL: target missed: {', '.join(missed)}", file=sys.stderr)
        return 1
    if missed:
        print(f"(smoke run: targets not checked; missed here: {', '.join(missed)})")
    return 0
