"""Running an exported FIFN with onnxruntime: an engine with the network's call signature.

:class:`OnnxEngine` takes a model written by ``occo export`` (see models.export for its
interface) and is called like FIFN, ``engine(vi_y, ir) -> raw``, so the
:class:`~occo.models.fuser.Fuser` runs it in place of the PyTorch network: the same
normalisation, batching, min-max and colour around it. onnxruntime is an optional
dependency (``pip install "occo[onnx]"``); it is imported only when an engine is made.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import Tensor

from occo.data.errors import OccoError

#: ``occo_format`` metadata value of the ONNX models ``occo export`` writes.
ONNX_FORMAT = "occo-fifn-onnx"
#: Input and output names of the exported graph.
INPUT_NAMES = ("vi_y", "ir")
OUTPUT_NAME = "fused_y"
#: onnxruntime's execution providers occo uses, fastest first; CPU is always last.
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
CPU_PROVIDER = "CPUExecutionProvider"
INSTALL_HINT = 'pip install "occo[onnx]"'


class MissingDependencyError(OccoError, ImportError):
    """An optional dependency is not installed; the message says how to install it."""


class OnnxModelError(OccoError, ValueError):
    """An ONNX file that is not a FIFN exported by occo, or cannot be loaded."""


def require_onnxruntime() -> ModuleType:
    """Import onnxruntime, or raise a :class:`MissingDependencyError` saying how to get it."""
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError(
            f"onnxruntime is not installed; install it with: {INSTALL_HINT}"
        ) from None
    return onnxruntime


def resolve_providers(device: str = "auto") -> list:
    """onnxruntime execution providers for an occo ``--device`` value.

    Args:
        device: ``cpu``; ``auto`` (TensorRT, then CUDA, where this onnxruntime has them,
            else the CPU); ``cuda`` or ``cuda:N`` (TensorRT/CUDA on GPU N; an error
            where this onnxruntime has no GPU provider).

    Returns:
        Providers in onnxruntime's format (name, or (name, options)), CPU last.

    Raises:
        OnnxModelError: a device this onnxruntime cannot use.
    """
    ort = require_onnxruntime()
    if device == "cpu":
        return [CPU_PROVIDER]
    available = set(ort.get_available_providers())
    gpu = [name for name in GPU_PROVIDERS if name in available]
    if device == "auto":
        return [*gpu, CPU_PROVIDER]
    kind, _, index = device.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise OnnxModelError(f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N")
    if not gpu:
        raise OnnxModelError(
            f"--device {device}: this onnxruntime has no GPU provider (it has "
            f"{', '.join(sorted(available))}); install onnxruntime-gpu or use --device cpu"
        )
    options = {"device_id": int(index or 0)}
    return [*[(name, options) for name in gpu], CPU_PROVIDER]


def create_session(model: str | Path | bytes, providers: list | None = None, threads: int = 0):
    """An onnxruntime InferenceSession, quiet, all graph optimisations on.

    Args:
        model: an ``.onnx`` file or its bytes.
        providers: from :func:`resolve_providers`; None = the CPU.
        threads: intra-op threads; 0 = onnxruntime's default (one per physical core).

    Returns:
        The session.
    """
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: no provider-fallback chatter
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, options, providers=providers or [CPU_PROVIDER])


class OnnxEngine:
    """FIFN's forward pass on onnxruntime, called like the network: ``engine(vi_y, ir)``.

    Args:
        model: an ``.onnx`` file written by ``occo export`` (or its bytes).
        device: see :func:`resolve_providers`.
        threads: intra-op threads; 0 = onnxruntime's default.

    Raises:
        MissingDependencyError: onnxruntime is not installed.
        OnnxModelError: not an occo FIFN export, or unreadable.
    """

    def __init__(self, model: str | Path | bytes, device: str = "auto", threads: int = 0) -> None:
        self.source = "(in memory)" if isinstance(model, bytes) else str(model)
        if not isinstance(model, bytes) and not Path(model).is_file():
            raise FileNotFoundError(f"ONNX model not found: {model}")
        try:
            self.session = create_session(model, resolve_providers(device), threads)
        except (MissingDependencyError, OnnxModelError):
            raise
        except Exception as exc:  # onnxruntime's own exception types are not exported
            raise OnnxModelError(
                f"onnxruntime cannot load {self.source}: {_first_line(exc)}"
            ) from None
        #: The model's metadata (see models.export).
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        if self.metadata.get("occo_format") != ONNX_FORMAT:
            raise OnnxModelError(
                f"{self.source} is not a FIFN exported by occo (no occo_format={ONNX_FORMAT} "
                "metadata); export one with `occo export WEIGHTS OUT.onnx`"
            )
        from occo.models.registry import UnknownNetworkError, get_network

        #: The registry name of the exported network (exports before the registry: FIFN).
        self.network_name = self.metadata.get("network", "fifn")
        try:
            spec = get_network(self.network_name)
            self.config = spec.config_class.from_json(self.metadata["config"])
        except (KeyError, ValueError, TypeError, UnknownNetworkError) as exc:
            raise OnnxModelError(
                f"{self.source}: invalid {self.network_name} config in metadata: {exc}"
            ) from None
        self._min_size = spec.min_size(self.config)
        #: ``raw`` (FIFN's output) or ``minmax`` (normalised per image inside the graph).
        self.output = self.metadata.get("output", "raw")
        size = self.metadata.get("static_size", "")
        #: (H, W) the model was exported for, or None for any size.
        self.static_size = tuple(int(v) for v in size.split("x")) if size else None
        #: Providers the session actually uses, fastest first.
        self.providers: list[str] = list(self.session.get_providers())

    def __call__(self, vi_y: Tensor, ir: Tensor) -> Tensor:
        """Raw fused luminance, as ``FIFN.forward``.

        Args:
            vi_y: (B, 1, H, W) visible luminance in [0, 1].
            ir: (B, 1, H, W) infrared in [0, 1], same size.

        Returns:
            (B, 1, H, W) float32 on the CPU (min-max normalised when exported so).

        Raises:
            ValueError: shapes that differ, an image below the network's minimum size, or
                a size other than a static model's.
            RuntimeError: onnxruntime failed (first line of its message).
        """
        if vi_y.shape != ir.shape:
            raise ValueError(f"vi_y {tuple(vi_y.shape)} and ir {tuple(ir.shape)} differ in shape")
        size = tuple(vi_y.shape[-2:])
        if min(size) < self._min_size:
            label = {"fifn": "FIFN"}.get(self.network_name, self.network_name)
            raise ValueError(
                f"image {size} is too small: {label} needs at least "
                f"{self._min_size} pixels per side"
            )
        if self.static_size is not None and size != self.static_size:
            raise ValueError(
                f"image {size[1]}x{size[0]}: the ONNX model was exported for "
                f"{self.static_size[1]}x{self.static_size[0]} only; export it without "
                "--static-size for any size"
            )
        feed = {name: _numpy(x) for name, x in zip(INPUT_NAMES, (vi_y, ir), strict=True)}
        try:
            (out,) = self.session.run([OUTPUT_NAME], feed)
        except Exception as exc:  # onnxruntime's own exception types are not exported
            raise RuntimeError(f"onnxruntime: {_first_line(exc)}") from None
        return torch.from_numpy(out)

    def describe(self) -> dict:
        """What the manifest records about the engine (JSON values)."""
        return {
            "onnxruntime": require_onnxruntime().__version__,
            "providers": self.providers,
            "precision": self.metadata.get("precision"),
            "output": self.output,
            "weights_sha256": self.metadata.get("weights_sha256"),
        }

    @property
    def provenance(self) -> dict:
        """The exported weights' provenance (their file's metadata), as a dict."""
        try:
            return json.loads(self.metadata.get("provenance", "{}"))
        except ValueError:
            return {}


def _numpy(x: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
