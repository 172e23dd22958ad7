"""What every alert rule shares: how it groups by account and the annotations it carries.

The links in annotations (the runbook, the account's re-pair page) are read at alert
time from the sidecar's own ``whatsapp_sidecar_links_info`` (its ``http.external_url``
and ``http.runbook_url``), so the shipped rules link to where the sidecar really is
without being regenerated; the configured URLs here are only the fallback for a sidecar
that exports none (it is down, or older).
"""

from __future__ import annotations

from monitoring.config import MonitoringConfig

BY_ACCOUNT = "job, instance, account"
#: The query a link is read from: the links of the sidecar the alert is about.
LINKS_QUERY = "whatsapp_sidecar_links_info{job=%q,instance=%q}"


def link(label: str, fallback: str) -> str:
    """A template that prints the sidecar's ``label`` (external_url or runbook_url), or
    ``fallback`` when it exports none."""
    return (
        f'{{{{ with query (printf "{LINKS_QUERY}" $labels.job $labels.instance) }}}}'
        f'{{{{ . | first | label "{label}" }}}}{{{{ else }}}}{fallback}{{{{ end }}}}'
    )


def repair_url(config: MonitoringConfig) -> str:
    """The account's re-pair page, on the sidecar the alert is about."""
    return f"{link('external_url', config.external_url)}/accounts/{{{{ $labels.account }}}}/pair"


def alert_annotations(
    config: MonitoringConfig, anchor: str, summary: str, description: str, *, repair: bool
) -> dict[str, str]:
    """summary, description and runbook link; ``repair``: the account's re-pair page too."""
    annotations = {
        "summary": summary,
        "description": description,
        "runbook_url": f"{link('runbook_url', config.runbook)}#{anchor}",
    }
    if repair:
        annotations["repair_url"] = repair_url(config)
    return annotations


def repair_line(config: MonitoringConfig) -> str:
    """The sentence that ends a description whose fix is a re-pair."""
    return f" Re-pair it: {repair_url(config)}"
