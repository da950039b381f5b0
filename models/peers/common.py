"""What the peer network modules share: reading an authors' torch file safely, fitting its
tensors to occo's module, and padding inputs to a size multiple."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def load_torch_release(path: str | Path, method: str) -> object:
    """``torch.load(path, weights_only=True)`` on CPU, failures as one-line WeightsErrors.

    Args:
        path: the authors' released file.
        method: the method's name, for the messages.

    Returns:
        Whatever the file holds (plain tensors and containers only).

    Raises:
        WeightsError: missing, not a torch file, truncated, or needs arbitrary unpickling.
    """
    from occo.models.checkpoint import WeightsError, unpickling_reason

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{method} weights not found: {path}")
    with open(path, "rb") as handle:
        head = handle.read(8)
    if not head.startswith(b"PK\x03\x04") and head[:1] != b"\x80":
        kind = "a safetensors file" if _is_safetensors(path) else "not a torch file"
        raise WeightsError(
            f"cannot read {path} as {method}'s released weights: {kind} (expected the file "
            "its authors released, written by torch.save)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        why = unpickling_reason(exc)
        raise WeightsError(
            f"refusing to load {path}: it needs arbitrary unpickling, which could run code "
            f"({why}); only files of plain tensors and containers are accepted"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"cannot read {path} as {method}'s released weights: {first}") from None


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def tensor_dict(
    loaded: object, path: str | Path, method: str, entry: str | None = None
) -> dict[str, Tensor]:
    """The name -> tensor mapping in a loaded file (optionally under ``loaded[entry]``),
    with DataParallel's ``module.`` prefix stripped.

    Raises:
        WeightsError: no such mapping.
    """
    from occo.models.checkpoint import WeightsError

    if entry is not None and isinstance(loaded, dict) and isinstance(loaded.get(entry), dict):
        loaded = loaded[entry]
    if (
        not isinstance(loaded, dict)
        or not loaded
        or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in loaded.items())
    ):
        found = list(loaded)[:6] if isinstance(loaded, dict) else type(loaded).__name__
        raise WeightsError(f"{path} holds no {method} state dict (found {found})")
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def fit_state(
    model: nn.Module, state: Mapping[str, Tensor], source: str | Path, method: str
) -> dict[str, Tensor]:
    """``state`` as float32 tensors if it fits ``model`` exactly (names and shapes).

    Raises:
        WeightsError: one line naming the missing, unexpected and mis-shaped tensors.
    """
    from occo.models.checkpoint import WeightsError

    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if names:
            more = f", ... ({len(names)} in all)" if len(names) > 4 else ""
            problems.append(f"{label}: {', '.join(names[:4])}{more}")
    if problems:
        raise WeightsError(
            f"{source} is not {method}'s released weights (is it another method's file?): "
            + "; ".join(problems)
        )
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def rename(state: Mapping[str, Tensor], rule: Callable[[str], str | None]) -> dict[str, Tensor]:
    """``state`` with every key passed through ``rule`` (None drops the tensor)."""
    out = {}
    for key, value in state.items():
        new = rule(key)
        if new is not None:
            out[new] = value
    return out


def pad_to_multiple(x: Tensor, multiple: int, mode: str = "reflect") -> tuple[Tensor, int, int]:
    """Pad the bottom and right of ``x`` to multiples of ``multiple``.

    Returns:
        The padded tensor, and the original height and width (to crop back).
    """
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return x, height, width
