"""ReFusion in occo: random-weight behaviour (whole-image only: no tiles), the infrared-first
and medical variants, and ReFusion_IVIF.pth against the authors' test.py on the golden crop."""

from __future__ import annotations

import pytest
import torch

from occo.models.checkpoint import WeightsError
from occo.models.registry import get_network
from tests.peer_checks import check_forward_finish, check_golden, check_onnx, random_net

SPEC = get_network("refusion")
TINY = SPEC.config_class(dim=4, blocks=1, heads=2)


def test_forward_finish_compose_at_odd_sizes():
    check_forward_finish(SPEC, random_net(SPEC, TINY), 23, 17)


def test_the_whole_image_is_needed_so_tiles_are_refused():
    assert SPEC.receptive_margin(TINY) is None
    net = random_net(SPEC, TINY)
    vi, ir = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    far = ir.clone()
    far[..., -1, -1] += 1  # one far pixel changes the top-left output (global attention)
    with torch.inference_mode():
        assert (net(vi, ir) - net(vi, far))[..., 0, 0].abs().max() > 0


def test_variants_swap_which_source_goes_first():
    ivif = random_net(SPEC, TINY)
    mif = SPEC.make(SPEC.config_class(variant="mif", dim=4, blocks=1, heads=2)).eval()
    mif.load_state_dict(ivif.state_dict())
    vi, ir = torch.rand(1, 1, 11, 13), torch.rand(1, 1, 11, 13)
    with torch.inference_mode():
        torch.testing.assert_close(mif(vi, ir), ivif(ir, vi))
    with pytest.raises(ValueError, match="variant"):
        SPEC.config_class(variant="mfif")


def test_onnx_export_matches_pytorch():
    check_onnx(SPEC, random_net(SPEC, TINY))


def test_release_names_and_other_files(tmp_path):
    # The release stores each conv weight twice ('x.weight', 'x.conv.weight') and the
    # norms under '.body.'.
    state = {}
    for key, value in random_net(SPEC).state_dict().items():
        if ".norm" in key:
            key = key.replace(".weight", ".body.weight").replace(".bias", ".body.bias")
        state[key] = value
        if key.endswith(".weight") and value.dim() == 4:
            state[key.removesuffix(".weight") + ".conv.weight"] = value
    torch.save(state, tmp_path / "ReFusion_MIF.pth")
    config, loaded = SPEC.read_release(tmp_path / "ReFusion_MIF.pth")
    assert config.variant == "mif"
    SPEC.make(config).load_state_dict(loaded)
    other = tmp_path / "IFCNN-MAX.pth"
    torch.save(random_net(get_network("ifcnn")).state_dict(), other)
    with pytest.raises(WeightsError, match="not ReFusion's released weights"):
        SPEC.read_release(other)


def test_released_weights_reproduce_the_authors_golden_crop(shared_dir):
    net = check_golden(SPEC, shared_dir / "peers" / "refusion" / "ReFusion_IVIF.pth", "refusion")
    assert net.config.variant == "ivif"
    assert sum(p.numel() for p in net.parameters()) == 59_856
