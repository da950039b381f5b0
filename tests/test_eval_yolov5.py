"""YOLOv5 in occo's own code: the restricted checkpoint reader refuses code, a tiny
random YOLOv5 round-trips through a checkpoint, val.py's letterbox, bad files fail in one
line, ``occo eval detect --detector yolov5:`` runs, and the real YOLOv5n matches golden
numbers (equal to the Ultralytics reference's) when ../shared is there."""

from __future__ import annotations

import builtins
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from occo.eval.yolov5 import (
    YoloSettings,
    YoloV5,
    YoloV5Detector,
    detect_raw,
    input_shape,
    letterbox,
    load_yolov5,
)
from occo.models.safe_pickle import (
    CheckpointError,
    Inert,
    UnsafeCheckpointError,
    read_foreign_checkpoint,
    state_dict_of,
)
from tests import eval_tiny as tiny

GOLDEN = Path(__file__).parent / "data" / "yolov5" / "yolov5n_msrs20.json"

#: A YOLOv5 of every v6 layer kind, tiny: 3 classes, strides 8/16/32.
TINY_YAML = {
    "nc": 3,
    "depth_multiple": 0.33,
    "width_multiple": 0.125,
    "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]],
    "backbone": [
        [-1, 1, "Conv", [64, 6, 2, 2]],
        [-1, 1, "Conv", [128, 3, 2]],
        [-1, 3, "C3", [128]],
        [-1, 1, "Conv", [256, 3, 2]],
        [-1, 1, "Conv", [512, 3, 2]],
        [-1, 1, "Conv", [512, 3, 2]],
        [-1, 1, "SPPF", [512, 5]],
    ],
    "head": [
        [-1, 1, "Conv", [256, 1, 1]],
        [-1, 1, "nn.Upsample", ["None", 2, "nearest"]],
        [[-1, 4], 1, "Concat", [1]],
        [-1, 1, "C3", [256, False]],
        [-1, 1, "nn.Upsample", ["None", 2, "nearest"]],
        [[-1, 3], 1, "Concat", [1]],
        [-1, 1, "C3", [128, False]],
        [-1, 1, "Conv", [128, 3, 2]],
        [[-1, 10], 1, "Concat", [1]],
        [-1, 1, "C3", [256, False]],
        [-1, 1, "Conv", [256, 3, 2]],
        [[-1, 7], 1, "Concat", [1]],
        [-1, 1, "C3", [256, False]],
        [[13, 16, 19], 1, "Detect", ["nc", "anchors"]],
    ],
}
NAMES = ["person", "bicycle", "car"]


def _tiny_net(seed: int = 0) -> YoloV5:
    torch.manual_seed(seed)
    net = YoloV5(json.loads(json.dumps(TINY_YAML)))
    for m in net.modules():  # trained-looking BatchNorm statistics, Ultralytics' eps
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 1e-3
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def _save_checkpoint(net: YoloV5, path: Path) -> Path:
    """Saved the way Ultralytics saves: a whole pickled module in half precision, with its
    yaml and names, under ``model`` (``ema`` None)."""
    net.yaml, net.names = TINY_YAML, NAMES
    torch.save({"epoch": -1, "model": net.half(), "ema": None}, path)
    net.float()
    return path


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> tuple[Path, YoloV5]:
    net = _tiny_net()
    path = _save_checkpoint(net, tmp_path_factory.mktemp("yolo") / "tiny.pt")
    return path, net


# ----------------------------------------------------------------------------- reader


class _RunsOnLoad:
    """Pickles as a call of ``func(arg)``: what a malicious checkpoint does."""

    def __init__(self, func, arg) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


class _SetstatePayload:
    """Its ``__setstate__`` would write a file if the class were imported on load."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __setstate__(self, state):  # pragma: no cover - must never run
        Path(state["marker"]).write_text("ran")


@pytest.mark.parametrize("kind", ["os.system", "eval", "exec"])
def test_payload_is_refused_and_nothing_runs(tmp_path, kind):
    marker = tmp_path / "ran.txt"
    func, arg = {
        "os.system": (os.system, f"touch {marker}"),
        "eval": (builtins.eval, f"open({str(marker)!r}, 'w')"),
        "exec": (builtins.exec, f"open({str(marker)!r}, 'w').write('x')"),
    }[kind]
    path = tmp_path / "evil.pt"
    torch.save({"model": _RunsOnLoad(func, arg), "w": torch.ones(2)}, path)
    with pytest.raises(UnsafeCheckpointError) as err:
        read_foreign_checkpoint(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "never runs code" in message
    assert kind.split(".")[-1] in message  # names what it would have called
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError):  # the detector path refuses the same way
        load_yolov5(path)
    assert not marker.exists()


def test_foreign_classes_are_inert_state(tmp_path):
    marker = tmp_path / "ran.txt"
    path = tmp_path / "state.pt"
    torch.save(
        {"obj": _SetstatePayload(str(marker)), "t": torch.arange(6.0).view(2, 3)[:, 1:]}, path
    )
    tree = read_foreign_checkpoint(path)
    assert not marker.exists()
    assert isinstance(tree["obj"], Inert) and tree["obj"].marker == str(marker)
    assert tree["obj"].occo_class.endswith("_SetstatePayload")
    assert torch.equal(tree["t"], torch.tensor([[1.0, 2.0], [4.0, 5.0]]))  # strided view kept


def test_state_dict_of_matches_torch(tiny_ckpt):
    path, net = tiny_ckpt
    tree = read_foreign_checkpoint(path)
    weights = state_dict_of(tree["model"])
    expected = net.state_dict()
    assert list(weights) == list(expected)
    assert all(
        weights[k].dtype == torch.float16 for k in weights if expected[k].is_floating_point()
    )
    assert all(torch.equal(weights[k].float(), expected[k].half().float()) for k in expected)


def test_bad_files_fail_in_one_line(tmp_path, tiny_ckpt):
    path, _ = tiny_ckpt
    data = path.read_bytes()
    cases = {}
    cases["truncated"] = tmp_path / "truncated.pt"
    cases["truncated"].write_bytes(data[: len(data) // 2])
    cases["garbage"] = tmp_path / "garbage.pt"
    cases["garbage"].write_bytes(b"not a checkpoint at all" * 10)
    cases["plain pickle"] = tmp_path / "plain.pkl"
    cases["plain pickle"].write_bytes(pickle.dumps({"a": 1}))
    cases["not yolo"] = tmp_path / "linear.pt"
    torch.save({"model": nn.Linear(2, 2)}, cases["not yolo"])
    cases["state dict"] = tmp_path / "sd.pt"
    torch.save(nn.Linear(2, 2).state_dict(), cases["state dict"])
    cases["missing"] = tmp_path / "missing.pt"
    for name, bad in cases.items():
        with pytest.raises(CheckpointError) as err:
            load_yolov5(bad)
        message = str(err.value)
        assert "\n" not in message and str(bad) in message, name
    assert "holds no YOLOv5 model" in str(
        pytest.raises(CheckpointError, load_yolov5, cases["not yolo"]).value
    )


def test_tensors_that_do_not_fit_the_layers(tmp_path):
    net = _tiny_net()
    other = dict(TINY_YAML, width_multiple=0.25)
    net.yaml, net.names = other, NAMES  # layer list says wider than the tensors are
    torch.save({"model": net}, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError, match="do not fit its YOLOv5 layer list"):
        load_yolov5(tmp_path / "wrong.pt")
    spec = dict(TINY_YAML, head=[*TINY_YAML["head"][:-1], [-1, 1, "Transformer", [1]]])
    with pytest.raises(CheckpointError, match="Transformer"):
        YoloV5(spec)


# ----------------------------------------------------------------------------- model


def test_tiny_checkpoint_round_trip(tiny_ckpt):
    path, net = tiny_ckpt
    loaded = load_yolov5(path)
    assert loaded.names == NAMES and loaded.net.head.stride.tolist() == [8.0, 16.0, 32.0]
    reference = _tiny_net()  # same seed: the saved weights, rounded as saved
    reference.load_state_dict({k: v.half().float() for k, v in reference.state_dict().items()})
    x = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        ours, theirs = loaded.net(x), reference(x)
    assert ours.shape == (2, 3 * (12 * 16 + 6 * 8 + 3 * 4), 8)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)  # BatchNorm folded, eps 1e-3


def test_letterbox_is_val_rect():
    assert input_shape(480, 640, 640, 0.5) == (512, 672)
    assert input_shape(640, 480, 640, 0.5) == (672, 512)
    assert input_shape(480, 640, 640, 0.0) == (480, 640)
    wide = letterbox(np.zeros((300, 1000, 3), np.uint8), 640, 0.5)
    assert wide.pixels.shape == (224, 672, 3) and wide.gain == pytest.approx(0.64)
    assert wide.pad == (16.0, 16.0) and wide.pixels[0, 0, 0] == 114 and wide.pixels[20, 20, 0] == 0


def test_detections_in_original_pixels_batch_independent(tiny_ckpt):
    path, _ = tiny_ckpt
    net = load_yolov5(path).net
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 255, (60, 80, 3), np.uint8),
        rng.integers(0, 255, (90, 50, 3), np.uint8),
    ]
    settings = YoloSettings(image_size=128)
    together = detect_raw(net, images, settings)
    alone = [detect_raw(net, [img], settings)[0] for img in images]
    for dets, single, img in zip(together, alone, images, strict=True):
        assert len(dets) > 0 and dets.shape[1] == 6
        assert (dets[:, [0, 2]] <= img.shape[1]).all() and (dets[:, [1, 3]] <= img.shape[0]).all()
        assert (dets[:, :4] >= 0).all() and (dets[:, 4] > settings.conf_threshold).all()
        assert (dets[:-1, 4] >= dets[1:, 4]).all()
        torch.testing.assert_close(dets, single)


def test_detector_maps_classes_by_name(tiny_ckpt):
    from occo.data.classes import ClassTableError

    path, _ = tiny_ckpt
    detector = YoloV5Detector(path, ["Car", "person"], YoloSettings(image_size=64), max_dets=5)
    found = detector.detect([np.full((40, 56, 3), 90, np.uint8)])[0]
    assert len(found) <= 5 and set(found.labels) <= {"Car", "person"}
    with pytest.raises(ClassTableError, match="dog"):
        YoloV5Detector(path, ["dog"], YoloSettings(image_size=64))


def test_cli_eval_detect_yolov5(tmp_path, tiny_ckpt):
    from occo.cli.app import app

    path, _ = tiny_ckpt
    images = tiny.write_images(tmp_path / "images")
    labels = tiny.write_yolo(tmp_path / "labels")
    args = ["eval", "detect", str(images), "--labels", str(labels), "--cache", str(tmp_path / "c")]
    runner = CliRunner()
    result = runner.invoke(app, [*args, "--detector", f"yolov5:{path}", "-q", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert len(report["rows"]) == 1 and report["rows"][0]["images"] == 3
    again = runner.invoke(app, [*args, "--detector", f"yolov5:{path}"])
    assert again.exit_code == 0 and "3 image(s) from the cache, 0 computed" in again.output
    evil = tmp_path / "evil.pt"
    torch.save({"model": _RunsOnLoad(os.system, f"touch {tmp_path / 'ran'}")}, evil)
    bad = runner.invoke(app, [*args, "--detector", f"yolov5:{evil}"])
    assert bad.exit_code != 0 and isinstance(bad.exception, UnsafeCheckpointError)
    assert "never runs code" in str(bad.exception) and "\n" not in str(bad.exception)
    assert not (tmp_path / "ran").exists()  # the entry point prints it as one line
    missing = runner.invoke(app, [*args, "--detector", f"yolov5:{tmp_path / 'nope.pt'}"])
    assert "YOLOv5 checkpoint not found" in str(missing.exception)


# ----------------------------------------------------------------------------- real YOLOv5n


def test_yolov5n_matches_golden(shared_dir):
    from occo.data.io import read_image
    from occo.masks.detector import to_rgb8

    weights = shared_dir / "peers" / "detectors" / "yolov5n" / "yolov5n.pt"
    if not weights.is_file():
        pytest.skip("yolov5n.pt is not in ../shared")
    golden = json.loads(GOLDEN.read_text())
    loaded = load_yolov5(weights)
    assert loaded.model_type == "yolov5n" and len(loaded.names) == 80
    for key, want in golden["images"].items():
        modality, stem = key.split("/")
        image = to_rgb8(read_image(shared_dir / "data" / "msrs20" / modality / f"{stem}.png"))
        dets = detect_raw(loaded.net, [image], YoloSettings())[0]
        assert len(dets) == want["count"], key
        top = torch.tensor(want["top"], dtype=torch.float32)
        torch.testing.assert_close(dets[: len(top)], top, atol=1e-3, rtol=0)
