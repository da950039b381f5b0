"""occo installs one import namespace, ``occo``, and never shadows a user's own packages."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from occo.data.version import OCCO_VERSION

ROOT = Path(__file__).resolve().parents[1]
#: Repository folders that install as subpackages (``models/`` is ``occo.models``...).
PACKAGE_FOLDERS = {
    "data": "data",
    "eval": "eval",
    "losses": "losses",
    "masks": "masks",
    "models": "models",
    "train": "train",
    "occo_cli": "cli",
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    pytest.importorskip("setuptools")
    work = tmp_path_factory.mktemp("wheel")
    # Build from a copy: building in place would leave build/ and egg-info in the checkout.
    source = work / "src"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", "runs"),
    )
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    result = subprocess.run(
        [*command, "--quiet", "-w", str(work / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (built,) = (work / "dist").glob("occo-*.whl")
    return zipfile.ZipFile(built)


def test_wheel_installs_only_the_occo_namespace(wheel):
    names = wheel.namelist()
    assert {name.split("/")[0] for name in names} == {"occo", f"occo-{OCCO_VERSION}.dist-info"}
    assert "occo/models/weights/occo_fifn_default.safetensors" in names  # bundled weights
    assert {"occo/__init__.py", "occo/__main__.py", "occo/cli/app.py"} <= set(names)
    # Every module of every package folder made it in, under its occo.* name.
    for folder, package in PACKAGE_FOLDERS.items():
        for module in (ROOT / folder).rglob("*.py"):
            relative = module.relative_to(ROOT / folder).as_posix()
            assert f"occo/{package}/{relative}" in names, f"{folder}/{relative} is not in the wheel"
    assert not any(name.startswith(("occo/tests/", "occo/benchmarks/")) for name in names)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_a_users_models_folder_is_not_shadowed(tmp_path):
    # The authors' own repository: models/net.py without __init__.py. A regular `models`
    # package installed by occo would win over it and break `from models.net import ...`.
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "net.py").write_text("occo = 'the user net'\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "loader.py").write_text("name = 'the user loader'\n")
    code = "import occo; from models.net import occo as net; from data.loader import name; print(net, name)"
    result = _run(["-c", code], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "the user net the user loader"


def test_python_m_occo_runs_beside_a_users_own_packages(tmp_path):
    # `python -m occo` (and torchrun -m occo) put the working folder first on sys.path; a
    # project there with its own models/ and data/ packages must not break occo.
    for name in ("models", "data", "eval", "masks", "losses", "train"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(
            f"raise ImportError('the user {name} package was imported by occo')\n"
        )
    result = _run(["-m", "occo", "--version"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"occo {OCCO_VERSION}"
