"""The training data: paired crops with their object masks, and batches built for CCL.

Everything random here is derived from ``(seed, epoch, ...)`` rather than from a running
generator, so an epoch's batches and crops are the same whichever process or worker
computes them: that makes ``--resume`` exact and DDP ranks agree without talking.

Masks come in through a factory (``mask_source``) that each process calls lazily, e.g.
``functools.partial(masks.store.open_mask_store, path)``: ``data`` never imports ``masks``.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from occo.data.errors import OccoError
from occo.data.io import read_image
from occo.data.normalize import prepare_training_pair

#: Folder names recognised for the two modalities, in order of preference.
IR_DIR_NAMES = ("ir", "IR", "infrared", "Infrared", "inf", "thermal")
VI_DIR_NAMES = ("vi", "VI", "vis", "visible", "Visible", "rgb", "RGB")

#: One crop of an epoch: ``(epoch, image_index, slot)``; the slot numbers the crops of an image.
CropKey = tuple[int, int, int]

# Fixed stream tags, so that crop positions and batch order use unrelated random streams.
_CROP_STREAM = 0x0C0C
_ORDER_STREAM = 0xB47C
_HOLDOUT_STREAM = 0x7E57


class TrainingDataError(OccoError, ValueError):
    """The training data cannot be used as given (sizes, masks, too few images)."""


class MaskReader(Protocol):
    """What the dataset needs from a mask store (``masks.store.open_mask_store`` returns one)."""

    def stems(self) -> list[str]:
        """Stems with both masks, sorted."""
        ...

    def shapes(self, stem: str) -> tuple[tuple[int, int], tuple[int, int]]:
        """``(shape_ir, shape_vi)`` of a pair's masks, without reading them."""
        ...

    def read(self, stem: str) -> tuple[np.ndarray, np.ndarray]:
        """``(mask_ir, mask_vi)``, ``(H, W)`` 0/1."""
        ...


def find_modality_dirs(root: str | Path) -> tuple[Path, Path]:
    """The infrared and visible folders of a dataset (``ir/`` and ``vi/`` or common aliases),
    or a medical dataset's ``MRI/`` and its ``CT/``, ``PET/`` or ``SPECT/`` (any case).

    Args:
        root: dataset folder.

    Returns:
        ``(ir_dir, vi_dir)``.

    Raises:
        FileNotFoundError: ``root`` or one of the two folders is missing.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    from occo.data.modality import ModalityError, dataset_folders

    try:  # a medical dataset: MRI/ in the infrared place, CT/, PET/ or SPECT/ in the visible
        return dataset_folders(root)[:2]
    except ModalityError:
        pass
    found = []
    for names, what in ((IR_DIR_NAMES, "infrared"), (VI_DIR_NAMES, "visible")):
        folder = next((root / n for n in names if (root / n).is_dir()), None)
        if folder is None:
            raise FileNotFoundError(
                f"no {what} folder in {root}: expected one of {', '.join(n + '/' for n in names[:4])}"
            )
        found.append(folder)
    return found[0], found[1]


def salient_crop_origin(
    mask: np.ndarray | None, size: tuple[int, int], crop: int, tries: int, rng: np.random.Generator
) -> tuple[int, int]:
    """Top-left corner of a random crop that contains mask pixels, as the release chose them.

    Up to ``tries`` uniform positions are drawn and the first whose window holds a mask pixel
    wins. Where the release then dropped the crop, occo centres it on a random mask pixel, so
    every image gives its crops and epochs keep one length (needed for exact resume).

    Args:
        mask: ``(H, W)`` union of the two masks (non-zero = object), or None for plain crops.
        size: image ``(H, W)``, at least ``crop`` on each side.
        crop: side of the square crop.
        tries: random positions to try before falling back.
        rng: the crop's own generator.

    Returns:
        ``(top, left)``.
    """
    height, width = size
    max_top, max_left = height - crop, width - crop
    top, left = int(rng.integers(0, max_top + 1)), int(rng.integers(0, max_left + 1))
    if mask is None:
        return top, left
    for attempt in range(tries):
        if attempt:
            top, left = int(rng.integers(0, max_top + 1)), int(rng.integers(0, max_left + 1))
        if mask[top : top + crop, left : left + crop].any():
            return top, left
    ys, xs = np.nonzero(mask)
    if ys.size == 0:  # no object at all: any crop is as good as another
        return top, left
    pick = int(rng.integers(0, ys.size))
    top = int(np.clip(ys[pick] - crop // 2, 0, max_top))
    left = int(np.clip(xs[pick] - crop // 2, 0, max_left))
    return top, left


def _pad_to(array: np.ndarray, crop: int, mode: str) -> np.ndarray:
    """Pad an ``(H, W)`` array at the bottom/right up to ``crop`` on each side."""
    pad_h, pad_w = max(0, crop - array.shape[0]), max(0, crop - array.shape[1])
    if not (pad_h or pad_w):
        return array
    return np.pad(array, ((0, pad_h), (0, pad_w)), mode=mode)


class FusionCropDataset(Dataset):
    """Random (salient) crops of infrared-visible pairs, addressed by ``(epoch, image, slot)``.

    Each item is a dict of float32 tensors: ``vi`` and ``ir`` ``(1, crop, crop)`` in [0, 1]
    (visible as Y), ``index`` (the image index) and, with masks, ``mask_vi`` and ``mask_ir``
    ``(1, crop, crop)`` in {0, 1}. Images smaller than the crop are reflect-padded.

    Args:
        pairs: ``(stem, ir_path, vi_path)`` as from ``data.pairing.pair_images``.
        crop: side of the square crops.
        mask_source: factory returning a :class:`MaskReader`, called once per process;
            None trains without masks (plain random crops, no mask tensors).
        crop_tries: random positions tried for a crop that holds mask pixels.
        salient: require mask pixels in crops (only meaningful with masks).
        seed: base seed of all crop positions.
        prepare: ``(ir, vi) -> (ir, vi_y)`` turning arrays as read into ``(H, W)`` float32
            in [0, 1]; must be picklable (workers). Default
            :func:`occo.data.normalize.prepare_training_pair`, inference's own preparation,
            so that training and ``occo fuse`` see identical inputs.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[str, Path, Path]],
        crop: int,
        mask_source: Callable[[], MaskReader] | None = None,
        crop_tries: int = 20,
        salient: bool = True,
        seed: int = 0,
        prepare: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        if crop < 1:
            raise ValueError(f"crop must be positive, got {crop}")
        self.pairs = [(str(s), Path(i), Path(v)) for s, i, v in pairs]
        self.crop = crop
        self.mask_source = mask_source
        self.crop_tries = crop_tries
        self.salient = salient
        self.seed = seed
        self.prepare = prepare or prepare_training_pair
        self._reader: MaskReader | None = None
        self._reader_pid = -1

    def __len__(self) -> int:
        return len(self.pairs)

    def __getstate__(self) -> dict[str, Any]:
        # An open HDF5 handle must not travel to worker processes: each opens its own.
        state = self.__dict__.copy()
        state["_reader"], state["_reader_pid"] = None, -1
        return state

    def _masks(self) -> MaskReader | None:
        if self.mask_source is None:
            return None
        if self._reader is None or self._reader_pid != os.getpid():
            self._reader, self._reader_pid = self.mask_source(), os.getpid()
        return self._reader

    def load(self, index: int) -> dict[str, np.ndarray]:
        """The whole pair ``index``: ``vi``, ``ir`` ``(H, W)`` float32 and masks if any."""
        stem, ir_path, vi_path = self.pairs[index]
        ir_img, vi_img = read_image(ir_path), read_image(vi_path)
        if ir_img.shape[:2] != vi_img.shape[:2]:
            ir, vi = ir_img, vi_img
        else:
            ir, vi = self.prepare(ir_img, vi_img)
        if ir.shape[:2] != vi.shape[:2]:
            raise TrainingDataError(
                f"pair '{stem}' is misaligned: {ir_path} is {ir.shape[1]}x{ir.shape[0]} but "
                f"{vi_path} is {vi.shape[1]}x{vi.shape[0]}; register or resize the pair"
            )
        sample = {"ir": np.asarray(ir, dtype=np.float32), "vi": np.asarray(vi, dtype=np.float32)}
        reader = self._masks()
        if reader is not None:
            # Sizes first, from the store's metadata: a mask is read only once it fits the images.
            for name, shape in zip(("mask_ir", "mask_vi"), reader.shapes(stem), strict=True):
                if tuple(shape) != ir.shape:
                    raise TrainingDataError(
                        f"the {name[5:]} mask of '{stem}' is {shape[1]}x{shape[0]} but the "
                        f"images are {ir.shape[1]}x{ir.shape[0]}; regenerate the masks for this dataset"
                    )
            mask_ir, mask_vi = reader.read(stem)
            for name, mask in (("mask_ir", mask_ir), ("mask_vi", mask_vi)):
                sample[name] = (np.asarray(mask) > 0).astype(np.float32)
        return sample

    def __getitem__(self, key: CropKey) -> dict[str, torch.Tensor]:
        epoch, index, slot = (int(k) for k in key)
        sample = self.load(index)
        for name in sample:
            sample[name] = _pad_to(
                sample[name], self.crop, "constant" if "mask" in name else "reflect"
            )
        rng = np.random.default_rng([self.seed, _CROP_STREAM, epoch, index, slot])
        union = None
        if self.salient and "mask_vi" in sample:
            union = np.maximum(sample["mask_vi"], sample["mask_ir"])
        top, left = salient_crop_origin(union, sample["ir"].shape, self.crop, self.crop_tries, rng)
        window = (slice(top, top + self.crop), slice(left, left + self.crop))
        item = {
            name: torch.from_numpy(np.ascontiguousarray(a[window]))[None]
            for name, a in sample.items()
        }
        item["index"] = torch.tensor(index)
        return item


def compose_batches(
    num_images: int,
    batch_size: int,
    epoch: int,
    seed: int = 0,
    crops_per_image: int = 2,
    distinct: bool = True,
) -> list[list[CropKey]]:
    """The global batches of one epoch, each with crops of ``batch_size`` distinct images.

    Every image gives ``crops_per_image`` crops; the crops are shuffled slot by slot and
    dealt into batches, skipping (for the next batch) a crop whose image the batch already
    has. CCL takes its anchors from the first group of a batch and negatives from the other
    groups, so distinct images make those negatives other scenes. Crops that cannot fill
    a whole batch are left out (at most a few per epoch).

    Args:
        num_images: images in the training set.
        batch_size: crops per global batch.
        epoch: the epoch (seeds the order).
        seed: base seed.
        crops_per_image: crops of each image per epoch.
        distinct: require distinct images within a batch.

    Returns:
        A list of batches, each a list of ``(epoch, image_index, slot)``.
    """
    rng = np.random.default_rng([seed, _ORDER_STREAM, epoch])
    queue = deque(
        (epoch, int(i), slot)
        for slot in range(crops_per_image)
        for i in rng.permutation(num_images)
    )
    batches: list[list[CropKey]] = []
    while len(queue) >= batch_size:
        batch: list[CropKey] = []
        seen: set[int] = set()
        deferred: list[CropKey] = []
        while queue and len(batch) < batch_size:
            key = queue.popleft()
            if distinct and key[1] in seen:
                deferred.append(key)
                continue
            batch.append(key)
            seen.add(key[1])
        queue.extendleft(reversed(deferred))
        if len(batch) < batch_size:
            break
        batches.append(batch)
    return batches


def rank_share(batch: Sequence[CropKey], groups: int, rank: int, world_size: int) -> list[CropKey]:
    """The part of a global batch that one DDP rank trains on.

    The global batch is ``groups`` consecutive groups of ``g = len(batch) / groups``; each
    rank takes the same ``g / world_size`` positions of every group, so its local batch is
    again ``groups`` groups, and anchors keep their negatives at the same offsets.

    Args:
        batch: the global batch.
        groups: CCL groups (1 when the objective has none).
        rank: this process's rank.
        world_size: number of processes.

    Returns:
        ``len(batch) / world_size`` keys.
    """
    group = len(batch) // groups
    share = group // world_size
    if group * groups != len(batch) or share * world_size != group:
        raise ValueError(
            f"a batch of {len(batch)} in {groups} groups cannot be split over {world_size} processes"
        )
    return [batch[k * group + rank * share + j] for k in range(groups) for j in range(share)]


class GroupedBatchSampler(Sampler[list[CropKey]]):
    """Yields this rank's local batches of an epoch (see :func:`compose_batches`).

    Call :meth:`set_epoch` before iterating; :meth:`set_start` skips the batches a resumed
    run has already trained on.

    Args:
        num_images: images in the training set.
        batch_size: global batch size (all ranks together).
        groups: CCL groups in a batch.
        crops_per_image: crops of each image per epoch.
        seed: base seed.
        rank: this process's rank.
        world_size: number of processes.
        distinct: require distinct images within a global batch.
    """

    def __init__(
        self,
        num_images: int,
        batch_size: int,
        groups: int = 1,
        crops_per_image: int = 2,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        distinct: bool = True,
    ) -> None:
        if batch_size % (groups * world_size):
            raise TrainingDataError(
                f"batch size {batch_size} must be a multiple of groups ({groups}) x processes ({world_size})"
            )
        if distinct and num_images < batch_size:
            raise TrainingDataError(
                f"a batch needs {batch_size} distinct images but the training set has {num_images}; "
                "lower --batch-size or add images"
            )
        if num_images * crops_per_image < batch_size:
            raise TrainingDataError(
                f"{num_images} images x {crops_per_image} crops cannot fill one batch of {batch_size}"
            )
        self.num_images, self.batch_size, self.groups = num_images, batch_size, groups
        self.crops_per_image, self.seed, self.distinct = crops_per_image, seed, distinct
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches :meth:`__iter__` yields, from its first batch."""
        self.epoch, self.start = epoch, 0

    def set_start(self, batch_index: int) -> None:
        """Begin the current epoch at ``batch_index`` (batches already trained are skipped)."""
        self.start = batch_index

    def global_batches(self) -> list[list[CropKey]]:
        """All global batches of the current epoch."""
        return compose_batches(
            self.num_images,
            self.batch_size,
            self.epoch,
            self.seed,
            self.crops_per_image,
            self.distinct,
        )

    def __iter__(self) -> Iterator[list[CropKey]]:
        for batch in self.global_batches()[self.start :]:
            yield rank_share(batch, self.groups, self.rank, self.world_size)

    def __len__(self) -> int:
        return len(self.global_batches()) - self.start


def split_holdout(
    pairs: Sequence[tuple[str, Path, Path]], fraction: float, max_pairs: int, seed: int = 0
) -> tuple[list[tuple[str, Path, Path]], list[tuple[str, Path, Path]]]:
    """Hold out a deterministic slice of the pairs for validation.

    Args:
        pairs: all training pairs.
        fraction: share to hold out (0 holds out nothing).
        max_pairs: cap on the held-out pairs.
        seed: chooses which pairs.

    Returns:
        ``(train_pairs, held_out_pairs)``, both in the input order.
    """
    count = min(max_pairs, int(round(fraction * len(pairs)))) if fraction > 0 else 0
    if fraction > 0 and len(pairs) >= 4:
        count = max(1, count)
    if count == 0:
        return list(pairs), []
    chosen = set(
        np.random.default_rng([seed, _HOLDOUT_STREAM]).permutation(len(pairs))[:count].tolist()
    )
    train = [p for i, p in enumerate(pairs) if i not in chosen]
    held = [p for i, p in enumerate(pairs) if i in chosen]
    return train, held


def pairs_with_masks(
    pairs: Sequence[tuple[str, Path, Path]], reader: MaskReader
) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """Keep the pairs that have masks with at least one object pixel (as the release did).

    Args:
        pairs: candidate pairs.
        reader: the mask store.

    Returns:
        ``(kept, missing_stems, empty_stems)``.
    """
    available = set(reader.stems())
    kept, missing, empty = [], [], []
    for pair in pairs:
        stem = pair[0]
        if stem not in available:
            missing.append(stem)
            continue
        mask_ir, mask_vi = reader.read(stem)
        if not (np.any(mask_ir) or np.any(mask_vi)):
            empty.append(stem)
            continue
        kept.append(pair)
    return kept, missing, empty


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: Ctrl-C is the main process's (it saves and stops), and
    one compute thread per worker (workers only decode and crop; N workers each taking
    every core would oversubscribe the CPU the training step needs)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
