"""Alignment of a video: one transform for the whole stream, or one every N frames.

Two cameras of a rig are fixed to each other, so one transform holds for the whole video;
estimating it on every frame would cost a second per frame and make the picture jitter.
:class:`StreamAligner` estimates it on the first frame pair whose alignment is decided
(warped, or found already aligned) and warps every later frame with it. A stream whose
pairs are unreliable to begin with (dark, or blank frames) is tried again every
``UNDECIDED_RETRY_FRAMES`` frames; its frames until then are fused as they are. With
``every=N`` the transform is estimated again on frames N, 2N, ... (cameras that move
against each other, a zoom); a re-estimate that is unreliable keeps the transform before.
"""

from __future__ import annotations

import numpy as np

from occo.data.align import AlignSettings, align_arrays, warp_infrared

#: Frames between tries while no frame pair has given a decided alignment.
UNDECIDED_RETRY_FRAMES = 25


def _decided(record: dict) -> bool:
    """Whether a record settles the transform: warped, or found already aligned."""
    return bool(record.get("aligned")) or str(record.get("left_alone", "")).startswith(
        "already aligned"
    )


class StreamAligner:
    """Aligns the infrared frames of one stream onto the visible ones (see the module).

    Args:
        settings: how each estimate aligns (:class:`AlignSettings`).
        every: estimate again every this many frames; None: once per stream.
    """

    def __init__(self, settings: AlignSettings | None = None, every: int | None = None) -> None:
        if every is not None and every < 1:
            raise ValueError(f"every must be at least 1 frame, not {every}")
        self.settings = settings or AlignSettings()
        self.every = every
        self.records: list[dict] = []
        """Each estimate's record (:meth:`occo.data.align.Alignment.record`) with
        ``from_frame`` (the frame it was made on) and ``used`` (whether later frames were
        warped by it, or by the transform before)."""
        self.warped_frames = 0
        """Frames warped so far."""
        self._matrix: np.ndarray | None = None  # None: fused as they are
        self._decided = False
        self._last_try: int | None = None

    def _due(self, k: int) -> bool:
        if self._last_try is None:
            return True
        wait = self.every if self._decided else min(self.every or UNDECIDED_RETRY_FRAMES,
                                                    UNDECIDED_RETRY_FRAMES)  # fmt: skip
        return wait is not None and k - self._last_try >= wait

    def align(self, k: int, ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
        """Frame ``k``'s infrared image aligned onto its visible one.

        Args:
            k: the frame's index in the output (0, 1, ... in order).
            ir: infrared frame, as :func:`occo.data.align.align_arrays` takes it.
            vi: visible frame of the same size.

        Returns:
            The aligned infrared frame (``ir`` itself when it is left as it is).
        """
        if self._due(k):
            self._last_try = k
            aligned, record = align_arrays(ir, vi, self.settings)
            used = _decided(record)
            self.records.append({"from_frame": k, "used": used, **record})
            if used:
                self._decided = True
                self._matrix = (
                    np.asarray(record["matrix"], np.float64) if record["aligned"] else None
                )
                self.warped_frames += bool(record["aligned"])
                return aligned
        if self._matrix is None:
            return ir
        self.warped_frames += 1
        return warp_infrared(ir, vi, self._matrix, self.settings.border)[0]

    def summary(self) -> dict:
        """For the run's record: settings, how often estimated, frames warped, estimates."""
        from dataclasses import asdict

        return {
            "settings": asdict(self.settings),
            "every": self.every,
            "warped_frames": self.warped_frames,
            "matrix": "2x3, visible pixel (x, y, 1) -> infrared pixel; aligned(p) = ir(matrix @ p)",
            "estimates": self.records,
        }
