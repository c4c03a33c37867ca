"""Running an app with uvicorn the way both services do: JSON logs, no uvicorn access log, bounded connections.

``serve_app(make_app, host, port, log_level, server_settings)`` blocks; the gateway (:func:`service.main.serve`)
and the feature worker (:func:`service.worker_app.serve_worker`) both call it. Logging is configured before
the app is built, so start-up lines are JSON too. :func:`build_server` is the same server without running
it (tests serve the real app through it on a loopback socket).

What plain uvicorn (h11) does not do, and :class:`_GatewayH11` adds:

- a request's headers must arrive within ``header_timeout_s`` of the connection opening (or of the previous
  response on a keep-alive connection); otherwise the connection is closed. Without it a client sending
  partial headers holds a connection forever (slowloris);
- a request h11 cannot parse (a bad ``Content-Length``, a broken request line) gets the OpenAI error body,
  not uvicorn's plain-text 400.

:class:`_GatewayServer` tells the app when shutdown begins (``app.state.begin_shutdown(grace_s)``) so that
in-flight streams get ``shutdown_grace_s`` to finish and then end with an SSE error event; uvicorn's own
graceful timeout is set a little longer, so their usage is still recorded before the lifespan closes.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.core.config import ServerSettings
from service.core.errors import error_body
from service.core.logging import configure_logging

__all__ = ["build_server", "serve_app"]

_SHUTDOWN_SLACK_S = 3.0  # after the streams' grace: time to write their error events and record usage


class _GatewayH11(H11Protocol):
    header_timeout_s = 10.0  # set per server by build_server
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm_header_timer()  # headers complete: the app's own timeouts take over
        elif self._header_timer is None and not self.transport.is_closing():
            self._arm_header_timer()  # the next request on a keep-alive connection started arriving

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            self._arm_header_timer()  # part of a pipelined next request is already here
        else:
            self._disarm_header_timer()  # uvicorn's keep-alive timer covers the idle wait for the next request

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.info("closing a connection whose request headers did not arrive in time")
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        self._disarm_header_timer()
        body = json.dumps(
            error_body(
                "malformed HTTP request (check Content-Length and the headers)",
                "invalid_request_error",
                None,
                "invalid_http_request",
            )
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        for event in (h11.Response(status_code=400, headers=headers), h11.Data(data=body), h11.EndOfMessage()):
            try:
                self.transport.write(self.conn.send(event))
            except h11.LocalProtocolError:  # h11 refuses to answer in this state: just close
                break
        self.transport.close()


class _GatewayServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, grace_s: float) -> None:
        super().__init__(config)
        self.grace_s = grace_s

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        begin = getattr(getattr(self.config.loaded_app, "state", None), "begin_shutdown", None)
        if begin is None:  # loaded_app is uvicorn's wrapper around the app when it adds one
            begin = getattr(getattr(self.config.app, "state", None), "begin_shutdown", None)
        if callable(begin):
            begin(self.grace_s)
        await super().shutdown(sockets)


def build_server(app: Any, settings: ServerSettings, host: str = "127.0.0.1", port: int = 0) -> uvicorn.Server:
    """A uvicorn server for ``app`` with the protections above; run it with ``.run()`` (or ``.run(sockets)``)."""
    protocol = type("GatewayH11", (_GatewayH11,), {"header_timeout_s": settings.header_timeout_s})
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        log_config=None,
        access_log=False,  # one JSON line per request comes from GatewayMiddleware
        timeout_keep_alive=max(1, round(settings.keep_alive_s)),
        timeout_graceful_shutdown=round(settings.shutdown_grace_s + _SHUTDOWN_SLACK_S),
        lifespan="on",
    )
    return _GatewayServer(config, settings.shutdown_grace_s)


def serve_app(make_app: Callable[[], Any], host: str, port: int, log_level: str, settings: ServerSettings) -> None:
    """Configure JSON logging, build the app, and run it on ``host:port`` until stopped."""
    configure_logging(log_level)
    build_server(make_app(), settings, host, port).run()
