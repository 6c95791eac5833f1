"""The usual request and response, recognised whole by one regex match each.

Most traffic through a load balancer is one shape: a bodiless HTTP/1.1 request with a
Host and a few ordinary headers, answered by a response framed by Content-Length that
arrives in one read. For that shape the proxy skips llhttp's per-header callbacks (each
a Python call) and relays the bytes as they are. The patterns accept a strict subset of
what llhttp and the general path accept: anything they do not match (another method, a
body, a hop-by-hop or forwarding field, an empty or padded value, obs-text, a bare LF, a
second Host) goes through the general path, which validates and rejects it exactly as
before. Forwarding the matched lines byte for byte is what the general path would send
too, since it rebuilds each header as ``name: value`` and these lines are already so.
"""

from __future__ import annotations

import re

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_VALUE = rb"[!-~]+(?: [!-~]+)*"  # visible ASCII, single inner spaces: nothing to trim
# Fields the general path acts on (framing, hop-by-hop, forwarding with its underscore
# spellings, Host): never in an "other" line, so the one Host line is the only special
# one in a plain request.
_REQUEST_SPECIAL = (
    rb"host|content-length|transfer-encoding|connection|keep-alive|proxy-connection|te|trailer"
    rb"|upgrade|proxy-authorization|proxy-authenticate|expect|x[-_]forwarded[-_](?:for|proto|host)"
    rb"|forwarded"
)
_RESPONSE_SPECIAL = (
    rb"content-length|transfer-encoding|connection|keep-alive|proxy-connection|te|trailer|upgrade"
    rb"|proxy-authenticate|proxy-authorization"
)
_OTHER_REQUEST_LINE = rb"(?!(?i:" + _REQUEST_SPECIAL + rb"):)" + _TOKEN + rb": " + _VALUE + rb"\r\n"
_OTHER_RESPONSE_LINE = rb"(?!(?i:" + _RESPONSE_SPECIAL + rb"):)" + _TOKEN + rb": " + _VALUE + rb"\r\n"
# RFC 3986 characters of an origin-form target, without "#" (no fragment on the wire).
_TARGET = rb"/[A-Za-z0-9\-._~:/?\[\]@!$&'()*+,;=%]*"

PLAIN_REQUEST = re.compile(
    rb"(GET|DELETE|OPTIONS) (" + _TARGET + rb") HTTP/1\.1\r\n"
    rb"(?:" + _OTHER_REQUEST_LINE + rb")*"
    rb"(?i:host): ([!-~]+)\r\n"
    rb"(?:" + _OTHER_REQUEST_LINE + rb")*"
    rb"\r\n"
).fullmatch
"""A whole read that is exactly one plain request head: groups method, target, Host."""

PLAIN_REQUEST_LINE = re.compile(rb"(GET|DELETE|OPTIONS) (" + _TARGET + rb") HTTP/1\.1").fullmatch
"""The request line alone (call with the line's bounds): for a head whose header lines
are the same bytes as a plain head's before on the connection, the usual case."""

KEEP_ALIVE_LINE = b"\r\nConnection: keep-alive\r\n"
KEEP_ALIVE_CUT = len(KEEP_ALIVE_LINE) - 2  # the bytes cut: the line but its own CRLF
_KEEP_ALIVE = rb"Connection: keep-alive\r\n"
_KEEP_ALIVE_AT_LINE_START = b"\nConnection: keep-alive\r"  # counts adjacent repeats too

_PLAIN_RESPONSE = re.compile(
    rb"HTTP/1\.1 ((?!204|304)[2-5][0-9][0-9]) [ -~]*\r\n"
    rb"(?:" + _OTHER_RESPONSE_LINE + rb"|" + _KEEP_ALIVE + rb")*"
    rb"(?i:content-length): ([0-9]{1,15})\r\n"
    rb"(?:" + _OTHER_RESPONSE_LINE + rb"|" + _KEEP_ALIVE + rb")*"
    rb"\r\n"
).match
"""A final response head framed by one Content-Length and with no hop-by-hop field but
``Connection: keep-alive`` as nginx and Apache spell it (about the upstream connection
only, so cut as ``KEEP_ALIVE_LINE``): groups status and length."""

PlainHead = tuple[int, int, int]  # status, Content-Length, offset of the keep-alive line or -1

PLAIN_HEAD_LIMIT = 4096
"""Longer response heads (many cookies) take the general path: the memo holds at most
``_KNOWN_LIMIT`` heads of at most this size, 4 MiB."""

KNOWN_HEADS: dict[bytes, PlainHead | None] = {}
"""The memo of ``plain_response_head``: heads already judged, by their bytes."""
_KNOWN_LIMIT = 1024


def plain_response_head(head: bytes) -> PlainHead | None:
    """What a final response head means, if it is plain (``_PLAIN_RESPONSE``); else None.

    A backend sends the same head bytes again and again (nginx's change once a second,
    with its Date), so answers are remembered by the head's bytes: a dict hit instead of
    a regex match over every header line. The memo is bounded, and cleared when full.
    """
    if len(head) > PLAIN_HEAD_LIMIT:
        return None
    if head in KNOWN_HEADS:
        return KNOWN_HEADS[head]
    match = _PLAIN_RESPONSE(head)
    answer: PlainHead | None = None
    if match is not None and match.end() == len(head) and head.count(_KEEP_ALIVE_AT_LINE_START) <= 1:
        answer = (int(match[1]), int(match[2]), head.find(KEEP_ALIVE_LINE))
    if len(KNOWN_HEADS) >= _KNOWN_LIMIT:
        KNOWN_HEADS.clear()
    KNOWN_HEADS[head] = answer
    return answer
