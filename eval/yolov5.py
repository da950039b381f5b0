"""YOLOv5 detectors (v6/v7 layout, any scale n/s/m/l/x) in occo's own code.

The network is built from the checkpoint's own layer list (its ``yaml``: depth and
width multiples, backbone and head of Conv (SiLU), C3, SPPF, Concat, Upsample, Detect)
and the tensors are read from the Ultralytics ``.pt`` with occo's restricted reader
(:mod:`occo.models.safe_pickle`): the checkpoint's pickled classes are never imported
and nothing in it is run. Conv and BatchNorm are folded for inference.

Inference follows Ultralytics' ``val.py`` (v7.0): each image is resized so its long side
is ``image_size`` (INTER_AREA down, INTER_LINEAR up, as its data loader), letterboxed
without scaling up into the rectangle ``ceil(shape * image_size / 32 + pad) * 32`` of its
own aspect ratio (``--rect``, pad 0.5) with gray 114; RGB scaled to 0..1. The head's boxes
pass class-aware NMS: candidates with objectness above the confidence threshold, score =
objectness x class probability, every class above the threshold kept (multi-label),
one ``torchvision.ops.nms`` at the IoU threshold over boxes shifted by class x 7680
pixels (class-aware, exactly as Ultralytics; ``batched_nms`` shifts by another amount and
then keeps a slightly different set of low-score boxes), the best ``max_nms_dets`` kept;
boxes are mapped back to the original image and clipped to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from occo.models.safe_pickle import (
    CheckpointError,
    Inert,
    class_name,
    read_foreign_checkpoint,
    state_dict_of,
)

#: The detector spelling of ``occo eval detect --detector``: ``yolov5:PATH``.
PREFIX = "yolov5:"


@dataclass
class YoloSettings:
    """How images are prepared and boxes kept (Ultralytics val.py defaults)."""

    image_size: int = 640
    """Long side of the network input before stride padding (val.py --imgsz)."""
    conf_threshold: float = 0.001
    """Keep boxes whose objectness and score exceed this (val.py --conf-thres)."""
    iou_threshold: float = 0.6
    """NMS IoU threshold, per class (val.py --iou-thres)."""
    max_nms_dets: int = 300
    """Boxes kept per image after NMS, over all classes (val.py --max-det)."""
    pad: float = 0.5
    """Extra padding of the letterbox rectangle, in strides (val.py rect pad)."""

    def __post_init__(self) -> None:
        if self.image_size < 32:
            raise ValueError("the YOLOv5 image size must be >= 32")
        if not 0 <= self.iou_threshold <= 1 or not 0 <= self.conf_threshold < 1:
            raise ValueError("YOLOv5 thresholds must be in [0, 1]")


# ----------------------------------------------------------------------------- layers

_ACTIVATIONS = {
    None: nn.SiLU, "nn.SiLU()": nn.SiLU, "nn.ReLU()": nn.ReLU,
    "nn.LeakyReLU(0.1)": lambda: nn.LeakyReLU(0.1), "nn.Hardswish()": nn.Hardswish,
}  # fmt: skip


def _pad(k: int, p: int | None) -> int:
    return k // 2 if p is None else p


class Conv(nn.Module):
    """Conv2d (no bias) + BatchNorm2d + activation; folded into one conv by :meth:`fuse`."""

    act_factory: Any = nn.SiLU

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None,
                 g: int = 1, act: bool = True) -> None:  # fmt: skip
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, _pad(k, p), groups=g, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(c2)
        self.act = self.act_factory() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def fuse(self) -> None:
        """Fold the BatchNorm into the conv: w * g / sqrt(var + eps), b - g * mean / sqrt(var + eps)."""
        if not isinstance(self.bn, nn.BatchNorm2d):
            return
        conv, bn = self.conv, self.bn
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                          conv.padding, conv.dilation, conv.groups, bias=True)  # fmt: skip
        with torch.no_grad():
            root = torch.sqrt(bn.running_var + bn.eps)
            fused.weight.copy_(conv.weight * (bn.weight / root).view(-1, 1, 1, 1))
            fused.bias.copy_(bn.bias - bn.weight.mul(bn.running_mean).div(root))
        self.conv, self.bn = fused.requires_grad_(False), nn.Identity()


class Bottleneck(nn.Module):
    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(hidden, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP bottleneck with three convolutions."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1,
                 e: float = 0.5) -> None:  # fmt: skip
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(c1, hidden, 1, 1)
        self.cv3 = Conv(2 * hidden, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained max-pools."""

    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        hidden = c1 // 2
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(hidden * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Concat(nn.Module):
    def __init__(self, dimension: int = 1) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, self.d)


class Detect(nn.Module):
    """The head: a 1x1 conv per level, boxes decoded against the anchors in pixels."""

    def __init__(self, nc: int, anchors: Sequence[Sequence[float]], ch: Sequence[int]) -> None:
        super().__init__()
        self.nc, self.no, self.nl = nc, nc + 5, len(anchors)
        self.na = len(anchors[0]) // 2
        self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)
        self.stride = torch.ones(self.nl)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        out = []
        for i in range(self.nl):
            x = self.m[i](xs[i])
            bs, _, ny, nx = x.shape
            y = x.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous().sigmoid()
            grid, anchor_grid = self._grid(nx, ny, i, y)
            xy = (y[..., 0:2] * 2 + grid) * self.stride[i].to(y)
            wh = (y[..., 2:4] * 2) ** 2 * anchor_grid
            out.append(torch.cat((xy, wh, y[..., 4:]), 4).view(bs, -1, self.no))
        return torch.cat(out, 1)

    def _grid(self, nx: int, ny: int, i: int, like: torch.Tensor):
        kw = {"device": like.device, "dtype": like.dtype}
        yv, xv = torch.meshgrid(torch.arange(ny, **kw), torch.arange(nx, **kw), indexing="ij")
        grid = torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2) - 0.5
        anchor_grid = (self.anchors[i] * self.stride[i].to(self.anchors)).to(like)
        return grid, anchor_grid.view(1, self.na, 1, 1, 2)


class Focus(nn.Module):
    """YOLOv5 <= v5.0 stem: space-to-depth, then a Conv."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None,
                 g: int = 1, act: bool = True) -> None:  # fmt: skip
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, s, p, g, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = (x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2])
        return self.conv(torch.cat(parts, 1))


class SPP(nn.Module):
    """Spatial pyramid pooling with parallel max-pools (YOLOv5 <= v5.0)."""

    def __init__(self, c1: int, c2: int, k: Sequence[int] = (5, 9, 13)) -> None:
        super().__init__()
        hidden = c1 // 2
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(hidden * (len(k) + 1), c2, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [m(x) for m in self.m], 1))


_CHANNEL_LAYERS = {"Conv": Conv, "C3": C3, "SPPF": SPPF, "Bottleneck": Bottleneck,
                   "Focus": Focus, "SPP": SPP}  # fmt: skip
_LAYERS = {**_CHANNEL_LAYERS, "Concat": Concat, "nn.Upsample": nn.Upsample, "Detect": Detect}


def _make_divisible(x: float, divisor: int = 8) -> int:
    return int(math.ceil(x / divisor) * divisor)


def _arg(value: Any, names: dict[str, Any]) -> Any:
    if isinstance(value, str) and value in names:
        return names[value]
    return value


class YoloV5(nn.Module):
    """A YOLOv5 detection network built from an Ultralytics model yaml (a dict).

    Args:
        spec: ``nc``, ``depth_multiple``, ``width_multiple``, ``anchors``, ``backbone``,
            ``head`` (and optionally ``ch``, ``activation``), as Ultralytics stores it.

    Raises:
        CheckpointError: a layer or activation occo does not build, or a malformed list.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        try:
            self._build(spec)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise CheckpointError(f"the YOLOv5 layer list cannot be built: {exc}") from None

    def _build(self, spec: dict[str, Any]) -> None:
        act = spec.get("activation")
        if act not in _ACTIVATIONS:
            raise CheckpointError(f"the YOLOv5 activation {act} is not one occo builds")
        nc, anchors = int(spec["nc"]), spec["anchors"]
        gd, gw = float(spec["depth_multiple"]), float(spec["width_multiple"])
        na = len(anchors[0]) // 2 if isinstance(anchors, list) else int(anchors)
        names = {"None": None, "nc": nc, "anchors": anchors, "True": True, "False": False}
        self.in_channels = int(spec.get("ch", 3))
        channels, layers, self.save = [self.in_channels], [], set()
        for i, (f, n, kind, args) in enumerate(list(spec["backbone"]) + list(spec["head"])):
            if kind not in _LAYERS:
                known = ", ".join(sorted(_LAYERS))
                raise CheckpointError(f"layer {i} is a {kind}; occo builds YOLOv5 from {known}")
            args = [_arg(a, names) for a in args]
            n = max(round(n * gd), 1) if n > 1 else n
            if kind in _CHANNEL_LAYERS:
                c1, c2 = channels[f], args[0]
                c2 = c2 if c2 == na * (nc + 5) else _make_divisible(c2 * gw, 8)
                args = [c1, c2, *args[1:]]
                if kind == "C3":
                    args.insert(2, n)
                    n = 1
            elif kind == "Concat":
                c2 = sum(channels[x] for x in f)
            elif kind == "Detect":
                args = [args[0], args[1], [channels[x] for x in f]]
                if isinstance(args[1], int):
                    raise CheckpointError(
                        "Detect with a number of anchors, not anchors, has no sizes"
                    )
            else:
                c2 = channels[f]
            build = _LAYERS[kind]
            with _activation(_ACTIVATIONS[act]):
                layer = nn.Sequential(*(build(*args) for _ in range(n))) if n > 1 else build(*args)
            layer.f, layer.i = f, i
            self.save.update(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
            layers.append(layer)
            channels = [] if i == 0 else channels
            channels.append(c2)
        if not isinstance(layers[-1], Detect):
            raise CheckpointError("the last YOLOv5 layer is not Detect (not a detection model)")
        self.model = nn.Sequential(*layers)
        self.measure_strides()

    @property
    def head(self) -> Detect:
        return self.model[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` 0..1 RGB -> ``(B, N, 5 + nc)`` boxes xywh (pixels), obj, classes."""
        outputs: list[torch.Tensor | None] = []
        for layer in self.model:
            if layer.f != -1:
                f = layer.f
                x = outputs[f] if isinstance(f, int) else [x if j == -1 else outputs[j] for j in f]
            x = layer(x)
            outputs.append(x if layer.i in self.save else None)
        return x

    def fuse(self) -> YoloV5:
        """Fold every BatchNorm into its conv (inference only)."""
        for module in self.modules():
            if isinstance(module, Conv):
                module.fuse()
        return self

    def measure_strides(self) -> None:
        """The head's strides, from the feature sizes of a 256x256 input (as Ultralytics)."""
        outputs: list[torch.Tensor] = []
        x = torch.zeros(1, self.in_channels, 256, 256)
        with torch.no_grad():
            for layer in self.model[:-1]:
                if layer.f != -1:
                    f = layer.f
                    x = (
                        outputs[f]
                        if isinstance(f, int)
                        else [x if j == -1 else outputs[j] for j in f]
                    )
                x = layer(x)
                outputs.append(x)
        self.head.stride = torch.tensor([256 / outputs[j].shape[-2] for j in self.head.f])


class _activation:
    """Build Conv layers with a given activation (the yaml's ``activation``)."""

    def __init__(self, factory: Any) -> None:
        self.factory = factory

    def __enter__(self) -> None:
        self.saved, Conv.act_factory = Conv.act_factory, self.factory

    def __exit__(self, *_: Any) -> None:
        Conv.act_factory = self.saved


# ----------------------------------------------------------------------------- loading


@dataclass
class LoadedYolo:
    """A YOLOv5 network ready for inference and what its checkpoint says about it."""

    net: YoloV5
    """Folded, eval mode, float32."""
    names: list[str]
    """Class names in class-index order."""
    model_type: str
    """E.g. ``yolov5n`` (from the checkpoint's yaml file name, else its multiples)."""


def _class_names(module: Any, nc: int) -> list[str]:
    names = getattr(module, "names", None)
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if not isinstance(names, (list, tuple)) or len(names) != nc:
        return [str(i) for i in range(nc)]
    return [str(n) for n in names]


def load_yolov5(path: str | Path) -> LoadedYolo:
    """An Ultralytics YOLOv5 ``.pt`` as occo's network, read without running the pickle.

    Takes the checkpoint's ``ema`` model when present, else ``model`` (as Ultralytics'
    ``attempt_load``), builds it from its own yaml and loads its tensors (as float32).

    Raises:
        CheckpointError: not a readable torch checkpoint, no YOLOv5 model in it, or
            tensors that do not fit its layer list.
        UnsafeCheckpointError: the pickle asks to run code (nothing was run).
    """
    path = Path(path).expanduser()
    tree = read_foreign_checkpoint(path)
    module = tree
    if isinstance(tree, dict):
        module = tree.get("ema") or tree.get("model")
    spec = getattr(module, "yaml", None) if isinstance(module, Inert) else None
    if not isinstance(spec, dict) or not {"backbone", "head", "nc"} <= set(spec):
        raise CheckpointError(
            f"{path} holds no YOLOv5 model (found {class_name(module)}, without a YOLOv5 "
            "layer list); pass an Ultralytics YOLOv5 .pt to --detector yolov5:PATH"
        )
    try:
        net = YoloV5(spec)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    weights = {k: v.float() for k, v in state_dict_of(module).items()}
    mine = net.state_dict()
    missing = sorted(set(mine) - set(weights))
    extra = sorted(set(weights) - set(mine))
    wrong = [k for k in mine if k in weights and weights[k].shape != mine[k].shape]
    if missing or extra or wrong:
        first = (missing or extra or wrong)[0]
        raise CheckpointError(
            f"{path}: the tensors do not fit its YOLOv5 layer list ({len(missing)} missing, "
            f"{len(extra)} unexpected, {len(wrong)} of another shape, e.g. {first})"
        )
    net.load_state_dict(weights, strict=True)
    _copy_batchnorm_eps(net, module)
    net.fuse().eval()
    yaml_file = str(getattr(module, "yaml_file", "") or "")
    model_type = Path(yaml_file).stem if yaml_file else (
        f"yolov5 (depth {spec['depth_multiple']}, width {spec['width_multiple']})"
    )  # fmt: skip
    return LoadedYolo(net, _class_names(module, net.head.nc), model_type)


def _copy_batchnorm_eps(net: YoloV5, module: Any) -> None:
    """BatchNorm epsilon is not a tensor: take each layer's from the pickled module
    (Ultralytics trains with eps 1e-3, not torch's 1e-5)."""
    for name, layer in net.named_modules():
        if not isinstance(layer, nn.BatchNorm2d):
            continue
        node = module
        for part in name.split("."):
            node = getattr(node, "_modules", {}).get(part)
        eps = getattr(node, "eps", None)
        if isinstance(eps, float) and 0 < eps < 1:
            layer.eps = eps


# ----------------------------------------------------------------------------- inference


@dataclass
class Letterboxed:
    """One image as the network sees it and how to map boxes back."""

    pixels: np.ndarray
    """``(H, W, 3)`` uint8 RGB, padded with 114."""
    gain: float
    """Resize factor (original -> network pixels)."""
    pad: tuple[float, float]
    """Left and top padding in network pixels (fractional, as Ultralytics)."""
    size: tuple[int, int]
    """Original ``(H, W)``."""


def input_shape(h: int, w: int, image_size: int, pad: float, stride: int = 32) -> tuple[int, int]:
    """The letterbox rectangle of Ultralytics' rect validation for one image."""
    ar = h / w
    shape = [ar, 1.0] if ar < 1 else [1.0, 1.0 / ar] if ar > 1 else [1.0, 1.0]
    out = np.ceil(np.array(shape) * image_size / stride + pad).astype(int) * stride
    return int(out[0]), int(out[1])


def letterbox(image: np.ndarray, image_size: int, pad: float, stride: int = 32) -> Letterboxed:
    """Resize (long side ``image_size``) and pad an RGB image as Ultralytics' val loader."""
    import cv2

    h0, w0 = image.shape[:2]
    r = image_size / max(h0, w0)
    img = image
    if r != 1:
        interp = cv2.INTER_LINEAR if r > 1 else cv2.INTER_AREA
        img = cv2.resize(image, (int(w0 * r), int(h0 * r)), interpolation=interp)
    h, w = img.shape[:2]
    new_h, new_w = input_shape(h0, w0, image_size, pad, stride)
    scale = min(new_h / h, new_w / w, 1.0)
    unpad_w, unpad_h = int(round(w * scale)), int(round(h * scale))
    dw, dh = (new_w - unpad_w) / 2, (new_h - unpad_h) / 2
    if (w, h) != (unpad_w, unpad_h):
        img = cv2.resize(img, (unpad_w, unpad_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114,) * 3)
    return Letterboxed(img, h / h0, (dw, dh), (h0, w0))


#: Boxes of class c are shifted by c x this many pixels before one NMS (Ultralytics' max_wh).
_CLASS_OFFSET = 7680


def non_max_suppression(pred: torch.Tensor, settings: YoloSettings) -> list[torch.Tensor]:
    """Per image ``(n, 6)``: x0 y0 x1 y1 score class, best first (multi-label, per class)."""
    import torchvision

    conf = settings.conf_threshold
    results = []
    for x in pred:
        x = x[x[:, 4] > conf].float()
        if not len(x):
            results.append(torch.zeros((0, 6), device=pred.device))
            continue
        scores = x[:, 5:] * x[:, 4:5]
        xy, half = x[:, :2], x[:, 2:4] / 2
        box = torch.cat((xy - half, xy + half), 1)
        i, j = (scores > conf).nonzero(as_tuple=False).T
        dets = torch.cat((box[i], scores[i, j, None], j[:, None].float()), 1)
        dets = dets[dets[:, 4].argsort(descending=True)[:30000]]
        offset = dets[:, 5:6] * _CLASS_OFFSET  # class-aware: classes never overlap
        keep = torchvision.ops.nms(dets[:, :4] + offset, dets[:, 4], settings.iou_threshold)
        results.append(dets[keep[: settings.max_nms_dets]])
    return results


def scale_back(dets: torch.Tensor, boxed: Letterboxed) -> torch.Tensor:
    """Boxes from network pixels to the original image, clipped to it."""
    dets = dets.clone()
    dets[:, [0, 2]] -= boxed.pad[0]
    dets[:, [1, 3]] -= boxed.pad[1]
    dets[:, :4] /= boxed.gain
    h0, w0 = boxed.size
    dets[:, [0, 2]] = dets[:, [0, 2]].clamp(0, w0)
    dets[:, [1, 3]] = dets[:, [1, 3]].clamp(0, h0)
    return dets


@torch.inference_mode()
def detect_raw(
    net: YoloV5,
    images: Sequence[np.ndarray],
    settings: YoloSettings,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> list[torch.Tensor]:
    """Detections of every class per image, ``(n, 6)`` on the CPU, in original pixels.

    Images of one letterbox shape run as one batch; the network must be on ``device``
    in ``dtype``.
    """
    boxed = [letterbox(img, settings.image_size, settings.pad) for img in images]
    found: list[torch.Tensor | None] = [None] * len(images)
    groups: dict[tuple[int, int], list[int]] = {}
    for k, b in enumerate(boxed):
        groups.setdefault(b.pixels.shape[:2], []).append(k)
    for members in groups.values():
        batch = np.stack([boxed[k].pixels for k in members]).transpose(0, 3, 1, 2)
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(device).to(dtype) / 255
        for k, dets in zip(members, non_max_suppression(net(x), settings), strict=True):
            found[k] = scale_back(dets, boxed[k]).cpu()
    return [f for f in found if f is not None]


# ----------------------------------------------------------------------------- detector


def checkpoint_path(spec: str) -> Path | None:
    """The file of a ``yolov5:PATH`` detector spelling, or None for other detectors."""
    return Path(spec[len(PREFIX) :]).expanduser() if spec.startswith(PREFIX) else None


def file_fingerprint(path: Path) -> str:
    """SHA-256 (first 16 hex digits) of a checkpoint file, so new weights never reuse detections."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


class YoloV5Detector:
    """A YOLOv5 checkpoint as an ``occo eval detect`` detector (closed-set, COCO names).

    Images come as ``(H, W, 3)`` uint8 RGB (gray images repeated to three channels).

    Args:
        path: the Ultralytics ``.pt``.
        classes: class names to score; each must be one of the model's names.
        settings: letterbox and NMS settings.
        max_dets: detections kept per image after the class filter, best first.
        device: where the network runs.
        dtype: float32, or float16/bfloat16 (the network cast, as val.py --half).

    Raises:
        CheckpointError / UnsafeCheckpointError: see :func:`load_yolov5`.
        ClassTableError: a class the model does not know.
    """

    kind = "closed-set"

    def __init__(
        self,
        path: str | Path,
        classes: Sequence[str],
        settings: YoloSettings,
        max_dets: int = 100,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        from occo.data.classes import ClassTableError, name_key

        loaded = load_yolov5(path)
        self.names, self.model_type = loaded.names, loaded.model_type
        self.settings, self.max_dets = settings, max_dets
        self.device, self.dtype = torch.device(device), dtype
        self.net = loaded.net.to(self.device).to(dtype)
        by_key = {name_key(name): name for name in classes}
        self.label_of = {
            i: by_key[name_key(n)] for i, n in enumerate(self.names) if name_key(n) in by_key
        }
        missing = [c for c in classes if c not in self.label_of.values()]
        if missing:
            raise ClassTableError(
                f"the detector {path} does not know {', '.join(missing)} (its classes: "
                f"{', '.join(self.names)}); score only classes it knows (--classes)"
            )

    def detect(self, images: Sequence[np.ndarray]) -> list:
        """Detections per image, boxes in its pixels, labels from ``classes``."""
        from occo.data.annotations import ImageBoxes

        results = []
        for dets in detect_raw(self.net, images, self.settings, self.device, self.dtype):
            ids = dets[:, 5].long().tolist()
            keep = [k for k, c in enumerate(ids) if c in self.label_of][: self.max_dets]
            rows = dets[keep].double().numpy()
            labels = [self.label_of[ids[k]] for k in keep]
            results.append(ImageBoxes(rows[:, :4], labels, rows[:, 4]))
        return results
