"""Header rules of RFC 9110/9112 for a proxy: hop-by-hop removal and forwarding headers.

Names are compared lower-cased as bytes; everything forwarded keeps the sender's case
and order.
"""

from __future__ import annotations

import re

# Never forwarded as received: connection-scoped (RFC 9110 7.6.1) or framing that the
# proxy re-creates itself (Transfer-Encoding), plus the proxy-only fields.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    }
)
FORWARDING = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"})
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
# RFC 3986 reg-name / IP-literal characters plus ":" for the port; anything else is refused.
_HOST_ALLOWED = bytes(
    sorted(set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+;=:[]%"))
)


def connection_tokens(value: bytes) -> set[bytes]:
    """Lower-cased options of a Connection header: each names a hop-by-hop field."""
    return {token.strip().lower() for token in value.split(b",") if token.strip()}


def valid_host(value: bytes) -> bool:
    """A Host value a proxy may route on: a reg-name or IP literal and an optional port."""
    if not value or len(value) > 255 or value.translate(None, _HOST_ALLOWED):
        return False
    if b":" not in value and b"[" not in value and b"]" not in value:
        return True  # the common case, decided without slicing
    if value.startswith(b"["):
        end = value.find(b"]")
        if end < 0:
            return False
        rest = value[end + 1 :]
    else:
        if value.count(b":") > 1 or b"[" in value or b"]" in value:
            return False
        rest = value[value.find(b":") :]
    if rest:
        port = rest[1:]
        return rest[:1] == b":" and (port == b"" or (port.isdigit() and len(port) <= 5))
    return True


def forwarded_for(ip: str) -> str:
    """The ``for=`` value of RFC 7239: IPv6 quoted in brackets."""
    return f'"[{ip}]"' if ":" in ip else ip


def chunk_header(size: int) -> bytes:
    return b"%x\r\n" % size


# Request header kinds the parser acts on; every other header is forwarded untouched
# without even being lower-cased (names are filtered by length first, a set lookup).
H_HOST, H_LENGTH, H_TE, H_CONNECTION, H_UPGRADE, H_HOP, H_XFF, H_FORWARDED, H_XPROTO, H_XHOST, H_ALIAS = range(11)
REQUEST_KINDS: dict[bytes, int] = {
    b"host": H_HOST,
    b"content-length": H_LENGTH,
    b"transfer-encoding": H_TE,
    b"connection": H_CONNECTION,
    b"upgrade": H_UPGRADE,
    b"x-forwarded-for": H_XFF,
    b"forwarded": H_FORWARDED,
    b"x-forwarded-proto": H_XPROTO,
    b"x-forwarded-host": H_XHOST,
}
for _name in HOP_BY_HOP:
    REQUEST_KINDS.setdefault(_name, H_HOP)


def _underscore_spellings(name: bytes) -> list[bytes]:
    """``name`` with each "-" kept or written "_", all but ``name`` itself."""
    spellings = [b""]
    for part in name.split(b"-"):
        spellings = [s + sep + part for s in spellings for sep in ((b"-", b"_") if s else (b"",))]
    return [s for s in spellings if s != name]


# CGI, WSGI, PHP and Rack read "X_Forwarded_For" as the same variable as the proxy's own
# "X-Forwarded-For" (HTTP_X_FORWARDED_FOR), so a client could spoof its address through
# them: these spellings are never forwarded, trusted or not (nginx drops every header
# with an underscore by default; Envoy can be told to).
FORWARDING_ALIASES = frozenset(
    alias for name in FORWARDING if b"-" in name for alias in _underscore_spellings(name)
)
for _name in FORWARDING_ALIASES:
    REQUEST_KINDS[_name] = H_ALIAS
REQUEST_LENGTHS = frozenset(len(name) for name in REQUEST_KINDS)
# Response headers: Content-Length is kept (and noted), hop-by-hop ones are dropped.
RESPONSE_KINDS: dict[bytes, int] = {b"content-length": H_LENGTH, b"transfer-encoding": H_TE}
RESPONSE_KINDS[b"connection"] = H_CONNECTION
RESPONSE_KINDS[b"upgrade"] = H_UPGRADE
for _name in HOP_BY_HOP:
    RESPONSE_KINDS.setdefault(_name, H_HOP)
RESPONSE_LENGTHS = frozenset(len(name) for name in RESPONSE_KINDS)
# Connection options that name no other header: the common case needs no filtering.
PLAIN_TOKENS = frozenset({b"close", b"keep-alive"})

# A response head whose hop-by-hop fields must be handled (searched in the lower-cased
# head): without a match, and with a Content-Length, the head is relayed byte for byte.
HOP_IN_HEAD = re.compile(
    rb"\n(?:connection|keep-alive|proxy-connection|te|trailer|transfer-encoding|upgrade"
    rb"|proxy-authenticate|proxy-authorization)[ \t]*:"
).search
HEAD_END = re.compile(rb"\r?\n\r?\n")


class ResponseHead:
    """A response head taken apart, for the rare answers that cannot be relayed as they are."""

    __slots__ = ("chunked", "length_known", "out", "reason", "tokens", "upgrade_value")

    def __init__(self, head: bytes) -> None:
        lines = head.split(b"\n")
        parts = lines[0].rstrip(b"\r").split(b" ", 2)
        self.reason = parts[2] if len(parts) > 2 else b""
        # End-to-end headers as relayed: name, ": ", value, CRLF each.
        self.out: list[bytes] = []
        self.length_known = False  # a Content-Length is relayed
        self.chunked = False  # the upstream sent Transfer-Encoding
        self.tokens: set[bytes] | None = None  # Connection options
        self.upgrade_value: bytes | None = None
        out = self.out
        kept = False
        for raw in lines[1:]:
            line = raw.rstrip(b"\r")
            if not line:
                break
            if line[:1] in (b" ", b"\t"):  # obs-fold: continues the previous field
                if kept:
                    out[-2] = out[-2] + b" " + line.strip(b" \t")
                continue
            name, _, value = line.partition(b":")
            name = name.rstrip(b" \t")
            value = value.strip(b" \t")
            kept = True
            kind = RESPONSE_KINDS.get(name.lower())
            if kind is not None:
                if kind == H_LENGTH:
                    self.length_known = True
                else:
                    kept = False
                    if kind == H_TE:
                        self.chunked = True
                    elif kind == H_CONNECTION:
                        tokens = connection_tokens(value)
                        self.tokens = tokens if self.tokens is None else self.tokens | tokens
                    elif kind == H_UPGRADE:
                        self.upgrade_value = value
                    continue  # hop-by-hop: not relayed
            out += (name, b": ", value, b"\r\n")
