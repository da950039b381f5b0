"""Shared test helpers: the tiny FIFN and its random weights, pair folders, a release-format
state dict and a tiny training config."""

from __future__ import annotations

import torch

from occo.models.config import FIFNConfig

#: The tiny four-level FIFN every model test builds (widths and heads of the release's shape).
TINY_FIFN = FIFNConfig(widths=(4, 8, 8, 12), heads=(2, 2, 4, 1))


def release_state_dict(widths, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict with the release's names and shapes (as in its keys TSV)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def put(name, *shape):
        sd[name] = torch.randn(*shape, generator=g) * 0.2

    def conv(name, cout, cin, k, bias=True):
        put(f"{name}.weight", cout, cin, k, k)
        if bias:
            put(f"{name}.bias", cout)

    def bn(name, c):
        put(f"{name}.weight", c)
        put(f"{name}.bias", c)
        put(f"{name}.running_mean", c)
        sd[f"{name}.running_var"] = torch.rand(c, generator=g) + 0.5
        sd[f"{name}.num_batches_tracked"] = torch.tensor(11)

    def linear(name, cout, cin, bias=True):
        put(f"{name}.weight", cout, cin)
        if bias:
            put(f"{name}.bias", cout)

    for branch in "vi":
        cin = 1
        for k, c in enumerate(widths, 1):
            p = f"{branch}{k}.Conv_BN_ReLU_2"
            conv(f"{p}.0", c, cin, 3), bn(f"{p}.1", c), conv(f"{p}.3", c, c, 3), bn(f"{p}.4", c)
            cin = c
    for k, c in enumerate(widths, 1):
        f = f"fusion{k}"
        linear(f"{f}.cross.channel_proj3", c, c), linear(f"{f}.cross.channel_proj4", c, c)
        linear(f"{f}.cross.end_proj1", c, 2 * c), linear(f"{f}.cross.end_proj2", c, 2 * c)
        linear(f"{f}.cross.cross_attn.kv1", 2 * c, c, bias=False)
        linear(f"{f}.cross.cross_attn.kv2", 2 * c, c, bias=False)
        for norm in ("norm1", "norm2"):
            put(f"{f}.cross.{norm}.weight", c), put(f"{f}.cross.{norm}.bias", c)
        conv(f"{f}.channel_emb.residual", c, 2 * c, 1, bias=False)
        conv(f"{f}.channel_emb.channel_embed.0", c, 2 * c, 1)
        conv(f"{f}.channel_emb.channel_embed.1", c, 1, 3)
        conv(f"{f}.channel_emb.channel_embed.3", c, c, 1)
        bn(f"{f}.channel_emb.channel_embed.4", c), bn(f"{f}.channel_emb.norm", c)
        (
            linear(f"{f}.channel_weight.mlp.0", 4 * c, 4 * c),
            linear(f"{f}.channel_weight.mlp.2", 2 * c, 4 * c),
        )
        for s in (1, 2):
            conv(f"{f}.space_weight{s}.mlp.0", c, c, 1), conv(f"{f}.space_weight{s}.mlp.2", 1, c, 1)
    for k in range(1, len(widths)):
        conv(f"up_concat{k}.conv1", widths[k - 1], widths[k - 1] + widths[k], 3)
        conv(f"up_concat{k}.conv2", widths[k - 1], widths[k - 1], 3)
    conv("final", 1, widths[0], 1)
    return sd


def random_fifn(seed: int = 0, config: FIFNConfig = TINY_FIFN):
    """A FIFN with seeded random weights and non-trivial BatchNorm statistics (folding and
    export must carry them), in eval mode."""
    from torch import nn

    from occo.models.fifn import FIFN

    torch.manual_seed(seed)
    model = FIFN(config)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def write_pairs(root, sizes=((30, 41), (30, 41), (27, 35)), color: bool = True, seed: int = 0):
    """``root/ir`` and ``root/vi`` with one random pair per size (``p0``, ``p1``...), the
    visible images colour or gray. Returns ``(ir_dir, vi_dir)``."""
    import numpy as np

    from occo.data.io import write_image_atomic

    rng = np.random.default_rng(seed)
    ir_dir, vi_dir = root / "ir", root / "vi"
    for i, (h, w) in enumerate(sizes):
        write_image_atomic(ir_dir / f"p{i}.png", rng.integers(0, 256, (h, w), dtype=np.uint8))
        shape = (h, w, 3) if color else (h, w)
        write_image_atomic(vi_dir / f"p{i}.png", rng.integers(0, 256, shape, dtype=np.uint8))
    return ir_dir, vi_dir


#: A tiny training config file (YAML), for the CLI tests that train.
TINY_TRAIN_YAML = """
crop: 32
batch_size: 4
num_workers: 0
log_every: 1
checkpoint_every: 1000
val_every: 0
tensorboard: false
model: {widths: [4, 8, 8, 8], heads: [1, 1, 1, 1]}
# CPU processes under DDP stay contiguous; so does the single process they are compared
# with (a layout change alters float rounding, which Adam turns into lr-sized steps).
channels_last: false
"""
