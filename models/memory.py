"""How much memory fusing a pair takes, how much there is, and the tile size that fits.

FIFN keeps feature maps of every level alive, so its memory grows with H x W. The
constants below are peak resident memory per pixel measured with ``/usr/bin/time -v`` on
``occo fuse`` (CPU, float32, the default FIFN, colour visible images; see
benchmarks/bench_memory.py), beyond what the process holds before the first pair:

- untiled: about 2060 B/px at 1.6 MP and 2330 B/px at 4.9 MP; :data:`UNTILED_BYTES_PER_PX`
  takes the upper end;
- tiled (``--tile N``): about 160-200 B/px of the whole image (inputs, output, colour
  conversion) plus 4000-5300 B per pixel of the largest window ((N + 2 x 80 px)^2: windows
  cost more per pixel than whole images, the three passes keep per-window state).

They scale with the network's feature planes (sum of width / 4^level over the levels)
and with the bytes per element of the compute dtype. GPU memory is estimated with the
same constants (not measured: conservative where autocast halves the activations).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from occo.models.config import FIFNConfig
from occo.models.tiling import receptive_margin

#: Peak bytes per pixel of an untiled forward pass (default FIFN, float32, colour pair).
UNTILED_BYTES_PER_PX = 2400
#: Peak bytes per pixel of the largest window of a tiled forward pass (same network).
WINDOW_BYTES_PER_PX = 5000
#: Bytes per image pixel a tiled pass keeps for the whole image (inputs, output, colour).
IMAGE_BYTES_PER_PX = 200
#: Bytes per pixel of a decoded, prepared pair waiting for the network (uint8 + float32).
QUEUED_BYTES_PER_PX = 24
#: Tile sizes tried, largest (fastest) first.
TILE_CANDIDATES = (4096, 3072, 2048, 1536, 1280, 1024, 768, 640, 512, 384, 256, 192, 128)
#: Share of the free memory a plan may use: the estimate is a measurement, not a bound.
SAFETY = 0.85
#: Environment variable that caps the memory ``occo fuse`` plans for (e.g. ``8G``).
LIMIT_ENV = "OCCO_MEMORY_LIMIT"


def _feature_planes(config: FIFNConfig) -> float:
    """Feature maps of all levels in units of one full-resolution plane."""
    return sum(width / 4**level for level, width in enumerate(config.widths))


def _activation_scale(config, dtype: torch.dtype, network=None) -> float:
    """This network and dtype relative to the measured one (default FIFN, float32)."""
    element = torch.empty((), dtype=dtype).element_size()
    if network is not None and network.memory_scale is not None:
        return network.memory_scale(config, element)
    return _feature_planes(config) / _feature_planes(FIFNConfig()) * element / 4


def _margin(config, network=None) -> int:
    if network is not None:
        return network.receptive_margin(config) or 0
    return receptive_margin(config.levels)[1]


def estimate_bytes(
    height: int,
    width: int,
    config: FIFNConfig | None = None,
    dtype: torch.dtype = torch.float32,
    batch: int = 1,
    tile: int | None = None,
    queued: int = 0,
    network=None,
) -> int:
    """Peak memory one network call on ``batch`` pairs of ``height`` x ``width`` adds.

    Args:
        height: image height in px.
        width: image width in px.
        config: the network (default: the released FIFN).
        dtype: compute dtype of the activations.
        batch: pairs per call.
        tile: tile core size (``--tile``), None for whole images.
        queued: pairs of this size decoded and waiting for the network.
        network: the network's registry entry (occo.models.registry.NetworkSpec) for its
            memory model and margin; None: FIFN.

    Returns:
        Bytes beyond what the process holds before fusing (model, libraries).
    """
    config = config or FIFNConfig()
    scale = _activation_scale(config, dtype, network)
    pixels = height * width
    waiting = queued * pixels * QUEUED_BYTES_PER_PX
    margin = _margin(config, network)
    if tile is None or max(height, width) <= tile + 2 * margin:  # the Fuser runs it whole
        return int(batch * pixels * UNTILED_BYTES_PER_PX * scale) + waiting
    window = min(height, tile + 2 * margin) * min(width, tile + 2 * margin)
    per_pair = window * WINDOW_BYTES_PER_PX * scale + pixels * IMAGE_BYTES_PER_PX
    return int(batch * per_pair) + waiting


@dataclass(frozen=True)
class MemoryPlan:
    """How to run pairs of one size within a memory budget."""

    tile: int | None
    """Tile core size, None for whole images."""
    batch: int
    """Pairs per network call (a batch is split before images are tiled)."""
    need: int
    """Estimated bytes the plan takes (beyond what the process already holds)."""
    untiled_need: int
    """Estimated bytes of the whole batch untiled (what the plan avoids)."""
    fits: bool
    """False when even the smallest tile exceeds the budget (the plan is the best try)."""

    def describe(self, height: int, width: int, budget: MemoryBudget) -> str:
        """One line for the user: why and how pairs of this size run."""
        gb = 1e9
        why = (
            f"{width}x{height} pairs need about {self.untiled_need / gb:.1f} GB whole, more than "
            f"the {budget.bytes / gb:.1f} GB to spare ({budget.source})"
        )
        if self.tile is None:
            return f"{why}: fusing them one pair at a time"
        how = f"fusing them in {self.tile} px tiles (same output; --tile N sets the size)"
        if not self.fits:
            return f"{why}; even {how.removeprefix('fusing them ')} need {self.need / gb:.1f} GB: this may run out of memory"
        return f"{why}: {how}"


def choose_tile(
    height: int,
    width: int,
    budget: int,
    config: FIFNConfig | None = None,
    dtype: torch.dtype = torch.float32,
    batch: int = 1,
    queued: int = 0,
    network=None,
) -> MemoryPlan:
    """The fastest way to fuse pairs of this size within ``budget`` bytes.

    Whole images in batches if they fit; else one pair per call; else the largest tile
    of :data:`TILE_CANDIDATES` (larger tiles are faster) that fits.

    Args:
        height: image height in px.
        width: image width in px.
        budget: bytes available beyond what the process holds (see :func:`memory_budget`).
        config: the network (default: the released FIFN).
        dtype: compute dtype of the activations.
        batch: pairs per call wanted.
        queued: pairs of this size decoded and waiting.
        network: the network's registry entry; None: FIFN. A network without a finite
            receptive margin is never tiled (only its batches are split).

    Returns:
        A :class:`MemoryPlan`.
    """
    config = config or FIFNConfig()

    def need(b: int, t: int | None) -> int:
        return estimate_bytes(height, width, config, dtype, b, t, queued, network)

    whole = need(batch, None)
    for b in dict.fromkeys((batch, 1)):
        if need(b, None) <= budget:
            return MemoryPlan(None, b, need(b, None), whole, True)
    if network is not None and network.receptive_margin(config) is None:
        return MemoryPlan(None, 1, need(1, None), whole, False)
    margin = _margin(config, network)
    tiles = [t for t in TILE_CANDIDATES if max(height, width) > t + 2 * margin]
    for tile in tiles:
        if need(1, tile) <= budget:
            return MemoryPlan(tile, 1, need(1, tile), whole, True)
    smallest = tiles[-1] if tiles else None
    return MemoryPlan(smallest, 1, need(1, smallest), whole, False)


@dataclass(frozen=True)
class MemoryBudget:
    """Memory a run may plan with, and where the number comes from."""

    bytes: int
    """Bytes available beyond what the process already holds, after the safety share."""
    source: str
    """What limited it, in words (e.g. "MemAvailable", "cgroup limit", "OCCO_MEMORY_LIMIT")."""


def parse_size(text: str) -> int:
    """``"8G"``, ``"512M"``, ``"1.5GiB"`` or a plain byte count to bytes (powers of 1024).

    Raises:
        ValueError: not a size.
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"not a memory size: {text!r} (write e.g. 8G or 512M)")
    power = " KMGT".index(match.group(2).upper() or " ")
    return int(float(match.group(1)) * 1024**power)


def _meminfo(key: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def _stat(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def cgroup_available(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes the process's cgroup may still take (v2 or v1), or None without a limit.

    Reclaimable page cache (inactive files) counts as available, as in MemAvailable.
    """
    for limit_file, usage_file, stat_key, folder in (
        ("memory.max", "memory.current", "inactive_file", root),
        ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file", root / "memory"),
    ):
        limit, usage = _read_int(folder / limit_file), _read_int(folder / usage_file)
        if limit is None or usage is None or limit >= 1 << 60:  # v1 writes "no limit" as ~2^63
            continue
        return max(0, limit - usage + _stat(folder / "memory.stat", stat_key))
    return None


def resident_bytes() -> int:
    """This process's resident memory now (0 where it cannot be read)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def memory_budget(device: str | torch.device = "cpu", limit: str | None = None) -> MemoryBudget:
    """The memory a fusion run may plan with on ``device``.

    On the CPU: the smallest of MemAvailable, the cgroup's remaining limit and ``limit``
    (or the :data:`LIMIT_ENV` environment variable) minus what the process holds; on a
    GPU: its free memory (``torch.cuda.mem_get_info``). Then :data:`SAFETY` of that.

    Args:
        device: where the network runs.
        limit: a cap on the whole process's resident memory, e.g. ``"8G"``; default
            the environment variable's value.

    Returns:
        A :class:`MemoryBudget`.

    Raises:
        ValueError: ``limit`` (or the environment variable) is not a size.
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return MemoryBudget(int(free * SAFETY), f"free memory of {device}")
    options: list[tuple[int, str]] = []
    if (available := _meminfo("MemAvailable")) is not None:
        options.append((available, "MemAvailable"))
    if (in_cgroup := cgroup_available()) is not None:
        options.append((in_cgroup, "cgroup limit"))
    limit = limit if limit is not None else os.environ.get(LIMIT_ENV)
    if limit:
        options.append((parse_size(limit) - resident_bytes(), f"{LIMIT_ENV}={limit}"))
    if not options:
        return MemoryBudget(1 << 62, "unknown (no /proc/meminfo)")
    amount, source = min(options)
    return MemoryBudget(max(0, int(amount * SAFETY)), source)
