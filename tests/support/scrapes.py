"""A replay scraped like Prometheus would: the sidecar's own /metrics rendering taken at
fixed steps of capture time, then turned into `promtool test rules` input series, so the
shipped rules are judged on what the sidecar really exports, not on hand-written values."""

from __future__ import annotations

import math
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from sidecar.adapters.capture import CaptureRecord, capture_records
from sidecar.compose import Assembly
from sidecar.core.clock import ReplayClock
from sidecar.core.replay import Replayer

from .services import installed

#: A series: its sample name and its labels, sorted.
Key = tuple[str, tuple[tuple[str, str], ...]]
Scrape = dict[Key, float]


def parse(exposition: str) -> Scrape:
    """Every sample of a Prometheus text exposition."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def sample(scrape: Scrape, name: str, **labels: str) -> float | None:
    return scrape.get((name, tuple(sorted(labels.items()))))


async def scrape_replay(
    assembly: Assembly,
    clock: ReplayClock,
    capture: Path,
    step_s: float = 60.0,
    observe: Callable[[float], None] | None = None,
) -> tuple[float, list[Scrape]]:
    """Replay ``capture`` into ``assembly`` and render its /metrics every ``step_s`` of
    capture time, from the first record's time to the last's; returns the first time and
    the scrapes. The clock stands at each step when it is scraped, as a live scrape's would;
    ``observe`` is called there too (with the time), to read what else a test wants then."""
    records = list(capture_records(capture))
    readable = [r for r in records if isinstance(r, CaptureRecord)]
    assert len(readable) == len(records), "the capture has unreadable lines"
    start, end = readable[0].t, readable[-1].t
    replayer = Replayer(assembly.sidecar, clock, assembly.replay_errors)
    scrapes: list[Scrape] = []
    done = 0
    at = start
    while at <= end:
        upto = done
        while upto < len(readable) and readable[upto].t <= at:
            upto += 1
        report = await replayer.run(readable[done:upto])
        assert report.errors == 0
        done = upto
        clock.advance_to(at)
        scrapes.append(parse(assembly.metrics.render().decode()))
        if observe is not None:
            observe(at)
        at += step_s
    return start, scrapes


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    return repr(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def input_series(
    scrapes: list[Scrape], start: float, job: str, instance: str
) -> list[dict[str, str]]:
    """promtool input series, one value per scrape, with the labels the scrape adds and
    ``up``. A series that disappears gets a staleness marker, as Prometheus writes one.
    Unix-time gauges are moved onto promtool's clock, which starts at 0 at ``start``, so
    that rules comparing them with ``time()`` see the same ages."""
    out = [
        {
            "series": f'up{{job="{_escape(job)}",instance="{_escape(instance)}"}}',
            "values": " ".join("1" for _ in scrapes),
        }
    ]
    for name, labels in sorted(set().union(*scrapes)):
        shift = start if name.endswith("_timestamp_seconds") else 0.0
        values = []
        present = False
        for scrape in scrapes:
            value = scrape.get((name, labels))
            if value is None:
                values.append("stale" if present else "_")
            else:
                values.append(_number(value - shift))
            present = value is not None
        body = ",".join(
            f'{k}="{_escape(v)}"' for k, v in (("job", job), ("instance", instance), *labels)
        )
        out.append({"series": f"{name}{{{body}}}", "values": " ".join(values)})
    return out


def promtool_test(
    tmp_path: Path, rule_file: Path, tests: list[dict[str, Any]]
) -> subprocess.CompletedProcess[str]:
    """``promtool test rules`` on ``tests`` against ``rule_file``, evaluated every minute."""
    path = tmp_path / "replayed.test.yml"
    path.write_text(
        yaml.safe_dump(
            {"rule_files": [str(rule_file)], "evaluation_interval": "1m", "tests": tests},
            sort_keys=False,
            width=10_000,
        )
    )
    return subprocess.run(
        [installed("promtool"), "test", "rules", str(path)], capture_output=True, text=True
    )
