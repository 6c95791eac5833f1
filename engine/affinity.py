"""Sticky sessions: pin a client to a server by cookie or by client IP.

Cookie mode works as HAProxy's ``cookie SRV insert``: the cookie's value is the server's
name, so any lbtui instance (or this one after a restart) can honour it without shared
state. IP mode keeps a bounded table of client IP to server with a TTL; the first pick
for an IP comes from the consistent hash, so instances agree even before they sync, and
the table (persisted by the store) keeps a client in place when membership changes.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from engine.server import Server

COOKIE_NAME = "LBTUI_SERVER"


def parse_cookies(header: str) -> dict[str, str]:
    """Cookie header to a dict; malformed pairs are skipped, not fatal."""
    cookies: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name:
            cookies[name] = value.strip('"')
    return cookies


class SessionAffinity:
    """Remembers which server a session belongs to."""

    def __init__(
        self,
        method: str = "cookie",
        ttl: int = 3600,
        *,
        cookie_name: str = COOKIE_NAME,
        max_entries: int = 100_000,
        resolve: Callable[[str], Server | None] | None = None,
    ) -> None:
        if method not in ("cookie", "ip"):
            raise ValueError(f"session affinity method must be 'cookie' or 'ip', not {method!r}")
        self.method = method
        self.ttl = ttl
        self.cookie_name = cookie_name
        self.max_entries = max_entries
        self.resolve = resolve
        self._pins: OrderedDict[str, tuple[Server, float]] = OrderedDict()
        self.on_pin: Callable[[str, Server, float], None] | None = None

    def _cookie(self, request: Mapping[str, Any]) -> str | None:
        cookies = request.get("cookies")
        if cookies is None:
            header = (request.get("headers") or {}).get("cookie")
            if not header:
                return None
            cookies = parse_cookies(header)
        return cookies.get(self.cookie_name)

    def get_server(self, request: Mapping[str, Any]) -> Server | None:
        """The pinned server if it can still take requests; a dead pin is dropped.

        Cookie mode trusts only the cookie, as HAProxy's ``cookie insert`` does: clients
        behind one NAT address are still balanced independently.
        """
        if self.method == "cookie":
            value = self._cookie(request)
            if not value or self.resolve is None:
                return None
            server = self.resolve(value)
            return server if server is not None and server.available else None
        ip = request.get("client_ip")
        if not ip:
            return None
        entry = self._pins.get(ip)
        if entry is None:
            return None
        server, expires = entry
        if expires <= time.time() or not server.available:
            del self._pins[ip]
            return None
        return server

    def pin(self, request: dict[str, Any], server: Server) -> None:
        """Pin the request's client to ``server``: a Set-Cookie, or an entry in the IP table."""
        if self.method == "cookie":
            if self._cookie(request) != server.name:
                request["set_cookie"] = f"{self.cookie_name}={server.name}; Path=/; Max-Age={self.ttl}; HttpOnly"
            return
        ip = request.get("client_ip")
        if not ip:
            return
        expires = time.time() + self.ttl
        self._pins[ip] = (server, expires)
        self._pins.move_to_end(ip)
        while len(self._pins) > self.max_entries:
            self._pins.popitem(last=False)
        if self.on_pin is not None:
            self.on_pin(ip, server, expires)

    def restore(self, key: str, server: Server, expires: float) -> None:
        """Reload a pin from the store after a restart."""
        if expires > time.time():
            self._pins[key] = (server, expires)

    def forget_server(self, server: Server) -> None:
        for key in [k for k, (s, _) in self._pins.items() if s is server]:
            del self._pins[key]

    def items(self) -> Iterator[tuple[str, str, float]]:
        """(client IP, server name, expires) for every live pin."""
        now = time.time()
        for key, (server, expires) in list(self._pins.items()):
            if expires > now:
                yield key, server.name, expires

    def __len__(self) -> int:
        return len(self._pins)
