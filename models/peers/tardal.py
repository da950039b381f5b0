"""TarDAL's generator (Liu et al., "Target-aware dual adversarial learning and a
multi-scenario multi-modality benchmark to fuse infrared and visible for object
detection", CVPR 2022), as released.

The generator is a dense conv-BatchNorm-ReLU encoder on the concatenated (infrared,
visible) pair (each dense layer sees all earlier ones) and four 3x3 convs down to a tanh
output. The released weights read here are VIF-Benchmark's copies (``tardal.pt``,
``tardal+.pt``, ``tardal++.pt``: plain state dicts; the official ones are release assets
of JinyuanLiu-CV/TarDAL). VIF-Benchmark's test (``TarDAL/TarDAL.py``, ``pipeline/eval.py``,
``utils/image_pair.py``) reads the infrared with ``cv2.imread(GRAYSCALE)`` and the visible
as ``cvtColor(BGR2GRAY)`` (not a YCbCr Y), calls ``net(ir, vi)`` (in half precision on a
GPU; occo runs float32), clips to [0, 1], truncates ``x 255`` to uint8 (occo rounds a gray
output: about 0.5 grey level) and puts the visible image's 8-bit OpenCV Cr/Cb back with
OpenCV's YCrCb -> BGR (occo reproduces that bit for bit, truncation included).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from occo.models.peers import cv2color
from occo.models.peers.common import fit_state, load_torch_release, tensor_dict
from occo.models.registry import (
    JsonConfig,
    MethodInfo,
    NetworkSpec,
    ReleasedWeights,
    fold_conv_batchnorm,
    register_network,
)

#: SHA-256 -> which of the three released generators (VIF-Benchmark Checkpoint/TarDAL/).
_VARIANTS = {
    "e0fa61e25cffa9fb14ff17b47ea7ba237a6e8c6f37e1b9b115d63354ff0f13e1": "tardal",
    "cff3756548b511e3e415616debc557cdc85b3bb19393ca158cac8d08f232897c": "tardal+",
    "7009d125e36db043d6918d9358e10c6dca7fdf2dd08ada09c5ecd294f45f98c5": "tardal++",
}


@dataclass(frozen=True)
class TarDALConfig(JsonConfig):
    """TarDAL generator settings; the defaults are the released network's."""

    dim: int = 32
    """Channels of the encoder and of each dense layer."""
    depth: int = 3
    """Dense layers after the first conv."""
    variant: str = "tardal++"
    """Which released weights these are (informative): "tardal", "tardal+", "tardal++"
    (VIF-Benchmark's default), or "" for another file. tardal+.pt gives an output
    negatively correlated with the infrared under this input convention (see
    ../shared/peers/tardal/README.md): its convention is unverified."""

    def __post_init__(self) -> None:
        for name in ("dim", "depth"):
            object.__setattr__(self, name, int(getattr(self, name)))
        if self.dim < 1 or self.depth < 0:
            raise ValueError(f"TarDALConfig needs dim >= 1 and depth >= 0, got {self.dim}, {self.depth}")


def _conv(cin: int, cout: int, bn: bool = True, act: nn.Module | None = None) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(act or nn.ReLU())
    return nn.Sequential(*layers)


class TarDAL(nn.Module):
    """TarDAL's generator; ``forward`` returns its tanh output (clipped by ``finish``).

    Args:
        config: widths (default: the release's).
    """

    #: Registry name (occo.models.registry).
    network_name = "tardal"

    def __init__(self, config: TarDALConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or TarDALConfig()
        dim, depth = config.dim, config.depth
        self.encoder = _conv(2, dim)
        self.dense = nn.ModuleList(_conv(dim * (i + 1), dim) for i in range(depth))
        self.fuse = nn.Sequential(
            _conv(dim * (depth + 1), dim * 4, bn=False),
            _conv(dim * 4, dim * 2),
            _conv(dim * 2, dim),
            _conv(dim, 1, bn=False, act=nn.Tanh()),
        )

    def forward(self, vi_y: Tensor, ir: Tensor) -> Tensor:
        x = self.encoder(torch.cat((ir, vi_y), 1))  # infrared first, as released
        for layer in self.dense:
            x = torch.cat((x, layer(x)), 1)
        return self.fuse(x)  # (B, 1, H, W)


def _finish(raw: Tensor, config: TarDALConfig) -> Tensor:
    return raw.clamp(0, 1)


def _compose(fused_y: Tensor, vi: Tensor) -> Tensor:
    """VIF-Benchmark's colour: the fused Y truncated to 8 bits with the visible image's
    8-bit OpenCV Cr/Cb, through OpenCV's YCrCb -> RGB."""
    if vi.shape[1] == 1:
        return fused_y
    cr, cb = cv2color.ycrcb_chroma(vi)
    return cv2color.ycrcb_to_rgb_8bit(fused_y, cr, cb)


def _read_release(path):
    from occo.data.io import file_sha256

    state = tensor_dict(load_torch_release(path, "TarDAL"), path, "TarDAL")
    first = state.get("encoder.0.weight")
    depth = len({k.split(".")[1] for k in state if k.startswith("dense.")})
    config = TarDALConfig(
        dim=first.shape[0] if first is not None else 32, depth=depth,
        variant=_VARIANTS.get(file_sha256(path), ""),
    )
    return config, fit_state(TarDAL(config), state, path, "TarDAL")


def _memory_scale(config: TarDALConfig, element_size: int) -> float:
    # Full-size planes: the dense concatenation (dim * (depth + 1)) and the first fuse
    # conv's 4 dim, against FIFN's 57.5.
    return config.dim * (config.depth + 5) / 57.5 * element_size / 4


register_network(
    NetworkSpec(
        name="tardal",
        config_class=TarDALConfig,
        build=TarDAL,
        finish=_finish,
        luminance=cv2color.gray,
        compose=_compose,
        # The encoder conv, depth dense convs and four fuse convs, all 3x3.
        receptive_margin=lambda config: 1 + config.depth + 4,
        min_size=lambda config: 1,
        fold=fold_conv_batchnorm,
        memory_scale=_memory_scale,
        onnx=True,
        read_release=_read_release,
        release=ReleasedWeights(
            url="https://github.com/Linfeng-Tang/VIF-Benchmark/raw/"
            "23f2e51fc1b084310d998999222ce02dc364b6eb/Checkpoint/TarDAL/tardal++.pt",
            sha256="7009d125e36db043d6918d9358e10c6dca7fdf2dd08ada09c5ecd294f45f98c5",
            filename="tardal++.pt",
            licence="GPL-3.0 (TarDAL's code licence; VIF-Benchmark's copy, MIT repository)",
            trained_on="not stated with the copies (TarDAL trains on TNO/RoadScene/M3FD)",
        ),
        info=MethodInfo(
            title="Target-aware dual adversarial learning and a multi-scenario "
            "multi-modality benchmark to fuse infrared and visible for object detection "
            "(TarDAL generator)",
            venue="CVPR 2022",
            code_url="https://github.com/JinyuanLiu-CV/TarDAL",
            code_licence="GPL-3.0",
            color="fuses the OpenCV gray of the visible image (not its Y); the visible "
            "image's OpenCV Cr/Cb put back with OpenCV's inverse, as VIF-Benchmark saves it",
            authors_output="colour; Y truncated to uint8 before recolouring (reproduced); "
            "a gray output is rounded by occo (about 0.5 grey level)",
        ),
    )
)
