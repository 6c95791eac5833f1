"""Upstream side: one keep-alive connection per in-flight request, pooled per server.

An ``UpstreamConnection`` parses responses with llhttp (httptools) and hands each event
straight to the client connection it is bound to; between requests it sits idle in the
``UpstreamPool`` (last in, first out, so the warmest connection is reused and surplus
ones age out by the idle timeout).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from engine.proxy.batch import Holder
from engine.proxy.headers import HEAD_END
from engine.proxy.plain import KNOWN_HEADS, PLAIN_HEAD_LIMIT, plain_response_head
from engine.stats import TrafficStats

if TYPE_CHECKING:
    from engine.proxy.client import ClientConnection
    from engine.server import Server

_monotonic = time.monotonic
CRLF = b"\r\n"


class UnsolicitedResponse(Exception):
    """Bytes after a complete response on a pooled connection (raised inside llhttp)."""


class UpstreamConnection(Holder):
    """One TCP connection to a backend; bound to at most one client exchange at a time.

    The response head is not taken apart header by header: llhttp validates it, and the
    raw bytes go to the client connection, which relays them as they are when nothing
    in them must change (the usual case) and parses them only otherwise.
    """

    __slots__ = (
        "acc",
        "client",
        "closed",
        "head_only",
        "idle_since",
        "key",
        "parser",
        "pool",
        "pos",
        "server",
        "stamp",
        "status",
        "tunnel",
        "want_head",
    )

    def __init__(self, pool: UpstreamPool, server: Server) -> None:
        super().__init__()  # held: a request head waiting for the end of the loop iteration
        self.pool = pool
        self.server = server
        self.key = id(server)
        self.client: ClientConnection | None = None
        self.parser: HttpResponseParser | None = None
        # Bytes received since the current response head began (``pos``: where it starts),
        # kept only while a head is expected.
        self.acc = b""
        self.pos = 0
        self.want_head = True
        self.status = 0
        self.head_only = False
        self.tunnel = False
        self.closed = False
        self.stamp = _monotonic()  # last activity: request sent or byte received
        self.idle_since = 0.0

    # -- binding ------------------------------------------------------------------------
    def bind(self, client: ClientConnection, head_only: bool) -> None:
        self.client = client
        # llhttp cannot be told a response answers HEAD, so a HEAD response is completed
        # at its head and its parser thrown away; otherwise the parser is reused.
        if self.parser is None or head_only or self.head_only:
            self.parser = HttpResponseParser(self)
        self.acc = b""
        self.pos = 0
        self.want_head = True
        self.head_only = head_only
        self.status = 0
        self.stamp = self.pool.now

    def unbind(self) -> None:
        self.client = None

    def close(self) -> None:
        self.client = None
        self.held = None
        if not self.closed:
            self.closed = True
            self.pool.discard(self)
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self.client = None
        self.held = None
        if not self.closed:
            self.closed = True
            self.pool.discard(self)
            if self.transport is not None:
                self.transport.abort()

    # -- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.stamp = now = _monotonic()
        self.pool.now = now
        size = len(data)
        self.server.stats.bytes_in += size
        self.pool.totals.bytes_in += size
        client = self.client
        if client is None:
            # Bytes on an idle connection: the backend is out of step; never reuse it.
            self.close()
            return
        if self.want_head and not self.acc:
            # A plain request's answer, whole in this read: relayed without llhttp. (A
            # plain exchange never tunnels, and its connection always has a parser.)
            ex = client.active
            if ex is not None and ex.plain and ex.upstream is self:
                end = data.find(b"\r\n\r\n") + 4
                if 4 < end <= PLAIN_HEAD_LIMIT:
                    head = data[:end]
                    plain = KNOWN_HEADS.get(head)  # plain_response_head's memo, without the call
                    if plain is None:  # not known, or known not to be plain (rare: asked again)
                        plain = plain_response_head(head)
                    if plain is not None and size - end == plain[1] and client.relay_plain(self, ex, data, plain):
                        return
        if self.tunnel:
            client.tunnel_from_upstream(data)
            return
        parser = self.parser
        if parser is None:
            self.close()
            return
        if self.want_head:
            self.acc = self.acc + data if self.acc else data
        client.batching = True
        try:
            parser.feed_data(data)
        except HttpParserUpgrade as upgrade:
            offset = upgrade.args[0] if upgrade.args else len(data)
            if self.status == 101 and self.client is not None:
                self.tunnel = True
                self.client.upgraded(self, data[offset:])
            else:
                self._bad_response()
        except HttpParserError:
            self._bad_response()
        if client.batching:  # client.flush, inlined
            client.batching = False
            queue = client.outq
            if queue:
                client.outq = []
                transport = client.transport
                if transport is not None and not client.closed:
                    # One write: a small response (head and body) leaves in one send.
                    transport.write(queue[0] if len(queue) == 1 else b"".join(queue))

    def _bad_response(self) -> None:
        client = self.client
        if client is not None:
            client.upstream_broken(self, reset=False)
        self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.discard(self)
        client = self.client
        self.client = None
        if client is not None:
            client.upstream_lost(self)

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.pause_reading(1)

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.resume_reading(1)

    # -- llhttp callbacks -----------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.client is None:
            # A response already ended in this read and the connection went back to the
            # pool: whatever follows was never asked for. Parsing it would hand it to the
            # next request; stop here, and data_received aborts the connection.
            raise UnsolicitedResponse

    def on_headers_complete(self) -> None:
        parser = self.parser
        client = self.client
        if parser is None or client is None:
            return
        acc = self.acc
        pos = self.pos
        end = acc.find(b"\r\n\r\n", pos)
        if end >= 0:
            end += 4
        else:  # bare LF line ends, if llhttp let them through
            match = HEAD_END.search(acc, pos)
            end = match.end() if match is not None else len(acc)
        head = acc if pos == 0 and end == len(acc) else acc[pos:end]
        self.status = status = parser.get_status_code()
        if status < 200 and status != 101:  # interim: the final head follows
            self.pos = end
        else:
            self.want_head = False
            self.acc = b""
            self.pos = 0
        client.response_head(self, status, head)
        if self.head_only and status >= 200 and status != 101 and self.client is client:
            client.response_done(self, parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        client = self.client
        if client is not None:
            ex = client.active
            if client.batching and ex is not None and ex.upstream is self and not ex.resp_chunked:
                # response_body's usual case, inlined: queue the bytes for the one writev.
                ex.bytes_out += len(body)
                client.outq.append(body)
            else:
                client.response_body(self, body)

    def on_message_complete(self) -> None:
        # should_keep_alive() must be read here: llhttp resets its flags once the
        # message is done, so after feed_data() returns it always answers False.
        status = self.status
        if status < 200 or self.head_only:
            return
        client = self.client
        parser = self.parser
        if client is None or parser is None:
            return
        keep = parser.should_keep_alive()
        ex = client.active
        if (
            keep
            and ex is not None
            and ex.upstream is self
            and ex.body_done
            and not (ex.resp_chunked or ex.must_close or ex.done)
            and not (client.closing or client.upgrading or client.deferred_error)
        ):
            client.response_complete(self, ex)  # the usual ending, in one call
        else:
            client.response_done(self, keep)


class UpstreamPool:
    """Idle keep-alive connections per server, at most ``size`` each."""

    def __init__(
        self, size: int = 64, idle_timeout: float = 60.0, totals: TrafficStats | None = None
    ) -> None:
        self.size = size
        self.idle_timeout = idle_timeout
        # Keyed by id(server), which is Server's own hash, without a Python-level __hash__
        # call; an entry's connections keep their server alive, so the id is not reused.
        self._idle: dict[int, list[UpstreamConnection]] = {}
        self.opened = 0  # connections ever opened (keep-alive reuse shows as few)
        # The proxy's clock: monotonic time of the latest socket read or sweep, so one
        # request reads the clock once per read instead of in every callback.
        self.now = _monotonic()
        self.totals = totals if totals is not None else TrafficStats()  # the balancer's, for byte counts

    def acquire(self, server: Server) -> UpstreamConnection | None:
        idle = self._idle.get(id(server))
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    def release(self, conn: UpstreamConnection) -> None:
        conn.client = None
        if conn.closed or self.size <= 0:
            conn.close()
            return
        idle = self._idle.get(conn.key)
        if idle is None:
            idle = self._idle[conn.key] = []
        if len(idle) >= self.size:
            conn.close()
            return
        conn.idle_since = self.now
        idle.append(conn)

    def discard(self, conn: UpstreamConnection) -> None:
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    def sweep(self, now: float) -> None:
        """Close connections idle longer than the idle timeout; forget removed servers."""
        limit = now - self.idle_timeout
        for server, idle in list(self._idle.items()):
            stale = [c for c in idle if c.idle_since < limit]
            for conn in stale:
                conn.close()
            if not idle:
                del self._idle[server]

    def idle_count(self, server: Server | None = None) -> int:
        if server is not None:
            return len(self._idle.get(id(server), ()))
        return sum(len(v) for v in self._idle.values())

    def close_all(self) -> None:
        for idle in list(self._idle.values()):
            for conn in list(idle):
                conn.close()
        self._idle.clear()
