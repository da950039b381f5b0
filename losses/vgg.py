"""The frozen VGG19 feature extractor of the contextual contrastive loss (OCCO, Section 3).

Only ``features`` up to relu5_4 is built (the classifier holds 85 % of VGG19's parameters
and the loss never uses it). Layer indices match torchvision's ``vgg19().features`` so its
state dicts load as they are. Weights come from torchvision's ImageNet checkpoint (the torch
hub cache, downloaded when possible), from a local file, or, only when asked for explicitly,
from a random initialisation (tests).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from occo.data.color import LUMA_WEIGHTS  # collapses conv1_1 to gray (the release's)
from occo.data.errors import OccoError

# torchvision's configuration "E" (VGG19) up to conv5_4; "M" is a 2x2 max-pool.
_VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M")
_VGG19_CFG += (512, 512, 512, 512)


def _layer_names() -> dict[str, int]:
    """Name -> index in ``features`` of each ReLU (relu1_1 .. relu5_4)."""
    names, index, block, conv = {}, 0, 1, 1
    for item in _VGG19_CFG:
        if item == "M":
            index, block, conv = index + 1, block + 1, 1
        else:
            names[f"relu{block}_{conv}"] = index + 1  # the conv, then its ReLU
            index, conv = index + 2, conv + 1
    return names


#: Index in torchvision's ``vgg19().features`` of each ReLU output, relu1_1 .. relu5_4.
LAYER_INDEX: dict[str, int] = _layer_names()
#: The layers the contextual contrastive loss uses.
DEFAULT_LAYERS = ("relu4_4", "relu5_4")
#: The background term's layer: relu1_1 of conv1_1 collapsed to one gray channel.
GRAY_LAYER = "relu1_1_gray"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGWeightsError(OccoError):
    """VGG19 weights are missing or unreadable; the message says which file and what to do."""


def _make_features() -> nn.Sequential:
    """VGG19 ``features[:36]`` (conv1_1 .. relu5_4), torchvision's layer order."""
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG19_CFG:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, item, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = item
    return nn.Sequential(*layers)


def imagenet_weights_url() -> str:
    """URL of torchvision's ``VGG19_Weights.IMAGENET1K_V1`` checkpoint."""
    from torchvision.models import VGG19_Weights

    return VGG19_Weights.IMAGENET1K_V1.url


def imagenet_weights_path() -> Path:
    """Where torch hub caches the ImageNet VGG19 checkpoint: ``<hub dir>/checkpoints/<file>``."""
    url = imagenet_weights_url()
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _load_imagenet_state_dict(download: bool) -> Mapping[str, torch.Tensor]:
    """torchvision's ImageNet VGG19 state dict from the hub cache, downloading it if allowed."""
    path = imagenet_weights_path()
    url = imagenet_weights_url()
    if path.is_file():
        return _read_state_dict(path)
    how = (
        f"download {url} and put it at {path} (or pass a local copy with vgg_weights=PATH, "
        "--vgg-weights PATH on the command line)"
    )
    if not download:
        raise VGGWeightsError(f"VGG19 ImageNet weights not found at {path}: {how}")
    try:
        # Looked up at call time (not torchvision's bound copy) so tests can stub it out.
        return torch.hub.load_state_dict_from_url(
            url, model_dir=str(path.parent), progress=False, check_hash=True, weights_only=True
        )
    except Exception as exc:  # no network, proxy, disk full, bad hash: all the same advice
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise VGGWeightsError(
            f"VGG19 ImageNet weights not found at {path} and the download failed ({reason}): {how}"
        ) from exc


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    """A state dict from a ``.pth``/``.pt`` (torch) or ``.safetensors`` file."""
    if not path.is_file():
        raise VGGWeightsError(f"VGG19 weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise VGGWeightsError(
            f"cannot read VGG19 weights from {path} ({exc.__class__.__name__}): expected a "
            "torchvision vgg19 state dict (.pth or .safetensors)"
        ) from exc
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise VGGWeightsError(f"{path} does not hold a state dict (found {type(state).__name__})")
    return state


def _features_state(state: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The ``features`` entries up to conv5_4 of a full or features-only vgg19 state dict."""
    wanted = _make_features().state_dict().keys()
    prefix = "features." if any(k.startswith("features.") for k in state) else ""
    out, missing = {}, []
    for key in wanted:
        value = state.get(prefix + key)
        if value is None:
            missing.append(prefix + key)
        else:
            out[key] = value
    if missing:
        raise VGGWeightsError(
            f"{source} is not a torchvision vgg19 state dict: missing {', '.join(missing[:3])}"
            + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        )
    return out


class VGGFeatures(nn.Module):
    """Frozen VGG19 up to relu5_4 returning named ReLU outputs from one forward pass.

    Inputs are images in [0, 1], gray ``(B, 1, H, W)`` (repeated to RGB, as the release did)
    or RGB ``(B, 3, H, W)``; ImageNet normalisation happens inside. The module stays in eval
    mode and its parameters never require grad; gradients still flow to the input.

    Args:
        weights: ``"imagenet"`` for torchvision's ``VGG19_Weights.IMAGENET1K_V1`` (from the
            torch hub cache, downloaded if missing and ``download``), or a path to a local
            vgg19 state dict (``.pth`` or ``.safetensors``; full model or ``features`` only).
            Ignored when ``random_init``.
        random_init: random weights; only for tests and benchmarks that say so.
        device: device of the parameters.
        dtype: floating dtype of the parameters.
        channels_last: keep the convolutions in channels-last memory format (faster on GPUs
            with tensor cores, notably under autocast).
        download: allow downloading the ImageNet checkpoint when it is not cached.

    Raises:
        VGGWeightsError: the weights are missing or unreadable (message says what to do).
    """

    def __init__(
        self,
        weights: str | Path | None = "imagenet",
        random_init: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        channels_last: bool = False,
        download: bool = True,
    ) -> None:
        super().__init__()
        self.features = _make_features()
        if random_init:
            self.source = "random"
            for module in self.features.modules():
                if isinstance(module, nn.Conv2d):  # torchvision's VGG initialisation
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(module.bias)
        elif weights is None:
            raise ValueError("no VGG19 weights given: pass weights or random_init=True explicitly")
        else:
            if str(weights) == "imagenet":
                state, self.source = _load_imagenet_state_dict(download), "imagenet"
            else:
                path = Path(weights).expanduser()
                state, self.source = _read_state_dict(path), str(path)
            self.features.load_state_dict(_features_state(state, self.source))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.channels_last = channels_last
        self.requires_grad_(False)
        self.to(device=device, dtype=dtype)
        if channels_last:
            self.to(memory_format=torch.channels_last)
        super().train(False)

    def train(self, mode: bool = True) -> VGGFeatures:
        """Stays in eval mode whatever the caller asks (the extractor is frozen)."""
        return super().train(False)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected images (B, 1|3, H, W), got {tuple(images.shape)}")
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def forward(
        self, images: torch.Tensor, layers: Iterable[str] = DEFAULT_LAYERS
    ) -> dict[str, torch.Tensor]:
        """Named features of ``images`` from a single pass, stopping at the deepest layer asked.

        Args:
            images: ``(B, 1, H, W)`` gray or ``(B, 3, H, W)`` RGB in [0, 1].
            layers: names from :data:`LAYER_INDEX` (``relu1_1`` .. ``relu5_4``) and/or
                :data:`GRAY_LAYER`.

        Returns:
            Dict name -> ``(B, C_layer, H / 2^k, W / 2^k)`` feature map.
        """
        layers = tuple(layers)
        unknown = [n for n in layers if n not in LAYER_INDEX and n != GRAY_LAYER]
        if unknown:
            raise ValueError(f"unknown VGG19 layer(s) {unknown}; known: {list(LAYER_INDEX)}")
        images = self._prepare(images)
        out: dict[str, torch.Tensor] = {}
        if GRAY_LAYER in layers:
            out[GRAY_LAYER] = self.gray_relu1_1(images)
        wanted = {LAYER_INDEX[n]: n for n in layers if n in LAYER_INDEX}
        if not wanted:
            return out
        x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)  # (B, 3, H, W)
        last = max(wanted)
        for index, module in enumerate(self.features):
            x = module(x)
            if index in wanted:
                out[wanted[index]] = x
            if index == last:
                break
        return out

    def gray_features(
        self, images: torch.Tensor, layers: Iterable[str] = DEFAULT_LAYERS
    ) -> dict[str, torch.Tensor]:
        """Named features of the gray VGG19: conv1_1 collapsed to one gray channel, no
        ImageNet normalisation, then the usual layers.

        This is the VGG19 of CoCoNet's losses (Liu et al. 2023, github runjia0124/CoCoNet)
        and of the Euclidean contrastive losses in OCCO's release (its ``Vgg19`` class).

        Args:
            images: ``(B, 1, H, W)`` gray, in whatever range the loss uses ([0, 1], or
                [-1, 1] as CoCoNet trained); RGB is converted to gray first.
            layers: names from :data:`LAYER_INDEX`.

        Returns:
            Dict name -> feature map, from a single pass stopping at the deepest layer asked.
        """
        layers = tuple(layers)
        unknown = [n for n in layers if n not in LAYER_INDEX]
        if unknown:
            raise ValueError(f"unknown VGG19 layer(s) {unknown}; known: {list(LAYER_INDEX)}")
        wanted = {LAYER_INDEX[n]: n for n in layers}
        x = self.gray_relu1_1(images)  # features[0] and [1], collapsed
        out = {wanted[1]: x} if 1 in wanted else {}
        last = max(wanted, default=1)
        for index in range(2, last + 1):
            x = self.features[index](x)
            if index in wanted:
                out[wanted[index]] = x
        return out

    def gray_relu1_1(self, images: torch.Tensor) -> torch.Tensor:
        """relu1_1 with conv1_1 collapsed to one gray channel, on un-normalised input.

        Args:
            images: ``(B, 1, H, W)`` gray in [0, 1] (RGB is converted to gray first).

        Returns:
            ``(B, 64, H, W)``.
        """
        images = self._prepare(images)
        conv = self.features[0]
        gray = conv.weight.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
        if images.shape[1] == 3:
            images = (images * gray.to(images.dtype)).sum(dim=1, keepdim=True)
        weight = (conv.weight * gray).sum(dim=1, keepdim=True)  # (64, 1, 3, 3)
        return F.relu(F.conv2d(images, weight, conv.bias, padding=1))


def build_vgg_features(
    vgg_weights: str | Path | None = None,
    *,
    random_init: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    channels_last: bool = False,
    download: bool = True,
) -> VGGFeatures:
    """The extractor for a loss configuration's ``vgg_weights`` setting.

    Args:
        vgg_weights: local vgg19 state dict, or None for torchvision's ImageNet weights.
        random_init: random weights (tests only; ``vgg_weights`` is then ignored).
        device: device of the parameters.
        dtype: dtype of the parameters.
        channels_last: channels-last convolutions.
        download: allow downloading the ImageNet checkpoint when it is not cached.

    Returns:
        A frozen :class:`VGGFeatures` in eval mode.
    """
    return VGGFeatures(
        weights="imagenet" if vgg_weights is None else vgg_weights,
        random_init=random_init,
        device=device,
        dtype=dtype,
        channels_last=channels_last,
        download=download,
    )
