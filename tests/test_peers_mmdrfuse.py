"""MMDRFuse's 113-parameter student in occo: random-weight behaviour, infrared first, and
the released student against the authors' test_student.py on the golden crop."""

from __future__ import annotations

import pytest
import torch

from occo.models.checkpoint import WeightsError
from occo.models.registry import get_network
from tests.peer_checks import (
    check_forward_finish,
    check_golden,
    check_onnx,
    check_tiling,
    random_net,
)

SPEC = get_network("mmdrfuse")


def test_forward_finish_compose_at_odd_sizes():
    net = random_net(SPEC)
    check_forward_finish(SPEC, net, 23, 17)
    assert sum(p.numel() for p in net.parameters()) == 113
    assert not SPEC.authors_color


def test_infrared_is_the_first_input_channel():
    net = random_net(SPEC)
    with torch.no_grad():
        net.conv1.weight[:, 1].zero_()  # only the first input channel left
    vi, ir = torch.rand(1, 1, 9, 9), torch.rand(1, 1, 9, 9)
    with torch.inference_mode():
        torch.testing.assert_close(net(vi, ir), net(torch.rand(1, 1, 9, 9), ir))


def test_tiles_with_the_registered_margin_are_exact():
    check_tiling(SPEC, random_net(SPEC, SPEC.config_class(hidden=3)), 33, 29, tile=10)


def test_onnx_export_matches_pytorch():
    check_onnx(SPEC, random_net(SPEC))


def test_release_names_and_other_files(tmp_path):
    state = {
        k.replace("conv1.", "conv1.1.").replace("conv2.", "conv2.1."): v
        for k, v in random_net(SPEC).state_dict().items()
    }
    torch.save(state, tmp_path / "student.model")
    SPEC.make(SPEC.read_release(tmp_path / "student.model")[0]).load_state_dict(
        SPEC.read_release(tmp_path / "student.model")[1]
    )
    other = tmp_path / "teacher.model"
    torch.save(random_net(get_network("densefuse")).state_dict(), other)
    with pytest.raises(WeightsError, match="not MMDRFuse's student's released weights"):
        SPEC.read_release(other)


def test_released_weights_reproduce_the_authors_golden_crop(shared_dir):
    check_golden(SPEC, shared_dir / "peers" / "mmdrfuse" / "student.model", "mmdrfuse")
