"""OCCO's training objective: VGG19 features, contextual similarity, the contextual
contrastive loss over object regions and the pixel losses; the paper's loss ablations and
CoCoNet's objective as presets (``occo.losses.objective.PRESETS``)."""

from occo.data.lazy import lazy_exports, refuse_bare_import

refuse_bare_import(__name__)  # the repository root is the package `occo` itself


# Names resolve on first use (PEP 562), the policy of every occo subpackage: importing
# one loss module (`occo.losses.pixel`) imports only what that module needs.
__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "occo.losses.coconet": (
            "CoupledContrastiveLoss",
            "SelfAdaptivePixelLoss",
        ),
        "occo.losses.contextual": (
            "ContextualDistance",
            "ContextualSimilarity",
            "contextual_distance",
            "contextual_similarity",
        ),
        "occo.losses.contrastive": (
            "BatchGroupingError",
            "ContextualContrastiveLoss",
            "contextual_contrastive_loss",
        ),
        "occo.losses.masked_intensity": ("MaskedIntensityLoss",),
        "occo.losses.objective": (
            "PRESETS",
            "FusionObjective",
            "ObjectiveConfig",
        ),
        "occo.losses.pixel": (
            "SSIM",
            "PixelLoss",
            "intensity_loss",
            "ssim",
            "ssim_loss",
            "texture_loss",
        ),
        "occo.losses.vgg": (
            "VGGFeatures",
            "VGGWeightsError",
            "build_vgg_features",
        ),
    },
)
