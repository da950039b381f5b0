"""Building the Fuser that ``occo fuse`` runs, on PyTorch or onnxruntime (images and video)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from occo.cli.console import fail, note, warn

BACKENDS = ("torch", "onnxruntime")


@dataclass
class FuserSetup:
    """A ready Fuser and what the manifest records about how it runs."""

    fuser: Any
    """The :class:`occo.models.fuser.Fuser`."""
    weights: Path
    """The weight file (``.safetensors``) or ONNX model used."""
    source: str
    """Where the weights came from (their metadata's ``source``), or ""."""
    device: str
    """Where the network runs: cpu, cuda, cuda:N."""
    settings: dict = field(default_factory=dict)
    """Backend settings for the manifest (backend, amp, providers...)."""
    budget: Any = None
    """The memory budget the Fuser plans sizes against (``occo.models.memory``), or None."""


def build_fuser(
    weights: Path | None,
    *,
    backend: str,
    device: str,
    amp: bool | None,
    tile: int | None,
    batch_size: int,
    ir16: str,
) -> FuserSetup:
    """The Fuser for ``occo fuse``'s options; a user error ends the command with one line.

    With ``backend="onnxruntime"``, ``weights`` may be an ``.onnx`` file from ``occo
    export`` or occo weights (exported in memory and checked first).
    """
    from occo.models.checkpoint import read_weights_metadata, resolve_weights

    if backend not in BACKENDS:
        fail(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    weights_path = resolve_weights(weights)
    if backend == "onnxruntime":
        return _onnxruntime_fuser(weights_path, device, amp, tile, batch_size, ir16)
    if weights_path.suffix.lower() == ".onnx":
        fail(f"{weights_path} is an ONNX model: run it with --backend onnxruntime")

    from occo.models.checkpoint import load_weights
    from occo.models.fuser import Fuser
    from occo.runtime import DeviceError, cpu_amp_warning, keep_freed_memory, resolve_device

    source = read_weights_metadata(weights_path).get("source", "")
    try:
        torch_device = resolve_device(device)
    except DeviceError as exc:
        fail(str(exc))
    device = str(torch_device)
    model = load_weights(weights_path)
    if torch_device.type == "cpu":
        # This process is ours: let glibc reuse FIFN's large freed maps (~20% faster on CPU).
        keep_freed_memory()
    from occo.models.memory import memory_budget

    try:
        budget = None if tile is not None else memory_budget(device)  # else tiles as needed
        fuser = Fuser(model, device=torch_device, amp="auto" if amp is None else amp, tile=tile,
                      batch_size=batch_size, ir16=ir16,
                      memory_budget=budget and budget.bytes)  # fmt: skip
    except ValueError as exc:
        fail(str(exc))
    note(f"weights: {weights_path}" + (f" ({source})" if source else ""))
    if message := cpu_amp_warning(torch_device, fuser.amp_dtype):
        warn(message)
    settings = {
        "backend": "torch",
        "tile": tile,
        "tile_margin": fuser.tile_margin,
        "amp": str(fuser.amp_dtype).removeprefix("torch.") if fuser.amp_dtype else None,
    }
    return FuserSetup(fuser, weights_path, source, device, settings, budget)


def _onnxruntime_fuser(
    weights_path: Path, device: str, amp: bool | None, tile: int | None, batch_size: int, ir16: str
) -> FuserSetup:
    if tile is not None:
        fail("--tile needs --backend torch (tiles run the PyTorch network)")
    if amp:
        fail("--amp applies to --backend torch; for half precision on onnxruntime, export with "
             "`occo export WEIGHTS OUT.onnx --fp16` and pass --weights OUT.onnx")  # fmt: skip

    from occo.models.fuser import Fuser
    from occo.models.onnx_engine import OnnxEngine, require_onnxruntime

    require_onnxruntime()  # before any export work: says how to install it
    if weights_path.suffix.lower() == ".onnx":
        engine = OnnxEngine(weights_path, device=device)
    else:
        from occo.models.export import onnx_from_weights

        payload, report = onnx_from_weights(weights_path)
        note(
            f"exported {weights_path.name} to ONNX in memory and checked it against PyTorch "
            f"({report.seconds:.1f} s; `occo export` saves it once)"
        )
        engine = OnnxEngine(payload, device=device)
    source = engine.provenance.get("source", "")
    note(f"weights: {weights_path}" + (f" ({source})" if source else "")
         + f" on onnxruntime ({', '.join(engine.providers)})")  # fmt: skip
    fuser = Fuser(engine, device="cpu", amp=False, batch_size=batch_size, ir16=ir16)
    where = "cpu" if engine.providers[0] == "CPUExecutionProvider" else "cuda"
    settings = {"backend": "onnxruntime", "tile": None, "amp": None, **engine.describe()}
    return FuserSetup(fuser, weights_path, source, where, settings)
