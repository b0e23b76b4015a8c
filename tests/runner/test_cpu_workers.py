"""`cpu_workers` reaches the pipeline: N face backends on N threads, paste-back on a pool, same output."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from latentsync.errors import InvalidInputError
from latentsync.faces import paste as paste_module
from latentsync.faces import parallel as parallel_module
from latentsync.jobs import JobSpec
from latentsync.faces.landmarks import get_face_backend as real_get_face_backend
from latentsync.testing.pipeline_helpers import default_settings, run_file_clip, unchecked_settings

real_paste_face_into = paste_module.paste_face_into

ASSETS = Path(__file__).resolve().parents[2] / "examples" / "assets"
SETTINGS = dict(
    device="cpu", precision="fp32", resolution=128, scheduler="ddim", steps=1, guidance_scale=1.0,
    cfg_mode="off", cfg_fraction=1.0, deepcache=False, deepcache_interval=3, deepcache_branch=0,
    compile="off", cuda_graphs=False, frames_per_batch=16, chunk_frames=16, vae_slicing=False,
    vae_tiling=False, vae_batch=16, attention_backend="auto", channels_last=False, face_backend="mediapipe",
    seed=1,
)


def decoded(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def instrumented_run(tmp_path: Path, monkeypatch, workers: int):
    """Run the quickstart with `workers`; record backends built, threads that detected and pasted."""
    backends: list = []
    detect_threads: set[str] = set()
    paste_threads: list[str] = []
    lock = threading.Lock()

    def counting_get(name, **kwargs):
        backend = real_get_face_backend(name, **kwargs)
        real_detect_batch = backend.detect_batch
        first = [True]

        def detect_batch(frames):
            with lock:
                detect_threads.add(threading.current_thread().name)
            if first[0]:
                # hold each new backend's first chunk until all `workers` exist, so the pool
                # has to start every thread (the quickstart's 5 chunks would allow it anyway)
                first[0] = False
                deadline = time.monotonic() + 10
                while len(backends) < workers and time.monotonic() < deadline:
                    time.sleep(0.01)
            return real_detect_batch(frames)

        backend.detect_batch = detect_batch
        with lock:
            backends.append(backend)
        return backend

    def recording_paste(*args, **kwargs):
        with lock:
            paste_threads.append(threading.current_thread().name)
        return real_paste_face_into(*args, **kwargs)

    monkeypatch.setattr(parallel_module, "get_face_backend", counting_get)
    monkeypatch.setattr(paste_module, "paste_face_into", recording_paste)
    spec = JobSpec(video=ASSETS / "quickstart.mp4", audio=ASSETS / "quickstart_speech.wav",
                   output=tmp_path / f"workers{workers}.mp4", weights="random-small")
    result = run_file_clip(spec, default_settings(**dict(SETTINGS, steps=1, cpu_workers=workers)))
    return spec, result, backends, detect_threads, paste_threads


def test_cpu_workers_sets_threads_and_backends_and_keeps_the_output(tmp_path, monkeypatch):
    spec1, result1, backends1, detect1, paste1 = instrumented_run(tmp_path, monkeypatch, 1)
    spec3, result3, backends3, detect3, paste3 = instrumented_run(tmp_path, monkeypatch, 3)

    assert len(backends1) == 1 and len(detect1) == 1
    assert len(backends3) == 3 and len(detect3) == 3
    assert all(name.startswith("landmarks") for name in detect1 | detect3)
    # one worker pastes on the sink thread; three paste on the shared frame pool
    assert result1.frames_total == result3.frames_total == 77  # the quickstart's output (upstream's length)
    assert len(paste1) == len(paste3) == 77
    assert set(paste1) == {"paste-encode"}
    assert {name.split("_")[0] for name in paste3} == {"frame-work"} and len(set(paste3)) > 1
    # every backend is closed at the end (a closed MediaPipe backend has run its finalizer)
    assert all(not backend._finalizer.alive for backend in backends1 + backends3)

    assert result1.frames_without_face == result3.frames_without_face == []
    assert np.array_equal(decoded(spec1.output), decoded(spec3.output))
    assert result3.timings["landmarks_busy"] > 0 and result3.timings["decode_and_faces"] > 0


@pytest.mark.parametrize("bad", [0, -2])
def test_bad_cpu_workers_is_a_clear_error(tmp_path, bad):
    spec = JobSpec(video=ASSETS / "quickstart.mp4", audio=ASSETS / "quickstart_speech.wav",
                   output=tmp_path / "o.mp4", weights="random-small")
    # refused with the plan's settings, before any work ...
    with pytest.raises(InvalidInputError, match="cpu_workers"):
        run_file_clip(spec, dict(SETTINGS, steps=1, cpu_workers=bad))
    # ... and by the pipeline itself when handed unchecked settings
    with pytest.raises(InvalidInputError, match="cpu_workers"):
        run_file_clip(spec, unchecked_settings(**dict(SETTINGS, steps=1, cpu_workers=bad)))
    assert not list(tmp_path.iterdir())
