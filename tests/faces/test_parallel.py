"""Landmarks and face warps on several threads: same results as one thread, in order, bounded, errors intact."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from latentsync.errors import InvalidInputError
from latentsync.faces import FaceAligner, FaceBackend, FaceLandmarks
from latentsync.faces.parallel import ParallelLandmarks, align_chunk, backend_factory

from .conftest import place_on_canvas


class TrackingFakeBackend(FaceBackend):
    """Points from the frame's content plus a drift that grows while tracking, like a
    real tracker whose result depends on the frames it saw before (so a missing
    reset would show). Records which threads used it and whether it was closed."""

    name = "fake"
    instances: list["TrackingFakeBackend"] = []

    def __init__(self, delay: float = 0.0, fail_on: int | None = None, error: BaseException | None = None):
        self.delay, self.fail_on, self.error = delay, fail_on, error
        self.tracked = 0
        self.threads: set[int] = set()
        self.closed = False
        self.resets = 0
        TrackingFakeBackend.instances.append(self)

    def detect(self, frame_rgb):
        self.threads.add(threading.get_ident())
        marker = int(frame_rgb[0, 0, 0])
        if self.fail_on is not None and marker == self.fail_on:
            raise self.error
        if marker == 255:
            self.tracked = 0
            return None
        self.tracked += 1
        base = np.array([[10.0, 10.0], [30.0, 10.0], [20.0, 25.0]]) + marker
        return FaceLandmarks(points=base + 0.01 * self.tracked, confidence=1.0, backend=self.name)

    def detect_batch(self, frames_rgb):
        if self.delay:
            time.sleep(self.delay)
        return super().detect_batch(frames_rgb)

    def reset(self):
        self.tracked = 0
        self.resets += 1

    def close(self):
        self.closed = True


@pytest.fixture(autouse=True)
def _forget_fakes():
    TrackingFakeBackend.instances.clear()
    yield
    TrackingFakeBackend.instances.clear()


def fake_chunks(n_chunks: int, frames_per_chunk: int = 4, size: int = 8, no_face_every: int = 5):
    """Chunks whose frames carry a marker value (255: no face)."""
    chunks = []
    value = 0
    for _ in range(n_chunks):
        frames = np.zeros((frames_per_chunk, size, size, 3), np.uint8)
        for i in range(frames_per_chunk):
            value += 1
            frames[i] = 255 if value % no_face_every == 0 else value % 200
        chunks.append(frames)
    return chunks


def as_arrays(results):
    return [None if lm is None else lm.points for chunk in results for lm in chunk]


def same_landmarks(a, b) -> bool:
    flat_a, flat_b = as_arrays(a), as_arrays(b)
    return len(flat_a) == len(flat_b) and all(
        (x is None and y is None) or (x is not None and y is not None and np.array_equal(x, y))
        for x, y in zip(flat_a, flat_b)
    )


def run(workers: int, chunks, **kwargs):
    with ParallelLandmarks(lambda: TrackingFakeBackend(**kwargs), workers=workers) as pool:
        return [found for _, found in pool.map(chunks, frames_of=lambda frames: frames)]


def test_one_and_many_workers_give_identical_landmarks():
    chunks = fake_chunks(9)
    one = run(1, chunks)
    many = run(4, chunks, delay=0.01)
    assert same_landmarks(one, many)
    # tracking restarts at every chunk: the first frame of each chunk has drift 0.01 (one frame tracked)
    assert all(found[0] is None or np.allclose(found[0].points - found[0].points.round(), 0.01) for found in one)
    # and without the per-chunk reset one backend would drift across chunks (what the reset prevents)
    serial = TrackingFakeBackend()
    carried = [serial.detect_batch(frames) for frames in chunks]
    assert not same_landmarks(one, carried)


def test_results_come_back_in_chunk_order_even_when_later_chunks_finish_first():
    delays = iter([0.15, 0.0, 0.0, 0.0, 0.05, 0.0])
    lock = threading.Lock()

    class SlowFirst(TrackingFakeBackend):
        def detect_batch(self, frames_rgb):
            with lock:
                delay = next(delays, 0.0)
            time.sleep(delay)
            return [int(frames_rgb[0, 0, 0, 0])] * len(frames_rgb)

    chunks = [np.full((2, 4, 4, 3), index, np.uint8) for index in range(6)]
    with ParallelLandmarks(SlowFirst, workers=3) as pool:
        got = [(int(chunk[0, 0, 0, 0]), found[0]) for chunk, found in pool.map(chunks, frames_of=lambda c: c)]
    assert got == [(index, index) for index in range(6)]


def test_each_worker_thread_has_its_own_backend_and_close_closes_all():
    pool = ParallelLandmarks(lambda: TrackingFakeBackend(delay=0.05), workers=3)
    assert pool.backends_created == 1  # the first is built up front: a missing model fails early
    list(pool.map(fake_chunks(12), frames_of=lambda frames: frames))
    backends = list(TrackingFakeBackend.instances)
    assert 1 < len(backends) <= 3 and pool.backends_created == len(backends)
    assert all(len(b.threads) == 1 for b in backends if b.threads)  # never shared between threads
    assert len({next(iter(b.threads)) for b in backends if b.threads}) == len([b for b in backends if b.threads])
    assert sum(b.resets for b in backends) == 12  # one reset per chunk
    pool.close()
    assert all(b.closed for b in backends)
    pool.close()  # closing twice is fine


def test_chunks_in_flight_are_bounded():
    pulled = 0

    def source():
        nonlocal pulled
        for frames in fake_chunks(20):
            pulled += 1
            yield frames

    with ParallelLandmarks(lambda: TrackingFakeBackend(delay=0.01), workers=2, max_in_flight=3) as pool:
        consumed = 0
        most_ahead = 0
        for _ in pool.map(source(), frames_of=lambda frames: frames):
            consumed += 1
            most_ahead = max(most_ahead, pulled - consumed)
            time.sleep(0.02)  # a slow consumer (the GPU) must not let the reader run away
    assert consumed == 20
    assert most_ahead <= 3


def test_a_worker_error_reaches_the_caller_unchanged_and_backends_still_close():
    error = ValueError("landmarker exploded on frame 7")
    chunks = fake_chunks(6)
    with pytest.raises(ValueError) as caught:
        with ParallelLandmarks(lambda: TrackingFakeBackend(fail_on=7, error=error), workers=3) as pool:
            for _ in pool.map(chunks, frames_of=lambda frames: frames):
                pass
    assert caught.value is error
    assert TrackingFakeBackend.instances and all(b.closed for b in TrackingFakeBackend.instances)


def test_results_before_the_failing_chunk_are_delivered():
    error = RuntimeError("boom")
    chunks = fake_chunks(5)  # frame markers 1..20; 7 sits in the second chunk
    delivered = []
    with pytest.raises(RuntimeError):
        with ParallelLandmarks(lambda: TrackingFakeBackend(fail_on=7, error=error), workers=2) as pool:
            for chunk, _ in pool.map(chunks, frames_of=lambda frames: frames):
                delivered.append(chunk)
    assert len(delivered) == 1 and delivered[0] is chunks[0]


def test_backend_that_cannot_be_built_fails_at_construction():
    def missing():
        raise InvalidInputError("face landmarker model not found", path="/nowhere/face_landmarker.task")

    with pytest.raises(InvalidInputError, match="face_landmarker.task"):
        ParallelLandmarks(missing, workers=4)


@pytest.mark.parametrize("workers", [0, -1, 1.5, "2", True])
def test_bad_worker_counts_are_clear_errors(workers):
    with pytest.raises(InvalidInputError, match="cpu_workers"):
        ParallelLandmarks(TrackingFakeBackend, workers=workers)


def test_backend_factory_resolves_auto_once(monkeypatch):
    from latentsync.faces import parallel

    asked = []

    def fake_get(name, **kwargs):
        asked.append(name)
        backend = TrackingFakeBackend()
        backend.name = "mediapipe"
        return backend

    monkeypatch.setattr(parallel, "get_face_backend", fake_get)
    make = backend_factory("auto")
    make(), make(), make()
    assert asked == ["auto", "mediapipe", "mediapipe"]


def test_align_chunk_on_a_pool_matches_serial_alignment():
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 255, (2, 6, 96, 128, 3), dtype=np.uint8)
    template = np.array([[50.0, 40.0], [80.0, 40.0], [65.0, 62.0]])
    landmarks = [[FaceLandmarks(points=template + rng.normal(0, 2, (3, 2)), confidence=1.0) for _ in range(6)]
                 for _ in range(2)]
    landmarks[1][2] = None  # a frame without a face
    serial, pooled = FaceAligner(resolution=64), FaceAligner(resolution=64)
    with ThreadPoolExecutor(3) as executor:
        for chunk, found in zip(frames, landmarks):
            expected = serial.align(chunk, found)
            got = align_chunk(pooled, chunk, found, executor)
            assert np.array_equal(expected.faces, got.faces)
            assert np.array_equal(expected.matrices, got.matrices, equal_nan=True)
            assert np.array_equal(expected.has_face, got.has_face)
    assert np.array_equal(serial.state.previous_bias, pooled.state.previous_bias)  # smoothing carried alike
    with pytest.raises(InvalidInputError, match="6 frames but 5"):
        align_chunk(pooled, frames[0], landmarks[0][:5], ThreadPoolExecutor(1))


def moving_face_chunks(astronaut, n_chunks=3, frames_per_chunk=5):
    frames = []
    for i in range(n_chunks * frames_per_chunk):
        canvas, _ = place_on_canvas(astronaut, 2.0 * np.sin(i / 3), 0.8, (220 + 3 * i, 230 + i), canvas_hw=(400, 480))
        frames.append(canvas)
    frames = np.stack(frames)
    return [frames[i : i + frames_per_chunk] for i in range(0, len(frames), frames_per_chunk)]


def test_mediapipe_one_and_three_workers_give_bit_identical_landmarks(astronaut):
    pytest.importorskip("mediapipe")
    from latentsync.faces.mediapipe_backend import MediaPipeFaceBackend

    chunks = moving_face_chunks(astronaut)

    def detect_all(workers):
        with ParallelLandmarks(MediaPipeFaceBackend, workers=workers) as pool:
            return [found for _, found in pool.map(chunks, frames_of=lambda frames: frames)]

    one, three = detect_all(1), detect_all(3)
    assert all(lm is not None for found in one for lm in found)
    assert same_landmarks(one, three)
    # the same as a fresh backend per chunk (tracking starts afresh at every chunk)
    with MediaPipeFaceBackend() as backend:
        fresh = []
        for frames in chunks:
            backend.reset()
            fresh.append(backend.detect_batch(frames))
    assert same_landmarks(one, fresh)
