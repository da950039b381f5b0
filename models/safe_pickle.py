"""Read torch zip checkpoints that pickle foreign classes, without running their code.

A torch ``.pt`` file is a zip archive: ``<name>/data.pkl`` (a pickle) and the tensor
bytes in ``<name>/data/<key>``. Checkpoints such as Ultralytics' pickle whole model
objects (``models.yolo.Model``, ...); unpickling them normally imports those classes and
calls whatever the pickle names, which is arbitrary code. This reader never imports a
module: the tensor-rebuild functions, ``OrderedDict``, sets, ``torch.Size``/dtypes and
the storage types map to occo's own tensor rebuilding; every other class becomes an
:class:`Inert` stand-in that only records its pickled state (so a model's module tree,
its yaml/config dict and tensors can be read). A pickle that asks to *call* anything
else (``os.system``, ``builtins.eval``, a class constructor, ...) is refused with
:class:`UnsafeCheckpointError`; nothing is called.

Usage::

    tree = read_foreign_checkpoint("yolov5n.pt")     # dict of Inert objects and tensors
    weights = state_dict_of(tree["model"])           # "model.0.conv.weight" -> tensor
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from occo.data.errors import OccoError


class CheckpointError(OccoError, ValueError):
    """A file that is not a readable torch zip checkpoint (not a zip, truncated, bad tensors)."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint whose pickle asks to call code other than tensor rebuilding."""


class _Refused(Exception):
    """Raised inside the unpickler; turned into UnsafeCheckpointError naming the file."""


class Inert:
    """Stand-in for an instance of a class occo does not import: its pickled state only.

    Attributes from the pickle's state (e.g. ``_modules``, ``_parameters``, ``yaml`` of a
    torch module) are plain attributes; :attr:`occo_class` is the class's dotted name.
    """

    occo_class = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Inert:
        obj = object.__new__(cls)
        if args or kwargs:
            obj.__dict__["occo_new_args"] = (args, kwargs)
        return obj

    def __setstate__(self, state: Any) -> None:
        slots = None
        if isinstance(state, tuple) and len(state) == 2:
            state, slots = state
        for part in (state, slots):
            if isinstance(part, dict):
                self.__dict__.update({str(k): v for k, v in part.items()})
            elif part is not None:
                self.__dict__["occo_state"] = part

    def __repr__(self) -> str:
        return f"<inert {self.occo_class}>"


class _ForeignType(type):
    """Metaclass of stand-in classes: calling one (REDUCE, INST, OBJ) is refused."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise _Refused(cls.occo_class)


_FOREIGN: dict[str, type] = {}


def _foreign(module: str, name: str) -> type:
    dotted = f"{module}.{name}"
    if dotted not in _FOREIGN:
        _FOREIGN[dotted] = _ForeignType(name, (Inert,), {"occo_class": dotted})
    return _FOREIGN[dotted]


def class_name(obj: Any) -> str:
    """The dotted class name an object was pickled as (stand-ins and real objects alike)."""
    if isinstance(obj, Inert):
        return obj.occo_class
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


class _StorageType:
    """What a ``torch.<X>Storage`` global stands for here: its element dtype."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


class _Storage:
    """One storage of the archive as a flat tensor."""

    def __init__(self, flat: torch.Tensor) -> None:
        self.flat = flat


_STORAGE_DTYPES = {
    "HalfStorage": torch.float16, "FloatStorage": torch.float32, "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16, "ByteStorage": torch.uint8, "CharStorage": torch.int8,
    "ShortStorage": torch.int16, "IntStorage": torch.int32, "LongStorage": torch.int64,
    "BoolStorage": torch.bool, "UntypedStorage": torch.uint8,
}  # fmt: skip


def _ints(values: Any, what: str) -> tuple[int, ...]:
    if not isinstance(values, (tuple, list, torch.Size)) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in values
    ):
        raise pickle.UnpicklingError(f"tensor {what} is not a tuple of integers")
    return tuple(values)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> torch.Tensor:
    if not isinstance(storage, _Storage) or not isinstance(offset, int) or offset < 0:
        raise pickle.UnpicklingError("a tensor without a valid storage")
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    if len(size) != len(stride) or any(v < 0 for v in size + stride):
        raise pickle.UnpicklingError("tensor size and stride do not match")
    extent = (
        0 if 0 in size else offset + 1 + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    )
    if extent > storage.flat.numel():
        raise pickle.UnpicklingError("a tensor reaches past the end of its storage")
    return storage.flat.as_strided(size, stride, offset)


def _rebuild_parameter(data: Any, requires_grad: Any = False, *_: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("a parameter without tensor data")
    return data


def _rebuild_from_type(func: Any, new_type: Any, args: Any, state: Any = None) -> torch.Tensor:
    if func not in (_rebuild_tensor, _rebuild_parameter) or not isinstance(args, tuple):
        raise _Refused("torch._tensor._rebuild_from_type_v2 with a foreign function")
    return func(*args)


def _path_parts(*parts: Any) -> str:
    """``pathlib`` paths (in training options) become plain strings."""
    return "/".join(str(p) for p in parts)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """numpy's own array and scalar rebuilding (data only, as in training options)."""
    import numpy as np

    from_core = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        from_core[(module, "_reconstruct")] = _np_reconstruct
        from_core[(module, "scalar")] = _np_scalar
    return {**from_core, ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _np_dtype}


def _np_reconstruct(cls: Any, shape: Any, dtype: Any) -> Any:
    import numpy as np

    if cls is not np.ndarray:
        raise _Refused("numpy _reconstruct of a foreign array class")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    import numpy as np

    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise _Refused("numpy scalar of object dtype")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _np_dtype(spec: Any, align: Any = False, copy: Any = False) -> Any:
    import numpy as np

    if not isinstance(spec, str) or spec.startswith("O"):
        raise _Refused("numpy dtype of objects")
    return np.dtype(spec)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch", "Tensor"): torch.Tensor,
    ("torch.nn.parameter", "Parameter"): torch.Tensor,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
    ("pathlib", "PosixPath"): _path_parts,
    ("pathlib", "WindowsPath"): _path_parts,
    ("pathlib", "PurePosixPath"): _path_parts,
    ("pathlib", "PureWindowsPath"): _path_parts,
}


class _Reader(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix
        self.storages: dict[str, _Storage] = {}
        self.allowed = {**_ALLOWED, **_numpy_globals()}

    def find_class(self, module: str, name: str) -> Any:
        module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)
        found = self.allowed.get((module, name))
        if found is not None:
            return found
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return _foreign(module, name)

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError("an unknown persistent reference (not a torch storage)")
        _, kind, key, _location, numel = pid
        if not isinstance(kind, _StorageType) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError("a storage of unknown type")
        key = str(key)
        if key not in self.storages:
            self.storages[key] = _Storage(self._read_storage(key, kind.dtype, numel))
        return self.storages[key]

    def _read_storage(self, key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        try:
            raw = self.archive.read(f"{self.prefix}data/{key}")
        except KeyError:
            raise pickle.UnpicklingError(f"storage data/{key} is missing") from None
        itemsize = torch.empty(0, dtype=dtype).element_size()
        if len(raw) < numel * itemsize:
            raise pickle.UnpicklingError(f"storage data/{key} is shorter than its {numel} elements")
        if numel == 0:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer(bytearray(raw[: numel * itemsize]), dtype=dtype)


def _data_pickle(archive: zipfile.ZipFile, path: Path) -> tuple[str, bytes]:
    names = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") <= 1]
    if len(names) != 1:
        raise CheckpointError(f"{path} is a zip file but not a torch checkpoint (no data.pkl)")
    prefix = names[0][: -len("data.pkl")]
    order = f"{prefix}byteorder"
    if order in archive.namelist() and archive.read(order).strip() not in (b"", b"little"):
        raise CheckpointError(f"{path} stores big-endian tensors, which occo does not read")
    return prefix, archive.read(names[0])


def read_foreign_checkpoint(path: str | Path) -> Any:
    """The object tree of a torch zip checkpoint, read without importing or calling its code.

    Args:
        path: a ``.pt``/``.pth`` file written by ``torch.save`` (zip format, torch >= 1.6).

    Returns:
        What was saved (usually a dict), with tensors as real tensors (in their stored
        dtype, sharing storages as saved) and every foreign object as an :class:`Inert`.

    Raises:
        CheckpointError: not a file, not a torch zip checkpoint, truncated, bad tensors.
        UnsafeCheckpointError: the pickle asks to call something (nothing was called).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            prefix, data = _data_pickle(archive, path)
            return _Reader(data, archive, prefix).load()
    except _Refused as exc:
        raise UnsafeCheckpointError(
            f"{path} asks to run {exc.args[0]} when loaded; occo never runs code from a "
            "checkpoint (export the model's weights, or use a trusted file)"
        ) from None
    except zipfile.BadZipFile:
        raise CheckpointError(
            f"{path} is not a torch zip checkpoint (truncated, or the pre-1.6 torch format)"
        ) from None
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, RuntimeError, OverflowError, MemoryError, zipfile.LargeZipFile,
            OSError) as exc:  # fmt: skip
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable torch checkpoint: {reason}") from None


def _children(module: Any) -> Iterator[tuple[str, Any]]:
    children = getattr(module, "_modules", None)
    if isinstance(children, dict):
        for name, child in children.items():
            if child is not None:
                yield str(name), child


def state_dict_of(tree: Any, prefix: str = "") -> OrderedDict[str, torch.Tensor]:
    """The tensors of a pickled ``nn.Module`` (an :class:`Inert` tree), named as its
    ``state_dict()`` would name them (``model.0.conv.weight``, ...).

    Non-persistent buffers are left out, as ``state_dict()`` does. A plain dict of
    tensors (a saved state dict) is returned as is.

    Raises:
        CheckpointError: ``tree`` is neither a pickled module nor a dict of tensors.
    """
    if isinstance(tree, dict) and tree and all(isinstance(v, torch.Tensor) for v in tree.values()):
        return OrderedDict((prefix + str(k), v) for k, v in tree.items())
    if not isinstance(tree, Inert) or not isinstance(getattr(tree, "_modules", None), dict):
        raise CheckpointError(f"{class_name(tree)} is not a pickled torch module")
    found: OrderedDict[str, torch.Tensor] = OrderedDict()
    _collect(tree, prefix, found)
    return found


def _collect(module: Any, prefix: str, found: OrderedDict[str, torch.Tensor]) -> None:
    skip = getattr(module, "_non_persistent_buffers_set", set()) or set()
    for group in ("_parameters", "_buffers"):
        tensors = getattr(module, group, None)
        if not isinstance(tensors, dict):
            continue
        for name, value in tensors.items():
            if isinstance(value, torch.Tensor) and not (group == "_buffers" and name in skip):
                found[prefix + str(name)] = value
    for name, child in _children(module):
        _collect(child, f"{prefix}{name}.", found)
