"""One request/response exchange through the proxy, and the request's headers as a mapping."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.proxy.pool import UpstreamConnection
    from engine.server import Server


class RequestHeaders(Mapping[str, str]):
    """Lower-cased, decoded view of the request's headers, built only if a policy reads it.

    Round robin never looks at headers, so decoding them for every request would be
    wasted work on the hot path; hashing on a header or a sticky cookie pays for it.
    The headers live in the exchange's outgoing head (``out``: method, " ", url,
    version, then name, ": ", value, CRLF per header) plus the ones not forwarded as
    received (``dropped``: hop-by-hop and forwarding fields), so parsing stores each
    header once.
    """

    __slots__ = ("_dropped", "_map", "_out")

    def __init__(self, out: list[bytes], dropped: list[tuple[bytes, bytes]] | None) -> None:
        self._out = out
        self._dropped = dropped
        self._map: dict[str, str] | None = None

    def _build(self) -> dict[str, str]:
        built: dict[str, str] = {}
        out = self._out
        pairs = list(zip(out[4::4], out[6::4], strict=False))
        if self._dropped:
            pairs += self._dropped
        for name, value in pairs:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            if key in built:
                text = built[key] + ("; " if key == "cookie" else ", ") + text
            built[key] = text
        self._map = built
        return built

    def __getitem__(self, key: str) -> str:
        return (self._map or self._build())[key]

    def get(self, key: str, default: Any = None) -> Any:
        return (self._map if self._map is not None else self._build()).get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._map if self._map is not None else self._build())

    def __len__(self) -> int:
        return len(self._map if self._map is not None else self._build())


class Exchange:
    """State of one request from its head to the end of its response."""

    __slots__ = (
        "body_done",
        "bytes_in",
        "bytes_out",
        "chunked",
        "conn_tokens",
        "connect_task",
        "content_length",
        "done",
        "dropped",
        "has_proto",
        "has_xhost",
        "head",
        "host",
        "host_count",
        "http_minor",
        "in_flight",
        "keep_alive",
        "method",
        "must_close",
        "out",
        "path",
        "pending_body",
        "pending_bytes",
        "plain",
        "prior_fwd",
        "prior_xff",
        "replay",
        "replay_bytes",
        "request",
        "resp_chunked",
        "resp_eof",
        "resp_started",
        "sent",
        "server",
        "set_cookie",
        "started",
        "status",
        "te_seen",
        "tried",
        "tunnel",
        "up_started",
        "upgrade",
        "upgrade_value",
        "upstream",
        "upstream_ms",
        "url",
    )

    def __init__(self, started: float) -> None:
        self.method = b""
        self.url = b""
        self.http_minor = 1
        # The head as it will be forwarded: method, url and the end-to-end headers in the
        # client's order and case; the proxy's own fields are appended when it is sent.
        self.out: list[bytes] = [b"", b" ", b"", b" HTTP/1.1\r\n"]
        self.dropped: list[tuple[bytes, bytes]] | None = None  # received, not forwarded as is
        self.prior_xff: bytes | None = None  # trusted X-Forwarded-For / Forwarded values
        self.prior_fwd: bytes | None = None
        self.has_proto = False  # a trusted X-Forwarded-Proto / -Host was forwarded
        self.has_xhost = False
        self.host: bytes | None = None
        self.host_count = 0
        self.content_length: int | None = None
        self.chunked = False
        self.te_seen = False
        self.conn_tokens: set[bytes] | None = None
        self.upgrade_value: bytes | None = None
        self.upgrade = False
        self.keep_alive = True
        self.head = b""
        self.body_done = False
        self.pending_body: list[bytes] = []
        self.pending_bytes = 0
        # Body kept for a retry on another server: idempotent requests only, small only.
        self.replay: list[bytes] | None = None
        self.replay_bytes = 0
        self.sent = False  # some byte of the request reached an upstream connection
        self.server: Server | None = None
        self.tried: list[Server] = []
        self.upstream: UpstreamConnection | None = None
        self.in_flight = False  # between lb.begin and lb.finish
        self.connect_task: asyncio.Task[None] | None = None
        self.request: dict[str, Any] | None = None
        self.started = started
        self.path = ""  # the url decoded, once routed
        self.up_started = 0.0
        self.upstream_ms = 0.0
        self.status = 0
        self.resp_started = False
        self.resp_chunked = False  # re-framed as chunked towards the client
        self.resp_eof = False  # the upstream delimits the body by closing
        self.must_close = False
        self.tunnel = False
        self.bytes_in = 0
        self.bytes_out = 0
        self.set_cookie: str | None = None
        self.done = False
        self.plain = False  # took the plain path (see engine/proxy/plain.py) both ways
