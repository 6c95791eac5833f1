"""TLS termination: a verified HTTPS client gets through; pre-1.2 protocols are refused."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
import pytest
from proxy_support import start_backends

from engine.balancer import LoadBalancer
from engine.proxy import HttpProxy, self_signed_pair, server_context


@pytest.fixture
async def tls_proxy(tmp_path):
    cert, key = self_signed_pair(str(tmp_path), "localhost")
    backends = await start_backends(2)
    proxy = HttpProxy(LoadBalancer([b.server for b in backends]))
    await proxy.start(ssl_context=server_context(cert, key))
    yield proxy, cert, backends
    await proxy.stop(1)
    for backend in backends:
        await backend.stop()


async def test_https_client_trusting_the_certificate(tls_proxy) -> None:
    proxy, cert, backends = tls_proxy
    client = ssl.create_default_context(cafile=cert)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client)) as session:
        for _ in range(4):
            async with session.post(f"https://localhost:{proxy.port}/echo", data=b"secret") as response:
                assert response.status == 200
                body = await response.json()
                assert body["body_length"] == 6
    seen = backends[0].seen[-1]
    assert seen.header("X-Forwarded-Proto") == "https"
    assert "proto=https" in (seen.header("Forwarded") or "")


async def test_untrusted_client_fails_verification(tls_proxy) -> None:
    proxy, _, _ = tls_proxy
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            async with session.get(f"https://localhost:{proxy.port}/"):
                pass


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_tls_1_1_is_refused(tls_proxy) -> None:
    proxy, cert, _ = tls_proxy
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(cert)
    try:
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", proxy.port, ssl=old, server_hostname="localhost"), 5
        )
        writer.close()


def test_server_context_minimum_is_tls_1_2(tmp_path) -> None:
    cert, key = self_signed_pair(str(tmp_path))
    assert server_context(cert, key).minimum_version >= ssl.TLSVersion.TLSv1_2
