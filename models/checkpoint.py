"""Weight files: occo's safetensors format for every registered network, the authors'
released files of each network, and import of OCCO's released checkpoint.

occo format: a safetensors file whose tensors are the network's ``state_dict()`` and whose
metadata holds ``format``, ``version`` (occo's), ``network`` (its registry name) and
``config`` (its config as JSON). FIFN's files keep ``format = "occo-fifn"``; files of other
networks say ``"occo-weights"``. Files without ``network`` (occo before the registry) are
FIFN's.

The authors distribute ``occo.pth``: a torch pickle, a dict whose ``state_dict`` entry holds
the weights under the release's module names (``v1.Conv_BN_ReLU_2.0.weight``,
``fusion1.cross.cross_attn.kv1.weight``, ``up_concat3.conv1.weight``, ...).
:func:`convert_release_checkpoint` renames those to occo's names. The release's FIFBs each
hold a second spatial-weight module (``fusionK.space_weight2``) that their forward pass
never calls; its tensors are dropped.
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from occo.data.errors import OccoError
from occo.data.io import write_bytes_atomic
from occo.data.version import OCCO_VERSION
from occo.models.config import FIFNConfig
from occo.models.fifn import FIFN, count_parameters

WEIGHTS_FORMAT = "occo-fifn"
#: ``format`` of occo weight files of networks other than FIFN.
NETWORK_WEIGHTS_FORMAT = "occo-weights"
_FORMATS = (WEIGHTS_FORMAT, NETWORK_WEIGHTS_FORMAT)
#: ``format`` of the resumable training checkpoint ``occo train`` writes (``checkpoint.pt``).
TRAIN_CHECKPOINT_FORMAT = "occo-train-checkpoint"
#: The weight files of a training run folder, best first.
RUN_WEIGHTS = ("best.safetensors", "last.safetensors")
#: Where the bundled default weights live (produced by training; may be absent).
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "occo_fifn_default.safetensors"


class WeightsError(OccoError, ValueError):
    """A weight file is missing, of the wrong kind, or does not fit the network."""


# --- occo's own format ------------------------------------------------------------------


def save_weights(path: str | Path, model: torch.nn.Module, metadata: dict | None = None) -> None:
    """Save a registered network's weights as safetensors with its name and config in the
    metadata (atomically).

    Args:
        path: destination ``.safetensors`` file.
        model: the network; its registry name and ``config`` are stored.
        metadata: extra entries (e.g. training run, epoch); non-string values are stored
            as JSON. Cannot override ``format``, ``version``, ``network`` or ``config``.
    """
    from occo.models.registry import DEFAULT_NETWORK, spec_of

    name = spec_of(model).name
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    fmt = WEIGHTS_FORMAT if name == DEFAULT_NETWORK else NETWORK_WEIGHTS_FORMAT
    meta.update(format=fmt, version=OCCO_VERSION, network=name, config=model.config.to_json())
    write_bytes_atomic(path, safetensors_bytes(tensors, metadata=meta))


def read_weights_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of an occo weight file, as stored (string values; ``config`` is JSON).

    Args:
        path: an occo ``.safetensors`` weight file.

    Returns:
        The metadata dict.

    Raises:
        FileNotFoundError: no such file.
        WeightsError: not a safetensors file, or not occo-fifn weights.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        hint = ""
        if _looks_like_torch_pickle(path):
            if _is_training_checkpoint(path):
                raise WeightsError(_training_checkpoint_hint(path)) from None
            hint = f"; it looks like a torch checkpoint: convert it with `occo convert {path} OUT.safetensors`"
        raise WeightsError(
            f"cannot read weights {path}: not a safetensors file ({exc}){hint}"
        ) from None
    if metadata.get("format") not in _FORMATS:
        raise WeightsError(
            f"{path} is not an occo weight file (metadata format is "
            f"{metadata.get('format')!r}, expected {WEIGHTS_FORMAT!r}); release checkpoints are "
            "imported with `occo convert`, or passed with --method NAME --weights FILE"
        )
    metadata.setdefault("network", "fifn")
    return metadata


def weights_network(path: str | Path) -> str:
    """The registry name of the network an occo weight file holds (FIFN for old files)."""
    return read_weights_metadata(path)["network"]


def load_weights(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    network: str | None = None,
) -> torch.nn.Module:
    """Build a registered network from an occo weight file, in eval mode.

    The config is checked against the file's tensor shapes on the meta device before any
    memory is allocated, so a file whose metadata describes a huge network is refused.

    Args:
        path: occo ``.safetensors`` weights (see :func:`save_weights`).
        device: where to put the network.
        dtype: floating dtype of parameters and buffers.
        network: the network the file must hold (registry name); None: whichever it holds.

    Returns:
        The network, eval mode.

    Raises:
        WeightsError: wrong format, another network than ``network``, or tensors missing /
            unexpected / of the wrong shape (named in the message).
    """
    from occo.models.registry import UnknownNetworkError, get_network

    metadata = read_weights_metadata(path)
    name = metadata["network"]
    if network is not None and name != network.strip().lower():
        raise WeightsError(
            f"{path} holds {name} weights, not {network}: pass --method {name}, or weights of {network}"
        )
    try:
        spec = get_network(name)
    except UnknownNetworkError as exc:
        raise WeightsError(f"{path}: {exc}") from None
    try:
        config = spec.config_class.from_json(metadata["config"])
    except (KeyError, ValueError, TypeError, RecursionError) as exc:
        raise WeightsError(f"{path}: invalid {name} config in metadata: {exc}") from None
    with safe_open(str(path), framework="pt") as handle:
        shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    with torch.device("meta"):  # shapes only: nothing allocated for a hostile config
        skeleton = spec.build(config)
    check_state_dict(skeleton, shapes, source=str(path))
    model = spec.build(config)
    model.load_state_dict(load_file(str(path), device="cpu"), strict=True)
    return model.to(device=device, dtype=dtype).eval()


def check_state_dict(model: torch.nn.Module, state: dict, source: str) -> None:
    """Raise a :class:`WeightsError` naming every missing, unexpected or mis-shaped tensor.

    Args:
        model: the network the tensors must fit (may live on the meta device).
        state: name -> tensor, or name -> shape tuple.
        source: file name for the message.
    """

    def shape(value) -> tuple:
        return tuple(value.shape) if hasattr(value, "shape") else tuple(value)

    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {shape(state[k])} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and shape(state[k]) != tuple(v.shape)
    ]
    problems = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if names:
            shown = ", ".join(names[:6]) + (
                f", ... ({len(names)} in all)" if len(names) > 6 else ""
            )
            problems.append(f"{label}: {shown}")
    if problems:
        name = getattr(model, "network_name", type(model).__name__)
        shape_of = getattr(getattr(model, "config", None), "widths", None)
        name = {"fifn": "FIFN"}.get(name, name)
        what = f"{name} {shape_of}" if shape_of is not None else name
        raise WeightsError(f"{source} does not fit {what}: " + "; ".join(problems))


def resolve_weights(path: str | Path | None = None) -> Path:
    """The weight file to use: ``path`` if given, else occo's bundled default weights.

    Args:
        path: an explicit weight file, or None.

    Returns:
        An existing file path.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        WeightsError: no ``path`` and no bundled default weights; says how to get weights.
    """
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"weights not found: {path}")
        return path
    if DEFAULT_WEIGHTS.is_file():
        return DEFAULT_WEIGHTS
    raise WeightsError(
        "no weights given and occo's default weights are not installed "
        f"({DEFAULT_WEIGHTS.name}); pass --weights FILE: import the authors' released occo.pth "
        "with `occo convert occo.pth fifn.safetensors`, or train with `occo train DATASET`"
    )


# --- weights of any registered method ----------------------------------------------------


def release_cache_path(spec) -> Path:
    """Where a method's released weights live in the torch hub cache (as torchvision's)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / spec.release.filename


def _offline() -> bool:
    import os

    return any(os.environ.get(k, "") not in ("", "0") for k in ("OCCO_OFFLINE", "HF_HUB_OFFLINE"))


def _check_sha256(path: Path, expected: str, source: str) -> None:
    from occo.data.io import file_sha256

    actual = file_sha256(path)
    if actual != expected:
        raise WeightsError(
            f"{path} has SHA-256 {actual[:16]}..., not the {source} file's {expected[:16]}...: "
            "the file is damaged or another one; delete it and fetch it again"
        )


def fetch_release(spec, timeout: float = 30.0) -> Path:
    """A method's released weight file: from the torch hub cache, else downloaded from its
    pinned URL (SHA-256 checked before it is kept).

    Raises:
        WeightsError: no released weights, offline or unreachable (one line naming the URL
            and where to put the file), or a SHA-256 mismatch.
    """
    release = spec.release
    if release is None:
        raise WeightsError(
            f"{spec.name} has no released weights occo knows of: pass --weights FILE"
        )
    path = release_cache_path(spec)
    if path.is_file():
        _check_sha256(path, release.sha256, f"{spec.name} release")
        return path
    where = f"download {release.url} and put it at {path} (or pass --weights FILE)"
    if _offline():
        raise WeightsError(f"{spec.name} weights are not in the cache and occo is offline: {where}")
    import urllib.error
    import urllib.request

    from occo.data.io import write_bytes_atomic

    try:
        with urllib.request.urlopen(release.url, timeout=timeout) as response:  # noqa: S310
            payload = response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise WeightsError(f"cannot download {spec.name} weights ({exc}): {where}") from None
    import hashlib

    if hashlib.sha256(payload).hexdigest() != release.sha256:
        raise WeightsError(
            f"the file downloaded from {release.url} does not have the pinned SHA-256; "
            f"nothing was kept: {where}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, payload)
    return path


@dataclass
class MethodWeights:
    """A loaded network and where its weights came from."""

    model: torch.nn.Module
    """The network, eval mode."""
    path: Path
    """The file read."""
    source: str
    """In words: occo's default weights, the authors' release, a training run..."""


def load_method(
    method: str,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> MethodWeights:
    """Load a registered method's network with its weights.

    ``weights`` may be an occo weight file (of this network), the authors' released file
    (read by the network's registry entry, safely), or a folder holding the released file
    under its published name; None: occo's default weights for FIFN, the authors' pinned
    release (torch hub cache, downloaded when missing) for every other method.

    Raises:
        UnknownNetworkError, WeightsError, FileNotFoundError: one line each.
    """
    from occo.models.registry import DEFAULT_NETWORK, get_network

    spec = get_network(method)
    if weights is None and spec.name == DEFAULT_NETWORK:
        path = resolve_weights(None)
    elif weights is None:
        path = fetch_release(spec)
    else:
        path = Path(weights)
        if path.is_dir():
            if spec.release is not None and (path / spec.release.filename).is_file():
                path = path / spec.release.filename
            elif spec.release is None or spec.read_release is None:
                raise WeightsError(f"{path} is a folder: pass the {spec.name} weight file")
        elif not path.exists():
            raise FileNotFoundError(f"weights not found: {path}")
    if path.is_file() and _looks_like_safetensors(path) and is_occo_weights(path):
        model = load_weights(path, device=device, network=spec.name)
        source = read_weights_metadata(path).get("source", "")
        return MethodWeights(model, path, source)
    if _looks_like_torch_pickle(path) and _is_training_checkpoint(path):
        raise WeightsError(_training_checkpoint_hint(path))
    if spec.read_release is None:
        raise WeightsError(
            f"{path} is not an occo weight file and {spec.name} has no reader for other files"
        )
    if spec.release is not None and path.is_file() and weights is not None:
        from occo.data.io import file_sha256

        published = file_sha256(path) == spec.release.sha256
    else:
        published = weights is None
    config, state = spec.read_release(path)
    model = spec.build(config)
    check_state_dict(model, state, source=str(path))
    model.load_state_dict(state, strict=True)
    source = f"{spec.name} authors' release" + ("" if published else " format (file not the pinned one)")
    return MethodWeights(model.to(device).eval(), path, source)


def is_occo_weights(path: Path) -> bool:
    try:
        with safe_open(str(path), framework="pt") as handle:
            return (handle.metadata() or {}).get("format") in _FORMATS
    except (SafetensorError, OSError, ValueError):
        return False


def _is_training_checkpoint(path: Path) -> bool:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - anything unreadable is simply not one
        return False
    return isinstance(payload, dict) and payload.get("format") == TRAIN_CHECKPOINT_FORMAT


def _training_checkpoint_hint(path: Path) -> str:
    """Where the weights of the run that wrote the training checkpoint ``path`` are."""
    found = [p for p in (path.with_name(n) for n in RUN_WEIGHTS) if p.is_file()]
    where = " or ".join(str(p) for p in found) or f"{path.parent}/best.safetensors"
    return (
        f"{path} is an occo training checkpoint (model, optimizer and random state, for "
        f"--resume); fuse with the run's weights instead: --weights {where}"
    )


def _looks_like_torch_pickle(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"  # zip archive / raw pickle


# --- the authors' release ---------------------------------------------------------------

# Release name -> occo name, applied to the part after the level index. ``None`` = dropped.
_ENCODER_PARTS = {"0": "conv1", "1": "bn1", "3": "conv2", "4": "bn2"}
_FIFB_PARTS = {
    "channel_weight.mlp.0": "channel_weights.fc1",
    "channel_weight.mlp.2": "channel_weights.fc2",
    "space_weight1.mlp.0": "spatial_weights.conv1",
    "space_weight1.mlp.2": "spatial_weights.conv2",
    "space_weight2.mlp.0": None,  # never applied by the release
    "space_weight2.mlp.2": None,
    "cross.channel_proj3": "proj_vi",
    "cross.channel_proj4": "proj_ir",
    "cross.cross_attn.kv1": "attention.kv_vi",
    "cross.cross_attn.kv2": "attention.kv_ir",
    "cross.end_proj1": "out_proj_vi",
    "cross.end_proj2": "out_proj_ir",
    "cross.norm1": "norm_vi",
    "cross.norm2": "norm_ir",
    "channel_emb.residual": "merge.shortcut",
    "channel_emb.channel_embed.0": "merge.reduce",
    "channel_emb.channel_embed.1": "merge.depthwise",
    "channel_emb.channel_embed.3": "merge.pointwise",
    "channel_emb.channel_embed.4": "merge.bn_main",
    "channel_emb.norm": "merge.bn_out",
}
_ENCODER_KEY = re.compile(r"^([vi])(\d+)\.Conv_BN_ReLU_2\.(\d+)\.(\w+)$")
_FIFB_KEY = re.compile(r"^fusion(\d+)\.(.+)\.(\w+)$")
_DECODER_KEY = re.compile(r"^up_concat(\d+)\.(conv[12])\.(\w+)$")
_HEAD_KEY = re.compile(r"^final\.(\w+)$")


def release_key_to_occo(key: str, levels: int = 4) -> str | None:
    """occo's name for a tensor of the released state dict.

    Args:
        key: the release's name, without any ``module.`` prefix.
        levels: encoder levels of the network (4 in the release).

    Returns:
        occo's name, or None for tensors occo drops (``space_weight2``).

    Raises:
        KeyError: a name the release does not have.
    """
    if m := _ENCODER_KEY.match(key):
        branch, level, part, param = m.groups()
        if part in _ENCODER_PARTS:
            enc = "encoder_vi" if branch == "v" else "encoder_ir"
            return f"{enc}.{int(level) - 1}.{_ENCODER_PARTS[part]}.{param}"
    elif m := _FIFB_KEY.match(key):
        level, part, param = m.groups()
        if part in _FIFB_PARTS:
            name = _FIFB_PARTS[part]
            return None if name is None else f"fusion.{int(level) - 1}.{name}.{param}"
    elif m := _DECODER_KEY.match(key):
        level, conv, param = m.groups()
        return f"decoder.{levels - 1 - int(level)}.{conv}.{param}"
    elif m := _HEAD_KEY.match(key):
        return f"head.{m.group(1)}"
    raise KeyError(key)


def unpickling_reason(exc: BaseException) -> str:
    """The line of torch's weights-only refusal that says what the file asked for (e.g.
    "unsupported GLOBAL posix.system"), without its advice to load unsafely."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "WeightsUnpickler" in line or "Unsupported" in line:
            return line.rstrip(".")
    return "a Python object that is not a tensor or a plain container"


def _looks_like_torch_file(path: Path) -> bool:
    """A zip archive (torch.save since 1.6) or a raw pickle (protocol 2+ starts with 0x80)."""
    with path.open("rb") as handle:
        head = handle.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


#: The ``format`` of ``occo train``'s checkpoint.pt (the trainer's CHECKPOINT_FORMAT).
_TRAIN_CHECKPOINT_FORMAT = "occo-train-checkpoint"


def _looks_like_safetensors(path: Path) -> bool:
    """8 bytes of little-endian header length, then the JSON header's opening brace."""
    with path.open("rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _refuse_occo_weights(path: Path) -> None:
    """A file that is occo's own weight format needs no conversion: say so."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            is_occo = (handle.metadata() or {}).get("format") == WEIGHTS_FORMAT
    except (SafetensorError, OSError, ValueError):
        return  # not readable as safetensors: the reader below explains
    if is_occo:
        raise WeightsError(
            f"{path} is already an occo weight file; use it as it is: "
            f"`occo fuse IR_DIR VI_DIR OUT_DIR --weights {path}`"
        )


def read_release_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the authors' checkpoint safely: tensors only, never arbitrary unpickling.

    Accepts a torch pickle holding ``{"state_dict": {...}, ...}`` or a bare state dict
    (``torch.load(weights_only=True)``), or a safetensors file with the release's names.
    A ``module.`` prefix (from DataParallel) is stripped.

    Args:
        path: the checkpoint (``occo.pth``).

    Returns:
        Release name -> tensor.

    Raises:
        WeightsError: unreadable, needs arbitrary unpickling, or holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):
        _refuse_occo_weights(path)
        try:
            loaded: object = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"cannot read {path}: {exc}") from None
    else:
        if not _looks_like_torch_file(path):
            raise WeightsError(
                f"cannot read {path}: not a torch checkpoint (expected the authors' occo.pth, "
                "a file written by torch.save)"
            )
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise WeightsError(
                f"refusing to load {path}: it needs arbitrary unpickling, which could run code "
                f"({unpickling_reason(exc)}); only checkpoints of plain tensors and containers "
                "are accepted"
            ) from None
        except (RuntimeError, OSError, EOFError, ValueError) as exc:
            raise WeightsError(f"cannot read {path} as a torch checkpoint: {exc}") from None
    if isinstance(loaded, dict) and loaded.get("format") == _TRAIN_CHECKPOINT_FORMAT:
        raise WeightsError(
            f"{path} is an occo training checkpoint, already occo's format: its weights are "
            "last.safetensors and best.safetensors in the same run folder, for `occo fuse --weights`"
        )
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if (
        not isinstance(loaded, dict)
        or not loaded
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items())
    ):
        keys = list(loaded)[:8] if isinstance(loaded, dict) else type(loaded).__name__
        raise WeightsError(
            f"{path} holds no state dict (expected a dict of tensors or a 'state_dict' entry; found {keys})"
        )
    return {k.removeprefix("module."): v for k, v in loaded.items()}


@dataclass
class ConversionReport:
    """What :func:`convert_release_checkpoint` did."""

    config: FIFNConfig
    """The network the weights describe."""
    converted: int
    """Tensors written."""
    dropped: list[str] = field(default_factory=list)
    """Release tensors not written (the unused second spatial-weight modules)."""
    parameters: int = 0
    """Trainable parameters of the converted network."""


def release_state_dict_to_occo(
    state: dict[str, torch.Tensor], heads: tuple[int, ...] | None = None, source: str = "checkpoint"
) -> tuple[FIFN, list[str]]:
    """Build a FIFN from a release state dict.

    Widths are read from the tensors; heads cannot be (they change no shape), so they
    default to the release's (4, 4, 4, 1) for 4 levels.

    Args:
        state: release name -> tensor (prefix already stripped).
        heads: attention heads per level; None = the release's.
        source: file name for messages.

    Returns:
        (network in eval mode holding the weights, names of the dropped release tensors).

    Raises:
        WeightsError: unknown names, missing or mis-shaped tensors (named).
    """
    widths = []
    while f"v{len(widths) + 1}.Conv_BN_ReLU_2.0.weight" in state:
        widths.append(state[f"v{len(widths) + 1}.Conv_BN_ReLU_2.0.weight"].shape[0])
    if len(widths) < 2:
        raise WeightsError(
            f"{source} is not a FIFN state dict: no encoder tensors v1.Conv_BN_ReLU_2.*"
        )
    if heads is None:
        default = FIFNConfig()
        if len(widths) != default.levels:
            raise WeightsError(
                f"{source} has {len(widths)} levels: give the attention heads per level"
            )
        heads = default.heads
    try:
        config = FIFNConfig(widths=tuple(widths), heads=tuple(heads))
    except ValueError as exc:
        raise WeightsError(f"{source}: {exc}") from None

    renamed: dict[str, torch.Tensor] = {}
    dropped, unknown = [], []
    for key, tensor in state.items():
        try:
            name = release_key_to_occo(key, levels=config.levels)
        except KeyError:
            unknown.append(key)
            continue
        if name is None:
            dropped.append(key)
        else:
            renamed[name] = tensor
    if unknown:
        shown = ", ".join(unknown[:6]) + (
            f", ... ({len(unknown)} in all)" if len(unknown) > 6 else ""
        )
        raise WeightsError(f"{source} has tensors the released FIFN does not have: {shown}")
    model = FIFN(config)
    check_state_dict(model, renamed, source=source)
    model.load_state_dict(renamed, strict=True)
    return model.eval(), dropped


def convert_release_checkpoint(
    src: str | Path, dst: str | Path, heads: tuple[int, ...] | None = None
) -> ConversionReport:
    """Import the authors' released checkpoint into an occo weight file.

    Args:
        src: the release's ``occo.pth`` (or a bare state dict; see :func:`read_release_checkpoint`).
        dst: the ``.safetensors`` file to write (atomically).
        heads: attention heads per level; None = the release's (4, 4, 4, 1).

    Returns:
        A :class:`ConversionReport`.
    """
    state = read_release_checkpoint(src)
    model, dropped = release_state_dict_to_occo(state, heads=heads, source=str(src))
    save_weights(
        dst, model, metadata={"source": f"converted from {Path(src).name} (authors' release)"}
    )
    return ConversionReport(
        config=model.config,
        converted=len(model.state_dict()),
        dropped=dropped,
        parameters=count_parameters(model),
    )
