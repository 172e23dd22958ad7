"""Where aiohttp is made to answer like the rest of the API: requests that do not parse
as HTTP get a JSON error that quotes nothing, and ``Expect`` headers are answered only
once a body is wanted. This is the one module that reaches into aiohttp's internals
(tests/test_aiohttp_internals.py watches them)."""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from sidecar.adapters.http.common import SECURITY_HEADERS, json_error, log

_RequestFactory = Callable[..., web.BaseRequest]


class _ConnectionHandler(web.RequestHandler):
    """aiohttp's per-connection protocol, except for requests that do not parse as HTTP
    (a line or header too long, a bad method, a byte that has no place there): aiohttp
    answers those in plain text quoting the offending bytes, and logs them with a
    traceback; here they get a JSON error quoting nothing, and a one-line log."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            log.error("error answering a request from %s", request.remote, exc_info=exc)
        else:
            log.info(
                "refused a request from %s that is not valid HTTP (%s)",
                request.remote,
                type(exc).__name__ if exc is not None else status,
            )
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already on its way; dropping the connection")
        text = "bad request" if status == 400 else HTTPStatus(status).phrase.lower()
        response = json_error(status, text)
        response.headers.update(SECURITY_HEADERS)
        response.force_close()
        return response


class _Server(web.Server):
    def __call__(self) -> web.RequestHandler:
        return _ConnectionHandler(self, loop=self._loop, **self._kwargs)


def _without_odd_expectations(factory: _RequestFactory) -> _RequestFactory:
    """Requests without an ``Expect`` other than 100-continue, which would otherwise
    get aiohttp's text 417 quoting it on paths that match no route."""

    def make(*args: Any) -> web.BaseRequest:
        request = factory(*args)
        expect = request.headers.get("Expect")
        if expect is not None and expect.strip().lower() != "100-continue":
            headers = CIMultiDict(request.headers)
            del headers["Expect"]
            request = request.clone(headers=headers)
        return request

    return make


class HardenedAppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer malformed requests in JSON, without
    echoing them (:class:`_ConnectionHandler`), and ignore odd ``Expect`` headers.
    Use it wherever the app is served."""

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        return _Server(
            plain.request_handler,
            request_factory=_without_odd_expectations(plain.request_factory),
            handler_cancellation=plain.handler_cancellation,
            **plain._kwargs,
        )


async def expect_nothing_yet(_request: web.Request) -> None:
    """aiohttp answers ``Expect: 100-continue`` on routing, before the token and the
    size are checked, and any other expectation with a text 417 that quotes it. Here
    "100 Continue" waits until the body is wanted (:func:`continue_if_expected`), and
    other expectations are ignored, as RFC 9110 allows."""


async def continue_if_expected(request: web.Request) -> None:
    """Send "100 Continue" if the client waits for it: call only once the request is
    authenticated, within its size limit, and its body is about to be read."""
    if _expects_continue(request):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the response proper has not started


def _expects_continue(request: web.Request) -> bool:
    expect = request.headers.get("Expect", "")
    return request.version >= (1, 1) and expect.strip().lower() == "100-continue"
