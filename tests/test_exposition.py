"""The fast /metrics exposition says exactly what prometheus_client would say, in both
formats, at every scrape: after counts change, a status moves, a probe arrives."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from sidecar import testing as build
from sidecar.compose import Assembly, assemble, build_repairs
from sidecar.core.clock import ReplayClock
from sidecar.core.repair import RecordingControl
from sidecar.domain.probes import ProbeSent, probe_text
from sidecar.metrics.exposition import Exposition, Family, RowCollector

from .support.config import ConfigFactory

T0 = 1_764_068_400.0
PROBE = {"peer": "support", "interval": "5m", "timeout": "1m", "misses": 2}


@pytest.fixture
def stored(make_config: ConfigFactory, clock: ReplayClock) -> Iterator[Assembly]:
    """An assembly with the SQLite store and its spool, whose clock stands still."""
    loaded = make_config([{"id": "sales", "probe": PROBE}, {"id": "support"}, {"id": "quiet"}])
    made = assemble(loaded, clock)
    assert made.storage is not None
    made.storage.spool.now = lambda: T0 + 5  # type: ignore[method-assign]
    build_repairs(made, RecordingControl())
    yield made
    made.close()


def assert_same_as_prometheus_client(assembly: Assembly) -> None:
    render, registry = assembly.metrics.render, assembly.metrics.registry
    assert render(openmetrics=False) == generate_latest(registry)
    assert render(openmetrics=True) == generate_openmetrics(registry)  # type: ignore[no-untyped-call]


def test_every_scrape_matches_prometheus_client_byte_for_byte(
    stored: Assembly, clock: ReplayClock
) -> None:
    assembly = stored
    handle = assembly.sidecar.handle
    clock.advance_to(T0)
    assert_same_as_prometheus_client(assembly)  # nothing happened yet
    for account in ("sales", "support", "quiet"):
        handle(account, build.connected(), T0)
    handle("sales", build.message_event(build.text("hello")), T0 + 1)
    handle("support", build.message_event(build.history_sync_notification()), T0 + 2)
    handle("sales", ProbeSent("p1", "support", ok=True), T0 + 3)
    clock.advance_to(T0 + 10)
    assert_same_as_prometheus_client(assembly)
    handle("support", build.message_event(build.text(probe_text("p1"))), T0 + 11)
    handle("quiet", build.disconnected(), T0 + 12)
    handle("sales", build.message_event(build.app_state_key_share()), T0 + 13)
    clock.advance_to(T0 + 900)  # ages move, the verdicts turn
    first = assembly.metrics.render()
    assert_same_as_prometheus_client(assembly)
    assert b'whatsapp_connection_state{account="quiet",state="disconnected"} 1.0' in first
    assert b'whatsapp_probe_delivery_seconds_count{account="support"} 1.0' in first
    assert b'whatsapp_spool_messages{account="sales"} 1.0' in first


class Odd(RowCollector):
    """Label values that need escaping, a counter with a label, a histogram."""

    families = (
        Family(
            "odd_things", 'Help with "quotes", a back\\slash\nand a newline.', "counter", ("x",)
        ),
        Family("odd_seconds", "A histogram.", "histogram"),
    )

    def __init__(self) -> None:
        self.value = 1.0

    def rows(self):  # type: ignore[no-untyped-def]
        buckets = (("0.5", 1.0), ("+Inf", self.value))
        yield 'a"b\\c\nd', ((((('say "hi"',), self.value),), (((), (buckets, 0.25)),)))
        yield "plain", (((("1e+21",), 1e21),), ())


def test_escaping_large_values_and_histograms_match_too() -> None:
    odd = Odd()
    exposition = Exposition([odd])
    for value in (1.0, 2.0, 1_764_068_400.125):
        odd.value = value
        assert exposition.render() == generate_latest(odd)
        assert exposition.render(openmetrics=True) == generate_openmetrics(odd)  # type: ignore[no-untyped-call]


def test_families_refuse_unsorted_labels() -> None:
    with pytest.raises(ValueError, match="sorted"):
        Family("x", "y", "gauge", ("kind", "class"))
