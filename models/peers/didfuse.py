"""DIDFuse (Zhao et al., "DIDFuse: deep image decomposition for infrared and visible image
fusion", IJCAI 2020), as its authors released it.

One auto-encoder for both images: the encoder (a reflection-padded 3x3 conv, a 3x3 conv,
then two 3x3 heads, all conv-BatchNorm with PReLU or tanh) splits an image into
background (base) and detail features; the test adds the two images' features level by
level (``fusion="sum"``, the authors' default; "average" and "l1_norm" are their other
modes) and the decoder (three 3x3 convs with skips, sigmoid head) gives the fused image.

The authors' ``test.py`` feeds gray images (PIL, / 255; it has no colour path: occo
feeds the visible Y and puts the visible chroma back) and saves the sigmoid output
with ``skimage.io.imsave`` (x 255, rounded). The release is two files, the encoder's
and the decoder's (``{"weight": state_dict, "epoch": n}`` each): pass either file (the
other must lie beside it under its published name) or their folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from occo.models.peers.common import fit_state, load_torch_release, tensor_dict
from occo.models.registry import (
    JsonConfig,
    MethodInfo,
    NetworkSpec,
    ReleasedWeights,
    fold_conv_batchnorm,
    register_network,
)

ENCODER_FILE = "Encoder_weight_IJCAI.pkl"
DECODER_FILE = "Decoder_weight_IJCAI.pkl"
# occo's block names -> the release's (DIDFuse.py: covN.covN).
_RELEASE_NAMES = {
    "encoder.stem": "cov1.cov1",
    "encoder.mid": "cov2.cov2",
    "encoder.base": "cov3.cov3",
    "encoder.detail": "cov4.cov4",
    "decoder.merge1": "cov5.cov5",
    "decoder.merge2": "cov6.cov6",
    "decoder.head": "cov7.cov7",
}


@dataclass(frozen=True)
class DIDFuseConfig(JsonConfig):
    """DIDFuse settings; the defaults are the released network and test's."""

    channels: int = 64
    """Width of every feature map."""
    fusion: str = "sum"
    """How the two images' features are merged: "sum" (the test's default), "average" or
    "l1_norm" (weights from the 3x3 mean of the features' absolute values)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", int(self.channels))
        if self.channels < 1:
            raise ValueError(f"DIDFuseConfig.channels must be positive, got {self.channels}")
        if self.fusion not in ("sum", "average", "l1_norm"):
            raise ValueError(
                f"DIDFuseConfig.fusion must be sum, average or l1_norm, got {self.fusion!r}"
            )


def _block(cin: int, cout: int, act: nn.Module, reflect: bool = False) -> nn.Sequential:
    if reflect:  # the release's (ReflectionPad2d, Conv2d, BN, act) layout
        return nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3), nn.BatchNorm2d(cout), act)
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), act)


class _Encoder(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.stem = _block(1, c, nn.PReLU(), reflect=True)
        self.mid = _block(c, c, nn.PReLU())
        self.base = _block(c, c, nn.Tanh())
        self.detail = _block(c, c, nn.Tanh())

    def forward(self, x: Tensor) -> list[Tensor]:
        f1 = self.stem(x)
        f2 = self.mid(f1)
        return [f1, f2, self.base(f2), self.detail(f2)]


class _Decoder(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.merge1 = _block(2 * c, c, nn.PReLU())
        self.merge2 = _block(2 * c, c, nn.PReLU())
        self.head = _block(2 * c, 1, nn.Sigmoid(), reflect=True)

    def forward(self, f1: Tensor, f2: Tensor, base: Tensor, detail: Tensor) -> Tensor:
        x = self.merge1(torch.cat((base, detail), 1))
        x = self.merge2(torch.cat((x, f2), 1))
        return self.head(torch.cat((x, f1), 1))


def _l1_merge(a: Tensor, b: Tensor) -> Tensor:
    # The release's l1_addition: activity = a conv of |feature| with a C x C kernel of 1/9
    # (zero padding), i.e. the 3x3 mean of the channel sum, the same for every channel;
    # weights = activity / activity sum.
    def activity(x: Tensor) -> Tensor:
        return F.avg_pool2d(x.abs().sum(1, keepdim=True), 3, 1, 1, count_include_pad=True)

    wa, wb = activity(a), activity(b)
    return (wa * a + wb * b) / (wa + wb)


class DIDFuse(nn.Module):
    """DIDFuse's encoder, feature merge and decoder; ``forward`` returns the sigmoid output.

    Args:
        config: width and merge mode (default: the release's).
    """

    #: Registry name (occo.models.registry).
    network_name = "didfuse"

    def __init__(self, config: DIDFuseConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DIDFuseConfig()
        self.encoder = _Encoder(config.channels)
        self.decoder = _Decoder(config.channels)

    def forward(self, vi_y: Tensor, ir: Tensor) -> Tensor:
        ir_features, vi_features = self.encoder(ir), self.encoder(vi_y)
        mode = self.config.fusion
        if mode == "l1_norm":
            merged = [_l1_merge(i, v) for i, v in zip(ir_features, vi_features, strict=True)]
        else:
            scale = 0.5 if mode == "average" else 1.0
            merged = [(i + v) * scale for i, v in zip(ir_features, vi_features, strict=True)]
        return self.decoder(*merged)  # (B, 1, H, W) in (0, 1)


def _finish(raw: Tensor, config: DIDFuseConfig) -> Tensor:
    return raw.clamp(0, 1)


def _release_files(path: Path) -> tuple[Path, Path]:
    from occo.models.checkpoint import WeightsError

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    encoder, decoder = folder / ENCODER_FILE, folder / DECODER_FILE
    if not path.is_dir() and path.name not in (ENCODER_FILE, DECODER_FILE):
        encoder = path  # a single file under another name: read it as the encoder
    missing = [p for p in (encoder, decoder) if not p.is_file()]
    if missing:
        raise WeightsError(
            f"DIDFuse's release is two files, {ENCODER_FILE} and {DECODER_FILE}, side by side; "
            f"missing {', '.join(str(p) for p in missing)}"
        )
    return encoder, decoder


def _read_release(path):
    encoder, decoder = _release_files(path)
    reverse = {theirs: ours for ours, theirs in _RELEASE_NAMES.items()}
    state = {}
    for file in (encoder, decoder):
        loaded = tensor_dict(load_torch_release(file, "DIDFuse"), file, "DIDFuse", entry="weight")
        for key, value in loaded.items():
            parts = key.split(".")
            head = ".".join(parts[:2])
            state[".".join([reverse.get(head, head), *parts[2:]])] = value
    stem = state.get("encoder.stem.1.weight")
    config = DIDFuseConfig(channels=stem.shape[0] if stem is not None else 64)
    return config, fit_state(DIDFuse(config), state, path, "DIDFuse")


def _memory_scale(config: DIDFuseConfig, element_size: int) -> float:
    # Full-size planes: both images' four feature maps, the merged four and a decoder
    # map, against FIFN's 57.5.
    return 9 * config.channels / 57.5 * element_size / 4


register_network(
    NetworkSpec(
        name="didfuse",
        config_class=DIDFuseConfig,
        build=DIDFuse,
        finish=_finish,
        authors_color=False,
        # Encoder: three 3x3 convs deep; decoder: three more; l1_norm adds a 3x3 mean.
        receptive_margin=lambda config: 7 if config.fusion == "l1_norm" else 6,
        min_size=lambda config: 2,
        fold=fold_conv_batchnorm,
        memory_scale=_memory_scale,
        onnx=True,
        read_release=_read_release,
        release=ReleasedWeights(
            url="https://github.com/Zhaozixiang1228/IVIF-DIDFuse/raw/"
            "5f287300dce7cbc90b9e08e6872455af6baa279f/Models/Encoder_weight_IJCAI.pkl",
            sha256="4d84a4e64e58469d3d4591f83c6683ead3e422498519db99bb617cb29d268471",
            filename=ENCODER_FILE,
            licence="not stated (no LICENSE file)",
            trained_on="FLIR (180 pairs, 128x128)",
        ),
        info=MethodInfo(
            title="DIDFuse: deep image decomposition for infrared and visible image fusion",
            venue="IJCAI 2020",
            code_url="https://github.com/Zhaozixiang1228/IVIF-DIDFuse",
            code_licence="not stated",
            color="fuses visible Y (0.299/0.587/0.114); the visible Cb/Cr are kept",
            authors_output="gray only (the authors' test has no colour path); the "
            "release is two files (encoder + decoder, "
            "https://github.com/Zhaozixiang1228/IVIF-DIDFuse/raw/"
            "5f287300dce7cbc90b9e08e6872455af6baa279f/Models/Decoder_weight_IJCAI.pkl)",
        ),
    )
)
