"""Held writes (engine/proxy/batch.py): sent once the loop has run the current callbacks,
in order, and never after the connection closed."""

from __future__ import annotations

import asyncio

from engine.proxy.batch import HeldWrites, Holder, send_held


class _Peer:
    """The far end of a real loopback connection, collecting what it receives."""

    def __init__(self) -> None:
        self.data = b""
        self.got = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            self.data += chunk
            self.got.set()
        writer.close()


def _holder(transport: asyncio.Transport) -> Holder:
    """A holder over a real transport (the base of ClientConnection and UpstreamConnection)."""
    conn = Holder()
    conn.transport = transport
    return conn


async def _pair(count: int) -> tuple[list[_Peer], list[Holder], asyncio.AbstractServer]:
    peers: list[_Peer] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _Peer()
        peers.append(peer)
        await peer.serve(reader, writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conns = []
    loop = asyncio.get_running_loop()
    for index in range(count):  # one at a time, so peers[i] is the far end of conns[i]
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        conns.append(_holder(transport))  # type: ignore[arg-type]
        async with asyncio.timeout(5):
            while len(peers) <= index:
                await asyncio.sleep(0.01)
    return peers, conns, server


async def _received(peer: _Peer, size: int) -> bytes:
    async with asyncio.timeout(5):
        while len(peer.data) < size:
            peer.got.clear()
            await peer.got.wait()
    return peer.data


async def test_held_writes_leave_after_the_current_callbacks_together() -> None:
    peers, conns, server = await _pair(3)
    writes = HeldWrites()
    sent_during_callback: list[int] = []
    try:
        for index, conn in enumerate(conns):
            writes.hold(conn, b"answer %d;" % index)
        writes.hold(conns[0], b"more;")  # a second chunk on the same connection: appended
        # Nothing has left yet: the flush waits for the loop.
        sent_during_callback = [c.transport.get_write_buffer_size() for c in conns]  # type: ignore[union-attr]
        assert all(c.held is not None for c in conns)
        # The loop ran the flush: every chunk arrived, in order, on its own connection.
        assert await _received(peers[0], len(b"answer 0;more;")) == b"answer 0;more;"
        assert await _received(peers[1], len(b"answer 1;")) == b"answer 1;"
        assert await _received(peers[2], len(b"answer 2;")) == b"answer 2;"
        assert all(c.held is None for c in conns)
        assert sent_during_callback == [0, 0, 0]
    finally:
        for conn in conns:
            conn.transport.close()  # type: ignore[union-attr]
        server.close()


async def test_a_direct_write_sends_the_held_chunk_first_and_a_closed_one_drops_it() -> None:
    peers, conns, server = await _pair(2)
    writes = HeldWrites()
    try:
        writes.hold(conns[0], b"first;")
        send_held(conns[0])  # what ClientConnection._send does before writing itself
        conns[0].transport.write(b"second;")  # type: ignore[union-attr]
        writes.hold(conns[1], b"never")
        conns[1].transport.close()  # type: ignore[union-attr]
        writes.flush()  # nothing reaches a closing transport, nothing raises
        assert conns[1].held is None
        assert await _received(peers[0], len(b"first;second;")) == b"first;second;"
    finally:
        conns[0].transport.close()  # type: ignore[union-attr]
        server.close()
    assert peers[1].data == b""
