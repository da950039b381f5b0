"""ReFusion (Bai et al., IJCV 2024: learning image fusion from reconstruction with a learnable
loss via meta-learning), the authors' released fusion network.

Two 3x3 stems, two Restormer blocks per source (channel-wise "transposed" attention and a
gated depthwise feed-forward), a cross-attention fusion module (AFM), two Restormer blocks
at twice the width and two 3x3 convs to a sigmoid. The attention's Gram matrices sum over
all pixels, so the output depends on the whole image: no exact tiling. The authors'
``test.py`` feeds the two Y channels (OpenCV's YCrCb of the RGB images, /255) as one
2-channel tensor, infrared first; min-max normalises the output; puts the visible image's
Cr/Cb back with OpenCV, clips to [0, 255] and saves with imageio, which stretches each
float image to its own min and max and rounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from occo.models.fifn import minmax_normalize
from occo.models.peers.common import fit_state, load_torch_release, tensor_dict
from occo.models.registry import (
    JsonConfig,
    MethodInfo,
    NetworkSpec,
    ReleasedWeights,
    register_network,
)

_VARIANTS = ("ivif", "mif")


@dataclass(frozen=True)
class ReFusionConfig(JsonConfig):
    """ReFusion's task variant and sizes; the defaults are ReFusion_IVIF.pth's."""

    variant: str = "ivif"
    """Which released network: "ivif" (infrared-visible: the infrared image goes first) or
    "mif" (medical, ReFusion_MIF.pth: the CT/PET/SPECT image goes first; pass it as the
    visible image, the MRI as the infrared, so that its colour is kept)."""
    dim: int = 16
    """Channels of each source's stem and Restormer blocks (the decoder has twice)."""
    blocks: int = 2
    """Restormer blocks per encoder and in the decoder."""
    heads: int = 8
    """Attention heads (dim and 2 dim must be multiples)."""
    ffn_expansion: float = 2.0
    """Feed-forward hidden width relative to the block's width."""

    def __post_init__(self) -> None:
        if self.variant not in _VARIANTS:
            raise ValueError(f"ReFusionConfig.variant must be ivif or mif, got {self.variant!r}")
        if min(self.dim, self.blocks, self.heads) < 1 or self.dim % self.heads:
            raise ValueError(
                f"ReFusionConfig needs positive sizes and dim a multiple of heads, got "
                f"dim={self.dim}, blocks={self.blocks}, heads={self.heads}"
            )


def _conv(cin: int, cout: int, kernel: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False)


class _ChannelNorm(nn.Module):
    """LayerNorm over the channels of each pixel (biased variance, eps 1e-5)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        return (x - mean) / torch.sqrt(var + 1e-5) * self.weight[:, None, None] + self.bias[
            :, None, None
        ]


def _heads(x: Tensor, heads: int) -> Tensor:
    """(B, C, H, W) -> (B, heads, C / heads, H W)."""
    b, c, h, w = x.shape
    return x.reshape(b, heads, c // heads, h * w)


def _channel_attention(q: Tensor, k: Tensor, v: Tensor, temperature: Tensor, heads: int) -> Tensor:
    """Transposed attention: softmax over channels of normalised q k^T, applied to v."""
    b, c, h, w = v.shape
    q = F.normalize(_heads(q, heads), dim=-1)
    k = F.normalize(_heads(k, heads), dim=-1)
    attn = (q @ k.transpose(-2, -1) * temperature).softmax(dim=-1)
    return (attn @ _heads(v, heads)).reshape(b, c, h, w)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = _conv(dim, 3 * dim)
        self.qkv_dwconv = _conv(3 * dim, 3 * dim, 3, groups=3 * dim)
        self.project_out = _conv(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        return self.project_out(_channel_attention(q, k, v, self.temperature, self.heads))


class _FeedForward(nn.Module):
    def __init__(self, dim: int, expansion: float) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = _conv(dim, 2 * hidden)
        self.dwconv = _conv(2 * hidden, 2 * hidden, 3, groups=2 * hidden)
        self.project_out = _conv(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


class _Block(nn.Module):
    """A Restormer block: x + attention(norm x), then x + feed-forward(norm x)."""

    def __init__(self, dim: int, heads: int, expansion: float) -> None:
        super().__init__()
        self.norm1 = _ChannelNorm(dim)
        self.attn = _Attention(dim, heads)
        self.norm2 = _ChannelNorm(dim)
        self.ffn = _FeedForward(dim, expansion)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class _CrossFusion(nn.Module):
    """The release's AFM: each source attends to the other's keys, then gated mixing."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.temperature1 = nn.Parameter(torch.ones(heads, 1, 1))
        self.temperature2 = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv1, self.qkv2 = _conv(dim, 3 * dim), _conv(dim, 3 * dim)
        self.qkv1_dwconv = _conv(3 * dim, 3 * dim, 3, groups=3 * dim)
        self.qkv2_dwconv = _conv(3 * dim, 3 * dim, 3, groups=3 * dim)
        self.project_mid1, self.project_mid2 = _conv(dim, dim), _conv(dim, dim)
        self.project_E = _conv(2 * dim, 8 * dim)
        self.project_E_d = _conv(8 * dim, 8 * dim, 3, groups=8 * dim)
        self.project_E1, self.project_E2 = _conv(dim, 4 * dim), _conv(dim, 4 * dim)
        self.project_E1_d = _conv(4 * dim, 4 * dim, 3, groups=4 * dim)
        self.project_E2_d = _conv(4 * dim, 4 * dim, 3, groups=4 * dim)
        self.project_out1, self.project_out2 = _conv(4 * dim, 2 * dim), _conv(4 * dim, 2 * dim)

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        q1, k1, v1 = self.qkv1_dwconv(self.qkv1(x1)).chunk(3, dim=1)
        q2, k2, v2 = self.qkv2_dwconv(self.qkv2(x2)).chunk(3, dim=1)
        x1 = x1 + self.project_mid1(_channel_attention(q2, k1, v1, self.temperature1, self.heads))
        x2 = x2 + self.project_mid2(_channel_attention(q1, k2, v2, self.temperature2, self.heads))
        both = torch.cat((x1, x2), 1)
        g1, g2 = self.project_E_d(self.project_E(both)).chunk(2, dim=1)
        x1 = F.gelu(g1) * self.project_E1_d(self.project_E1(x1))
        x2 = F.gelu(g2) * self.project_E2_d(self.project_E2(x2))
        return both + self.project_out1(x1) + self.project_out2(x2)


class ReFusion(nn.Module):
    """ReFusion's fusion network; ``forward`` returns the sigmoid output in (0, 1).

    Args:
        config: variant and sizes (default: ReFusion_IVIF.pth's).
    """

    #: Registry name (occo.models.registry).
    network_name = "refusion"

    def __init__(self, config: ReFusionConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or ReFusionConfig()
        self.project_in_1 = _conv(1, c.dim, 3)
        self.project_in_2 = _conv(1, c.dim, 3)
        self.encoder1 = nn.ModuleList(
            _Block(c.dim, c.heads, c.ffn_expansion) for _ in range(c.blocks)
        )
        self.encoder2 = nn.ModuleList(
            _Block(c.dim, c.heads, c.ffn_expansion) for _ in range(c.blocks)
        )
        self.FM = _CrossFusion(c.dim, c.heads)
        self.decoder = nn.ModuleList(
            _Block(2 * c.dim, c.heads, c.ffn_expansion) for _ in range(c.blocks)
        )
        self.project_out_0 = _conv(2 * c.dim, c.dim, 3)
        self.project_out_1 = _conv(c.dim, 1, 3)

    def forward(self, vi_y: Tensor, ir: Tensor) -> Tensor:
        first, second = (ir, vi_y) if self.config.variant == "ivif" else (vi_y, ir)
        x1, x2 = self.project_in_1(first), self.project_in_2(second)
        for block in self.encoder1:
            x1 = block(x1)
        for block in self.encoder2:
            x2 = block(x2)
        out = self.FM(x1, x2)
        for block in self.decoder:
            out = block(out)
        out = F.leaky_relu(self.project_out_0(out), 0.01)
        return torch.sigmoid(self.project_out_1(out))


def _finish(raw: Tensor, config: ReFusionConfig) -> Tensor:
    return minmax_normalize(raw)


def _compose(fused_y: Tensor, vi: Tensor) -> Tensor:
    """Visible Cr/Cb back in, clipped, then the image stretched to its own min and max (as
    imageio saves a float image); a gray result is already stretched."""
    from occo.data.normalize import compose_color

    return minmax_normalize(compose_color(fused_y, vi)).clamp_(0, 1)


def _release_key(key: str) -> str | None:
    # MetaConv2d stores each weight twice ('x.weight' and 'x.conv.weight', one tensor).
    if key.endswith(".conv.weight"):
        return None
    return key.replace(".body.", ".")


def _read_release(path, variant: str | None = None):
    from occo.models.checkpoint import WeightsError

    loaded = load_torch_release(path, "ReFusion")
    state = tensor_dict(loaded, path, "ReFusion", entry="state_dict")
    for key, value in state.items():
        twin = key.removesuffix(".conv.weight") + ".weight"
        if key.endswith(".conv.weight") and twin in state and not torch.equal(value, state[twin]):
            raise WeightsError(f"{path}: {key} and {twin} differ; not a ReFusion release file")
    state = {new: v for k, v in state.items() if (new := _release_key(k)) is not None}
    if variant is None:
        variant = "mif" if "MIF" in str(getattr(path, "name", path)).upper() else "ivif"
    config = ReFusionConfig(variant=variant)
    return config, fit_state(ReFusion(config), state, path, "ReFusion")


def _memory_scale(config: ReFusionConfig, element_size: int) -> float:
    # Rough: the fusion module's 8 dim gate planes and the decoder's feed-forward planes.
    return (8 * config.dim + 8 * config.dim * config.ffn_expansion / 2) / 57.5 * element_size / 4


register_network(
    NetworkSpec(
        name="refusion",
        config_class=ReFusionConfig,
        build=ReFusion,
        finish=_finish,
        compose=_compose,
        receptive_margin=lambda config: None,  # channel attention sums over the whole image
        memory_scale=_memory_scale,
        onnx=True,
        read_release=_read_release,
        release=ReleasedWeights(
            url="https://github.com/HaowenBai/ReFusion/raw/"
            "54b733420e67042aa6ddd146ec3edef902122930/models/ReFusion_IVIF.pth",
            sha256="1b8358d8dab5e95c9d3f668782abda85359685669444946001ac41ea96891b2c",
            filename="ReFusion_IVIF.pth",
            licence="not stated",
            trained_on="infrared-visible pairs (the paper's IVIF set; MIF file: medical pairs)",
        ),
        info=MethodInfo(
            title="ReFusion: learning image fusion from reconstruction with learnable loss "
            "via meta-learning",
            venue="IJCV 2024",
            code_url="https://github.com/HaowenBai/ReFusion",
            code_licence="not stated",
            color="fuses visible Y (OpenCV YCrCb); the visible Cr/Cb put back, then the RGB "
            "image stretched to its min and max, as the authors save it",
            authors_output="colour (and a gray copy); rounded",
        ),
    )
)
