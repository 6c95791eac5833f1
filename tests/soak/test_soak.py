"""The soak as a pytest case (``pytest -m soak tests/soak``): a short run, flat memory and FDs.

``LBTUI_SOAK_SECONDS`` sets the length (default 150 s); the full 30 minutes is
``python tests/soak/run_soak.py``.
"""

from __future__ import annotations

import os

import pytest
from run_soak import soak

SECONDS = float(os.environ.get("LBTUI_SOAK_SECONDS", "150"))


@pytest.mark.soak
@pytest.mark.timeout(SECONDS + 180)
async def test_soak_memory_and_descriptors_stay_flat() -> None:
    report = await soak(SECONDS, fault_every=max(10.0, SECONDS / 8), rps=150, clients=8)
    print(report)
    assert report["flat"], report
    assert report["requests"] > SECONDS * 50
