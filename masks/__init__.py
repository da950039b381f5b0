"""Object masks for OCCO: Grounding DINO + SAM (or label maps) into an HDF5 store.

The trainer needs only :func:`open_mask_store` and :func:`split_regions`; the models are
imported when mask generation starts, never at ``import masks``.
"""

from occo.data.lazy import refuse_bare_import

refuse_bare_import(__name__)  # the repository root is the package `occo` itself

from occo.masks.regions import Regions, split_regions
from occo.masks.store import (
    BadMaskError,
    DamagedStoreError,
    MaskReader,
    MaskStoreError,
    ModalityMasks,
    PairMasks,
    SettingsMismatchError,
    UnsafeStoreError,
    open_mask_store,
)

__all__ = [
    "BadMaskError",
    "DamagedStoreError",
    "MaskReader",
    "MaskStoreError",
    "ModalityMasks",
    "PairMasks",
    "Regions",
    "SettingsMismatchError",
    "UnsafeStoreError",
    "open_mask_store",
    "split_regions",
]
