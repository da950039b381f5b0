"""Where and how occo runs: device and precision choice, torchrun processes, host settings.

One home for what every command needs before it computes anything: ``--device`` and
``--amp`` resolved the same way by fuse, train and masks; the process group torchrun
describes; and the process-wide CPU settings that only a process owner (the command
line) may apply.
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import os
import platform
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from occo.data.errors import OccoError

if TYPE_CHECKING:  # imported where used: `occo metrics` and `--help` never load torch
    import torch


class DeviceError(OccoError, ValueError):
    """An unknown device, or a device this machine does not have."""


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> the GPU if there is one, else the CPU; ``cuda`` -> this rank's GPU.

    Args:
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``...
        local_rank: the process's rank on its node (torchrun's LOCAL_RANK).

    Returns:
        The device to use.

    Raises:
        DeviceError: an unknown device, or a GPU that is not there.
    """
    import torch

    text = str(device)
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cuda":
        text = f"cuda:{local_rank}"
    try:
        resolved = torch.device(text)
    except RuntimeError:
        raise DeviceError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {device}: no CUDA GPU is visible; use --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise DeviceError(
                f"--device {resolved}: only {torch.cuda.device_count()} GPU(s) visible"
            )
    return resolved


def resolve_amp(amp: bool | str | None | torch.dtype, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--amp``, or None for float32.

    Args:
        amp: a dtype (taken as is); True (bf16, fp16 on GPUs without bf16); False (float32);
            None or ``"auto"`` (on for CUDA, off elsewhere: CPU bf16 only pays on CPUs with
            bf16 instructions, see :func:`cpu_amp_warning`).
        device: where the network runs.

    Returns:
        ``torch.bfloat16``, ``torch.float16`` or None.
    """
    import torch

    if isinstance(amp, torch.dtype):
        return amp
    if amp is None or amp == "auto":
        amp = device.type == "cuda"
    if not amp:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def cpu_amp_warning(device: torch.device, amp_dtype: torch.dtype | None) -> str | None:
    """A warning when bf16 autocast would run emulated on this CPU, else None."""
    if device.type != "cpu" or amp_dtype is None or cpu_has_native_bf16() is not False:
        return None
    return (
        "this CPU has no bf16 instructions (AVX512-BF16 or AMX): --amp runs emulated, "
        "many times slower than float32 (17x measured on an AVX2 CPU); leave --amp off here"
    )


@dataclass
class DistContext:
    """This process's place among torchrun's ranks (one process: rank 0 of 1)."""

    rank: int = 0
    """Global rank."""
    world_size: int = 1
    """Number of processes."""
    local_rank: int = 0
    """Rank on this node (picks the GPU)."""
    owns_group: bool = False
    """Whether :meth:`from_env` started the process group (and :meth:`close` ends it)."""

    @property
    def is_main(self) -> bool:
        """Rank 0 writes every file."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @classmethod
    def from_env(cls, backend: str = "gloo", timeout_hours: float | None = None) -> DistContext:
        """Read torchrun's environment; join its process group when there are several ranks.

        Args:
            backend: ``gloo`` (CPU tensors and barriers) or ``nccl`` (CUDA tensors).
            timeout_hours: collective timeout; None keeps torch's default.

        Returns:
            The context; a single process when ``WORLD_SIZE`` is unset or 1.
        """
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        owns = False
        if not dist.is_initialized():
            timeout = _dt.timedelta(hours=timeout_hours) if timeout_hours else None
            kwargs = {"timeout": timeout} if timeout else {}
            dist.init_process_group(backend, **kwargs)
            owns = True
        return cls(rank=rank, world_size=world, local_rank=local, owns_group=owns)

    def barrier(self) -> None:
        """Wait for every rank (no-op in a single process)."""
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        """End the process group if :meth:`from_env` started it."""
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owns_group = False


def init_distributed(device: str | torch.device) -> tuple[DistContext, torch.device]:
    """Resolve ``device`` for this rank and join torchrun's process group, if any.

    CUDA ranks use NCCL on their own GPU (``cuda:LOCAL_RANK``); CPU ranks use gloo.

    Args:
        device: as for :func:`resolve_device`.

    Returns:
        ``(DistContext, device)``.
    """
    import torch

    local = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
    dev = resolve_device(device, local_rank=local)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dev.type == "cuda":
        dev = torch.device("cuda", local)  # one GPU per rank, whatever index was asked for
        torch.cuda.set_device(dev)
    return DistContext.from_env("nccl" if dev.type == "cuda" else "gloo"), dev


# --- host-process settings (the process owner applies them; the library never does) ----


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


def is_glibc() -> bool:
    """Whether this process runs on GNU libc (where :func:`keep_freed_memory` applies)."""
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def cpu_has_native_bf16() -> bool | None:
    """Whether this CPU has bf16 dot-product instructions (AVX512-BF16 or AMX-BF16).

    Without them, bf16 autocast on the CPU is emulated and many times slower than float32.

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


def set_threads(threads: int | None, torch_too: bool = True) -> None:
    """Use ``threads`` CPU threads for OpenCV (and torch) in this process; None: defaults.

    On small machines one process with all cores usually beats several processes that
    each take all cores (they oversubscribe the CPU and slow each other down).

    Args:
        threads: threads per process, or None to leave the libraries' defaults.
        torch_too: also set torch's (False where torch is not used: importing it costs
            seconds).
    """
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    import cv2

    cv2.setNumThreads(threads)
    if torch_too:
        import torch

        torch.set_num_threads(threads)


def cpu_count() -> int:
    """Cores this process may run on (its affinity mask, e.g. a container's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_data_workers(requested: int | None = None) -> int:
    """Data-loading worker processes for training: ``requested``, or chosen from the machine.

    Worker processes only pay when a core is free for them: on 1-2 cores they compete
    with the training step for the same cores (measured in benchmarks/bench_cli.py), so
    loading stays in the main process; above that, up to 4 workers, leaving one core.
    """
    if requested is not None:
        return requested
    cores = cpu_count()
    return 0 if cores <= 2 else min(4, cores - 1)
