"""The network registry: every fusion network occo can train, fuse with, tile and export.

In the style of timm's and segment-anything's model registries: a name maps to a
:class:`NetworkSpec` that says how to build the network from its config dataclass and
what the rest of occo needs to know about it (the Fuser's input and output conventions,
the receptive margin that makes tiling exact, whether BatchNorms fold, the memory model,
ONNX support, colour handling) and how its authors' released weights are read.

Entries are registered by the modules that define the networks. The table of where each
registered network lives (:data:`_MODULES`) is imported lazily, so that ``occo --help``
never imports torch. A network module is an ``nn.Module`` subclass with a class attribute
``network_name`` (its registry name) and an instance attribute ``config`` (its config
dataclass); its ``forward(vi_y, ir)`` takes (B, 1, H, W) tensors in [0, 1] and returns a
(B, 1, H, W) map that :attr:`NetworkSpec.finish` turns into the fused luminance.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from occo.data.errors import OccoError

#: Name of the network of occo's own method, the default everywhere.
DEFAULT_NETWORK = "fifn"

#: Registry name -> module whose import registers it. Add a line to add a network.
_MODULES: dict[str, str] = {
    "fifn": "occo.models.fifn",
    # The published peers, one module each in occo.models.peers.
    **{
        name: f"occo.models.peers.{name}"
        for name in (
            "seafusion",
            "densefuse",
            "ifcnn",
            "refusion",
            "mmdrfuse",
            "datfuse",
            "sage",
            "lrrnet",
            "gifnet",
            "mufusion",
            "didfuse",
            "tardal",
        )
    },
}

_REGISTRY: dict[str, NetworkSpec] = {}


class JsonConfig:
    """Mixin for a network's frozen config dataclass: JSON in and out, unknown keys refused.

    Tuples survive as lists in JSON; subclasses convert them back in ``__post_init__``.
    """

    def to_json(self) -> str:
        import json
        from dataclasses import asdict

        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict):
        from dataclasses import fields

        if not isinstance(values, dict):
            raise ValueError(f"{cls.__name__} must be a mapping, got {type(values).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def from_json(cls, text: str):
        import json

        try:
            values = json.loads(text)
        except RecursionError:  # a hostile file's metadata nested 100k deep
            raise ValueError(f"{cls.__name__}: the config JSON is nested too deeply") from None
        return cls.from_dict(values)


class UnknownNetworkError(OccoError, ValueError):
    """A network name that is not registered; the message lists the registered ones."""


@dataclass(frozen=True)
class ReleasedWeights:
    """The authors' released weight file, pinned, as torchvision pins its weights."""

    url: str
    """Download URL at a fixed commit or release (never a branch)."""
    sha256: str
    """SHA-256 of the file, checked after every download and before every load."""
    filename: str
    """Name of the file in the torch hub cache (``$TORCH_HOME/hub/checkpoints``)."""
    licence: str = ""
    """Licence of the weights as their authors state it."""
    trained_on: str = ""
    """The data the weights were trained on."""


@dataclass(frozen=True)
class MethodInfo:
    """What ``occo methods`` says about a network's method."""

    title: str = ""
    """The method's paper, short form (e.g. "SeAFusion: semantic-aware real-time fusion")."""
    venue: str = ""
    """Where and when it was published (e.g. "Information Fusion 2022")."""
    code_url: str = ""
    """The authors' code repository."""
    code_licence: str = ""
    """Licence of the authors' code."""
    color: str = ""
    """How colour is handled (e.g. "fuses visible Y; Cb/Cr of the visible image kept")."""
    authors_output: str = ""
    """What the authors' own test script writes, where occo's default differs from it."""


def _identity(model: Any) -> Any:
    return model


@dataclass(frozen=True)
class NetworkSpec:
    """One registered network: how to build it and what occo needs to know to run it."""

    name: str
    """Registry name (``--method`` / ``--network``), lower case."""
    config_class: type
    """The config dataclass; needs ``to_json()``, ``from_json(text)`` and ``from_dict(d)``."""
    build: Callable[[Any], Any]
    """``config -> nn.Module`` (random weights, train mode)."""
    finish: Callable[[Any, Any], Any]
    """``(raw, config) -> fused Y in [0, 1]``: the output convention (min-max, clamp...)."""
    train_finish: Callable[[Any, Any], Any] | None = None
    """``(raw, config) -> fused Y`` in training where it differs from :attr:`finish`
    (FIFN's is not clamped, so the losses see pixels outside the range); None: finish."""
    receptive_margin: Callable[[Any], int | None] = lambda config: None
    """``config -> px`` of context per side that fixes an output pixel exactly; None when
    the network sees the whole image (global pooling, attention over all pixels): tiles
    are then refused, never silently approximated."""
    tiled_forward: Callable[[Any, Any, Any, int], Any] | None = None
    """``(model, vi_y, ir, tile) -> raw``: the exact tiled forward pass; None with a finite
    margin: occo.models.tiling.local_tiled_forward (windows plus the margin, cores kept)."""
    size_multiple: Callable[[Any], int] = lambda config: 1
    """``config -> n``: tile windows start at multiples of n (pooling strides), so that
    tiled output equals whole-image output."""
    min_size: Callable[[Any], int] = lambda config: 1
    """``config -> px``: the smallest height or width the network takes."""
    luminance: Callable[[Any], Any] | None = None
    """``rgb (B, 3, H, W) in [0, 1] -> (B, 1, H, W)``: the visible luminance the network is
    fed, with its authors' coefficients; None: occo's (the OCCO release's YCbCr Y). A
    network that takes the RGB image itself (IFCNN's authors feed it) returns it unchanged
    (B, 3, H, W): the Fuser, its tiles and batches pass whatever this returns."""
    compose: Callable[[Any, Any], Any] | None = None
    """``(fused_y, vi_rgb) -> rgb``: how colour is put back; None: occo's (fused Y with the
    visible image's Cb/Cr, occo.data.normalize.compose_color)."""
    compose_unclamped: bool = False
    """Whether :attr:`compose` gets the finished luminance before it is clamped to [0, 1]
    (as some authors recolour it); the colour image is clamped after."""
    authors_color: bool = True
    """Whether the authors' own test script writes colour for a colour visible image.
    False: it writes the gray fused luminance; ``--authors-output`` then does the same."""
    fold: Callable[[Any], Any] = _identity
    """``model -> inference copy`` with BatchNorms folded into convolutions (or the model)."""
    memory_scale: Callable[[Any, int], float] | None = None
    """``(config, element_size) -> x``: activation memory relative to the default FIFN in
    float32, for occo.models.memory's estimate; None: no estimate (no automatic tiles)."""
    onnx: bool = True
    """Whether ``occo export`` and ``--backend onnxruntime`` support the network."""
    read_release: Callable[[Path], tuple[Any, Mapping[str, Any]]] | None = None
    """``path -> (config, state_dict in occo's names)`` for the authors' released file,
    read safely (safetensors or ``torch.load(weights_only=True)``); None: none released."""
    release: ReleasedWeights | None = None
    """The authors' pinned weight file, fetched when no ``--weights`` is given."""
    info: MethodInfo = field(default_factory=MethodInfo)
    """What ``occo methods`` shows."""

    def make(self, config: Any = None) -> Any:
        """Build the network (``config`` default: the config class's defaults)."""
        return self.build(config if config is not None else self.config_class())


def register_network(spec: NetworkSpec) -> NetworkSpec:
    """Add ``spec`` to the registry (called by the module that defines the network)."""
    existing = _REGISTRY.get(spec.name)
    if existing is not None and existing.config_class is not spec.config_class:
        raise ValueError(f"network {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def network_names() -> list[str]:
    """Every registered network name, occo's default first (also networks registered at
    run time, e.g. by a test or a plug-in)."""
    from importlib.util import find_spec

    names = {n for n, module in _MODULES.items() if _module_exists(module, find_spec)}
    names |= set(_REGISTRY)
    return [DEFAULT_NETWORK] + sorted(names - {DEFAULT_NETWORK})


def _module_exists(module: str, find_spec) -> bool:
    try:
        return find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def get_network(name: str) -> NetworkSpec:
    """The spec of a registered network.

    Raises:
        UnknownNetworkError: no such network (the message lists the registered ones).
    """
    key = name.strip().lower()
    if key not in _REGISTRY:
        module = _MODULES.get(key)
        if module is None or key not in network_names():
            raise UnknownNetworkError(
                f"unknown network {name!r}; registered: {', '.join(network_names())} "
                "(`occo methods` describes them)"
            )
        importlib.import_module(module)
        if key not in _REGISTRY:  # the module's own bug, not the user's
            raise RuntimeError(f"{module} did not register network {key!r}")
    return _REGISTRY[key]


def spec_of(model: Any) -> NetworkSpec:
    """The spec of a network instance (or of an engine carrying ``network_name``).

    Raises:
        TypeError: ``model`` is not a registered network.
    """
    name = getattr(model, "network_name", None)
    if not isinstance(name, str):
        raise TypeError(
            f"{type(model).__name__} is not a registered occo network (no network_name); "
            "register it with occo.models.registry.register_network"
        )
    return get_network(name)


def is_engine(model: Any) -> bool:
    """True for an engine that runs a registered network outside PyTorch (e.g. ONNX)."""
    import torch

    return not isinstance(model, torch.nn.Module)


def fold_conv_batchnorm(model: Any) -> Any:
    """An inference copy of ``model`` with every BatchNorm2d that directly follows a
    Conv2d inside an ``nn.Sequential`` folded into that convolution (exact in eval mode).

    The generic :attr:`NetworkSpec.fold` for networks built from Sequential conv-BN
    blocks; networks with other layouts write their own.
    """
    import copy

    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:], strict=False):
            conv, bn = module._modules[first], module._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module._modules[first] = fuse_conv_bn_eval(conv, bn)
                module._modules[second] = nn.Identity()
    return folded


@dataclass(frozen=True)
class MethodSummary:
    """One row of ``occo methods``: a registered network described."""

    name: str
    """Registry name."""
    title: str
    """The method's paper."""
    venue: str
    """Venue and year."""
    parameters: int
    """Parameters of the default config (the released network)."""
    gflops_640x480: float
    """Giga floating-point operations of one 640x480 pair (a multiply-add counts as 2,
    as torch.utils.flop_counter counts them; many papers quote multiply-adds)."""
    code_url: str
    """The authors' code."""
    code_licence: str
    """Licence of the authors' code."""
    weights_licence: str
    """Licence of the released weights."""
    trained_on: str
    """What the released (or occo's default) weights were trained on."""
    color: str
    """Colour handling."""
    authors_output: str
    """What the authors' script writes where occo's default differs."""
    tiling: str
    """Exact tiling (its margin in px) or why not."""
    onnx: bool
    """Whether it exports to ONNX."""
    weights_url: str
    """The pinned URL occo fetches the weights from ("" for FIFN: bundled)."""


def describe_network(name: str) -> MethodSummary:
    """Build ``name``'s network on the meta device (nothing allocated) to count its
    parameters and FLOPs, and gather what its registry entry says."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    spec = get_network(name)
    config = spec.config_class()
    with torch.device("meta"):
        model = spec.build(config).eval()
        vi_y, ir = torch.empty(1, 1, 480, 640), torch.empty(1, 1, 480, 640)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(vi_y, ir)
    margin = spec.receptive_margin(config)
    release = spec.release
    weights_licence = release.licence if release else ""
    trained_on = release.trained_on if release else ""
    if spec.name == DEFAULT_NETWORK:  # occo's bundled weights, described by their metadata
        from occo.models.checkpoint import DEFAULT_WEIGHTS, read_weights_metadata

        if DEFAULT_WEIGHTS.is_file():
            meta = read_weights_metadata(DEFAULT_WEIGHTS)
            weights_licence = "MIT (occo's bundled default weights)"
            trained_on = f"{meta.get('trained_on', '')}; {meta.get('trained_with', '')}".strip("; ")
    return MethodSummary(
        name=spec.name,
        title=spec.info.title,
        venue=spec.info.venue,
        parameters=sum(p.numel() for p in model.parameters()),
        gflops_640x480=counter.get_total_flops() / 1e9,
        code_url=spec.info.code_url,
        code_licence=spec.info.code_licence,
        weights_licence=weights_licence,
        trained_on=trained_on,
        color=spec.info.color,
        authors_output=spec.info.authors_output,
        tiling=f"exact ({margin} px margin)" if margin is not None else "no (sees the whole image)",
        onnx=spec.onnx,
        weights_url=release.url if release else "",
    )
