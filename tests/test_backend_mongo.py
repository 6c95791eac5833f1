"""Two bookstore backends sharing one MongoDB collection (the nx-27017 wire-protocol server)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from cloud.backend import start_backend

NX = shutil.which("nx-27017") or str(Path(sys.executable).with_name("nx-27017"))
pytestmark = pytest.mark.skipif(not Path(NX).exists(), reason="nx-27017 is not installed")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mongo_uri(tmp_path):
    port = _free_port()
    proc = subprocess.Popen([NX, "--db", "memory", "--host", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("nx-27017 exited at start")
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("nx-27017 did not listen within 15 s")
    yield f"mongodb://127.0.0.1:{port}/"
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


async def test_a_book_written_through_one_backend_is_read_through_another(mongo_uri) -> None:
    one = await start_backend("one", mongodb_uri=mongo_uri, seed_books=5)
    two = await start_backend("two", mongodb_uri=mongo_uri, seed_books=5)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            book = {"title": "Shared", "author": "Both", "isbn": "9780441172719"}
            async with http.post(one.url + "/books", json=book) as resp:
                assert resp.status == 201
                created = await resp.json()
            async with http.get(f"{two.url}/books/{created['id']}") as resp:
                assert resp.status == 200 and (await resp.json())["title"] == "Shared"
            async with http.post(two.url + "/books", json=book) as resp:
                assert resp.status == 409
            async with http.get(two.url + "/books?q=shar") as resp:
                listing = await resp.json()
            assert listing["total"] == 1 and listing["items"][0]["id"] == created["id"]
            async with http.get(one.url + "/books?per_page=100") as resp:
                assert (await resp.json())["total"] == 6  # seeding twice is idempotent
            async with http.delete(f"{two.url}/books/{created['id']}") as resp:
                assert resp.status == 204
            async with http.get(f"{one.url}/books/{created['id']}") as resp:
                assert resp.status == 404
    finally:
        await one.stop()
        await two.stop()
