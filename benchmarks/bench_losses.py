"""Time one full OCCO objective evaluation (forward + backward) against the release's way.

Rows:
- ``occo``: :class:`losses.objective.FusionObjective`: one VGG19 built once, every image
  through it once per step (anchors with gradients, all targets in one no-grad batch).
- ``release's way``: what the authors' training loop did: a fresh VGG19 per criterion every
  step (torchvision ``vgg19()`` built and loaded, as ``vgg19(pretrained=True)`` did, minus
  the disk read) and features recomputed for every distance and layer (about 80 VGG
  passes per step at batch 12).
- ``release's way, VGG prebuilt``: the same recomputation without the rebuilds, to show
  where the time goes.
- ``occo bf16``: occo under bf16 autocast (CUDA by default; ``--bf16`` elsewhere).

Both ways compute the same value (printed), to float32 rounding: the contextual relative
distance d / (min d + 1e-5) amplifies the last bits of near-identical points, so two
correct float32 evaluations (channels_last against NCHW convolutions, say) agree to about
1e-4 relative, not 1e-7. (In float64 the contextual similarity matches a loop-by-loop
reference to 1e-10: tests/test_losses_contextual.py.) VGG19 has random weights unless
``--vgg-weights`` is given (timing does not depend on the weights). Peak memory: growth
during the step, CUDA ``max_memory_allocated`` or, on CPU, the heap in use (sampled).

Example:
    python benchmarks/bench_losses.py --batch 12 --crop 256 --device cuda
    python benchmarks/bench_losses.py     # CPU default: batch 4, 64x64 crops (a few minutes)
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

# Run from a checkout: the project's packages are importable without (re)installing.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from occo.losses.contextual import contextual_distance  # noqa: E402
from occo.losses.objective import FusionObjective, ObjectiveConfig  # noqa: E402
from occo.losses.pixel import PixelLoss  # noqa: E402
from occo.losses.vgg import VGGFeatures  # noqa: E402
from occo.masks.regions import split_regions  # noqa: E402

TERMS = {  # name -> (region, positive, negative, weight)
    "unique_vi": ("unique_vi", "vi", "ir", 1.0),
    "unique_ir": ("unique_ir", "ir", "vi", 1.0),
    "shared_vi": ("shared", "vi", "ir", 0.5),
    "shared_ir": ("shared", "ir", "vi", 0.5),
    "background": ("background", "vi", "ir", 1.0 / 16.0),
}


def make_inputs(batch: int, crop: int, device: torch.device, seed: int = 0):
    """Smooth random images and overlapping blob masks (every region present in every crop)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 2, crop // 8, crop // 8, generator=g)
    images = torch.nn.functional.interpolate(low, size=(crop, crop), mode="bilinear")
    images = (images + 0.1 * torch.rand(batch, 2, crop, crop, generator=g)).clamp(0, 1)
    vi, ir = images[:, :1], images[:, 1:]
    yy, xx = torch.meshgrid(torch.arange(crop), torch.arange(crop), indexing="ij")
    centres = torch.rand(batch, 2, generator=g) * crop * 0.5 + crop * 0.25
    r = crop * 0.2
    d_vi = (yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2
    d_ir = (yy - centres[:, :1, None] - r) ** 2 + (xx - centres[:, 1:, None]) ** 2
    regions = split_regions((d_vi < r * r).unsqueeze(1), (d_ir < r * r).unsqueeze(1))
    fused = (0.6 * vi + 0.4 * ir).requires_grad_(True)
    to = lambda t: t.to(device)  # noqa: E731
    return to(fused.detach()).requires_grad_(True), to(vi), to(ir), regions._make(map(to, regions))


class _ReleaseCriterion:
    """One loss criterion of the release: its own VGG19, rebuilt when constructed."""

    def __init__(self, features_state: dict, device: torch.device) -> None:
        model = torchvision.models.vgg19()  # full model, random init, as the release built it
        model.features.load_state_dict(features_state)
        self.features = model.features[:36].to(device).eval().requires_grad_(False)
        mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)
        self.mean, self.std = mean, std

    def layer(self, images: torch.Tensor, name: str) -> torch.Tensor:
        """One VGG pass up to ``name`` (relu4_4 = index 26, relu5_4 = 35)."""
        x = (images.repeat(1, 3, 1, 1) - self.mean) / self.std
        return self.features[: {"relu4_4": 27, "relu5_4": 36}[name]](x)

    def gray_relu1_1(self, images: torch.Tensor) -> torch.Tensor:
        conv = self.features[0]
        gray = conv.weight.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        weight = (conv.weight * gray).sum(dim=1, keepdim=True)
        return torch.relu(torch.nn.functional.conv2d(images, weight, conv.bias, padding=1))


def _ratio(num: torch.Tensor, negs: list[torch.Tensor]) -> torch.Tensor:
    den = sum(n.clamp_min(0.0) for n in negs)
    return num.clamp_min(0.0) / den.clamp_min(1e-6)


def release_objective(
    fused, vi, ir, regions, features_state, device, groups: int, rebuild: bool, cache: dict
) -> tuple[torch.Tensor, torch.Tensor]:
    """(total, L_con) computed as the release did (per-term, per-layer feature extraction)."""
    pixel, _ = PixelLoss()(fused, vi, ir)
    n = fused.shape[0] // groups
    src = {"vi": vi, "ir": ir}
    con = fused.new_zeros(())
    for name, (region, pos, neg, weight) in TERMS.items():
        if rebuild or name not in cache:
            cache[name] = _ReleaseCriterion(features_state, device)
        crit = cache[name]
        if name == "background":
            mask = regions.background
            anchor = crit.gray_relu1_1(fused[:n] * mask[:n])
            mse_pos = (anchor - crit.gray_relu1_1(vi[:n] * mask[:n])).square().mean()
            mse_neg = [
                (anchor - crit.gray_relu1_1(ir[k * n : (k + 1) * n] * mask[k * n : (k + 1) * n]))
                .square()
                .mean()
                for k in range(groups)
            ]
            con = con + weight * _ratio(mse_pos, mse_neg)
            continue
        mask = getattr(regions, region)
        value = 0.0
        for layer, layer_weight in (("relu5_4", 1.0), ("relu4_4", 0.25)):
            d_pos = contextual_distance(
                crit.layer(fused[:n] * mask[:n], layer), crit.layer(src[pos][:n] * mask[:n], layer)
            ).mean()
            d_neg = []
            for k in range(groups):
                part = slice(k * n, (k + 1) * n)
                anchor = crit.layer(fused[:n] * mask[:n], layer)  # recomputed, as released
                d_neg.append(
                    contextual_distance(
                        anchor, crit.layer(src[neg][part] * mask[part], layer)
                    ).mean()
                )
            value = value + layer_weight * _ratio(d_pos, d_neg)
        con = con + weight * value
    return pixel + 10.0 * con, con


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks")
        + ("uordblks", "fordblks", "keepcost")
    ]


def _load_mallinfo2():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        return libc.mallinfo2
    except (OSError, AttributeError):
        return None


_MALLINFO2 = _load_mallinfo2()


def _heap_in_use() -> int:
    """Bytes malloc has handed out and not taken back (glibc mallinfo2; 0 where missing)."""
    if _MALLINFO2 is None:
        return 0
    info = _MALLINFO2()
    return info.uordblks + info.hblkhd


class PeakMemory:
    """Peak memory growth during a block: the CUDA allocator's peak, or on CPU the heap in
    use (glibc mallinfo2, which unlike RSS sees freed memory the allocator keeps), sampled
    every millisecond."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak = device, 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base, self.running = _heap_in_use(), True
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, _heap_in_use() - self.base)
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self.running = False
            self.thread.join()


def measure(
    step: Callable[[], tuple[float, float]], device: torch.device, repeats: int, warmup: bool
) -> tuple[float, float, tuple[float, float]]:
    """Median seconds, max peak MiB and the (total, L_con) values of ``repeats`` timed steps."""
    if warmup:
        step()
    times, peaks, values = [], [], (float("nan"), float("nan"))
    for _ in range(repeats):
        with PeakMemory(device) as mem:
            t0 = time.perf_counter()
            values = step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        peaks.append(mem.peak / 2**20)
    return statistics.median(times), max(peaks), values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4, help="batch size (the paper: 12)")
    parser.add_argument("--crop", type=int, default=64, help="crop side (the paper: 256)")
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="timed occo steps")
    parser.add_argument("--baseline-repeats", type=int, default=1, help="timed release steps")
    parser.add_argument("--skip-prebuilt", action="store_true", help="omit the prebuilt row")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="add the bf16 row off CUDA too")
    parser.add_argument("--vgg-weights", default=None, help="vgg19 state dict (default random)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    # channels_last, as `occo train` builds it (faster convolutions on GPUs and with oneDNN).
    if args.vgg_weights:
        vgg = VGGFeatures(args.vgg_weights, device=device, channels_last=True)
    else:  # random weights, explicitly
        vgg = VGGFeatures(random_init=True, device=device, channels_last=True)
    features_state = {k: v.cpu() for k, v in vgg.features.state_dict().items()}
    objective = FusionObjective(ObjectiveConfig(groups=args.groups), vgg)
    fused, vi, ir, regions = make_inputs(args.batch, args.crop, device)

    def occo_step() -> tuple[float, float]:
        total, parts = objective(fused, vi, ir, regions)
        total.backward()
        fused.grad = None
        return total.item(), parts["con"].item()

    def occo_bf16_step() -> tuple[float, float]:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            total, parts = objective(fused, vi, ir, regions)
        total.backward()
        fused.grad = None
        return total.item(), parts["con"].item()

    def release_step(rebuild: bool, cache: dict) -> tuple[float, float]:
        total, con = release_objective(
            fused, vi, ir, regions, features_state, device, args.groups, rebuild, cache
        )
        total.backward()
        fused.grad = None
        return total.item(), con.item()

    # (name, step, warm-up first, repeats): the release's way is slow enough to skip the
    # warm-up, and its rebuilds are what it does every step anyway.
    rows = [("occo", occo_step, True, args.repeats)]
    if device.type == "cuda" or args.bf16:
        rows.append(("occo bf16 autocast", occo_bf16_step, True, args.repeats))
    rows.append(("release's way", lambda: release_step(True, {}), False, args.baseline_repeats))
    if not args.skip_prebuilt:
        prebuilt = {name: _ReleaseCriterion(features_state, device) for name in TERMS}
        step = lambda: release_step(False, prebuilt)  # noqa: E731
        rows.append(("release's way, VGG prebuilt", step, False, args.baseline_repeats))

    results = {name: measure(step, device, n, warm) for name, step, warm, n in rows}
    name_dev = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    threads = torch.get_num_threads()
    print(
        f"\nOne objective evaluation, forward + backward: batch {args.batch}, "
        f"{args.crop}x{args.crop} crops, {args.groups} groups, {name_dev} "
        f"({threads} threads), median of {args.repeats} (release's way: "
        f"{args.baseline_repeats}), VGG19 "
        f"{'weights ' + args.vgg_weights if args.vgg_weights else 'random weights'}\n"
    )
    base = results["release's way"][0]
    print("| method | step time (s) | speed-up | peak memory (MiB) | total loss | L_con |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (sec, peak, (total, con)) in results.items():
        print(f"| {name} | {sec:.3f} | {base / sec:.1f}x | {peak:.0f} | {total:.6f} | {con:.6f} |")
    for i, what in enumerate(("total", "L_con")):
        ours, theirs = results["occo"][2][i], results["release's way"][2][i]
        diff = abs(ours - theirs)
        relative = diff / max(abs(theirs), 1e-12)
        print(f"\nSame {what}: |occo - release's way| = {diff:.2e} (relative {relative:.1e})")


if __name__ == "__main__":
    main()
