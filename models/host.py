"""Host-process settings and facts for CPU runs (called by the command-line tools)."""

from __future__ import annotations

import ctypes
import os
import sys


def keep_freed_memory(limit: int = 1 << 30) -> bool:
    """Let glibc reuse freed blocks up to ``limit`` bytes instead of returning them to the OS.

    glibc serves blocks above 32 MB (a 640x480x32 float map is 39 MB) with fresh mmaps
    and unmaps them on free, so every such tensor costs ~10k page faults on first touch:
    about a quarter of FIFN's CPU time at 640x480 and a third of its training step at
    batch 12 x 256 px. Raising the mmap and trim thresholds keeps that memory in the heap
    for the next tensor. Process-wide, so the library never calls it by itself: the
    process owner does (`occo fuse` and `occo train` on CPU). Linux glibc only;
    left alone when MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_ is set (explicit tuning).

    Returns:
        Whether the setting was applied.
    """
    tuned = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    if not sys.platform.startswith("linux") or any(name in os.environ for name in tuned):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
        return bool(libc.mallopt(m_mmap_threshold, limit) and libc.mallopt(m_trim_threshold, limit))
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False


def cpu_has_native_bf16() -> bool | None:
    """Whether this CPU has bf16 dot-product instructions (AVX512-BF16 or AMX-BF16).

    Without them, bf16 autocast on the CPU is emulated and usually slower than float32.

    Returns:
        True or False from the Linux CPU flags; None where they cannot be read.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return None
