"""A state a person has to act on says what to do (issue 19): an unpaired account how
to pair it, in the health object's ``nextStep`` and on the log line of the change."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from sidecar import testing as build
from sidecar.adapters.health_json import health_json
from sidecar.domain.account import Status
from sidecar.domain.next_step import next_step

from .support.config import AssemblyFactory, ConfigFactory

T0 = 1_764_068_400.0


@pytest.mark.parametrize(
    ("status", "source", "says"),
    [
        (Status.QR_PENDING, "neonize", "not paired: pair it on the page /accounts/sales/pair"),
        (Status.LOGGED_OUT, "neonize", "logged out: re-pair it on the page /accounts/sales/pair"),
        (Status.REPLACED, "neonize", "WhatsappStreamReplaced"),
        (Status.BANNED, "neonize", "WhatsappAccountBanned"),
        (Status.OUTDATED, "neonize", "upgrade wa-sidecar"),
        (Status.QR_PENDING, "ingest", "re-pair it in the gateway"),
        (Status.LOGGED_OUT, "ingest", "re-pair it in the gateway"),
    ],
)
def test_a_state_a_person_acts_on_says_what_to_do(status: Status, source: str, says: str) -> None:
    step = next_step("sales", status, source)
    assert step is not None
    assert says in step


@pytest.mark.parametrize(
    "status", [Status.CONNECTING, Status.CONNECTED, Status.DISCONNECTED, Status.STOPPED]
)
def test_a_state_nobody_acts_on_says_nothing(status: Status) -> None:
    assert next_step("sales", status, "neonize") is None
    assert next_step("sales", status, "ingest") is None


def test_an_unpaired_account_says_how_to_pair_it_in_health_and_log(
    make_config: ConfigFactory,
    make_assembly: AssemblyFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sidecar = make_assembly(make_config([{"id": "sales"}])).sidecar
    with caplog.at_level(logging.INFO, logger="sidecar.core.pipeline"):
        sidecar.handle("sales", build.qr_with_code("2@made-up-code,for-the-test"), T0)
        health: dict[str, Any] = health_json(sidecar.health("sales"))
        assert health["status"] == "qr_pending"
        assert health["nextStep"] == (
            "not paired: pair it on the page /accounts/sales/pair or with `wa-sidecar pair sales --config CONFIG`"
        )
        sidecar.handle("sales", build.connected(), T0 + 60)
        assert health_json(sidecar.health("sales"))["nextStep"] is None
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (
        logging.WARNING,
        "account=sales status connecting -> qr_pending: not paired: pair it on the page"
        " /accounts/sales/pair or with `wa-sidecar pair sales --config CONFIG`",
    ) in lines
    assert (logging.INFO, "account=sales status qr_pending -> connected") in lines
    assert not any("made-up" in line for _, line in lines)  # never the QR code
