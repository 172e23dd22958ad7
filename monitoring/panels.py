"""Prometheus queries for the dashboards' panels, all against the chosen datasource."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    Threshold,
    ThresholdsMode,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")


def query(
    expr: str, legend: str = "", *, instant: bool = False, table_format: bool = False
) -> prometheus.Dataquery:
    made = prometheus.Dataquery().expr(expr).datasource(DATASOURCE)
    if legend:
        made = made.legend_format(legend)
    if instant:
        made = made.instant()
    if table_format:
        made = made.format(PromQueryFormat.TABLE)
    return made


#: Units Grafana shows after a rate of things that are not requests.
MESSAGES_PER_S = "suffix: msg/s"
EVENTS_PER_S = "suffix: events/s"


def thresholds(*steps: tuple[float | None, str]) -> db.ThresholdsConfig:
    """Absolute thresholds, from the base colour (``None``) up."""
    return (
        db.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for value, color in steps])
    )


def merged(*hidden: str, rename: dict[str, str] | None = None) -> list[DataTransformerConfig]:
    """Transformations that make a table of several instant queries one table: the frames
    merged on their common labels, ``hidden`` columns dropped, others renamed."""
    return [
        DataTransformerConfig(id_val="merge", options={}),
        DataTransformerConfig(
            id_val="organize",
            options={
                "excludeByName": dict.fromkeys(("Time", "__name__", *hidden), True),
                "renameByName": rename or {},
            },
        ),
    ]
