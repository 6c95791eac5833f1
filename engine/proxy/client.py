"""The client side of the HTTP proxy: one protocol object per client connection.

Everything on the hot path is a callback: llhttp (httptools) parses the request, the
request is routed and written to a pooled upstream connection in the same call, and
the upstream's response events come back here and are written to the client. Only
opening a new upstream connection needs a task. Bodies stream chunk by chunk in both
directions with flow control: a full write buffer on one side pauses reading on the
other.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from engine.accesslog import AccessRecord
from engine.proxy.batch import Holder, send_held
from engine.proxy.exchange import Exchange, RequestHeaders
from engine.proxy.headers import (
    H_ALIAS,
    H_CONNECTION,
    H_FORWARDED,
    H_HOP,
    H_HOST,
    H_LENGTH,
    H_TE,
    H_UPGRADE,
    H_XFF,
    H_XPROTO,
    HOP_IN_HEAD,
    IDEMPOTENT,
    PLAIN_TOKENS,
    REQUEST_KINDS,
    REQUEST_LENGTHS,
    ResponseHead,
    connection_tokens,
    forwarded_for,
    valid_host,
)
from engine.proxy.plain import KEEP_ALIVE_CUT, PLAIN_REQUEST, PLAIN_REQUEST_LINE, PlainHead
from engine.proxy.pool import UpstreamConnection
from engine.proxy.responses import error_response

if TYPE_CHECKING:
    from engine.balancer import LoadBalancer
    from engine.proxy.http import HttpProxy
    from engine.server import Server

log = logging.getLogger(__name__)
_monotonic = time.monotonic

# Read phases of the client connection.
IDLE, HEAD, BODY = 0, 1, 2
# Reasons to pause reading from the client (a bit mask: read resumes when all clear).
PAUSE_UPSTREAM, PAUSE_BUFFER, PAUSE_PIPELINE = 1, 2, 4
BUFFER_LIMIT = 256 * 1024  # request body held while an upstream connection opens
REPLAY_LIMIT = 64 * 1024  # request body kept to replay an idempotent request elsewhere
PIPELINE_LIMIT = 16
CRLF = b"\r\n"
_PATH_START = (ord("/"), ord("*"))
_STATUS_200 = b"HTTP/1.1 200 OK\r\n"
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE")}
_NO_REPLAY_YET: list[bytes] = []  # replayable, no body kept yet (never appended to)
LAST_CHUNK = b"0\r\n\r\n"
_NGINX_KEEP_ALIVE = b"connection: keep-alive\r\n"
PLAIN_TAKEN = [0, 0]
"""Requests and responses that took the plain paths (``_start_plain_read``, ``relay_plain``),
process-wide: the tests check the fast paths are taken, which no answer shows."""


def _cut_plain_hops(head: bytes, low: bytes, hop: re.Match[bytes]) -> tuple[bytes, re.Match[bytes] | None]:
    """Cut the hop-by-hop lines that say nothing but how the upstream connection behaves.

    nginx answers every keep-alive request with ``Connection: keep-alive`` (Apache adds
    ``Keep-Alive: timeout=5, max=100``): fields about the upstream connection only, so
    the proxy drops them as plain byte cuts instead of taking the head apart. Returns
    the head and the next hop-by-hop field left in it (None: the head can be relayed).
    """
    cut = 0  # bytes already cut from ``head`` (``low`` keeps the original offsets)
    for _ in range(3):
        start = hop.start() + 1
        end = low.find(b"\n", start) + 1
        if not end:
            break
        name, _, value = low[start:end].partition(b":")
        name = name.rstrip(b" \t")
        if not (name == b"keep-alive" or (name == b"connection" and value.strip(b" \t\r\n") in PLAIN_TOKENS)):
            break
        head = head[: start - cut] + head[end - cut :]
        cut += end - start
        following = HOP_IN_HEAD(low, end - 1)
        if following is None:
            return head, None
        hop = following
    return head, hop


class Reject(Exception):
    """A request the proxy refuses (raised inside parser callbacks)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class ClientConnection(Holder):
    """One client connection: parse, route, forward, relay; keep-alive and pipelining."""

    __slots__ = (
        "active",
        "batching",
        "closed",
        "closing",
        "deferred_error",
        "fed",
        "fed_before",
        "fed_mark",
        "fwd_block",
        "fwd_for",
        "fwd_host",
        "good_host",
        "half_closed",
        "head_bytes",
        "head_out",
        "head_started",
        "idle_since",
        "ip",
        "ip_bytes",
        "lb",
        "no_more",
        "outq",
        "parser",
        "parsing",
        "paused",
        "pending",
        "phase",
        "plain_fields",
        "plain_last",
        "plain_limit",
        "plain_method",
        "plain_target",
        "pool",
        "proto",
        "proxy",
        "route_request",
        "seen_bytes",
        "settings",
        "spare",
        "stamp",
        "upgrading",
        "write_paused",
        "writes",
    )

    def __init__(self, proxy: HttpProxy) -> None:
        super().__init__()  # held: an answer waiting for the end of the loop iteration
        self.proxy = proxy
        self.lb = proxy.lb
        self.settings = settings = proxy.settings
        self.pool = proxy.pool
        self.writes = proxy.writes
        # A plain request head (engine/proxy/plain.py) this long is within every size limit.
        self.plain_limit = min(settings.max_request_line, settings.max_header_bytes)
        # The header lines (from the request line's CRLF) of the last plain request, with
        # the Host of ``fwd_host``: the same bytes again need only their request line checked.
        self.plain_fields: bytes | None = None
        # The last plain request whole, and its method and target: the same bytes again
        # (a poller, a health probe, a benchmark) need no match at all.
        self.plain_last: bytes | None = None
        self.plain_method = self.plain_target = b""
        # The last plain exchange, once over: the next plain request reuses it (see
        # _start_plain_read), which saves building a 46-field object per request.
        self.spare: Exchange | None = None
        self.parser = HttpRequestParser(self)
        self.ip = ""
        self.ip_bytes = b""
        self.fwd_for = b""
        self.proto = b"https" if proxy.tls else b"http"
        self.phase = HEAD
        now = _monotonic()
        self.stamp = now  # last byte from the client
        self.head_started = now
        self.idle_since = now
        self.head_bytes = 0
        # Bytes ever fed to the parser, before the current read, and before the read in
        # which the previous request head ended: a head lies within fed - fed_mark bytes.
        self.fed = self.fed_before = self.fed_mark = 0
        self.good_host: bytes | None = None  # last Host value found valid on this connection
        # X-Forwarded-*/Forwarded block for the last Host seen: the same for every request
        # of a connection in the common case, so built once.
        self.fwd_host: bytes | None = None
        self.fwd_block = b""
        self.seen_bytes = False
        self.parsing: Exchange | None = None
        self.head_out: list[bytes] | None = None  # ``out`` of the head being parsed
        self.active: Exchange | None = None
        self.pending: deque[Exchange] = deque()
        self.paused = 0
        self.write_paused = False
        self.no_more = False  # ignore further client bytes (close requested or error)
        self.upgrading = False
        self.deferred_error = 0
        self.closing = False  # graceful stop: finish the current exchange, then close
        self.half_closed = False  # the client sent EOF behind pipelined requests
        self.closed = False
        # While an upstream read is being parsed, client-bound bytes are collected here
        # and sent with one writev when the read is done: head, body and last chunk of
        # a small response leave in one packet.
        self.batching = False
        self.outq: list[bytes] = []
        # What the balancer is given to route on when the policy reads nothing but the
        # client's address: one dict per connection instead of one per request.
        self.route_request: dict[str, Any] = {}

    def flush(self) -> None:
        self.batching = False
        if self.held is not None:
            send_held(self)
        queue = self.outq
        if queue:
            self.outq = []
            transport = self.transport
            if transport is not None and not self.closed:
                transport.write(queue[0] if len(queue) == 1 else b"".join(queue))

    def _send(self, data: bytes) -> None:
        if self.held is not None:
            send_held(self)
        if self.batching:
            self.outq.append(data)
        elif self.transport is not None and not self.closed:
            self.transport.write(data)

    # -- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.ip = peer[0] if peer else "unknown"
        self.ip_bytes = self.ip.encode()
        self.route_request = {"client_ip": self.ip}
        self.fwd_for = forwarded_for(self.ip).encode()
        self.proxy.connection_opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.no_more = True
        ex = self.active
        self.active = None
        if ex is not None and not ex.done:
            self._abandon(ex)
        self.proxy.active_requests -= len(self.pending)
        self.pending.clear()
        self.proxy.connection_closed(self)

    def data_received(self, data: bytes) -> None:
        # One clock read per socket read, shared through the pool with every callback
        # it triggers (routing, latency, idle stamps).
        self.stamp = now = _monotonic()
        self.pool.now = now
        if (
            self.phase == IDLE  # llhttp holds no byte of a next request (on_message_begin)
            and self.active is None
            and data[-4:] == b"\r\n\r\n"
            and len(data) <= self.plain_limit
            and not (self.no_more or self.upgrading or self.closing)
        ):
            # The same request again (a poller, a probe) needs no match at all.
            if data == self.plain_last and self._start_plain_read(data, self.plain_method, self.plain_target, now):
                return
            eol = data.find(b"\r\n")
            if data[eol:] == self.plain_fields:  # the header lines of the last plain request
                line = PLAIN_REQUEST_LINE(data, 0, eol)
                if line is not None:
                    self.plain_last, self.plain_method, self.plain_target = data, line[1], line[2]
                    if self._start_plain_read(data, line[1], line[2], now):
                        return
            else:
                match = PLAIN_REQUEST(data)
                if (
                    match is not None
                    and match[3] == self.fwd_host
                    and data.count(b"\n") <= self.settings.max_headers + 2
                ):
                    self.plain_fields = data[eol:]
                    self.plain_last, self.plain_method, self.plain_target = data, match[1], match[2]
                    if self._start_plain_read(data, match[1], match[2], now):
                        return
        if self.no_more:
            return
        if self.upgrading:
            # Bytes after an Upgrade request: the new protocol's, passed through as is.
            ex = self.active
            if ex is not None:
                if ex.tunnel and ex.upstream is not None and ex.upstream.transport is not None:
                    ex.upstream.transport.write(data)
                    if ex.server is not None:
                        ex.server.stats.bytes_out += len(data)
                        self.lb.totals.bytes_out += len(data)
                else:
                    ex.pending_body.append(data)
                    ex.pending_bytes += len(data)
                    if ex.pending_bytes > BUFFER_LIMIT:
                        self.pause_reading(PAUSE_BUFFER)
            return
        self.seen_bytes = True
        phase = self.phase
        if phase == IDLE:  # the first byte of a new request starts its head's clock
            self.phase = phase = HEAD
            self.head_started = now
        size = len(data)
        self.fed_before = fed = self.fed
        self.fed = fed + size
        if phase != BODY:
            self.head_bytes += size
        try:
            self.parser.feed_data(data)
        except Reject as reject:
            self._reject(reject.status)
            return
        except HttpParserUpgrade as upgrade:
            self.upgrading = True
            offset = upgrade.args[0] if upgrade.args else len(data)
            rest = data[offset:]
            if rest:
                self.data_received_after_upgrade(rest)
            return
        except HttpParserError as error:
            # Exceptions raised in callbacks come back wrapped; the cause is the context.
            cause = error.__context__
            if cause is None or isinstance(cause, Reject):
                self._reject(cause.status if cause is not None else 400)
            else:
                log.error("proxy: unexpected error on a client connection", exc_info=cause)
                self._reject(500)
            return
        except Exception:  # a bug must not take the listener down; the client gets a 500
            log.exception("proxy: unexpected error on a client connection")
            self._reject(500)
            return
        if (
            self.phase == HEAD
            and self.head_bytes > self.settings.max_header_bytes + self.settings.max_request_line
        ):
            self._reject(431)

    def data_received_after_upgrade(self, data: bytes) -> None:
        self.data_received(data)

    def eof_received(self) -> bool | None:
        # In a tunnel, EOF ends the tunnel (WebSocket has its own close handshake).
        ex = self.active
        if ex is None or ex.tunnel or self.upgrading:
            if ex is not None:
                self._finish(ex)
            return None
        # A half-closed client may still be waiting for its answers: keep writing them,
        # then close, since no request can follow (not held until the idle timeout).
        if self.deferred_error:
            pass  # its error answer, after the answers before it, closes the connection
        elif self.pending:
            self.half_closed = True  # the last pipelined request closes (_ready_for_next)
        else:
            self.closing = True
        return True

    def pause_writing(self) -> None:
        self.write_paused = True
        ex = self.active
        if ex is not None and ex.upstream is not None and ex.upstream.transport is not None:
            ex.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        ex = self.active
        if ex is not None and ex.upstream is not None and ex.upstream.transport is not None:
            ex.upstream.transport.resume_reading()

    def pause_reading(self, reason: int) -> None:
        if not self.paused and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self.paused |= reason

    def resume_reading(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if not self.paused and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # -- llhttp callbacks (request) --------------------------------------------------------
    # (No on_message_begin: the exchange starts with the first piece of its URL, which
    # saves a callback per request; data_received starts the head's clock.)
    def on_message_begin(self) -> None:
        # The first byte of a request, maybe at the end of a read that ended the last one:
        # its head's clock starts, and the plain path (which bypasses llhttp) must wait
        # until llhttp has seen this request through.
        if self.phase == IDLE:
            self.phase = HEAD
            self.head_started = self.stamp

    def on_url(self, url: bytes) -> None:
        ex = self.parsing
        if ex is None:
            self.parsing = ex = Exchange(self.stamp)
            self.head_out = ex.out
            ex.url = url
        else:
            ex.url += url
        if len(ex.url) > self.settings.max_request_line:
            raise Reject(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        # The limits on header count and size are checked once, in on_headers_complete,
        # before anything is forwarded; data_received bounds the bytes held meanwhile.
        out = self.head_out
        if out is None:
            return  # trailers of a chunked body are not forwarded
        if len(name) in REQUEST_LENGTHS:
            kind = REQUEST_KINDS.get(name.lower())
            if kind == H_HOST:  # the one special header of nearly every request, inlined
                ex = self.parsing
                ex.host_count += 1  # type: ignore[union-attr]
                ex.host = value  # type: ignore[union-attr]
            elif kind is not None and self._special_header(self.parsing, kind, name, value):  # type: ignore[arg-type]
                return
        out += (name, b": ", value, CRLF)

    def _special_header(self, ex: Exchange, kind: int, name: bytes, value: bytes) -> bool:
        """Act on a header the proxy must understand; True when it is not forwarded as is."""
        if kind == H_HOST:
            ex.host_count += 1
            ex.host = value
            return False
        if kind == H_LENGTH:
            if not value.isdigit():
                raise Reject(400)
            length = int(value)
            if ex.content_length is not None and ex.content_length != length:
                raise Reject(400)
            ex.content_length = length
            return False
        if kind == H_TE:
            ex.te_seen = True
            # Only "chunked" as the final coding frames a request (RFC 9112 6.3).
            ex.chunked = value.rpartition(b",")[2].strip().lower() == b"chunked"
        elif kind == H_CONNECTION:
            # "keep-alive" / "close" name no other field: llhttp acts on them, nothing to note.
            if value.lower() not in PLAIN_TOKENS:
                tokens = connection_tokens(value)
                ex.conn_tokens = tokens if ex.conn_tokens is None else ex.conn_tokens | tokens
        elif kind == H_UPGRADE:
            ex.upgrade_value = value
        elif kind != H_HOP and kind != H_ALIAS and self.settings.trust_forwarded:
            if kind == H_XFF:
                ex.prior_xff = value if ex.prior_xff is None else ex.prior_xff + b", " + value
            elif kind == H_FORWARDED:
                ex.prior_fwd = value if ex.prior_fwd is None else ex.prior_fwd + b", " + value
            else:
                if kind == H_XPROTO:
                    ex.has_proto = True
                else:
                    ex.has_xhost = True
                return False  # trusted: forwarded in place
        if ex.dropped is None:
            ex.dropped = []
        ex.dropped.append((name, value))
        return True

    def on_headers_complete(self) -> None:
        ex = self.parsing
        if ex is None:
            return
        parser = self.parser
        self.phase = BODY
        self.head_out = None
        out = ex.out
        dropped = ex.dropped
        count = (len(out) - 4) // 4 + (len(dropped) if dropped else 0)
        settings = self.settings
        if count > settings.max_headers:
            raise Reject(431)
        # The head lies within the bytes fed since the read in which the previous head
        # ended, so its exact size is only summed when that could be over the limit.
        if self.fed - self.fed_mark > settings.max_header_bytes:
            # Each header counts as name + ": " + value + CRLF, as it is in ``out``.
            size = sum(map(len, out)) - 12  # less the request line's placeholders
            if dropped:
                size += sum(len(name) + len(value) + 4 for name, value in dropped)
            if size > settings.max_header_bytes:
                raise Reject(431)
        self.head_bytes = 0
        self.fed_mark = self.fed_before
        ex.method = method = parser.get_method()
        version = parser.get_http_version()
        ex.http_minor = 0 if version == "1.0" else 1
        if method == b"CONNECT":
            raise Reject(405)
        host = ex.host
        if ex.host_count > 1 or (ex.host_count == 0 and ex.http_minor == 1):
            raise Reject(400)
        if host is not None and host != self.good_host:  # a client sends the same Host again and again
            if not valid_host(host):
                raise Reject(400)
            self.good_host = host
        if ex.te_seen and (ex.content_length is not None or ex.http_minor == 0 or not ex.chunked):
            raise Reject(400)
        if ex.content_length is not None and ex.content_length > self.settings.max_body_bytes:
            raise Reject(413)
        url = ex.url
        if not url or url[0] not in _PATH_START and not url.startswith((b"http://", b"https://")):
            raise Reject(400)
        out[0] = method
        out[2] = url
        # Must be read here, not after feed_data(): llhttp resets the flags on completion.
        ex.keep_alive = parser.should_keep_alive()
        ex.upgrade = ex.upgrade_value is not None and parser.should_upgrade()
        ex.replay = _NO_REPLAY_YET if method in IDEMPOTENT else None
        if ex.chunked or (ex.content_length or 0) > 0:
            self._queue(ex)  # stream the body: start the exchange before it arrives

    def on_body(self, body: bytes) -> None:
        ex = self.parsing
        if ex is None:
            return
        size = len(body)
        ex.bytes_in += size
        if ex.bytes_in > self.settings.max_body_bytes:
            raise Reject(413)
        if ex.done:
            return
        replay = ex.replay
        if replay is not None:
            if replay is _NO_REPLAY_YET:
                ex.replay = replay = []
            ex.replay_bytes += size
            if ex.replay_bytes > REPLAY_LIMIT:
                ex.replay = None
            else:
                replay.append(body)
        up = ex.upstream
        if up is not None and ex is self.active and up.transport is not None:
            if ex.chunked:
                up.transport.writelines((b"%x\r\n" % size, body, CRLF))
            else:
                up.transport.write(body)
        else:
            ex.pending_body.append(body)
            ex.pending_bytes += size
            if ex.pending_bytes > BUFFER_LIMIT:
                self.pause_reading(PAUSE_BUFFER)

    def on_message_complete(self) -> None:
        ex = self.parsing
        if ex is None:
            return
        self.parsing = None
        self.phase = IDLE
        self.idle_since = self.stamp
        ex.body_done = True
        if not ex.keep_alive:
            self.no_more = True
        if ex.done:
            return
        if ex.chunked and ex is self.active and ex.upstream is not None and ex.upstream.transport is not None:
            ex.upstream.transport.write(LAST_CHUNK)
        if not ex.chunked and not ex.content_length:
            # _queue, inlined for the common bodiless request
            self.proxy.active_requests += 1
            if self.active is not None:
                self.pending.append(ex)
                if len(self.pending) >= PIPELINE_LIMIT:
                    self.pause_reading(PAUSE_PIPELINE)
                return
            lb = self.lb
            if (
                self._usual_forwarding(ex)
                and ex.method != b"HEAD"
                and lb.client_limiter is None
                and lb.affinity is None
                and (not lb.policy.uses_key or lb.hash_key.kind == "client_ip")
            ):
                self._start_plain(ex, lb)
            else:
                self._start(ex)

    # -- request side ------------------------------------------------------------------
    def _queue(self, ex: Exchange) -> None:
        self.proxy.active_requests += 1
        if self.active is None:
            self._start(ex)
        else:
            self.pending.append(ex)
            if len(self.pending) >= PIPELINE_LIMIT:
                self.pause_reading(PAUSE_PIPELINE)

    def _start(self, ex: Exchange) -> None:
        self.active = ex
        lb = self.lb
        if lb.client_limiter is not None:
            retry_after = lb.check_client(self.ip)
            if retry_after is not None:
                seconds = max(1, int(retry_after + 0.999))
                self._respond_error(ex, 429, b"Retry-After: %d\r\n" % seconds)
                return
        if lb.affinity is None and (not lb.policy.uses_key or lb.hash_key.kind == "client_ip"):
            # Nothing but the client's address is read: no per-request dict or header map.
            request = self.route_request
            server = lb.route(request)
        else:
            ex.path = path = ex.url.decode("latin-1")
            request = {"client_ip": self.ip, "path": path, "headers": RequestHeaders(ex.out, ex.dropped)}
            server = lb.route(request)
            ex.set_cookie = request.get("set_cookie")
        ex.request = request
        if server is None:
            self._respond_error(ex, 503)
            return
        if self._usual_forwarding(ex):  # _build_head's common case, inlined
            out = ex.out
            out.append(self.fwd_block)
            ex.head = b"".join(out)
            out.pop()  # ``out`` stays the headers' only copy (RequestHeaders reads it)
        else:
            ex.head = self._build_head(ex)
        self._dispatch(ex, server)

    def _usual_forwarding(self, ex: Exchange) -> bool:
        """The request gets the connection's usual forwarding block and nothing else:
        its Host is the last one seen, no Connection options, no trusted forwarding
        fields to extend, no chunked body to re-frame, no upgrade."""
        return (
            ex.host is not None
            and ex.host == self.fwd_host
            and ex.conn_tokens is None
            and ex.prior_xff is None
            and ex.prior_fwd is None
            and not (ex.has_proto or ex.has_xhost or ex.chunked or ex.upgrade)
        )

    def _start_plain(self, ex: Exchange, lb: LoadBalancer) -> None:
        """``_start``, ``_dispatch`` and ``_attach`` in one for the usual request.

        The caller has checked what makes it usual: bodiless, no hop-by-hop options or
        trusted forwarding fields, not HEAD, the connection's usual Host, and a policy
        that reads nothing but the client's address (no client rate limit, no sticky
        sessions). Validation ran before (``on_headers_complete``); only the work differs.
        """
        self.active = ex
        request = self.route_request
        ex.request = request
        server = lb.route(request)
        if server is None:
            self._respond_error(ex, 503)
            return
        out = ex.out
        out.append(self.fwd_block)
        head = b"".join(out)
        out.pop()  # ``out`` stays the headers' only copy (RequestHeaders reads it)
        self._send_routed(ex, lb, server, head)

    def _start_plain_read(self, data: bytes, method: bytes, target: bytes, now: float) -> bool:
        """A read that is one whole plain request (engine/proxy/plain.py): route and send.

        No llhttp callbacks and no head rebuilt: the request's own lines go out with the
        connection's forwarding block. False, with nothing changed, when the general path
        is needed after all: a client rate limit, sticky sessions, a policy that reads
        more than the client's address, or the Via header.
        """
        lb = self.lb
        if (
            lb.client_limiter is not None
            or lb.affinity is not None
            or (lb.policy.uses_key and lb.hash_key.kind != "client_ip")
            or self.settings.server_header
        ):
            return False
        self.seen_bytes = True  # (phase is IDLE already: data_received checked)
        self.idle_since = now
        PLAIN_TAKEN[0] += 1
        ex = self.spare
        if ex is None:
            ex = Exchange(now)
            ex.plain = True
            ex.host_count = 1
            ex.body_done = True
            ex.replay = _NO_REPLAY_YET  # GET, DELETE and OPTIONS are all idempotent
            ex.request = self.route_request
        else:  # back to a new exchange's state: only what a plain relay changed (relay_plain)
            self.spare = None
            ex.started = now
            ex.done = ex.sent = ex.resp_started = False
            ex.status = ex.bytes_out = 0
            ex.server = None
            ex.tried.clear()
            ex.up_started = ex.upstream_ms = 0.0
            ex.head = b""
            ex.connect_task = None
        ex.method = method
        ex.url = target
        ex.host = self.fwd_host
        self.proxy.active_requests += 1
        self.active = ex
        server = lb.route(ex.request, (), now)
        if server is None:
            self._respond_error(ex, 503)
            return True
        self._send_routed(ex, lb, server, data[:-2] + self.fwd_block)
        return True

    def _send_routed(self, ex: Exchange, lb: LoadBalancer, server: Server, head: bytes) -> None:
        """``_dispatch`` and ``_attach`` for a bodiless request with its head built."""
        ex.head = head
        ex.server = server
        ex.tried.append(server)
        server.active_connections += 1  # lb.begin(server), inlined
        lb.in_flight += 1
        ex.in_flight = True
        pool = self.pool
        now = ex.up_started = pool.now
        idle = pool._idle.get(id(server))  # pool.acquire(server), inlined
        while idle:
            conn = idle.pop()
            transport = conn.transport
            if not conn.closed and transport is not None and not transport.is_closing():
                break
        else:
            ex.connect_task = asyncio.get_running_loop().create_task(self._connect(ex, server))
            return
        ex.upstream = conn
        if conn.head_only or conn.parser is None:
            conn.bind(self, False)
        else:  # conn.bind's common case, inlined
            conn.client = self
            conn.acc = b""
            conn.pos = 0
            conn.want_head = True
            conn.status = 0
            conn.stamp = now
        ex.sent = True
        sent = len(head)
        server.stats.bytes_out += sent
        lb.totals.bytes_out += sent
        self.writes.hold(conn, head)  # sent with the iteration's other writes (engine/proxy/batch.py)
        if self.write_paused:
            transport.pause_reading()

    def _build_head(self, ex: Exchange) -> bytes:
        out = ex.out
        tokens = ex.conn_tokens
        if tokens is not None and not tokens <= PLAIN_TOKENS:
            # "Connection: X-Foo" makes X-Foo hop-by-hop: leave it out (rare, so slow).
            kept = out[:4]
            for index in range(4, len(out), 4):
                if out[index].lower() not in tokens:
                    kept += out[index : index + 4]
            kept.append(self._forwarding(ex))
            return b"".join(kept)
        host = ex.host
        if (
            host is not None
            and host == self.fwd_host
            and ex.prior_xff is None
            and ex.prior_fwd is None
            and not (ex.has_proto or ex.has_xhost or ex.chunked or ex.upgrade)
        ):
            out.append(self.fwd_block)  # the connection's usual block, built once
        else:
            out.append(self._forwarding(ex))
        head = b"".join(out)
        out.pop()  # ``out`` stays the headers' only copy (RequestHeaders reads it)
        return head

    def _forwarding(self, ex: Exchange) -> bytes:
        """The fields the proxy adds, and the blank line ending the head."""
        host = ex.host
        simple = (
            host is not None
            and ex.prior_xff is None
            and ex.prior_fwd is None
            and not (ex.has_proto or ex.has_xhost or ex.chunked or ex.upgrade)
        )
        if simple and host == self.fwd_host:
            return self.fwd_block
        ip, proto = self.ip_bytes, self.proto
        prior = ex.prior_xff
        parts = [b"X-Forwarded-For: ", ip if prior is None else prior + b", " + ip, CRLF]
        if not ex.has_proto:
            parts.append(b"X-Forwarded-Proto: " + proto + CRLF)
        if host is not None and not ex.has_xhost:
            parts.append(b"X-Forwarded-Host: " + host + CRLF)
        element = b"for=" + self.fwd_for + b";proto=" + proto
        if host is not None:
            element += b';host="' + host + b'"'
        prior = ex.prior_fwd
        parts += (b"Forwarded: ", element if prior is None else prior + b", " + element, CRLF)
        if ex.chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        if ex.upgrade and ex.upgrade_value is not None:
            parts.append(b"Connection: Upgrade\r\nUpgrade: " + ex.upgrade_value + CRLF)
        if host is None:
            parts.append(b"Host: \x00\r\n")  # placeholder: filled with the chosen server's address
        parts.append(CRLF)
        block = b"".join(parts)
        if simple:
            self.fwd_host, self.fwd_block = host, block
            self.plain_fields = self.plain_last = None  # they held the Host of the block before
        return block

    def _dispatch(self, ex: Exchange, server: Server) -> None:
        ex.server = server
        ex.tried.append(server)
        server.active_connections += 1  # lb.begin(server), inlined
        self.lb.in_flight += 1
        ex.in_flight = True
        pool = self.pool
        ex.up_started = pool.now
        idle = pool._idle.get(id(server))  # pool.acquire(server), inlined
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                self._attach(ex, conn)
                return
        ex.connect_task = asyncio.get_running_loop().create_task(self._connect(ex, server))

    async def _connect(self, ex: Exchange, server: Server) -> None:
        loop = asyncio.get_running_loop()
        pool = self.pool
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: UpstreamConnection(pool, server), server.host, server.port),
                self.settings.connect_timeout,
            )
        except TimeoutError:
            ex.connect_task = None
            if self.active is ex and not ex.done:
                self._upstream_failed(ex, timeout=True)
            return
        except OSError:
            ex.connect_task = None
            if self.active is ex and not ex.done:
                self._upstream_failed(ex, timeout=False)
            return
        ex.connect_task = None
        pool.opened += 1
        pool.now = _monotonic()
        if self.active is not ex or ex.done or self.closed or ex.server is not server:
            pool.release(conn)
            return
        self._attach(ex, conn)

    def _attach(self, ex: Exchange, conn: UpstreamConnection) -> None:
        ex.upstream = conn
        head_only = ex.method == b"HEAD"
        if head_only or conn.head_only or conn.parser is None:
            conn.bind(self, head_only)
        else:  # conn.bind's common case, inlined
            conn.client = self
            conn.acc = b""
            conn.pos = 0
            conn.want_head = True
            conn.status = 0
            conn.stamp = self.pool.now
        transport = conn.transport
        assert transport is not None
        head = ex.head
        if ex.host is None and ex.server is not None:
            head = head.replace(b"Host: \x00\r\n", b"Host: " + ex.server.address.encode() + CRLF)
        ex.sent = True
        sent = len(head) + ex.pending_bytes
        conn.server.stats.bytes_out += sent
        self.lb.totals.bytes_out += sent
        if ex.pending_body:
            chunks = [head]
            if ex.chunked and not self.upgrading:
                for body in ex.pending_body:
                    chunks += (b"%x\r\n" % len(body), body, CRLF)
            else:
                chunks += ex.pending_body
            if ex.body_done and ex.chunked:
                chunks.append(LAST_CHUNK)
            transport.writelines(chunks)
            ex.pending_body = []
            ex.pending_bytes = 0
            self.resume_reading(PAUSE_BUFFER)
        elif ex.body_done and ex.chunked:
            transport.writelines((head, LAST_CHUNK))
        else:
            transport.write(head)
        if self.write_paused:
            transport.pause_reading()

    def _upstream_failed(self, ex: Exchange, timeout: bool) -> None:
        """Connect failure, reset or timeout: retry elsewhere when safe, else 502/504."""
        server = ex.server
        if ex.in_flight and server is not None:
            ex.in_flight = False
            self.pool.now = now = _monotonic()
            self.lb.finish(server, None, now - ex.up_started, failed=True)
        conn = ex.upstream
        ex.upstream = None
        if conn is not None:
            conn.abort()
        if ex.resp_started:
            self._abort()
            return
        replayable = not ex.sent or ex.replay is not None
        if replayable and len(ex.tried) <= self.settings.retries and ex.request is not None and not timeout:
            request = ex.request
            server = self.lb.route(request, exclude=ex.tried)
            if server is not None:
                if ex.sent and ex.replay is not None:
                    ex.pending_body = list(ex.replay)
                    ex.pending_bytes = ex.replay_bytes
                ex.sent = False
                ex.set_cookie = request.get("set_cookie", ex.set_cookie)
                self._dispatch(ex, server)
                return
        self._respond_error(ex, 504 if timeout else 502)

    # -- response side (called by UpstreamConnection) ------------------------------------
    def response_head(self, up: UpstreamConnection, status: int, head: bytes) -> None:
        """Relay a response head (raw bytes, validated by llhttp) to the client."""
        ex = self.active
        if ex is None or ex.upstream is not up or self.transport is None:
            return
        if status == 101 and not ex.upgrade:
            # Switching protocols on a request that asked for none would turn the client's
            # next bytes into an unparsed tunnel (the h2c / WebSocket smuggling pattern).
            self.upstream_broken(up, reset=False)
            return
        if status >= 200 and status != 101:
            ex.status = status
            ex.resp_started = True
            ex.upstream_ms = (up.stamp - ex.up_started) * 1000.0
            if ex.keep_alive and ex.http_minor == 1 and not self.closing and head.startswith(b"HTTP/1.1 "):
                low = head.lower()
                framed = b"\ncontent-length:" in low
                hop = HOP_IN_HEAD(low) if framed else None
                if hop is not None:
                    start = hop.start() + 1
                    if low.startswith(_NGINX_KEEP_ALIVE, start):  # nginx's, exactly: inlined
                        end = start + len(_NGINX_KEEP_ALIVE)
                        # Usually the head's last line: then nothing after it is left to search.
                        hop = (
                            None if len(low) - end == 2 and low.endswith(CRLF) else HOP_IN_HEAD(low, end - 1)
                        )
                        if hop is None:
                            head = head[:start] + head[end:]
                    if hop is not None:
                        head, hop = _cut_plain_hops(head, low, hop)
                if framed and hop is None:
                    # The usual answer: framed by Content-Length, no hop-by-hop field
                    # (once a plain "Connection: keep-alive" is cut out), relayed byte
                    # for byte (plus the proxy's own fields, if any).
                    if ex.set_cookie or self.settings.server_header:
                        head = head[:-2] + self._own_fields(ex) + CRLF
                    if self.batching:
                        self.outq.append(head)
                    else:
                        self._send(head)
                    return
        parsed = ResponseHead(head)
        out = parsed.out  # end-to-end headers, hop-by-hop ones already left out
        length_known = parsed.length_known
        tokens = parsed.tokens
        if tokens is not None and not tokens <= PLAIN_TOKENS:
            # "Connection: X-Foo" makes X-Foo hop-by-hop: leave it out (rare, so slow).
            kept: list[bytes] = []
            length_known = False
            for index in range(0, len(out), 4):
                lower = out[index].lower()
                if lower not in tokens:
                    kept += out[index : index + 4]
                    length_known = length_known or lower == b"content-length"
            out = kept
        reason = parsed.reason
        status_line = (
            _STATUS_200 if status == 200 and reason == b"OK" else b"HTTP/1.1 %d %s\r\n" % (status, reason)
        )
        if status < 200 and status != 101:
            if ex.http_minor == 1:  # interim (100 Continue, 103 Early Hints): relay
                self._send(b"".join([status_line, *out, CRLF]))
            return
        has_body = not (up.head_only or status in (204, 304) or status == 101)
        tail: list[bytes] = []
        keep = ex.keep_alive and not self.closing
        if status == 101:
            ex.status = status
            ex.resp_started = True
            ex.upstream_ms = (up.stamp - ex.up_started) * 1000.0
            tail.append(b"Connection: Upgrade\r\n")
            if parsed.upgrade_value is not None:
                tail.append(b"Upgrade: " + parsed.upgrade_value + CRLF)
        elif has_body and (parsed.chunked or not length_known):
            ex.resp_eof = not parsed.chunked
            if ex.http_minor == 1:
                ex.resp_chunked = True
                tail.append(b"Transfer-Encoding: chunked\r\n")
            else:
                keep = False  # HTTP/1.0 client: the body ends when we close
        if status != 101:
            if not keep:
                ex.must_close = True
                tail.append(b"Connection: close\r\n")
            elif ex.http_minor == 0:
                tail.append(b"Connection: keep-alive\r\n")
        if ex.set_cookie or self.settings.server_header:
            tail.append(self._own_fields(ex))
        tail.append(CRLF)
        if self.batching:  # the usual case: the whole response leaves in one writev
            outq = self.outq
            outq.append(status_line)
            outq += out
            outq += tail
        else:
            self._send(b"".join([status_line, *out, *tail]))

    def _own_fields(self, ex: Exchange) -> bytes:
        """Header lines the proxy adds to a relayed response: its sticky cookie, Via."""
        extra = b""
        if ex.set_cookie:
            extra += b"Set-Cookie: " + ex.set_cookie.encode("latin-1") + CRLF
        if self.settings.server_header:
            extra += b"Via: 1.1 lbtui\r\n"
        return extra

    def response_body(self, up: UpstreamConnection, body: bytes) -> None:
        ex = self.active
        if ex is None or ex.upstream is not up or self.transport is None:
            return
        ex.bytes_out += len(body)
        if self.batching:
            if ex.resp_chunked:
                self.outq += (b"%x\r\n" % len(body), body, CRLF)
            else:
                self.outq.append(body)
        elif ex.resp_chunked:
            self.transport.writelines((b"%x\r\n" % len(body), body, CRLF))
        else:
            self.transport.write(body)

    def response_done(self, up: UpstreamConnection, upstream_keep_alive: bool) -> None:
        ex = self.active
        if ex is None or ex.upstream is not up:
            return
        if ex.resp_chunked:
            self._send(LAST_CHUNK)
        ex.upstream = None
        if ex.in_flight and ex.server is not None:
            ex.in_flight = False
            self.lb.finish(ex.server, ex.status, up.stamp - ex.up_started)
        if upstream_keep_alive and ex.body_done and not self.upgrading:
            pool = self.pool
            idle = pool._idle.get(up.key)
            if idle is not None and not up.closed and len(idle) < pool.size:
                up.client = None  # pool.release(up), inlined for the usual case
                up.idle_since = pool.now
                idle.append(up)
            else:
                pool.release(up)
        else:
            up.close()
        self._finish(ex)

    def response_complete(self, up: UpstreamConnection, ex: Exchange) -> None:
        """``response_done`` and ``_finish`` merged for the usual ending, inline.

        The caller (the upstream's ``on_message_complete``) has checked what makes it
        usual: this connection's active exchange, request fully read, upstream kept
        alive, body relayed as received, nothing asking to close or tunnel, no error
        deferred behind it.
        """
        ex.upstream = None
        pool = self.pool
        now = pool.now
        if ex.in_flight:
            ex.in_flight = False
            self.lb.finish(ex.server, ex.status, up.stamp - ex.up_started)  # type: ignore[arg-type]
        idle = pool._idle.get(up.key)
        if idle is not None and not up.closed and len(idle) < pool.size:
            up.client = None  # pool.release(up), inlined
            up.idle_since = now
            idle.append(up)
        else:
            pool.release(up)
        ex.done = True
        self.active = None
        proxy = self.proxy
        proxy.active_requests -= 1
        if proxy.observers or proxy.access_log is not None:
            self._record(ex)
        if self.paused or self.pending:
            self._ready_for_next(now)
        else:  # _ready_for_next's usual case: nothing paused, nothing pipelined
            self.idle_since = now

    def relay_plain(self, up: UpstreamConnection, ex: Exchange, data: bytes, plain: PlainHead) -> bool:
        """The whole answer to a plain request in one read: relay it and end the exchange.

        Its head is plain (``plain_response_head``) and the body is exactly its
        Content-Length, so this is ``response_head``, ``on_body`` and ``response_complete``
        in one. False, with nothing changed, when this connection must end differently
        (closing, an error deferred behind the request): the general path then parses.
        """
        if self.closing or self.closed or self.deferred_error or self.transport is None:
            return False
        PLAIN_TAKEN[1] += 1
        status, length, cut = plain
        if cut >= 0:  # nginx's "Connection: keep-alive": about the upstream connection only
            data = data[:cut] + data[cut + KEEP_ALIVE_CUT :]
        if self.pending:  # a pipelined request starts next: its bytes must follow these now
            self._send(data)
        else:
            self.writes.hold(self, data)  # sent with the iteration's other writes
        ex.status = status
        ex.resp_started = True
        ex.bytes_out += length
        ex.upstream_ms = (up.stamp - ex.up_started) * 1000.0
        self.response_complete(up, ex)
        self.spare = ex  # nothing else refers to it now (the log took its values): reuse it
        return True

    def upstream_lost(self, up: UpstreamConnection) -> None:
        ex = self.active
        if ex is None or ex.upstream is not up:
            return
        if ex.tunnel:
            self._finish(ex)
            return
        if ex.resp_started and ex.resp_eof:
            self.response_done(up, False)
            return
        self._upstream_failed(ex, timeout=False)

    def upstream_broken(self, up: UpstreamConnection, reset: bool) -> None:
        """The upstream sent something that is not HTTP: 502, never retried."""
        ex = self.active
        if ex is None or ex.upstream is not up:
            return
        ex.replay = None
        ex.sent = True
        self._upstream_failed(ex, timeout=False)

    def upgraded(self, up: UpstreamConnection, rest: bytes) -> None:
        """The upstream answered 101: from now on bytes pass through both ways."""
        ex = self.active
        if ex is None or ex.upstream is not up or self.transport is None:
            return
        ex.tunnel = True
        self.upgrading = True
        self.flush()
        if rest:
            self.transport.write(rest)
            ex.bytes_out += len(rest)
        if ex.pending_body and up.transport is not None:
            up.transport.writelines(ex.pending_body)
            ex.pending_body = []
            ex.pending_bytes = 0
            self.resume_reading(PAUSE_BUFFER)

    def tunnel_from_upstream(self, data: bytes) -> None:
        self.flush()
        if self.transport is not None and not self.closed:
            self.transport.write(data)
            ex = self.active
            if ex is not None:
                ex.bytes_out += len(data)

    # -- endings -------------------------------------------------------------------------
    def _respond_error(self, ex: Exchange, status: int, extra: bytes = b"") -> None:
        close = not ex.body_done or not ex.keep_alive or self.closing or status in (400, 408, 413, 414, 431)
        data, size = error_response(
            status,
            close=close,
            head_only=ex.method == b"HEAD",
            server_header=self.settings.server_header,
            extra=extra,
        )
        ex.status = status
        ex.bytes_out = size
        ex.must_close = close
        self._send(data)
        self._finish(ex)

    def _finish(self, ex: Exchange) -> None:
        if ex.done:
            return
        ex.done = True
        if self.active is ex:
            self.active = None
        proxy = self.proxy
        proxy.active_requests -= 1
        if ex.tunnel:
            if ex.in_flight and ex.server is not None:
                ex.in_flight = False
                self.lb.finish(ex.server, 101, _monotonic() - ex.up_started)
            up = ex.upstream
            ex.upstream = None
            if up is not None:
                up.close()
            ex.must_close = True
        if proxy.observers or proxy.access_log is not None:
            self._record(ex)
        # A bad request behind pipelined good ones: answer those first, in order (RFC 9112
        # 9.3.2), then send its error and close.
        if (
            ex.must_close
            or not ex.body_done
            or self.closing
            or self.upgrading
            or (self.deferred_error and not self.pending)
        ):
            if self.deferred_error and not ex.must_close:
                self._send(error_response(self.deferred_error, close=True)[0])
            self._close()
            return
        self._ready_for_next(self.pool.now)

    def _ready_for_next(self, now: float) -> None:
        """The exchange is over and the connection stays: read on, start what is pipelined."""
        self.idle_since = now
        if self.paused & PAUSE_UPSTREAM:
            self.resume_reading(PAUSE_UPSTREAM)
        if self.pending:
            nxt = self.pending.popleft()
            if self.half_closed and not self.pending and not self.deferred_error:
                self.closing = True
            self.resume_reading(PAUSE_PIPELINE)
            self._start(nxt)

    def _record(self, ex: Exchange) -> None:
        proxy = self.proxy
        server = ex.server
        if proxy.observers:
            method = ex.method
            proxy.publish(
                AccessRecord(
                    ex.started + proxy.wall_offset,
                    self.ip,
                    _METHODS.get(method) or method.decode("latin-1"),
                    ex.path or ex.url.decode("latin-1"),
                    ex.status,
                    server.name if server is not None else None,
                    ex.bytes_in,
                    ex.bytes_out,
                    ex.upstream_ms,
                    (self.pool.now - ex.started) * 1000.0,
                )
            )
            return
        # Method and target as received: the log decodes them once per distinct value.
        proxy.access_log.write_entry(  # type: ignore[union-attr]  # callers checked
            (
                ex.started + proxy.wall_offset,
                (
                    self.ip,
                    ex.method,
                    ex.url,
                    ex.status,
                    server.name if server is not None else None,
                    ex.bytes_in,
                    ex.bytes_out,
                ),
                ex.upstream_ms,
                (self.pool.now - ex.started) * 1000.0,
            )
        )

    def _reject(self, status: int) -> None:
        """A malformed or oversized request: an error answer and a closed connection."""
        self.no_more = True
        ex = self.parsing
        self.parsing = None
        active = self.active
        if active is not None and not active.done:
            if ex is active:
                # The request being streamed turned out malformed (bad chunk, too big):
                # cut the upstream side so the backend never sees a complete request.
                if active.resp_started:
                    self._abort()
                else:
                    self._reject_active(active, status)
                return
            # An earlier pipelined request is still being answered: finish it first.
            self.deferred_error = status
            return
        if ex is None:
            ex = Exchange(_monotonic())
        if ex.done:
            self._close()
            return
        if ex in self.pending or ex is self.active:
            pass
        else:
            self.proxy.active_requests += 1
        ex.must_close = True
        ex.keep_alive = False
        self.active = ex
        self._respond_error(ex, status)

    def _abandon(self, ex: Exchange) -> None:
        """The client went away mid-exchange: release the upstream side."""
        task = ex.connect_task
        if task is not None:
            task.cancel()
            ex.connect_task = None
        up = ex.upstream
        ex.upstream = None
        if up is not None:
            if ex.tunnel:
                up.close()
            else:
                up.abort()
        if ex.in_flight and ex.server is not None:
            ex.in_flight = False
            self.lb.finish(ex.server, None, _monotonic() - ex.up_started)
        if not ex.status:
            ex.status = 499  # nginx's "client closed request"
        ex.must_close = True
        self._finish(ex)

    def _close(self) -> None:
        self.no_more = True
        if self.outq or self.held is not None:
            self.flush()
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def _abort(self) -> None:
        self.no_more = True
        self.outq = []
        self.held = None
        self.batching = False
        ex = self.active
        if ex is not None and not ex.done:
            ex.must_close = True
            self._finish(ex)
        if self.transport is not None:
            self.closed = True
            self.transport.abort()

    # -- housekeeping (called by the proxy's sweeper) --------------------------------------
    def check_timeouts(self, now: float) -> None:
        if self.closed:
            return
        settings = self.settings
        ex = self.active
        if ex is not None:
            up = ex.upstream
            if ex.tunnel:
                last = max(self.stamp, up.stamp if up is not None else 0.0)
                if now - last > settings.idle_timeout:
                    self._finish(ex)
                return
            if up is not None:
                last = up.stamp if ex.body_done else max(up.stamp, self.stamp)
                if now - last > settings.upstream_timeout:
                    self._upstream_failed(ex, timeout=True)
                    return
            if self.parsing is ex and self.phase == BODY and now - self.stamp > settings.body_timeout:
                if ex.resp_started:
                    self._abort()
                else:
                    self._reject_active(ex, 408)
            return
        if self.phase == HEAD:
            if now - self.head_started > settings.header_timeout:
                if self.seen_bytes:
                    self._reject(408)
                else:
                    self._close()
        elif (
            self.phase == IDLE
            and not self.pending
            and (now - self.idle_since > settings.idle_timeout or self.closing)
        ):
            self._close()

    def _reject_active(self, ex: Exchange, status: int) -> None:
        task = ex.connect_task
        if task is not None:
            task.cancel()
            ex.connect_task = None
        up = ex.upstream
        ex.upstream = None
        if up is not None:
            up.abort()
        if ex.in_flight and ex.server is not None:
            ex.in_flight = False
            self.lb.finish(ex.server, None, _monotonic() - ex.up_started)
        self.no_more = True
        self.parsing = None
        self._respond_error(ex, status)

    def shutdown(self) -> None:
        """Graceful stop: close now if idle, else after the exchange in progress."""
        self.closing = True
        if self.active is None and self.parsing is None and not self.pending:
            self._close()

    def abort(self) -> None:
        ex = self.active
        if ex is not None and not ex.done:
            self._abandon(ex)
        if self.transport is not None:
            self.closed = True
            self.transport.abort()
