"""occo's command line: Typer commands over the occo library (no tensors, no math here)."""


if not __name__.startswith("occo."):  # the repository root is the package `occo` itself
    raise ImportError(
        f"import occo.{__name__}, not {__name__}: from the repository root, a bare "
        "subpackage name would load a second copy of occo's classes"
    )
