"""occo's command line: Typer commands over the occo library (no tensors, no math here)."""

from occo.data.lazy import refuse_bare_import

refuse_bare_import(__name__)  # the repository root is the package `occo` itself
