"""Training of the fusion network: the Trainer, its config, DDP, checkpoints and resume.

Kept apart from ``occo.models`` (the network and inference), as torchvision keeps its
reference training scripts apart from its model package.
"""

from occo.data.lazy import lazy_exports, refuse_bare_import

refuse_bare_import(__name__)  # the repository root is the package `occo` itself


# Names resolve on first use (PEP 562), the policy of every occo subpackage.
__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "occo.train.config": ("ConfigError", "TrainConfig", "load_config_file"),
        "occo.train.data": ("TrainingData", "prepare_training_data"),
        "occo.train.state": ("DivergedError", "TrainingError", "load_checkpoint"),
        "occo.train.trainer": ("TrainResult", "Trainer"),
    },
)
