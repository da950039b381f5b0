"""The training objective: OCCO's L = L_pixel + 10 L_con, its ablations and CoCoNet's.

:class:`ObjectiveConfig` holds every weight and setting (defaults: the paper's values);
named presets (:data:`PRESETS`) give the OCCO paper's Table 8 ablations (Model-1 .. Model-5)
and CoCoNet's objective (``losses.coconet``); :class:`FusionObjective` computes the total
and its parts for logging. Whatever the preset, each image goes through VGG19 once per step
(anchors with gradients, all positives and negatives without).
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
from occo.losses.coconet import (
    COCONET_LAYERS,
    FOREGROUNDS,
    CoupledContrastiveLoss,
    SelfAdaptivePixelLoss,
)
from occo.losses.contextual import DEFAULT_MAX_POINTS
from occo.losses.contrastive import FEATURES, SPACES, ContextualContrastiveLoss, group_size
from occo.losses.masked_intensity import MaskedIntensityLoss
from occo.losses.pixel import PixelLoss
from occo.losses.vgg import LAYER_INDEX, VGGFeatures, build_vgg_features

#: Layers of OCCO's object terms: relu5_4, and relu4_4 at 0.25 (the release's).
OCCO_LAYERS = {"relu5_4": 1.0, "relu4_4": 0.25}
#: The last ReLU of each of VGG19's five blocks: the release's contextual criteria, three of
#: them commented out (relu3_4, relu2_2, relu1_2), weighted on from OCCO's 1 and 1/4 by
#: halving, as CoCoNet's layers are.
FIVE_BLOCK_LAYERS = {
    "relu5_4": 1.0,
    "relu4_4": 1.0 / 4.0,
    "relu3_4": 1.0 / 8.0,
    "relu2_2": 1.0 / 16.0,
    "relu1_2": 1.0 / 32.0,
}
#: The deep layers of the release's Euclidean contrastive loss (its ContrastiveLoss_L2).
GRAY_DEEP_LAYERS = {"relu5_1": 1.0, "relu4_1": 1.0 / 4.0}
#: All five layers of the release's Euclidean contrastive loss, with its weights.
GRAY_FIVE_LAYERS = {
    "relu5_1": 1.0,
    "relu4_1": 1.0 / 4.0,
    "relu3_1": 1.0 / 8.0,
    "relu2_1": 1.0 / 16.0,
    "relu1_1": 1.0 / 16.0,
}

_OCCO: dict[str, Any] = {
    "pixel_loss": "occo",
    "contrastive": "regions",
    "con_space": "contextual",
    "con_features": "imagenet",
    "con_layers": OCCO_LAYERS,
    "signed_inputs": False,
    "w_con": 10.0,
    "w": 0.5,
    "groups": 4,
}
#: Named objectives: each sets every field of :data:`PRESET_FIELDS`.
PRESETS: dict[str, dict[str, Any]] = {
    "occo": _OCCO,
    "pixel": {**_OCCO, "contrastive": "none"},
    "coconet": {
        "pixel_loss": "self_adaptive",
        "contrastive": "coupled",
        "con_space": "l1",
        "con_features": "gray",
        "con_layers": COCONET_LAYERS,
        "signed_inputs": True,
        "w_con": 1.0,
        "w": 0.5,
        "groups": 3,
    },
    "model1": {
        **_OCCO,
        "con_space": "euclidean",
        "con_features": "gray",
        "con_layers": GRAY_DEEP_LAYERS,
    },
    "model2": {**_OCCO, "con_layers": FIVE_BLOCK_LAYERS},
    "model3": {
        **_OCCO,
        "con_space": "euclidean",
        "con_features": "gray",
        "con_layers": GRAY_FIVE_LAYERS,
    },
    "model4": {**_OCCO, "contrastive": "masked_intensity"},
    "model5": {**_OCCO, "w": 0.0},
}
#: One line per preset, for help texts.
PRESET_DESCRIPTIONS = {
    "occo": "the paper's objective: pixel losses + 10 x contextual contrastive loss",
    "pixel": "pixel losses only (no masks, no VGG19)",
    "coconet": "CoCoNet's coupled contrastive (L1, gray VGG19) + self-adaptive pixel loss",
    "model1": "Table 8 Model-1: deep VGG19 features in Euclidean space",
    "model2": "Table 8 Model-2: all five VGG19 blocks in contextual space",
    "model3": "Table 8 Model-3: all five VGG19 layers in Euclidean space",
    "model4": "Table 8 Model-4: no contrastive form, masks on intensity losses (eq. 21)",
    "model5": "Table 8 Model-5: contextual space without its L2 term (w3 = 0)",
}
#: The fields a preset sets; a None value of these in an ObjectiveConfig takes the preset's.
PRESET_FIELDS = tuple(_OCCO)
#: Kept for callers of the old API: the preset names.
OBJECTIVES = tuple(PRESETS)
PIXEL_LOSSES = ("occo", "self_adaptive")
#: Forms of the mask-guided term (weighted by w_con): OCCO's contrastive loss over regions,
#: CoCoNet's coupled one, the masked intensity loss of Model-4, or none.
CONTRASTIVE_FORMS = ("regions", "coupled", "masked_intensity", "none")
#: Settings from before layers were a setting: name -> layer.
_LEGACY_LAYER_KEYS = {"w_relu5_4": "relu5_4", "w_relu4_4": "relu4_4"}


class ObjectiveConfigError(OccoError, ValueError):
    """An invalid loss setting; the message names it."""


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ObjectiveConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


@dataclass
class ObjectiveConfig:
    """Weights and settings of the training objective (defaults: the paper's).

    ``objective`` names a preset (:data:`PRESETS`); every field it sets that is left None
    takes the preset's value, so ``ObjectiveConfig(objective="model3", w_con=5.0)`` is
    Model-3 with w6 = 5. After construction no field is None: the config is complete. To
    switch a complete config's preset, merge its settings with :meth:`with_preset`
    (``dataclasses.replace`` would keep the old preset's values under the new name).
    """

    objective: str = "occo"
    """Preset: occo, pixel, coconet, or model1 .. model5 (the paper's Table 8); fills the
    fields below marked "preset" that are not given."""
    pixel_loss: str | None = None
    """(preset) "occo" (SSIM + intensity + texture) or "self_adaptive" (CoCoNet's)."""
    contrastive: str | None = None
    """(preset) The mask-guided term, weighted by w_con: "regions" (OCCO's contrastive loss
    over object regions), "coupled" (CoCoNet's), "masked_intensity" (Model-4) or "none"."""
    con_space: str | None = None
    """(preset) Feature distance of the contrastive loss: "contextual" (-log CX),
    "euclidean" (mean squared error) or "l1" (mean absolute error, CoCoNet's)."""
    con_features: str | None = None
    """(preset) VGG19 input of the contrastive loss: "imagenet" (gray repeated to RGB,
    ImageNet-normalised) or "gray" (conv1_1 collapsed to gray, no normalisation)."""
    con_layers: dict[str, float] | None = None
    """(preset) VGG19 layers of the contrastive loss's object terms (relu1_1 .. relu5_4)
    with their weights; occo: relu5_4 1, relu4_4 0.25."""
    signed_inputs: bool | None = None
    """(preset) The contrastive loss (and CoCoNet's MSE and gradients) sees images mapped
    from [0, 1] to [-1, 1], as CoCoNet trained."""
    w_ssim: float = 1.0
    """Weight of L_ssim = (1 - SSIM(vi, f)) + (1 - SSIM(ir, f))."""
    w_intensity: float = 10.0
    """Weight of the intensity loss (the paper's w4)."""
    w_texture: float = 1.0
    """Weight of the Sobel texture loss (the paper's w5)."""
    w_con: float | None = None
    """(preset) Weight of the mask-guided term in the total (the paper's w6; Table 7)."""
    w_unique_vi: float = 1.0
    """Weight of the visible-only object term."""
    w_unique_ir: float = 1.0
    """Weight of the infrared-only object term."""
    w_shared_vi: float = 0.5
    """Weight of the shared-object term with the visible image as positive (w1; Table 6)."""
    w_shared_ir: float = 0.5
    """Weight of the shared-object term with the infrared image as positive (w2; Table 6)."""
    w_background: float = 1.0 / 16.0
    """Weight of the background MSE-ratio term (the release's 1/16)."""
    groups: int | None = None
    """(preset) Equal groups the batch is split into; group 1 gives anchors, all give
    negatives (occo: 4, CoCoNet: 3)."""
    h: float = 1.0
    """Contextual band width (the release's effective value)."""
    w: float | None = None
    """(preset) Weight of the squared-L2 contextual similarity; 1 - w weights the cosine one
    (the paper's w3; Model-5: 0)."""
    max_points: int = DEFAULT_MAX_POINTS
    """Feature maps with more points are randomly sub-sampled to this many (65^2)."""
    vgg_weights: str | None = None
    """Local VGG19 state dict; None: torchvision's ImageNet weights from the torch hub cache."""
    ssim_window: int = 11
    """SSIM Gaussian window side."""
    ssim_sigma: float = 1.5
    """SSIM Gaussian standard deviation."""
    coconet_foreground: str = "infrared"
    """CoCoNet's salient mask from occo's masks: "infrared" (the infrared object mask, as
    CoCoNet's masks mark the infrared image's targets) or "objects" (both modalities')."""
    coconet_c1: float = 0.5
    """CoCoNet's temperature factor of the gradient-based SSIM weights."""
    coconet_c2: float = 0.5
    """CoCoNet's temperature factor of the entropy-based MSE weights."""
    coconet_w_ssim: float = 20.0
    """Weight of the SSIM part of CoCoNet's self-adaptive pixel loss."""
    coconet_w_mse: float = 1.0
    """Weight of the MSE part of CoCoNet's self-adaptive pixel loss."""

    def __post_init__(self) -> None:
        _choice("objective", self.objective, tuple(PRESETS))
        for name, value in PRESETS[self.objective].items():
            if getattr(self, name) is None:
                setattr(self, name, dict(value) if isinstance(value, dict) else value)
        _choice("pixel_loss", self.pixel_loss, PIXEL_LOSSES)
        _choice("contrastive", self.contrastive, CONTRASTIVE_FORMS)
        _choice("con_space", self.con_space, SPACES)
        _choice("con_features", self.con_features, FEATURES)
        _choice("coconet_foreground", self.coconet_foreground, FOREGROUNDS)
        self.con_layers = self._checked_layers(self.con_layers)
        if not isinstance(self.signed_inputs, bool):
            raise ObjectiveConfigError(
                f"signed_inputs must be true or false, got {self.signed_inputs!r}"
            )
        for field in dataclasses.fields(self):
            if field.name.startswith(("w_", "coconet_w_")) and not getattr(self, field.name) >= 0:
                raise ObjectiveConfigError(f"loss weight {field.name} must be >= 0")
        if not self.h > 0:
            raise ObjectiveConfigError(f"h (band width) must be > 0, got {self.h}")
        if not 0.0 <= self.w <= 1.0:
            raise ObjectiveConfigError(f"w (L2 weight) must be in [0, 1], got {self.w}")
        if self.max_points < 1 or self.groups < 1:
            raise ObjectiveConfigError("max_points and groups must be >= 1")
        if self.ssim_window < 1 or self.ssim_window % 2 == 0 or not self.ssim_sigma > 0:
            raise ObjectiveConfigError("ssim_window must be odd and positive, ssim_sigma > 0")
        if not (self.coconet_c1 > 0 and self.coconet_c2 > 0):
            raise ObjectiveConfigError("coconet_c1 and coconet_c2 must be > 0")
        if isinstance(self.vgg_weights, Path):
            self.vgg_weights = str(self.vgg_weights)

    @staticmethod
    def _checked_layers(layers: Any) -> dict[str, float]:
        """The layer weights, validated, deepest layer first (a fixed summation order)."""
        if not isinstance(layers, Mapping) or not layers:
            raise ObjectiveConfigError(
                f"con_layers must map VGG19 layer names to weights, got {layers!r}"
            )
        unknown = sorted(set(layers) - set(LAYER_INDEX))
        if unknown:
            raise ObjectiveConfigError(
                f"unknown VGG19 layer(s) in con_layers: {', '.join(unknown)}; known: "
                f"{', '.join(LAYER_INDEX)}"
            )
        out = {}
        for name in sorted(layers, key=LAYER_INDEX.__getitem__, reverse=True):
            weight = layers[name]
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
                raise ObjectiveConfigError(
                    f"con_layers[{name}] must be a number >= 0, got {weight!r}"
                )
            out[name] = float(weight)
        return out

    @property
    def needs_masks(self) -> bool:
        """The objective has a mask-guided term (it needs object masks)."""
        return self.contrastive != "none"

    @property
    def needs_groups(self) -> bool:
        """The objective contrasts against other crops: batches come in equal groups."""
        return self.contrastive in ("regions", "coupled")

    @property
    def needs_vgg(self) -> bool:
        """The objective computes VGG19 features."""
        return self.contrastive in ("regions", "coupled")

    @classmethod
    def upgrade(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """A settings mapping with the keys of older occo versions renamed.

        ``w_relu5_4`` and ``w_relu4_4`` (the object terms' layer weights before the layers
        became a setting) become ``con_layers``.

        Args:
            values: field name -> value (a YAML section, a checkpoint's config).

        Returns:
            A new mapping with current field names.
        """
        values = dict(values)
        legacy = {k: values.pop(k) for k in _LEGACY_LAYER_KEYS if k in values}
        if legacy and values.get("con_layers") is None:
            layers = dict(OCCO_LAYERS)
            layers.update({_LEGACY_LAYER_KEYS[k]: v for k, v in legacy.items()})
            values["con_layers"] = layers
        return values

    @classmethod
    def with_preset(cls, base: Mapping[str, Any], layer: Mapping[str, Any]) -> dict[str, Any]:
        """``base`` updated by ``layer`` (None values ignored), presets taken into account.

        When ``layer`` names another preset than ``base``, the preset's fields of ``base``
        are dropped first, so that the new preset sets them (unless ``layer`` does).

        Args:
            base: settings so far (e.g. a resolved config's dict).
            layer: settings given on top (a YAML section, command-line options).

        Returns:
            The merged settings.
        """
        merged = cls.upgrade(base)
        layer = cls.upgrade({k: v for k, v in layer.items() if v is not None})
        preset = layer.get("objective")
        if preset is not None and preset != merged.get("objective", "occo"):
            merged = {k: v for k, v in merged.items() if k not in PRESET_FIELDS}
        return {**merged, **layer}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ObjectiveConfig:
        """A config from a mapping (a YAML section), refusing unknown keys by name.

        Args:
            values: field name -> value; ``objective`` names the preset that fills the
                preset fields not given.

        Returns:
            The validated config.
        """
        values = cls.upgrade(values)
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
        if self.needs_groups:
            group_size(batch_size, self.groups)


class FusionObjective(nn.Module):
    """L = L_pixel + w_con L_con, returning its parts for logging.

    L_pixel is OCCO's pixel loss or CoCoNet's self-adaptive one, L_con the configured
    mask-guided term (``config.contrastive``).

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
        self.pixel: nn.Module
        if config.pixel_loss == "occo":
            self.pixel = PixelLoss(
                config.w_ssim,
                config.w_intensity,
                config.w_texture,
                config.ssim_window,
                config.ssim_sigma,
            )
        else:
            self.pixel = SelfAdaptivePixelLoss(
                config.coconet_w_ssim,
                config.coconet_w_mse,
                config.coconet_c1,
                config.coconet_c2,
                config.signed_inputs,
                config.ssim_window,
                config.ssim_sigma,
            )
        if config.needs_vgg and vgg is None:
            vgg = build_vgg_features(config.vgg_weights, device=device, dtype=dtype)
        term_weights = {
            "unique_vi": config.w_unique_vi,
            "unique_ir": config.w_unique_ir,
            "shared_vi": config.w_shared_vi,
            "shared_ir": config.w_shared_ir,
            "background": config.w_background,
        }
        self.contrastive: nn.Module | None = None
        if config.contrastive == "regions":
            self.contrastive = ContextualContrastiveLoss(
                vgg,
                groups=config.groups,
                term_weights=term_weights,
                layer_weights=config.con_layers,
                h=config.h,
                w=config.w,
                max_points=config.max_points,
                space=config.con_space,
                features=config.con_features,
            )
        elif config.contrastive == "coupled":
            self.contrastive = CoupledContrastiveLoss(
                vgg,
                foreground=config.coconet_foreground,
                groups=config.groups,
                layer_weights=config.con_layers,
                space=config.con_space,
                features=config.con_features,
                h=config.h,
                w=config.w,
                max_points=config.max_points,
            )
        elif config.contrastive == "masked_intensity":
            self.contrastive = MaskedIntensityLoss(term_weights)

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
            to the graph; detach them for logging): ``pixel`` and its parts (``ssim``,
            ``intensity``, ``texture``; CoCoNet's: ``ssim``, ``mse``) and, with a
            mask-guided term, ``con`` and ``con_<term>`` per term. ``pixel`` and ``con`` are
            weighted sums of their unweighted parts.
        """
        check_gray_batches(fused=fused, vi_y=vi_y, ir=ir)
        vi_y, ir = vi_y.detach(), ir.detach()  # the sources are targets, not parameters
        pixel, parts = self.pixel(fused, vi_y, ir)
        parts = {"pixel": pixel, **parts}
        total = pixel
        if self.contrastive is not None:
            if regions is None:
                raise ValueError(
                    f'the "{self.config.objective}" objective needs regions (object masks); '
                    'use objective="pixel" to train without them'
                )
            images = (fused, vi_y, ir)
            if self.config.signed_inputs:  # CoCoNet's images were normalised to [-1, 1]
                images = tuple(2.0 * x - 1.0 for x in images)
            con, con_parts = self.contrastive(*images, regions)
            parts["con"] = con
            parts.update({f"con_{name}": value for name, value in con_parts.items()})
            total = total + self.config.w_con * con
        return total, parts
