"""The dashboards' "Early warnings" row: what comes before a session dies (docs/phone.md,
docs/operations.md, "Temporary bans and other early signs"): the account's own phone going
away (WhatsApp logs the device out after about 14 days), a temporary ban and its end,
messages that cannot be decrypted, and connections WhatsApp refuses, by reason."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import timeseries

from monitoring.panels import MESSAGES_PER_S, query, thresholds

DAY_S = 86400
#: WhatsApp logs a linked device out about this many days after its phone was last seen.
LOGOUT_AFTER_DAYS = 14


def warnings_row(board: db.Dashboard, selector: str, *, by_account: bool) -> db.Dashboard:
    """The row for the accounts ``selector`` picks; ``by_account``: one line per account."""
    by = "account, " if by_account else ""
    who = "{{account}} " if by_account else ""
    phone = f"whatsapp_primary_phone_last_seen_timestamp_seconds{{{selector}}}"
    undecodable = f'whatsapp_messages_received_total{{{selector},class="other",kind="undecodable"}}'
    return (
        board.with_row(db.Row("Early warnings"))
        .with_panel(
            timeseries.Panel()
            .title("Days since the phone was seen")
            .description(
                "Since the account's own phone last sent, read or synced something. WhatsApp"
                " logs the linked device out after about 14 days without it: a warning at 10,"
                " a page at 12 (WhatsappPhoneOffline). No line: the phone not seen yet."
            )
            .unit("suffix: days")
            .decimals(1)
            .thresholds(thresholds((None, "green"), (10, "orange"), (12, "red")))
            .with_target(
                query(f"(time() - {phone}) / {DAY_S}", "{{account}}" if by_account else "days")
            )
            .span(8)
            .height(8)
        )
        .with_panel(
            timeseries.Panel()
            .title("Days left before WhatsApp logs the device out")
            .description(
                "14 days after the phone was last seen, less the time since. Open WhatsApp on"
                " the phone to reset it."
            )
            .unit("suffix: days")
            .decimals(1)
            .thresholds(thresholds((None, "red"), (2, "orange"), (4, "green")))
            .with_target(
                query(
                    f"({phone} + {LOGOUT_AFTER_DAYS * DAY_S} - time()) / {DAY_S}",
                    "{{account}}" if by_account else "days left",
                )
            )
            .span(8)
            .height(8)
        )
        .with_panel(
            timeseries.Panel()
            .title("Temporary ban: time left")
            .description(
                "While WhatsApp bans the account for a time it said (WhatsappAccountBanned):"
                " how long until the ban ends; the sidecar reconnects by itself a minute"
                " after. No line: not banned."
            )
            .unit("s")
            .with_target(
                query(
                    f"whatsapp_temporary_ban_expiry_timestamp_seconds{{{selector}}} - time()",
                    "{{account}}" if by_account else "ban left",
                )
            )
            .span(8)
            .height(8)
        )
        .with_panel(
            timeseries.Panel()
            .title("Messages that could not be decrypted")
            .description(
                "Undecryptable messages against all messages. A storm (5 or more and a fifth"
                " of all in 15 minutes) is WhatsappUndecryptableStorm; the odd one is normal."
            )
            .unit(MESSAGES_PER_S)
            .with_target(
                query(
                    f"sum by ({by}job) (rate({undecodable}[$__rate_interval]))",
                    f"{who}undecryptable",
                )
            )
            .with_target(
                query(
                    f"sum by ({by}job) (rate(whatsapp_messages_received_total"
                    f"{{{selector}}}[$__rate_interval]))",
                    f"{who}all messages",
                ).ref_id("B")
            )
            .span(12)
            .height(8)
        )
        .with_panel(
            timeseries.Panel()
            .title("Connections WhatsApp refused, by reason")
            .description(
                "whatsmeow's reason for each refused connection (logged_out, temp_banned,"
                " client_outdated, ...). No line: no connection refused since start."
            )
            .with_target(
                query(
                    f"sum by ({by}reason) (increase(whatsapp_connect_failures_total"
                    f"{{{selector}}}[$__rate_interval]))",
                    f"{who}{{{{reason}}}}",
                )
            )
            .span(12)
            .height(8)
        )
    )
