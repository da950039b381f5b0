"""OCCO's training objective: VGG19 features, contextual similarity, the contextual
contrastive loss over object regions and the pixel losses (the OCCO paper, Section 3)."""

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
from occo.losses.objective import FusionObjective, ObjectiveConfig
from occo.losses.pixel import SSIM, PixelLoss, intensity_loss, ssim, ssim_loss, texture_loss
from occo.losses.vgg import VGGFeatures, VGGWeightsError, build_vgg_features

__all__ = [
    "SSIM",
    "BatchGroupingError",
    "ContextualContrastiveLoss",
    "ContextualDistance",
    "ContextualSimilarity",
    "FusionObjective",
    "ObjectiveConfig",
    "PixelLoss",
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
