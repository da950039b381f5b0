"""Configuration of the Feature Interaction Fusion Network (FIFN)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields

#: Bounds checked before a network is built: a weight file's metadata or a YAML file with
#: huge numbers is refused in one line instead of asking for hundreds of GB.
MAX_LEVELS = 8
MAX_WIDTH = 4096
MAX_IN_CHANNELS = 64


def _whole_numbers(values: object, name: str) -> tuple[int, ...]:
    """``values`` as a tuple of ints (from a list of numbers), or a ValueError naming it."""
    try:
        items = tuple(values)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"FIFNConfig.{name} must be a list of whole numbers, got {values!r}") from None
    numbers = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or int(v) != v:
            raise ValueError(f"FIFNConfig.{name} must be a list of whole numbers, got {values!r}")
        numbers.append(int(v))
    return tuple(numbers)


@dataclass(frozen=True)
class FIFNConfig:
    """Shape of a FIFN; the defaults are the authors' released network."""

    widths: tuple[int, ...] = (32, 64, 112, 160)
    """Feature channels of the encoder levels, shallow to deep (one FIFB per level)."""
    heads: tuple[int, ...] = (4, 4, 4, 1)
    """Attention heads of each level's FIFB; each must divide the level's width."""
    in_channels: int = 1
    """Channels of each input image (the visible Y channel and the infrared image)."""
    spatial_enhancement: bool = True
    """FIFB's spatial weights (a per-pixel weight of each modality's tokens). False: the
    paper's ablation "w/o spatial enhancement": the tokens pass unweighted and the block
    has no spatial-weight convolutions."""
    cross_channel: bool = True
    """FIFB's channel weights computed from both modalities' joint statistics. False: the
    paper's ablation "w/o cross channel": the attention queries are projected from the
    unweighted tokens and the block has no channel-weight MLP."""
    cross_attention: bool = True
    """FIFB's cross attention (each modality's queries read the other's context). False: the
    paper's ablation "w/o cross attention": each modality's own queries take the place of
    the attended tokens, so nothing passes between the modalities there, and the block has
    no key/value projections."""
    range_margin: int = 0
    """Pixels next to the image border that the per-image min-max of the output leaves
    out (in training and inference; those pixels are clamped to [0, 1] when written).
    0 is the release: every pixel counts. Zero padding lets the network single out the
    ring of pixels next to the border; trained with 0 it learns to push that ring to an
    extreme and so shift, through the min-max, the whole image's brightness, which lifts
    dark night scenes to grey. Outside the range, the ring is no such lever and the
    losses pull it back to the scene. Changes no weight."""

    def __post_init__(self) -> None:
        # Accept lists (from JSON or YAML) but store tuples, so the config stays hashable.
        object.__setattr__(self, "widths", _whole_numbers(self.widths, "widths"))
        object.__setattr__(self, "heads", _whole_numbers(self.heads, "heads"))
        if len(self.widths) < 2:
            raise ValueError(f"FIFNConfig.widths needs at least 2 levels, got {self.widths}")
        if len(self.widths) > MAX_LEVELS:  # checked before anything is built or allocated
            raise ValueError(
                f"FIFNConfig.widths has {len(self.widths)} levels; at most {MAX_LEVELS} are supported"
            )
        if max(self.widths) > MAX_WIDTH:
            raise ValueError(
                f"FIFNConfig.widths {self.widths}: a level of more than {MAX_WIDTH} channels is "
                "not a FIFN occo builds (the network would not fit in memory)"
            )
        if len(self.heads) != len(self.widths):
            raise ValueError(
                f"FIFNConfig.heads {self.heads} must have one entry per level of widths {self.widths}"
            )
        for width, heads in zip(self.widths, self.heads, strict=True):
            if width <= 0 or heads <= 0:
                raise ValueError(
                    f"FIFNConfig widths and heads must be positive, got {width}/{heads}"
                )
            if width % heads:
                raise ValueError(f"FIFNConfig: {heads} heads do not divide width {width}")
        for name in ("spatial_enhancement", "cross_channel", "cross_attention"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"FIFNConfig.{name} must be true or false, got {getattr(self, name)!r}"
                )
        if not isinstance(self.range_margin, int) or self.range_margin < 0:
            raise ValueError(
                f"FIFNConfig.range_margin must be a whole number >= 0, got {self.range_margin!r}"
            )
        if (
            not isinstance(self.in_channels, int)
            or isinstance(self.in_channels, bool)
            or not 0 < self.in_channels <= MAX_IN_CHANNELS
        ):
            raise ValueError(
                f"FIFNConfig.in_channels must be a whole number from 1 to {MAX_IN_CHANNELS}, "
                f"got {self.in_channels!r}"
            )
        if self.range_margin > MAX_WIDTH:
            raise ValueError(
                f"FIFNConfig.range_margin must be at most {MAX_WIDTH}, got {self.range_margin}"
            )

    @property
    def levels(self) -> int:
        """Number of encoder levels."""
        return len(self.widths)

    @property
    def ablations(self) -> tuple[str, ...]:
        """Names of the FIFB parts switched off (empty for the full network)."""
        switches = ("spatial_enhancement", "cross_channel", "cross_attention")
        return tuple(name for name in switches if not getattr(self, name))

    @property
    def min_size(self) -> int:
        """Smallest image side the network accepts: the deepest level needs one pixel."""
        return 2 ** (self.levels - 1)

    def to_json(self) -> str:
        """The config as a JSON string (stored in weight-file metadata)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> FIFNConfig:
        """Build a config from a dict, rejecting unknown keys by name.

        Missing keys take their defaults: weight files written before the FIFB switches
        existed load as the full network.

        Args:
            values: field name to value, e.g. parsed from JSON or YAML.

        Returns:
            The validated config.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown FIFNConfig field(s): {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> FIFNConfig:
        """Inverse of :meth:`to_json`.

        Raises:
            ValueError: not JSON (nested too deep included), not a mapping, or not a valid
                config.
        """
        try:
            values = json.loads(text)
        except RecursionError:
            raise ValueError("the config JSON is nested too deeply to be a FIFN config") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the config is not JSON ({exc})") from None
        if not isinstance(values, dict):
            raise ValueError(f"the config must be a JSON object, got {type(values).__name__}")
        return cls.from_dict(values)
