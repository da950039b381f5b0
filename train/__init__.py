"""Training of the fusion network: the Trainer, its config, DDP, checkpoints and resume.

Kept apart from ``occo.models`` (the network and inference), as torchvision keeps its
reference training scripts apart from its model package.
"""


if not __name__.startswith("occo."):  # the repository root is the package `occo` itself
    raise ImportError(
        f"import occo.{__name__}, not {__name__}: from the repository root, a bare "
        "subpackage name would load a second copy of occo's classes"
    )

from occo.data.lazy import lazy_exports  # noqa: E402

# Names resolve on first use (PEP 562), the policy of every occo subpackage.
__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "occo.train.config": ("ConfigError", "TrainConfig", "load_config_file"),
        "occo.train.state": ("DivergedError", "TrainingError", "load_checkpoint"),
        "occo.train.trainer": ("TrainResult", "Trainer"),
    },
)
