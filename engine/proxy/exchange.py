"""One request/response exchange through the proxy, and the request's headers as a mapping."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.proxy.pool import UpstreamConnection
    from engine.server import Server


class RequestHeaders(Mapping[str, str]):
    """Lower-cased, decoded view of the raw header list, built only if a policy reads it.

    Round robin never looks at headers, so decoding them for every request would be
    wasted work on the hot path; hashing on a header or a sticky cookie pays for it.
    """

    __slots__ = ("_map", "_raw")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        self._map: dict[str, str] | None = None

    def _build(self) -> dict[str, str]:
        built: dict[str, str] = {}
        for name, value in self._raw:
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
        "head",
        "header_bytes",
        "headers",
        "host",
        "host_count",
        "http_minor",
        "in_flight",
        "keep_alive",
        "method",
        "must_close",
        "pending_body",
        "pending_bytes",
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
        "wall",
    )

    def __init__(self, started: float) -> None:
        self.method = b""
        self.url = b""
        self.http_minor = 1
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
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
        self.wall = 0.0
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
