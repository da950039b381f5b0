"""occo.runtime: device and precision choice, and the host settings of CPU runs."""

from __future__ import annotations

import pytest
import torch

from occo.runtime import (
    DeviceError,
    DistContext,
    cpu_amp_warning,
    is_glibc,
    keep_freed_memory,
    resolve_amp,
    resolve_device,
)


@pytest.mark.skipif(not is_glibc(), reason="a glibc malloc setting")
def test_keep_freed_memory_applies_unless_tuned_explicitly(monkeypatch):
    assert keep_freed_memory() is True  # glibc's mallopt accepted both thresholds
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert keep_freed_memory() is False  # the user's own tuning wins


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu9")
    assert issubclass(DeviceError, ValueError)  # callers catching ValueError still do
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(DeviceError, match="no CUDA GPU"):
            resolve_device("cuda", local_rank=1)


def test_amp_resolution_and_the_emulated_bf16_warning(monkeypatch):
    import occo.runtime as runtime

    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) is None and resolve_amp(None, cpu) is None
    assert resolve_amp(True, cpu) is torch.bfloat16 and resolve_amp(False, cpu) is None
    assert resolve_amp(torch.float16, cpu) is torch.float16
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    assert "no bf16 instructions" in cpu_amp_warning(cpu, torch.bfloat16)
    assert cpu_amp_warning(cpu, None) is None
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    assert cpu_amp_warning(cpu, torch.bfloat16) is None


def test_single_process_context(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    context = DistContext.from_env()
    assert (context.rank, context.world_size, context.is_main, context.distributed) == (
        0,
        1,
        True,
        False,
    )
    context.barrier()  # no process group: a no-op
    context.close()
