"""The upstream client's asyncio network backend (:mod:`service.netio`) against raw loopback servers.

httpx on top of it must behave as with httpcore's default backend: keep-alive reuse, a connection the server
closed while idle is not reused, failures raise httpx's exceptions, TLS works. And a request's head and body
leave in one ``send()``.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from gateway_fakes import free_port

from service.netio import upstream_transport

OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}'
LIMITS = httpx.Limits(max_connections=8, max_keepalive_connections=8)
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Upstream:
    """A raw HTTP/1.1 server: answers each request with ``OK``; ``close_after`` closes after each answer."""

    def __init__(self, close_after: bool = False) -> None:
        self.close_after = close_after
        self.connections = 0
        self.chunks: list[bytes] = []  # the first read of each request
        self.closed = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while chunk := await reader.read(65536):
                self.chunks.append(chunk)
                head, _, body = chunk.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) < length:
                    await reader.readexactly(length - len(body))
                writer.write(OK)
                if self.close_after:
                    break
        finally:
            writer.close()
            self.closed.set()


async def _post(client: httpx.AsyncClient, url: str) -> httpx.Response:
    return await client.post(url, json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})


def test_keep_alive_reuses_one_connection_and_sends_each_request_in_one_piece() -> None:
    async def run() -> Upstream:
        upstream = Upstream()
        server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions"
        async with server, httpx.AsyncClient(transport=upstream_transport(LIMITS)) as client:
            replies = [await _post(client, url) for _ in range(3)]
        assert [r.json() for r in replies] == [{"ok": True}] * 3
        return upstream

    upstream = asyncio.run(run())
    assert upstream.connections == 1
    assert len(upstream.chunks) == 3 and all(c.endswith(b'"content":"hi"}]}') for c in upstream.chunks)


def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    async def run() -> Upstream:
        upstream = Upstream(close_after=True)
        server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions"
        async with server, httpx.AsyncClient(transport=upstream_transport(LIMITS)) as client:
            assert (await _post(client, url)).status_code == 200
            await upstream.closed.wait()
            await asyncio.sleep(0.1)  # the client's event loop reads the server's FIN
            assert (await _post(client, url)).status_code == 200
        return upstream

    assert asyncio.run(run()).connections == 2


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.read(65536)
        await asyncio.sleep(5)
    finally:
        writer.close()


async def _cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.read(65536)
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"partial')
        await writer.drain()
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("handler", "error"), [(None, httpx.ConnectError), (_silent, httpx.ReadTimeout), (_cut, httpx.RemoteProtocolError)]
)
def test_failures_raise_httpx_exceptions(handler: Handler | None, error: type[Exception]) -> None:
    async def run() -> None:
        timeout = httpx.Timeout(0.3)
        async with httpx.AsyncClient(transport=upstream_transport(LIMITS), timeout=timeout) as client:
            if handler is None:
                with pytest.raises(error):
                    await _post(client, f"http://127.0.0.1:{free_port()}/")
                return
            server = await asyncio.start_server(handler, "127.0.0.1", 0)
            async with server:
                with pytest.raises(error):
                    await _post(client, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/")

    asyncio.run(run())


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_https(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def run() -> Upstream:
        upstream = Upstream()
        server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0, ssl=server_ctx)
        url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions"
        async with server, httpx.AsyncClient(transport=upstream_transport(LIMITS, verify=client_ctx)) as client:
            assert [(await _post(client, url)).json() for _ in range(2)] == [{"ok": True}] * 2
            with pytest.raises(httpx.ConnectError):  # a certificate nobody vouches for is refused
                async with httpx.AsyncClient(transport=upstream_transport(LIMITS)) as strict:
                    await _post(strict, url)
        return upstream

    assert asyncio.run(run()).connections == 1  # kept alive; the refused handshake never reaches the handler
