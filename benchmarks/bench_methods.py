"""Speed of every registered method through occo, beside its authors' own inference code.

For each method, in its own subprocess (so peak memory is its own): occo loads the
authors' released weights (``--peers``, one folder per method as in ../shared/peers),
then measures

- model-only pairs/s: ``Fuser.fuse`` on prepared 640x480 tensors (network with BatchNorm
  folded, inference mode, channels_last, plus the method's own output step), median of
  ``--repeats`` after one warm-up;
- end-to-end pairs/s: :func:`occo.models.fusing.fuse_folder` on ``--pairs`` pairs of
  ``--data`` (files in, colour PNGs out, reader and writer threads), wall time of the
  fusing;
- peak RSS of the subprocess (MB).

On the CPU both occo columns run with glibc keeping freed blocks up to 1 GB
(:func:`occo.runtime.keep_freed_memory`, what ``occo fuse`` sets): large tensors reuse the
heap instead of faulting fresh pages in, which is faster and holds more resident memory.
The authors' code runs as shipped.

With ``--authors DIR``, ``DIR/<method>`` (an executable you write in a scratch checkout of
the authors' repository, never committed) is run as ``DIR/<method> IN_DIR OUT_DIR`` with
IN_DIR holding ``ir/`` and ``vi/``; it must run the authors' test code on every pair. It
runs twice, on all the pairs and on the first one; the authors' steady pairs/s is
(N - 1) / (t_N - t_1), so their imports and model loading cancel out as occo's do. Both
sides get the same thread count (OMP_NUM_THREADS and torch.set_num_threads in the
adapter). Methods without an adapter show "-".

Usage:
    python benchmarks/bench_methods.py                             # every method, CPU
    python benchmarks/bench_methods.py --methods seafusion,sage --pairs 20 \\
        --authors /scratch/authors_bench
    python benchmarks/bench_methods.py --device cuda --threads 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

#: The released file of each method inside its ../shared/peers folder (fifn: bundled).
WEIGHTS = {
    "fifn": None,
    "seafusion": "seafusion/SeAFusion.pth",
    "sage": "sage/checkpoints.pt",
    "densefuse": "densefuse/densefuse_gray.model",
    "lrrnet": "lrrnet/final_lrr_net_lam2_1.5_wir_3.0_lam3_gram_2000_epoch_4_block_4.model",
    "ifcnn": "ifcnn/IFCNN-MAX.pth",
    "refusion": "refusion/ReFusion_IVIF.pth",
    "mmdrfuse": "mmdrfuse/student.model",
    "datfuse": "datfuse/model_10.pth",
    "mufusion": "mufusion/ir_vis_models_TNO.model",
    "didfuse": "didfuse",
    "tardal": "tardal/tardal++.pt",
    "gifnet": "gifnet/Final.model",
}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                flags = Path("/proc/cpuinfo").read_text()
                extra = [f for f in ("avx512_bf16", "avx512f", "avx2") if f" {f}" in flags]
                return f"{name} ({', '.join(extra) or 'no AVX2'})"
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _pairs_folder(data: Path, count: int, into: Path) -> Path:
    """``into`` with ir/ and vi/ symlinks to the first ``count`` pairs of ``data``."""
    names = sorted(p.name for p in (data / "ir").iterdir() if p.is_file())[:count]
    for side in ("ir", "vi"):
        (into / side).mkdir(parents=True)
        for name in names:
            (into / side / name).symlink_to((data / side / name).resolve())
    return into


def _run_measured(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run ``command``; wall seconds, peak RSS (MB) of it and its waited-for children, stdout."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not the sum so far
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{command[0]} failed ({proc.returncode}): {err.read().strip()[-400:]}"
            )
        return wall, usage.ru_maxrss / 1024, out.read()


def worker(args: argparse.Namespace) -> None:
    """One method through occo; prints one JSON line."""
    import torch

    from occo.data.io import read_image
    from occo.data.normalize import prepare_pair
    from occo.models.checkpoint import load_method
    from occo.models.fuser import Fuser
    from occo.models.fusing import FuseSettings, fuse_folder

    torch.set_num_threads(args.threads)
    if args.device == "cpu":
        from occo.runtime import keep_freed_memory

        keep_freed_memory()  # as fuse_folder does on CPU, so both occo columns run alike
    method = args.worker
    weights = None if WEIGHTS[method] is None else args.peers / WEIGHTS[method]
    loaded = load_method(method, weights, device=args.device)
    fuser = Fuser(loaded.model, device=args.device)
    stem = sorted(p.name for p in (args.data / "ir").iterdir())[0]
    pair = prepare_pair(read_image(args.data / "ir" / stem), read_image(args.data / "vi" / stem))
    vi, ir = pair.vi[None].to(args.device), pair.ir[None].to(args.device)
    times = []
    for _ in range(args.repeats + 1):
        started = time.perf_counter()
        fuser.fuse(vi, ir)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    with tempfile.TemporaryDirectory() as tmp:
        pairs = _pairs_folder(args.data, args.pairs, Path(tmp) / "in")
        settings = FuseSettings(
            method=method, weights=weights, device=args.device, threads=args.threads
        )
        result = fuse_folder(pairs / "ir", pairs / "vi", Path(tmp) / "out", settings)
    if result.failures:
        raise RuntimeError(f"{method}: {result.failures}")
    print(json.dumps({
        "model_pps": 1 / statistics.median(times[1:]),
        "e2e_pps": result.fused / result.seconds,
        "size": list(vi.shape[-2:]),
    }))  # fmt: skip


def authors(method: str, adapter: Path, args: argparse.Namespace, env: dict[str, str]) -> dict:
    """The authors' code on N pairs and on 1 pair: steady pairs/s and peak RSS."""
    walls, peak = {}, 0.0
    for count in (args.pairs, 1):
        with tempfile.TemporaryDirectory() as tmp:
            pairs = _pairs_folder(args.data, count, Path(tmp) / "in")
            (Path(tmp) / "out").mkdir()
            wall, rss, _ = _run_measured([str(adapter), str(pairs), str(Path(tmp) / "out")], env)
            written = len(list((Path(tmp) / "out").rglob("*.png")))
            if written < count:
                raise RuntimeError(f"{adapter} wrote {written} PNGs for {count} pairs")
            walls[count] = wall
            peak = max(peak, rss) if count == args.pairs else peak
    return {"e2e_pps": (args.pairs - 1) / max(walls[args.pairs] - walls[1], 1e-9), "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "msrs20")
    parser.add_argument("--peers", type=Path, default=SHARED / "peers")
    parser.add_argument("--methods", default=",".join(WEIGHTS))
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--authors", type=Path, default=None, help="folder of per-method adapters")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.pairs < 2:
        parser.error("--pairs must be at least 2 (the authors' rate is (N-1)/(t_N-t_1))")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    rows = []
    for method in args.methods.split(","):
        if method not in WEIGHTS:
            parser.error(f"unknown method {method!r}; one of {', '.join(WEIGHTS)}")
        command = [sys.executable, __file__, "--worker", method, "--data", str(args.data),
                   "--peers", str(args.peers), "--pairs", str(args.pairs), "--repeats",
                   str(args.repeats), "--threads", str(args.threads), "--device", args.device]  # fmt: skip
        _, peak, out = _run_measured(command, env)
        row = {"method": method, **json.loads(out.strip().splitlines()[-1]), "peak_mb": peak}
        adapter = args.authors / method if args.authors else None
        if adapter is not None and adapter.is_file():
            try:
                row["authors"] = authors(method, adapter, args, env)
            except RuntimeError as exc:  # one adapter failing leaves the other rows
                row["authors_error"] = str(exc)
        rows.append(row)
        print(f"  {method}: done", file=sys.stderr)
    print(f"\n{args.data.name}, {args.pairs} pairs at {rows[0]['size'][1]}x{rows[0]['size'][0]}; "
          f"{args.device}, {args.threads} threads; {_cpu_name()}\n")  # fmt: skip
    print("| method | occo model-only pairs/s | occo end-to-end pairs/s | occo peak MB "
          "| authors end-to-end pairs/s | authors peak MB | occo / authors |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        theirs = row.get("authors")
        cells = [
            row["method"],
            f"{row['model_pps']:.3g}",
            f"{row['e2e_pps']:.3g}",
            f"{row['peak_mb']:.0f}",
        ]
        if theirs:
            cells += [f"{theirs['e2e_pps']:.3g}", f"{theirs['peak_mb']:.0f}",
                      f"{row['e2e_pps'] / theirs['e2e_pps']:.2f}x"]  # fmt: skip
        else:
            cells += ["-", "-", "-"]
        print("| " + " | ".join(cells) + " |")
    for row in rows:
        if "authors_error" in row:
            print(f"\n{row['method']}: the authors' adapter failed: {row['authors_error']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
