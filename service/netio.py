"""The upstream client's network I/O on plain asyncio streams (an httpcore network backend).

In:  the gateway's ``httpx.Limits``. Out: :func:`upstream_transport`, an ``httpx.AsyncHTTPTransport`` whose
connection pool (httpcore: pooling, keep-alive, HTTP/1.1 framing, timeouts) reads and writes through
:class:`AsyncioBackend` instead of httpcore's default anyio backend.

Why (issue 13, py-spy on the pure proxy path): the anyio streams were ~21% of the gateway's CPU, and most of
the connection pool's bookkeeping was its idle-connection check, which asks every pooled connection for its
raw socket through anyio's typed attributes and then ``poll()``\\s it, on every request (~14%). Here a
connection's ``is_readable`` is what the event loop already knows: the stream has seen EOF or an error, or
its transport is closing. The only thing given up is noticing a server's FIN that the loop has not read yet
when a request picks that idle connection; the request then fails as a network error, which the fallback
handles like any other (keep-alive expiry makes it rare).

Errors are httpcore's own (``ConnectError``, ``ReadTimeout``, ...), which httpx maps to its exceptions, so
nothing above the transport changes. Proxies from the environment keep httpx's default transports.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore
import httpx

__all__ = ["AsyncioBackend", "AsyncioStream", "upstream_transport"]

_COALESCE_BYTES = 1 << 16  # writes held back for one loop step, at most
_SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]


@contextlib.contextmanager
def _mapped(timeout: type[Exception], broken: type[Exception]) -> Iterator[None]:
    try:
        yield
    except TimeoutError as exc:
        raise timeout(str(exc) or "timed out") from exc
    except (OSError, ssl.SSLError, EOFError) as exc:
        raise broken(str(exc) or type(exc).__name__) from exc


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One connection. Writes made in the same event-loop step go out in one ``send()``: httpcore writes a
    request's head and body separately, and two small sends cost twice the syscalls (and two packets)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._pending: list[bytes] = []

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._flush()
        with _mapped(httpcore.ReadTimeout, httpcore.ReadError):
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        with _mapped(httpcore.WriteTimeout, httpcore.WriteError):
            if self._writer.transport.is_closing():
                raise ConnectionResetError("the connection is closed")
            if not self._pending:
                asyncio.get_running_loop().call_soon(self._flush)
            self._pending.append(buffer)
            if sum(map(len, self._pending)) >= _COALESCE_BYTES:
                self._flush()
            async with asyncio.timeout(timeout):
                await self._writer.drain()  # returns at once unless the transport's buffer is over its limit

    def _flush(self) -> None:
        if self._pending:
            data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending.clear()
            if not self._writer.transport.is_closing():
                self._writer.write(data)

    async def aclose(self) -> None:
        self._pending.clear()
        self._writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await self._writer.wait_closed()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        try:
            with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
                async with asyncio.timeout(timeout):
                    await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except Exception:
            await self.aclose()
            raise
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # httpcore: an idle connection that is readable was closed by the server
            closing = self._writer.transport.is_closing()
            return closing or self._reader.at_eof() or self._reader.exception() is not None
        names = {"ssl_object": "ssl_object", "client_addr": "sockname", "server_addr": "peername", "socket": "socket"}
        return self._writer.get_extra_info(names[info]) if info in names else None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        local = (local_address, 0) if local_address else None
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, local_addr=local, limit=1 << 20)
        _set_options(writer, socket_options)  # asyncio sets TCP_NODELAY itself
        return AsyncioStream(reader, writer)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[_SocketOption] | None = None
    ) -> httpcore.AsyncNetworkStream:
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(path, limit=1 << 20)
        _set_options(writer, socket_options)
        return AsyncioStream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _set_options(writer: asyncio.StreamWriter, options: Iterable[_SocketOption] | None) -> None:
    sock = writer.get_extra_info("socket")
    for option in options or ():
        sock.setsockopt(*option)


def upstream_transport(limits: httpx.Limits, verify: ssl.SSLContext | bool = True) -> httpx.AsyncHTTPTransport:
    """httpx's HTTP/1.1 transport with its TLS context (``verify``, as for httpx) and ``limits``, on
    :class:`AsyncioBackend`."""
    transport = httpx.AsyncHTTPTransport(limits=limits, verify=verify)
    pool = transport._pool  # httpx builds the pool (TLS context from the environment, like a plain client)
    assert isinstance(pool, httpcore.AsyncConnectionPool)
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=pool._ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=AsyncioBackend(),
    )
    return transport
