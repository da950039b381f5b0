"""`occo fuse`'s memory estimate against the peak resident memory it really takes.

For each size, one synthetic colour pair is fused by `occo fuse` (CPU, the default FIFN,
bundled weights) under `/usr/bin/time -v`; its "Maximum resident set size" is compared
with models.memory's estimate plus the process's base (the peak of a 64x64 run, which is
what torch, the model and the libraries hold). Runs are sequential (one at a time, the
peak of one process each); repeats report the median.

With --auto-check W H LIMIT it instead fuses one W x H pair with OCCO_MEMORY_LIMIT=LIMIT
and no --tile, and reports the tile occo chose and whether the peak stayed under LIMIT.

Usage:
    python benchmarks/bench_memory.py --quick                       # 256x256 and 512x384
    python benchmarks/bench_memory.py                               # 512x512, 1024x768, 2048x1536
    python benchmarks/bench_memory.py --tile 512 --sizes 1448x1086,2048x1536
    python benchmarks/bench_memory.py --auto-check 6000 4000 10G
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TIME = "/usr/bin/time"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def _write_pair(folder: Path, width: int, height: int) -> None:
    import numpy as np

    from occo.data.io import write_image_atomic

    yy, xx = np.mgrid[0:height, 0:width]
    base = (128 + 60 * np.sin(xx / 17) * np.cos(yy / 23)).astype(np.uint8)
    write_image_atomic(folder / "ir" / "a.png", base)
    write_image_atomic(folder / "vi" / "a.png", np.dstack([base, 255 - base, base // 2]))


def _fuse_peak(folder: Path, extra: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Peak RSS in bytes of one `occo fuse` run, and its stderr."""
    command = [TIME, "-v", sys.executable, "-m", "occo", "fuse", str(folder / "ir"),
               str(folder / "vi"), str(folder / "out"), "--overwrite", "--device", "cpu", *extra]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    if done.returncode != 0 or not match:
        raise SystemExit(f"occo fuse failed:\n{done.stdout}\n{done.stderr}")
    return int(match.group(1)) * 1024, done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="512x512,1024x768,2048x1536", help="WxH,WxH,...")
    parser.add_argument("--quick", action="store_true", help="256x256 and 512x384 only")
    parser.add_argument("--tile", type=int, default=None, help="fuse with --tile N")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--auto-check", nargs=3, metavar=("W", "H", "LIMIT"))
    args = parser.parse_args()
    if not Path(TIME).exists():
        raise SystemExit(f"{TIME} (GNU time) is needed for the peak RSS")

    from occo.models.memory import estimate_bytes, parse_size

    env = dict(os.environ, HF_HUB_OFFLINE="1")
    print(f"# {_cpu_name()}, {os.cpu_count()} cores; default FIFN, CPU, float32, colour pairs")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        _write_pair(root / "base", 64, 64)
        base = statistics.median(_fuse_peak(root / "base", [], env)[0] for _ in range(args.repeats))
        print(f"# process base (peak of a 64x64 run): {base / 2**30:.2f} GiB")
        if args.auto_check:
            width, height, limit = (
                int(args.auto_check[0]),
                int(args.auto_check[1]),
                args.auto_check[2],
            )
            _write_pair(root / "big", width, height)
            peak, stderr = _fuse_peak(root / "big", [], dict(env, OCCO_MEMORY_LIMIT=limit))
            notes = [line for line in stderr.splitlines() if "need about" in line]
            print(
                f"{width}x{height}, OCCO_MEMORY_LIMIT={limit}: {notes[0] if notes else 'no tiling note'}"
            )
            verdict = "under" if peak <= parse_size(limit) else "OVER"
            print(
                f"peak RSS {peak / 2**30:.2f} GiB, {verdict} the limit of {parse_size(limit) / 2**30:.2f} GiB"
            )
            return
        sizes = "256x256,512x384" if args.quick else args.sizes
        extra = ["--tile", str(args.tile)] if args.tile else []
        print("| size | tile | estimate GiB | measured peak RSS GiB | estimate / measured |")
        print("|---|---:|---:|---:|---:|")
        for size in sizes.split(","):
            width, height = (int(v) for v in size.lower().split("x"))
            _write_pair(root / size, width, height)
            peak = statistics.median(
                _fuse_peak(root / size, extra, env)[0] for _ in range(args.repeats)
            )
            # One pair: nothing else is queued behind it.
            estimate = base + estimate_bytes(height, width, tile=args.tile)
            print(f"| {size} | {args.tile or '-'} | {estimate / 2**30:.2f} | {peak / 2**30:.2f} | "
                  f"{estimate / peak:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
