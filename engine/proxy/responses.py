"""The proxy's own short answers (errors, 429), prebuilt so the error path allocates little."""

from __future__ import annotations

REASONS = {
    400: b"Bad Request",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}
BODIES = {
    400: b"bad request\n",
    405: b"method not allowed\n",
    408: b"request timeout\n",
    413: b"request body too large\n",
    414: b"request line too long\n",
    429: b"too many requests\n",
    431: b"request headers too large\n",
    500: b"internal error\n",
    502: b"bad gateway: the upstream server failed\n",
    503: b"service unavailable: no server can take this request\n",
    504: b"gateway timeout: the upstream server did not answer in time\n",
}


def error_response(
    status: int, *, close: bool, head_only: bool = False, server_header: bool = False, extra: bytes = b""
) -> tuple[bytes, int]:
    """The bytes of a proxy-made response and its body length."""
    body = BODIES.get(status, b"error\n")
    lines = [
        b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"Error")),
        b"Content-Type: text/plain; charset=utf-8\r\n",
        b"Content-Length: %d\r\n" % len(body),
        b"Cache-Control: no-store\r\n",
        b"Connection: close\r\n" if close else b"",
        b"Server: lbtui\r\n" if server_header else b"",
        extra,
        b"\r\n",
    ]
    if head_only:
        return b"".join(lines), 0
    return b"".join(lines) + body, len(body)
