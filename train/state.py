"""Resumable training state: counters, random states and the checkpoint file."""

from __future__ import annotations

import io
import pickle
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from occo.data.errors import OccoError
from occo.data.io import write_bytes_atomic
from occo.models.checkpoint import TRAIN_CHECKPOINT_FORMAT

CHECKPOINT_FORMAT = TRAIN_CHECKPOINT_FORMAT


class TrainingError(OccoError, RuntimeError):
    """Training cannot start or continue (explained in the message)."""


class DivergedError(TrainingError):
    """The loss stayed non-finite for ``max_nonfinite`` steps in a row."""


@dataclass
class TrainState:
    """Counters saved in checkpoints."""

    step: int = 0
    """Batches processed so far (including skipped ones)."""
    epoch: int = 0
    """Current epoch (0-based)."""
    batch_in_epoch: int = 0
    """Batches of the current epoch already processed."""
    skipped: int = 0
    """Steps skipped for a non-finite loss, in all."""
    consecutive_nonfinite: int = 0
    """Non-finite steps in a row just before this state."""
    best_value: float | None = None
    """Best validation score so far."""
    best_step: int | None = None
    """Step of the best validation score."""


def save_torch_atomic(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` through a temporary file and ``os.replace``: never a half-written file."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def rng_state() -> dict[str, Any]:
    """Every global random state a step may consume, as tensors and plain values."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    random.setstate(_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a resumable checkpoint (tensors and plain values only).

    Args:
        path: ``checkpoint.pt`` of a run folder.

    Returns:
        The checkpoint dict.

    Raises:
        TrainingError: missing, unreadable or not an occo training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"no checkpoint to resume at {path}; start without --resume")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message is six lines of advice to unpickle it
        raise TrainingError(
            f"{path} holds Python objects that occo does not load (a pickle, not an occo "
            "training checkpoint, which holds only tensors and plain values); start a new run "
            "with another --out"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainingError(
            f"cannot read checkpoint {path}: {first}; start a new run with another --out"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path} is not an occo training checkpoint")
    return payload
