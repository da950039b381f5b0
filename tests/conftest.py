"""Test-wide settings: one CPU thread, no network, and paths to the optional shared data."""

from __future__ import annotations

import os
from pathlib import Path

# Never let a test reach a model hub; set before transformers is imported anywhere.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
#: The shared material beside the project; tests using it skip when it is absent.
SHARED = ROOT.parent / "shared"
FIXTURES = Path(__file__).resolve().parent / "data"


@pytest.fixture
def shared_dir() -> Path:
    if not (SHARED / "reference").is_dir():
        pytest.skip("../shared is absent")
    return SHARED


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(params=[torch.float32, torch.float64], ids=["f32", "f64"])
def dtype(request) -> torch.dtype:
    return request.param


@pytest.fixture
def device() -> torch.device:
    return torch.device("cpu")
