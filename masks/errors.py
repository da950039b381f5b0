"""Errors of mask stores: each is one line naming the file and what to do."""

from __future__ import annotations

from occo.data.errors import OccoError


class MaskStoreError(OccoError, ValueError):
    """A mask store or journal that cannot be used as asked."""


class DamagedStoreError(MaskStoreError):
    """An HDF5 file that cannot be read any more (truncated, or corrupted on disk)."""


class SettingsMismatchError(MaskStoreError):
    """The store (or an interrupted run's journal) was made with other settings."""


class UnsafeStoreError(MaskStoreError):
    """A store whose data would come from outside it: external storage, links, virtual data."""


class BadMaskError(MaskStoreError):
    """A stored mask or detection list that is not what occo writes (shape, type, values)."""
