"""Host-process settings for CPU runs."""

from __future__ import annotations

import sys

import pytest

from occo.runtime import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc setting")
def test_keep_freed_memory_applies_unless_tuned_explicitly(monkeypatch):
    assert keep_freed_memory() is True  # glibc's mallopt accepted both thresholds
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert keep_freed_memory() is False  # the user's own tuning wins
