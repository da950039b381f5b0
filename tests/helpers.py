"""Shared test helpers: the tiny FIFN configuration and a release-format state dict."""

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
