"""``occo train``: train FIFN on a dataset with its object masks."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import typer

from occo.cli.console import (
    err,
    fail,
    note,
    out,
    plain,
    progress_bar,
    quiet_option,
    say,
    set_quiet,
    threads_option,
    user_errors,
    warn,
)


def train(
    dataset: Path = typer.Argument(
        ..., metavar="DATASET", help="Dataset folder with ir/ and vi/ (paired by file stem)."
    ),
    masks: Path | None = typer.Option(
        None, "--masks", help="Mask store from `occo masks gen` (default: DATASET/masks.h5)."
    ),
    config: Path | None = typer.Option(None, "--config", help="YAML file of TrainConfig fields."),
    out_dir: Path | None = typer.Option(
        None, "--out", help="Run folder (default: runs/DATASET_NAME)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out from its checkpoint."
    ),
    epochs: int | None = typer.Option(None, "--epochs", help="Epochs (default: 30)."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Crops per step, all GPUs (default: 12)."
    ),
    crop: int | None = typer.Option(None, "--crop", help="Crop side in pixels (default: 256)."),
    lr: float | None = typer.Option(None, "--lr", help="Adam learning rate (default: 1e-4)."),
    amp: bool | None = typer.Option(
        None,
        "--amp/--no-amp",
        help="bf16/fp16 autocast \\[default: on for CUDA, off on CPU; --amp on CPU is bf16, "
        "worth it with AVX512-BF16 or AMX].",
    ),
    vgg_weights: Path | None = typer.Option(
        None,
        "--vgg-weights",
        help="Local VGG19 state dict (default: torchvision ImageNet weights).",
    ),
    network: str | None = typer.Option(
        None,
        "--network",
        help="Registered network to train (`occo methods`) \\[default: fifn].",
    ),
    init_weights: Path | None = typer.Option(
        None,
        "--init-weights",
        help="Start from these weights (occo .safetensors of the network, or its authors'"
        " released file) instead of random ones.",
    ),
    objective: str | None = typer.Option(
        None,
        "--objective",
        help="Objective preset: occo (pixel + contextual contrastive), pixel (no masks, no "
        "VGG), coconet (CoCoNet's), model1 .. model5 (the paper's Table 8 ablations); "
        "configs/ablations/ holds one YAML per ablation.",
    ),
    val: Path | None = typer.Option(
        None, "--val", help="Validation dataset (ir/, vi/) (default: a held-out slice of DATASET)."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    workers: int | None = typer.Option(
        None,
        "--workers",
        help="Data-loading processes \\[default: 0 on machines with 1-2 cores, else up to 4, one core left].",
    ),
    max_steps: int | None = typer.Option(
        None, "--max-steps", help="Stop after this many steps in all."
    ),
    seed: int | None = typer.Option(
        None, "--seed", help="Seed of weights, crops and order (default: 0)."
    ),
    threads: int | None = threads_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Train FIFN (or any registered network, --network) with the OCCO objective; resumable, mixed precision, multi-GPU.

    Salient random crops (with object-mask pixels) from DATASET's pairs, batches of distinct images so CCL's negatives come from other scenes, Adam, validation with the standard metrics after each epoch. The run folder gets config.yaml, checkpoint.pt, last and best weights (.safetensors, for `occo fuse --weights`), log.jsonl and sample images. Ctrl-C saves a checkpoint and stops; --resume continues exactly.

    \b
    Example:
        occo masks gen data/fmb && occo train data/fmb --out runs/fmb
        occo train data/fmb --out runs/fmb --resume
        occo train data/roadscene --objective pixel --crop 128 --epochs 5
        occo train data/msrs --network seafusion --objective occo --init-weights SeAFusion.pth
        occo train data/fmb --config configs/ablations/model3.yaml --out runs/fmb-model3
        torchrun --nproc-per-node 4 -m occo train data/fmb --out runs/fmb4
    """
    from occo.data.io import folder_lock
    from occo.data.outputs import check_writable_folder, refuse_inside_inputs
    from occo.losses.objective import PRESETS
    from occo.runtime import cpu_amp_warning, set_threads
    from occo.train.config import TrainConfig, load_config_file
    from occo.train.signals import stop_on_signals
    from occo.train.state import load_checkpoint
    from occo.train.trainer import Trainer

    set_quiet(quiet)
    set_threads(threads)
    if objective is not None and objective not in PRESETS:
        fail(f"--objective must be one of {', '.join(PRESETS)}, got {objective!r}")
    is_main = _rank() == 0
    run = out_dir if out_dir is not None else Path("runs") / dataset.resolve().name
    if not resume and (run / "checkpoint.pt").exists():
        fail(f"{run} already holds a run: continue it with --resume, or choose another --out")

    # Configuration: defaults (or the resumed run's) < YAML < command line.
    cfg = TrainConfig()
    if resume:
        cfg = TrainConfig.from_dict(load_checkpoint(run / "checkpoint.pt")["config"])
    if config is not None:
        cfg = cfg.replace(load_config_file(config))
    cfg = cfg.replace(
        {
            "network": network,
            "init_weights": str(init_weights) if init_weights else None,
            "epochs": epochs,
            "batch_size": batch_size,
            "crop": crop,
            "lr": lr,
            "amp": amp,
            "num_workers": workers,
            "max_steps": max_steps,
            "seed": seed,
            "objective": {
                "objective": objective,
                "vgg_weights": str(vgg_weights) if vgg_weights else None,
            },
        }
    )

    # Data: pairs, masks, validation pairs.
    from occo.train.data import prepare_training_data

    with user_errors():
        data = prepare_training_data(dataset, cfg, masks=masks, val=val, run_name=run.name)
        refuse_inside_inputs(run, (data.ir_dir, data.vi_dir), "--out")
        check_writable_folder(run, "--out")
    if is_main:
        for line in data.warnings:
            warn(line)
        for line in data.notes:
            note(line)
    train_pairs, val_pairs = data.train_pairs, data.val_pairs
    mask_source, metadata = data.mask_source, data.metadata

    bar = progress_bar(disable=not is_main)
    task: list[Any] = []

    def on_event(kind: str, info: dict[str, Any]) -> None:
        if not is_main:
            return
        if kind == "start":
            note(
                f"training on {info['train_pairs']} pairs ({info['batches_per_epoch']} steps per epoch), "
                f"validating on {info['val_pairs']}; device {info['device']} x{info['world_size']}, "
                f"amp {info['amp']}; run folder {run}"
            )
            if message := cpu_amp_warning(trainer.device, trainer.amp_dtype):
                warn(message)
            if info["step"]:
                say(f"resuming {run} at step {info['step']} of {info['total_steps']}", bar.console)
            bar.start()
            task.append(
                bar.add_task("train", total=info["total_steps"], completed=info["step"], status="")
            )
        elif kind == "step":
            record = info.get("record")
            status = f"epoch {info['epoch'] + 1}"
            if record:
                parts = " ".join(f"{k} {v:.3g}" for k, v in record.items() if k in _PART_NAMES)
                status += f" loss {record['loss']:.4g} {parts}"
                bar.update(task[0], status=status)
            bar.update(task[0], completed=info["step"])
        elif kind == "skipped":
            bar.console.print(
                f"[yellow]warning:[/] step {info['step']}: non-finite loss ({info['loss']}), step skipped "
                f"({info['in_a_row']} in a row)",
                highlight=False,
            )
        elif kind == "validation":
            scores = " ".join(f"{k} {info[k]:.4g}" for k in cfg.val_metrics if k in info)
            best = " (best)" if info.get("best") else ""
            epoch = info.get("epoch_shown", info["epoch"])
            say(f"validation at step {info['step']} (epoch {epoch}): {scores}{best}", bar.console)

    with ExitStack() as held:
        if is_main:  # one run per folder: a second is refused in one line, not interleaved
            with user_errors():
                held.enter_context(folder_lock(run, "occo train"))
            if not resume and (run / "checkpoint.pt").exists():  # the re-check, holding it
                fail(f"{run} already holds a run: continue it with --resume, or choose another --out")
        trainer = Trainer(
            cfg,
            train_pairs,
            run,
            mask_source=mask_source,
            val_pairs=val_pairs,
            device=device,
            metadata=metadata,
            resume=resume,
            on_event=on_event,
        )
        if trainer.device.type == "cpu":
            from occo.runtime import keep_freed_memory

            keep_freed_memory()  # large CPU tensors reuse freed heap instead of faulting pages in
        try:
            with stop_on_signals(trainer):
                result = trainer.fit()
            trainer.close()
        finally:
            bar.stop()
    if not is_main:
        return
    if result.interrupted:
        err.print(f"[yellow]stopped at step {result.state.step}[/]; checkpoint saved in {plain(run)}")
        say(f"continue with: occo train {dataset} --out {run} --resume", err)
        raise typer.Exit(130)
    before = getattr(trainer, "resumed_from", 0)
    if before and result.state.step == before:
        out.print(f"nothing to train: the run is already at step {before} (--max-steps/--epochs); weights:")
    else:
        done, last = result.state.step - before, result.state.step
        span = f"step {last}" if done == 1 else f"steps {before + 1}-{last}"
        out.print(f"trained {done} step{'s' if done != 1 else ''}" + (f" ({span})" if before else "")
                  + f" ({result.state.skipped} skipped); weights:")  # fmt: skip
    say(f"  last: {result.last_weights}")
    if result.best_weights is not None:
        say(f"  best: {result.best_weights} ({cfg.best_metric} {result.state.best_value:.4f})")
    say(
        f"fuse with: occo fuse IR_DIR VI_DIR OUT_DIR --weights {result.best_weights or result.last_weights}"
        + (f" (a {cfg.network} network: --method {cfg.network} is implied)" if cfg.network != "fifn" else "")
    )


# Loss parts shown in the progress bar (names from losses.objective's parts dict).
_PART_NAMES = ("ssim", "intensity", "texture", "mse", "pixel", "contrastive", "con")


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))
