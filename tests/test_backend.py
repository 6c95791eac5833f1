"""The sample backend: identity, echo fidelity, streaming, faults and the CLI's guard rails."""

from __future__ import annotations

import asyncio
import hashlib
import os

import aiohttp
import pytest

from cloud.backend import pattern_bytes, start_backend
from lbtui.cli import main

TIMEOUT = aiohttp.ClientTimeout(total=10)


@pytest.fixture
async def backend():
    handle = await start_backend("alpha")
    yield handle
    await handle.stop()


async def test_every_response_names_the_server(backend) -> None:
    assert backend.port > 0 and backend.url == f"http://127.0.0.1:{backend.port}"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        for path, status in (("/", 200), ("/health", 200), ("/nope", 404), ("/status/503", 503)):
            async with http.get(backend.url + path) as resp:
                assert resp.status == status
                assert resp.headers["X-Served-By"] == "alpha"
        async with http.get(backend.url + "/") as resp:
            assert (await resp.json())["server"] == "alpha"


async def test_echo_reports_headers_and_a_streamed_body(backend) -> None:
    body = os.urandom(3 * 1024 * 1024 + 17)

    async def chunks():
        for i in range(0, len(body), 100_000):
            yield body[i : i + 100_000]

    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        async with http.post(backend.url + "/echo", data=chunks(), headers={"X-Trace": "t-1"}) as resp:
            echo = await resp.json()
    assert echo["server"] == "alpha"
    assert echo["headers"]["X-Trace"] == "t-1"
    assert echo["headers"]["Transfer-Encoding"] == "chunked"
    assert echo["body_length"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()


async def test_stream_sends_the_pattern_chunked(backend) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        async with http.get(backend.url + "/stream?size=300000&chunk=7000") as resp:
            assert resp.headers["Transfer-Encoding"] == "chunked"
            data = await resp.read()
    assert data == pattern_bytes(300_000)


async def test_faults_change_live_and_are_validated(backend) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        async with http.put(backend.url + "/_admin/faults", json={"error_rate": 2, "bogus": 1}) as resp:
            assert resp.status == 422
            fields = {r["field"] for r in (await resp.json())["reasons"]}
            assert fields == {"error_rate", "bogus"}
        async with http.put(backend.url + "/_admin/faults", json={"error_rate": 1.0, "healthy": False}) as resp:
            assert resp.status == 200
        async with http.get(backend.url + "/") as resp:
            assert resp.status == 500 and resp.headers["X-Served-By"] == "alpha"
        async with http.get(backend.url + "/health") as resp:
            assert resp.status == 503
        async with http.put(backend.url + "/_admin/faults", json={"error_rate": 0, "healthy": True}) as resp:
            assert (await resp.json())["injected_errors"] == 1
        async with http.get(backend.url + "/") as resp:
            assert resp.status == 200


async def test_latency_is_added(backend) -> None:
    backend.faults.latency_ms = 150
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        started = loop.time()
        async with http.get(backend.url + "/") as resp:
            assert resp.status == 200
        assert loop.time() - started >= 0.14


async def test_kill_resets_open_connections() -> None:
    handle = await start_backend("doomed", latency_ms=5000)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        pending = asyncio.create_task(http.get(handle.url + "/"))
        await asyncio.sleep(0)
        async def wait_connected() -> None:
            while not handle._runner.server.connections:  # type: ignore[union-attr]
                await asyncio.sleep(0.01)
        await asyncio.wait_for(wait_connected(), 5)
        await handle.kill()
        with pytest.raises(aiohttp.ClientError):
            await asyncio.wait_for(pending, 5)
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(handle.url + "/")


def test_cli_rejects_bad_flags(capsys) -> None:
    assert main(["backend", "--name", "x", "--error-rate", "3"]) == 2
    assert "--error-rate" in capsys.readouterr().err
