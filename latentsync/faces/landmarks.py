"""The face-landmark interface every backend implements, and the backend factory.

A backend turns one RGB frame into the three alignment points upstream LatentSync
uses (see ARCHITECTURE.md §4 "Faces"): the centre of the brow on the image's left,
the centre of the brow on the image's right, and the centre of the nose, in frame
pixels (x, y). Everything downstream (alignment, mask, paste-back) needs only
these three points, so backends are interchangeable.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from loguru import logger

from ..errors import InvalidInputError

# Point order of FaceLandmarks.points; the alignment template uses the same order.
POINT_NAMES = ("brow_image_left", "brow_image_right", "nose")


@dataclass(frozen=True)
class FaceLandmarks:
    """The three alignment points of one face in one frame.

    `points` is (3, 2) float64, rows in POINT_NAMES order, columns (x, y) in
    frame pixels. "Image left" is the brow with the smaller x in an upright
    frontal face (the subject's right brow). `box` is (x0, y0, x1, y1) around
    the face in frame pixels, used by backends to track the face to the next
    frame. `confidence` is the backend's score in [0, 1].
    """

    points: np.ndarray
    confidence: float
    box: tuple[float, float, float, float] | None = None
    backend: str = ""

    def __post_init__(self):
        points = np.asarray(self.points, dtype=np.float64)
        if points.shape != (3, 2):
            raise ValueError(f"FaceLandmarks.points must be (3, 2), got {points.shape}")
        object.__setattr__(self, "points", points)


class FaceBackend(ABC):
    """Finds the largest usable face in an RGB frame.

    Backends may keep tracking state between calls (the previous face's box) so
    video frames are cheap to process; `reset()` forgets it (call it between
    unrelated clips).
    """

    name: str = ""

    @abstractmethod
    def detect(self, frame_rgb: np.ndarray) -> FaceLandmarks | None:
        """Landmarks of the face in one (H, W, 3) uint8 RGB frame, or None."""

    def detect_batch(self, frames_rgb: np.ndarray | Sequence[np.ndarray]) -> list[FaceLandmarks | None]:
        """Landmarks for each frame of a chunk (N, H, W, 3), in order."""
        return [self.detect(frame) for frame in frames_rgb]

    def reset(self) -> None:
        """Forget tracking state carried from previous frames."""

    def close(self) -> None:
        """Release native resources."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def check_frame(frame_rgb: np.ndarray) -> np.ndarray:
    """Validates one RGB frame; returns it C-contiguous."""
    frame_rgb = np.asarray(frame_rgb)
    if frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3 or frame_rgb.dtype != np.uint8:
        raise InvalidInputError(
            f"a frame must be (H, W, 3) uint8 RGB, got shape {frame_rgb.shape} dtype {frame_rgb.dtype}"
        )
    return np.ascontiguousarray(frame_rgb)


BACKEND_NAMES = ("auto", "mediapipe", "insightface")
DEFAULT_BACKEND = "mediapipe"


def get_face_backend(name: str = "auto", **kwargs) -> FaceBackend:
    """Builds a face backend by name.

    "mediapipe" (the default) runs offline from PyPI packages that ship their
    model. "insightface" needs the `insightface` package and its model pack
    folder (`model_dir=`, or the environment variable LATENTSYNC_INSIGHTFACE_DIR).
    "auto" takes InsightFace (upstream's detector) when both are present and
    MediaPipe otherwise. Keyword arguments go to the backend's constructor.
    """
    if name not in BACKEND_NAMES:
        raise InvalidInputError(
            f"unknown face backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}",
            hint="the run plan's setting `face_backend`",
        )
    if name == "auto":
        from .insightface_backend import insightface_available

        model_dir = kwargs.get("model_dir") or os.environ.get("LATENTSYNC_INSIGHTFACE_DIR")
        if insightface_available(model_dir):
            name = "insightface"
        else:
            name = DEFAULT_BACKEND
            kwargs.pop("model_dir", None)
        logger.info("face backend auto -> {}", name)
    if name == "insightface":
        from .insightface_backend import InsightFaceBackend

        return InsightFaceBackend(**kwargs)
    from .mediapipe_backend import MediaPipeFaceBackend

    return MediaPipeFaceBackend(**kwargs)
