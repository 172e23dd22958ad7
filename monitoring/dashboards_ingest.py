"""The dashboards' "Ingest" row, for accounts whose session lives in another gateway:
what the gateway posts, what was refused, and how long since it last posted
(docs/ingest.md; the alerts in monitoring/alerts_ingest.py). Empty for neonize accounts."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import timeseries

from monitoring.panels import EVENTS_PER_S, query


def ingest_row(board: db.Dashboard, selector: str, *, by_account: bool) -> db.Dashboard:
    """The row for the accounts ``selector`` picks; ``by_account``: one line per account
    (the overview), else lines for the one account the dashboard shows."""
    by = "account, " if by_account else ""
    who = "{{account}} " if by_account else ""
    return (
        board.with_row(db.Row("Ingest (sessions in another gateway)"))
        .with_panel(
            timeseries.Panel()
            .title("Events the gateway posted, by outcome")
            .description(
                "accepted: measured. duplicate: a retry of one already taken. ignored: an"
                " event that says nothing measured. unreadable: a message whose JSON is not a"
                " WhatsApp message (WhatsappIngestRefused)."
            )
            .unit(EVENTS_PER_S)
            .with_target(
                query(
                    f"sum by ({by}outcome) "
                    f"(rate(whatsapp_ingest_events_total{{{selector}}}[$__rate_interval]))",
                    f"{who}{{{{outcome}}}}",
                )
            )
            .span(8)
            .height(8)
        )
        .with_panel(
            timeseries.Panel()
            .title("Requests refused, by reason")
            .description(
                "bad_body, unknown_event, too_large: none of their events was measured"
                " (WhatsappIngestRefused)."
            )
            .unit("reqps")
            .with_target(
                query(
                    f"sum by ({by}reason) (rate(whatsapp_ingest_requests_refused_total"
                    f"{{{selector}}}[$__rate_interval]))",
                    f"{who}{{{{reason}}}}",
                )
            )
            .span(8)
            .height(8)
        )
        .with_panel(
            timeseries.Panel()
            .title("Since the gateway last posted")
            .description(
                "Past the account's effective silence threshold while the gateway's last"
                " word was connected: WhatsappIngestSilent (its forwarder or webhook has"
                " probably stopped)."
            )
            .unit("s")
            .with_target(
                query(
                    f"time() - whatsapp_ingest_last_request_timestamp_seconds{{{selector}}}",
                    "{{account}}" if by_account else "since last post",
                )
            )
            .with_target(
                query(
                    f"whatsapp_effective_silence_threshold_seconds{{{selector}}}"
                    " and on (job, instance, account)"
                    f" whatsapp_ingest_last_request_timestamp_seconds{{{selector}}}",
                    f"{who}threshold",
                ).ref_id("B")
            )
            .span(8)
            .height(8)
        )
    )
