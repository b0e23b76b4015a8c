"""Peak host memory of streaming video I/O versus clip length.

For each length (default 1, 5 and 10 minutes) this makes a 25 fps clip and a
speech-length WAV on the fly, then, in a fresh child process, streams
decode -> (identity) -> encode + AAC mux through the same classes the runner
uses (`ScheduledFrameSource` over `plan_output_frames`, `VideoWriter`), and
records the child's peak RSS. Flat peaks across lengths mean nothing scales
with the clip. The audio runs 10 % longer than the video so the ping-pong
(backward, seeking) path is part of the measurement.

    python benchmarks/memory_streaming.py                       # 1, 5, 10 min at 160x160
    python benchmarks/memory_streaming.py --minutes 1 2 --size 256 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

FPS = 25
CHUNK = 16


def make_clip(path: Path, minutes: float, size: int) -> int:
    """Cheap synthetic clip: a moving gradient, x264 ultrafast."""
    import av

    n_frames = int(minutes * 60 * FPS)
    container = av.open(str(path), mode="w")
    stream = container.add_stream("libx264", rate=FPS)
    stream.width = stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.options = {"preset": "ultrafast", "crf": "28"}
    ramp = np.add.outer(np.arange(size), np.arange(size)).astype(np.uint8)
    for i in range(n_frames):
        image = np.stack([ramp + np.uint8(i % 256), ramp[::-1] + np.uint8(2 * i % 256), np.full_like(ramp, i % 256)], axis=-1)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = i, Fraction(1, FPS)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
    container.close()
    return n_frames


def make_wav(path: Path, seconds: float, rate: int = 16000) -> None:
    import wave

    rng = np.random.default_rng(0)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        block = rate * 10
        for start in range(0, int(seconds * rate), block):
            n = min(block, int(seconds * rate) - start)
            handle.writeframes((rng.standard_normal(n) * 3000).astype("<i2").tobytes())


def stream_once(video: str, audio: str, output: str) -> dict:
    """Child process body: the measured run."""
    from latentsync.video import ScheduledFrameSource, VideoWriter, plan_output_frames, probe_video

    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    info = probe_video(video)
    import av

    with av.open(audio) as container:
        stream = container.streams.audio[0]
        audio_seconds = float(stream.duration * stream.time_base)
    schedule = plan_output_frames(info.frame_count, info.fps, audio_seconds)
    source = ScheduledFrameSource(video, schedule, chunk_size=CHUNK)
    with VideoWriter(output, width=info.width, height=info.height, fps=info.fps, audio=audio,
                     inputs=[video, audio], preset="ultrafast") as writer:
        for chunk in source:
            writer.write_frames(chunk.frames)
    return {
        "source_frames": info.frame_count,
        "output_frames": len(schedule),
        "seconds": round(time.perf_counter() - started, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_imports_mb": round(baseline_kb / 1024, 1),
        "frames_decoded": source.decoded_frames,
        "seeks": source.seeks,
        "peak_backward_buffer_frames": source.peak_buffered_frames,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Peak RSS of streaming decode -> encode vs clip length")
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 5, 10])
    parser.add_argument("--size", type=int, default=160, help="frame side in pixels (default 160)")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "memory_streaming.json")
    parser.add_argument("--child", nargs=3, metavar=("VIDEO", "AUDIO", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(stream_once(*args.child)))
        return 0

    rows = []
    with tempfile.TemporaryDirectory(prefix="latentsync-mem-") as tmp:
        for minutes in args.minutes:
            video = Path(tmp) / f"clip_{minutes:g}min.mp4"
            audio = Path(tmp) / f"speech_{minutes:g}min.wav"
            made = time.perf_counter()
            make_clip(video, minutes, args.size)
            make_wav(audio, minutes * 60 * 1.1)
            made = time.perf_counter() - made
            child = subprocess.run(
                [sys.executable, __file__, "--child", str(video), str(audio), str(Path(tmp) / "out.mp4")],
                capture_output=True, text=True, check=True, env={**os.environ, "LOGURU_LEVEL": "WARNING"},
            )
            row = {"minutes": minutes, "size": args.size, "fps": FPS, "make_inputs_s": round(made, 1),
                   **json.loads(child.stdout.strip().splitlines()[-1])}
            rows.append(row)
            video.unlink()
            audio.unlink()
            print(f"{minutes:>5g} min  {row['output_frames']:>6} frames  peak RSS {row['peak_rss_mb']:>7.1f} MB"
                  f"  (after imports {row['rss_after_imports_mb']:.1f})  {row['seconds']:>6.1f} s"
                  f"  decoded {row['frames_decoded']}  seeks {row['seeks']}", flush=True)

    result = {
        "benchmark": "memory_streaming",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "chunk_frames": CHUNK,
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp_json = args.json.with_name(f".{args.json.name}.partial")
    tmp_json.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp_json, args.json)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
