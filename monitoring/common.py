"""What every alert rule shares: how it groups by account and the annotations it carries."""

from __future__ import annotations

from monitoring.config import MonitoringConfig

BY_ACCOUNT = "job, instance, account"


def alert_annotations(
    config: MonitoringConfig, anchor: str, summary: str, description: str, *, repair: bool
) -> dict[str, str]:
    """summary, description and runbook link; ``repair``: the account's re-pair page too."""
    annotations = {
        "summary": summary,
        "description": description,
        "runbook_url": f"{config.runbook_url}#{anchor}",
    }
    if repair:
        annotations["repair_url"] = f"{config.external_url}/accounts/{{{{ $labels.account }}}}/pair"
    return annotations


def repair_line(config: MonitoringConfig) -> str:
    """The sentence that ends a description whose fix is a re-pair."""
    return f" Re-pair it: {config.external_url}/accounts/{{{{ $labels.account }}}}/pair"
