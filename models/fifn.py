"""FIFN, the Feature Interaction Fusion Network of OCCO, as the authors released it."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from occo.models.blocks import FIFB, ConvBlock, MergeBlock, UpBlock
from occo.models.config import FIFNConfig
from occo.models.registry import MethodInfo, NetworkSpec, register_network


def minmax_normalize(x: Tensor, eps: float = 1e-12, margin: int = 0) -> Tensor:
    """Min-max normalise each image of a batch to [0, 1] (as the released test does).

    Args:
        x: (B, C, H, W); each batch element is normalised over all its C*H*W values.
        eps: guards constant images, which map to 0.
        margin: pixels next to the border left out of the min and max (see
            :attr:`FIFNConfig.range_margin`); they may fall outside [0, 1]. Ignored for
            images too small to keep an interior.

    Returns:
        (B, C, H, W), in [0, 1] where ``margin`` is 0.
    """
    inner = x
    if margin > 0 and min(x.shape[-2:]) > 2 * margin:
        inner = x[..., margin:-margin, margin:-margin]
    flat = inner.flatten(1)
    lo = flat.amin(dim=1).view(-1, *([1] * (x.dim() - 1)))
    hi = flat.amax(dim=1).view(-1, *([1] * (x.dim() - 1)))
    return (x - lo) / (hi - lo).clamp_min(eps)


class FIFN(nn.Module):
    """Feature Interaction Fusion Network.

    Two unshared encoders (visible, infrared) of ``levels`` conv levels with 2x2 max
    pooling between them; a FIFB fuses the two features of every level; a U-Net decoder
    climbs back from the deepest fused map using the shallower fused maps as skips; a
    1x1 conv head gives the fused Y channel. Any H, W >= ``config.min_size`` works.

    Args:
        config: widths and heads per level and the FIFB switches of the paper's network
            ablations; defaults are the release's.
    """

    #: Registry name (occo.models.registry).
    network_name = "fifn"

    def __init__(self, config: FIFNConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or FIFNConfig()
        widths = config.widths
        ins = (config.in_channels, *widths[:-1])
        self.encoder_vi = nn.ModuleList(ConvBlock(i, o) for i, o in zip(ins, widths, strict=True))
        self.encoder_ir = nn.ModuleList(ConvBlock(i, o) for i, o in zip(ins, widths, strict=True))
        switches = {
            "spatial_enhancement": config.spatial_enhancement,
            "cross_channel": config.cross_channel,
            "cross_attention": config.cross_attention,
        }
        self.fusion = nn.ModuleList(
            FIFB(w, h, **switches) for w, h in zip(widths, config.heads, strict=True)
        )
        # Deepest step first: decoder[0] merges level L-2's skip with level L-1.
        self.decoder = nn.ModuleList(
            UpBlock(widths[level], widths[level + 1]) for level in reversed(range(len(widths) - 1))
        )
        self.head = nn.Conv2d(widths[0], config.in_channels, 1)

    def encode(self, vi_y: Tensor, ir: Tensor) -> list[Tensor]:
        """Fused features of every level, shallow to deep.

        Args:
            vi_y: (B, 1, H, W) visible luminance in [0, 1].
            ir: (B, 1, H, W) infrared in [0, 1].

        Returns:
            One (B, C_l, H_l, W_l) map per level, H_l = floor(H / 2^l).
        """
        return [
            fifb(x, y)
            for fifb, (x, y) in zip(self.fusion, self.encoder_levels(vi_y, ir), strict=True)
        ]

    def encoder_levels(self, vi_y: Tensor, ir: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
        """The two encoders' features, one level at a time, shallow to deep.

        A generator, so that only the current level's features stay alive.

        Args:
            vi_y: (B, 1, H, W) visible luminance in [0, 1].
            ir: (B, 1, H, W) infrared in [0, 1].

        Yields:
            (visible, infrared) features, each (B, C_l, H_l, W_l), H_l = floor(H / 2^l).
        """
        x, y = vi_y, ir
        for level, (enc_vi, enc_ir) in enumerate(
            zip(self.encoder_vi, self.encoder_ir, strict=True)
        ):
            if level:  # the pooled output of the last level is unused, so pool lazily
                x, y = F.max_pool2d(x, 2), F.max_pool2d(y, 2)
            x, y = enc_vi(x), enc_ir(y)
            yield x, y

    def check_inputs(self, vi_y: Tensor, ir: Tensor) -> None:
        """Raise ValueError unless the inputs have one shape, at least ``min_size`` px a side."""
        if vi_y.shape != ir.shape:
            raise ValueError(f"vi_y {tuple(vi_y.shape)} and ir {tuple(ir.shape)} differ in shape")
        if min(vi_y.shape[-2:]) < self.config.min_size:
            raise ValueError(
                f"image {tuple(vi_y.shape[-2:])} is too small: FIFN needs at least "
                f"{self.config.min_size} pixels per side"
            )

    def forward(self, vi_y: Tensor, ir: Tensor) -> Tensor:
        """Fuse.

        Args:
            vi_y: (B, 1, H, W) visible luminance in [0, 1].
            ir: (B, 1, H, W) infrared in [0, 1], same size.

        Returns:
            (B, 1, H, W) raw fused luminance, NOT min-max normalised (see
            :func:`minmax_normalize`).
        """
        self.check_inputs(vi_y, ir)
        *skips, deep = self.encode(vi_y, ir)
        for up, skip in zip(self.decoder, reversed(skips), strict=True):
            deep = up(skip, deep)
        return self.head(deep)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def fold_batchnorm(model: FIFN) -> FIFN:
    """An inference copy of ``model`` with each BatchNorm that follows a conv folded into it.

    In eval mode such a BatchNorm is a per-channel affine map, so the conv's weights and
    bias absorb it exactly (up to rounding); the BatchNorm becomes an identity. Saves a
    pass over every encoder feature map. The copy's state dict no longer matches FIFN's:
    use it for inference only.

    Args:
        model: the network (left untouched).

    Returns:
        The folded copy, in eval mode.
    """
    folded = copy.deepcopy(model).eval()
    for block in folded.modules():
        if isinstance(block, ConvBlock):
            block.conv1, block.bn1 = fuse_conv_bn_eval(block.conv1, block.bn1), nn.Identity()
            block.conv2, block.bn2 = fuse_conv_bn_eval(block.conv2, block.bn2), nn.Identity()
        elif isinstance(block, MergeBlock):
            block.pointwise = fuse_conv_bn_eval(block.pointwise, block.bn_main)
            block.bn_main = nn.Identity()
    return folded


def _finish(raw: Tensor, config: FIFNConfig) -> Tensor:
    # The release min-max normalises each output image; range_margin leaves the border out.
    return minmax_normalize(raw, margin=config.range_margin).clamp_(0, 1)


def _memory_scale(config: FIFNConfig, element_size: int) -> float:
    # occo.models.memory measured the default FIFN in float32; activations scale with the
    # feature planes of every level.
    def planes(c: FIFNConfig) -> float:
        return sum(width / 4**level for level, width in enumerate(c.widths))

    return planes(config) / planes(FIFNConfig()) * element_size / 4


def _receptive_margin(config: FIFNConfig) -> int:
    from occo.models.tiling import receptive_margin  # tiling imports this module

    return receptive_margin(config.levels)[1]


def _tiled_forward(model: FIFN, vi_y: Tensor, ir: Tensor, tile: int) -> Tensor:
    from occo.models.tiling import tiled_forward

    return tiled_forward(model, vi_y, ir, tile)


def _read_release(path):
    # The authors' occo.pth: their names renamed to occo's (see occo.models.checkpoint).
    from occo.models.checkpoint import read_release_checkpoint, release_state_dict_to_occo

    model, _ = release_state_dict_to_occo(read_release_checkpoint(path), source=str(path))
    return model.config, model.state_dict()


register_network(
    NetworkSpec(
        name="fifn",
        config_class=FIFNConfig,
        build=FIFN,
        finish=_finish,
        train_finish=lambda raw, config: minmax_normalize(raw, margin=config.range_margin),
        receptive_margin=_receptive_margin,
        tiled_forward=_tiled_forward,
        size_multiple=lambda config: 2 ** (config.levels - 1),
        min_size=lambda config: config.min_size,
        fold=fold_batchnorm,
        memory_scale=_memory_scale,
        onnx=True,
        read_release=_read_release,
        info=MethodInfo(
            title="OCCO: LVM-guided infrared and visible image fusion with object-aware "
            "and contextual contrastive learning (FIFN)",
            venue="IJCV 2025",
            code_url="https://github.com/bociic/OCCO",
            code_licence="not stated",
            color="fuses visible Y; the visible image's Cb/Cr are kept",
        ),
    )
)
