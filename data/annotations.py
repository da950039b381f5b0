"""Box annotations and box predictions: YOLO txt, Pascal VOC XML, COCO JSON.

Every reader gives boxes per image stem in one convention: ``x0 y0 x1 y1`` in pixels of
the image, continuous coordinates (a box over pixel columns 0..9 spans x 0..10), with
the class names of the annotation's class table and, for predictions, confidences.

The formats, detected from the files:

- YOLO: one ``STEM.txt`` per image, lines ``class cx cy w h [confidence]`` relative to
  the image size (so the image's size is needed to read them), ``class`` an index into a
  class table: ``--class-names FILE``, else ``classes.txt`` in the folder or its parent.
- Pascal VOC: one ``STEM.xml`` per image, ``<object><name>`` and ``<bndbox>`` with
  ``xmin ymin xmax ymax`` as 1-based inclusive pixel indices, read as
  ``x0 = xmin - 1, x1 = xmax`` (detectron2's reading of VOC).
- COCO: one JSON object with ``images`` (id, file_name, width, height), ``categories``
  (id, name) and ``annotations`` (image_id, category_id, bbox ``[x, y, w, h]``, iscrowd).
- COCO results (predictions only): a JSON list of ``{image_id, category_id, bbox, score}``.
  ``image_id`` is the COCO ground truth's id, or the image stem (YOLOv5's ``--save-json``
  writes ``int(stem)`` for numeric stems, the stem otherwise); ``category_id`` is the COCO
  ground truth's category id, else the index into the class table (YOLOv5's convention);
  an optional ``category_name`` wins over both.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from occo.data.classes import ClassTableError, name_key, read_class_names

#: File names searched (in the label folder, then its parent) for a YOLO class table.
YOLO_CLASS_FILES = ("classes.txt", "obj.names", "classes.names")


class AnnotationError(ClassTableError):
    """Annotations that cannot be read: the message names the file and what to do."""


@dataclass
class ImageBoxes:
    """Boxes of one image."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float64))
    """``(N, 4)`` float64 boxes x0 y0 x1 y1 in pixels (fractions of the size for raw YOLO)."""
    labels: list[str] = field(default_factory=list)
    """``N`` class names."""
    scores: np.ndarray | None = None
    """``(N,)`` float64 confidences (predictions), or None (ground truth)."""
    crowd: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    """``(N,)`` COCO ``iscrowd`` flags (a crowd region is not an object to find)."""

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float64).reshape(-1, 4)
        self.labels = [str(label) for label in self.labels]
        n = len(self.boxes)
        if self.scores is not None:
            self.scores = np.asarray(self.scores, np.float64).reshape(-1)
        crowd = np.asarray(self.crowd, bool).reshape(-1)
        self.crowd = crowd if crowd.size else np.zeros(n, bool)
        sizes = {len(self.labels), len(self.crowd)}
        if self.scores is not None:
            sizes.add(len(self.scores))
        if sizes != {n}:
            raise ValueError(f"{n} boxes but {sorted(sizes)} labels/scores/flags")

    def __len__(self) -> int:
        return len(self.boxes)

    def select(self, keep: np.ndarray) -> ImageBoxes:
        """The boxes where ``keep`` (a boolean or index array) says so."""
        index = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep)
        return ImageBoxes(
            self.boxes[index],
            [self.labels[i] for i in index],
            None if self.scores is None else self.scores[index],
            self.crowd[index],
        )

    def only(self, classes: Iterable[str]) -> ImageBoxes:
        """The boxes of the given classes (names compared with :func:`name_key`)."""
        wanted = {name_key(c) for c in classes}
        return self.select(np.array([name_key(n) in wanted for n in self.labels], bool))


def clip_boxes(boxes: ImageBoxes, size: tuple[int, int]) -> tuple[ImageBoxes, int]:
    """Clip boxes to an image; boxes left without area are dropped.

    Args:
        boxes: boxes in pixels.
        size: the image's ``(H, W)``.

    Returns:
        The clipped boxes and how many boxes were changed or dropped.
    """
    if not len(boxes):
        return boxes, 0
    height, width = size
    clipped = boxes.boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, width)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, height)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    changed = np.any(clipped != boxes.boxes, axis=1) | ~keep
    result = ImageBoxes(clipped, boxes.labels, boxes.scores, boxes.crowd).select(keep)
    return result, int(changed.sum())


@dataclass
class BoxSet:
    """Boxes per image stem, read from one annotation folder or file."""

    path: Path
    """The folder or file read."""
    format: str
    """``yolo``, ``voc``, ``coco`` or ``coco-results``."""
    classes: list[str]
    """The class table's names, in table order."""
    entries: dict[str, ImageBoxes] = field(default_factory=dict)
    """Stem -> boxes (YOLO: fractions of the image size until :meth:`get`)."""
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    """``(H, W)`` recorded in the annotations (VOC ``<size>``, COCO images), where given."""
    relative: bool = False
    """Coordinates are fractions of the image size (YOLO)."""
    image_ids: dict[int, str] = field(default_factory=dict)
    """COCO image id -> stem (COCO ground truth)."""
    category_ids: dict[int, str] = field(default_factory=dict)
    """COCO category id -> name (COCO ground truth)."""
    unmatched: list[str] = field(default_factory=list)
    """Predictions' image ids that name no known image (COCO results)."""
    class_table: Path | None = None
    """The class-table file used (YOLO), if any."""
    predictions: bool = False
    """Boxes carry confidences (predictions), not ground truth."""
    index_names: dict[int, str] = field(default_factory=dict)
    """Class index -> name of the table used (YOLO), for predictions numbered the same way."""

    def stems(self) -> list[str]:
        """Stems with an annotation entry (a file, or an image record), sorted."""
        return sorted(self.entries)

    def __contains__(self, stem: object) -> bool:
        return stem in self.entries

    def get(self, stem: str, size: tuple[int, int] | None = None) -> tuple[ImageBoxes, int]:
        """One image's boxes in pixels, clipped to its size.

        Args:
            stem: the image stem; an image without an entry has no boxes.
            size: the image's ``(H, W)``; needed for YOLO, else clips when given.

        Returns:
            The boxes and how many were clipped or dropped at the image border.
        """
        boxes = self.entries.get(stem)
        if boxes is None:
            return ImageBoxes(scores=np.zeros(0) if self.predictions else None), 0
        if self.relative:
            if size is None:
                raise ValueError(f"YOLO boxes of {stem} need the image size")
            height, width = size
            boxes = ImageBoxes(
                boxes.boxes * np.array([width, height, width, height], np.float64),
                boxes.labels,
                boxes.scores,
                boxes.crowd,
            )
        return clip_boxes(boxes, size) if size is not None else (boxes, 0)


# ----------------------------------------------------------------------------- reading


def read_boxes(
    path: str | Path,
    class_names: str | Path | Mapping[int, str] | None = None,
    *,
    predictions: bool = False,
    reference: BoxSet | None = None,
    stems: Iterable[str] = (),
) -> BoxSet:
    """Read box annotations or predictions, detecting the format from the files.

    Args:
        path: a folder of YOLO ``.txt`` or VOC ``.xml`` files, or a COCO ``.json`` file
            (a folder holding a single ``.json`` works too).
        class_names: class table (file or index -> name): YOLO's classes (default: a
            ``classes.txt`` beside the files or one folder up); for VOC a check that
            every name is known; the meaning of ``category_id`` in COCO results.
        predictions: read predictions: YOLO lines need the confidence column.
        reference: the ground truth the predictions will be scored against; COCO results
            take image and category ids from it when it is COCO.
        stems: the images' stems, to match numeric COCO-results image ids.

    Returns:
        The :class:`BoxSet`.

    Raises:
        AnnotationError: unknown layout, malformed file (named), unknown class.
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"annotations not found: {path}")
    table = _class_table(class_names)
    if path.is_dir():
        files = {kind: sorted(path.glob(f"*.{kind}")) for kind in ("txt", "xml", "json")}
        files["txt"] = [p for p in files["txt"] if p.name not in YOLO_CLASS_FILES]
        present = [kind for kind, found in files.items() if found]
        if len(present) > 1 and "json" in present:
            present.remove("json")  # a stray dataset.json beside txt/xml files
        if not present:
            raise AnnotationError(
                f"no annotations in {path}: expected YOLO .txt, Pascal VOC .xml or a COCO .json"
            )
        if len(present) > 1:
            raise AnnotationError(
                f"{path} mixes YOLO .txt and VOC .xml files; keep one format per folder"
            )
        kind = present[0]
        if kind == "json":
            if len(files["json"]) > 1:
                raise AnnotationError(
                    f"{path} holds {len(files['json'])} .json files; pass the COCO file itself"
                )
            path = files["json"][0]
        elif kind == "txt":
            if table is None and reference is not None and reference.index_names:
                table = dict(reference.index_names)  # predictions numbered like their labels
            return _read_yolo(path, files["txt"], table, predictions)
        else:
            if predictions:
                raise AnnotationError(
                    f"{path}: VOC XML has no confidences; give predictions as YOLO txt with a "
                    "confidence column or as a COCO results JSON"
                )
            return _read_voc(path, files["xml"], table)
    if path.suffix.lower() != ".json":
        raise AnnotationError(
            f"{path} is not an annotation folder or a COCO .json file; pass the folder of "
            ".txt/.xml files or the .json file"
        )
    record = _load_json(path)
    if isinstance(record, list):
        if not predictions:
            raise AnnotationError(
                f"{path} is a COCO results list (predictions); ground truth needs a COCO "
                "object with images, annotations and categories"
            )
        return _read_coco_results(path, record, table, reference, stems)
    if predictions:
        raise AnnotationError(
            f"{path} is a COCO dataset, not predictions; give predictions as a COCO results "
            "list ([{image_id, category_id, bbox, score}, ...])"
        )
    return _read_coco(path, record)


def _class_table(class_names: str | Path | Mapping[int, str] | None) -> dict[int, str] | None:
    if class_names is None:
        return None
    if isinstance(class_names, Mapping):
        return {int(k): str(v) for k, v in class_names.items()}
    return read_class_names(class_names)


def find_yolo_class_table(folder: Path) -> Path | None:
    """A YOLO class table beside the label files or one folder up (MSRS keeps it there)."""
    for where in (folder, folder.parent):
        for name in YOLO_CLASS_FILES:
            if (where / name).is_file():
                return where / name
    return None


def _table_names(table: Mapping[int, str]) -> list[str]:
    return [table[i] for i in sorted(table)]


def _read_yolo(
    folder: Path, files: Sequence[Path], table: dict[int, str] | None, predictions: bool
) -> BoxSet:
    table_file = None
    if table is None:
        table_file = find_yolo_class_table(folder)
        if table_file is None:
            raise AnnotationError(
                f"YOLO labels in {folder} need their class names: pass --class-names FILE (one "
                f"name per line, line N = class N) or put classes.txt beside them"
            )
        table = read_class_names(table_file)
    known = ", ".join(f"{i} {n}" for i, n in sorted(table.items()))
    result = BoxSet(
        folder,
        "yolo",
        _table_names(table),
        relative=True,
        class_table=table_file,
        predictions=predictions,
        index_names=dict(table),
    )
    for file in files:
        boxes, labels, scores = [], [], []
        try:
            text = file.read_text(encoding="utf-8-sig")  # a byte-order mark is not a value
        except (OSError, UnicodeDecodeError) as exc:
            raise AnnotationError(f"cannot read {file}: {exc}") from None
        for number, line in enumerate(text.splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            where = f"{file}:{number}"
            if len(parts) not in (5, 6):
                raise AnnotationError(
                    f"{where}: expected 'class cx cy w h' (+ confidence), got {len(parts)} "
                    "values; polygon labels are not boxes"
                )
            if predictions and len(parts) == 5:
                raise AnnotationError(
                    f"{where}: predictions need a confidence column 'class cx cy w h confidence' "
                    "(YOLOv5/8: save with --save-conf)"
                )
            try:
                index = int(parts[0])
                cx, cy, w, h = (float(v) for v in parts[1:5])
                score = float(parts[5]) if len(parts) == 6 else 1.0
            except ValueError:
                raise AnnotationError(f"{where}: not numbers: {line.strip()!r}") from None
            _finite((cx, cy, w, h), where, "box")
            _finite((score,), where, "confidence")
            if index not in table:
                raise AnnotationError(
                    f"{where}: class {index} is not in the class table ({known}); "
                    "pass the right --class-names"
                )
            boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
            labels.append(table[index])
            scores.append(score)
        result.entries[file.stem] = ImageBoxes(
            boxes, labels, np.asarray(scores) if predictions else None
        )
    return result


def _voc_number(node: ElementTree.Element, tag: str, file: Path) -> float:
    child = node.find(tag)
    try:
        value = float(child.text)  # type: ignore[union-attr, arg-type]
    except (AttributeError, TypeError, ValueError):
        raise AnnotationError(f"{file}: <{tag}> missing or not a number") from None
    if not math.isfinite(value):
        raise AnnotationError(f"{file}: <{tag}> is {value}, not a finite number")
    return value


def _read_voc(folder: Path, files: Sequence[Path], table: dict[int, str] | None) -> BoxSet:
    lookup = {name_key(n): n for n in table.values()} if table else None
    found: dict[str, str] = {}
    entries: dict[str, ImageBoxes] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for file in files:
        try:
            root = ElementTree.parse(file).getroot()
        except (OSError, ElementTree.ParseError) as exc:
            raise AnnotationError(f"cannot read {file} as Pascal VOC XML: {exc}") from None
        size = root.find("size")
        if size is not None:
            width, height = _voc_number(size, "width", file), _voc_number(size, "height", file)
            if width > 0 and height > 0:
                sizes[file.stem] = (int(height), int(width))
        boxes, labels = [], []
        for obj in root.iter("object"):
            name = (obj.findtext("name") or "").strip()
            if not name:
                raise AnnotationError(f"{file}: an <object> without <name>")
            if lookup is not None:
                if name_key(name) not in lookup:
                    raise AnnotationError(
                        f"{file}: unknown class '{name}' (known: {', '.join(table.values())})"  # type: ignore[union-attr]
                    )
                name = lookup[name_key(name)]
            box = obj.find("bndbox")
            if box is None:
                raise AnnotationError(f"{file}: object '{name}' has no <bndbox>")
            x0, y0, x1, y1 = (_voc_number(box, t, file) for t in ("xmin", "ymin", "xmax", "ymax"))
            boxes.append((x0 - 1, y0 - 1, x1, y1))  # 1-based inclusive -> continuous
            labels.append(name)
            found.setdefault(name_key(name), name)
        entries[file.stem] = ImageBoxes(boxes, labels)
    classes = _table_names(table) if table else sorted(found.values(), key=name_key)
    return BoxSet(folder, "voc", classes, entries, sizes)


def _load_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnotationError(f"cannot read {path} as JSON: {exc}") from None
    except RecursionError:
        raise AnnotationError(
            f"cannot read {path} as JSON: it is nested too deeply to be annotations"
        ) from None


def _finite(values: Sequence[float], where: str, what: str) -> None:
    """Refuse NaN and infinite values (an infinite box would cover the whole image)."""
    if not all(math.isfinite(v) for v in values):
        raise AnnotationError(
            f"{where}: the {what} holds a non-finite number ({', '.join(map(str, values))}); "
            "fix or remove that entry"
        )


def _coco_box(bbox: object, where: str) -> tuple[float, float, float, float]:
    try:
        if isinstance(bbox, (str, bytes, dict)):
            raise TypeError
        x, y, w, h = (float(v) for v in bbox)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise AnnotationError(f"{where}: bbox must be [x, y, width, height], got {bbox!r}") from None
    _finite((x, y, w, h), where, "bbox")
    return x, y, x + w, y + h


def _coco_score(score: object, where: str) -> float:
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        raise AnnotationError(f"{where}: score must be a number, got {score!r}")
    _finite((float(score),), where, "score")
    return float(score)


def _coco_list(record: dict, key: str, path: Path) -> list:
    value = record[key]
    if not isinstance(value, list):
        raise AnnotationError(
            f"{path}: '{key}' must be a list, got {type(value).__name__}; "
            "an empty list [] if there are none"
        )
    return value


def _coco_size(image: dict, stem: str, path: Path) -> tuple[int, int] | None:
    width, height = image.get("width"), image.get("height")
    if not width or not height:  # not recorded (as before: the image file tells)
        return None
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value == int(value) and 0 < value <= _LARGEST_SIDE
        ):
            raise AnnotationError(
                f"{path}: image '{stem}' has {name} {value!r}; expected a whole number of "
                f"pixels from 1 to {_LARGEST_SIDE}"
            )
    return int(height), int(width)  # type: ignore[arg-type]


#: Largest image side a COCO record may state (sizes are checked before anything is made).
_LARGEST_SIDE = 1 << 20


def _read_coco(path: Path, record: object) -> BoxSet:
    if not isinstance(record, dict) or not {"images", "annotations", "categories"} <= set(record):
        raise AnnotationError(
            f"{path} is not a COCO dataset: it needs 'images', 'annotations' and 'categories'"
        )
    categories: dict[int, str] = {}
    images: dict[int, dict] = {}
    try:
        for c in _coco_list(record, "categories", path):
            index = int(c["id"])
            if index in categories:  # a second name for one id would relabel its boxes
                raise AnnotationError(
                    f"{path}: categories '{categories[index]}' and '{c['name']}' share the id "
                    f"{index}; give each category its own id"
                )
            categories[index] = str(c["name"])
        for i in _coco_list(record, "images", path):
            index = int(i["id"])
            if index in images:
                raise AnnotationError(f"{path}: two images have the id {index}")
            images[index] = i
    except AnnotationError:
        raise
    except (KeyError, TypeError, ValueError, OverflowError):
        raise AnnotationError(f"{path}: categories need id and name, images need id") from None
    result = BoxSet(
        path, "coco", [categories[i] for i in sorted(categories)], category_ids=categories
    )
    for image_id, image in images.items():
        stem = Path(str(image.get("file_name", image_id))).stem
        if stem in result.entries:
            raise AnnotationError(f"{path}: two images have the stem '{stem}'")
        result.image_ids[image_id] = stem
        result.entries[stem] = ImageBoxes()
        if (size := _coco_size(image, stem, path)) is not None:
            result.sizes[stem] = size
    grouped: dict[str, list] = {stem: [] for stem in result.entries}
    for n, ann in enumerate(_coco_list(record, "annotations", path)):
        where = f"{path}: annotation {ann.get('id', n) if isinstance(ann, dict) else n}"
        try:
            stem = result.image_ids[int(ann["image_id"])]
            name = categories[int(ann["category_id"])]
        except (KeyError, TypeError, ValueError, OverflowError):
            raise AnnotationError(f"{where}: unknown image_id or category_id") from None
        grouped[stem].append((_coco_box(ann.get("bbox"), where), name, bool(ann.get("iscrowd"))))
    for stem, items in grouped.items():
        result.entries[stem] = ImageBoxes(
            [b for b, _, _ in items], [n for _, n, _ in items], crowd=[c for _, _, c in items]
        )
    return result


def _read_coco_results(
    path: Path,
    record: list,
    table: dict[int, str] | None,
    reference: BoxSet | None,
    stems: Iterable[str],
) -> BoxSet:
    coco_ref = reference is not None and reference.format == "coco"
    classes = list(reference.classes) if reference is not None else _table_names(table or {})
    numeric = {int(s): s for s in stems if s.isdigit()}
    grouped: dict[str, list] = {}
    unmatched: set[str] = set()
    for n, det in enumerate(record):
        where = f"{path}: result {n}"
        if not isinstance(det, dict) or not {"image_id", "bbox", "score"} <= set(det):
            raise AnnotationError(f"{where}: needs image_id, category_id, bbox and score")
        image_id = det["image_id"]
        if coco_ref:
            stem = reference.image_ids.get(image_id) if isinstance(image_id, int) else None  # type: ignore[union-attr]
        elif isinstance(image_id, int):
            stem = numeric.get(image_id, str(image_id))
        else:
            stem = str(image_id)
        if stem is None:
            unmatched.add(str(image_id))
            continue
        name = det.get("category_name")
        if name is None:
            name = _category_name(det.get("category_id"), coco_ref, reference, table, where)
        score = _coco_score(det["score"], where)
        grouped.setdefault(stem, []).append((_coco_box(det["bbox"], where), str(name), score))
    result = BoxSet(path, "coco-results", classes, unmatched=sorted(unmatched), predictions=True)
    for stem, items in grouped.items():
        result.entries[stem] = ImageBoxes(
            [b for b, _, _ in items],
            [n for _, n, _ in items],
            np.asarray([float(s) for _, _, s in items], np.float64),
        )
    return result


def _category_name(
    category: object,
    coco_ref: bool,
    reference: BoxSet | None,
    table: dict[int, str] | None,
    where: str,
) -> str:
    try:
        index = int(category)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise AnnotationError(f"{where}: category_id must be an integer") from None
    if coco_ref:
        names = reference.category_ids  # type: ignore[union-attr]
    elif table is not None:
        names = table
    elif reference is not None and reference.index_names:
        names = reference.index_names
    else:
        raise AnnotationError(
            f"{where}: category_id {index} needs a class table to name it; pass --class-names "
            "FILE (line N = category N, YOLOv5's convention) or add category_name"
        )
    if index not in names:
        raise AnnotationError(
            f"{where}: category_id {index} is not a known class "
            f"({', '.join(f'{i} {n}' for i, n in sorted(names.items()))})"
        )
    return names[index]


# ----------------------------------------------------------------------------- writing


def coco_results(
    boxes: Mapping[str, ImageBoxes], classes: Sequence[str], decimals: int = 2
) -> list[dict]:
    """Predictions as a COCO results list: image_id = stem, category_id = class index + 1.

    Each entry also carries ``category_name``, so the list reads back without a class
    table. Boxes are rounded to ``decimals`` (hundredths of a pixel), scores to 5 decimals.

    Args:
        boxes: stem -> predictions in pixels (with scores).
        classes: the class list that numbers the categories.

    Returns:
        ``[{image_id, category_id, category_name, bbox, score}, ...]`` sorted by stem.
    """
    number = {name: i + 1 for i, name in enumerate(classes)}
    results = []
    for stem in sorted(boxes):
        entry = boxes[stem]
        scores = entry.scores if entry.scores is not None else np.ones(len(entry))
        for (x0, y0, x1, y1), name, score in zip(entry.boxes, entry.labels, scores, strict=True):
            results.append(
                {
                    "image_id": stem,
                    "category_id": number.get(name, 0),
                    "category_name": name,
                    "bbox": [round(float(v), decimals) for v in (x0, y0, x1 - x0, y1 - y0)],
                    "score": round(float(score), 5),
                }
            )
    return results


def parse_coco_results(record: list, source: str | Path, classes: Sequence[str] = ()) -> BoxSet:
    """A COCO results list already in memory (entries with ``category_name``) as a BoxSet.

    Args:
        record: the list, as :func:`coco_results` writes it.
        source: where it came from, for messages.
        classes: the class list that numbered it.
    """
    table = dict(enumerate(classes, 1)) if classes else None
    return _read_coco_results(Path(source), record, table, None, ())
