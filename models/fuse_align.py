"""``FuseSettings.align``: each infrared image warped onto its visible one before fusing.

A :class:`FileFuser` whose reader threads, after reading and preparing a pair (and after
the registration check, whose estimate they reuse), align the prepared infrared image in
place with :func:`occo.data.align.align_arrays`. Each pair's record (transform, confidence,
residual, border filled, or why it was left alone) goes into the PNG written for it, under
the text key ``occo-align``, and into :attr:`AligningFileFuser.records` for the manifest.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path

from occo.data.align import AlignSettings, align_arrays
from occo.data.io import read_png_text
from occo.models.fuser import FileFuser, FuseJob

#: PNG text key of each fused image's alignment record.
ALIGN_KEY = "occo-align"


class AligningFileFuser(FileFuser):
    """:class:`FileFuser` that aligns every pair in the reader threads (see the module).

    Args:
        *args, **kwargs: as for :class:`FileFuser`.
        align_settings: how to align (default :class:`AlignSettings`).
    """

    def __init__(self, *args, align_settings: AlignSettings | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.align_settings = align_settings or AlignSettings()
        self.records: dict[str, dict] = {}

    def _read(self, job: FuseJob):  # noqa: ANN202 - FileFuser's
        pair, error, seconds = super()._read(job)
        if pair is None:
            return pair, error, seconds
        start = time.perf_counter()
        from occo.data.registration import Registration

        estimate = self._inspections.get(job.stem)  # the registration check's, when it ran
        ir = pair.ir[0].numpy()  # (H, W) float32 in [0, 1], the tensor's own memory
        vi = pair.vi.permute(1, 2, 0).numpy()
        vi = vi[..., 0] if vi.shape[2] == 1 else vi
        aligned, record = align_arrays(ir, vi, self.align_settings, measure_residual=True,
                                       estimate=estimate if isinstance(estimate, Registration) else None)  # fmt: skip
        if record.get("aligned"):
            ir[...] = aligned
        self.records[job.stem] = record
        job.text = {**(job.text or {}), ALIGN_KEY: json.dumps(record)}
        return pair, error, seconds + time.perf_counter() - start


def alignment_record(records: Mapping[str, dict], done: list[tuple[str, Path]]) -> dict:
    """For the manifest: the settings and every fused pair's alignment.

    Args:
        records: this run's records by stem.
        done: (stem, output path) of every output in the folder; those made by an earlier
            run have their record read from the PNG.
    """
    from dataclasses import asdict

    pairs = {}
    for stem, path in done:
        record = records.get(stem)
        if record is None:
            try:
                record = json.loads(read_png_text(path).get(ALIGN_KEY, "null"))
            except ValueError:
                record = None
        if record is not None:
            pairs[stem] = record
    return {
        "settings": asdict(AlignSettings()),
        "matrix": "2x3, visible pixel (x, y, 1) -> infrared pixel; aligned(p) = ir(matrix @ p)",
        "aligned": sorted(s for s, r in pairs.items() if r.get("aligned")),
        "left_alone": {s: r.get("left_alone") for s, r in sorted(pairs.items()) if not r.get("aligned")},
        "pairs": dict(sorted(pairs.items())),
    }


def summary(records: Mapping[str, dict]) -> str | None:
    """One line: how many pairs this run warped and left alone (None when none ran)."""
    if not records:
        return None
    warped = sum(bool(r.get("aligned")) for r in records.values())
    return (f"--align: {warped} of {len(records)} infrared image(s) warped onto the visible one "
            f"before fusing, {len(records) - warped} left as they were (occo-fuse.json says why)")  # fmt: skip
