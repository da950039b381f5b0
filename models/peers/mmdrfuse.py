"""MMDRFuse's 113-parameter student (Deng et al., ACM MM 2024), as its authors released it.

Two reflection-padded 3x3 convs: (infrared, visible) -> 4 channels, ReLU, -> 1 channel,
tanh. The authors' ``test_student.py`` reads both images as 8-bit gray
(``scipy.misc.imread(mode='L')``: PIL's integer luma for a colour image) / 255, infrared
first, and saves the tanh output with ``scipy.misc.imsave``, which stretches the float
image to its own min and max and rounds; it writes gray.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from occo.models.fifn import minmax_normalize
from occo.models.peers.common import fit_state, load_torch_release, rename, tensor_dict
from occo.models.peers.densefuse import pil_luma
from occo.models.registry import (
    JsonConfig,
    MethodInfo,
    NetworkSpec,
    ReleasedWeights,
    register_network,
)


@dataclass(frozen=True)
class MMDRFuseConfig(JsonConfig):
    """The student's width; the default is the released 113-parameter network's."""

    hidden: int = 4
    """Channels between the two convs."""

    def __post_init__(self) -> None:
        if self.hidden < 1:
            raise ValueError(f"MMDRFuseConfig.hidden must be positive, got {self.hidden}")


class MMDRFuse(nn.Module):
    """The MMDRFuse student; ``forward`` returns its tanh output in (-1, 1).

    Args:
        config: width (default: the release's).
    """

    #: Registry name (occo.models.registry).
    network_name = "mmdrfuse"

    def __init__(self, config: MMDRFuseConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or MMDRFuseConfig()
        self.conv1 = nn.Conv2d(2, config.hidden, 3)
        self.conv2 = nn.Conv2d(config.hidden, 1, 3)

    def forward(self, vi_y: Tensor, ir: Tensor) -> Tensor:
        x = F.pad(torch.cat((ir, vi_y), 1), (1, 1, 1, 1), mode="reflect")  # infrared first
        x = F.pad(F.relu(self.conv1(x)), (1, 1, 1, 1), mode="reflect")
        return torch.tanh(self.conv2(x))


def _finish(raw: Tensor, config: MMDRFuseConfig) -> Tensor:
    return minmax_normalize(raw)  # scipy.misc.imsave's bytescale


def _release_key(key: str) -> str:
    # The release wraps each conv in nn.Sequential(ReflectionPad2d, Conv2d): 'conv1.1.weight'.
    return key.replace("conv1.1.", "conv1.").replace("conv2.1.", "conv2.")


def _read_release(path):
    loaded = load_torch_release(path, "MMDRFuse")
    state = rename(tensor_dict(loaded, path, "MMDRFuse", entry="state_dict"), _release_key)
    config = MMDRFuseConfig()
    return config, fit_state(MMDRFuse(config), state, path, "MMDRFuse's student")


register_network(
    NetworkSpec(
        name="mmdrfuse",
        config_class=MMDRFuseConfig,
        build=MMDRFuse,
        finish=_finish,
        receptive_margin=lambda config: 2,  # two 3x3 convs
        min_size=lambda config: 2,  # reflection padding needs 2 px
        luminance=pil_luma,
        authors_color=False,
        memory_scale=lambda config, element_size: (3 + config.hidden) / 57.5 * element_size / 4,
        onnx=True,
        read_release=_read_release,
        release=ReleasedWeights(
            url="https://github.com/yanglinDeng/MMDRFuse/raw/"
            "c9e5014493a7322a87cc24a58b66052123ac5bbe/pretrained_models/student.model",
            sha256="e5ad5bab796f4480dbbc35a8f6f63e69ba3ccd1842476d2c2453ca1aca6eb17c",
            filename="mmdrfuse_student.model",
            licence="not stated",
            trained_on="LLVIP patches (distilled from the MMDRFuse teacher)",
        ),
        info=MethodInfo(
            title="MMDRFuse: distilled mini-model with dynamic refresh for multi-modality "
            "image fusion (113-parameter student)",
            venue="ACM MM 2024",
            code_url="https://github.com/yanglinDeng/MMDRFuse",
            code_licence="not stated",
            color="fuses the visible image's PIL gray (integer luma); occo puts the visible "
            "Cb/Cr back",
            authors_output="gray; min-max stretched and rounded (scipy.misc.imsave)",
        ),
    )
)
