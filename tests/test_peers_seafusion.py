"""SeAFusion in occo: random-weight behaviour, and the released weights against the authors'
own test script's output on the golden crop (made with VIF-Benchmark's SeAFusion code)."""

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

SPEC = get_network("seafusion")
TINY = SPEC.config_class(widths=(4, 6, 8))


def test_forward_finish_compose_at_odd_sizes():
    net = random_net(SPEC, TINY)
    check_forward_finish(SPEC, net, 23, 17)
    assert SPEC.make().config == SPEC.config_class()


def test_compose_min_max_normalises_the_recoloured_image():
    fused = torch.linspace(0.2, 0.7, 30).view(1, 1, 5, 6)
    gray = SPEC.compose(fused, torch.rand(1, 1, 5, 6))
    assert gray.min() == 0 and gray.max() == 1  # gray: the fused Y stretched
    color = SPEC.compose(fused, torch.rand(1, 3, 5, 6))
    assert color.min() == 0 and color.max() == 1  # colour: one stretch over R, G and B


def test_tiles_with_the_registered_margin_are_exact():
    check_tiling(SPEC, random_net(SPEC, TINY), 45, 38, tile=16)


def test_onnx_export_matches_pytorch():
    check_onnx(SPEC, random_net(SPEC, TINY))


def test_config_json_round_trip_and_bad_widths():
    assert SPEC.config_class.from_json(TINY.to_json()) == TINY
    with pytest.raises(ValueError):
        SPEC.config_class(widths=(4, 6))


def test_other_files_are_refused_in_one_line(tmp_path):
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, other)
    with pytest.raises(WeightsError, match="not SeAFusion's released weights"):
        SPEC.read_release(other)
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(WeightsError, match="not a torch file"):
        SPEC.read_release(text)


class _Payload:
    def __reduce__(self):
        return (print, ("this would have run",))


def test_unpickling_payloads_and_truncated_files_are_refused(tmp_path):
    payload = tmp_path / "payload.pth"
    torch.save({"conv.weight": _Payload()}, payload)
    with pytest.raises(WeightsError, match="refusing to load .*arbitrary unpickling"):
        SPEC.read_release(payload)
    whole = tmp_path / "whole.pth"
    torch.save(random_net(SPEC).state_dict(), whole)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(WeightsError, match="cannot read .*cut.pth"):
        SPEC.read_release(cut)
    with pytest.raises(WeightsError, match="not found"):
        SPEC.read_release(tmp_path / "absent.pth")


def test_released_weights_reproduce_the_authors_golden_crop(shared_dir):
    net = check_golden(SPEC, shared_dir / "peers" / "seafusion" / "SeAFusion.pth", "seafusion")
    assert sum(p.numel() for p in net.parameters()) == 166_657  # without the unused BNs
