"""The command line as users meet it: usage errors, help and start-up, through `python -m occo`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _occo(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-m", "occo", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("fuse", "a"), "Missing argument 'VI_DIR'"),
        (("fuse", "--overwrite", "true", "a", "b", "c"), "unexpected extra argument"),
        (("fuse", "--tile", "3", "a", "b", "c"), "--tile"),
        (("nosuch",), "No such command 'nosuch'"),
    ],
)
def test_usage_errors_are_one_line_with_what_to_do(args, expected):
    result = _occo(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
    assert "--help" in lines[0]


def test_help_shows_flags_without_a_bool_type_and_arguments_by_name():
    result = _occo("fuse", "--help")
    assert result.returncode == 0
    assert "<bool>" not in result.stdout
    # OUT_DIR is optional for a medical dataset folder: occo fuse DATASET OUT_DIR.
    assert "Usage: occo fuse [OPTIONS] IR_DIR VI_DIR [OUT_DIR]" in result.stdout


def test_help_does_not_import_torch():
    # `occo --help` must start fast: the heavy libraries load only when a command runs.
    code = (
        "import sys; from occo.cli.app import main; sys.argv = ['occo', '--help'];\n"
        "try: main()\nexcept SystemExit: pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'cv2', 'h5py') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"
