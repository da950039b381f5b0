"""DenseFuse (Li and Wu, IEEE TIP 2019), the authors' PyTorch release (densefuse-pytorch).

One encoder (a 3x3 conv and a three-layer dense block, 64 channels) applied to the
infrared and to the visible image, the two features averaged (the release's default
'addition' strategy), and four 3x3 decoder convs; every conv is reflection-padded and
followed by a ReLU, the last one included. The authors' test script feeds both images
as 8-bit gray in 0-255 (``scipy.misc.imread(mode='L')``, PIL's integer luma for a colour
image), clamps the output to [0, 255] and truncates it to uint8 (occo rounds); it writes
gray.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from occo.models.peers.common import fit_state, load_torch_release, tensor_dict
from occo.models.registry import (
    JsonConfig,
    MethodInfo,
    NetworkSpec,
    ReleasedWeights,
    register_network,
)


@dataclass(frozen=True)
class DenseFuseConfig(JsonConfig):
    """DenseFuse's widths; the defaults are the released gray network's."""

    stem: int = 16
    """Channels of the encoder's first conv."""
    growth: int = 16
    """Channels each of the three dense layers adds (the encoder gives stem + 3 growth)."""
    decoder: tuple[int, int, int] = (64, 32, 16)
    """Output channels of the first three decoder convs (the fourth gives the image)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "decoder", tuple(int(c) for c in self.decoder))
        if len(self.decoder) != 3 or min(self.stem, self.growth, *self.decoder) < 1:
            raise ValueError(
                "DenseFuseConfig needs positive stem and growth and 3 decoder widths, "
                f"got {self.stem}, {self.growth}, {self.decoder}"
            )


class _Conv(nn.Module):
    """Reflection pad, 3x3 conv (``.conv2d``, the release's name), ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv2d = nn.Conv2d(cin, cout, 3)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect")))


class _DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.dense_conv = _Conv(cin, growth)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat((x, self.dense_conv(x)), 1)


class _DenseBlock(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.denseblock = nn.Sequential(*(_DenseLayer(cin + i * growth, growth) for i in range(3)))

    def forward(self, x: Tensor) -> Tensor:
        return self.denseblock(x)


class DenseFuse(nn.Module):
    """DenseFuse with the addition (mean) fusion rule; ``forward`` returns the decoder's
    output on the 0-255 scale divided by 255.

    Args:
        config: widths (default: the released gray network's).
    """

    #: Registry name (occo.models.registry).
    network_name = "densefuse"

    def __init__(self, config: DenseFuseConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DenseFuseConfig()
        width = config.stem + 3 * config.growth
        self.conv1 = _Conv(1, config.stem)
        self.DB1 = _DenseBlock(config.stem, config.growth)
        c2, c3, c4 = config.decoder
        self.conv2 = _Conv(width, c2)
        self.conv3 = _Conv(c2, c3)
        self.conv4 = _Conv(c3, c4)
        self.conv5 = _Conv(c4, 1)

    def encode(self, image: Tensor) -> Tensor:
        """(B, 1, H, W) on the 0-255 scale -> encoder features."""
        return self.DB1(self.conv1(image))

    def forward(self, vi_y: Tensor, ir: Tensor) -> Tensor:
        # The release runs the encoder on each image separately, on 0-255 inputs.
        features = (self.encode(ir * 255) + self.encode(vi_y * 255)) / 2
        out = self.conv5(self.conv4(self.conv3(self.conv2(features))))
        return out / 255


def pil_luma(rgb: Tensor) -> Tensor:
    """The gray PIL makes of an 8-bit RGB image (``convert('L')``: ITU-R 601-2 luma in
    16-bit fixed point, rounded), as the authors' ``imread(mode='L')`` reads the visible.

    Args:
        rgb: (B, 3, H, W) in [0, 1], 8-bit values (x / 255); (B, 1, H, W) passes through.

    Returns:
        (B, 1, H, W) in [0, 1], 8-bit values.
    """
    if rgb.shape[1] == 1:
        return rgb
    q = (rgb * 255).round().to(torch.int64)
    y = (q[:, 0:1] * 19595 + q[:, 1:2] * 38470 + q[:, 2:3] * 7471 + 0x8000) >> 16
    return y.to(rgb.dtype) / 255


def _finish(raw: Tensor, config: DenseFuseConfig) -> Tensor:
    return raw.clamp(0, 1)  # the release clamps to [0, 255]; no normalisation


def _read_release(path):
    loaded = load_torch_release(path, "DenseFuse")
    state = tensor_dict(loaded, path, "DenseFuse", entry="state_dict")
    if "conv1.conv2d.weight" in state and state["conv1.conv2d.weight"].shape[1] == 3:
        from occo.models.checkpoint import WeightsError

        raise WeightsError(
            f"{path} is DenseFuse's RGB network (3-channel input); occo fuses a luminance: "
            "use densefuse_gray.model"
        )
    config = DenseFuseConfig()
    return config, fit_state(DenseFuse(config), state, path, "DenseFuse")


def _memory_scale(config: DenseFuseConfig, element_size: int) -> float:
    # Rough: two encoders' full-resolution features plus the decoder's first planes.
    width = config.stem + 3 * config.growth
    return (2 * width + sum(config.decoder)) / 57.5 * element_size / 4


register_network(
    NetworkSpec(
        name="densefuse",
        config_class=DenseFuseConfig,
        build=DenseFuse,
        finish=_finish,
        # 3x3 conv + three dense 3x3 convs + four decoder 3x3 convs (reflection padding).
        receptive_margin=lambda config: 8,
        min_size=lambda config: 2,  # reflection padding needs 2 px
        luminance=pil_luma,
        authors_color=False,
        memory_scale=_memory_scale,
        onnx=True,
        read_release=_read_release,
        release=ReleasedWeights(
            url="https://github.com/hli1221/densefuse-pytorch/raw/"
            "4394b63e9295db1c6b7a5c3664551c90f0605f2b/models/densefuse_gray.model",
            sha256="b34cf3650f04161b31ac2467decfeedf7eba39165b7618f846e0f298ecd2ac65",
            filename="densefuse_gray.model",
            licence="not stated",
            trained_on="MS-COCO 2014 (autoencoder, pixel + SSIM loss)",
        ),
        info=MethodInfo(
            title="DenseFuse: a fusion approach to infrared and visible images",
            venue="IEEE TIP 2019",
            code_url="https://github.com/hli1221/densefuse-pytorch",
            code_licence="not stated",
            color="fuses the visible image's PIL gray (integer luma); occo puts the visible "
            "Cb/Cr back",
            authors_output="gray; uint8 truncated (occo rounds: about 0.5 grey level)",
        ),
    )
)
