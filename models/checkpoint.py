"""FIFN weight files: occo's safetensors format, and import of the authors' released checkpoint.

occo format: a safetensors file whose tensors are ``FIFN.state_dict()`` and whose metadata
holds ``format = "occo-fifn"``, ``version`` (occo's) and ``config`` (FIFNConfig as JSON).

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
#: ``format`` of the resumable training checkpoint ``occo train`` writes (``checkpoint.pt``).
TRAIN_CHECKPOINT_FORMAT = "occo-train-checkpoint"
#: The weight files of a training run folder, best first.
RUN_WEIGHTS = ("best.safetensors", "last.safetensors")
#: Where the bundled default weights live (produced by training; may be absent).
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "occo_fifn_default.safetensors"


class WeightsError(OccoError, ValueError):
    """A weight file is missing, of the wrong kind, or does not fit the network."""


# --- occo's own format ------------------------------------------------------------------


def save_weights(path: str | Path, model: FIFN, metadata: dict | None = None) -> None:
    """Save a FIFN's weights as safetensors with its config in the metadata (atomically).

    Args:
        path: destination ``.safetensors`` file.
        model: the network; its ``config`` is stored.
        metadata: extra entries (e.g. training run, epoch); non-string values are stored
            as JSON. Cannot override ``format``, ``version`` or ``config``.
    """
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    meta.update(format=WEIGHTS_FORMAT, version=OCCO_VERSION, config=model.config.to_json())
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
    if metadata.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(
            f"{path} is not an occo FIFN weight file (metadata format is "
            f"{metadata.get('format')!r}, expected {WEIGHTS_FORMAT!r}); release checkpoints are "
            "imported with `occo convert`"
        )
    return metadata


def load_weights(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> FIFN:
    """Build a FIFN from an occo weight file, in eval mode.

    Args:
        path: occo ``.safetensors`` weights (see :func:`save_weights`).
        device: where to put the network.
        dtype: floating dtype of parameters and buffers.

    Returns:
        The network, eval mode.

    Raises:
        WeightsError: wrong format, or tensors missing / unexpected / of the wrong shape
            (named in the message).
    """
    metadata = read_weights_metadata(path)
    try:
        config = FIFNConfig.from_json(metadata["config"])
    except (KeyError, ValueError, TypeError) as exc:
        raise WeightsError(f"{path}: invalid FIFN config in metadata: {exc}") from None
    model = FIFN(config)
    state = load_file(str(path), device="cpu")
    check_state_dict(model, state, source=str(path))
    model.load_state_dict(state, strict=True)
    return model.to(device=device, dtype=dtype).eval()


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise a :class:`WeightsError` naming every missing, unexpected or mis-shaped tensor.

    Args:
        model: the network the tensors must fit.
        state: name -> tensor.
        source: file name for the message.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if names:
            shown = ", ".join(names[:6]) + (
                f", ... ({len(names)} in all)" if len(names) > 6 else ""
            )
            problems.append(f"{label}: {shown}")
    if problems:
        raise WeightsError(
            f"{source} does not fit FIFN {model.config.widths}: " + "; ".join(problems)
        )


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
            # torch's message is a paragraph; its "WeightsUnpickler error" line says why.
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            first = next(
                (line for line in lines if "WeightsUnpickler" in line), lines[0] if lines else ""
            )
            raise WeightsError(
                f"refusing to load {path}: it needs arbitrary unpickling, which could run code "
                f"({first}); only checkpoints of plain tensors and containers are accepted"
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
