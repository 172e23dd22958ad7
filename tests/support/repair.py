"""A sidecar with re-pairs wired in, served by aiohttp's test client, for the re-pair tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from sidecar.adapters.http import READY
from sidecar.compose import Assembly, build_app, build_repairs
from sidecar.core.repair import RecordingControl, Repairs

from .config import TOKEN, AssemblyFactory, ConfigFactory

AUTH = {"Authorization": f"Bearer {TOKEN}"}
Client = TestClient[Any, Any]
AiohttpClient = Callable[[web.Application], Awaitable[Client]]


class Harness:
    def __init__(
        self, assembly: Assembly, client: Client, control: RecordingControl, repairs: Repairs
    ) -> None:
        self.assembly, self.client, self.control, self.repairs = assembly, client, control, repairs
        self.sidecar = assembly.sidecar
        self.state_dir = assembly.state_dir
        self.registry = assembly.metrics.registry


#: What the ``make_harness`` fixtures return: a control in (RecordingControl by default).
MakeHarness = Callable[..., Awaitable[Harness]]


def harness_factory(
    make_config: ConfigFactory, make_assembly: AssemblyFactory, aiohttp_client: AiohttpClient
) -> MakeHarness:
    """Accounts sales and support; one re-pair an hour; a 1 s grace after a reconnect."""

    async def make(control: RecordingControl | None = None) -> Harness:
        assembly = make_assembly(
            make_config(
                [{"id": "sales"}, {"id": "support"}], repair={"interval": "1h", "grace": "1s"}
            )
        )
        control = control or RecordingControl()
        repairs = build_repairs(assembly, control)
        app = build_app(assembly, repairs=repairs)
        app[READY].set()
        return Harness(assembly, await aiohttp_client(app), control, repairs)

    return make
