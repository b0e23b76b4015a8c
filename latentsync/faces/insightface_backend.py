"""InsightFace backend: upstream LatentSync's own detector, for users with its model pack.

Upstream runs `FaceAnalysis(allowed_modules=["detection", "landmark_2d_106"])`
with detection size 512 and keeps the largest face whose box is at least 50 x 80
pixels, with width / height in 0.2..1.5 and detection score >= 0.5. Its three
points from the 106 landmarks: mean of 43, 48, 49, 51, 50 (brow, image left),
mean of 101..105 (brow, image right), mean of 74, 77, 83, 86 (nose).

The model pack is a folder holding the ONNX files (e.g. `.../models/buffalo_l`
with `det_10g.onnx` and `2d106det.onnx`); it must exist beforehand, because
insightface would otherwise try to download it.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
from loguru import logger

from ..errors import InvalidInputError
from .landmarks import FaceBackend, FaceLandmarks, check_frame

BROW_IMAGE_LEFT = (43, 48, 49, 51, 50)
BROW_IMAGE_RIGHT = (101, 102, 103, 104, 105)
NOSE = (74, 77, 83, 86)
DETECT_SIZE = 512
MIN_BOX_WIDTH, MIN_BOX_HEIGHT = 50, 80
ASPECT_RANGE = (0.2, 1.5)
ENV_MODEL_DIR = "LATENTSYNC_INSIGHTFACE_DIR"


def alignment_points(landmark_2d_106) -> np.ndarray:
    """The three alignment points of InsightFace's 106 landmarks, as upstream's
    `affine_transform` takes them: `np.mean` of each group in the landmarks' own dtype
    (float32), before its `np.round`. Returns (3, 2) float64."""
    landmarks = np.asarray(landmark_2d_106)
    groups = (list(BROW_IMAGE_LEFT), list(BROW_IMAGE_RIGHT), list(NOSE))
    return np.stack([np.mean(landmarks[group], axis=0) for group in groups]).astype(np.float64)


def _model_dir_problem(model_dir: Path) -> str | None:
    if not model_dir.is_dir():
        return "folder does not exist"
    names = {path.name for path in model_dir.glob("*.onnx")}
    if "2d106det.onnx" not in names:
        return "no 2d106det.onnx (the 106-landmark model) in it"
    if not any(name.startswith(("det_", "scrfd")) for name in names):
        return "no face detection model (det_*.onnx) in it"
    return None


def insightface_available(model_dir: str | os.PathLike | None) -> bool:
    """True when `insightface` is importable and `model_dir` holds its models."""
    if model_dir is None or importlib.util.find_spec("insightface") is None:
        return False
    return _model_dir_problem(Path(model_dir)) is None


class InsightFaceBackend(FaceBackend):
    """InsightFace detection + 106 landmarks, upstream's face selection.

    Args:
        model_dir: the model pack folder (default: $LATENTSYNC_INSIGHTFACE_DIR).
        providers: onnxruntime execution providers (default: CUDA when
            onnxruntime offers it, else CPU).
        min_score: detection score threshold (upstream 0.5).
    """

    name = "insightface"

    def __init__(self, model_dir: str | os.PathLike | None = None, *, providers: list[str] | None = None, min_score: float = 0.5):
        model_dir = model_dir or os.environ.get(ENV_MODEL_DIR)
        if model_dir is None:
            raise InvalidInputError(
                "the insightface face backend needs its model pack folder",
                hint=f"pass model_dir= or set {ENV_MODEL_DIR} to the folder with det_10g.onnx and 2d106det.onnx",
            )
        model_dir = Path(model_dir).expanduser().resolve()
        problem = _model_dir_problem(model_dir)
        if problem is not None:
            raise InvalidInputError(
                f"insightface model pack unusable: {problem}",
                path=str(model_dir),
                hint="LatentSync's checkpoints/auxiliary/models/buffalo_l holds the expected files",
            )
        try:
            from insightface.app import FaceAnalysis
        except ImportError as error:
            raise InvalidInputError(
                "the insightface face backend needs the `insightface` and `onnxruntime` packages",
                hint="pip install 'latentsync-runner[insightface]'",
            ) from error
        if providers is None:
            import onnxruntime

            available = onnxruntime.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        # FaceAnalysis reads <root>/models/<name>
        self._app = FaceAnalysis(
            name=model_dir.name,
            root=str(model_dir.parent.parent),
            allowed_modules=["detection", "landmark_2d_106"],
            providers=providers,
        )
        ctx_id = 0 if "CUDAExecutionProvider" in providers else -1
        self._app.prepare(ctx_id=ctx_id, det_size=(DETECT_SIZE, DETECT_SIZE))
        self.min_score = min_score
        logger.debug("insightface face backend: {} ({})", model_dir, providers)

    def detect(self, frame_rgb: np.ndarray) -> FaceLandmarks | None:
        frame = check_frame(frame_rgb)
        # insightface expects OpenCV's BGR order
        faces = self._app.get(np.ascontiguousarray(frame[..., ::-1]))
        best, best_area = None, 0.0
        for face in faces:
            x0, y0, x1, y1 = (float(v) for v in face.bbox)
            width, height = x1 - x0, y1 - y0
            if width < MIN_BOX_WIDTH or height < MIN_BOX_HEIGHT:
                continue
            if not ASPECT_RANGE[0] <= width / height <= ASPECT_RANGE[1]:
                continue
            if face.det_score < self.min_score:
                continue
            if width * height > best_area:
                best, best_area = face, width * height
        if best is None:
            return None
        points = alignment_points(best.landmark_2d_106)
        return FaceLandmarks(points=points, confidence=float(best.det_score), box=tuple(float(v) for v in best.bbox), backend=self.name)
