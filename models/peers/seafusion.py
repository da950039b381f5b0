"""SeAFusion's fusion network (Tang et al., Information Fusion 2022), as its authors released it.

Two encoders (visible Y, infrared), each a 3x3 conv and two residual gradient dense blocks
(a two-conv dense block beside a Sobel gradient path), concatenated and decoded by four
3x3 convs to ``tanh / 2 + 0.5``. The authors' test script then puts the visible Cb/Cr
back, clamps and min-max normalises the RGB image as a whole (VIF-Benchmark's
``SeAFusion/SeAFusion.py`` and ``utils.py``), and truncates to uint8 (occo rounds).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from occo.models.fifn import minmax_normalize
from occo.models.peers.common import fit_state, load_torch_release, rename, tensor_dict
from occo.models.registry import (
    JsonConfig,
    MethodInfo,
    NetworkSpec,
    ReleasedWeights,
    register_network,
)

_SOBEL = ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0))


@dataclass(frozen=True)
class SeAFusionConfig(JsonConfig):
    """SeAFusion's widths; the defaults are the released network's."""

    widths: tuple[int, int, int] = (16, 32, 48)
    """Channels after each encoder's stem conv and its two gradient dense blocks."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if len(self.widths) != 3 or min(self.widths) < 1:
            raise ValueError(f"SeAFusionConfig.widths must be 3 positive ints, got {self.widths}")


class _Conv(nn.Module):
    """A conv (``.conv``, the release's nesting) with an optional leaky ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, slope: float | None = 0.2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2)
        self.slope = slope

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return x if self.slope is None else F.leaky_relu(x, self.slope)


class _Dense(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _Conv(channels, channels)
        self.conv2 = _Conv(2 * channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.cat((x, self.conv1(x)), 1)
        return torch.cat((x, self.conv2(x)), 1)


class _Sobel(nn.Module):
    """|horizontal| + |vertical| depthwise gradient (kernels stored, as released)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        kernel = torch.tensor(_SOBEL)
        self.convx = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.convy = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        with torch.no_grad():
            self.convx.weight.copy_(kernel.expand_as(self.convx.weight))
            self.convy.weight.copy_(kernel.t().expand_as(self.convy.weight))

    def forward(self, x: Tensor) -> Tensor:
        return self.convx(x).abs() + self.convy(x).abs()


class _GradientDense(nn.Module):
    """The release's RGBD block: dense path + Sobel path, each reduced by a 1x1 conv."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.dense = _Dense(cin)
        self.convdown = _Conv(3 * cin, cout, kernel=1, slope=None)
        self.sobelconv = _Sobel(cin)
        self.convup = _Conv(cin, cout, kernel=1, slope=None)

    def forward(self, x: Tensor) -> Tensor:
        dense = self.convdown(self.dense(x))
        return F.leaky_relu(dense + self.convup(self.sobelconv(x)), 0.1)


class SeAFusion(nn.Module):
    """SeAFusion's FusionNet; ``forward`` returns ``tanh(x) / 2 + 0.5``.

    Args:
        config: widths (default: the release's).
    """

    #: Registry name (occo.models.registry).
    network_name = "seafusion"

    def __init__(self, config: SeAFusionConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or SeAFusionConfig()
        w0, w1, w2 = config.widths
        self.vis_conv, self.inf_conv = _Conv(1, w0), _Conv(1, w0)
        self.vis_rgbd1, self.inf_rgbd1 = _GradientDense(w0, w1), _GradientDense(w0, w1)
        self.vis_rgbd2, self.inf_rgbd2 = _GradientDense(w1, w2), _GradientDense(w1, w2)
        self.decode4 = _Conv(2 * w2, 2 * w1)
        self.decode3 = _Conv(2 * w1, 2 * w0)
        self.decode2 = _Conv(2 * w0, w0)
        self.decode1 = _Conv(w0, 1, slope=None)

    def forward(self, vi_y: Tensor, ir: Tensor) -> Tensor:
        vi = self.vis_rgbd2(self.vis_rgbd1(self.vis_conv(vi_y)))
        inf = self.inf_rgbd2(self.inf_rgbd1(self.inf_conv(ir)))
        x = self.decode2(self.decode3(self.decode4(torch.cat((vi, inf), 1))))
        return torch.tanh(self.decode1(x)) / 2 + 0.5


def _finish(raw: Tensor, config: SeAFusionConfig) -> Tensor:
    # Already in [0, 1]; the authors' min-max is over the recoloured image (see _compose).
    return raw.clamp(0, 1)


def _compose(fused_y: Tensor, vi: Tensor) -> Tensor:
    """The authors' saving: visible Cb/Cr back in, clamp, then min-max over all channels
    of each image (for a gray visible image: the fused Y min-max normalised)."""
    from occo.data.normalize import compose_color

    return minmax_normalize(compose_color(fused_y, vi)).clamp_(0, 1)


def _read_release(path):
    loaded = load_torch_release(path, "SeAFusion")
    state = tensor_dict(loaded, path, "SeAFusion", entry="state_dict")
    # The decoder's BatchNorms are built but never applied by the release: dropped.
    state = rename(state, lambda key: None if ".bn." in key else key)
    config = SeAFusionConfig()
    return config, fit_state(SeAFusion(config), state, path, "SeAFusion")


def _memory_scale(config: SeAFusionConfig, element_size: int) -> float:
    # Rough: the two encoders' full-resolution planes against FIFN's sum(widths / 4**level).
    return 2 * sum(config.widths) / 57.5 * element_size / 4


register_network(
    NetworkSpec(
        name="seafusion",
        config_class=SeAFusionConfig,
        build=SeAFusion,
        finish=_finish,
        compose=_compose,
        # 3x3 stem + two gradient dense blocks (two 3x3 convs deep) + four 3x3 decoder convs.
        receptive_margin=lambda config: 9,
        min_size=lambda config: 2,
        memory_scale=_memory_scale,
        onnx=True,
        read_release=_read_release,
        release=ReleasedWeights(
            url="https://github.com/Linfeng-Tang/VIF-Benchmark/raw/"
            "23f2e51fc1b084310d998999222ce02dc364b6eb/Checkpoint/SeAFusion/SeAFusion.pth",
            sha256="8d65a7f9a50f36349803368cf9920f40420776995e7e8cc8a56d8d30e499431d",
            filename="SeAFusion.pth",
            licence="MIT (VIF-Benchmark, (c) 2023 Linfeng Tang)",
            trained_on="MSRS (with a segmentation loss)",
        ),
        info=MethodInfo(
            title="SeAFusion: image fusion in the loop of high-level vision tasks "
            "(semantic-aware real-time infrared and visible image fusion)",
            venue="Information Fusion 2022",
            code_url="https://github.com/Linfeng-Tang/SeAFusion",
            code_licence="MIT (VIF-Benchmark copy)",
            color="fuses visible Y (0.299/0.587/0.114); visible Cb/Cr put back, then the RGB "
            "image min-max normalised as a whole, as the authors save it",
            authors_output="colour; uint8 truncated (occo rounds: about 0.5 grey level)",
        ),
    )
)
