"""The field's published fusion networks, each in occo's own code, loading its authors'
released weights unchanged (see ``occo methods``). Each module registers its network with
occo.models.registry when imported."""

from occo.data.lazy import refuse_bare_import

refuse_bare_import(__name__)  # the repository root is the package `occo` itself
