"""FIFN, the fusion network of OCCO: its blocks, weight files and the Fuser (inference)."""

from occo.models.checkpoint import (
    DEFAULT_WEIGHTS,
    WeightsError,
    convert_release_checkpoint,
    load_weights,
    read_weights_metadata,
    save_weights,
)
from occo.models.config import FIFNConfig
from occo.models.fifn import FIFN, count_parameters, fold_batchnorm, minmax_normalize
from occo.models.fuser import Fuser

__all__ = [
    "DEFAULT_WEIGHTS",
    "FIFN",
    "FIFNConfig",
    "Fuser",
    "WeightsError",
    "convert_release_checkpoint",
    "count_parameters",
    "fold_batchnorm",
    "load_weights",
    "minmax_normalize",
    "read_weights_metadata",
    "save_weights",
]
