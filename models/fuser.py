"""The Fuser: inference of any registered network on image pairs (normalisation, colour,
batching, tiling, AMP).

Pipeline for one pair, as OCCO's released test script runs it (other networks change
steps 2-4 through their registry entry, occo.models.registry):

1. Infrared to one channel in [0, 1]: 8-bit / 255; 16-bit by a robust per-image stretch
   (see :func:`occo.data.normalize.ir_to_unit`). Visible to [0, 1] (8-bit / 255, 16-bit /
   65535); a colour visible image is split into Y, Cb, Cr with the release's coefficients.
2. FIFN(vi_y, ir) -> raw map, optionally in windows with the same result
   (:func:`occo.models.tiling.tiled_forward`).
3. Min-max normalise the raw map over the whole image (as the release does per image).
4. Colour: fused Y with the visible image's Cb and Cr, back to RGB, clamped.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch
from torch import Tensor

from occo.data.io import read_image, write_image_atomic
from occo.data.normalize import (
    IR16Mode,
    PreparedPair,
    compose_color,
    luminance,
    prepare_pair,
    to_uint8,
)
from occo.models.memory import MemoryPlan, choose_tile
from occo.models.registry import NetworkSpec, is_engine, spec_of
from occo.models.tiling import local_tiled_forward
from occo.runtime import resolve_amp

# --- the Fuser ----------------------------------------------------------------------------


class FusionEngine(Protocol):
    """Runs a registered network's forward pass outside PyTorch (e.g. OnnxEngine)."""

    network_name: str
    """The network's registry name (occo.models.registry)."""
    config: object
    """The network's config."""

    def __call__(self, vi_y: Tensor, ir: Tensor) -> Tensor:
        """(B, 1, H, W) inputs in [0, 1] -> (B, 1, H, W) raw output, as the network's forward."""
        ...


class Fuser:
    """Fuse infrared/visible pairs with a registered network: eval mode, inference_mode,
    AMP, tiles. What differs between networks (input luminance, output convention, colour,
    receptive margin, BatchNorm folding, memory model) comes from its registry entry.

    Args:
        model: a registered network (moved to ``device``, set to eval mode), or an engine
            that runs one elsewhere (:class:`FusionEngine`: no tiles, no autocast; engines
            take and return CPU tensors, so ``device`` stays the CPU).
        device: where to run.
        amp: autocast dtype: True = bf16 (fp16 where the GPU lacks bf16), False = float32,
            ``"auto"`` = on for CUDA, off on CPU, or an explicit ``torch.dtype``.
        tile: for images too large for memory: run the network in windows of this many px (plus
            the network's receptive margin each side) with the same result as whole images
            (see models.tiling); None = whole images, or the tiles ``memory_budget`` needs.
        batch_size: pairs per network call, for :meth:`fuse_pairs` and :class:`FileFuser`
            (which group same-size pairs); :meth:`fuse` and :meth:`raw` run the batch given
            (split only where ``memory_budget`` says it would not fit).
        ir16: how 16-bit infrared is stretched (see :func:`ir_to_unit`).
        memory_budget: bytes the network may use (``models.memory.memory_budget``); with
            no ``tile``, a size whose estimate exceeds it is fused one pair per call or in
            the largest tiles that fit (recorded in ``memory_plans``). None: no check
            (nor for a network without a memory model).
        authors_output: write what the network's authors' test script writes: gray fused
            luminance for a colour visible image where their script does so
            (``NetworkSpec.authors_color``); otherwise colour is kept.

    The Fuser runs an inference copy of ``model`` (BatchNorms folded, channels_last) made
    here: later changes to ``model``'s weights need a new Fuser.
    """

    def __init__(
        self,
        model: torch.nn.Module | FusionEngine,
        device: str | torch.device = "cpu",
        amp: bool | str | torch.dtype = "auto",
        tile: int | None = None,
        batch_size: int = 1,
        ir16: IR16Mode = "percentile",
        memory_budget: int | None = None,
        authors_output: bool = False,
    ) -> None:
        self.device = torch.device(device)
        #: The network's registry entry (TypeError for an unregistered module).
        self.spec: NetworkSpec = spec_of(model)
        #: The network's config (an engine carries the one it was exported from).
        self.config = model.config
        self.authors_output = authors_output
        # An ONNX model exported with its output convention inside returns finished maps.
        self._finished = getattr(model, "output", "raw") == "minmax"
        min_size = self.spec.min_size(self.config)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        margin = self.spec.receptive_margin(self.config)
        if tile is not None and margin is None:
            raise ValueError(
                f"{self.spec.name} sees the whole image (its receptive field is not finite): "
                "tiles would change its output; fuse without --tile"
            )
        if tile is not None and tile < 2 * min_size:
            raise ValueError(f"tile must be at least {2 * min_size} px, got {tile}")
        if ir16 not in ("percentile", "minmax", "full"):
            raise ValueError(f"ir16 must be percentile, minmax or full, got {ir16!r}")
        self.batch_size = batch_size
        self.tile = tile
        #: Context each window adds per side: the network's receptive reach; None when it
        #: has none (no tiles, exact or automatic).
        self.tile_margin = margin
        self.ir16 = ir16
        #: Bytes the network may take beyond what is resident. Without a tile, sizes that
        #: would not fit run one pair per call or in tiles (models.memory.choose_tile).
        self.memory_budget = memory_budget
        #: Pairs decoded and waiting for the network (FileFuser's read-ahead), budgeted too.
        self.queued_pairs = 0
        #: The plans that changed how a size runs (split batch or tiles), by (H, W).
        self.memory_plans: dict[tuple[int, int], MemoryPlan] = {}
        #: Called as ``on_memory_plan(height, width, plan)`` when such a plan is made.
        self.on_memory_plan: Callable[[int, int, MemoryPlan], None] | None = None
        self._plans: dict[tuple[int, int, int], MemoryPlan] = {}
        self.amp_dtype = resolve_amp(amp, self.device)
        if is_engine(model):  # it runs the whole network its own way
            if tile is not None or self.amp_dtype is not None:
                raise ValueError("tiles and autocast need the PyTorch network, not an engine")
            self.model, self.network = None, model
            return
        self.model = model.to(self.device).eval()
        # The network actually run: BatchNorms folded into the convs, channels_last so that
        # FIFB's tokens (B, HW, C) are views of the feature maps (and oneDNN / cuDNN like it).
        self.network = self.spec.fold(self.model).to(memory_format=torch.channels_last)

    def _plan(self, shape: torch.Size) -> tuple[int, int | None]:
        """(pairs per call, tile) for a batch of this shape: as asked, or what fits."""
        if (
            self.tile is not None
            or self.memory_budget is None
            or self.model is None
            or self.spec.memory_scale is None
        ):
            return self.batch_size, self.tile
        batch, height, width = min(shape[0], self.batch_size), shape[-2], shape[-1]
        key = (batch, height, width)
        if key not in self._plans:
            # float32 constants even under autocast: measured so, and on the safe side.
            plan = choose_tile(height, width, self.memory_budget, self.model.config,
                               batch=batch, queued=self.queued_pairs,
                               network=self.spec)  # fmt: skip
            self._plans[key] = plan
            if (plan.tile is not None or plan.batch < batch) and (
                height,
                width,
            ) not in self.memory_plans:
                self.memory_plans[(height, width)] = plan
                if self.on_memory_plan is not None:
                    self.on_memory_plan(height, width, plan)
        plan = self._plans[key]
        return plan.batch, plan.tile

    def _network(self, vi_y: Tensor, ir: Tensor, tile: int | None = None) -> Tensor:
        """Raw network output for inputs (B, 1, h, w), float32; in windows when too large."""
        autocast = (
            torch.autocast(self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype
            else nullcontext()
        )
        with autocast:
            vi_y = vi_y.contiguous(memory_format=torch.channels_last)
            ir = ir.contiguous(memory_format=torch.channels_last)
            if tile is not None and max(ir.shape[-2:]) > tile + 2 * self.tile_margin:
                return self._tiled(vi_y, ir, tile).float()
            return self.network(vi_y, ir).float()

    def _tiled(self, vi_y: Tensor, ir: Tensor, tile: int) -> Tensor:
        if self.spec.tiled_forward is not None:  # the network's own (e.g. FIFN's global parts)
            return self.spec.tiled_forward(self.network, vi_y, ir, tile)
        align = self.spec.size_multiple(self.config)
        return local_tiled_forward(self.network, vi_y, ir, tile, self.tile_margin, align)

    @torch.inference_mode()
    def raw(self, vi_y: Tensor, ir: Tensor) -> Tensor:
        """Raw network output for one batch (one network call; batching is the caller's),
        in windows when a tile size is set and the image exceeds one window (same result,
        up to float summation order).

        Args:
            vi_y: (B, 1, H, W) visible luminance in [0, 1].
            ir: (B, 1, H, W) infrared in [0, 1].

        Returns:
            (B, 1, H, W) float32, not normalised.
        """
        vi_y, ir = vi_y.to(self.device), ir.to(self.device)
        batch, tile = self._plan(ir.shape)
        return torch.cat(
            [
                self._network(v, i, tile)
                for v, i in zip(vi_y.split(batch), ir.split(batch), strict=True)
            ]
        )

    @torch.inference_mode()
    def fuse(self, vi: Tensor, ir: Tensor) -> Tensor:
        """Fuse one batch of same-size pairs (one network call).

        Args:
            vi: (B, 1, H, W) gray or (B, 3, H, W) RGB visible in [0, 1].
            ir: (B, 1, H, W) infrared in [0, 1].

        Returns:
            (B, 1, H, W) or (B, 3, H, W) fused image in [0, 1], on the Fuser's device;
            the luminance is min-max normalised per image.
        """
        vi, ir = vi.to(self.device, torch.float32), ir.to(self.device, torch.float32)
        spec = self.spec
        vi_y = luminance(vi) if vi.shape[1] == 1 or spec.luminance is None else spec.luminance(vi)
        raw = self.raw(vi_y, ir)
        finished = raw if self._finished else spec.finish(raw, self.config)
        fused_y = finished.clamp(0, 1)
        # A network's own compose also runs for gray (e.g. SeAFusion min-maxes after it).
        gray = vi.shape[1] == 1 and spec.compose is None
        if gray or (self.authors_output and not spec.authors_color):
            return fused_y
        # Some authors recolour the unclamped luminance (MUFusion's colour script).
        y = finished if spec.compose_unclamped else fused_y
        return (spec.compose or compose_color)(y, vi).clamp_(0, 1)

    def fuse_batch(self, pairs: Sequence[PreparedPair]) -> list[np.ndarray]:
        """Fuse pairs of one size and colour in one network call.

        Args:
            pairs: from :func:`occo.data.normalize.prepare_pair`, all the same size and colour.

        Returns:
            One uint8 image per pair, in order: (H, W) gray or (H, W, 3) RGB.
        """
        vi = torch.stack([pair.vi for pair in pairs])
        ir = torch.stack([pair.ir for pair in pairs])
        return [to_uint8(image) for image in self.fuse(vi, ir)]

    def fuse_pairs(self, pairs: Sequence[PreparedPair]) -> list[np.ndarray]:
        """Fuse prepared pairs of any sizes: same-size ones in batches of ``batch_size``.

        Args:
            pairs: from :func:`occo.data.normalize.prepare_pair`.

        Returns:
            One uint8 image per pair, in order: (H, W) gray or (H, W, 3) RGB.
        """
        results: list[np.ndarray | None] = [None] * len(pairs)
        groups: dict[tuple[tuple[int, int], bool], list[int]] = {}
        for index, pair in enumerate(pairs):
            groups.setdefault((pair.size, pair.color), []).append(index)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                for i, image in zip(chunk, self.fuse_batch([pairs[i] for i in chunk]), strict=True):
                    results[i] = image
        return results  # type: ignore[return-value]

    def fuse_arrays(self, ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
        """Fuse one pair given as arrays (as read by ``data.io.read_image``).

        Args:
            ir: (H, W) or (H, W, 3) uint8 / uint16 infrared.
            vi: (H, W) or (H, W, 3) uint8 / uint16 visible, same size.

        Returns:
            (H, W) uint8, or (H, W, 3) RGB uint8 when the visible image is colour.
        """
        return self.fuse_pairs([prepare_pair(ir, vi, self.ir16)])[0]


# --- folders of files: decode, fuse and encode overlap ------------------------------------


@dataclass
class FuseJob:
    """One pair to fuse from files."""

    stem: str
    """Name shared by the pair's files."""
    ir_path: Path
    """Infrared image file."""
    vi_path: Path
    """Visible image file."""
    out_path: Path
    """Where the fused PNG goes."""
    text: dict[str, str] | None = None
    """PNG text entries stored with the output (what made it)."""
    labels: tuple[str, str] = ("infrared", "visible")
    """What the two images are, for messages (a medical pair: ``("MRI", "PET")``)."""


@dataclass
class FuseOutcome:
    """What happened to one pair."""

    stem: str
    """The pair's stem."""
    error: str | None = None
    """Why the pair failed (names the file), None on success."""
    out_path: Path | None = None
    """The written image on success."""
    inspection: object | None = None
    """What the FileFuser's ``inspect`` hook returned for the pair (e.g. its registration)."""


@dataclass
class FileFuseStats:
    """Timings of a :class:`FileFuser` run, seconds."""

    decode_s: float = 0.0
    """Reading and preparing pairs (summed over worker threads)."""
    model_s: float = 0.0
    """Network, colour and transfer back (main thread)."""
    encode_s: float = 0.0
    """Encoding and writing PNGs (summed over worker threads)."""
    wall_s: float = 0.0
    """End to end."""
    fused: int = 0
    """Pairs written."""
    failed: int = 0
    """Pairs that failed."""


class PairError(ValueError):
    """A pair that cannot be fused (unreadable file, size mismatch); the message names it."""


def read_pair(job: FuseJob, ir16: IR16Mode = "percentile", resize_vi: bool = False) -> PreparedPair:
    """Read and prepare one pair of files.

    Args:
        job: the pair.
        ir16: 16-bit infrared stretch (see :func:`ir_to_unit`).
        resize_vi: resize the visible image to the infrared size when they differ
            (area interpolation when shrinking, cubic when enlarging); otherwise a size
            mismatch is an error, never a silent resize.

    Returns:
        The prepared pair.

    Raises:
        PairError: unreadable file or different sizes.
    """
    try:
        ir, vi = read_image(job.ir_path), read_image(job.vi_path)
    except (OSError, ValueError) as exc:
        raise PairError(str(exc)) from None
    if ir.shape[:2] != vi.shape[:2]:
        if not resize_vi:
            first, second = job.labels
            raise PairError(
                f"{first} {job.ir_path} is {ir.shape[1]}x{ir.shape[0]} but {second} {job.vi_path} is "
                f"{vi.shape[1]}x{vi.shape[0]}; pass --resize-vi to resize {second} images to the {first} size"
            )
        vi = resize_like(vi, ir)
    return prepare_pair(ir, vi, ir16)


def resize_like(vi: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """The visible image resized to the infrared size (area when shrinking, else cubic)."""
    shrink = vi.shape[0] * vi.shape[1] > ir.shape[0] * ir.shape[1]
    return cv2.resize(
        vi, (ir.shape[1], ir.shape[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    )


class FileFuser:
    """Fuse pairs of image files, overlapping decoding and encoding with the network.

    Worker threads read and prepare pairs ahead (in order); same-size pairs are grouped
    into batches; fused images are encoded and written atomically by worker threads.
    A bad pair is reported and skipped; the others go on.

    Args:
        fuser: the :class:`Fuser`.
        workers: reader threads (one more thread writes).
        resize_vi: see :func:`read_pair`.
        inspect: called on each prepared pair in the reader threads (e.g. a registration
            check); its result rides on the pair's :class:`FuseOutcome`. Its errors are
            the hook's to handle: one raising here fails nothing but its own result.
    """

    def __init__(
        self,
        fuser: Fuser,
        workers: int = 2,
        resize_vi: bool = False,
        inspect: Callable[[PreparedPair], object] | None = None,
    ) -> None:
        self.inspect = inspect
        self._inspections: dict[str, object] = {}
        self.fuser = fuser
        self.workers = max(1, workers)
        self.resize_vi = resize_vi
        self.stats = FileFuseStats()
        #: Why the run stopped early (a full or read-only disk), or None.
        self.stop_error: str | None = None

    def _read(self, job: FuseJob) -> tuple[PreparedPair | None, str | None, float]:
        start = time.perf_counter()
        try:
            pair, error = read_pair(job, self.fuser.ir16, self.resize_vi), None
        except PairError as exc:
            pair, error = None, str(exc)
        if pair is not None and self.inspect is not None:
            self._inspections[job.stem] = self.inspect(pair)
        return pair, error, time.perf_counter() - start

    def _write(self, job: FuseJob, image: np.ndarray) -> tuple[str | None, float]:
        start = time.perf_counter()
        from occo.data.outputs import WriteError, is_disk_error

        try:
            write_image_atomic(job.out_path, image, job.text)
            error = None
        except (OSError, ValueError) as exc:
            error = str(exc) if isinstance(exc, WriteError) else f"cannot write {job.out_path}: {exc}"
            if isinstance(exc, WriteError) or is_disk_error(exc):
                # A full or read-only disk fails every pair after it: stop, say it once.
                self.stop_error = error
        return error, time.perf_counter() - start

    def _fuse_group(
        self, group: list[tuple[FuseJob, PreparedPair]]
    ) -> list[tuple[FuseJob, np.ndarray | str]]:
        """Fuse a group as one batch; if that fails, pair by pair to name the culprit."""
        start = time.perf_counter()
        try:
            images: list[np.ndarray | str] = list(self.fuser.fuse_batch([p for _, p in group]))
        except (RuntimeError, ValueError) as exc:  # includes torch.OutOfMemoryError
            if len(group) == 1:
                job = group[0][0]
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if isinstance(exc, torch.OutOfMemoryError):
                    reason = "out of memory; pass --tile 1024 (or smaller) to fuse it in tiles"
                images = [f"{job.ir_path.name} + {job.vi_path.name}: fusion failed: {reason}"]
            else:
                self.stats.model_s += time.perf_counter() - start
                return [out for item in group for out in self._fuse_group([item])]
        self.stats.model_s += time.perf_counter() - start
        return [(job, image) for (job, _), image in zip(group, images, strict=True)]

    def run(self, jobs: Sequence[FuseJob]) -> Iterator[FuseOutcome]:
        """Fuse every job, yielding one outcome per pair as it finishes (any order).

        Args:
            jobs: the pairs.

        Yields:
            :class:`FuseOutcome` per job; ``stats`` is complete when the iterator ends.
        """
        started = time.perf_counter()
        batch = self.fuser.batch_size
        lookahead = 2 * batch + self.workers
        self.fuser.queued_pairs = min(lookahead, len(jobs))  # decoded pairs held in memory
        max_waiting = 4 * batch  # bounds memory when many sizes interleave
        groups: dict[tuple, list[tuple[FuseJob, PreparedPair]]] = {}
        writes: deque[tuple[FuseJob, Future]] = deque()
        with ThreadPoolExecutor(self.workers) as readers, ThreadPoolExecutor(1) as writer:
            reads = deque((job, readers.submit(self._read, job)) for job in jobs[:lookahead])
            upcoming = iter(jobs[lookahead:])

            def submit_fused(group: list[tuple[FuseJob, PreparedPair]]) -> Iterator[FuseOutcome]:
                for job, image in self._fuse_group(group):
                    if isinstance(image, str):
                        yield self._failed(job.stem, image)
                    else:
                        writes.append((job, writer.submit(self._write, job, image)))

            def finished_writes(wait: bool) -> Iterator[FuseOutcome]:
                while writes and (wait or writes[0][1].done()):
                    job, future = writes.popleft()
                    error, seconds = future.result()
                    self.stats.encode_s += seconds
                    if error:
                        yield self._failed(job.stem, error)
                    else:
                        self.stats.fused += 1
                        yield FuseOutcome(job.stem, out_path=job.out_path,
                                          inspection=self._inspections.pop(job.stem, None))  # fmt: skip

            while reads and self.stop_error is None:
                job, future = reads.popleft()
                pair, error, seconds = future.result()
                self.stats.decode_s += seconds
                if (following := next(upcoming, None)) is not None:
                    reads.append((following, readers.submit(self._read, following)))
                if pair is None:
                    yield self._failed(job.stem, error or "unreadable pair")
                    continue
                key = (pair.size, pair.color)
                groups.setdefault(key, []).append((job, pair))
                if len(groups[key]) >= batch:
                    yield from submit_fused(groups.pop(key))
                elif sum(len(g) for g in groups.values()) > max_waiting:
                    yield from submit_fused(groups.pop(max(groups, key=lambda k: len(groups[k]))))
                yield from finished_writes(wait=False)
            for key in list(groups) if self.stop_error is None else []:
                yield from submit_fused(groups.pop(key))
            yield from finished_writes(wait=True)
            for _job, future in reads:  # left unread after a disk error
                future.cancel()
        self.stats.wall_s = time.perf_counter() - started

    def _failed(self, stem: str, error: str) -> FuseOutcome:
        self._inspections.pop(stem, None)
        self.stats.failed += 1
        return FuseOutcome(stem, error=error)
