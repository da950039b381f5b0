"""Zero-shot segmentation rows, the twin of occo.eval.detect_rows: detector boxes of each
named class prompt SAM, the masks become a class map, and the map is scored against the
label maps; one library call per run of ``occo eval segment --segmenter``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from occo.data.errors import OccoError


class ZeroShotSetupError(OccoError, ValueError):
    """Zero-shot settings that cannot run (one line: what to give instead)."""


@dataclass
class ZeroShotSettings:
    """How the zero-shot rows are segmented (every field enters the cache key but the
    device and batch size)."""

    segmenter: str
    """SAM: hub id, folder or ``sam:KIND:PATH``."""
    detector: str = "IDEA-Research/grounding-dino-tiny"
    """Grounding DINO (hub id or folder) whose boxes prompt SAM."""
    box_threshold: float = 0.3
    """Boxes scoring above this prompt SAM."""
    background: int = 0
    """Class index of the pixels under no object mask."""
    batch_size: int = 2
    """Images per batch."""
    device: str = "auto"
    """auto, cpu, cuda, cuda:N."""
    dtype: str = "auto"
    """auto (float16 on GPU), float32, float16, bfloat16."""


def zero_shot_rows(
    plan: Sequence,
    truth: Mapping[str, Path],
    chosen: Sequence[int] | None,
    table: Mapping[int, str] | None,
    ignore: int | None,
    settings: ZeroShotSettings,
    cache: Path,
    progress: Callable[[str, int, int], None] | None = None,
    num_classes: int | None = None,
    note: Callable[[str], None] | None = None,
) -> list:
    """Segment and score each image row zero-shot (class maps cached per row and settings).

    Args:
        plan: the rows (occo.eval.rows).
        truth: stem -> label map.
        chosen: the class indices to prompt for.
        table: class index -> name (the prompt words).
        ignore: ground-truth value left out of the scores.
        settings: the models and thresholds.
        cache: the cache folder.
        progress: ``progress(row_name, done, total)``.
        num_classes: classes of the label maps, when known.
        note: where information lines go.

    Returns:
        One occo.eval.segmentation.SegmentRowResult per row.

    Raises:
        ZeroShotSetupError: no class names, or the background among the prompted classes.
    """
    from occo.eval.detectors import DetectorConfig, detector_settings, load_detector
    from occo.eval.rowcache import RowCache
    from occo.eval.segmentation import ZeroShotSegmenter, segment_row
    from occo.masks.generate import DTYPES, resolve_dtype
    from occo.masks.segmenter import load_segmenter, segmenter_source
    from occo.runtime import resolve_device

    say = note or (lambda text: None)
    if table is None or chosen is None:
        raise ZeroShotSetupError(
            "zero-shot segmentation prompts with class names: give --class-names FILE and --classes"
        )
    if settings.background in chosen:
        raise ZeroShotSetupError(
            f"--background {settings.background} is one of the prompted --classes; pick the "
            "unlabelled class"
        )
    try:
        device = resolve_device(settings.device)
        resolved = resolve_dtype(settings.dtype, device)
        config = DetectorConfig(settings.detector, settings.box_threshold, 100, resolved)
    except ValueError as exc:
        raise ZeroShotSetupError(str(exc)) from None
    names = [table[c] for c in chosen]
    class_index = {table[c]: c for c in chosen}
    key = {
        **detector_settings(config, names),
        "segmenter": segmenter_source(settings.segmenter),
        "class_index": class_index,
        "background": settings.background,
    }
    loaded: list = []

    def load() -> ZeroShotSegmenter:
        if not loaded:  # only when some image is not cached
            loaded.append(
                ZeroShotSegmenter(
                    load_detector(config, names, device),
                    load_segmenter(settings.segmenter, device=device, dtype=DTYPES[resolved]),
                    class_index,
                    settings.background,
                )
            )
            say(f"zero-shot: {config.model} boxes prompting {settings.segmenter} on {device} ({resolved})")
        return loaded[0]

    for row in plan:
        if row.origin == "manifest":
            say(f"{row.name}: {row.path} (source of an occo fuse folder; --no-sources leaves it out)")
    return [
        segment_row(
            row, truth, load, RowCache(cache, row.name, row.path, key, "segmentations"),
            ignore, settings.batch_size, progress, num_classes,
        )  # fmt: skip
        for row in plan
    ]


def binary_mask_labels(truth: Mapping[str, Path], sample: int = 8) -> bool:
    """True when the label maps hold only 0 and 255, as binary masks do (``occo masks
    export`` writes 0/255 PNGs): there 255 is the object class, not the "ignore" value of
    label maps such as Cityscapes'. Looks at up to ``sample`` maps."""
    import numpy as np

    from occo.data.io import read_image

    seen: set[int] = set()
    for path in list(truth.values())[:sample]:
        try:
            seen |= {int(v) for v in np.unique(read_image(path))}
        except (OSError, ValueError):
            return False  # the scorer names the unreadable file
        if not seen <= {0, 255}:
            return False
    return 255 in seen
