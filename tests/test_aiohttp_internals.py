"""The aiohttp internals HardenedAppRunner relies on, checked one by one.

sidecar/adapters/http/hardening.py subclasses aiohttp's runner, server and
connection handler and reads private attributes. A new aiohttp may rename or
reshape any of them without notice; these tests name the one that changed
instead of leaving a puzzling failure in the abuse tests (or none at all).
The installed version is also checked against the range pinned in
pyproject.toml, so raising the bound without re-checking shows up here.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import tomllib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_writer import StreamWriter
from aiohttp.test_utils import make_mocked_request
from packaging.requirements import Requirement
from packaging.version import Version

from sidecar.adapters.http import HardenedAppRunner, HttpLimits
from sidecar.adapters.http.hardening import (
    _ConnectionHandler,
    _Server,
    continue_if_expected,
)
from sidecar.compose import build_app

from .support.config import AssemblyFactory, ConfigFactory

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
LIMITS = HttpLimits(header_timeout=7.0, lingering=1.5)


def broken(internal: str, detail: str) -> NoReturn:
    """Fail naming the internal, and what to do about it."""
    pytest.fail(
        f"aiohttp {aiohttp.__version__}: {internal} has changed: {detail}. "
        "HardenedAppRunner depends on this; re-check sidecar/adapters/http/hardening.py "
        "before raising the aiohttp bound.",
        pytrace=False,
    )


def require(ok: bool, internal: str, detail: str) -> None:
    if not ok:
        broken(internal, detail)


def parameters(function: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(function).parameters)


@pytest.fixture
async def runners(
    make_config: ConfigFactory, make_assembly: AssemblyFactory
) -> AsyncIterator[tuple[web.AppRunner, HardenedAppRunner]]:
    """A plain and a hardened runner, set up (which makes their servers) but listening
    nowhere: no socket is opened."""

    def app() -> web.Application:
        return build_app(make_assembly(make_config([{"id": "sales"}])), limits=LIMITS)

    plain = web.AppRunner(app())
    hardened = HardenedAppRunner(app())
    try:
        await plain.setup()
        await hardened.setup()
    except Exception as exc:
        broken("web.AppRunner.setup / _make_server", f"setting a runner up raised {exc!r}")
    yield plain, hardened
    await hardened.cleanup()
    await plain.cleanup()


# -- AppRunner._make_server ------------------------------------------------------------


def test_app_runner_makes_its_server_in_an_overridable_coroutine() -> None:
    make_server = vars(web.AppRunner).get("_make_server")
    require(make_server is not None, "web.AppRunner._make_server", "AppRunner no longer has it")
    assert make_server is not None
    require(
        inspect.iscoroutinefunction(make_server),
        "web.AppRunner._make_server",
        "it is no longer a coroutine function",
    )
    require(
        list(parameters(make_server)) == ["self"],
        "web.AppRunner._make_server",
        f"it takes {list(parameters(make_server))}, not just self",
    )


async def test_make_server_returns_a_server_and_the_override_is_used(
    runners: tuple[web.AppRunner, HardenedAppRunner],
) -> None:
    plain, hardened = runners
    require(
        type(plain.server) is web.Server,
        "web.AppRunner._make_server",
        f"it returned {type(plain.server)!r}, not a web.Server",
    )
    require(
        type(hardened.server) is _Server,
        "web.BaseRunner.setup",
        "the server it keeps is not the one _make_server returned",
    )


# -- web.Server: its constructor and the attributes copied from it ----------------------


def test_server_takes_the_arguments_hardened_app_runner_passes() -> None:
    params = parameters(web.Server.__init__)
    names = list(params)
    require(names[:2] == ["self", "handler"], "web.Server(handler, ...)", f"it takes {names}")
    for name in ("request_factory", "handler_cancellation"):
        require(
            name in params and params[name].kind is inspect.Parameter.KEYWORD_ONLY,
            f"web.Server({name}=...)",
            "it is not a keyword argument any more",
        )
    require(
        any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()),
        "web.Server(**kwargs)",
        "it no longer takes the connection handler's arguments as **kwargs",
    )


async def test_server_keeps_what_the_hardened_server_copies(
    runners: tuple[web.AppRunner, HardenedAppRunner],
) -> None:
    plain, hardened = runners
    assert plain.server is not None
    assert hardened.server is not None
    for name in ("request_handler", "request_factory", "handler_cancellation", "_kwargs", "_loop"):
        require(hasattr(plain.server, name), f"web.Server.{name}", "the attribute is gone")
    kwargs = plain.server._kwargs
    require(isinstance(kwargs, dict), "web.Server._kwargs", f"it is a {type(kwargs)!r}, not a dict")
    for name in ("keepalive_timeout", "lingering_time", "auto_decompress"):
        require(
            name in kwargs,
            "web.Server._kwargs",
            f"the app's handler_args ({name}) no longer reach it",
        )
    require(
        hardened.server._kwargs == kwargs,
        "web.Server._kwargs",
        "the hardened server does not get the same connection handler arguments",
    )
    require(
        getattr(hardened.server.request_handler, "__self__", None) is hardened.app
        and hardened.server.handler_cancellation == plain.server.handler_cancellation,
        "web.Server.request_handler / handler_cancellation",
        "they are not carried over to the hardened server",
    )


def test_request_factory_is_called_with_positional_arguments() -> None:
    """_without_odd_expectations wraps it as ``make(*args)``."""
    params = parameters(web.Server._make_request)
    require(
        all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params.values()),
        "web.Server._make_request (the default request_factory)",
        f"its parameters are {[str(p) for p in params.values()]}, not all positional",
    )
    require(
        "headers" in parameters(web.BaseRequest.clone),
        "web.BaseRequest.clone(headers=...)",
        "it no longer takes headers",
    )


# -- the connection handler: its constructor and handle_error ---------------------------


async def test_the_hardened_server_makes_connection_handlers_from_its_kwargs(
    runners: tuple[web.AppRunner, HardenedAppRunner],
) -> None:
    _, hardened = runners
    assert hardened.server is not None
    try:
        handler = hardened.server()  # what the event loop calls for each new connection
    except TypeError as exc:
        broken("web.RequestHandler(manager, loop=..., **kwargs)", str(exc))
    require(
        isinstance(handler, _ConnectionHandler),
        "web.Server.__call__",
        "the hardened server's override is not the protocol factory",
    )
    require(
        handler.keepalive_timeout == LIMITS.header_timeout,
        "web.RequestHandler(keepalive_timeout=...)",
        "the header timeout does not reach the connection",
    )


def test_request_handler_takes_the_handler_args_create_app_sets() -> None:
    params = parameters(web.RequestHandler.__init__)
    require(
        list(params)[:2] == ["self", "manager"],
        "web.RequestHandler(manager, ...)",
        f"it takes {list(params)}",
    )
    for name in ("loop", "keepalive_timeout", "lingering_time", "auto_decompress"):
        require(name in params, f"web.RequestHandler({name}=...)", "the argument is gone")


def test_handle_error_has_the_signature_the_override_keeps() -> None:
    base = getattr(web.RequestHandler, "handle_error", None)
    require(base is not None, "web.RequestHandler.handle_error", "it is gone")
    assert base is not None
    require(
        not inspect.iscoroutinefunction(base),
        "web.RequestHandler.handle_error",
        "it became a coroutine function",
    )
    theirs = [(p.name, p.kind, p.default) for p in parameters(base).values()]
    ours = [
        (p.name, p.kind, p.default) for p in parameters(_ConnectionHandler.handle_error).values()
    ]
    require(
        theirs == ours,
        "web.RequestHandler.handle_error",
        f"it takes {theirs}; the override takes {ours}",
    )


# -- the writer's output_size -------------------------------------------------------------


class _Transport:
    def __init__(self) -> None:
        self.sent = bytearray()

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.sent += data


class _Protocol:
    def __init__(self) -> None:
        self.transport = _Transport()


def test_writers_count_their_output_in_output_size() -> None:
    require(
        "output_size" in vars(AbstractStreamWriter) or hasattr(StreamWriter, "output_size"),
        "AbstractStreamWriter.output_size",
        "the attribute is gone",
    )


async def test_100_continue_is_sent_and_not_counted_as_the_response() -> None:
    """handle_error tells "a response has started" by output_size > 0; the interim
    100 Continue written straight to the writer must not count."""
    protocol = _Protocol()
    writer = StreamWriter(protocol, asyncio.get_running_loop())  # type: ignore[arg-type]
    request = make_mocked_request("POST", "/", headers={"Expect": "100-continue"}, writer=writer)
    await writer.write(b"x")
    require(
        writer.output_size == 1,
        "StreamWriter.output_size",
        f"it reads {writer.output_size} after 1 byte written",
    )
    writer.output_size = 0
    await continue_if_expected(request)
    require(
        bytes(protocol.transport.sent) == b"xHTTP/1.1 100 Continue\r\n\r\n",
        "StreamWriter.write",
        f"it sent {bytes(protocol.transport.sent)!r}",
    )
    require(
        writer.output_size == 0,
        "StreamWriter.output_size",
        "it cannot be reset after the interim response",
    )


# -- the pinned range ----------------------------------------------------------------------


def aiohttp_requirement() -> Requirement:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    found = [Requirement(d) for d in dependencies if Requirement(d).name == "aiohttp"]
    assert len(found) == 1, f"one aiohttp requirement expected in pyproject.toml: {found}"
    return found[0]


def test_aiohttp_has_an_upper_bound() -> None:
    requirement = aiohttp_requirement()
    assert any(s.operator in ("<", "<=", "==", "~=") for s in requirement.specifier), (
        f"pyproject.toml's {requirement} lets any future aiohttp in. "
        "HardenedAppRunner depends on aiohttp internals; keep an upper bound."
    )


def test_installed_aiohttp_is_in_the_pinned_range() -> None:
    requirement = aiohttp_requirement()
    installed = Version(importlib.metadata.version("aiohttp"))
    assert requirement.specifier.contains(installed, prereleases=True), (
        f"aiohttp {installed} is installed; pyproject.toml pins {requirement}. "
        "HardenedAppRunner depends on aiohttp internals; re-check "
        "sidecar/adapters/http/hardening.py before raising the aiohttp bound."
    )
