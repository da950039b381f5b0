"""OCCO's training objective: VGG19 features, contextual similarity, the contextual
contrastive loss over object regions and the pixel losses; the paper's loss ablations and
CoCoNet's objective as presets (``occo.losses.objective.PRESETS``)."""

from occo.losses.coconet import CoupledContrastiveLoss, SelfAdaptivePixelLoss
from occo.losses.contextual import (
    ContextualDistance,
    ContextualSimilarity,
    contextual_distance,
    contextual_similarity,
)
from occo.losses.contrastive import (
    BatchGroupingError,
    ContextualContrastiveLoss,
    contextual_contrastive_loss,
)
from occo.losses.masked_intensity import MaskedIntensityLoss
from occo.losses.objective import PRESETS, FusionObjective, ObjectiveConfig
from occo.losses.pixel import SSIM, PixelLoss, intensity_loss, ssim, ssim_loss, texture_loss
from occo.losses.vgg import VGGFeatures, VGGWeightsError, build_vgg_features

__all__ = [
    "PRESETS",
    "SSIM",
    "BatchGroupingError",
    "ContextualContrastiveLoss",
    "ContextualDistance",
    "ContextualSimilarity",
    "CoupledContrastiveLoss",
    "FusionObjective",
    "MaskedIntensityLoss",
    "ObjectiveConfig",
    "PixelLoss",
    "SelfAdaptivePixelLoss",
    "VGGFeatures",
    "VGGWeightsError",
    "build_vgg_features",
    "contextual_contrastive_loss",
    "contextual_distance",
    "contextual_similarity",
    "intensity_loss",
    "ssim",
    "ssim_loss",
    "texture_loss",
]
