"""Export of a FIFN to ONNX, checked against PyTorch with onnxruntime before it is written.

The exported graph is FIFN as the Fuser runs it (BatchNorms folded into the convolutions).

Interface:

- inputs ``vi_y`` and ``ir``: float32 (B, 1, H, W) in [0, 1], the visible image's
  luminance (Y of the release's YCbCr: 0.299 R + 0.587 G + 0.114 B) and the infrared
  image. Batch, height and width are dynamic (any H, W >= 2^(levels-1), 8 for the
  release's network, odd sizes included) unless exported with a static size, which fixes
  H and W (the batch stays dynamic).
- output ``fused_y``: float32 (B, 1, H, W). By default the network's RAW output, as
  ``FIFN.forward``: normalise each image to [0, 1] by its own min and max to get the
  fused luminance (``minmax=True`` puts that normalisation in the graph). Colour is left
  to the caller: put the fused Y back with the visible image's Cb and Cr.
- ``fp16=True`` runs the network in float16 inside the graph (for GPUs); the interface
  stays float32, and the attention's Gram matrices, sums over all pixels that overflow
  float16 at camera sizes, stay float32.

Metadata (``metadata_props``): ``occo_format`` ("occo-fifn-onnx"), ``occo_version``,
``config`` (FIFNConfig as JSON), ``weights_sha256`` (of the weight file, or of the state
dict saved as safetensors without metadata for a model given in memory), ``weights_file``,
``provenance`` (the weight file's own metadata as JSON: source, training run...),
``output`` ("raw" or "minmax"), ``precision`` ("float32" or "float16"), ``static_size``
("HxW" or ""), ``verification`` (what was checked, as JSON).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

from occo.data.errors import OccoError
from occo.data.io import write_bytes_atomic
from occo.data.version import OCCO_VERSION
from occo.models.checkpoint import load_weights, read_weights_metadata
from occo.models.onnx_engine import (
    INPUT_NAMES,
    INSTALL_HINT,
    ONNX_FORMAT,
    OUTPUT_NAME,
    MissingDependencyError,
    create_session,
    require_onnxruntime,
)
from occo.models.registry import spec_of

#: Opset used by default: LayerNormalization is a single ONNX op from 17 on.
DEFAULT_OPSET = 17
#: Largest error accepted at export, as a fraction of each image's output range (so in
#: min-max normalised units; x 255 = grey levels): float32 graphs agree to ~1e-6.
TOLERANCE = {"float32": 1e-4, "float16": 4e-3}
# Weight-file metadata that describes the file itself rather than where the weights came from.
_NOT_PROVENANCE = ("format", "version", "network", "config")


class ExportError(OccoError, ValueError):
    """The export failed or its check against PyTorch failed; nothing was written."""


@dataclass
class ExportCheck:
    """onnxruntime against PyTorch at one input shape."""

    batch: int
    """Pairs in the batch."""
    height: int
    """Image height, px."""
    width: int
    """Image width, px."""
    max_error: float
    """Largest |onnxruntime - PyTorch|, as a fraction of the image's output range."""
    tolerance: float
    """The largest error accepted."""

    @property
    def passed(self) -> bool:
        """Whether the error is within the tolerance."""
        return bool(self.max_error <= self.tolerance)

    def __str__(self) -> str:
        return f"{self.batch}x{self.height}x{self.width}: {self.max_error:.2e}"


@dataclass
class ExportReport:
    """What :func:`build_onnx` / :func:`export_onnx` made and checked."""

    opset: int
    """ONNX opset."""
    precision: str
    """``float32`` or ``float16`` inside the graph."""
    output: str
    """``raw`` or ``minmax``."""
    static_size: tuple[int, int] | None
    """(H, W) when exported for one size, else None (dynamic)."""
    weights_sha256: str
    """SHA-256 of the weights (see the module docstring)."""
    checks: list[ExportCheck] = field(default_factory=list)
    """The verification, one entry per input shape."""
    seconds: float = 0.0
    """Time to export and check."""
    size_bytes: int = 0
    """Size of the ONNX model."""
    path: Path | None = None
    """The file written (:func:`export_onnx`), None for :func:`build_onnx`."""

    @property
    def max_error(self) -> float:
        """The largest error over all checks."""
        return max((c.max_error for c in self.checks), default=0.0)


class _ExportedNetwork(nn.Module):
    """The graph that is exported: the folded network, optionally float16 and min-max."""

    def __init__(self, network: nn.Module, fp16: bool, minmax: bool, spec, config) -> None:
        super().__init__()
        self.network = network.half() if fp16 else network
        self.fp16 = fp16
        self.minmax = minmax
        self.finish = spec.finish
        self.config = config

    def forward(self, vi_y: Tensor, ir: Tensor) -> Tensor:
        if self.fp16:
            vi_y, ir = vi_y.half(), ir.half()
        out = self.network(vi_y, ir).float()
        if not self.minmax:
            return out
        # The network's own output convention (FIFN: per-image min-max), clamped to [0, 1].
        return self.finish(out, self.config).clamp(0, 1)


def weights_sha256(source: str | Path | nn.Module) -> str:
    """SHA-256 of a weight file's bytes, or of a model's state dict as plain safetensors."""
    if isinstance(source, nn.Module):
        state = {k: v.detach().cpu().contiguous() for k, v in source.state_dict().items()}
        return hashlib.sha256(safetensors_bytes(state)).hexdigest()
    digest = hashlib.sha256()
    with open(source, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_check_shapes(
    min_size: int, static_size: tuple[int, int] | None
) -> list[tuple[int, int, int]]:
    """(batch, H, W) shapes the export is checked at.

    Dynamic: a batch of two at odd sizes, one even size, and the network's minimum.
    Static: the one size.
    """
    if static_size is not None:
        return [(1, *static_size)]
    m = min_size
    return [(2, 4 * m + 5, 6 * m + 5), (1, 8 * m, 12 * m), (1, m, 3 * m + 1)]


def _trace_shape(min_size: int, static_size: tuple[int, int] | None) -> tuple[int, int, int]:
    # Batch 2 and odd sizes, so that no dimension is traced as a special value (1, even).
    return (2, *(static_size or (4 * min_size + 3, 6 * min_size + 1)))


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise MissingDependencyError(
            f"onnx is not installed; install it with: {INSTALL_HINT}"
        ) from None
    return onnx


def _trace_to_onnx(
    graph: nn.Module, shape: tuple[int, int, int], opset: int, dynamic: bool
) -> bytes:
    batch, height, width = shape
    example = (torch.rand(batch, 1, height, width), torch.rand(batch, 1, height, width))
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic else {0: "batch"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The tracer's notes on Python-side shape checks (fine: the graph's sizes are
        # symbolic) and the exporter's deprecation notice are not the user's concern.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            example,
            buffer,
            dynamo=False,  # the tracing exporter: no onnxscript dependency, dynamic sizes
            opset_version=opset,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes={name: axes for name in (*INPUT_NAMES, OUTPUT_NAME)},
            do_constant_folding=True,
        )
    return buffer.getvalue()


def _verify(
    model_bytes: bytes,
    reference: nn.Module,
    shapes: list[tuple[int, int, int]],
    tolerance: float,
    seed: int = 0,
) -> list[ExportCheck]:
    """Run the ONNX model on onnxruntime's CPU provider and PyTorch on the same inputs."""
    session = create_session(model_bytes)
    generator = torch.Generator().manual_seed(seed)
    checks = []
    for batch, height, width in shapes:
        vi_y = torch.rand(batch, 1, height, width, generator=generator)
        ir = torch.rand(batch, 1, height, width, generator=generator)
        with torch.inference_mode():
            expected = reference(vi_y, ir).numpy()
        got = session.run([OUTPUT_NAME], {"vi_y": vi_y.numpy(), "ir": ir.numpy()})[0]
        if got.shape != expected.shape:
            raise ExportError(
                f"the exported model gives shape {got.shape} at input {batch}x1x{height}x{width}, "
                f"PyTorch {expected.shape}; nothing written"
            )
        flat_ref = expected.reshape(batch, -1)
        spread = np.maximum(flat_ref.max(1) - flat_ref.min(1), 1e-6)  # per image
        error = np.abs(got.reshape(batch, -1) - flat_ref).max(1) / spread
        checks.append(ExportCheck(batch, height, width, float(error.max()), tolerance))
    return checks


def build_onnx(
    model: nn.Module,
    *,
    opset: int = DEFAULT_OPSET,
    static_size: tuple[int, int] | None = None,
    fp16: bool = False,
    minmax: bool = False,
    weights_sha: str | None = None,
    provenance: dict | None = None,
    weights_file: str = "",
    check_shapes: list[tuple[int, int, int]] | None = None,
    tolerance: float | None = None,
) -> tuple[bytes, ExportReport]:
    """Export ``model`` to ONNX in memory and check it against PyTorch with onnxruntime.

    Args:
        model: the network (any device/dtype: a float32 CPU copy is exported).
        opset: ONNX opset (17 or later: LayerNormalization).
        static_size: (H, W) to fix the image size; None = any size.
        fp16: float16 inside the graph (see the module docstring).
        minmax: include the per-image min-max normalisation (output in [0, 1]).
        weights_sha: SHA-256 to record; None = that of ``model``'s state dict.
        provenance: where the weights came from (recorded as JSON).
        weights_file: the weight file's name, recorded.
        check_shapes: (batch, H, W) to check at; None = :func:`default_check_shapes`.
        tolerance: largest error accepted (fraction of the output range); None =
            :data:`TOLERANCE` for the precision.

    Returns:
        (the serialised model, the report).

    Raises:
        MissingDependencyError: onnx or onnxruntime is missing.
        ExportError: the export or its check failed (the message gives the error).
    """
    spec = spec_of(model)
    label = {"fifn": "FIFN"}.get(spec.name, spec.name)
    if not spec.onnx:
        raise ExportError(f"{spec.name} does not export to ONNX (see `occo methods`)")
    onnx = _import_onnx()
    ort = require_onnxruntime()
    if opset < DEFAULT_OPSET:
        raise ExportError(f"opset {opset} is too old: {label} needs {DEFAULT_OPSET} or later")
    min_size = spec.min_size(model.config)
    if static_size is not None and min(static_size) < min_size:
        raise ExportError(
            f"static size {static_size[1]}x{static_size[0]} is below {label}'s minimum of "
            f"{min_size} px per side"
        )
    started = time.perf_counter()
    precision = "float16" if fp16 else "float32"
    tolerance = TOLERANCE[precision] if tolerance is None else tolerance
    folded = spec.fold(model).to("cpu", torch.float32)  # a copy: model is untouched
    if folded is model:
        folded = copy.deepcopy(model).to("cpu", torch.float32).eval()
    cfg = model.config
    reference = _ExportedNetwork(folded, fp16=False, minmax=minmax, spec=spec, config=cfg)
    graph = _ExportedNetwork(
        copy.deepcopy(folded), fp16=fp16, minmax=minmax, spec=spec, config=cfg
    ).eval()
    try:
        raw = _trace_to_onnx(
            graph, _trace_shape(min_size, static_size), opset, dynamic=static_size is None
        )
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ExportError(f"torch.onnx.export failed: {str(exc).splitlines()[0]}") from None

    proto = onnx.load_from_string(raw)
    shapes = check_shapes or default_check_shapes(min_size, static_size)
    report = ExportReport(
        opset=opset,
        precision=precision,
        output="minmax" if minmax else "raw",
        static_size=static_size,
        weights_sha256=weights_sha or weights_sha256(model),
    )
    _describe(proto, model, report, provenance or {}, weights_file)
    try:
        onnx.checker.check_model(proto)
        report.checks = _verify(proto.SerializeToString(), reference, shapes, tolerance)
    except ExportError:
        raise
    except Exception as exc:  # onnxruntime's own exception types are not exported
        raise ExportError(
            f"the exported model does not check out: {str(exc).strip().splitlines()[0]}; "
            "nothing written"
        ) from None
    failed = [check for check in report.checks if not check.passed]
    if failed:
        worst = max(failed, key=lambda c: c.max_error)
        raise ExportError(
            f"the exported model differs from PyTorch at {worst.batch}x{worst.height}x"
            f"{worst.width}: max error {worst.max_error:.2e} of the output range > tolerance "
            f"{tolerance:.0e}; nothing written"
            + ("" if not fp16 else " (float16: try without --fp16)")
        )
    # Record the check in the model itself, then serialise the final bytes.
    verification = {
        "onnxruntime": ort.__version__,
        "provider": "CPUExecutionProvider",
        "reference": "PyTorch float32, BatchNorm folded",
        "tolerance": tolerance,
        "max_error": {str(c): c.max_error for c in report.checks},
    }
    _set_metadata(proto, {"verification": json.dumps(verification)})
    payload = proto.SerializeToString()
    report.size_bytes = len(payload)
    report.seconds = time.perf_counter() - started
    return payload, report


def _describe(
    proto, model: nn.Module, report: ExportReport, provenance: dict, weights_file: str
) -> None:
    """Metadata and doc strings of the exported model (see the module docstring)."""
    proto.producer_name = "occo"
    proto.producer_version = OCCO_VERSION
    spec = spec_of(model)
    size = f"any H, W >= {spec.min_size(model.config)}"
    if report.static_size:
        size = f"H={report.static_size[0]}, W={report.static_size[1]}"
    proto.doc_string = (
        f"{'FIFN (OCCO infrared-visible fusion)' if spec.name == 'fifn' else spec.name}, "
        "BatchNorm folded. Inputs vi_y, ir: float32 "
        f"(B, 1, H, W) in [0, 1], {size}. Output fused_y: float32 (B, 1, H, W), "
        + (
            "the network's output convention applied (min-max for FIFN), in [0, 1]."
            if report.output == "minmax"
            else "raw: apply the network's output convention (`occo methods`; FIFN: "
            "normalise each image by its min and max) to get the fused luminance."
        )
    )
    docs = {
        "vi_y": "visible luminance Y = 0.299 R + 0.587 G + 0.114 B, float32 (B, 1, H, W) in [0, 1]",
        "ir": "infrared, float32 (B, 1, H, W) in [0, 1]",
        OUTPUT_NAME: f"fused luminance, float32 (B, 1, H, W), {report.output}",
    }
    for value in (*proto.graph.input, *proto.graph.output):
        value.doc_string = docs.get(value.name, "")
    _set_metadata(
        proto,
        {
            "occo_format": ONNX_FORMAT,
            "occo_version": OCCO_VERSION,
            "network": spec.name,
            "config": model.config.to_json(),
            "weights_sha256": report.weights_sha256,
            "weights_file": weights_file,
            "provenance": json.dumps(provenance, sort_keys=True),
            "output": report.output,
            "precision": report.precision,
            "static_size": "x".join(map(str, report.static_size)) if report.static_size else "",
        },
    )


def _set_metadata(proto, values: dict[str, str]) -> None:
    existing = {entry.key: entry for entry in proto.metadata_props}
    for key, value in values.items():
        entry = existing.get(key) or proto.metadata_props.add()
        entry.key, entry.value = key, value


def onnx_from_weights(weights: str | Path | nn.Module, **options) -> tuple[bytes, ExportReport]:
    """:func:`build_onnx` of a weight file (hash and provenance recorded) or of a model.

    Args:
        weights: an occo weight file (``.safetensors``) or a model in memory.
        **options: :func:`build_onnx`'s keyword arguments (opset, static_size, fp16, ...).

    Returns:
        (the serialised model, the report).
    """
    if isinstance(weights, nn.Module):
        return build_onnx(weights, **options)
    metadata = read_weights_metadata(weights)
    provenance = {k: v for k, v in metadata.items() if k not in _NOT_PROVENANCE}
    provenance["weights_version"] = metadata.get("version", "")
    return build_onnx(
        load_weights(weights),
        weights_sha=weights_sha256(weights),
        provenance=provenance,
        weights_file=Path(weights).name,
        **options,
    )


def export_onnx(
    weights: str | Path | nn.Module,
    path: str | Path,
    *,
    overwrite: bool = False,
    **options,
) -> ExportReport:
    """Export a registered network to an ONNX file, written atomically only after its check passed.

    Args:
        weights: an occo weight file (``.safetensors``) or a model in memory.
        path: the ``.onnx`` file to write.
        overwrite: replace an existing file.
        **options: :func:`build_onnx`'s keyword arguments: opset, static_size, fp16,
            minmax, check_shapes, tolerance.

    Returns:
        The report, with ``path`` set.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        MissingDependencyError, ExportError: see :func:`build_onnx`; nothing is written.
        WeightsError: unreadable weights.
    """
    path = Path(path)
    if not isinstance(weights, nn.Module) and path.resolve() == Path(weights).resolve():
        raise ExportError(f"{path} is the weight file itself; choose another output path")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    payload, report = onnx_from_weights(weights, **options)
    write_bytes_atomic(path, payload, overwrite)  # final re-check: never over a newcomer
    report.path = path
    return report
