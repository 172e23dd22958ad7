"""Grafana dashboards for wa-sidecar, built with grafana-foundation-sdk.

Two dashboards: an overview of every account, and a drill-down into one.
The datasource, the job and the account are template variables.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import stat, statetimeline, table, timeseries
from grafana_foundation_sdk.models.dashboard import VariableOption, VariableRefresh, VariableSort

from monitoring.alerts import RATE_BY_CLASS
from monitoring.config import MonitoringConfig
from monitoring.dashboards_ingest import ingest_row
from monitoring.dashboards_probes import probes_row, remediation_row
from monitoring.dashboards_sending import sending_row
from monitoring.dashboards_warnings import warnings_row
from monitoring.panels import (
    DATASOURCE,
    EVENTS_PER_S,
    MESSAGES_PER_S,
    merged,
    query,
    thresholds,
)

SEL = 'job=~"$job", account=~"$account"'
#: The state table's three queries as one table with plain column names.
STATE_TABLE = merged(
    "job",
    "Value #A",
    rename={"Value #B": "degraded", "Value #C": "last real message (s ago)"},
)
TAGS = ["wa-sidecar", "whatsapp", "generated"]


def _variables(
    board: db.Dashboard, config: MonitoringConfig, *, multi_account: bool
) -> db.Dashboard:
    return (
        board.with_variable(
            db.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(
            db.QueryVariable("job")
            .label("Job")
            .datasource(DATASOURCE)
            .query("label_values(whatsapp_sidecar_build_info, job)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .current(VariableOption(text=config.job, value=config.job, selected=True))
        )
        .with_variable(
            db.QueryVariable("account")
            .label("Account")
            .datasource(DATASOURCE)
            .query('label_values(whatsapp_connection_state{job=~"$job"}, account)')
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .multi(multi_account)
            .include_all(multi_account)
            .all_value(".*" if multi_account else "")
        )
    )


def overview(config: MonitoringConfig) -> db.Dashboard:
    board = (
        db.Dashboard("wa-sidecar / Overview")
        .uid("wa-sidecar-overview")
        .description("Every WhatsApp account the sidecar holds: state, verdict, traffic, storage.")
        .tags(TAGS)
        .time("now-6h", "now")
        .refresh("30s")
        .timezone("browser")
    )
    board = _variables(board, config, multi_account=True)
    board = (
        board.with_row(db.Row("Accounts"))
        .with_panel(
            stat.Panel()
            .title("Degraded accounts")
            .description("Accounts the sidecar judges connected but deaf.")
            .thresholds(thresholds((None, "green"), (1, "red")))
            .with_target(query(f"sum(whatsapp_session_degraded{{{SEL}}})", instant=True))
            .span(4)
            .height(5)
        )
        .with_panel(
            stat.Panel()
            .title("Connected accounts")
            .description("Accounts whose session is open (or, for ingest, last said open).")
            .thresholds(thresholds((None, "green")))
            .with_target(
                query(f'sum(whatsapp_connection_state{{{SEL}, state="connected"}})', instant=True)
            )
            .span(4)
            .height(5)
        )
        .with_panel(
            stat.Panel()
            .title("Accounts not connected")
            .description(
                "Any state but connected: connecting, qr_pending, disconnected, logged_out, ..."
            )
            .thresholds(thresholds((None, "green"), (1, "orange")))
            .with_target(
                query(f'sum(whatsapp_connection_state{{{SEL}, state!="connected"}})', instant=True)
            )
            .span(4)
            .height(5)
        )
        .with_panel(
            stat.Panel()
            .title("Quiet accounts")
            .description(
                "Connected and silent, with no protocol traffic and no probes: quiet, not deaf."
            )
            .thresholds(thresholds((None, "green"), (1, "blue")))
            .with_target(query(f"sum(whatsapp_session_quiet{{{SEL}}})", instant=True))
            .span(6)
            .height(5)
        )
        .with_panel(
            stat.Panel()
            .title("Accounts that need a person")
            .description(
                "The remediation ladder gave up (needs_repair): re-pair them (the runbook's"
                " WhatsappAccountNeedsRepair)."
            )
            .thresholds(thresholds((None, "green"), (1, "red")))
            .with_target(query(f"sum(whatsapp_account_needs_repair{{{SEL}}})", instant=True))
            .span(6)
            .height(5)
        )
        .with_panel(
            table.Panel()
            .title("Why degraded")
            .description(
                "The evidence behind each degraded verdict (see the runbook for each reason)."
            )
            .with_target(
                query(
                    f"whatsapp_session_degraded_reason{{{SEL}}} == 1",
                    instant=True,
                    table_format=True,
                )
            )
            .span(18)
            .height(5)
        )
        .with_panel(
            table.Panel()
            .title("State of every account")
            .description(
                "One row per account: its connection state, the verdict (1: deaf) and the age"
                " of its last real message in seconds (empty: never had one)."
            )
            .with_target(
                query(
                    f"whatsapp_connection_state{{{SEL}}} == 1", instant=True, table_format=True
                ).ref_id("A")
            )
            .with_target(
                query(
                    f"whatsapp_session_degraded{{{SEL}}}", instant=True, table_format=True
                ).ref_id("B")
            )
            .with_target(
                query(
                    f"whatsapp_last_real_message_age_seconds{{{SEL}}}",
                    instant=True,
                    table_format=True,
                ).ref_id("C")
            )
            .with_transformation(STATE_TABLE[0])
            .with_transformation(STATE_TABLE[1])
            .span(24)
            .height(8)
        )
        .with_row(db.Row("Traffic"))
        .with_panel(
            timeseries.Panel()
            .title("Real vs protocol messages")
            .description(
                "A session whose real rate drops to zero while protocol traffic goes on is deaf."
            )
            .unit(MESSAGES_PER_S)
            .with_target(
                query(
                    f"sum by (account, class) ({RATE_BY_CLASS}{{{SEL}}})", "{{account}} {{class}}"
                )
            )
            .span(12)
            .height(8)
        )
        .with_panel(
            timeseries.Panel()
            .title("Age of the last real message")
            .description(
                "Seconds since each account's last real message; the verdict compares it with"
                " the account's effective threshold (the account dashboard shows both)."
            )
            .unit("s")
            .with_target(query(f"whatsapp_last_real_message_age_seconds{{{SEL}}}", "{{account}}"))
            .span(12)
            .height(8)
        )
        .with_panel(
            timeseries.Panel()
            .title("Reconnects")
            .description("Connection attempts after the first, per interval.")
            .with_target(
                query(
                    f"sum by (account) (increase(whatsapp_reconnects_total{{{SEL}}}[$__rate_interval]))",
                    "{{account}}",
                )
            )
            .span(12)
            .height(8)
        )
        .with_panel(
            timeseries.Panel()
            .title("Degraded verdict")
            .description("1 while the sidecar judges the account connected but deaf.")
            .with_target(query(f"whatsapp_session_degraded{{{SEL}}}", "{{account}}"))
            .span(12)
            .height(8)
        )
        .with_row(db.Row("Storage"))
        .with_panel(
            timeseries.Panel()
            .title("Spooled messages")
            .description("Real messages waiting for the store to confirm them.")
            .with_target(query(f"whatsapp_spool_messages{{{SEL}}}", "{{account}}"))
            .span(8)
            .height(8)
        )
        .with_panel(
            timeseries.Panel()
            .title("Store writes and errors")
            .description("Documents written to the message store, and failed batched writes.")
            .unit("ops")
            .with_target(
                query(
                    'sum by (backend) (rate(whatsapp_store_writes_total{job=~"$job"}[$__rate_interval]))',
                    "{{backend}} writes",
                )
            )
            .with_target(
                query(
                    'sum by (backend) (rate(whatsapp_store_write_errors_total{job=~"$job"}[$__rate_interval]))',
                    "{{backend}} errors",
                ).ref_id("B")
            )
            .span(8)
            .height(8)
        )
        .with_panel(
            timeseries.Panel()
            .title("Store write latency (p95)")
            .description("How long a batched write to the message store takes.")
            .unit("s")
            .with_target(
                query(
                    "histogram_quantile(0.95, sum by (backend, le)"
                    ' (rate(whatsapp_store_write_duration_seconds_bucket{job=~"$job"}[$__rate_interval])))',
                    "{{backend}}",
                )
            )
            .span(8)
            .height(8)
        )
    )
    for row in (warnings_row, probes_row, remediation_row, sending_row, ingest_row):
        board = row(board, SEL, by_account=True)
    return board


def account(config: MonitoringConfig) -> db.Dashboard:
    one = 'job=~"$job", account="$account"'
    board = (
        db.Dashboard("wa-sidecar / Account")
        .uid("wa-sidecar-account")
        .description("One WhatsApp account in detail.")
        .tags(TAGS)
        .time("now-6h", "now")
        .refresh("30s")
        .timezone("browser")
    )
    board = _variables(board, config, multi_account=False)
    board = (
        board.with_panel(
            statetimeline.Panel()
            .title("Connection state")
            .description("The account's connection state over time.")
            .with_target(query(f"max by (state) (whatsapp_connection_state{{{one}}})", "{{state}}"))
            .span(24)
            .height(7)
        )
        .with_panel(
            timeseries.Panel()
            .title("Messages by class and kind")
            .description(
                "Every message event, classified: real (people's messages), protocol (sync"
                " traffic), other. Protocol without real for long is the deaf pattern."
            )
            .unit(MESSAGES_PER_S)
            .with_target(
                query(
                    f"sum by (class, kind) (rate(whatsapp_messages_received_total{{{one}}}[$__rate_interval]))",
                    "{{class}} {{kind}}",
                )
            )
            .span(12)
            .height(9)
        )
        .with_panel(
            timeseries.Panel()
            .title("Events")
            .description("neonize events received, by class name.")
            .unit(EVENTS_PER_S)
            .with_target(
                query(
                    f"sum by (event) (rate(whatsapp_events_total{{{one}}}[$__rate_interval]))",
                    "{{event}}",
                )
            )
            .span(12)
            .height(9)
        )
        .with_panel(
            timeseries.Panel()
            .title("Handler errors")
            .description(
                "Events whose handling raised an error (WhatsappEventHandlerErrors); counted,"
                " not stored."
            )
            .unit(EVENTS_PER_S)
            .with_target(
                query(
                    f"sum by (event) (rate(whatsapp_event_errors_total{{{one}}}[$__rate_interval]))",
                    "{{event}}",
                )
            )
            .span(8)
            .height(8)
        )
        .with_panel(
            timeseries.Panel()
            .title("Last real message: age and threshold")
            .description(
                "The age of the last real message against the effective threshold the verdict"
                " uses (the configured one, or longer at hours the account is usually silent)."
                " Above it with protocol traffic: deaf."
            )
            .unit("s")
            .with_target(query(f"whatsapp_last_real_message_age_seconds{{{one}}}", "age"))
            .with_target(
                query(
                    f"whatsapp_effective_silence_threshold_seconds{{{one}}}", "effective threshold"
                ).ref_id("B")
            )
            .with_target(
                query(f"whatsapp_silence_threshold_seconds{{{one}}}", "configured").ref_id("C")
            )
            .span(8)
            .height(8)
        )
        .with_panel(
            timeseries.Panel()
            .title("Degraded verdict and spool")
            .description(
                "1 while judged deaf; real messages waiting in the local spool for the store."
            )
            .with_target(query(f"whatsapp_session_degraded{{{one}}}", "degraded"))
            .with_target(query(f"whatsapp_spool_messages{{{one}}}", "spooled").ref_id("B"))
            .span(8)
            .height(8)
        )
    )
    for row in (warnings_row, probes_row, remediation_row, sending_row, ingest_row):
        board = row(board, one, by_account=False)
    return board


def dashboards(config: MonitoringConfig) -> dict[str, db.Dashboard]:
    return {
        "wa-sidecar-overview.json": overview(config),
        "wa-sidecar-account.json": account(config),
    }
