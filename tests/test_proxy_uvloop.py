"""The HTTP proxy tests again on uvloop, the loop lbtui runs on in production."""

from __future__ import annotations

import pytest

uvloop = pytest.importorskip("uvloop")
# pytest-asyncio deprecates overriding event_loop_policy in favour of a conftest hook; this
# module must not own the shared conftest, so it keeps the override and quiets the warning.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestDeprecationWarning")

from test_proxy_failover import (  # noqa: F401
    backends,
    test_backend_killed_between_requests_gives_no_client_error,
    test_graceful_stop_finishes_in_flight_and_refuses_new,
)
from test_proxy_http import (  # noqa: F401  (re-run these tests under uvloop)
    test_expect_100_continue_is_relayed,
    test_keep_alive_reuses_upstream_connections,
    test_large_streamed_upload_and_download_keep_their_bytes,
    test_pipelined_requests_answered_in_order,
    test_round_robin_cycles_through_servers,
    test_slow_reader_applies_backpressure_instead_of_buffering,
    test_upgrade_passes_bytes_both_ways,
    trio,
)


@pytest.fixture(scope="module")
def event_loop_policy():
    return uvloop.EventLoopPolicy()


async def test_running_on_uvloop() -> None:
    import asyncio

    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
