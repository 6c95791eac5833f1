"""Property-based fuzzing of the request parser path (hypothesis), bounded in time.

Valid requests (GET, POST with Content-Length, chunked POST; each carries a complete
request hidden in its body or after it) are mutated byte by byte: flips, inserted
framing characters, deletions, duplications, truncations. Batches of mutants go to a
real proxy over a strict recording backend, concurrently, and every one must keep the
rules of ``fault_support.judge``: a forwarded well-formed request or a 4xx/close, never
a 5xx, a crash or a hang, and never a request reaching the backend that the proxy did
not answer for (a smuggled one).

No external HTTP conformance corpus installs from PyPI (h11's and httptools' test
vectors live in their source trees, not in the wheels), so the seeds here and the
shapes in test_hostile_input.py / test_proxy_hostile.py are the corpus.

``LBTUI_FUZZ_EXAMPLES`` raises the number of batches for a longer run.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.balancer import LoadBalancer
from engine.proxy import HttpProxy, ProxySettings
from engine.server import Server
from fault_support import Recorder, judge, raw_request, record_figures

EXAMPLES = int(os.environ.get("LBTUI_FUZZ_EXAMPLES", "20"))
BATCH = 24
SMUGGLE = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
SEEDS = [
    b"GET /s/get HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n" + SMUGGLE,
    b"POST /s/cl HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(SMUGGLE), SMUGGLE),
    b"POST /s/te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
    % (len(SMUGGLE), SMUGGLE),
    b"POST /s/both HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    + SMUGGLE,
    b"GET /s/pipe HTTP/1.1\r\nHost: x\r\n\r\nGET /s/pipe2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
]
INTERESTING = [b"\r", b"\n", b"\r\n", b"\x00", b" ", b"\t", b":", b",", b";", b"0", b"-", b"\x0b",
               b"chunked", b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n", b"\r\n\r\n"]


class Harness:
    """A proxy and a recorder on an event loop in a background thread, for sync hypothesis tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.recorder = Recorder()
        self.proxy: HttpProxy | None = None
        self.inputs = 0
        self.statuses: dict[int, int] = {}
        self.run(self._start())

    def run(self, coro, timeout: float = 30.0):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        await self.recorder.start()
        lb = LoadBalancer([Server("127.0.0.1", self.recorder.port, name="rec")])
        settings_ = ProxySettings(
            connect_timeout=1.0, header_timeout=0.3, body_timeout=0.3, idle_timeout=0.3, max_body_bytes=4096
        )
        self.proxy = HttpProxy(lb, settings_)
        await self.proxy.start()

    async def batch(self, inputs: list[bytes]) -> list[str]:
        assert self.proxy is not None
        before = len(self.recorder.seen)
        errors_before = self.recorder.parse_errors
        replies = await asyncio.gather(
            *(raw_request(self.proxy.port, data, expect=4, timeout=3.0) for data in inputs)
        )
        self.inputs += len(inputs)
        for reply in replies:
            for status, _, _ in reply.responses:
                self.statuses[status] = self.statuses.get(status, 0) + 1
            if not reply.responses:
                self.statuses[0] = self.statuses.get(0, 0) + 1
        problems = judge(
            replies, self.recorder.seen[before:], self.recorder.parse_errors - errors_before
        )
        if problems:
            return [f"{p}; inputs={inputs!r}" for p in problems]
        # Healthy after every batch: a plain request still works.
        good = await raw_request(self.proxy.port, b"GET /alive HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.recorder.seen = [f for f in self.recorder.seen if f.url != "/alive"]
        if [r[0] for r in good.responses] != [200]:
            return [f"proxy unhealthy after batch {inputs!r}: {good}"]
        return []

    def close(self) -> None:
        async def stop() -> None:
            if self.proxy is not None:
                await self.proxy.stop(1)
            await self.recorder.stop()

        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    record_figures("parser fuzzing (hypothesis)", inputs=h.inputs, answers_by_status=dict(sorted(h.statuses.items())))
    h.close()


@st.composite
def mutant(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "insert", "delete", "duplicate", "truncate", "replace"]))
        if action == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "insert":
            data[at:at] = draw(st.sampled_from(INTERESTING))
        elif action == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif action == "duplicate":
            end = min(len(data), at + draw(st.integers(1, 40)))
            data[at:at] = data[at:end]
        elif action == "truncate":
            del data[at:]
        else:
            data[at] = draw(st.integers(0, 255))
    return bytes(data)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(mutant(), min_size=BATCH, max_size=BATCH))
@pytest.mark.timeout(120)
def test_mutated_requests_never_smuggle_crash_or_hang(harness: Harness, batch: list[bytes]) -> None:
    problems = harness.run(harness.batch(batch))
    assert problems == [], problems[:3]


def test_seeds_themselves_pass(harness: Harness) -> None:
    assert harness.run(harness.batch(SEEDS)) == []
