"""Every family is declared once and registered once: a duplicate fails at registration."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from sidecar.compose import Assembly, assemble, build_app, build_repairs, live_source
from sidecar.core.clock import ReplayClock
from sidecar.core.repair import RecordingControl
from sidecar.core.replay import ReplayErrors
from sidecar.metrics.collectors import FamiliesCollector, ProcessCollector
from sidecar.metrics.families import ALL, REPLAY_ERRORS
from sidecar.metrics.registry import Metrics

from .support.config import ConfigFactory


def collected(metrics: Metrics) -> set[str]:
    """The family names a scrape of the registry returns (empty families included)."""
    return {metric.name for metric in metrics.registry.collect()}


def test_family_names_are_unique() -> None:
    names = [family.name for family in ALL]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_a_family_registered_twice_is_refused_at_registration() -> None:
    class Again(FamiliesCollector):
        families = (REPLAY_ERRORS,)

    metrics = Metrics([ProcessCollector(ReplayErrors(), "1.0")])
    with pytest.raises(ValueError, match="whatsapp_replay_errors"):
        metrics.register(Again())


def test_a_collector_that_cannot_describe_itself_is_refused() -> None:
    class Silent(Collector):
        def collect(self) -> Iterator[Metric]:
            return iter(())

    with pytest.raises(TypeError, match="Silent must describe"):
        Metrics([Silent()])


def test_a_full_assembly_registers_every_declared_family(
    make_config: ConfigFactory, clock: ReplayClock
) -> None:
    loaded = make_config(
        [
            {"id": "sales", "probe": {"peer": "support"}},
            {"id": "support"},
            {"id": "shop", "source": "ingest"},  # the ingest families
        ],
        send={"enabled": True},
    )
    assembly: Assembly = assemble(loaded, clock)
    try:
        live_source(assembly, None)  # builds the send path (nothing connects until it runs)
        build_app(assembly, repairs=build_repairs(assembly, RecordingControl()))
        missing = {f.name for f in ALL} - collected(assembly.metrics)
        # the lease families need Firestore leases configured (tests/test_leases.py)
        assert missing == {"whatsapp_lease_held", "whatsapp_leases_lost"}
    finally:
        assert assembly.sending is not None
        asyncio.run(assembly.sending.worker.close())
        assembly.close()
