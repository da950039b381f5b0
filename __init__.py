"""occo: LVM-guided infrared-visible image fusion (OCCO) as a library and a command line.

Installed, the repository's folders are subpackages of this one: ``occo.models`` (the
fusion network, checkpoints, inference), ``occo.train`` (training), ``occo.losses``,
``occo.masks``, ``occo.eval``, ``occo.data`` and ``occo.cli`` (the command line).
Nothing heavy is imported here, so ``import occo`` and ``occo --help`` stay fast.
"""

from occo.data.version import OCCO_VERSION as __version__

__all__ = ["__version__"]
