"""GIFNet (Cheng et al., "One model for ALL: low-level task interaction is a key to
task-agnostic image fusion", CVPR 2025), its fusion path as the authors' ``test.py`` runs it.

A shared dense feature extractor (three reflection-padded 3x3 conv-ReLU layers on the
concatenated (infrared, visible) pair, concatenated with the input: 98 channels) feeds a
two-branch window transformer (DehazeFormer-style: RLN norm, 8x8 windows, the second block
shifted by 4, a 5x5 depthwise conv beside the attention, 1x1 MLPs; the IVIF and MFIF
branches exchange queries and are mixed by learned weights); the test takes the MFIF
branch's output (``trainingTag=2``). A decoder merges it with the shared features (1x1
convs) and four reflection-padded 3x3 convs give ``tanh / 2 + 0.5``. The reconstruction
decoder of the release is used only in training: its tensors are dropped.

The authors' test feeds the infrared (``cv2.imread`` gray) and the visible image: gray
(``cv2.imread`` gray) or, with ``--VIS_IS_RGB``, its BT.601 Y computed in float and
truncated to uint8 (``astype``); it saves ``y x 255`` truncated to uint8 for gray (occo
rounds: about 0.5 grey level), or recombined with the visible image's Cb/Cr by its own
matrices and rounded for colour (reproduced). The RLN norm takes the mean and standard
deviation of the whole feature map, so the network sees the whole image: no tiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from occo.models.peers.common import fit_state, load_torch_release, rename, tensor_dict
from occo.models.peers.mufusion import _compose as _bt601_compose
from occo.models.registry import (
    JsonConfig,
    MethodInfo,
    NetworkSpec,
    ReleasedWeights,
    register_network,
)


@dataclass(frozen=True)
class GIFNetConfig(JsonConfig):
    """GIFNet's fusion path; the defaults are the released network's."""

    growth: int = 32
    """Channels of each shared dense layer (features: 2 + 3 x growth)."""
    heads: int = 2
    """Attention heads."""
    window: int = 8
    """Attention window side (the second block shifts by half of it)."""
    depth: int = 2
    """Transformer blocks."""
    mlp_ratio: float = 2.0
    """Hidden width of the blocks' MLPs relative to the features."""
    decoder_width: int = 64
    """``args.n``: widths of the decoder (2n, n, n/2, n/4, 1)."""

    def __post_init__(self) -> None:
        for name in ("growth", "heads", "window", "depth", "decoder_width"):
            object.__setattr__(self, name, int(getattr(self, name)))
        dim = 2 + 3 * self.growth
        if self.growth < 1 or self.heads < 1 or dim % self.heads or self.window < 2:
            raise ValueError(
                f"GIFNetConfig needs growth >= 1, heads dividing {dim} and window >= 2, got "
                f"{self.growth}, {self.heads}, {self.window}"
            )
        if self.decoder_width < 4 or self.depth < 1:
            raise ValueError("GIFNetConfig needs decoder_width >= 4 and depth >= 1")

    @property
    def dim(self) -> int:
        return 2 + 3 * self.growth


class _ConvLayer(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv2d = nn.Conv2d(cin, cout, 3, padding=1, padding_mode="reflect")

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv2d(x))


class _Shared(nn.Module):
    def __init__(self, growth: int) -> None:
        super().__init__()
        self.conv_1 = _ConvLayer(2, growth)
        self.conv_2 = _ConvLayer(2 + growth, growth)
        self.conv_3 = _ConvLayer(2 + 2 * growth, growth)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.conv_1(x)
        x2 = self.conv_2(torch.cat((x, x1), 1))
        x3 = self.conv_3(torch.cat((x, x1, x2), 1))
        return torch.cat((x, x1, x2, x3), 1)


class _RLN(nn.Module):
    """Revised LayerNorm: normalised over (C, H, W), with the mean and std re-injected."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.meta1 = nn.Conv2d(1, dim, 1)
        self.meta2 = nn.Conv2d(1, dim, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = torch.sqrt((x - mean).pow(2).mean(dim=(1, 2, 3), keepdim=True) + self.eps)
        return (x - mean) / std * self.weight + self.bias, self.meta1(std), self.meta2(mean)


def _relative_positions(window: int) -> Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    flat = coords.flatten(1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).float()
    return torch.sign(rel) * torch.log1p(rel.abs())  # (N, N, 2)


class _WindowAttention(nn.Module):
    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.register_buffer("relative_positions", _relative_positions(window))
        self.meta = nn.Sequential(nn.Linear(2, 256), nn.ReLU(True), nn.Linear(256, heads))

    def forward(self, qkv: Tensor, qkv_mfif: Tensor, shifted: bool) -> tuple[Tensor, Tensor]:
        n_windows, tokens, three_c = qkv.shape
        dim = three_c // 3
        scale = (dim // self.heads) ** -0.5

        def split(t: Tensor) -> Tensor:  # (nW, N, 3C) -> (3, nW, heads, N, C/heads)
            return t.reshape(n_windows, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)

        q, k, v = split(qkv)
        q_m, k_m, v_m = split(qkv_mfif)
        q, q_m = q * scale, q_m * scale
        bias = self.meta(self.relative_positions).permute(2, 0, 1)[None]  # (1, heads, N, N)
        # trainingTag 2: the IVIF branch attends with the MFIF queries in unshifted blocks.
        attn = ((q if shifted else q_m) @ k.transpose(-2, -1) + bias).softmax(-1)
        attn_m = (q_m @ k_m.transpose(-2, -1) + bias).softmax(-1)
        out = (attn @ v).transpose(1, 2).reshape(n_windows, tokens, dim)
        out_m = (attn_m @ v_m).transpose(1, 2).reshape(n_windows, tokens, dim)
        return out, out_m


def _windows(x: Tensor, window: int) -> Tensor:
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def _unwindows(x: Tensor, window: int, h: int, w: int) -> Tensor:
    b = x.shape[0] // ((h // window) * (w // window))
    x = x.view(b, h // window, w // window, window, window, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, -1)


class _Attention(nn.Module):
    def __init__(self, dim: int, window: int, heads: int, shift: int) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        self.conv = nn.Conv2d(dim, dim, 5, padding=2, groups=dim, padding_mode="reflect")
        self.conv_mfif = nn.Conv2d(dim, dim, 5, padding=2, groups=dim, padding_mode="reflect")
        self.V, self.V_mfif = nn.Conv2d(dim, dim, 1), nn.Conv2d(dim, dim, 1)
        self.proj, self.proj_mfif = nn.Conv2d(dim, dim, 1), nn.Conv2d(dim, dim, 1)
        self.QK, self.QK_mfif = nn.Conv2d(dim, 2 * dim, 1), nn.Conv2d(dim, 2 * dim, 1)
        self.attn = _WindowAttention(dim, window, heads)

    def _pad(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        ws, s = self.window, self.shift
        ph, pw = -h % ws, -w % ws
        if s:
            return F.pad(x, (s, (ws - s + pw) % ws, s, (ws - s + ph) % ws), mode="reflect")
        return F.pad(x, (0, pw, 0, ph), mode="reflect")

    def forward(self, x: Tensor, x_m: Tensor) -> tuple[Tensor, Tensor]:
        h, w = x.shape[-2:]
        v, v_m = self.V(x), self.V_mfif(x_m)
        qkv = self._pad(torch.cat((self.QK(x), v), 1)).permute(0, 2, 3, 1)
        qkv_m = self._pad(torch.cat((self.QK_mfif(x_m), v_m), 1)).permute(0, 2, 3, 1)
        ht, wt = qkv.shape[1:3]
        out, out_m = self.attn(_windows(qkv, self.window), _windows(qkv_m, self.window), self.shift > 0)
        s = self.shift

        def back(t: Tensor) -> Tensor:
            return _unwindows(t, self.window, ht, wt)[:, s : s + h, s : s + w].permute(0, 3, 1, 2)

        out = self.proj(self.conv(v) + back(out))
        out_m = self.proj_mfif(self.conv_mfif(v_m) + back(out_m))
        return out, out_m


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.ReLU(True), nn.Conv2d(hidden, dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)


class _Block(nn.Module):
    def __init__(self, dim: int, window: int, heads: int, shift: int, hidden: int) -> None:
        super().__init__()
        self.norm1, self.norm1_mfif = _RLN(dim), _RLN(dim)
        self.attn = _Attention(dim, window, heads, shift)
        self.mlp, self.mlp_mfif = _Mlp(dim, hidden), _Mlp(dim, hidden)

    def forward(self, x: Tensor, x_m: Tensor) -> tuple[Tensor, Tensor]:
        n, scale, shift = self.norm1(x)
        n_m, scale_m, shift_m = self.norm1_mfif(x_m)
        a, a_m = self.attn(n, n_m)
        x, x_m = x + a * scale + shift, x_m + a_m * scale_m + shift_m
        return x + self.mlp(x), x_m + self.mlp_mfif(x_m)


class _Branch(nn.Module):
    """The two-branch transformer; returns the MFIF branch (what the test uses)."""

    def __init__(self, config: GIFNetConfig) -> None:
        super().__init__()
        dim, ws = config.dim, config.window
        hidden = int(dim * config.mlp_ratio)
        self.patch_embed_ivif = nn.Module()
        self.patch_embed_ivif.proj = nn.Conv2d(dim, dim, 3, padding=1, padding_mode="reflect")
        self.patch_embed_mfif = nn.Module()
        self.patch_embed_mfif.proj = nn.Conv2d(dim, dim, 3, padding=1, padding_mode="reflect")
        self.blocks = nn.ModuleList(
            _Block(dim, ws, config.heads, 0 if i % 2 == 0 else ws // 2, hidden)
            for i in range(config.depth)
        )
        self.weights = nn.ParameterList(nn.Parameter(torch.rand(1)) for _ in range(config.depth))
        self.weights_mfif = nn.ParameterList(
            nn.Parameter(torch.rand(1)) for _ in range(config.depth)
        )
        self.patch_unembed = nn.Module()
        self.patch_unembed.proj = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, padding_mode="reflect"), nn.PixelShuffle(1)
        )

    def forward(self, features: Tensor) -> Tensor:
        h, w = features.shape[-2:]
        x = F.pad(features, (0, -w % 4, 0, -h % 4), mode="reflect")  # the release's patch_size 4
        x, x_m = self.patch_embed_ivif.proj(x), self.patch_embed_mfif.proj(x)
        for i, block in enumerate(self.blocks):
            x, x_m = block(x, x_m)
            if i % 2 == 0:
                x_m = x_m + self.weights_mfif[i] * x
        return self.patch_unembed.proj(x_m)[..., :h, :w]


class _Decoder(nn.Module):
    def __init__(self, config: GIFNetConfig) -> None:
        super().__init__()
        dim, n = config.dim, config.decoder_width
        self.fuseComplementFeatures = nn.Module()
        self.fuseComplementFeatures.mlp = nn.Sequential(
            nn.Conv2d(2 * dim, dim, 1, bias=False), nn.ReLU(), nn.Conv2d(dim, 2 * n, 1, bias=False)
        )
        layers: list[nn.Module] = []
        widths = (2 * n, n, n // 2, n // 4, 1)
        for i, (cin, cout) in enumerate(zip(widths, widths[1:], strict=False)):
            layers += [nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3)]
            layers.append(nn.Tanh() if i == 3 else nn.ReLU(True))
        self.decoder = nn.Sequential(*layers)

    def forward(self, shared: Tensor, fused: Tensor) -> Tensor:
        x = self.fuseComplementFeatures.mlp(torch.cat((shared, fused), 1))
        return self.decoder(x) / 2 + 0.5


class GIFNet(nn.Module):
    """GIFNet's fusion path (shared features, MFIF transformer branch, mixed decoder);
    ``forward`` returns ``tanh / 2 + 0.5``.

    Args:
        config: sizes (default: the release's).
    """

    #: Registry name (occo.models.registry).
    network_name = "gifnet"

    def __init__(self, config: GIFNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or GIFNetConfig()
        self.shared = _Shared(config.growth)
        self.branch = _Branch(config)
        self.decoder = _Decoder(config)

    def forward(self, vi_y: Tensor, ir: Tensor) -> Tensor:
        shared = self.shared(torch.cat((ir, vi_y), 1))  # infrared first, as released
        return self.decoder(shared, self.branch(shared))  # (B, 1, H, W)


def _finish(raw: Tensor, config: GIFNetConfig) -> Tensor:
    return raw.clamp(0, 1)


def _luminance(rgb: Tensor) -> Tensor:
    """test.py's --VIS_IS_RGB input: BT.601 Y of the 8-bit RGB in float, truncated."""
    if rgb.shape[1] == 1:
        return rgb
    q = (rgb.double() * 255).round()
    y = 0.299 * q[:, 0] + 0.587 * q[:, 1] + 0.114 * q[:, 2]
    return (y.clamp(0, 255).floor() / 255).to(rgb.dtype)[:, None]


def _release_to_occo(key: str) -> str | None:
    if key.startswith("decoder_rec."):
        return None  # the training-only reconstruction decoder
    key = key.replace("extractor_multask.SwinTransformerSpecific.", "branch.")
    key = key.replace("branch.layer1.", "branch.")
    return key.replace("getSharedFeatures.", "shared.").replace("cnnDecoder.", "decoder.")


def _read_release(path):
    state = rename(tensor_dict(load_torch_release(path, "GIFNet"), path, "GIFNet"), _release_to_occo)
    config = GIFNetConfig()
    return config, fit_state(GIFNet(config), state, path, "GIFNet")


def _memory_scale(config: GIFNetConfig, element_size: int) -> float:
    # Full-size planes: both branches' features, QKV (3 dim each), MLP hidden, against
    # FIFN's 57.5.
    return (10 * config.dim + 2 * config.dim * config.mlp_ratio) / 57.5 * element_size / 4


register_network(
    NetworkSpec(
        name="gifnet",
        config_class=GIFNetConfig,
        build=GIFNet,
        finish=_finish,
        luminance=_luminance,
        compose=_bt601_compose,
        receptive_margin=lambda config: None,  # RLN: whole-image mean and std
        min_size=lambda config: 4,
        memory_scale=_memory_scale,
        onnx=True,
        read_release=_read_release,
        release=ReleasedWeights(
            url="https://github.com/AWCXV/GIFNet/raw/"
            "c8ad04ae3bfefcebfa9abe94d1d5895c8db56a44/model/Final.model",
            sha256="bfc1dfef0d5b386b0c04f172daf8f6af52ba395f26dc3dd5757425fd32eb1038",
            filename="Final.model",
            licence="not stated (no LICENSE file)",
            trained_on="infrared-visible and multi-focus pairs (task-agnostic training)",
        ),
        info=MethodInfo(
            title="One model for ALL: low-level task interaction is a key to task-agnostic "
            "image fusion (GIFNet)",
            venue="CVPR 2025",
            code_url="https://github.com/AWCXV/GIFNet",
            code_licence="not stated",
            color="fuses the visible Y (BT.601, truncated to 8 bits); the visible Cb/Cr put "
            "back with the authors' matrices",
            authors_output="colour with --VIS_IS_RGB; a gray output is uint8 truncated "
            "(occo rounds: about 0.5 grey level)",
        ),
    )
)
