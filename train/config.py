"""Configuration of a training run: the paper's values as defaults (the OCCO paper, Sections 3-4).

Resolution order: these defaults, then a YAML file (``--config``), then command-line
options. The resolved config is written into the run folder and into every checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from occo.data.errors import OccoError
from occo.losses.objective import ObjectiveConfig
from occo.models.config import FIFNConfig

#: Metrics computed on the validation pairs after every epoch (all: higher is better).
VAL_METRICS = ("EN", "SF", "AG", "CC", "SD", "VIF", "Qabf")

#: Fields a resumed run may change; any other change would break the exact continuation.
RESUMABLE_CHANGES = frozenset(
    {
        "epochs",
        "max_steps",
        "num_workers",
        "log_every",
        "checkpoint_every",
        "val_every",
        "val_samples",
        "tensorboard",
        "max_nonfinite",
    }
)


class ConfigError(OccoError, ValueError):
    """A training configuration value or file is invalid."""


@dataclass
class TrainConfig:
    """Everything that determines a training run, except the paths of its data."""

    # --- data -------------------------------------------------------------------------
    crop: int = 256
    """Side of the square random crops, in pixels (release: 256)."""
    crops_per_image: int = 2
    """Crops taken from each image per epoch (release: at most 2)."""
    crop_tries: int = 20
    """Random positions tried for a crop that contains mask pixels (release: 20)."""
    salient_crops: bool = True
    """Keep only crops with object-mask pixels when masks are available (release: yes)."""
    batch_size: int = 12
    """Crops per optimisation step, over all processes together (release: 12)."""
    num_workers: int | None = None
    """DataLoader worker processes per training process (0 loads in the main process);
    None chooses from the machine (:func:`occo.runtime.default_data_workers`)."""
    # --- optimisation -----------------------------------------------------------------
    epochs: int = 30
    """Passes over the training images (paper: 20-30)."""
    max_steps: int | None = None
    """Stop after this many steps in all (for short runs); None runs every epoch."""
    lr: float = 1e-4
    """Adam learning rate (release: 1e-4, constant)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam betas (torch defaults, as released)."""
    weight_decay: float = 0.0
    """Adam weight decay (release: none)."""
    amp: bool | None = None
    """Mixed precision. None: on for CUDA (bf16 where supported, else fp16 with loss scaling),
    off on CPU. True: also on CPU, as bf16 autocast (about 2x faster convolutions on CPUs
    with AVX512-BF16 or AMX, slower on others). False: float32 everywhere."""
    channels_last: bool = True
    """channels_last memory format (faster convolutions on tensor cores and with oneDNN on CPU;
    CPU processes under DDP ignore it)."""
    seed: int = 0
    """Seeds the weights, the crops and the batch order; same seed, same run."""
    # --- bookkeeping ------------------------------------------------------------------
    log_every: int = 10
    """Steps between entries of the JSONL log (and TensorBoard)."""
    checkpoint_every: int = 500
    """Steps between resumable checkpoints (also written after every epoch and on Ctrl-C)."""
    max_nonfinite: int = 20
    """Consecutive steps with a non-finite loss (each skipped) that stop the run."""
    tensorboard: bool = True
    """Also log to TensorBoard when it is installed."""
    # --- validation -------------------------------------------------------------------
    val_every: int = 1
    """Epochs between validations (0 disables validation)."""
    val_fraction: float = 0.05
    """Share of the training pairs held out for validation when no --val folder is given."""
    val_max_pairs: int = 16
    """At most this many validation pairs (full images) are fused and scored."""
    val_samples: int = 4
    """Fused validation images saved as PNG after each validation."""
    val_metrics: tuple[str, ...] = VAL_METRICS
    """Metrics computed on the validation pairs (names from eval.metrics)."""
    best_metric: str = "Qabf"
    """Validation metric (higher is better) that picks best.safetensors."""
    # --- parts ------------------------------------------------------------------------
    network: str = "fifn"
    """The registered network to train (occo.models.registry; `occo methods`)."""
    init_weights: str | None = None
    """Start from these weights (an occo weight file of the network, or its authors'
    released file) instead of random ones; None: random (seeded)."""
    model: Any = field(default_factory=FIFNConfig)
    """The network's config (its registry entry's config class; defaults: the released
    network's shape)."""
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    """Loss weights and contextual-loss settings (defaults: the paper's w1..w6)."""

    def __post_init__(self) -> None:
        from occo.models.registry import UnknownNetworkError, get_network

        if not isinstance(self.network, str):
            raise ConfigError(f"network must be a name, got {self.network!r}")
        try:
            spec = get_network(self.network)
        except UnknownNetworkError as exc:
            raise ConfigError(str(exc)) from None
        self.network = spec.name
        if isinstance(self.model, dict):
            try:
                self.model = spec.config_class.from_dict(self.model)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"model: {exc}") from None
        elif not isinstance(self.model, spec.config_class):
            if self.model == FIFNConfig():  # the default: the chosen network's defaults
                self.model = spec.config_class()
            else:
                raise ConfigError(
                    f"model is a {type(self.model).__name__}, not {spec.name}'s "
                    f"{spec.config_class.__name__}"
                )
        if isinstance(self.objective, dict):  # a preset name fills the settings not given
            values = ObjectiveConfig.upgrade(self.objective)
            self.objective = _dataclass_from_dict(ObjectiveConfig, values, "objective")
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        self.val_metrics = tuple(str(m) for m in self.val_metrics)
        positive = (
            "crop",
            "crops_per_image",
            "crop_tries",
            "batch_size",
            "epochs",
            "log_every",
            "checkpoint_every",
            "max_nonfinite",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("num_workers", "val_every", "val_max_pairs", "val_samples", "seed"):
            value = getattr(self, name)
            if name == "num_workers" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
        if self.max_steps is not None and (
            not isinstance(self.max_steps, int) or self.max_steps < 1
        ):
            raise ConfigError(
                f"max_steps must be a positive integer or null, got {self.max_steps!r}"
            )
        if self.amp is not None and not isinstance(self.amp, bool):
            raise ConfigError(f"amp must be true, false or null, got {self.amp!r}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.uses_groups and self.batch_size % self.objective.groups:
            raise ConfigError(
                f"batch_size {self.batch_size} must be a multiple of objective.groups "
                f"{self.objective.groups} (CCL splits each batch into equal groups)"
            )
        min_size = spec.min_size(self.model)
        if self.crop < min_size:
            raise ConfigError(
                f"crop {self.crop} is smaller than the network's minimum {min_size}"
            )
        if self.best_metric not in self.val_metrics:
            raise ConfigError(
                f"best_metric {self.best_metric!r} is not among val_metrics {self.val_metrics}"
            )

    @property
    def uses_groups(self) -> bool:
        """True when the objective has a contrastive term, which needs grouped batches."""
        return self.objective.needs_groups

    @property
    def needs_masks(self) -> bool:
        """True when the objective has a mask-guided term (every preset but "pixel")."""
        return self.objective.needs_masks

    @property
    def batch_groups(self) -> int:
        """Groups a batch is laid out in (1 without a contrastive term)."""
        return self.objective.groups if self.uses_groups else 1

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists for tuples), as written to YAML and checkpoints."""
        return _plain(asdict(self))

    def to_yaml(self) -> str:
        """The config as YAML text."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def to_json(self) -> str:
        """The config as compact JSON (for weight-file metadata)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build a config from a (possibly partial, nested) dict; unknown keys are errors.

        Args:
            values: field name to value; ``model`` and ``objective`` may be dicts.

        Returns:
            The validated config.
        """
        return _dataclass_from_dict(cls, values, "config")

    def replace(self, overrides: dict[str, Any]) -> TrainConfig:
        """A copy with ``overrides`` applied (nested dicts update ``model``/``objective``).

        Args:
            overrides: field name to new value; None values are ignored. An ``objective``
                mapping naming another preset than the current one starts from that
                preset (its own other keys still apply).

        Returns:
            The new, validated config.
        """
        merged = self.to_dict()
        network = overrides.get("network")
        if network is not None and str(network).strip().lower() != merged["network"]:
            merged.pop("model")  # another network: its own config's defaults
            merged.pop("init_weights", None)
        for key, value in overrides.items():
            if value is None:
                continue
            if key == "objective" and isinstance(value, dict):
                # Another preset resets the old preset's values (see ObjectiveConfig).
                merged[key] = ObjectiveConfig.with_preset(merged[key], value)
            elif isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **{k: v for k, v in value.items() if v is not None}}
            else:
                merged[key] = value
        return TrainConfig.from_dict(merged)

    def changed_fields(self, other: TrainConfig) -> list[str]:
        """Names of the fields whose value differs in ``other`` (nested as ``model.widths``)."""
        mine, theirs = self.to_dict(), other.to_dict()
        changed = []
        for key in mine:
            if isinstance(mine[key], dict):
                changed += [f"{key}.{k}" for k in mine[key] if mine[key][k] != theirs[key].get(k)]
            elif mine[key] != theirs[key]:
                changed.append(key)
        return changed


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict (validated later, by :meth:`TrainConfig.from_dict`).

    Args:
        path: ``.yaml`` file; top-level keys are TrainConfig fields, ``model`` and
            ``objective`` are nested mappings.

    Returns:
        The parsed mapping.

    Raises:
        FileNotFoundError: no such file.
        ConfigError: not YAML, or not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise ConfigError(
            f"{path} must hold a mapping of config fields, found {type(values).__name__}"
        )
    return values


#: Largest whole number a config field takes (sizes, counts, seeds): a bound before allocating.
_LARGEST_INT = 2**31 - 1

_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _coerce(value: Any, kind: Any, name: str) -> Any:
    """``value`` as the annotated type ``kind``, or a ConfigError naming the field.

    YAML 1.1 (PyYAML) reads ``1e-4`` as a string (its floats need a dot: ``1.0e-4``), so a
    string that spells a number is accepted where a number is expected.
    """
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        return _coerce(value, options[0], name) if len(options) == 1 else value
    if kind is float or kind is int:
        number = value
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            number = float(value)
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            what = "a number" if kind is float else "an integer"
            raise ConfigError(f"{name} must be {what}, got {value!r}")
        if kind is float:
            if not math.isfinite(number):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")
            return float(number)
        if isinstance(number, float) and not number.is_integer():
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        if abs(number) > _LARGEST_INT:  # crop: 1e20 would be accepted, then allocate
            raise ConfigError(f"{name} must be an integer of at most {_LARGEST_INT}, got {value!r}")
        return int(number)
    if dataclasses.is_dataclass(kind):
        if isinstance(value, dict):
            return coerce_fields(kind, value, name)
        if not isinstance(value, kind):  # `objective: pixel` where a section is expected
            hint = " (name a preset inside it: `objective: {objective: pixel}`)"
            raise ConfigError(
                f"{name} must be a mapping of its settings, got {value!r}"
                + (hint if name == "objective" else "")
            )
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if kind is str and not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            raise ConfigError(f"{name} must be a list of {len(items)} values, got {value!r}")
        return tuple(
            _coerce(v, k, f"{name}[{i}]") for i, (v, k) in enumerate(zip(value, items, strict=True))
        )
    return value


def coerce_fields(cls: type, values: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Check and convert a dataclass's plain values (from YAML) to its field types.

    Numbers written as strings (``lr: 1e-4``) become numbers; a value of the wrong type is
    a :class:`ConfigError` that names the field (``objective.w_con must be a number ...``).

    Args:
        cls: the dataclass.
        values: field name -> value (unknown names are left for the caller to refuse).
        where: prefix of the names in messages (``objective`` for a nested section).

    Returns:
        The converted values.
    """
    hints = typing.get_type_hints(cls)
    prefix = f"{where}." if where else ""
    return {
        key: _coerce(value, hints[key], prefix + key) if key in hints else value
        for key, value in values.items()
    }


def _dataclass_from_dict(cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown {where} field(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    values = coerce_fields(cls, values, "" if where == "config" else where)
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid {where}: {exc}") from None


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value):
        return _plain(asdict(value))
    return value
