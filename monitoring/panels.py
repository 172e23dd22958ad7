"""Prometheus queries for the dashboards' panels, all against the chosen datasource."""

from __future__ import annotations

from grafana_foundation_sdk.builders import prometheus
from grafana_foundation_sdk.models.dashboard import DataSourceRef
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
