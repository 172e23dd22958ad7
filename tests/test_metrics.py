"""Metrics read back from a fresh registry with get_sample_value, as client_python's own tests do."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from sidecar import testing as build
from sidecar.compose import Assembly
from sidecar.core.clock import ReplayClock
from sidecar.domain.account import Status

from .support.config import AssemblyFactory, ConfigFactory

T0 = 1_764_068_400.0


def sample(assembly: Assembly, name: str, **labels: str) -> float | None:
    return assembly.metrics.registry.get_sample_value(name, labels)


def test_every_account_has_its_series_from_start_up(
    make_config: ConfigFactory, make_assembly: AssemblyFactory
) -> None:
    assembly = make_assembly(make_config([{"id": "sales"}, {"id": "support"}]))
    for account in ("sales", "support"):
        for status in Status:
            expected = 1.0 if status is Status.CONNECTING else 0.0
            assert (
                sample(assembly, "whatsapp_connection_state", account=account, state=status.value)
                == expected
            )
        assert sample(assembly, "whatsapp_session_degraded", account=account) == 0.0
        assert sample(assembly, "whatsapp_reconnects_total", account=account) == 0.0
        assert sample(assembly, "whatsapp_events_total", account=account, event="MessageEv") == 0.0
        assert (
            sample(assembly, "whatsapp_event_errors_total", account=account, event="MessageEv")
            == 0.0
        )
        for cls, kind in [
            ("real", "conversation"),
            ("protocol", "protocolMessage.HISTORY_SYNC_NOTIFICATION"),
            ("other", "empty"),
        ]:
            assert (
                sample(
                    assembly,
                    "whatsapp_messages_received_total",
                    account=account,
                    **{"class": cls, "kind": kind},
                )
                == 0.0
            )
        # no sample before the first real message
        assert (
            sample(assembly, "whatsapp_last_real_message_timestamp_seconds", account=account)
            is None
        )
        assert sample(assembly, "whatsapp_last_real_message_age_seconds", account=account) is None
    assert sample(assembly, "whatsapp_replay_errors_total") == 0.0
    assert (
        assembly.metrics.registry.get_sample_value(
            "whatsapp_sidecar_build_info", {"version": __import__("sidecar").__version__}
        )
        == 1.0
    )


def test_no_created_series_in_either_format(
    make_config: ConfigFactory, make_assembly: AssemblyFactory
) -> None:
    assembly = make_assembly(make_config())
    sidecar = assembly.sidecar
    sidecar.handle("sales", build.message_event(build.text("x")), T0)
    for text in (
        generate_latest(assembly.metrics.registry),
        generate_openmetrics(assembly.metrics.registry),  # type: ignore[no-untyped-call]
    ):
        assert b"_created" not in text
        assert b"whatsapp_messages_received_total{" in text


def test_age_and_verdict_are_computed_at_scrape_time(
    make_config: ConfigFactory, make_assembly: AssemblyFactory, clock: ReplayClock
) -> None:
    assembly = make_assembly(make_config())
    sidecar = assembly.sidecar
    sidecar.handle("sales", build.connected(), T0)
    sidecar.handle("sales", build.message_event(build.text("x")), T0 + 10)
    # protocol traffic during the silence: what makes silence evidence of deafness
    sidecar.handle("sales", build.message_event(build.history_sync_notification()), T0 + 20)
    clock.advance_to(T0 + 70)
    assert (
        sample(assembly, "whatsapp_last_real_message_timestamp_seconds", account="sales") == T0 + 10
    )
    assert sample(assembly, "whatsapp_last_real_message_age_seconds", account="sales") == 60.0
    assert sample(assembly, "whatsapp_session_degraded", account="sales") == 0.0
    clock.advance_to(T0 + 311)  # no event in between: only the clock moved
    assert sample(assembly, "whatsapp_last_real_message_age_seconds", account="sales") == 301.0
    # the evidence is there; the verdict turns once it has held for verdict.confirm (30 s)
    assert sample(assembly, "whatsapp_session_degraded", account="sales") == 0.0
    clock.advance_to(T0 + 341)
    assert sample(assembly, "whatsapp_session_degraded", account="sales") == 1.0
    assert sample(assembly, "whatsapp_connection_state", account="sales", state="connected") == 1.0
    assert sample(assembly, "whatsapp_connection_state", account="sales", state="connecting") == 0.0


def test_counts_by_class_and_kind(
    make_config: ConfigFactory, make_assembly: AssemblyFactory
) -> None:
    assembly = make_assembly(make_config())
    sidecar = assembly.sidecar
    handle = sidecar.handle
    for _ in range(3):
        handle("sales", build.message_event(build.history_sync_notification()), T0)
    handle("sales", build.message_event(build.app_state_key_share()), T0)
    handle("sales", build.message_event(build.text("hi")), T0)
    handle("sales", build.message_event(None), T0)

    def received(cls: str, kind: str) -> float | None:
        return sample(
            assembly,
            "whatsapp_messages_received_total",
            account="sales",
            **{"class": cls, "kind": kind},
        )

    assert received("protocol", "protocolMessage.HISTORY_SYNC_NOTIFICATION") == 3.0
    assert received("protocol", "protocolMessage.APP_STATE_SYNC_KEY_SHARE") == 1.0
    assert received("real", "conversation") == 1.0
    assert received("other", "empty") == 1.0
    assert sample(assembly, "whatsapp_events_total", account="sales", event="MessageEv") == 6.0


def test_labels_never_carry_jids_or_text(
    make_config: ConfigFactory, make_assembly: AssemblyFactory
) -> None:
    assembly = make_assembly(make_config())
    sidecar = assembly.sidecar
    secret_text = "my card number is 4111"
    sidecar.handle(
        "sales", build.message_event(build.text(secret_text), message_id="3EB0SECRETID"), T0
    )
    exposition = generate_latest(assembly.metrics.registry).decode()
    for needle in (
        secret_text,
        build.FICTIONAL_PHONE,
        build.OWN_PHONE,
        "3EB0SECRETID",
        "s.whatsapp.net",
    ):
        assert needle not in exposition


def test_minute_summary_line_per_account_without_personal_data(
    make_config: ConfigFactory,
    make_assembly: AssemblyFactory,
    clock: ReplayClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    assembly = make_assembly(make_config([{"id": "sales"}, {"id": "support"}]))
    sidecar = assembly.sidecar
    sidecar.handle("sales", build.connected(), T0)
    sidecar.handle("sales", build.message_event(build.text("call 12025550123")), T0 + 1)
    sidecar.handle("sales", build.message_event(build.history_sync_notification()), T0 + 2)
    for at in (T0 + 360, T0 + 400):  # evidence seen, then confirmed
        clock.advance_to(at)
        sidecar.evaluate_verdicts()
    caplog.set_level(logging.INFO, logger="sidecar.core.service")
    caplog.clear()  # the verdict's change was logged when it happened; the summary follows
    sidecar.log_summaries()
    assert [r.getMessage() for r in caplog.records if r.name == "sidecar.core.service"] == [
        "account=sales status=connected real=1 protocol=1 other=0 reconnects=0 last_real_age=399s degraded=yes reasons=silence_with_protocol_traffic",
        "account=support status=connecting real=0 protocol=0 other=0 reconnects=0 last_real_age=never degraded=no",
    ]
