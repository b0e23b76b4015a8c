"""Per-frame face work on several CPU threads, with results independent of the thread count.

Landmark detection is the slowest CPU step of the pipeline (MediaPipe: 15-24 ms
per 720p frame on one core), so `ParallelLandmarks` runs whole chunks on a pool
of threads, each thread with its own backend (MediaPipe landmarkers are not
thread-safe), and hands results back in chunk order with a bounded number of
chunks in flight. Backends track the face from frame to frame; tracking is reset
at the start of every chunk, for one worker too, so a chunk's landmarks depend on
its frames alone and 1 or N workers give bit-identical landmarks.

Alignment smoothing runs across chunks, so matrices stay sequential in chunk
order (`align_chunk`); only the per-frame warps, independent once the matrices
are known, go to a thread pool. OpenCV and MediaPipe release the GIL while they
work, so threads use several cores.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
from loguru import logger

from ..errors import InvalidInputError
from .align import FILL_VALUE, AlignedFaces, FaceAligner, warp_face
from .landmarks import FaceBackend, FaceLandmarks, get_face_backend

T = TypeVar("T")
ChunkLandmarks = list  # list[FaceLandmarks | None], one entry per frame of the chunk


def check_workers(workers: int, what: str = "cpu_workers") -> int:
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise InvalidInputError(f"{what} must be a whole number >= 1, got {workers!r}", hint="the run plan's `cpu_workers`")
    return int(workers)


def backend_factory(name: str = "auto", **kwargs) -> Callable[[], FaceBackend]:
    """A factory of face backends that resolves "auto" once, so every thread runs the same backend kind."""
    chosen: dict[str, str] = {}

    def make() -> FaceBackend:
        backend = get_face_backend(chosen.get("name", name), **kwargs)
        chosen.setdefault("name", backend.name)
        return backend

    return make


class ParallelLandmarks:
    """Landmarks for consecutive chunks on `workers` threads, one backend per thread.

    Args:
        make_backend: builds one backend; called once here (so a missing model fails
            before any frame is decoded) and then once per extra worker thread, lazily.
        workers: threads (and backends) at most.
        max_in_flight: chunks submitted but not yet handed back, at most (default
            2 x workers): bounds the decoded frames held in memory.

    Use as a context manager, or call `close()`: it waits for running chunks and
    closes every backend.
    """

    def __init__(self, make_backend: Callable[[], FaceBackend], workers: int = 1, *, max_in_flight: int | None = None):
        self.workers = check_workers(workers)
        self.max_in_flight = max(self.workers, int(max_in_flight) if max_in_flight else 2 * self.workers)
        self._make_backend = make_backend
        self._lock = threading.Lock()
        self._local = threading.local()
        self._backends: list[FaceBackend] = []
        self._spare: list[FaceBackend] = [self._register(make_backend())]
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="landmarks")
        self._closed = False
        self.busy_seconds = 0.0  # summed over worker threads
        self.chunks_done = 0

    # -- backends, one per worker thread -----------------------------------------------------------
    def _register(self, backend: FaceBackend) -> FaceBackend:
        with self._lock:
            self._backends.append(backend)
        return backend

    def _thread_backend(self) -> FaceBackend:
        backend = getattr(self._local, "backend", None)
        if backend is None:
            with self._lock:
                backend = self._spare.pop() if self._spare else None
            if backend is None:
                backend = self._register(self._make_backend())
            self._local.backend = backend
        return backend

    @property
    def backends_created(self) -> int:
        with self._lock:
            return len(self._backends)

    @property
    def backend_name(self) -> str:
        with self._lock:
            return self._backends[0].name

    # -- work ------------------------------------------------------------------------------------------
    def _detect_chunk(self, frames: np.ndarray) -> ChunkLandmarks:
        start = time.perf_counter()
        backend = self._thread_backend()
        backend.reset()  # a chunk's landmarks depend on its own frames only
        found = list(backend.detect_batch(frames))
        if len(found) != len(frames):
            raise RuntimeError(f"face backend {backend.name} returned {len(found)} results for {len(frames)} frames")
        with self._lock:
            self.busy_seconds += time.perf_counter() - start
            self.chunks_done += 1
        return found

    def submit(self, frames: np.ndarray) -> "Future[ChunkLandmarks]":
        if self._closed:
            raise RuntimeError("ParallelLandmarks is closed")
        return self._executor.submit(self._detect_chunk, frames)

    def detect(self, frames: np.ndarray) -> ChunkLandmarks:
        """Landmarks of one chunk (N, H, W, 3) uint8 RGB, tracking reset at its first frame."""
        return self.submit(frames).result()

    def map(self, chunks: Iterable[T], frames_of: Callable[[T], np.ndarray] = lambda chunk: chunk.frames
            ) -> Iterator[tuple[T, ChunkLandmarks]]:
        """(chunk, landmarks) for each chunk of `chunks`, in order.

        The source is read on the caller's thread (decoding overlaps detection);
        at most `max_in_flight` chunks are submitted ahead. A worker's exception is
        raised here, unchanged, when its chunk's turn comes.
        """
        pending: deque[tuple[T, Future]] = deque()
        try:
            for chunk in chunks:
                pending.append((chunk, self.submit(frames_of(chunk))))
                # hand back what is ready without waiting; wait only when the window is full
                while pending and (pending[0][1].done() or len(pending) >= self.max_in_flight):
                    head, future = pending.popleft()
                    yield head, future.result()
            while pending:
                head, future = pending.popleft()
                yield head, future.result()
        finally:
            for _, future in pending:
                future.cancel()

    # -- shutdown --------------------------------------------------------------------------------------
    def close(self) -> None:
        """Wait for running chunks (queued ones are dropped), then close every backend."""
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=True)
        first_error: BaseException | None = None
        with self._lock:
            backends, self._backends, self._spare = list(self._backends), [], []
        for backend in backends:
            try:
                backend.close()
            except Exception as error:  # close the rest, then report the first failure
                logger.warning("closing face backend {} failed: {}", backend.name, error)
                first_error = first_error or error
        if first_error is not None:
            raise first_error

    def __enter__(self) -> "ParallelLandmarks":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def align_chunk(aligner: FaceAligner, frames_rgb: np.ndarray, landmarks: Sequence[FaceLandmarks | None],
                executor: Executor | None = None) -> AlignedFaces:
    """`aligner.align(frames_rgb, landmarks)` with the per-frame warps on `executor` (None: inline).

    The matrices (smoothing carries state from frame to frame and chunk to chunk)
    are computed here, in order; every warp then depends on its own frame and
    matrix only, so the result is identical to `aligner.align`.
    """
    if executor is None:
        return aligner.align(frames_rgb, landmarks)
    if len(frames_rgb) != len(landmarks):
        raise InvalidInputError(f"{len(frames_rgb)} frames but {len(landmarks)} landmark entries")
    matrices = aligner.matrices_for(landmarks)
    resolution = aligner.resolution
    faces = np.full((len(frames_rgb), resolution, resolution, 3), FILL_VALUE, dtype=np.uint8)

    def warp(index: int) -> None:
        faces[index] = warp_face(frames_rgb[index], matrices[index], resolution)

    wanted = [index for index in range(len(frames_rgb)) if np.isfinite(matrices[index]).all()]
    run_all(executor, warp, wanted)
    return AlignedFaces(faces=faces, matrices=matrices,
                        has_face=np.array([lm is not None for lm in landmarks], dtype=bool), resolution=resolution)


def run_all(executor: Executor, work: Callable[[int], None], indices: Iterable[int]) -> None:
    """Run `work(i)` for every index on `executor` and wait for all; re-raise the first error
    (in index order) once every task has finished, so no task still writes into shared output."""
    futures = [executor.submit(work, index) for index in indices]
    first_error: BaseException | None = None
    for future in futures:
        try:
            future.result()
        except BaseException as error:  # noqa: BLE001 - re-raised below, unchanged
            first_error = first_error or error
    if first_error is not None:
        raise first_error
