"""VGG19 extractor: layers, weight loading, errors. Random weights only, never a download."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision

from occo.data.errors import OccoError
from occo.losses.vgg import (
    GRAY_LAYER,
    LAYER_INDEX,
    VGGFeatures,
    VGGWeightsError,
    build_vgg_features,
    imagenet_weights_path,
)


@pytest.fixture(scope="module")
def vgg() -> VGGFeatures:
    torch.manual_seed(0)
    return VGGFeatures(random_init=True)  # random weights, explicitly


@pytest.fixture
def no_download(monkeypatch, tmp_path):
    """An empty torch hub cache and a download that fails like an offline machine."""
    calls = []

    def offline(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    return calls


def test_layer_names_match_torchvision_indices():
    assert LAYER_INDEX["relu1_1"] == 1
    assert LAYER_INDEX["relu4_4"] == 26
    assert LAYER_INDEX["relu5_4"] == 35
    assert len(LAYER_INDEX) == 16


def test_random_weights_must_be_asked_for():
    with pytest.raises(ValueError, match="random_init"):
        VGGFeatures(weights=None)


def test_shapes_frozen_and_eval(vgg):
    x = torch.rand(2, 1, 32, 48, requires_grad=True)
    out = vgg(x, layers=("relu4_4", "relu5_4", GRAY_LAYER))
    assert out["relu4_4"].shape == (2, 512, 4, 6)
    assert out["relu5_4"].shape == (2, 512, 2, 3)
    assert out[GRAY_LAYER].shape == (2, 64, 32, 48)
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training
    (grad,) = torch.autograd.grad(out["relu5_4"].sum(), x)  # gradients still reach the input
    assert float(grad.abs().sum()) > 0


def test_matches_torchvision_vgg19_features(vgg):
    """Same state dict keys and outputs as torchvision's vgg19().features[:36]."""
    from torchvision.models.vgg import cfgs, make_layers

    tv = make_layers(cfgs["E"])[:36].eval()
    assert set(tv.state_dict()) == set(vgg.features.state_dict())
    tv.load_state_dict(vgg.features.state_dict())
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        want = tv((x.repeat(1, 3, 1, 1) - mean) / std)
        got = vgg(x, layers=("relu5_4",))["relu5_4"]
    torch.testing.assert_close(got, want)


def test_gray_relu1_1_is_conv1_1_on_weighted_gray(vgg):
    x = torch.rand(2, 1, 12, 10, generator=torch.Generator().manual_seed(2))
    rgb = torch.cat([0.299 * x, 0.587 * x, 0.114 * x], dim=1)
    with torch.no_grad():
        want = torch.relu(vgg.features[0](rgb))
        got = vgg.gray_relu1_1(x)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(vgg.gray_relu1_1(torch.cat([x] * 3, dim=1)), got)


def test_dtype_channels_last_and_autocast(vgg, tmp_path):
    path = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in vgg.features.state_dict().items()}, path)
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = vgg(x)
        wide = VGGFeatures(path, dtype=torch.float64, channels_last=True)(x.double())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = vgg(x)
    torch.testing.assert_close(wide["relu5_4"].float(), ref["relu5_4"], rtol=1e-4, atol=1e-4)
    assert half["relu5_4"].dtype == torch.bfloat16
    assert float((half["relu5_4"].float() - ref["relu5_4"]).abs().mean()) < 0.1 * float(
        ref["relu5_4"].abs().mean()
    )


@pytest.mark.parametrize("layout", ["full", "features_only", "wrapped", "safetensors"])
def test_loads_local_state_dicts(vgg, tmp_path, layout):
    state = vgg.features.state_dict()
    if layout == "full":
        payload = {f"features.{k}": v for k, v in state.items()}
        payload["classifier.0.weight"] = torch.zeros(2, 2)  # extra entries are ignored
    elif layout == "wrapped":
        payload = {"state_dict": {f"features.{k}": v for k, v in state.items()}}
    else:
        payload = dict(state)
    if layout == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "vgg.safetensors"
        save_file({k: v.contiguous() for k, v in payload.items()}, str(path))
    else:
        path = tmp_path / "vgg.pth"
        torch.save(payload, path)
    loaded = build_vgg_features(path)
    assert loaded.source == str(path)
    torch.testing.assert_close(loaded.features[34].weight, vgg.features[34].weight)


def test_bad_local_files_are_clear_errors(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(VGGWeightsError, match="nope.pth"):
        VGGFeatures(missing)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(VGGWeightsError, match="garbage.pth"):
        VGGFeatures(garbage)
    partial = tmp_path / "partial.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, partial)
    with pytest.raises(VGGWeightsError, match="missing features.0.bias"):
        VGGFeatures(partial)


def test_missing_imagenet_weights_name_the_file(no_download):
    path = imagenet_weights_path()
    url = torchvision.models.VGG19_Weights.IMAGENET1K_V1.url
    assert path.name == url.rsplit("/", 1)[-1]
    with pytest.raises(VGGWeightsError) as info:
        VGGFeatures("imagenet")
    message = str(info.value)
    assert str(path) in message and url in message and "download failed" in message
    assert isinstance(info.value, OccoError) and no_download == [url]
    with pytest.raises(VGGWeightsError, match="not found"):
        VGGFeatures("imagenet", download=False)
    assert len(no_download) == 1  # download=False never tries the network


def test_cached_imagenet_weights_load_without_download(vgg, no_download):
    path = imagenet_weights_path()
    path.parent.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in vgg.features.state_dict().items()}, path)
    loaded = VGGFeatures("imagenet")
    assert loaded.source == "imagenet" and no_download == []
    torch.testing.assert_close(loaded.features[0].bias, vgg.features[0].bias)
