"""The field's published fusion networks, each in occo's own code, loading its authors'
released weights unchanged (see ``occo methods``). Each module registers its network with
occo.models.registry when imported."""


if not __name__.startswith("occo."):  # the repository root is the package `occo` itself
    raise ImportError(
        f"import occo.{__name__}, not {__name__}: from the repository root, a bare "
        "subpackage name would load a second copy of occo's classes"
    )
