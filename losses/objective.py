"""The training objective of OCCO: L = L_pixel + 10 L_con (the paper's eq. for the total loss).

:class:`ObjectiveConfig` holds every weight and setting (defaults: the paper's values);
:class:`FusionObjective` computes the total and its parts for logging.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from occo.data.errors import OccoError
from occo.data.normalize import check_gray_batches
from occo.losses.contextual import DEFAULT_MAX_POINTS
from occo.losses.contrastive import ContextualContrastiveLoss, group_size
from occo.losses.pixel import PixelLoss
from occo.losses.vgg import VGGFeatures, build_vgg_features

OBJECTIVES = ("occo", "pixel")


class ObjectiveConfigError(OccoError, ValueError):
    """An invalid loss setting; the message names it."""


@dataclass
class ObjectiveConfig:
    """Weights and settings of the training objective (defaults: the paper's)."""

    objective: str = "occo"
    """"occo" (pixel losses plus the contextual contrastive loss) or "pixel" (no masks)."""
    w_ssim: float = 1.0
    """Weight of L_ssim = (1 - SSIM(vi, f)) + (1 - SSIM(ir, f))."""
    w_intensity: float = 10.0
    """Weight of the intensity loss (the paper's w4)."""
    w_texture: float = 1.0
    """Weight of the Sobel texture loss (the paper's w5)."""
    w_con: float = 10.0
    """Weight of the contextual contrastive loss in the total (the paper's w6)."""
    w_unique_vi: float = 1.0
    """Weight of the visible-only object term."""
    w_unique_ir: float = 1.0
    """Weight of the infrared-only object term."""
    w_shared_vi: float = 0.5
    """Weight of the shared-object term with the visible image as positive (w1)."""
    w_shared_ir: float = 0.5
    """Weight of the shared-object term with the infrared image as positive (w2)."""
    w_background: float = 1.0 / 16.0
    """Weight of the background MSE-ratio term (the release's 1/16)."""
    w_relu5_4: float = 1.0
    """Weight of the relu5_4 contextual ratio in each object term."""
    w_relu4_4: float = 0.25
    """Weight of the relu4_4 contextual ratio in each object term."""
    groups: int = 4
    """Equal groups the batch is split into; group 1 gives anchors, all give negatives."""
    h: float = 1.0
    """Contextual band width (the release's effective value)."""
    w: float = 0.5
    """Weight of the squared-L2 contextual similarity; 1 - w weights the cosine one (w3)."""
    max_points: int = DEFAULT_MAX_POINTS
    """Feature maps with more points are randomly sub-sampled to this many (65^2)."""
    vgg_weights: str | None = None
    """Local VGG19 state dict; None: torchvision's ImageNet weights from the torch hub cache."""
    ssim_window: int = 11
    """SSIM Gaussian window side."""
    ssim_sigma: float = 1.5
    """SSIM Gaussian standard deviation."""

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ObjectiveConfigError(
                f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}"
            )
        for field in dataclasses.fields(self):
            if field.name.startswith("w_") and not getattr(self, field.name) >= 0:
                raise ObjectiveConfigError(f"loss weight {field.name} must be >= 0")
        if not self.h > 0:
            raise ObjectiveConfigError(f"h (band width) must be > 0, got {self.h}")
        if not 0.0 <= self.w <= 1.0:
            raise ObjectiveConfigError(f"w (L2 weight) must be in [0, 1], got {self.w}")
        if self.max_points < 1 or self.groups < 1:
            raise ObjectiveConfigError("max_points and groups must be >= 1")
        if self.ssim_window < 1 or self.ssim_window % 2 == 0 or not self.ssim_sigma > 0:
            raise ObjectiveConfigError("ssim_window must be odd and positive, ssim_sigma > 0")
        if isinstance(self.vgg_weights, Path):
            self.vgg_weights = str(self.vgg_weights)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ObjectiveConfig:
        """A config from a mapping (a YAML section), refusing unknown keys by name.

        Args:
            values: field name -> value.

        Returns:
            The validated config.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ObjectiveConfigError(
                f"unknown loss setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**values)

    def check_batch_size(self, batch_size: int) -> None:
        """Raise a clear error now if the contrastive loss could not group this batch size.

        Args:
            batch_size: training batch size.
        """
        if self.objective == "occo":
            group_size(batch_size, self.groups)


class FusionObjective(nn.Module):
    """L = L_pixel + w_con L_con, returning its parts for logging.

    Args:
        config: weights and settings.
        vgg: the feature extractor; built from ``config.vgg_weights`` when None and the
            objective needs it (pass one with ``random_init=True`` in tests).
        device: device of a VGG19 built here.
        dtype: dtype of a VGG19 built here.
    """

    def __init__(
        self,
        config: ObjectiveConfig | None = None,
        vgg: VGGFeatures | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.config = config = config or ObjectiveConfig()
        self.pixel = PixelLoss(
            config.w_ssim,
            config.w_intensity,
            config.w_texture,
            config.ssim_window,
            config.ssim_sigma,
        )
        self.contrastive: ContextualContrastiveLoss | None = None
        if config.objective == "occo":
            if vgg is None:
                vgg = build_vgg_features(config.vgg_weights, device=device, dtype=dtype)
            self.contrastive = ContextualContrastiveLoss(
                vgg,
                groups=config.groups,
                term_weights={
                    "unique_vi": config.w_unique_vi,
                    "unique_ir": config.w_unique_ir,
                    "shared_vi": config.w_shared_vi,
                    "shared_ir": config.w_shared_ir,
                    "background": config.w_background,
                },
                layer_weights={"relu5_4": config.w_relu5_4, "relu4_4": config.w_relu4_4},
                h=config.h,
                w=config.w,
                max_points=config.max_points,
            )

    def forward(
        self, fused: torch.Tensor, vi_y: torch.Tensor, ir: torch.Tensor, regions: Any = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its parts.

        Args:
            fused: ``(B, 1, H, W)`` fused image in [0, 1]; the only input that gets gradients.
            vi_y: ``(B, 1, H, W)`` visible Y in [0, 1].
            ir: ``(B, 1, H, W)`` infrared in [0, 1].
            regions: ``shared``, ``unique_vi``, ``unique_ir``, ``background`` masks, each
                ``(B, 1, H, W)`` 0/1 (e.g. ``masks.regions.Regions``); unused (may be None)
                for the "pixel" objective.

        Returns:
            ``(total, parts)``: the scalar to minimise and a dict of scalars (still attached
            to the graph; detach them for logging): ``pixel``, ``ssim``, ``intensity``,
            ``texture`` and, for "occo", ``con`` and ``con_<term>`` per contrastive term.
            ``pixel`` and ``con`` are weighted sums of their unweighted parts.
        """
        check_gray_batches(fused=fused, vi_y=vi_y, ir=ir)
        vi_y, ir = vi_y.detach(), ir.detach()  # the sources are targets, not parameters
        pixel, parts = self.pixel(fused, vi_y, ir)
        parts = {"pixel": pixel, **parts}
        total = pixel
        if self.contrastive is not None:
            if regions is None:
                raise ValueError('the "occo" objective needs regions (or use objective="pixel")')
            con, con_parts = self.contrastive(fused, vi_y, ir, regions)
            parts["con"] = con
            parts.update({f"con_{name}": value for name, value in con_parts.items()})
            total = total + self.config.w_con * con
        return total, parts
