"""The fusion networks (FIFN and the registered peers), their weight files, the network
registry, the Fuser (inference) and fuse_folder (the ``occo fuse`` workflow)."""

from occo.data.lazy import lazy_exports, refuse_bare_import

refuse_bare_import(__name__)  # the repository root is the package `occo` itself


# Names resolve on first use (PEP 562), the policy of every occo subpackage.
__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "occo.models.checkpoint": (
            "DEFAULT_WEIGHTS",
            "WeightsError",
            "convert_release_checkpoint",
            "load_method",
            "load_weights",
            "read_weights_metadata",
            "save_weights",
        ),
        "occo.models.config": ("FIFNConfig",),
        "occo.models.fifn": ("FIFN", "count_parameters", "fold_batchnorm", "minmax_normalize"),
        "occo.models.fuser": ("FileFuser", "Fuser"),
        "occo.models.fusing": ("FuseResult", "FuseSettings", "fuse_folder"),
        "occo.models.registry": (
            "NetworkSpec",
            "get_network",
            "network_names",
            "register_network",
        ),
    },
)
