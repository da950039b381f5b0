"""``occo fuse IR.mp4 VI.mp4 OUT.mp4``: two videos (or frame folders) fused into a video.

``occo fuse`` hands over here when an input or the output is a video file.
"""

from __future__ import annotations

import time
from pathlib import Path

from occo.cli.console import fail, note, out, plain, progress_bar, warn

MANIFEST_SUFFIX = ".occo-fuse.json"


def _check_paths(ir: Path, vi: Path, out_path: Path, overwrite: bool) -> None:
    from occo.data.video import WRITE_CODECS, is_video_path

    if out_path.suffix.lower() not in WRITE_CODECS:
        fail(f"OUT {out_path}: fused videos are written as {', '.join(WRITE_CODECS)} files; "
             "give OUT such a name")  # fmt: skip
    for label, path in (("IR", ir), ("VI", vi)):
        if not path.exists():
            fail(f"{label} {path} not found")
        if path.is_file() and not is_video_path(path):
            fail(f"{label} {path} is neither a video nor a folder of frames")
        if out_path.resolve() == path.resolve() or (
            path.is_dir() and out_path.resolve().is_relative_to(path.resolve())
        ):
            fail(f"OUT {out_path} is {label} or inside it; choose a path outside the inputs")
    if out_path.is_dir():
        fail(f"OUT {out_path} is a folder; give a video file name")
    if out_path.exists() and not overwrite:
        fail(f"{out_path} exists; pass --overwrite to replace it")


def _stream_line(label: str, source) -> str:
    count = f"{source.count} frames" if source.count is not None else "length unknown"
    return f"{label}: {source.name} ({source.fps:g} fps, {count})"


def _use_line(label: str, use) -> str:
    parts = [f"{use.used} used"]
    if use.repeated:
        parts.append(f"{use.repeated} repeated")
    if use.dropped:
        parts.append(f"{use.dropped} dropped")
    if use.skipped:
        parts.append(f"{use.skipped} before --start")
    if use.unused_at_end:
        parts.append(f"{use.unused_at_end} after the end unused")
    return f"{label} frames: " + ", ".join(parts)


def _align_line(aligner, frames: int) -> str:
    used = [r for r in aligner.records if r["used"]]
    if not used:
        reasons = {r.get("left_alone") for r in aligner.records}
        return (f"--align: no frame pair gave a reliable transform ({len(aligner.records)} "
                f"tried; {'; '.join(sorted(str(r) for r in reasons))}): frames fused as they are")  # fmt: skip
    last = used[-1]
    how = ("already aligned, none warped" if not last["aligned"] else
           f"shift ({last['shift_px'][0]:.1f}, {last['shift_px'][1]:.1f}) px, rotation "
           f"{last['rotation_deg']:.2f} deg, scale {last['scale']:.4f}")  # fmt: skip
    return (
        f"--align: {aligner.warped_frames} of {frames} infrared frames warped; transform "
        f"estimated {len(used)} time(s), last on frame {last['from_frame']}: {how}"
    )


def fuse_video(
    ir: Path,
    vi: Path,
    out_path: Path,
    settings,
    *,
    fps: float | None,
    start: float,
    frames: int | None,
    align_every: int | None = None,
) -> None:
    """Fuse two streams into ``out_path`` with ``settings`` (occo.models.fusing.FuseSettings,
    the same as folders take); see ``occo fuse --help``."""
    from dataclasses import asdict

    from occo.cli.console import user_errors
    from occo.data.errors import OccoError
    from occo.data.fused import write_fuse_manifest
    from occo.data.video import FramePairer, VideoError, VideoSink, open_frames
    from occo.models.fusing import FuseEvents, build_fuser
    from occo.models.video_fuser import VideoFuser

    overwrite, resize_vi = settings.overwrite, settings.resize_vi
    if align_every is not None and not settings.align:
        fail("--align-every N needs --align")
    _check_paths(ir, vi, out_path, overwrite)
    try:
        ir_source, vi_source = open_frames(ir, fps), open_frames(vi, fps)
    except VideoError as exc:
        fail(str(exc))
    out_fps = fps or vi_source.fps
    pairer = FramePairer(ir_source, vi_source, fps=out_fps, start=start, frames=frames)
    expected = pairer.expected_frames()
    if expected == 0:
        fail(f"no frames to fuse: a stream ends before --start {start:g} s")
    note(_stream_line("infrared", ir_source))
    note(_stream_line("visible", vi_source))
    with user_errors():
        setup = build_fuser(settings, FuseEvents(note=note, warn=warn))
    sink = VideoSink(out_path, out_fps, overwrite=overwrite)  # locked; re-checked at the end
    aligner = None
    if settings.align:
        from occo.data.align_stream import StreamAligner

        aligner = StreamAligner(every=align_every)
    runner = VideoFuser(setup.fuser, resize_vi=resize_vi, aligner=aligner)
    started = time.perf_counter()
    try:
        with progress_bar() as progress:
            task = progress.add_task("fusing frames", total=expected, status="")
            for written in runner.run(pairer, sink):
                elapsed = time.perf_counter() - started
                rate = f"{written / elapsed:.1f} frames/s" if written and elapsed > 0 else ""
                progress.update(task, completed=written, status=rate)
        if sink.written == 0:
            sink.abort()
            fail(f"no frames to fuse: a stream has no frame after --start {start:g} s")
        sink.commit()
    except KeyboardInterrupt:
        partial = sink.abort(keep_partial=True)
        kept = (
            f"{sink.written} fused frames kept in {partial} (playable)"
            if partial
            else "no frame was written"
        )
        fail(f"interrupted: {kept}; {out_path} was not changed; rerun to make it", code=130)
    except (VideoError, OSError) as exc:
        sink.abort()
        fail(str(exc))
    finally:
        ir_source.close()
        vi_source.close()
    wall = time.perf_counter() - started

    stats, use = runner.stats, pairer.stats
    note(_use_line("infrared", use.ir))
    note(_use_line("visible", use.vi))
    if aligner is not None:
        note(_align_line(aligner, stats.frames))
    width, height = sink.size
    if sink.size != sink.input_size:
        warn(f"frames are {sink.input_size[0]}x{sink.input_size[1]}; {sink.codec} stores even "
             f"sizes only, so the video is {width}x{height} (last column/row dropped)")  # fmt: skip
    run = {
        "batch_size": settings.batch_size, **setup.settings, "ir16": settings.ir16,
        "resize_vi": resize_vi, "overwrite": overwrite, "fps": fps, "start": start,
        "frames": frames, "align": settings.align, "align_every": align_every,
    }  # fmt: skip
    timings = {
        "total": round(wall, 3),
        "per_frame": round(wall / stats.frames, 4) if stats.frames else None,
        "frames_per_s": round(stats.frames / wall, 3) if wall > 0 else None,
        "model": round(stats.model_s, 3),
        "decode": round(stats.decode_s, 3),
        "encode": round(stats.encode_s, 3),
    }
    video = {
        "ir": {"fps": ir_source.fps, "frames": ir_source.count},
        "vi": {"fps": vi_source.fps, "frames": vi_source.count},
        "output": {"width": width, "height": height, "fps": out_fps, "codec": sink.codec},
    }
    try:
        write_fuse_manifest(
            out_path.parent, ir, vi, name=out_path.name + MANIFEST_SUFFIX, kind="video",
            output=out_path, weights=str(setup.weights.resolve()), weights_source=setup.source,
            settings=run, device=setup.device, timings=timings, pairs=stats.frames,
            video=video, pairing={"ir": asdict(use.ir), "vi": asdict(use.vi)},
            alignment=aligner.summary() if aligner else None,
        )  # fmt: skip
    except (OccoError, OSError) as exc:
        warn(f"could not write the record {out_path.name}{MANIFEST_SUFFIX}: {exc}")
    out.print(
        f"fused {stats.frames} frames into {plain(out_path)} ({width}x{height}, {out_fps:g} fps, "
        f"{sink.codec}) in {wall:.1f} s, {stats.frames / wall:.2f} frames/s on {setup.device}",
        highlight=False,
        soft_wrap=True,
    )
