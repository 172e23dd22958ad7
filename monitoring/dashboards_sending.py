"""The dashboards' "Sending" row: what the send path sent, whether it was delivered, and
whether the outbox moves (docs/sending.md; the alerts in monitoring/alerts_sending.py)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import timeseries

from monitoring.panels import MESSAGES_PER_S, query


def _quantile(q: float, histogram: str, selector: str, by: str) -> str:
    return (
        f"histogram_quantile({q}, sum by ({by}le) "
        f"(rate({histogram}_bucket{{{selector}}}[$__rate_interval])))"
    )


def sending_row(board: db.Dashboard, selector: str, *, by_account: bool) -> db.Dashboard:
    """The row for the accounts ``selector`` picks; ``by_account``: one line per account
    (the overview), else lines for the one account the dashboard shows."""
    by = "account, " if by_account else ""
    who = "{{account}} " if by_account else ""
    delivery = "whatsapp_message_delivery_seconds"
    return (
        board.with_row(db.Row("Sending"))
        .with_panel(
            timeseries.Panel()
            .title("Messages sent, by result")
            .description(
                "ok: WhatsApp's server accepted the message. The others are why it did not:"
                " not_connected, timeout, rejected, rate_limited, other."
            )
            .unit(MESSAGES_PER_S)
            .with_target(
                query(
                    f"sum by ({by}result) "
                    f"(rate(whatsapp_messages_sent_total{{{selector}}}[$__rate_interval]))",
                    f"{who}{{{{result}}}}",
                )
            )
            .span(8)
            .height(8)
        )
        .with_panel(
            timeseries.Panel()
            .title("Delivery latency (p50, p95, p99)")
            .description(
                "From the server accepting a message to the recipient's first receipt that"
                " proves it delivered. Messages never delivered are not in it: see the"
                " undelivered panel."
            )
            .unit("s")
            .with_target(query(_quantile(0.5, delivery, selector, by), f"{who}p50"))
            .with_target(query(_quantile(0.95, delivery, selector, by), f"{who}p95").ref_id("B"))
            .with_target(query(_quantile(0.99, delivery, selector, by), f"{who}p99").ref_id("C"))
            .span(8)
            .height(8)
        )
        .with_panel(
            timeseries.Panel()
            .title("Sent, not delivered past the timeout")
            .description(
                "Accepted messages with no delivery receipt after send.delivery_timeout. One"
                " recipient whose phone is off counts here too; the sends_not_delivered"
                " verdict needs 3 different chats in a row."
            )
            .with_target(
                query(
                    f"whatsapp_sent_messages_undelivered{{{selector}}}",
                    "{{account}}" if by_account else "undelivered",
                )
            )
            .span(8)
            .height(8)
        )
        .with_panel(
            timeseries.Panel()
            .title("Outbox by status")
            .description("Messages in the outbox: queued, processing, sent, failed.")
            .with_target(
                query(
                    f"sum by ({by}status) (whatsapp_outbox_messages{{{selector}}})",
                    f"{who}{{{{status}}}}",
                )
            )
            .span(8)
            .height(8)
        )
        .with_panel(
            timeseries.Panel()
            .title("Oldest queued outbox message")
            .description(
                "How long the oldest queued message has waited. No line: nothing is queued."
                " Growing while the account is connected: WhatsappOutboxStuck."
            )
            .unit("s")
            .with_target(
                query(
                    f"whatsapp_outbox_oldest_queued_age_seconds{{{selector}}}",
                    "{{account}}" if by_account else "oldest queued",
                )
            )
            .span(8)
            .height(8)
        )
        .with_panel(
            timeseries.Panel()
            .title("Send duration (p50, p95)")
            .description("From handing a message to WhatsApp to its server accepting it.")
            .unit("s")
            .with_target(
                query(_quantile(0.5, "whatsapp_send_duration_seconds", selector, by), f"{who}p50")
            )
            .with_target(
                query(
                    _quantile(0.95, "whatsapp_send_duration_seconds", selector, by), f"{who}p95"
                ).ref_id("B")
            )
            .span(8)
            .height(8)
        )
    )
