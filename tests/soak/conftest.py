"""Soak tests are long: collected, but skipped unless asked for with ``-m soak``."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "soak" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="soak: run with `pytest -m soak tests/soak` or tests/soak/run_soak.py")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)
