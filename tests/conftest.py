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


_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
           "float16": torch.float16}  # fmt: skip


def pytest_addoption(parser) -> None:
    # As kornia's: `pytest --device cuda --dtype float32,float64` runs the model tests there.
    parser.addoption("--device", default="cpu", help="device of the model tests (cpu, cuda, cuda:N)")
    parser.addoption("--dtype", default="float32,float64",
                     help=f"comma-separated dtypes of the model tests ({', '.join(_DTYPES)})")  # fmt: skip


def pytest_generate_tests(metafunc) -> None:
    own = any(
        "dtype" in (m.args[0] if isinstance(m.args[0], (list, tuple)) else m.args[0].split(","))
        for m in metafunc.definition.iter_markers("parametrize")
    )
    if "dtype" in metafunc.fixturenames and not own:  # a test's own dtypes take precedence
        names = [n.strip() for n in metafunc.config.getoption("--dtype").split(",") if n.strip()]
        unknown = [n for n in names if n not in _DTYPES]
        if unknown:
            raise pytest.UsageError(f"--dtype: unknown {', '.join(unknown)}; use {', '.join(_DTYPES)}")
        metafunc.parametrize("dtype", [_DTYPES[n] for n in names], ids=names)


@pytest.fixture
def device(request) -> torch.device:
    """The device of the model tests (``--device``); skips when it is not available."""
    device = torch.device(request.config.getoption("--device"))
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("--device cuda but no CUDA device is available")
    return device


@pytest.fixture(scope="session")
def tiny_hf_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny random Grounding DINO, transformers SAM and Meta SAM checkpoints, built once
    per test run (building them is the slow part of the mask tests)."""
    from tests import eval_tiny, masks_tiny

    shared = eval_tiny.tiny_models(tmp_path_factory)  # the eval tests' copies, the same models
    return {
        "detector": shared["gdino"],
        "segmenter": shared["sam"],
        "meta": masks_tiny.save_tiny_meta_sam(tmp_path_factory.mktemp("meta-sam") / "sam_tiny.pth"),
    }


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """An occo weight file of the tiny FIFN (seed 0), written once per test run."""
    from occo.models.checkpoint import save_weights
    from tests.helpers import random_fifn

    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(path, random_fifn(0), metadata={"source": "random test weights"})
    return path
