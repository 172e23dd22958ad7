"""`promtool test rules` cases of the send path's alerts: each fires where it should and
stays quiet for the look-alikes (one offline recipient, a backlog that drains, an account
that is not connected)."""

from __future__ import annotations

from typing import Any

from monitoring.config import MonitoringConfig
from monitoring.durations import minutes_after
from monitoring.promtool_cases import Cases, series

NOT_DELIVERED = "sends_not_delivered"


def sending_tests(config: MonitoringConfig) -> list[dict[str, Any]]:
    c = Cases(config)

    def s(name: str, values: str, **labels: str) -> dict[str, str]:
        return series(config, name, values, **labels)

    def reason(account: str, values: str, why: str = NOT_DELIVERED) -> dict[str, str]:
        return s("whatsapp_session_degraded_reason", values, account=account, reason=why)

    def state(account: str, values: str, status: str = "connected") -> dict[str, str]:
        return s("whatsapp_connection_state", values, account=account, state=status)

    def accepted(account: str, values: str) -> dict[str, str]:
        return s("whatsapp_messages_sent_total", values, account=account, result="ok")

    def failed(account: str, values: str) -> dict[str, str]:
        return s("whatsapp_outbox_messages", values, account=account, status="failed")

    def oldest(account: str, values: str) -> dict[str, str]:
        return s("whatsapp_outbox_oldest_queued_age_seconds", values, account=account)

    # lost's verdict has the reason from minute 6; the ticket comes once it held for `for`
    tickets_at = minutes_after(6, config.for_sends_not_delivered)
    held = f"1x{tickets_at + 7}"  # until 13 minutes past the ticket
    end = tickets_at + 30
    return [
        {
            "name": "sends not delivered: the verdict's reason makes a ticket once it held for"
            f" `for` ({config.for_sends_not_delivered}); an offline recipient, receipts that"
            " come late or another reason never do",
            "interval": "1m",
            "input_series": [
                # lost: 3 chats in a row undelivered from minute 6, then a delivery
                reason("lost", f"0x5 {held} 0x15"),
                reason("lost", f"0x{end}", "silence_with_protocol_traffic"),
                s(
                    "whatsapp_sent_messages_undelivered",
                    f"0x5 4x{tickets_at + 7} 0x15",
                    account="lost",
                ),
                # offline: one recipient whose phone is off; its undelivered sends pile up
                reason("offline", f"0x{end}"),
                s("whatsapp_sent_messages_undelivered", f"0+1x{end}", account="offline"),
                # late: sends past the timeout, then their receipts came; the sidecar never
                # found the evidence held (verdict.confirm), so its verdict never said so
                reason("late", f"0x{end}"),
                s("whatsapp_sent_messages_undelivered", f"0x5 3x3 0x{end - 9}", account="late"),
                # deaf: degraded for another reason, with a few sends undelivered
                reason("deaf", f"0x{end}"),
                reason("deaf", f"1x{end}", "silence_with_protocol_traffic"),
                s("whatsapp_sent_messages_undelivered", f"2x{end}", account="deaf"),
            ],
            "alert_rule_test": [
                c.expect("WhatsappSendsNotDelivered", f"{tickets_at - 1}m"),
                c.expect(
                    "WhatsappSendsNotDelivered", f"{tickets_at}m", c.account("lost"), value="4"
                ),
                c.expect(
                    "WhatsappSendsNotDelivered", f"{tickets_at + 1}m", c.account("lost"), value="4"
                ),
                # keep_firing_for holds it up with its last value after the delivery
                c.expect(
                    "WhatsappSendsNotDelivered", f"{tickets_at + 18}m", c.account("lost"), value="4"
                ),
                c.expect("WhatsappSendsNotDelivered", f"{tickets_at + 26}m"),
            ],
        },
        {
            "name": "outbox stuck: queued too long or failing while connected; a draining"
            " backlog, good sends beside bad numbers, a disconnected or re-pairing account"
            " never",
            "interval": "1m",
            "input_series": [
                # stuck: connected, the oldest queued message ages, nothing is accepted
                state("stuck", "1x40"),
                oldest("stuck", "0+60x40"),
                accepted("stuck", "0x40"),
                failed("stuck", "0x40"),
                # failing: connected, one more message fails each minute from 11 m
                state("failing", "1x40"),
                accepted("failing", "0x40"),
                failed("failing", "0x10 1+1x29"),
                # draining: reconnects at 10 m with an hour-old backlog and sends it
                state("draining", "0x9 1x31"),
                state("draining", "1x9 0x31", "disconnected"),
                oldest("draining", "3600+60x40"),
                accepted("draining", "0x10 2+2x29"),
                # bad-numbers: some fail, the others are accepted
                state("bad-numbers", "1x40"),
                accepted("bad-numbers", "0+3x40"),
                failed("bad-numbers", "0+1x40"),
                # offline and repairing: messages wait for the connection, as they should
                state("offline", "0x40"),
                state("offline", "1x40", "disconnected"),
                oldest("offline", "0+60x40"),
                accepted("offline", "0x40"),
                state("repairing", "0x40"),
                state("repairing", "1x40", "qr_pending"),
                oldest("repairing", "0+60x40"),
                failed("repairing", "0+1x40"),
            ],
            "alert_rule_test": [
                c.expect("WhatsappOutboxStuck", "9m"),
                c.expect(
                    "WhatsappOutboxStuck",
                    "16m",
                    c.account("stuck", cause="queued_too_long"),
                    value="16m 0s",
                ),
                c.expect(
                    "WhatsappOutboxStuck",
                    "25m",
                    c.account("stuck", cause="queued_too_long", _value="25m 0s"),
                    c.account("failing", cause="sends_failing", _value="15"),
                ),
            ],
        },
    ]
