"""The dashboards' "Canary probes" and "Remediation" rows: whether probes between two
accounts arrive, and what the sidecar did about a deaf session (docs/reference.md,
"probe" and "remediation"). Empty for accounts without probes, or never remediated."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import timeseries

from monitoring.panels import query


def probes_row(board: db.Dashboard, selector: str, *, by_account: bool) -> db.Dashboard:
    """The row for the accounts ``selector`` picks; ``by_account``: one line per account."""
    by = "account, " if by_account else ""
    who = "{{account}} " if by_account else ""
    return (
        board.with_row(db.Row("Canary probes"))
        .with_panel(
            timeseries.Panel()
            .title("Probes sent and failed")
            .description(
                "Probes this account sent, and failures by reason: send_failed (its own"
                " sends), not_received (a probe to it that never arrived), unexpected."
            )
            .unit("suffix: probes/min")
            .with_target(
                query(
                    f"sum by ({by}job) (increase(whatsapp_probes_sent_total{{{selector}}}[1m]))",
                    f"{who}sent",
                )
            )
            .with_target(
                query(
                    f"sum by ({by}reason) (increase(whatsapp_probe_failures_total"
                    f"{{{selector}}}[1m]))",
                    f"{who}{{{{reason}}}}",
                ).ref_id("B")
            )
            .span(8)
            .height(8)
        )
        .with_panel(
            timeseries.Panel()
            .title("Probe delivery (p95)")
            .description("From a probe's send to its arrival at this account.")
            .unit("s")
            .with_target(
                query(
                    f"histogram_quantile(0.95, sum by ({by}le) (rate("
                    f"whatsapp_probe_delivery_seconds_bucket{{{selector}}}[$__rate_interval])))",
                    f"{who}p95",
                )
            )
            .span(8)
            .height(8)
        )
        .with_panel(
            timeseries.Panel()
            .title("Since a probe last arrived")
            .description(
                "Growing past two probe intervals: probes are lost, and the verdict says"
                " probe_not_received."
            )
            .unit("s")
            .with_target(
                query(
                    f"time() - whatsapp_probe_last_success_timestamp_seconds{{{selector}}}",
                    "{{account}}" if by_account else "since last probe",
                )
            )
            .span(8)
            .height(8)
        )
    )


def remediation_row(board: db.Dashboard, selector: str, *, by_account: bool) -> db.Dashboard:
    """What the remediation ladder did, and who needs a person."""
    by = "account, " if by_account else ""
    who = "{{account}} " if by_account else ""
    return (
        board.with_row(db.Row("Remediation"))
        .with_panel(
            timeseries.Panel()
            .title("Remediation steps")
            .description(
                "Re-pairs started and the ladder's steps for a deaf session: reconnect,"
                " recovered, needs_repair (a person has to re-pair it)."
            )
            .with_target(
                query(
                    f"sum by ({by}step) (increase(whatsapp_remediation_steps_total"
                    f"{{{selector}}}[$__rate_interval]))",
                    f"{who}{{{{step}}}}",
                )
            )
            .span(12)
            .height(7)
        )
        .with_panel(
            timeseries.Panel()
            .title("Needs a person")
            .description(
                "1 when a reconnect did not cure a deaf session (WhatsappAccountNeedsRepair):"
                " re-pair it from its pair page."
            )
            .with_target(
                query(
                    f"whatsapp_account_needs_repair{{{selector}}}",
                    "{{account}}" if by_account else "needs repair",
                )
            )
            .span(12)
            .height(7)
        )
    )
