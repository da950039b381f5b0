"""Step time of every objective preset (OCCO, its ablations, CoCoNet) in the same run.

Each row is one evaluation of :class:`losses.objective.FusionObjective` with a preset of
``losses.objective.PRESETS``, forward + backward, on the same generated batch (smooth
images, overlapping object masks, so that every region is present in every crop) and the
same VGG19 (random weights, explicitly: timing does not depend on them; channels_last, as
`occo train` builds it). The OCCO objective is the reference row. Columns: median step
time, its ratio to OCCO's, peak memory growth during the step (CUDA allocator, or the
glibc heap in use on CPU, sampled: bench_losses.PeakMemory), the VGG19 passes and images
per step (every preset extracts each image once: anchors in one pass with gradients,
positives and negatives in one pass without; OCCO's background term has its own
gray relu1_1 passes), and the loss value.

Presets that contrast against other crops split the batch into groups (OCCO's 4,
CoCoNet's 3): the batch must be a multiple of both, as 12 is. Model-2 dominates the run:
its shallow contextual layers compare up to 65^2 sampled points per map (``--presets`` can
leave it out).

Example:
    python benchmarks/bench_objectives.py                  # CPU, batch 12, 256 px crops
    python benchmarks/bench_objectives.py --device cuda
    python benchmarks/bench_objectives.py --quick          # 32 px crops, one step each: a check
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from occo.losses.objective import PRESETS, FusionObjective, ObjectiveConfig  # noqa: E402
from occo.losses.vgg import VGGFeatures  # noqa: E402


def _bench_module(name: str):
    """A sibling benchmark script as a module (one implementation of inputs and timing)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def machine_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model from /proc/cpuinfo."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


class PassCounter:
    """Counts VGG19 passes and the images in them (ImageNet RGB and gray passes)."""

    def __init__(self, vgg: VGGFeatures) -> None:
        self.passes = self.images = 0
        vgg.features[0].register_forward_hook(self._count)  # RGB passes run conv1_1
        gray = vgg.gray_relu1_1  # gray passes (gray_features starts with it)

        def counted(images: torch.Tensor) -> torch.Tensor:
            self._count(None, (images,), None)
            return gray(images)

        vgg.gray_relu1_1 = counted

    def _count(self, module, inputs, output) -> None:
        self.passes += 1
        self.images += inputs[0].shape[0]

    def reset(self) -> None:
        self.passes = self.images = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=12, help="batch size (the paper: 12)")
    parser.add_argument("--crop", type=int, default=256, help="crop side (the paper: 256)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per preset")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--quick", action="store_true", help="32 px crops, one step, no warm-up: a check"
    )
    args = parser.parse_args()
    if args.quick:
        args.crop, args.repeats = 32, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    bench = _bench_module("bench_losses")
    torch.manual_seed(0)
    vgg = VGGFeatures(random_init=True, device=device, channels_last=True)  # random weights
    counter = PassCounter(vgg)
    fused, vi, ir, regions = bench.make_inputs(args.batch, args.crop, device)
    presets = ["occo", *[p for p in args.presets if p != "occo"]]  # the reference first

    results = {}
    for name in presets:
        config = ObjectiveConfig(objective=name)
        config.check_batch_size(args.batch)
        objective = FusionObjective(config, vgg if config.needs_vgg else None)

        def step(objective=objective) -> tuple[float, float]:
            counter.reset()
            total, _ = objective(fused, vi, ir, regions)
            total.backward()
            fused.grad = None
            return total.item(), 0.0

        seconds, peak, (total, _) = bench.measure(step, device, args.repeats, not args.quick)
        results[name] = (seconds, peak, counter.passes, counter.images, total)

    print(
        f"\nOne objective evaluation per preset, forward + backward: batch {args.batch}, "
        f"{args.crop}x{args.crop} crops, {machine_name(device)} "
        f"({torch.get_num_threads()} threads), median of {args.repeats}, VGG19 random weights\n"
    )
    print("| preset | step time (s) | vs occo | peak memory (MiB) | VGG19 passes | images | loss |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    base = results["occo"][0]
    for name, (sec, peak, passes, images, total) in results.items():
        print(
            f"| {name} | {sec:.3f} | {sec / base:.2f}x | {peak:.0f} | {passes} | {images} "
            f"| {total:.4f} |"
        )


if __name__ == "__main__":
    main()
