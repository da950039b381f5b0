"""DATFuse in occo: random-weight behaviour (whole-image only), BatchNorm folding, and the
released model_10.pth against the authors' Test.py on the golden crop."""

from __future__ import annotations

import pytest
import torch

from occo.models.checkpoint import WeightsError
from occo.models.registry import get_network
from tests.peer_checks import (
    check_fold,
    check_forward_finish,
    check_golden,
    check_onnx,
    random_net,
)

SPEC = get_network("datfuse")
TINY = SPEC.config_class(width=8, depth=1, reduction=2)


def _with_statistics(net):
    g = torch.Generator().manual_seed(5)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=g) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=g) + 0.5)
    return net


def test_forward_finish_compose_at_odd_sizes_and_folding():
    net = _with_statistics(random_net(SPEC, TINY))
    check_forward_finish(SPEC, net, 23, 17)
    check_fold(SPEC, net)
    assert SPEC.receptive_margin(TINY) is None  # global average in the channel attention


def test_tokens_are_the_releases_view_of_the_feature_maps():
    # The release's Swin blocks read (B, C, H, W) memory as (B, H, W, C): a token is C
    # consecutive values of one channel's rows, so transposing the image changes them.
    blocks = random_net(SPEC, TINY).basicLayer
    x = torch.randn(1, 8, 5, 6)
    with torch.inference_mode():
        want = blocks.blocks[0](x.view(1, 5, 6, 8).reshape(1, 30, 8)).reshape(1, 8, 5, 6)
        torch.testing.assert_close(blocks(x), want)


def test_onnx_export_matches_pytorch():
    check_onnx(SPEC, _with_statistics(random_net(SPEC, TINY)))


def test_release_names_and_other_files(tmp_path):
    state = {
        k.replace("out.", "convolutional_out.conv.", 1) if k.startswith("out.") else k: v
        for k, v in random_net(SPEC).state_dict().items()
    }
    state["patch_embed.norm.weight"] = torch.ones(96)
    state["basicLayer.blocks.0.attn.relative_position_bias_table"] = torch.zeros(1, 8)
    torch.save(state, tmp_path / "model_10.pth")
    config, loaded = SPEC.read_release(tmp_path / "model_10.pth")
    SPEC.make(config).load_state_dict(loaded)
    other = tmp_path / "student.model"
    torch.save(random_net(get_network("mmdrfuse")).state_dict(), other)
    with pytest.raises(WeightsError, match="not DATFuse's released weights"):
        SPEC.read_release(other)


def test_released_weights_reproduce_the_authors_golden_crop(shared_dir):
    net = check_golden(SPEC, shared_dir / "peers" / "datfuse" / "model_10.pth", "datfuse")
    assert sum(p.numel() for p in net.parameters()) == 10_552
