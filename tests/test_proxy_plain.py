"""The plain path (engine/proxy/plain.py): the usual request and response without llhttp.

It must accept only what the general path would treat the same way, and produce the
same bytes on both sides; everything else must fall through to the general path.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from proxy_support import Fixture, count_taken, make_proxy, read_response, start_backends

from engine.proxy.plain import KEEP_ALIVE_CUT, KEEP_ALIVE_LINE, PLAIN_REQUEST, plain_response_head

NGINX_HEAD = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 22 Nov 2026 00:30:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 14\r\nConnection: keep-alive\r\n\r\n"
)


def test_an_nginx_head_is_plain_and_its_keep_alive_line_is_located() -> None:
    status, length, cut = plain_response_head(NGINX_HEAD)  # type: ignore[misc]
    assert (status, length) == (200, 14)
    relayed = NGINX_HEAD[:cut] + NGINX_HEAD[cut + KEEP_ALIVE_CUT :]
    assert KEEP_ALIVE_LINE not in relayed and b"onnection" not in relayed
    assert relayed.endswith(b"Content-Length: 14\r\n\r\n")
    assert plain_response_head(NGINX_HEAD.replace(KEEP_ALIVE_LINE, b"\r\n"))[2] == -1  # type: ignore[index]


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nConnection: keep-alive\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: a\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: a\r\n b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX:  padded\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nno colon\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Bin: \xff\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nContent-Length: 5\r\n\r\n",
    ],
)
def test_heads_the_general_path_must_handle_are_not_plain(head: bytes) -> None:
    assert plain_response_head(head) is None
    assert plain_response_head(head) is None  # and the remembered answer is the same


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: y\r\n\r\n",  # no Host
        b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost:  a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: \r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
        b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",  # pipelined
    ],
)
def test_requests_the_general_path_must_handle_are_not_plain(request_head: bytes) -> None:
    assert PLAIN_REQUEST(request_head) is None


def test_a_plain_request_yields_method_target_and_host() -> None:
    match = PLAIN_REQUEST(b"GET /item/42?x=1 HTTP/1.1\r\nUser-Agent: t/1\r\nHost: shop:8080\r\nAccept: */*\r\n\r\n")
    assert match is not None and (match[1], match[2], match[3]) == (b"GET", b"/item/42?x=1", b"shop:8080")


@pytest.fixture
async def pair():
    backends = await start_backends(2)
    fixtures: list[Fixture] = []

    async def build(**options: object) -> Fixture:
        fixture = await make_proxy(backends, **options)  # type: ignore[arg-type]
        fixtures.append(fixture)
        return fixture

    yield backends, build
    for fixture in fixtures:
        await fixture.proxy.stop(1)
    for backend in backends:
        await backend.stop()


async def _ask(port: int, heads: list[bytes]) -> list[tuple[int, dict[str, str], bytes]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    try:
        for head in heads:
            writer.write(head)
            answers.append(await read_response(reader))
    finally:
        writer.close()
    return answers


async def test_plain_and_general_paths_forward_the_same_bytes(pair) -> None:
    """The first request of a connection takes the general path (it learns the Host);
    the same request again takes the plain path: both backends see identical heads and
    the client gets identical answers."""
    backends, build = pair
    fx = await build(algorithm="consistent_hash", hash_key="client_ip")  # both to one server
    served = count_taken("_start_plain_read")
    head = b"GET /echo?q=1 HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: t/1.0\r\nAccept: */*\r\n\r\n"
    other = head.replace(b"/echo?q=1", b"/echo?q=2")  # same header lines, another target
    answers = await _ask(fx.proxy.port, [head, head, head, other, head])
    assert served[0] == 4
    seen = [s for b in backends for s in b.seen]
    assert [s.path for s in seen] == ["/echo?q=1"] * 3 + ["/echo?q=2", "/echo?q=1"]
    assert all(s.headers == seen[0].headers for s in seen)
    names = [name.lower() for name, _ in seen[0].headers]
    assert names[:3] == ["host", "user-agent", "accept"]
    assert {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded"} <= set(names)
    assert seen[0].header("X-Forwarded-Host") == "shop.test"
    assert answers[0][0] == answers[1][0] == 200
    assert answers[0][2] == answers[1][2] == answers[2][2]
    assert json.loads(answers[1][2])["path"] == "/echo?q=1"


async def test_a_new_host_on_the_connection_is_forwarded_as_itself(pair) -> None:
    _, build = pair
    fx = await build()
    served = count_taken("_start_plain_read")
    heads = [f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode() for host in ("a.test", "a.test", "b.test", "a.test")]
    answers = await _ask(fx.proxy.port, heads)
    forwarded = [dict(json.loads(body)["headers"])["X-Forwarded-Host"] for _, _, body in answers]
    assert forwarded == ["a.test", "a.test", "b.test", "a.test"]
    assert served[0] == 1  # only the repeat of a.test right after a.test


async def test_plain_requests_reuse_upstream_connections_and_are_logged(pair) -> None:
    backends, build = pair
    fx = await build(algorithm="round_robin")
    records = []
    fx.proxy.observers.append(records.append)
    head = b"GET /status?code=404 HTTP/1.1\r\nHost: x\r\n\r\n"
    answers = await _ask(fx.proxy.port, [head] * 10)
    assert [status for status, _, _ in answers] == [404] * 10
    assert sum(b.connections for b in backends) == 2  # one per server, kept alive
    assert fx.proxy.pool.idle_count() == 2
    assert [(r.method, r.path, r.status, r.bytes_out) for r in records] == [("GET", "/status?code=404", 404, 6)] * 10
    assert sorted({r.server for r in records}) == ["b0", "b1"]
    stats = fx.lb.stats()
    assert stats["requests"] == 10 and sum(stats["requests_per_server"].values()) == 10
    assert all(s["p99_ms"] > 0 for s in stats["servers"])  # latencies recorded per server


async def test_a_response_split_across_reads_still_arrives_whole(pair) -> None:
    """An answer larger than one read is not plain: the general path streams it."""
    _, build = pair
    fx = await build()
    served = count_taken("_start_plain_read")
    head = b"GET /bytes?n=300000 HTTP/1.1\r\nHost: x\r\n\r\n"
    answers = await _ask(fx.proxy.port, [head, head, head])
    assert served[0] == 2
    block = bytes(range(256)) * 256
    expected = (block * 5)[:300000]
    assert all(status == 200 and body == expected for status, _, body in answers)


async def test_a_backend_killed_between_plain_requests_is_retried_unseen(pair) -> None:
    backends, build = pair
    fx = await build(algorithm="round_robin")
    served = count_taken("_start_plain_read")
    reader, writer = await asyncio.open_connection("127.0.0.1", fx.proxy.port)
    try:
        statuses = []
        for index in range(6):
            if index == 3:
                await backends[0].stop()  # its pooled connection is now reset
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, _ = await read_response(reader)
            statuses.append((status, headers["x-served-by"]))
    finally:
        writer.close()
    assert [s for s, _ in statuses] == [200] * 6
    assert [name for _, name in statuses[3:]] == ["b1"] * 3
    assert served[0] == 5


async def test_a_reused_plain_exchange_starts_clean(pair) -> None:
    """Plain requests on one connection share one exchange object, reset between them:
    a 503 after a 200 must log and answer exactly as a 503 on a fresh connection."""
    _, build = pair
    fx = await build(algorithm="round_robin")
    served = count_taken("_start_plain_read")
    records = []
    fx.proxy.observers.append(records.append)
    head = b"GET /status?code=201 HTTP/1.1\r\nHost: x\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", fx.proxy.port)
    try:
        answers = []
        for index in range(4):
            if index == 3:
                for name in ("b0", "b1"):
                    fx.lb.maint(name)
            writer.write(head)
            answers.append(await read_response(reader))
    finally:
        writer.close()
    assert served[0] == 3  # requests 2-4 took the plain path
    fresh = await _ask(fx.proxy.port, [head])
    assert [a[0] for a in answers] == [201, 201, 201, 503] and fresh[0][0] == 503
    assert answers[3][2] == fresh[0][2]
    reused, new = records[3], records[4]
    assert (reused.status, reused.server, reused.bytes_out) == (new.status, new.server, new.bytes_out) == (
        503,
        None,
        new.bytes_out,
    )
    assert reused.upstream_ms == new.upstream_ms == 0.0
    assert reused.time > records[2].time and reused.total_ms < 1000
