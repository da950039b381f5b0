"""MUFusion (Cheng et al., "MUFusion: a general unsupervised image fusion network based on
memory unit", Information Fusion 2023), as its authors released it.

One network for the concatenated (infrared, visible) pair: a dense encoder (two 3x3 convs
at full size, a stride-2 conv, three dense 3x3 convs at half size) and a decoder that
climbs back through the encoder's features (bicubic 2x upsampling once), tanh head; every
conv pads by reflection and is followed by a ReLU.

The authors' test scripts (``ir_vis/test_image.py`` for gray, ``test_image_rgb.py`` for a
colour visible image; ``medical/`` the same) cut the pair into 128x128 patches every 124 px
(plus a row and a column of patches flush with the bottom and right edges), fuse all
patches in one batch in float64 and average the overlaps; occo does the same inside
``forward``. The gray script saves with ``scipy.misc.imsave``, which min-max scales the
float image to 0..255 (``output="minmax"``); the colour script multiplies the fused Y by
255 with no min-max, recombines it with the visible image's Cb/Cr (its own BT.601
matrices) and rounds (``output="clip"``). Images smaller than a patch on a side are fused
as one patch on that side (the authors' script fails there), padded by one row/column
when odd.
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

#: SHA-256 -> which of the authors' three released files (ir_vis/models, medical/models).
_VARIANTS = {
    "5d96ad1812c61e005edb439c85e341bac91c7bf275f1a41cd20a0a62769b2dbb": "TNO",
    "8c358e4869092fb0bb553947674ee1b04bfffe06eb200354c3a62ee005f093fd": "RoadScene",
    "f8537a378d5b980fc190897eb94981fc74ab8afb5d362e7aada86b672455584d": "harvard",
}


@dataclass(frozen=True)
class MUFusionConfig(JsonConfig):
    """MUFusion settings; the defaults are the released network and test script's."""

    width: int = 32
    """Channels of the full-size features (the half-size ones have twice as many)."""
    patch: int = 128
    """Side of the square patches the image is fused in (even)."""
    overlap: int = 4
    """Pixels shared by neighbouring patches (the stride is ``patch - overlap``)."""
    output: str = "minmax"
    """The authors' output convention: "minmax" (test_image.py, gray: min-max to 0..255)
    or "clip" (test_image_rgb.py, colour: the fused Y as is, clipped)."""
    variant: str = "TNO"
    """Which released weights these are: "TNO" or "RoadScene" (ir_vis/), "harvard"
    (medical/, MRI with PET/SPECT: the functional image's Y goes first, as the authors'
    medical/test_image_rgbPET.py feeds it; pass the MRI as the infrared image and the
    PET/SPECT as the visible one, so that its colour is kept), or "" for another file."""

    def __post_init__(self) -> None:
        for name in ("width", "patch", "overlap"):
            object.__setattr__(self, name, int(getattr(self, name)))
        if self.width < 1 or self.patch < 4 or self.patch % 2 or not 0 <= self.overlap < self.patch:
            raise ValueError(
                "MUFusionConfig needs width >= 1, an even patch >= 4 and 0 <= overlap < patch, "
                f"got {self.width}, {self.patch}, {self.overlap}"
            )
        if self.output not in ("minmax", "clip"):
            raise ValueError(f"MUFusionConfig.output must be 'minmax' or 'clip', got {self.output!r}")


def _conv(cin: int, cout: int, stride: int = 1, act: nn.Module | None = None) -> nn.Sequential:
    # The release's layout: (ReflectionPad2d, Conv2d, activation) -> keys "N.1.weight".
    return nn.Sequential(
        nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3, stride), act or nn.ReLU()
    )


class MUFusion(nn.Module):
    """MUFusion's ``TwoFusion_net``, run on overlapping patches as its authors' test does;
    ``forward`` returns the stitched tanh output (``finish`` applies the output convention).

    Args:
        config: widths and the patch grid (default: the release's).
    """

    #: Registry name (occo.models.registry).
    network_name = "mufusion"

    def __init__(self, config: MUFusionConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or MUFusionConfig()
        c, d = config.width, 2 * config.width
        self.conv1, self.conv2 = _conv(2, c), _conv(c, c)
        self.conv3 = _conv(2 * c, d, stride=2)
        self.conv4, self.conv5, self.conv6 = _conv(d, d), _conv(2 * d, d), _conv(3 * d, d)
        self.conv66, self.conv55, self.conv44 = _conv(d, d), _conv(2 * d, d), _conv(2 * d, d)
        self.conv33, self.conv22 = _conv(2 * d, d), _conv(d + c, c)
        self.conv11 = _conv(2 * c, 1, act=nn.Tanh())

    def fuse_patches(self, ir: Tensor, vi: Tensor) -> Tensor:
        """The network on (N, 1, h, w) patches with even h, w: (N, 1, h, w) tanh output."""
        g1 = self.conv1(torch.cat((ir, vi), 1))
        g2 = self.conv2(g1)
        g3 = self.conv3(torch.cat((g1, g2), 1))  # half size
        g4 = self.conv4(g3)
        g5 = self.conv5(torch.cat((g3, g4), 1))
        g6 = self.conv6(torch.cat((g3, g4, g5), 1))
        x = self.conv55(torch.cat((g5, self.conv66(g6)), 1))
        x = self.conv33(torch.cat((g3, self.conv44(torch.cat((g4, x), 1))), 1))
        x = F.interpolate(x, scale_factor=2, mode="bicubic")
        return self.conv11(torch.cat((g1, self.conv22(torch.cat((g2, x), 1))), 1))

    def _starts(self, length: int) -> tuple[int, list[int]]:
        # The authors' grid: every stride from 0, then one flush with the end (repeats
        # kept: they count twice in the average, as in the authors' script).
        size = self.config.patch
        if length < size:
            return length + length % 2, [0]
        stride = size - self.config.overlap
        return size, [*range(0, length - size + 1, stride), length - size]

    def forward(self, vi_y: Tensor, ir: Tensor) -> Tensor:
        if self.config.variant == "harvard":  # the functional (visible-place) image first
            vi_y, ir = ir, vi_y
        height, width = ir.shape[-2:]
        ph, rows = self._starts(height)
        pw, cols = self._starts(width)
        if ph > height or pw > width:  # an odd side smaller than a patch
            pad = (0, pw - min(pw, width), 0, ph - min(ph, height))
            vi_y, ir = F.pad(vi_y, pad, mode="replicate"), F.pad(ir, pad, mode="replicate")
        batch = ir.shape[0]
        boxes = [(r, c) for r in rows for c in cols]
        ir_p = torch.cat([ir[..., r : r + ph, c : c + pw] for r, c in boxes])  # (N*B, 1, ph, pw)
        vi_p = torch.cat([vi_y[..., r : r + ph, c : c + pw] for r, c in boxes])
        out = self.fuse_patches(ir_p, vi_p).split(batch)
        total = ir.new_zeros((batch, 1, *ir.shape[-2:]))
        count = ir.new_zeros((1, 1, *ir.shape[-2:]))
        for (r, c), patch in zip(boxes, out, strict=True):
            total[..., r : r + ph, c : c + pw] += patch
            count[..., r : r + ph, c : c + pw] += 1
        return (total / count)[..., :height, :width]


def _finish(raw: Tensor, config: MUFusionConfig) -> Tensor:
    if config.output == "minmax":  # scipy.misc.imsave's bytescale of a float image
        return minmax_normalize(raw)
    return raw  # the Fuser clamps; the colour script recolours the unclamped Y


def _compose(fused_y: Tensor, vi: Tensor) -> Tensor:
    """test_image_rgb.py's colour: its BT.601 Cb/Cr (no offset) of the visible image and
    its inverse (1.402, 0.344136, 0.714136, 1.772), clipped."""
    if vi.shape[1] == 1:
        return fused_y
    r, g, b = vi.unbind(1)
    cb = (-0.169 * r - 0.331 * g + 0.5 * b)[:, None]
    cr = (0.5 * r - 0.419 * g - 0.081 * b)[:, None]
    rgb = (
        fused_y + 1.402 * cr,
        fused_y - 0.344136 * cb - 0.714136 * cr,
        fused_y + 1.772 * cb,
    )
    return torch.cat(rgb, 1).clamp(0, 1)


def _read_release(path):
    from occo.data.io import file_sha256

    loaded = load_torch_release(path, "MUFusion")
    state = tensor_dict(loaded, path, "MUFusion")
    width = state["conv1.1.weight"].shape[0] if "conv1.1.weight" in state else 32
    variant = _VARIANTS.get(file_sha256(path), "")
    # The medical weights' test script is the colour one (PET/SPECT): no min-max.
    output = "clip" if variant == "harvard" else "minmax"
    config = MUFusionConfig(width=width, variant=variant, output=output)
    return config, fit_state(MUFusion(config), state, path, "MUFusion")


def _memory_scale(config: MUFusionConfig, element_size: int) -> float:
    # Full-size planes (g1, g2, decoder 32 + upsampled 64) and half-size ones (six 64s),
    # against FIFN's 57.5.
    c = config.width
    return (5 * c + 12 * c / 4) / 57.5 * element_size / 4


register_network(
    NetworkSpec(
        name="mufusion",
        config_class=MUFusionConfig,
        build=MUFusion,
        finish=_finish,
        compose=_compose,
        compose_unclamped=True,  # test_image_rgb*.py recolour the fused Y before clipping
        # The patch grid depends on the whole image's size: tiles are refused.
        receptive_margin=lambda config: None,
        min_size=lambda config: 2,
        memory_scale=_memory_scale,
        onnx=False,  # the patch grid is Python control flow on the image size
        read_release=_read_release,
        release=ReleasedWeights(
            url="https://github.com/AWCXV/MUFusion/raw/"
            "223134e6317081bbf57cf51d175e93b386bb7602/ir_vis/models/TNO.model",
            sha256="5d96ad1812c61e005edb439c85e341bac91c7bf275f1a41cd20a0a62769b2dbb",
            filename="ir_vis_models_TNO.model",
            licence="MIT (MUFusion, (c) 2023 Chunyang Cheng)",
            trained_on="TNO patches (ir_vis/models/TNO.model; RoadScene.model and "
            "medical/models/harvard.model are the other released variants)",
        ),
        info=MethodInfo(
            title="MUFusion: a general unsupervised image fusion network based on memory unit",
            venue="Information Fusion 2023",
            code_url="https://github.com/AWCXV/MUFusion",
            code_licence="MIT",
            color="fuses visible Y (0.299/0.587/0.114); the authors' Cb/Cr put back",
            authors_output="gray script: min-max to 0..255; colour script: fused Y "
            "unscaled (config output='clip'); fused in 128 px patches",
        ),
    )
)
