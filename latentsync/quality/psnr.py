"""Lower-face PSNR between two videos of the same frames: how far a fast setting's output drifts
from the slow one's (`latentsync-bench --quality`: each goal against the `quality` goal's output).

    psnr = lower_face_psnr("quality.mp4", "preview.mp4")   # dB; inf when the regions are identical

The region is fixed, the one `benchmarks/e2e_pipeline.py` measures: rows 35-85 % and columns
30-70 % of every frame, where a framed talking head's mouth and jaw sit. The mean squared error is
averaged over frame pairs (up to the shorter video's end), then turned into dB against 255.
It says nothing about lip sync (the StableSyncNet scores do); it says how much the pixels moved.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

ROWS = (0.35, 0.85)  # fraction of the frame height
COLUMNS = (0.30, 0.70)  # fraction of the frame width
CHUNK_FRAMES = 32


def lower_face_region(height: int, width: int) -> tuple[slice, slice]:
    """The rows and columns compared in a frame of this size."""
    return (slice(int(height * ROWS[0]), int(height * ROWS[1])),
            slice(int(width * COLUMNS[0]), int(width * COLUMNS[1])))


def _frames(path: str | Path):
    from ..video.reader import VideoReader

    with VideoReader(path) as reader:
        for chunk in reader.chunks(CHUNK_FRAMES):
            yield from chunk.frames


def lower_face_psnr(reference: str | Path, candidate: str | Path) -> float:
    """PSNR (dB) of `candidate`'s lower-face region against `reference`'s; `inf` when identical.
    Raises ValueError when the videos have no frame pair or frames of different sizes."""
    errors = []
    for first, second in zip(_frames(reference), _frames(candidate)):
        if first.shape != second.shape:
            raise ValueError(f"frame sizes differ: {first.shape} and {second.shape} ({reference}, {candidate})")
        rows, columns = lower_face_region(*first.shape[:2])
        difference = first[rows, columns].astype(np.float64) - second[rows, columns].astype(np.float64)
        errors.append(float(np.mean(difference ** 2)))
    if not errors:
        raise ValueError(f"no frame pairs to compare ({reference}, {candidate})")
    mse = float(np.mean(errors))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)
