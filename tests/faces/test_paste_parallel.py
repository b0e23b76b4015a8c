"""Paste-back on a thread pool: the same pixels as the serial loop, every frame on a pool thread, errors raised."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from latentsync.errors import InvalidInputError
from latentsync.faces import alignment_template, paste_faces, similarity_from_points
from latentsync.faces import paste as paste_module


def chunk(n=7, resolution=256, shape=(360, 640), seed=1):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n, *shape, 3), dtype=np.uint8)
    faces = rng.integers(0, 256, (n, resolution, resolution, 3), dtype=np.uint8)
    matrices = np.empty((n, 2, 3))
    for i in range(n):
        points = np.array([[280.0, 150.0], [340.0, 160.0], [305.0, 190.0]]) + rng.normal(0, 8, 2)
        matrices[i], _ = similarity_from_points(points, alignment_template(resolution))
    matrices[3] = np.nan  # no face: passes through
    return frames, faces, matrices


def test_pooled_paste_equals_serial_paste():
    frames, faces, matrices = chunk()
    serial = paste_faces(frames, faces, matrices, 256)
    with ThreadPoolExecutor(3) as executor:
        pooled = paste_faces(frames, faces, matrices, 256, executor=executor)
        in_place = frames.copy()
        returned = paste_faces(in_place, faces, matrices, 256, out=in_place, executor=executor)
    assert np.array_equal(serial, pooled) and np.array_equal(serial, in_place) and returned is in_place
    assert np.array_equal(pooled[3], frames[3])
    assert not np.array_equal(pooled[0], frames[0])


def test_pooled_paste_runs_every_face_on_the_pool(monkeypatch):
    frames, faces, matrices = chunk()
    seen: list[str] = []
    real = paste_module.paste_face_into

    def recording(*args, **kwargs):
        seen.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(paste_module, "paste_face_into", recording)
    with ThreadPoolExecutor(2, thread_name_prefix="paste-test") as executor:
        paste_faces(frames, faces, matrices, 256, executor=executor)
    assert len(seen) == 6 and all(name.startswith("paste-test") for name in seen)
    seen.clear()
    paste_faces(frames, faces, matrices, 256)
    assert seen == [threading.current_thread().name] * 6


def test_a_bad_face_in_a_pooled_paste_is_raised():
    frames, faces, matrices = chunk(resolution=256)
    with ThreadPoolExecutor(3) as executor, pytest.raises(InvalidInputError, match=r"face must be \(128, 128, 3\)"):
        paste_faces(frames, faces, matrices, 128, executor=executor)
