"""Fusing a video: decoding, the network and encoding overlap in threads, memory bounded.

One thread decodes and pairs the two streams (in order: a video decodes forward only) and
prepares each pair; the main thread fuses batches of consecutive frames; one thread
encodes. Queues between them hold a few batches, so memory does not grow with the video's
length.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from occo.data.align_stream import StreamAligner
from occo.data.video import FramePairer, VideoError, VideoSink
from occo.models.fuser import Fuser, PreparedPair, prepare_pair, resize_like


@dataclass
class VideoFuseStats:
    """Timings of a :class:`VideoFuser` run, seconds."""

    frames: int = 0
    """Frames written."""
    decode_s: float = 0.0
    """Decoding, pairing and preparing (reader thread)."""
    model_s: float = 0.0
    """Network and colour (main thread)."""
    encode_s: float = 0.0
    """Encoding (writer thread)."""
    wall_s: float = 0.0
    """End to end."""


class _Failed:
    """Carries the reader thread's exception to the main thread."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


class VideoFuser:
    """Fuse paired frames into a video, in order, with bounded memory.

    Args:
        fuser: the :class:`Fuser`; its batch size is the frames per network call.
        resize_vi: resize visible frames to the infrared size when they differ; otherwise
            that is an error before anything is written.
        aligner: warps each infrared frame onto its visible one before fusing (in the
            reader thread); None: frames are fused as they are.
    """

    def __init__(
        self, fuser: Fuser, resize_vi: bool = False, aligner: StreamAligner | None = None
    ) -> None:
        self.fuser = fuser
        self.resize_vi = resize_vi
        self.aligner = aligner
        self.stats = VideoFuseStats()
        self._size: tuple[int, int] | None = None  # (H, W) of the first frame

    def _prepare(self, pairer: FramePairer, k: int, ir: np.ndarray, vi: np.ndarray) -> PreparedPair:
        if ir.shape[:2] != vi.shape[:2]:
            if not self.resize_vi:
                raise VideoError(
                    f"infrared {pairer.ir.name} has {ir.shape[1]}x{ir.shape[0]} frames but visible "
                    f"{pairer.vi.name} has {vi.shape[1]}x{vi.shape[0]}; pass --resize-vi to resize "
                    "visible frames to the infrared size"
                )
            vi = resize_like(vi, ir)
        pair = prepare_pair(ir, vi, self.fuser.ir16)
        if k and pair.size != self._size:
            raise VideoError(
                f"frame {k} is {pair.size[1]}x{pair.size[0]}, earlier frames "
                f"{self._size[1]}x{self._size[0]}: a video's frames share one size"
            )
        self._size = pair.size
        if self.aligner is not None:
            ir_array = pair.ir[0].numpy()  # (H, W) float32 in [0, 1], the tensor's own memory
            vi_array = pair.vi.permute(1, 2, 0).numpy()
            vi_array = vi_array[..., 0] if vi_array.shape[2] == 1 else vi_array
            aligned = self.aligner.align(k, ir_array, vi_array)
            if aligned is not ir_array:
                ir_array[...] = aligned
        return pair

    def _read(self, pairer: FramePairer, out: queue.Queue, stop: threading.Event) -> None:
        """Reader thread: decode, pair and prepare, in order."""

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            started = time.perf_counter()
            for k, ir, vi in pairer:
                pair = self._prepare(pairer, k, ir, vi)
                self.stats.decode_s += time.perf_counter() - started
                if not put(pair):
                    return
                started = time.perf_counter()
        except BaseException as exc:  # handed to the main thread, which raises it
            put(_Failed(exc))
        else:
            put(_END)

    def _write(self, sink: VideoSink, images: list[np.ndarray]) -> None:
        started = time.perf_counter()
        for image in images:
            sink.write(image)
        self.stats.frames += len(images)
        self.stats.encode_s += time.perf_counter() - started

    def _fuse(self, batch: list[PreparedPair], first: int) -> list[np.ndarray]:
        started = time.perf_counter()
        try:
            return self.fuser.fuse_pairs(batch)
        except (RuntimeError, ValueError) as exc:  # includes torch.OutOfMemoryError
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if isinstance(exc, torch.OutOfMemoryError):
                reason = "out of memory; pass --tile 1024 (or smaller), or a smaller --batch-size"
            raise VideoError(
                f"fusing frames {first}-{first + len(batch) - 1} failed: {reason}"
            ) from None
        finally:
            self.stats.model_s += time.perf_counter() - started

    def run(self, pairer: FramePairer, sink: VideoSink) -> Iterator[int]:
        """Fuse every pair of ``pairer`` into ``sink``.

        The caller commits or aborts ``sink``. When the iteration stops early (an error,
        KeyboardInterrupt, or the caller closing it), the frames already fused are still
        written before it returns, so an aborted sink can keep them.

        Args:
            pairer: the paired streams.
            sink: the output video.

        Yields:
            Frames written so far, after each batch is handed to the writer.

        Raises:
            VideoError: streams of different sizes (without ``resize_vi``), a frame of
                another size, a failed network call or write.
        """
        started = time.perf_counter()
        batch_size = self.fuser.batch_size
        prepared: queue.Queue = queue.Queue(maxsize=2 * batch_size)
        stop = threading.Event()
        reader = threading.Thread(target=self._read, args=(pairer, prepared, stop), daemon=True)
        writes: deque[Future] = deque()
        done = 0
        with ThreadPoolExecutor(1, thread_name_prefix="occo-video-writer") as writer:
            reader.start()
            try:
                batch: list[PreparedPair] = []
                while True:
                    item = prepared.get()
                    if isinstance(item, _Failed):
                        raise item.exc
                    if item is not _END:
                        batch.append(item)
                    if batch and (len(batch) == batch_size or item is _END):
                        images = self._fuse(batch, done)
                        writes.append(writer.submit(self._write, sink, images))
                        done += len(batch)
                        batch = []
                        while len(writes) > 2:  # bounds the fused frames waiting for the encoder
                            writes.popleft().result()
                        yield self.stats.frames
                    if item is _END:
                        break
                while writes:
                    writes.popleft().result()
                yield self.stats.frames
            finally:
                stop.set()
                reader.join()
                for future in writes:  # what was fused still reaches the file
                    if future.exception() is not None:
                        break
                self.stats.wall_s = time.perf_counter() - started
