"""The training loop: any registered network (FIFN by default) with the OCCO objective,
resumable, mixed precision, DDP.

One :class:`Trainer` runs in every process (``torchrun`` starts one per GPU). Rank 0 alone
writes logs, checkpoints, weights and samples. The loop reports through an ``on_event``
callback (the CLI draws its progress bar from it) and never prints.

Run folder::

    config.yaml         the resolved TrainConfig
    checkpoint.pt       resumable state (model, optimizer, step, epoch, RNG), atomic
    last.safetensors    latest weights (occo format)
    best.safetensors    weights with the best validation score
    log.jsonl           one JSON object per logged step, validation and skipped step
    samples/epoch_NNN/  a few fused validation images
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader

from occo.data.io import file_sha256, write_bytes_atomic, write_image_atomic
from occo.data.normalize import prepare_training_pair
from occo.data.training import FusionCropDataset, GroupedBatchSampler, MaskReader, seed_worker
from occo.data.version import OCCO_VERSION
from occo.models.checkpoint import save_weights
from occo.models.registry import get_network
from occo.runtime import default_data_workers, init_distributed, resolve_amp
from occo.train.config import RESUMABLE_CHANGES, TrainConfig
from occo.train.distributed import convert_batchnorm, sum_over_ranks
from occo.train.state import (
    CHECKPOINT_FORMAT,
    DivergedError,
    TrainingError,
    TrainState,
    load_checkpoint,
    rng_state,
    save_torch_atomic,
    set_rng_state,
)

Pair = tuple[str, Path, Path]
#: ``on_event(kind, info)``; kinds: start, step, skipped, validation, checkpoint, epoch, done.
EventHandler = Callable[[str, dict[str, Any]], None]


# --- the trainer -----------------------------------------------------------------------


@dataclass
class TrainResult:
    """What a finished (or stopped) run left behind."""

    state: TrainState
    """Counters at the end."""
    interrupted: bool
    """Stopped early by a stop request (Ctrl-C); the checkpoint allows --resume."""
    out_dir: Path
    """The run folder."""
    last_weights: Path | None = None
    """``last.safetensors`` (rank 0)."""
    best_weights: Path | None = None
    """``best.safetensors`` (rank 0), when validation ran."""
    validation: dict[str, float] = field(default_factory=dict)
    """The latest validation scores."""


class Trainer:
    """Trains a registered network on salient crops with the configured objective.

    Args:
        config: the resolved training config.
        train_pairs: ``(stem, ir_path, vi_path)`` to train on.
        out_dir: the run folder (created).
        mask_source: factory of a mask reader (see ``data.training``); required by the
            ``occo`` objective, optional with ``pixel`` (then only for salient crops).
        val_pairs: pairs fused and scored after each epoch; empty skips validation.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        objective: the loss module; None builds ``losses.objective.FusionObjective``
            from ``config.objective`` (with VGG19 from its ``vgg_weights`` when needed).
        regions_fn: ``(mask_vi, mask_ir) -> Regions``; None uses ``masks.regions.split_regions``.
        metadata: extra string entries for the weight files (e.g. ``trained_on``).
        resume: continue from ``out_dir/checkpoint.pt``.
        on_event: progress callback, ``on_event(kind, info)``.
    """

    def __init__(
        self,
        config: TrainConfig,
        train_pairs: Sequence[Pair],
        out_dir: str | Path,
        *,
        mask_source: Callable[[], MaskReader] | None = None,
        val_pairs: Sequence[Pair] = (),
        device: str | torch.device = "auto",
        objective: nn.Module | None = None,
        regions_fn: Callable[[Tensor, Tensor], Any] | None = None,
        metadata: dict[str, str] | None = None,
        resume: bool = False,
        on_event: EventHandler | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.info, self.device = init_distributed(device)
        self.on_event = on_event or (lambda kind, info: None)
        self.metadata = dict(metadata or {})
        self.train_pairs, self.val_pairs = list(train_pairs), list(val_pairs)
        self.state = TrainState()
        self.stop_requested = False
        checkpoint = None
        if resume:
            checkpoint = load_checkpoint(self.out_dir / "checkpoint.pt")
            config = self._resumed_config(
                TrainConfig.from_dict(checkpoint["config"]), config, checkpoint.get("vgg_sha256")
            )
            saved = checkpoint.get("train_stems")
            if saved is not None and saved != [p[0] for p in self.train_pairs]:
                raise TrainingError(
                    f"the training pairs differ from those of the checkpoint in {self.out_dir} "
                    f"({len(saved)} then, {len(self.train_pairs)} now); resume with the same dataset and masks"
                )
        self.config = config
        if config.needs_masks and mask_source is None:
            raise TrainingError(
                f"the {config.objective.objective} objective needs object masks; give a mask "
                "store or use objective=pixel"
            )
        self.mask_source = mask_source

        torch.manual_seed(config.seed)  # same initial weights in every process
        #: The network's registry entry (what it is, how its output is finished).
        self.spec = get_network(config.network)
        self.model = self.spec.build(config.model)
        if config.init_weights is not None:
            from occo.models.checkpoint import load_method

            start = load_method(config.network, config.init_weights).model
            self.model.load_state_dict(start.state_dict(), strict=True)
        self.model = self.model.to(self.device)
        self.amp_dtype = resolve_amp(config.amp, self.device)
        # channels_last speeds up cuDNN and oneDNN alike, but CPU processes under DDP (gloo)
        # stay contiguous: there it broke the equality with one process, and a run aborted.
        self.channels_last = config.channels_last and (
            self.device.type == "cuda" or not self.info.distributed
        )
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.vgg_sha256: str | None = None  # of a --vgg-weights file, so that it may move
        self.objective = (objective if objective is not None else self._build_objective()).to(
            self.device
        )
        recorded = checkpoint.get("vgg_sha256") if checkpoint is not None else None
        if recorded and self.vgg_sha256 and self.vgg_sha256 != recorded:
            raise TrainingError(
                f"the VGG19 weights {config.objective.vgg_weights} differ from those the run in "
                f"{self.out_dir} started with (SHA-256 {self.vgg_sha256[:12]}... vs {recorded[:12]}...); "
                "resume with the same file"
            )
        self.regions_fn = regions_fn
        if config.needs_masks and regions_fn is None:
            from occo.masks.regions import split_regions

            self.regions_fn = split_regions
        self.optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=config.lr,
            betas=config.betas,
            weight_decay=config.weight_decay,
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        if checkpoint is not None:
            self._restore(checkpoint)
        self.net: nn.Module = self.model
        if self.info.distributed:
            convert_batchnorm(self.model, self.device)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
            contrastive = getattr(self.objective, "contrastive", None)
            if contrastive is not None and hasattr(contrastive, "reduce"):
                # CCL's ratios are over the whole group; sum every rank's counts and distance
                # sums so that N processes compute what one would at the same global batch.
                contrastive.reduce = sum_over_ranks(dist.new_group())

        self.sampler = GroupedBatchSampler(
            len(self.train_pairs),
            config.batch_size,
            groups=config.batch_groups,
            crops_per_image=config.crops_per_image,
            seed=config.seed,
            rank=self.info.rank,
            world_size=self.info.world_size,
            distinct=config.uses_groups,
        )
        dataset = FusionCropDataset(
            self.train_pairs,
            crop=config.crop,
            mask_source=mask_source,
            crop_tries=config.crop_tries,
            salient=config.salient_crops,
            seed=config.seed,
            prepare=prepare_training_pair,
        )
        self.loader = DataLoader(
            dataset,
            batch_sampler=self.sampler,
            num_workers=default_data_workers(config.num_workers),
            pin_memory=self.device.type == "cuda",
            worker_init_fn=seed_worker,
            # Its own generator: creating a loader iterator must not consume the global RNG,
            # or a resumed run would draw different random numbers than an uninterrupted one.
            generator=torch.Generator().manual_seed(config.seed),
        )
        self.batches_per_epoch = len(self.sampler.global_batches())
        self.total_steps = config.epochs * self.batches_per_epoch
        if config.max_steps is not None:
            self.total_steps = min(self.total_steps, config.max_steps)
        self._log = None
        self._tb = None

    # --- setup helpers -----------------------------------------------------------------

    def _resumed_config(
        self, saved: TrainConfig, given: TrainConfig, vgg_sha256: str | None = None
    ) -> TrainConfig:
        """The checkpoint's config with the changes a resume allows taken from ``given``.

        The VGG19 weights file may move (another machine, another mount) when the run
        recorded its SHA-256: the new file must then have the same content, checked when
        the extractor is built.
        """
        changed = saved.changed_fields(given)
        moved = vgg_sha256 and given.objective.vgg_weights is not None
        movable = {"objective.vgg_weights"} if moved else set()
        blocked = [name for name in changed if name not in RESUMABLE_CHANGES | movable]
        if blocked:
            raise TrainingError(
                f"cannot change {', '.join(blocked)} when resuming {self.out_dir} (the run would not "
                "continue exactly); drop those options or start a new run with another --out"
            )
        overrides: dict[str, Any] = {
            name: getattr(given, name) for name in changed if "." not in name
        }
        if "objective.vgg_weights" in changed:
            overrides["objective"] = {"vgg_weights": given.objective.vgg_weights}
        return saved.replace(overrides)

    def _build_objective(self) -> nn.Module:
        from occo.losses.objective import FusionObjective

        vgg = None
        if self.config.objective.needs_vgg:
            from occo.losses.vgg import build_vgg_features

            path = getattr(self.config.objective, "vgg_weights", None)
            if path is not None and Path(path).is_file():
                self.vgg_sha256 = file_sha256(path)
            vgg = build_vgg_features(path, device=self.device, channels_last=self.channels_last)
        return FusionObjective(self.config.objective, vgg)

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.state = TrainState(**checkpoint["state"])
        #: The step a resumed run continued from (0 for a new run).
        self.resumed_from = self.state.step
        set_rng_state(checkpoint["rng"])

    # --- control -----------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask the loop to save a checkpoint and return after the current step (signal-safe)."""
        self.stop_requested = True

    def _agree(self, flag: bool, any_rank: bool = True) -> bool:
        """``flag`` combined over processes: true if true on any rank (or on all ranks)."""
        if not self.info.distributed:
            return flag
        value = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX if any_rank else dist.ReduceOp.MIN)
        return bool(value.item() > 0.5)

    # --- the loop ----------------------------------------------------------------------

    def fit(self) -> TrainResult:
        """Train until the configured epochs (or ``max_steps``) are done or a stop is requested.

        Returns:
            A :class:`TrainResult`.

        Raises:
            DivergedError: ``max_nonfinite`` non-finite losses in a row (a checkpoint of
                the last good state is kept).
        """
        cfg, state = self.config, self.state
        if self.info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(self.out_dir / "config.yaml", cfg.to_yaml().encode())
            self._open_logs()
        self.on_event(
            "start",
            {
                "total_steps": self.total_steps,
                "step": state.step,
                "batches_per_epoch": self.batches_per_epoch,
                "train_pairs": len(self.train_pairs),
                "val_pairs": len(self.val_pairs),
                "device": str(self.device),
                "world_size": self.info.world_size,
                "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off",
            },
        )
        interrupted = False
        validation: dict[str, float] = {}
        try:
            while state.epoch < cfg.epochs and not self._done():
                self.sampler.set_epoch(state.epoch)
                self.sampler.set_start(state.batch_in_epoch)
                self.model.train()
                for batch in self._batches():
                    self.train_step(batch)
                    state.step += 1
                    state.batch_in_epoch += 1
                    if self._agree(self.stop_requested):
                        interrupted = True
                        break
                    if state.step % cfg.checkpoint_every == 0:
                        self._save_checkpoint()
                    if self._done():
                        break
                if interrupted:
                    break
                if state.batch_in_epoch >= self.batches_per_epoch:
                    state.epoch += 1
                    state.batch_in_epoch = 0
                    if cfg.val_every and state.epoch % cfg.val_every == 0:
                        validation = self.validate() or validation
                    self._save_checkpoint(weights=True)
                    self.on_event("epoch", {"epoch": state.epoch, "step": state.step})
            if not interrupted and self._done() and state.batch_in_epoch and cfg.val_every:
                validation = self.validate() or validation  # a run cut by max_steps mid-epoch
            self._save_checkpoint(weights=True)
        finally:
            self._close_logs()
        result = TrainResult(state, interrupted, self.out_dir, validation=validation)
        if self.info.is_main:
            result.last_weights = self.out_dir / "last.safetensors"
            best = self.out_dir / "best.safetensors"
            result.best_weights = best if best.is_file() else None
        self.on_event("done", {"step": state.step, "interrupted": interrupted})
        return result

    def close(self) -> None:
        """Leave torchrun's process group, after every rank got here.

        Ranks that exit with the group still open can abort in gloo's threads at
        interpreter shutdown (SIGABRT, "terminate called without an active exception").
        """
        if self.info.distributed and dist.is_initialized():
            dist.barrier()
        self.info.close()

    def _done(self) -> bool:
        return self.config.max_steps is not None and self.state.step >= self.config.max_steps

    def _batches(self) -> Iterator[dict[str, Tensor]]:
        yield from self.loader

    def train_step(self, batch: dict[str, Tensor]) -> float | None:
        """One optimisation step on a batch from the loader (counters are the caller's).

        Args:
            batch: ``vi``, ``ir`` ``(b, 1, c, c)`` and, with masks, ``mask_vi``, ``mask_ir``.

        Returns:
            The loss of this process's batch, or None when it was not finite and skipped.
        """
        cfg, state = self.config, self.state
        start = time.perf_counter()
        vi, ir = self._to_device(batch["vi"]), self._to_device(batch["ir"])  # (b, 1, c, c)
        regions = None
        if self.regions_fn is not None and "mask_vi" in batch:
            regions = self.regions_fn(
                self._to_device(batch["mask_vi"]), self._to_device(batch["mask_ir"])
            )
        autocast = (
            torch.autocast(self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype
            else nullcontext()
        )
        with autocast:
            raw = self.net(vi, ir)
            # The network's output convention, as at inference (FIFN: min-max per image,
            # not clamped: the losses see, and correct, pixels outside the range's margin).
            finish = self.spec.train_finish or self.spec.finish
            fused = finish(raw.float(), self.model.config)
            total, parts = self.objective(fused, vi, ir, regions)
        finite = self._agree(bool(torch.isfinite(total).item()), any_rank=False)
        self.optimizer.zero_grad(set_to_none=True)
        if not finite:
            state.skipped += 1
            state.consecutive_nonfinite += 1
            info = {
                "step": state.step + 1,
                "epoch": state.epoch,
                "loss": _number(total),
                "parts": {k: _number(v) for k, v in parts.items()},
                "in_a_row": state.consecutive_nonfinite,
            }
            self._write_log({"event": "nonfinite", **info})
            self.on_event("skipped", info)
            if state.consecutive_nonfinite >= cfg.max_nonfinite:
                raise DivergedError(
                    f"the loss was not finite for {state.consecutive_nonfinite} steps in a row (up to step "
                    f"{state.step + 1}); stopped. Lower --lr, check the data and masks, or try --no-amp; "
                    f"the last good checkpoint is {self.out_dir / 'checkpoint.pt'}"
                )
            return None
        state.consecutive_nonfinite = 0
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        step = state.step + 1
        if step % cfg.log_every == 0 or step == 1 or step == self.total_steps:
            values = {k: float(v.detach()) for k, v in parts.items()}
            loss = float(total.detach())
            if self.info.distributed:  # log the global batch's loss, not rank 0's share
                packed = torch.tensor([loss, *values.values()], device=self.device)
                dist.all_reduce(packed)
                packed /= self.info.world_size
                loss, values = float(packed[0]), dict(zip(values, packed[1:].tolist(), strict=True))
            record = {
                "event": "step",
                "step": step,
                "epoch": state.epoch,
                "loss": loss,
                **values,
                "lr": self.optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - start,
                "time": time.time(),
            }
            self._write_log(record)
        else:
            record = None
        self.on_event("step", {"step": step, "epoch": state.epoch, "record": record})
        return float(total.detach())

    def _to_device(self, x: Tensor) -> Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    # --- validation --------------------------------------------------------------------

    def validate(self) -> dict[str, float]:
        """Fuse the validation pairs, score them, save samples; picks ``best.safetensors``.

        Returns:
            Mean score per metric (empty without validation pairs, and on ranks > 0).
        """
        if not self.val_pairs or not self.config.val_every:
            return {}
        scores: dict[str, float] = {}
        if self.info.is_main:
            scores = self._validate_main()
        if self.info.distributed:
            dist.barrier()
        return scores

    def _validate_main(self) -> dict[str, float]:
        from occo.data.io import read_image
        from occo.eval.metrics import compute_metrics
        from occo.models.fuser import Fuser

        cfg, state = self.config, self.state
        pairs = self.val_pairs[: cfg.val_max_pairs]
        folder = self.out_dir / "samples" / f"epoch_{state.epoch:03d}"
        totals: dict[str, float] = {}
        fuser = Fuser(self.model, self.device, amp=self.amp_dtype or False)
        try:
            for index, (stem, ir_path, vi_path) in enumerate(pairs):
                ir_img, vi_img = read_image(ir_path), read_image(vi_path)
                fused = fuser.fuse_arrays(ir_img, vi_img)  # exactly what `occo fuse` writes
                scores = compute_metrics(fused, ir=ir_img, vi=vi_img, metrics=list(cfg.val_metrics))
                for name, value in scores.items():
                    totals[name] = totals.get(name, 0.0) + float(value)
                if index < cfg.val_samples:
                    write_image_atomic(folder / f"{stem}.png", fused)
        finally:
            # The Fuser switched to eval mode and channels_last; training goes on as before.
            self.model.train()
            if not self.channels_last:
                self.model.to(memory_format=torch.contiguous_format)
        means = {name: value / len(pairs) for name, value in totals.items()}
        record = {
            "event": "validation",
            "step": state.step,
            "epoch": state.epoch,
            # 1-based, as the progress bar counts: the epoch validated (finished or cut).
            "epoch_shown": state.epoch + (1 if state.batch_in_epoch else 0),
            "pairs": len(pairs),
            **means,
        }
        value = means.get(cfg.best_metric)
        if (
            value is not None
            and math.isfinite(value)
            and (state.best_value is None or value > state.best_value)
        ):
            state.best_value, state.best_step = value, state.step
            save_weights(
                self.out_dir / "best.safetensors", self.model, self._weights_metadata(best=True)
            )
            record["best"] = True
        self._write_log(record)
        self.on_event("validation", record)
        return means

    # --- files ---------------------------------------------------------------------------

    def _weights_metadata(self, best: bool = False) -> dict[str, str]:
        cfg = self.config
        meta = {
            "trained_with": f"objective={getattr(cfg.objective, 'objective', 'occo')}",
            "steps": str(self.state.step),
            "epoch": str(self.state.epoch),
            "train_config": cfg.to_json(),
            "occo_version": OCCO_VERSION,
            # What `occo fuse` names as the weights' source (overridden by self.metadata).
            "source": f"occo train run {self.out_dir.name}, step {self.state.step}"
            + (" (best)" if best else " (last)"),
        }
        if best and self.state.best_value is not None:
            meta["selected_by"] = f"best validation {cfg.best_metric} = {self.state.best_value:.4f}"
        meta.update(self.metadata)
        return meta

    def _save_checkpoint(self, weights: bool = False) -> None:
        if not self.info.is_main:
            return
        payload = {
            "format": CHECKPOINT_FORMAT,
            "version": OCCO_VERSION,
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "state": asdict(self.state),
            "rng": rng_state(),
            "world_size": self.info.world_size,
            "train_stems": [p[0] for p in self.train_pairs],
            "vgg_sha256": self.vgg_sha256,
        }
        save_torch_atomic(self.out_dir / "checkpoint.pt", payload)
        if weights:
            save_weights(self.out_dir / "last.safetensors", self.model, self._weights_metadata())
        self.on_event(
            "checkpoint", {"step": self.state.step, "path": str(self.out_dir / "checkpoint.pt")}
        )

    def _open_logs(self) -> None:
        self._log = open(self.out_dir / "log.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        if self.config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))

    def _close_logs(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def _write_log(self, record: dict[str, Any]) -> None:
        if self._log is None:
            return
        self._log.write(json.dumps(record, default=_number) + "\n")
        self._log.flush()
        if self._tb is not None:
            prefix = {"step": "train", "validation": "val"}.get(record.get("event", ""), "")
            for key, value in record.items():
                if prefix and isinstance(value, float) and key not in ("time", "seconds"):
                    self._tb.add_scalar(f"{prefix}/{key}", value, record["step"])


def _number(value: Any) -> Any:
    if isinstance(value, Tensor):
        value = float(value.detach().float().mean()) if value.numel() else float("nan")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
