"""Weight files: occo's safetensors format, and import of the authors' released checkpoint."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from occo.models.checkpoint import (
    WeightsError,
    convert_release_checkpoint,
    load_weights,
    read_release_checkpoint,
    read_weights_metadata,
    release_key_to_occo,
    save_weights,
)
from occo.models.config import FIFNConfig
from occo.models.fifn import FIFN
from tests.helpers import TINY_FIFN, release_state_dict


def _pickle(path, state, wrap=True, prefix=""):
    state = {prefix + k: v for k, v in state.items()}
    torch.save({"state_dict": state, "epoch": 3} if wrap else state, path)
    return path


def _run(model, size=(20, 24)):
    g = torch.Generator().manual_seed(5)
    vi, ir = torch.rand(1, 1, *size, generator=g), torch.rand(1, 1, *size, generator=g)
    with torch.inference_mode():
        return model(vi, ir)


def test_save_load_round_trip(tmp_path):
    model = FIFN(TINY_FIFN).eval()
    for m in model.modules():  # non-default running stats, so loading them is checked
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
    path = tmp_path / "w.safetensors"
    save_weights(path, model, metadata={"epoch": 7, "note": "hello"})
    meta = read_weights_metadata(path)
    assert meta["format"] == "occo-fifn" and meta["note"] == "hello" and meta["epoch"] == "7"
    assert FIFNConfig.from_json(meta["config"]) == TINY_FIFN
    loaded = load_weights(path)
    assert not loaded.training and loaded.config == TINY_FIFN
    torch.testing.assert_close(_run(loaded), _run(model))
    assert load_weights(path, dtype=torch.float64).head.weight.dtype == torch.float64


def test_load_names_missing_and_mis_shaped_tensors(tmp_path):
    model = FIFN(TINY_FIFN)
    path = tmp_path / "w.safetensors"
    save_weights(path, model)
    state, meta = load_file(path), read_weights_metadata(path)
    del state["fusion.1.attention.kv_ir.weight"]
    state["head.weight"] = torch.zeros(1, 5, 1, 1)
    state["extra.bias"] = torch.zeros(1)
    save_file(state, tmp_path / "bad.safetensors", metadata=meta)
    with pytest.raises(WeightsError) as info:
        load_weights(tmp_path / "bad.safetensors")
    message = str(info.value)
    assert "fusion.1.attention.kv_ir.weight" in message and "head.weight (1, 5, 1, 1)" in message
    assert "extra.bias" in message


def test_load_refuses_other_formats(tmp_path):
    save_file({"x": torch.zeros(1)}, tmp_path / "other.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsError, match="not an occo weight file"):
        load_weights(tmp_path / "other.safetensors")
    pth = _pickle(tmp_path / "occo.pth", {"a": torch.zeros(1)})
    with pytest.raises(WeightsError, match="occo convert"):
        load_weights(pth)
    with pytest.raises(FileNotFoundError):
        load_weights(tmp_path / "absent.safetensors")


@pytest.mark.parametrize("wrap,prefix", [(True, ""), (True, "module."), (False, "")])
def test_convert_maps_every_release_tensor(tmp_path, wrap, prefix):
    release = release_state_dict(TINY_FIFN.widths)
    src = _pickle(tmp_path / "occo.pth", release, wrap=wrap, prefix=prefix)
    report = convert_release_checkpoint(src, tmp_path / "w.safetensors", heads=TINY_FIFN.heads)
    assert sorted(report.dropped) == sorted(k for k in release if ".space_weight2." in k)
    assert len(report.dropped) == 4 * len(TINY_FIFN.widths)
    model = load_weights(tmp_path / "w.safetensors")
    assert model.config == TINY_FIFN
    occo = model.state_dict()
    # Explicit correspondences, written independently of the converter's table.
    pairs = {
        "v1.Conv_BN_ReLU_2.0.weight": "encoder_vi.0.conv1.weight",
        "i2.Conv_BN_ReLU_2.4.running_var": "encoder_ir.1.bn2.running_var",
        "i4.Conv_BN_ReLU_2.1.num_batches_tracked": "encoder_ir.3.bn1.num_batches_tracked",
        "fusion1.space_weight1.mlp.0.weight": "fusion.0.spatial_weights.conv1.weight",
        "fusion2.channel_weight.mlp.2.bias": "fusion.1.channel_weights.fc2.bias",
        "fusion3.cross.cross_attn.kv2.weight": "fusion.2.attention.kv_ir.weight",
        "fusion4.cross.channel_proj3.weight": "fusion.3.proj_vi.weight",
        "fusion4.cross.end_proj2.bias": "fusion.3.out_proj_ir.bias",
        "fusion1.cross.norm1.weight": "fusion.0.norm_vi.weight",
        "fusion2.channel_emb.residual.weight": "fusion.1.merge.shortcut.weight",
        "fusion2.channel_emb.channel_embed.1.weight": "fusion.1.merge.depthwise.weight",
        "fusion3.channel_emb.channel_embed.4.running_mean": "fusion.2.merge.bn_main.running_mean",
        "fusion3.channel_emb.norm.running_var": "fusion.2.merge.bn_out.running_var",
        "up_concat3.conv1.weight": "decoder.0.conv1.weight",
        "up_concat1.conv2.bias": "decoder.2.conv2.bias",
        "final.weight": "head.weight",
    }
    for release_name, occo_name in pairs.items():
        assert torch.equal(occo[occo_name], release[release_name]), (release_name, occo_name)
    # Every kept release tensor lands somewhere, and nothing in occo is left unfilled.
    kept = [v for k, v in release.items() if ".space_weight2." not in k]
    assert len(kept) == len(occo)
    for key, value in release.items():
        name = release_key_to_occo(key)
        if name is not None:
            assert torch.equal(occo[name], value), key
    assert torch.isfinite(_run(model)).all()


def test_convert_names_unknown_and_missing_tensors(tmp_path):
    release = release_state_dict(TINY_FIFN.widths)
    release["fusion1.cross.gate.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match="fusion1.cross.gate.weight"):
        convert_release_checkpoint(
            _pickle(tmp_path / "a.pth", release), tmp_path / "a.safetensors", TINY_FIFN.heads
        )
    release = release_state_dict(TINY_FIFN.widths)
    del release["up_concat2.conv2.weight"]
    with pytest.raises(WeightsError, match="decoder.1.conv2.weight"):
        convert_release_checkpoint(
            _pickle(tmp_path / "b.pth", release), tmp_path / "b.safetensors", TINY_FIFN.heads
        )
    assert not (tmp_path / "a.safetensors").exists() and not (tmp_path / "b.safetensors").exists()


class _Payload:
    def __reduce__(self):
        return (print, ("this would run at load time",))


def test_convert_refuses_arbitrary_unpickling(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": {}, "hook": _Payload()}, handle, protocol=2)
    with pytest.raises(WeightsError, match="refusing"):
        read_release_checkpoint(path)
    torch.save({"meta": "no tensors here"}, tmp_path / "empty.pth")
    with pytest.raises(WeightsError, match="no state dict"):
        read_release_checkpoint(tmp_path / "empty.pth")


def test_release_keys_tsv_maps_onto_fifn(shared_dir):
    rows = [
        line.split("\t")
        for line in (shared_dir / "reference/fifn_official_state_dict_keys.tsv")
        .read_text()
        .splitlines()
        if line
    ]
    occo = FIFN().state_dict()
    mapped = {}
    for key, shape, _ in rows:
        name = release_key_to_occo(key)
        if name is None:
            assert ".space_weight2." in key
            continue
        assert tuple(occo[name].shape) == tuple(eval(shape)), key  # noqa: S307 - shapes like "(32, 1, 3, 3)"
        mapped[name] = key
    assert set(mapped) == set(occo)


def test_golden_release_output(shared_dir, tmp_path):
    """The release's network in eval mode, through occo's conversion: same raw output."""
    reference = shared_dir / "reference"
    state = load_file(reference / "fifn_official_golden_state_dict.safetensors")
    src = _pickle(tmp_path / "occo.pth", state)  # the release's format: {"state_dict": ...}
    convert_release_checkpoint(src, tmp_path / "fifn.safetensors")
    model = load_weights(tmp_path / "fifn.safetensors")
    golden = load_file(reference / "fifn_official_golden_io.safetensors")
    # One pair suffices (eval-mode BatchNorm: pairs are independent) and halves the time.
    with torch.inference_mode():
        raw = model(golden["vi_y"][:1], golden["ir"][:1])
    difference = (raw - golden["raw_output"][:1]).abs().max().item()
    assert difference < 5e-5, difference
