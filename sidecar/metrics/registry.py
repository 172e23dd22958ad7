"""Where collectors are registered: a prometheus_client registry (for tests and
anything that reads samples) and the fast exposition /metrics serves, kept in step."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.registry import Collector, CollectorRegistry

from sidecar.metrics.exposition import Exposition


class Metrics:
    """Every collector of the process, registered once in both places.

    The registry describes each collector as it is registered, so a family name
    used twice raises ``ValueError`` at start-up instead of yielding a /metrics
    that Prometheus refuses."""

    def __init__(self, collectors: Iterable[Collector] = ()) -> None:
        #: A registry of our own: nothing global, nothing from other libraries.
        self.registry = CollectorRegistry(auto_describe=False)
        self.exposition = Exposition()
        for collector in collectors:
            self.register(collector)

    def register(self, collector: Collector) -> None:
        if not callable(getattr(collector, "describe", None)):
            raise TypeError(f"{type(collector).__name__} must describe() its families")
        self.registry.register(collector)
        self.exposition.register(collector)

    def render(self, openmetrics: bool = False) -> bytes:
        return self.exposition.render(openmetrics)
