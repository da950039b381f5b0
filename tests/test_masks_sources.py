"""The mask-source table: one builder per source, every Protocol method on every source."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

from occo.data.io import write_image_atomic
from occo.masks.boxes import BoxMaskSource
from occo.masks.generate import ModelMaskSource
from occo.masks.labels import LabelMaskSource
from occo.masks.sources import (
    SOURCES,
    MaskSource,
    MaskSourceError,
    SourceOptions,
    build_source,
    fingerprint,
)
from tests import eval_tiny as tiny

#: What generate_masks asks of a source (the Protocol's methods).
ASKED = ("setup", "load", "process", "warnings")


def _pairs(root: Path) -> list[tuple[str, Path, Path]]:
    tiny.write_images(root / "ir", seed=1)
    tiny.write_images(root / "vi", seed=2)
    return [(s, root / "ir" / f"{s}.png", root / "vi" / f"{s}.png") for s in tiny.STEMS]


def test_the_protocol_declares_every_method_asked_and_every_source_has_them():
    declared = {n for n, v in vars(MaskSource).items() if callable(v) and not n.startswith("_")}
    assert declared == set(ASKED)
    for cls in (ModelMaskSource, LabelMaskSource, BoxMaskSource):
        for name in ASKED:
            assert callable(getattr(cls, name, None)), f"{cls.__name__} lacks {name}"


def test_options_choose_the_source_through_the_table(tmp_path):
    assert set(SOURCES) == {"models", "labels", "annotations"}
    assert SourceOptions().kind == "models"
    assert SourceOptions(labels=Path("l")).kind == "labels"
    assert SourceOptions(boxes_ir=Path("a"), boxes_vi=Path("b")).kind == "annotations"
    pairs = _pairs(tmp_path)
    for stem in tiny.STEMS:
        write_image_atomic(tmp_path / "labels" / f"{stem}.png", np.ones(tiny.SIZE, np.uint8))
    labels = build_source(SourceOptions(labels=tmp_path / "labels", classes="1"), pairs)
    assert isinstance(labels.source, LabelMaskSource) and not labels.uses_models
    assert labels.files["labels_sha256"] == fingerprint([tmp_path / "labels"])
    yolo = tiny.write_yolo(tmp_path / "yolo")
    boxes = build_source(SourceOptions(boxes=yolo), pairs)
    assert isinstance(boxes.source, BoxMaskSource)
    assert boxes.files["boxes_ir_dir"] == boxes.files["boxes_vi_dir"] == str(yolo.resolve())
    assert any("no annotation" in w for w in boxes.warnings)  # 0002 has no label file
    for built in (labels, boxes):
        built.source.setup()
        masks = built.source.process(built.source.load(pairs[:1]))
        assert masks[0].stem == "0000" and built.source.warnings() == []


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (SourceOptions(labels=Path("l")), "--labels needs --classes"),
        (SourceOptions(classes="1"), "--classes and --class-names go with"),
        (SourceOptions(labels=Path("l"), boxes=Path("b")), "exclude each other"),
        (SourceOptions(boxes=Path("b"), boxes_ir=Path("i")), "not both"),
        (SourceOptions(boxes_ir=Path("i")), "go together"),
        (SourceOptions(box_threshold=-1, device="cpu"), "must be >= 0"),
    ],
)
def test_bad_options_are_one_line_errors(options, words):
    with pytest.raises(MaskSourceError, match=words) as info:
        build_source(options, [])
    assert "\n" not in str(info.value)


def test_the_command_holds_no_source_selection():
    from occo.cli import masks as cli

    text = inspect.getsource(cli.gen)
    assert "build_source(" in text and "getattr(" not in text
    for name in ("LabelMaskSource", "BoxMaskSource", "ModelMaskSource", "elif labels"):
        assert name not in text
