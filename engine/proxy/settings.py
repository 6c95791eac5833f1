"""Limits and timeouts of the data plane, shared by the HTTP and TCP proxies."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ProxySettings:
    """Defaults follow common HAProxy practice (``timeout http-request 10s``)."""

    connect_timeout: float = 3.0
    header_timeout: float = 10.0  # slowloris: the whole request head must arrive within this
    idle_timeout: float = 60.0  # keep-alive client, idle pooled upstream, idle tunnel
    upstream_timeout: float = 60.0  # no byte from the upstream for this long: 504 or abort
    body_timeout: float = 60.0  # no byte of the request body for this long: 408 or abort
    max_request_line: int = 8192
    max_headers: int = 100
    max_header_bytes: int = 65536
    max_body_bytes: int = 100 * 1024 * 1024
    retries: int = 2  # extra tries on another server, only when safe
    trust_forwarded: bool = False  # keep (and append to) X-Forwarded-For/Forwarded from clients
    pool_size: int = 64  # idle keep-alive upstream connections kept per server
    server_header: bool = False  # add "Via: 1.1 lbtui" to proxied and "Server: lbtui" to own responses

    def sweep_interval(self) -> float:
        """How often timeouts are checked: a quarter of the shortest, within [0.05, 1] s."""
        shortest = min(
            self.connect_timeout,
            self.header_timeout,
            self.idle_timeout,
            self.upstream_timeout,
            self.body_timeout,
        )
        return max(0.05, min(1.0, shortest / 4))
