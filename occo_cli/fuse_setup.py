"""Building the Fuser that ``occo fuse`` runs, on PyTorch or onnxruntime (images and video)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from occo.cli.console import fail, note, warn

BACKENDS = ("torch", "onnxruntime")


def resolve_device(device: str) -> str:
    """``--device`` for the PyTorch backend: auto, cpu, cuda or cuda:N (checked)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except RuntimeError:
        fail(f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        fail(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return device


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
    from occo.models.host import cpu_has_native_bf16, keep_freed_memory

    source = read_weights_metadata(weights_path).get("source", "")
    device = resolve_device(device)
    model = load_weights(weights_path)
    if device == "cpu":
        # This process is ours: let glibc reuse FIFN's large freed maps (~20% faster on CPU).
        keep_freed_memory()
    try:
        fuser = Fuser(model, device=device, amp="auto" if amp is None else amp, tile=tile,
                      batch_size=batch_size, ir16=ir16)  # fmt: skip
    except ValueError as exc:
        fail(str(exc))
    note(f"weights: {weights_path}" + (f" ({source})" if source else ""))
    if device == "cpu" and fuser.amp_dtype is not None and cpu_has_native_bf16() is False:
        warn("this CPU has no bf16 instructions (AVX512-BF16 or AMX): --amp runs emulated, "
             "likely slower than the float32 default")  # fmt: skip
    settings = {
        "backend": "torch",
        "tile": tile,
        "tile_margin": fuser.tile_margin,
        "amp": str(fuser.amp_dtype).removeprefix("torch.") if fuser.amp_dtype else None,
    }
    return FuserSetup(fuser, weights_path, source, device, settings)


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
