"""IFCNN in occo: random-weight behaviour, the fusion rules, and IFCNN-MAX against the
authors' IFCNN_Main.py (infrared-visual set) output on the golden crop."""

from __future__ import annotations

import pytest
import torch

from occo.models.checkpoint import WeightsError
from occo.models.registry import get_network
from tests.peer_checks import (
    check_fold,
    check_forward_finish,
    check_golden,
    check_tiling,
    random_net,
)

SPEC = get_network("ifcnn")
TINY = SPEC.config_class(width=6)


def _with_statistics(net):
    """Random BatchNorm statistics, so that folding has something to fold."""
    g = torch.Generator().manual_seed(3)
    for block in (net.conv2, net.conv3):
        block.bn.running_mean.copy_(torch.randn(block.bn.running_mean.shape, generator=g) * 0.1)
        block.bn.running_var.copy_(torch.rand(block.bn.running_var.shape, generator=g) + 0.5)
    return net


def test_forward_finish_compose_at_odd_sizes():
    net = random_net(SPEC, TINY)
    check_forward_finish(SPEC, net, 23, 17)
    rgb = net(torch.rand(1, 3, 9, 8), torch.rand(1, 1, 9, 8))  # an RGB visible works too
    assert rgb.shape == (1, 1, 9, 8)


@pytest.mark.parametrize("rule", ["max", "mean", "sum"])
def test_rules_tile_exactly_and_fold(rule):
    net = _with_statistics(random_net(SPEC, SPEC.config_class(rule=rule, width=6)))
    check_tiling(SPEC, net, 37, 33, tile=12)
    check_fold(SPEC, net)


def test_rules_differ_and_bad_rule_is_refused():
    vi, ir = torch.rand(1, 1, 12, 12), torch.rand(1, 1, 12, 12)
    outs = []
    for rule in ("max", "mean", "sum"):
        net = random_net(SPEC, SPEC.config_class(rule=rule, width=6))
        outs.append(net(vi, ir))
    assert (outs[0] - outs[1]).abs().max() > 1e-4 and (outs[1] - outs[2]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="rule"):
        SPEC.config_class(rule="min")


def test_onnx_export_is_refused_in_one_line():
    # Exported graphs take one visible channel; IFCNN takes a colour image's RGB.
    pytest.importorskip("onnxruntime")
    from occo.models.export import ExportError, onnx_from_weights

    with pytest.raises(ExportError, match="ifcnn does not export to ONNX"):
        onnx_from_weights(_with_statistics(random_net(SPEC, TINY)))


def test_rule_follows_the_release_file_name_and_other_files_are_refused(tmp_path):
    state = {k: v for k, v in random_net(SPEC).state_dict().items() if "num_batches" not in k}
    for name, rule in (("IFCNN-MAX.pth", "max"), ("IFCNN-MEAN.pth", "mean"), ("x.pth", "max")):
        torch.save(state, tmp_path / name)
        assert SPEC.read_release(tmp_path / name)[0].rule == rule
    other = tmp_path / "densefuse_gray.model"
    torch.save(random_net(get_network("densefuse")).state_dict(), other)
    with pytest.raises(WeightsError, match="not IFCNN's released weights"):
        SPEC.read_release(other)


def test_released_weights_reproduce_the_authors_golden_crop(shared_dir):
    weights = shared_dir / "peers" / "ifcnn" / "IFCNN-MAX.pth"
    # Gray and colour visible, as the authors: a colour image's RGB is the network's input
    # (spec.luminance passes it), and they save the gray of the output.
    net = check_golden(SPEC, weights, "ifcnn", color=True)
    assert sum(p.numel() for p in net.parameters()) == 83_587
