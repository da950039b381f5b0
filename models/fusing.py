"""Fusing folders of pairs: the workflow behind ``occo fuse``, as one library call.

    from occo.models.fusing import FuseSettings, fuse_folder

    result = fuse_folder("tno/ir", "tno/vi", "fused/tno", FuseSettings(method="fifn"))
    result.fused, result.skipped, result.failures  # counts, and failed stems -> reason

:class:`FuseSettings` holds every option of a run. Each field says whether it changes the
fused pixels (``pixels=True`` in its metadata); the provenance stored in every PNG and in
``occo-fuse.json``, which decides what a rerun may reuse, is derived from those fields, so
a new pixel-changing option cannot be left out of it. Under torchrun, the pairs are shared
out by rank and rank 0 writes the one manifest (:func:`fuse_folder`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from occo.data.errors import OccoError
from occo.data.pairing import listing
from occo.data.version import OCCO_VERSION

BACKENDS = ("torch", "onnxruntime")
IR16_MODES = ("percentile", "minmax", "full")


class FuseSetupError(OccoError, ValueError):
    """Settings or inputs that cannot make a fusion run (one line: what, which, what to do)."""


def _setting(default: Any, *, pixels: bool) -> Any:
    return field(default=default, metadata={"pixels": pixels})


@dataclass
class FuseSettings:
    """Everything that decides an ``occo fuse`` run. ``pixels`` in each field's metadata
    marks the settings that change fused images: they form the provenance that resume
    compares (with the weights' SHA-256 and occo's version)."""

    method: str | None = _setting(None, pixels=True)
    """Registered network (``occo methods``); None: the network an occo weight file
    records (a training run's weights name theirs), else FIFN."""
    weights: Path | None = _setting(None, pixels=False)
    """Weight file or folder; None: the method's default (occo's bundled FIFN weights, or
    the authors' pinned release). Its content enters the provenance as a SHA-256."""
    backend: str = _setting("torch", pixels=True)
    """``torch``, or ``onnxruntime`` (``weights`` may be an ``.onnx`` from ``occo export``)."""
    device: str = _setting("auto", pixels=False)
    """auto, cpu, cuda or cuda:N (float32 results agree across devices to rounding)."""
    amp: bool | None = _setting(None, pixels=True)
    """bf16/fp16 autocast; None: on for CUDA, off on CPU. Recorded as the dtype used."""
    tile: int | None = _setting(None, pixels=True)
    """Run the network in windows of this many px (exact where the network is local)."""
    batch_size: int = _setting(4, pixels=False)
    """Same-size pairs per network call."""
    ir16: str = _setting("percentile", pixels=True)
    """16-bit infrared stretch: percentile (0.1-99.9%), minmax or full (/65535)."""
    authors_output: bool = _setting(False, pixels=True)
    """Write what the method's authors' test script writes (gray where it is gray)."""
    resize_vi: bool = _setting(False, pixels=False)
    """Resize visible images to the infrared size when they differ (a pair it resizes has
    no output without it, so it never changes an existing output)."""
    workers: int = _setting(2, pixels=False)
    """Threads reading images ahead."""
    misaligned_px: float | None = _setting(None, pixels=False)
    """Warn about pairs displaced more than this (px); 0: no check; None: the default 10."""
    align: bool = _setting(False, pixels=True)
    """Warp each infrared image onto its visible one before fusing (occo.data.align; pairs
    already aligned or with an unreliable estimate are left as they are); each transform
    is recorded in its PNG and the manifest."""
    modalities: str | None = _setting(None, pixels=False)
    """The pair's images as FIRST,SECOND, e.g. ``MRI,PET`` (medical: MRI first, CT, PET or
    SPECT second, whose colour is kept); None: from the folder names (MRI/, CT/, PET/,
    SPECT/, any case; occo.data.modality), else infrared,visible. It names the images in
    messages and the manifest; the pixels are the same."""
    overwrite: bool = _setting(False, pixels=False)
    """Redo every output, replacing files already in the output folder."""
    threads: int | None = _setting(None, pixels=False)
    """CPU threads the process runs with, recorded in the manifest (the caller sets them:
    occo.runtime.set_threads; the library never changes the process)."""
    memory_limit: str | None = _setting(None, pixels=False)
    """Cap on the memory the automatic tiling plans for (e.g. ``8G``); None: what is free."""

    def validate(self) -> None:
        """Raise :class:`FuseSetupError` for a value no run can use."""
        if self.backend not in BACKENDS:
            raise FuseSetupError(
                f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}"
            )
        if self.ir16 not in IR16_MODES:
            raise FuseSetupError(
                f"--ir16 must be one of {', '.join(IR16_MODES)}, got {self.ir16!r}"
            )
        if self.batch_size < 1 or self.workers < 1:
            raise FuseSetupError("--batch-size and --workers must be at least 1")
        if self.modalities is not None:
            from occo.data.modality import parse_modalities

            parse_modalities(self.modalities)


def method_of(settings: FuseSettings) -> str:
    """The network a run uses: ``settings.method``, else the one its occo weight file
    records, else FIFN."""
    if settings.method is not None:
        return settings.method
    weights = settings.weights
    if weights is not None and Path(weights).is_file():
        from occo.models.checkpoint import is_occo_weights, weights_network

        if is_occo_weights(Path(weights)):
            return weights_network(weights)
    return "fifn"


def pixel_fields() -> tuple[str, ...]:
    """Names of the :class:`FuseSettings` fields that change fused pixels."""
    return tuple(f.name for f in fields(FuseSettings) if f.metadata["pixels"])


def pixel_defaults() -> dict[str, Any]:
    """Each pixel setting's default: what a record written before it existed stands for."""
    defaults = {f.name: f.default for f in fields(FuseSettings) if f.metadata["pixels"]}
    defaults["method"] = "fifn"  # records from before the registry were all FIFN's
    return _jsonable(defaults)


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}


def provenance(settings: FuseSettings, weights_sha256: str, resolved: dict[str, Any]) -> dict:
    """What decides the pixels of a run's outputs, stored in each PNG and the manifest.

    Args:
        settings: the run's settings.
        weights_sha256: SHA-256 of the weight file (or ONNX model) used.
        resolved: values as the run resolved them where they differ from the settings'
            (``amp`` as the dtype name, ``method`` as the registry name).
    """
    values = {name: resolved.get(name, getattr(settings, name)) for name in pixel_fields()}
    if values["method"] is None:
        values["method"] = method_of(settings)
    if values.get("align"):  # another alignment algorithm gives other pixels: no resume
        from occo.data.align import ALGORITHM_VERSION

        values["align_algorithm"] = ALGORITHM_VERSION
    return {"occo_version": OCCO_VERSION, "weights_sha256": weights_sha256, **_jsonable(values)}


# --- what a run reports as it goes ----------------------------------------------------------


@dataclass
class FuseEvents:
    """Callbacks a caller (the CLI) renders; the library never prints. Each may be None."""

    note: Callable[[str], None] | None = None
    """A line of information (weights used, pairs skipped, temporaries removed)."""
    warn: Callable[[str], None] | None = None
    """A line that needs the user's attention (unpaired files, a misaligned pair)."""
    start: Callable[[int], None] | None = None
    """Called once with the number of pairs this process fuses."""
    pair: Callable[[Any], None] | None = None
    """Called with each pair's :class:`occo.models.fuser.FuseOutcome` as it finishes."""

    def _say(self, kind: str, text: str) -> None:
        handler = getattr(self, kind)
        if handler is not None:
            handler(text)


# --- the network ---------------------------------------------------------------------------


@dataclass
class FuserSetup:
    """A ready Fuser and what the manifest records about how it runs."""

    fuser: Any
    """The :class:`occo.models.fuser.Fuser`."""
    weights: Path
    """The weight file, release file or ONNX model used."""
    source: str
    """Where the weights came from, in words, or ""."""
    device: str
    """Where the network runs: cpu, cuda, cuda:N."""
    method: str = "fifn"
    """The network's registry name."""
    settings: dict = field(default_factory=dict)
    """Backend settings for the manifest (backend, amp, providers...)."""
    budget: Any = None
    """The memory budget the Fuser plans sizes against (occo.models.memory), or None."""
    resolved: dict = field(default_factory=dict)
    """Pixel settings as resolved (amp dtype, method name), for the provenance."""


def build_fuser(
    settings: FuseSettings, events: FuseEvents | None = None, device=None
) -> FuserSetup:
    """The Fuser for ``settings``: the method's network and weights on the device.

    Args:
        settings: the run's settings.
        events: where notes go.
        device: a resolved ``torch.device`` (torchrun ranks pass theirs); None: from
            ``settings.device``.

    Raises:
        OccoError subclasses (one line each): unknown method, unreadable weights, a bad
        device, tiles a network cannot take.
    """
    from occo.models.checkpoint import load_method, resolve_weights

    events = events or FuseEvents()
    settings.validate()
    if settings.backend == "onnxruntime":
        return _onnxruntime_fuser(settings, events)
    from occo.models.registry import get_network

    spec = get_network(method_of(settings))
    if settings.weights is not None and Path(settings.weights).suffix.lower() == ".onnx":
        raise FuseSetupError(
            f"{settings.weights} is an ONNX model: run it with --backend onnxruntime"
        )
    from occo.models.fuser import Fuser
    from occo.runtime import cpu_amp_warning, keep_freed_memory, resolve_device

    torch_device = device if device is not None else resolve_device(settings.device)
    if spec.name == "fifn" and settings.weights is not None:
        resolve_weights(settings.weights)  # a missing file: the usual one line
    loaded = load_method(spec.name, settings.weights)
    if torch_device.type == "cpu":
        # This process is ours: let glibc reuse large freed maps (~20% faster on CPU).
        keep_freed_memory()
    from occo.models.memory import memory_budget

    budget = None
    if settings.tile is None and spec.memory_scale is not None:
        try:
            limit = {} if settings.memory_limit is None else {"limit": settings.memory_limit}
            budget = memory_budget(torch_device, **limit)
        except ValueError as exc:  # a bad OCCO_MEMORY_LIMIT or memory_limit
            raise FuseSetupError(str(exc)) from None
    try:
        fuser = Fuser(loaded.model, device=torch_device,
                      amp="auto" if settings.amp is None else settings.amp, tile=settings.tile,
                      batch_size=settings.batch_size, ir16=settings.ir16,
                      memory_budget=budget and budget.bytes,
                      authors_output=settings.authors_output)  # fmt: skip
    except ValueError as exc:
        raise FuseSetupError(str(exc)) from None
    label = "" if spec.name == "fifn" else f"{spec.name} "
    events._say(
        "note", f"weights: {label}{loaded.path}" + (f" ({loaded.source})" if loaded.source else "")
    )
    if message := cpu_amp_warning(torch_device, fuser.amp_dtype):
        events._say("warn", message)
    amp = str(fuser.amp_dtype).removeprefix("torch.") if fuser.amp_dtype else None
    backend = {
        "backend": "torch",
        "tile": settings.tile,
        "tile_margin": fuser.tile_margin,
        "amp": amp,
    }
    if spec.name != "fifn":
        backend["method"] = spec.name
    return FuserSetup(fuser, loaded.path, loaded.source, str(torch_device), spec.name,
                      backend, budget, {"amp": amp, "method": spec.name})  # fmt: skip


def _onnxruntime_fuser(settings: FuseSettings, events: FuseEvents) -> FuserSetup:
    from occo.models.checkpoint import load_method

    if settings.tile is not None:
        raise FuseSetupError("--tile needs --backend torch (tiles run the PyTorch network)")
    if settings.amp:
        raise FuseSetupError(
            "--amp applies to --backend torch; for half precision on onnxruntime, export with "
            "`occo export WEIGHTS OUT.onnx --fp16` and pass --weights OUT.onnx"
        )
    from occo.models.fuser import Fuser
    from occo.models.onnx_engine import OnnxEngine, require_onnxruntime

    require_onnxruntime()  # before any export work: says how to install it
    onnx_file = settings.weights is not None and Path(settings.weights).suffix.lower() == ".onnx"
    if onnx_file:
        weights_path = Path(settings.weights)
        if not weights_path.is_file():
            raise FileNotFoundError(f"weights not found: {weights_path}")
        engine = OnnxEngine(weights_path, device=settings.device)
    else:
        from occo.models.checkpoint import is_occo_weights
        from occo.models.export import onnx_from_weights

        loaded = load_method(method_of(settings), settings.weights)
        weights_path = loaded.path
        # occo weight files carry their provenance into the export; release files do not.
        payload, report = onnx_from_weights(
            weights_path if is_occo_weights(weights_path) else loaded.model
        )
        events._say(
            "note",
            f"exported {weights_path.name} to ONNX in memory and checked it against PyTorch "
            f"({report.seconds:.1f} s; `occo export` saves it once)",
        )
        engine = OnnxEngine(payload, device=settings.device)
    if settings.method is not None and engine.network_name != settings.method.strip().lower():
        raise FuseSetupError(
            f"{weights_path} holds {engine.network_name}, not {settings.method}: pass --method "
            f"{engine.network_name}"
        )
    source = engine.provenance.get("source", "")
    events._say("note", f"weights: {weights_path}" + (f" ({source})" if source else "")
                + f" on onnxruntime ({', '.join(engine.providers)})")  # fmt: skip
    fuser = Fuser(engine, device="cpu", amp=False, batch_size=settings.batch_size,
                  ir16=settings.ir16, authors_output=settings.authors_output)  # fmt: skip
    where = "cpu" if engine.providers[0] == "CPUExecutionProvider" else "cuda"
    backend = {"backend": "onnxruntime", "tile": None, "amp": None, **engine.describe()}
    return FuserSetup(fuser, weights_path, source, where, engine.network_name, backend, None,
                      {"amp": None, "method": engine.network_name})  # fmt: skip


# --- the pairs -----------------------------------------------------------------------------


@dataclass
class PairSet:
    """The pairs a run fuses and what could not be paired."""

    pairs: list[tuple[str, Path, Path]]
    """``(stem, ir_path, vi_path)`` per pair, sorted by stem."""
    failures: dict[str, str]
    """Stem -> why a file has no partner."""
    ir_dir: Path
    """The infrared source folder (for the manifest)."""
    vi_dir: Path
    """The visible source folder."""
    notes: list[str] = field(default_factory=list)
    """Information lines (hidden files left out)."""
    warnings: list[str] = field(default_factory=list)
    """Lines that need attention (subfolders not searched)."""
    task: Any = None
    """The pair's modalities (occo.data.modality.Task); None: infrared and visible."""


def collect_pairs(ir_in: Path, vi_in: Path, out_dir: Path, task=None) -> PairSet:  # noqa: ANN001
    """Two folders paired by stem, or two image files as one pair; the output folder is
    checked to be outside them and writable before any work. ``task`` (an
    occo.data.modality.Task) names the images in messages (default: infrared, visible).

    Raises:
        FuseSetupError, OccoError: inputs that are not folders or images, no pairs, an
        output inside an input or not writable.
    """
    from occo.data.modality import IVIF
    from occo.data.outputs import check_writable_folder, refuse_inside_inputs
    from occo.data.pairing import IMAGE_EXTENSIONS, pair_images

    ir_in, vi_in, out_dir = Path(ir_in), Path(vi_in), Path(out_dir)
    task = task or IVIF
    first, second = task.labels

    def check_folders(ir_dir: Path, vi_dir: Path) -> None:
        for label, folder in (("IR_DIR", ir_dir), ("VI_DIR", vi_dir)):
            if not folder.is_dir():
                raise FuseSetupError(f"{label} {folder} is not a folder")
        refuse_inside_inputs(out_dir, (ir_dir, vi_dir), "OUT_DIR")
        check_writable_folder(out_dir, "OUT_DIR")

    if ir_in.is_file() or vi_in.is_file():
        if not (ir_in.is_file() and vi_in.is_file()):
            raise FuseSetupError(f"give two folders or two image files, got {ir_in} and {vi_in}")
        for path in (ir_in, vi_in):
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                raise FuseSetupError(f"{path} is not an image file ({', '.join(IMAGE_EXTENSIONS)})")
        check_folders(ir_in.parent, vi_in.parent)
        return PairSet([(ir_in.stem, ir_in, vi_in)], {}, ir_in.parent, vi_in.parent, task=task)
    check_folders(ir_in, vi_in)
    pairing = pair_images(ir_in, vi_in)
    found = PairSet(list(pairing.pairs), {}, ir_in, vi_in, task=task)
    for path in pairing.only_first:
        found.failures[path.stem] = f"{path} has no {second} partner in {vi_in}"
    for path in pairing.only_second:
        found.failures[path.stem] = f"{path} has no {first} partner in {ir_in}"
    if pairing.hidden:
        found.notes.append(
            f"left out {len(pairing.hidden)} hidden file(s) (name starts with '.'): "
            f"{listing(pairing.hidden)}"
        )
    nested = [p for folder in (ir_in, vi_in) for p in folder.iterdir() if p.is_dir()]
    if nested:
        listed = ", ".join(str(p) for p in nested[:3]) + (" ..." if len(nested) > 3 else "")
        found.warnings.append(
            f"{len(nested)} subfolder(s) not searched ({listed}): occo fuse pairs the images "
            "directly inside IR_DIR and VI_DIR; run it once per subfolder"
        )
    if not found.pairs:
        raise FuseSetupError(f"no pairs: no file stem is in both {ir_in} and {vi_in}")
    return found


# --- registration, checked in the reader threads -------------------------------------------


class RegistrationCheck:
    """``occo fuse``'s registration check: an estimate per pair (the FileFuser's ``inspect``
    hook, in its reader threads), a warning line per misaligned pair, a summary.

    Args:
        threshold: displacement in px above which a pair is reported; 0 turns it off.
    """

    def __init__(self, threshold: float, labels: tuple[str, str] = ("infrared", "visible")) -> None:
        self.threshold = threshold
        self.results: dict = {}
        #: What the two images are, for the lines (a medical pair: MRI, PET).
        self.labels = labels

    def __call__(self, pair):  # noqa: ANN001, ANN204 - a PreparedPair
        from occo.data.registration import estimate_registration

        try:
            vi = pair.vi.permute(1, 2, 0).numpy()
            return estimate_registration(pair.ir[0].numpy(), vi[..., 0] if vi.shape[2] == 1 else vi)
        except (ValueError, RuntimeError):  # the check must never cost a fused pair
            return None

    def report(self, stem: str, registration) -> str | None:  # noqa: ANN001
        """Keep a pair's estimate; the warning line when it is misaligned, else None."""
        if registration is None:
            return None
        self.results[stem] = registration
        if not registration.misaligned(self.threshold):
            return None
        r, (first, second) = registration, self.labels
        return (
            f"{stem}: the {first} image is displaced about {r.displacement_px:.0f} px against "
            f"the {second} one (shift {r.shift_px[0]:+.1f}, {r.shift_px[1]:+.1f} px, rotation "
            f"{r.rotation_deg:+.2f}°, scale {r.scale:.3f}); its fused image will show double edges"
        )

    @property
    def misaligned(self) -> list[str]:
        """Stems of the pairs displaced more than the threshold, sorted."""
        return sorted(s for s, r in self.results.items() if r.misaligned(self.threshold))

    def summary(self) -> str | None:
        """One line about the misaligned pairs, or None when there are none."""
        stems = self.misaligned
        if not stems:
            return None
        return (f"{len(stems)} of {len(self.results)} fused pair(s) look misaligned (more than "
                f"{self.threshold:g} px): {listing(stems)}; `occo check IR_DIR VI_DIR` measures them")  # fmt: skip

    def record(self) -> dict:
        """For the manifest: the threshold, the misaligned stems, every pair's estimate."""
        return {
            "threshold_px": self.threshold,
            "misaligned": self.misaligned,
            "pairs": {s: r.to_dict(self.threshold) for s, r in sorted(self.results.items())},
        }


# --- the run -------------------------------------------------------------------------------


@dataclass
class FuseResult:
    """What :func:`fuse_folder` did (on rank 0 under torchrun: every rank's work merged)."""

    out_dir: Path
    """The output folder."""
    total: int
    """Pairs found (those fused before included)."""
    fused: int = 0
    """Pairs fused by this run."""
    skipped: int = 0
    """Pairs already fused with the same settings, kept."""
    failures: dict[str, str] = field(default_factory=dict)
    """Stem -> why the pair failed (unpaired files included)."""
    seconds: float = 0.0
    """Wall time of the fusing (rank 0's)."""
    device: str = ""
    """Where the network ran."""
    method: str = "fifn"
    """The network used."""
    interrupted: bool = False
    """Stopped by Ctrl-C: what is on disk is complete, the rest absent."""
    misaligned_summary: str | None = None
    """One line about misaligned pairs, or None."""
    manifest_warning: str | None = None
    """Why the manifest could not be written, or None."""
    world_size: int = 1
    """Processes that shared the pairs."""
    stopped: str | None = None
    """Why the run stopped before the end (a full or read-only disk), or None."""

    @property
    def done(self) -> int:
        """Pairs whose output is in the folder."""
        return self.fused + self.skipped


def fuse_folder(
    ir: str | Path,
    vi: str | Path,
    out_dir: str | Path,
    settings: FuseSettings | None = None,
    events: FuseEvents | None = None,
) -> FuseResult:
    """Fuse every pair of two folders (or two image files) into ``out_dir`` as PNGs.

    Outputs keep the input size, and colour where the visible image is colour. A rerun with
    the same settings keeps finished outputs; other settings, or files occo did not write,
    are refused unless ``settings.overwrite``. Bad pairs are reported and skipped.
    ``out_dir/occo-fuse.json`` records sources, weights, settings and timings.

    Under torchrun (``WORLD_SIZE`` > 1) each rank fuses every N-th pair still to do on its
    own device and rank 0 writes the manifest for all; the outputs equal one process's.

    Raises:
        OccoError subclasses before any output is written (bad settings, inputs, weights,
        resume conflicts), each one line.
    """
    from occo.data.fused import MANIFEST_NAME, OUTPUT_KEY, output_record, plan_resume
    from occo.data.io import file_sha256, folder_lock, remove_stale_temporaries
    from occo.models.fuser import FileFuser, FuseJob
    from occo.runtime import init_distributed

    settings = settings or FuseSettings()
    events = events or FuseEvents()
    settings.validate()
    ir, vi, out_dir = Path(ir), Path(vi), Path(out_dir)
    from occo.data.modality import GrayCheck, resolve_task

    task = resolve_task(settings.modalities, ir, vi)
    found = collect_pairs(ir, vi, out_dir, task)
    dist, device = init_distributed(settings.device)
    try:
        lead = dist.is_main
        if lead:
            for line in found.notes:
                events._say("note", line)
            for line in found.warnings:
                events._say("warn", line)
        setup = build_fuser(settings, events if lead else FuseEvents(), device=device)
        record = provenance(settings, file_sha256(setup.weights), setup.resolved)
        jobs = [FuseJob(stem, i, v, out_dir / f"{stem}.png", labels=task.labels)
                for stem, i, v in found.pairs]  # fmt: skip
        for job in jobs:
            job.text = {OUTPUT_KEY: output_record(record, job.ir_path, job.vi_path)}
        lock = folder_lock(out_dir, "occo fuse") if lead else _no_lock()
        with lock:
            if lead and (stale := remove_stale_temporaries(out_dir)):
                events._say(
                    "note",
                    f"removed {stale} temporary file(s) an interrupted run left in {out_dir}",
                )
            plan = plan_resume([(j.out_path, j.ir_path, j.vi_path) for j in jobs], record,
                               settings.overwrite, defaults=pixel_defaults())  # fmt: skip
            dist.barrier()  # every rank planned before any writes
            todo = [jobs[i] for i in plan.todo][dist.rank :: dist.world_size]
            if lead and plan.done:
                events._say(
                    "note",
                    f"skipping {len(plan.done)} pair(s) already fused in {out_dir} with the same settings",
                )
            if lead:
                for reason in found.failures.values():
                    events._say("warn", reason)
            threshold = 10.0 if settings.misaligned_px is None else settings.misaligned_px
            check = RegistrationCheck(threshold, task.labels)
            runner_class = FileFuser
            if settings.align:
                from occo.models.fuse_align import AligningFileFuser as runner_class
            inspect = check if threshold > 0 else None
            gray = GrayCheck(task, inspect) if task.color_expected else None
            runner = runner_class(setup.fuser, workers=settings.workers,
                                  resize_vi=settings.resize_vi, inspect=gray or inspect)  # fmt: skip
            if setup.budget is not None and events.warn is not None:
                budget = setup.budget
                setup.fuser.on_memory_plan = lambda h, w, p: events._say(
                    "note" if p.fits else "warn", p.describe(h, w, budget)
                )
            if events.start is not None:
                events.start(len(todo))
            failures: dict[str, str] = {}
            interrupted = False
            try:
                for outcome in runner.run(todo):
                    if outcome.error:
                        failures[outcome.stem] = outcome.error
                    if gray is not None:  # the second image gray where colour is expected
                        outcome.inspection, line = gray.report(outcome.stem, outcome.inspection)
                        if line:
                            events._say("warn", line)
                    if line := check.report(outcome.stem, outcome.inspection):
                        events._say("warn", line)
                    if events.pair is not None:
                        events.pair(outcome)
            except KeyboardInterrupt:
                interrupted = True  # outputs are atomic: what is on disk is complete
            stats = runner.stats
            merged = _merge_ranks(dist, failures, check, stats, interrupted,
                                  getattr(runner, "records", {}))  # fmt: skip
            if lead and settings.align:
                from occo.models.fuse_align import summary

                if line := summary(merged["alignment"]):
                    events._say("note", line)
            result = FuseResult(out_dir, len(found.pairs) + len(found.failures),
                                fused=merged["fused"], skipped=len(plan.done),
                                failures={**found.failures, **merged["failures"]},
                                seconds=stats.wall_s, device=setup.device, method=setup.method,
                                interrupted=merged["interrupted"],
                                world_size=dist.world_size)  # fmt: skip
            check.results = merged["registration"]
            result.misaligned_summary = check.summary()
            result.stopped = runner.stop_error
            # A rerun with nothing to do keeps the record of the run that made the images.
            if lead and (plan.todo or not (out_dir / MANIFEST_NAME).is_file()):
                done = [j for j in jobs if j.stem not in result.failures and j.out_path.exists()]
                if done:  # nothing fused: no manifest that claims a run
                    result.manifest_warning = _write_manifest(
                        out_dir, found, setup, settings, record, stats, merged, done,
                        result.failures, check if threshold > 0 else None, dist.world_size,
                    )  # fmt: skip
            dist.barrier()  # the lock is released only after rank 0 wrote the manifest
        return result
    finally:
        dist.close()


class _no_lock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        return None


def _merge_ranks(dist, failures: dict, check: RegistrationCheck, stats, interrupted: bool,
                 alignment: dict) -> dict:  # fmt: skip
    """Every rank's failures, registrations, alignments, counts and timings (on every rank)."""
    mine = {
        "failures": failures,
        "registration": check.results,
        "alignment": alignment,
        "fused": stats.fused,
        "interrupted": interrupted,
        "timings": {"model": stats.model_s, "decode": stats.decode_s, "encode": stats.encode_s},
    }
    if dist.world_size == 1:
        return mine
    import torch.distributed as torch_dist

    gathered: list = [None] * dist.world_size
    torch_dist.all_gather_object(gathered, mine)
    merged = {"failures": {}, "registration": {}, "alignment": {}, "fused": 0, "interrupted": False,
              "timings": {"model": 0.0, "decode": 0.0, "encode": 0.0}}  # fmt: skip
    for part in gathered:
        merged["failures"].update(part["failures"])
        merged["registration"].update(part["registration"])
        merged["alignment"].update(part["alignment"])
        merged["fused"] += part["fused"]
        merged["interrupted"] |= part["interrupted"]
        for key, value in part["timings"].items():
            merged["timings"][key] += value
    return merged


def _write_manifest(out_dir, found, setup, settings, record, stats, merged, done, failures,
                    check, world_size) -> str | None:  # fmt: skip
    from occo.data.fused import write_fuse_manifest
    from occo.models.fuse_align import alignment_record

    per_image = stats.wall_s / merged["fused"] if merged["fused"] else None
    timings = {
        "total": round(stats.wall_s, 3),
        "per_image": round(per_image, 4) if per_image else None,
        **{k: round(v, 3) for k, v in merged["timings"].items()},
        "fused_this_run": merged["fused"],
    }
    run = {
        "batch_size": settings.batch_size, **setup.settings, "ir16": settings.ir16,
        "resize_vi": settings.resize_vi, "overwrite": settings.overwrite,
        "workers": settings.workers, "threads": settings.threads, "world_size": world_size,
        "authors_output": settings.authors_output,
        "memory_plans": {f"{w}x{h}": {"tile": p.tile, "batch": p.batch}
                         for (h, w), p in getattr(setup.fuser, "memory_plans", {}).items()},
    }  # fmt: skip
    try:
        write_fuse_manifest(
            out_dir, found.ir_dir, found.vi_dir,
            weights=str(setup.weights.resolve()), weights_source=setup.source,
            settings=run, device=setup.device, timings=timings, provenance=record,
            pairs=len(done), stems=[job.stem for job in done], method=setup.method,
            outputs={job.stem: job.out_path.name for job in done}, failures=failures,
            registration=check.record() if check else None,
            alignment=alignment_record(merged["alignment"], [(j.stem, j.out_path) for j in done])
            if settings.align else None,
            **({"task": found.task.name, "modalities": list(found.task.labels)}
               if found.task is not None and found.task.medical else {}),
        )  # fmt: skip
    except (OccoError, OSError) as exc:
        return f"could not write the manifest in {out_dir}: {exc}"
    return None
