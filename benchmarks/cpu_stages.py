"""CPU stages per frame at 1280x720: landmarks + alignment, paste-back, paste-back + encode, by cpu_workers.

The two per-frame CPU stages of the streaming pipeline run beside the GPU:
"faces" (MediaPipe landmarks on cpu_workers threads, one backend each, then the
sequential alignment matrices and the face warps on a pool) and "paste"
(feathered paste-back on a pool, then libx264). For 0.5 s per video-second at
25 fps each must finish 25 frames in under 0.5 s, i.e. 20 ms per frame.
"both" runs the two stages at once on their own threads, as the pipeline does,
and reports the wall time per frame of the pair (they compete for the cores).

Frames: the astronaut photo (scikit-image, no download), gently moving on a
1280x720 canvas, as `benchmarks/e2e_pipeline.py` makes its clip. Nothing but
the CPU is used.

    python benchmarks/cpu_stages.py                        # workers 1,2,4, 64 frames
    python benchmarks/cpu_stages.py --workers 1,2,4,6,8 --frames 128 --json benchmarks/results/cpu_stages.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latentsync.faces import FaceAligner, paste_faces  # noqa: E402
from latentsync.faces.parallel import ParallelLandmarks, align_chunk, backend_factory  # noqa: E402
from latentsync.facts import usable_cpu_cores  # noqa: E402
from latentsync.video import VideoWriter  # noqa: E402

FPS = 25
CHUNK = 16
RESOLUTION = 512  # LatentSync 1.6 face crops


def synthetic_frames(n: int, width: int, height: int) -> np.ndarray:
    """(n, height, width, 3) uint8: the astronaut's animated face on a plain canvas."""
    import cv2

    from examples.make_quickstart_assets import animated_frames

    faces = animated_frames(n)
    side = int(height * 0.6)
    frames = np.empty((n, height, width, 3), np.uint8)
    for i, face in enumerate(faces):
        canvas = frames[i]
        canvas[...] = 90
        canvas[:, :, 2] = 120
        x = width // 2 - side // 2 + int(40 * math.sin(i / 20))
        y = height // 2 - side // 2
        canvas[y : y + side, x : x + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    return frames


def _encoder_settings() -> dict:
    """The output encoder settings a run uses by default (the rules' encoder_crf and encoder_preset)."""
    from latentsync.testing.pipeline_helpers import default_settings

    defaults = default_settings()
    return {"crf": defaults.encoder_crf, "preset": defaults.encoder_preset}


ENCODER = _encoder_settings()


def chunks_of(frames: np.ndarray) -> list[np.ndarray]:
    return [frames[i : i + CHUNK] for i in range(0, len(frames), CHUNK)]


class FacesStage:
    """Landmarks on `workers` threads + alignment with warps on a pool, as the pipeline's
    ParallelCpuStages does it (latentsync.pipeline.lipsync)."""

    def __init__(self, workers: int, face_backend: str):
        self.workers = workers
        self.landmarks = ParallelLandmarks(backend_factory(face_backend), workers=workers)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="frame-work") if workers > 1 else None

    def run(self, chunks: list[np.ndarray]):
        aligner = FaceAligner(resolution=RESOLUTION)
        return [align_chunk(aligner, frames, found, self.pool)
                for frames, found in self.landmarks.map(chunks, frames_of=lambda frames: frames)]

    def close(self):
        self.landmarks.close()
        if self.pool is not None:
            self.pool.shutdown()


class PasteStage:
    """Paste-back on a pool of `workers` threads, optionally encoding with libx264 (the writer's settings)."""

    def __init__(self, workers: int):
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="frame-work") if workers > 1 else None

    def run(self, chunks, aligned, encode_to: Path | None, encoder_options=None):
        height, width = chunks[0].shape[1:3]
        writer = VideoWriter(encode_to, width=width, height=height, fps=Fraction(FPS), **ENCODER,
                             encoder_options=encoder_options) if encode_to else None
        try:
            for frames, faces in zip(chunks, aligned):
                # inverted crops stand in for the model's output (any picture costs the same)
                out = paste_faces(frames, 255 - faces.faces, faces.matrices, RESOLUTION, executor=self.pool)
                if writer is not None:
                    writer.write_frames(out)
        finally:
            if writer is not None:
                writer.close()
                encode_to.unlink(missing_ok=True)

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_seconds() -> float:
    return time.process_time()


def measure(workers: int, frames: np.ndarray, face_backend: str, folder: Path) -> dict:
    chunks = chunks_of(frames)
    n = len(frames)
    faces = FacesStage(workers, face_backend)
    paste = PasteStage(workers)
    try:
        faces.run(chunks[:workers])  # warm-up: every thread builds its backend
        cpu0 = cpu_seconds()
        aligned_holder: list = []
        faces_s = timed(lambda: aligned_holder.extend(faces.run(chunks)))
        faces_cpu = cpu_seconds() - cpu0
        aligned = aligned_holder
        found = int(sum(a.has_face.sum() for a in aligned))
        paste.run(chunks[:1], aligned[:1], None)  # warm-up
        paste_s = timed(lambda: paste.run(chunks, aligned, None))
        encode_s = timed(lambda: encode_only(frames, folder / "enc.mp4"))
        paste_encode_s = timed(lambda: paste.run(chunks, aligned, folder / "pe.mp4"))

        # both stages at once, each on its own thread, as in the pipeline
        errors: list[BaseException] = []

        def guarded(fn):
            def run():
                try:
                    fn()
                except BaseException as error:  # noqa: BLE001 - reported below
                    errors.append(error)
            return run

        threads = [threading.Thread(target=guarded(lambda: faces.run(chunks))),
                   threading.Thread(target=guarded(lambda: paste.run(chunks, aligned, folder / "both.mp4")))]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        both_s = time.perf_counter() - start
        if errors:
            raise errors[0]
    finally:
        faces.close()
        paste.close()
    per_frame = lambda seconds: 1000.0 * seconds / n  # noqa: E731
    per_video_second = lambda seconds: seconds / (n / FPS)  # noqa: E731
    return {
        "workers": workers,
        "frames": n,
        "frames_with_face": found,
        "faces_ms_per_frame": per_frame(faces_s),
        "faces_cpu_ms_per_frame": per_frame(faces_cpu),
        "paste_ms_per_frame": per_frame(paste_s),
        "encode_ms_per_frame": per_frame(encode_s),
        "paste_encode_ms_per_frame": per_frame(paste_encode_s),
        "both_ms_per_frame": per_frame(both_s),
        "faces_s_per_video_s": per_video_second(faces_s),
        "paste_encode_s_per_video_s": per_video_second(paste_encode_s),
        "both_s_per_video_s": per_video_second(both_s),
    }


def encode_only(frames: np.ndarray, path: Path, encoder_options=None) -> None:
    """The writer alone (RGB -> yuv420p, libx264, mp4), as the pipeline's sink runs it."""
    height, width = frames.shape[1:3]
    try:
        with VideoWriter(path, width=width, height=height, fps=Fraction(FPS), **ENCODER,
                         encoder_options=encoder_options) as writer:
            writer.write_frames(frames)
    finally:
        path.unlink(missing_ok=True)


def x264_threads_effect(frames: np.ndarray, folder: Path) -> dict:
    """Encode alone with x264 pinned to one thread (what PyAV's default thread_type gave) vs the writer's default."""
    one = timed(lambda: encode_only(frames, folder / "x1.mp4", {"threads": "1"}))
    auto = timed(lambda: encode_only(frames, folder / "xa.mp4"))
    return {"encode_1_thread_ms_per_frame": 1000 * one / len(frames),
            "encode_default_ms_per_frame": 1000 * auto / len(frames)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2,4", help="comma-separated cpu_workers values")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--face-backend", default="mediapipe")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    workers_list = [int(w) for w in args.workers.split(",") if w.strip()]
    frames = synthetic_frames(args.frames, args.width, args.height)
    rows = []
    with tempfile.TemporaryDirectory(prefix="cpu-stages-") as tmp:
        folder = Path(tmp)
        encode = x264_threads_effect(frames, folder)
        for workers in workers_list:
            rows.append(measure(workers, frames, args.face_backend, folder))
            print(f"  workers {workers}: done", file=sys.stderr, flush=True)

    result = {
        "date": time.strftime("%Y-%m-%d"),
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "usable_cpu_cores": usable_cpu_cores(),
        "os_cpu_count": os.cpu_count(),
        "size": [args.width, args.height],
        "frames": args.frames,
        "face_backend": args.face_backend,
        "x264": encode,
        "encoder": ENCODER,
        "rows": rows,
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
    }
    print(f"{args.width}x{args.height}, {args.frames} frames, {usable_cpu_cores()} usable cores, "
          f"{args.face_backend}; ms per frame (budget for 0.5 s per video-second: 20)")
    header = ("workers", "faces", "faces cpu", "paste", "encode", "paste+enc", "both", "faces s/vs", "paste+enc s/vs",
              "both s/vs")
    print("  ".join(f"{h:>10}" for h in header))
    for row in rows:
        values = (row["workers"], row["faces_ms_per_frame"], row["faces_cpu_ms_per_frame"], row["paste_ms_per_frame"],
                  row["encode_ms_per_frame"], row["paste_encode_ms_per_frame"], row["both_ms_per_frame"],
                  row["faces_s_per_video_s"], row["paste_encode_s_per_video_s"], row["both_s_per_video_s"])
        print("  ".join(f"{v:>10}" if isinstance(v, int) else f"{v:>10.2f}" for v in values))
    print(f"x264 alone: {encode['encode_1_thread_ms_per_frame']:.1f} ms/frame on one thread, "
          f"{encode['encode_default_ms_per_frame']:.1f} with the writer's frame threads")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        temp = args.json.with_name(args.json.name + ".partial")
        temp.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(temp, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
