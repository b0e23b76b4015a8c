"""Face alignment: three landmarks -> similarity transform -> face crop.

Upstream LatentSync (`latentsync/utils/image_processor.py` `affine_transform`,
`latentsync/utils/affine_transform.py` `AlignRestore`), reproduced step by step:

* the three points (brow on the image's left, brow on the image's right, nose) are
  rounded to whole pixels (`np.round`) before the fit (`FaceAligner(round_landmarks=False)`
  keeps them sub-pixel; the run plan's `landmark_precision`);
* template `[[17, 20], [58, 20], [37.5, 40]] * r` with `r = 2.8 * res / 256`;
* the transform is a least-squares similarity (rotation, uniform scale,
  translation; no reflection) fitted in the Procrustes way upstream does it:
  both point sets centred and divided by their standard deviation, rotation
  from an SVD, scale = std(template) / std(points);
* "smoothing": upstream adds to the translation an exponential moving average
  (0.2 previous + 0.8 current) of the nose residual between the normalised
  template and the normalised landmarks. The state runs over the whole video,
  so here it is carried by `AlignmentState` across chunks;
* the crop is `100r x 75r` (h x w, truncated to int), warped bilinearly with
  kornia's arithmetic in float32, border fill 127, converted to uint8 by truncation
  (`torch_ops.crop_faces_torch`), then resized to res x res with OpenCV's Lanczos.

Matrices map frame pixels (x, y, 1) to crop pixels in pixel-index coordinates
(upstream's kornia and OpenCV alike).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from ..errors import InvalidInputError
from .landmarks import FaceLandmarks

# Upstream's three-point template at r = 1 (brows at y 20, nose at y 40) and the
# crop it lives in (75 wide, 100 high); both scale with r = 2.8 * res / 256.
TEMPLATE_POINTS = np.array([[17.0, 20.0], [58.0, 20.0], [37.5, 40.0]])
CROP_WIDTH_UNITS = 75
CROP_HEIGHT_UNITS = 100
FILL_VALUE = 127
SMOOTH_PREVIOUS_WEIGHT = 0.2  # upstream: bias = 0.2 * previous + 0.8 * current


def crop_ratio(resolution: int) -> float:
    return 2.8 * resolution / 256


def alignment_template(resolution: int) -> np.ndarray:
    """The (3, 2) target points in crop pixels for a `resolution` face."""
    return TEMPLATE_POINTS * crop_ratio(resolution)


def crop_size(resolution: int) -> tuple[int, int]:
    """(height, width) of the warped crop before it is resized to res x res."""
    ratio = crop_ratio(resolution)
    return int(CROP_HEIGHT_UNITS * ratio), int(CROP_WIDTH_UNITS * ratio)


def _normalise(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    centre = points.mean(axis=0)
    centred = points - centre
    # torch.std over all coordinates, unbiased (upstream's choice)
    std = float(centred.std(ddof=1))
    if not np.isfinite(std) or std <= 1e-9:
        return centre, centred, std
    return centre, centred / std, std


def similarity_from_points(points: np.ndarray, template: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Similarity (2, 3) mapping `points` onto `template`, and the nose residual.

    The residual (template nose minus landmark nose, both normalised) is what
    upstream's smoothing averages; see `smooth_translation`.
    """
    points = np.asarray(points, dtype=np.float64)
    template = np.asarray(template, dtype=np.float64)
    c1, p1, s1 = _normalise(points)
    c2, p2, s2 = _normalise(template)
    if not np.isfinite(s1) or s1 <= 1e-9:
        raise InvalidInputError(f"degenerate face landmarks (all points coincide): {points.tolist()}")
    u, _, vt = np.linalg.svd(p1.T @ p2)
    v = vt.T
    rotation = v @ u.T
    if np.linalg.det(rotation) < 0:
        v[:, -1] = -v[:, -1]
        rotation = v @ u.T
    scale = s2 / s1
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = c2 - scale * rotation @ c1
    nose_residual = p2[2] - p1[2]
    return matrix, nose_residual


def smooth_translation(matrix: np.ndarray, residual: np.ndarray, previous: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Upstream's translation smoothing; returns (matrix, state for the next frame).

    bias = residual on the first frame, else 0.2 * previous + 0.8 * residual;
    the bias is added to the translation column.
    """
    bias = residual if previous is None else SMOOTH_PREVIOUS_WEIGHT * previous + (1 - SMOOTH_PREVIOUS_WEIGHT) * residual
    smoothed = matrix.copy()
    smoothed[:, 2] += bias
    return smoothed, bias


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine matrix."""
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def crop_face(frame_rgb: np.ndarray, matrix: np.ndarray, resolution: int) -> np.ndarray:
    """The (100r, 75r, 3) uint8 crop of one frame under `matrix` (frame -> crop), before the
    resize: upstream's `align_warp_face` (kornia bilinear in float32, fill 127, truncation).
    numpy, one thread (`numpy_ops`); `torch_ops.crop_faces_torch` is the same on tensors."""
    from .numpy_ops import crop_face as crop

    return crop(np.asarray(frame_rgb), np.asarray(matrix, dtype=np.float64), crop_size(resolution), FILL_VALUE)


def warp_face(frame_rgb: np.ndarray, matrix: np.ndarray, resolution: int) -> np.ndarray:
    """The res x res uint8 face of one frame under `matrix` (frame -> crop): upstream's crop,
    resized with OpenCV's Lanczos-4 as upstream's `affine_transform` does."""
    return resize_crop(crop_face(frame_rgb, matrix, resolution), resolution)


def resize_crop(crop: np.ndarray, resolution: int) -> np.ndarray:
    """A (100r, 75r, 3) uint8 crop -> the res x res face the model gets (upstream: cv2 Lanczos-4)."""
    return cv2.resize(crop, (resolution, resolution), interpolation=cv2.INTER_LANCZOS4)


def crop_to_face_matrix(resolution: int) -> np.ndarray:
    """(2, 3) matrix from crop pixels to res x res face pixels (the resize as an affine).

    cv2.resize maps pixel centres: x_out = (x_in + 0.5) * sx - 0.5.
    """
    height, width = crop_size(resolution)
    sx, sy = resolution / width, resolution / height
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])


def frame_to_face_matrix(matrix: np.ndarray, resolution: int) -> np.ndarray:
    """Compose frame -> crop with crop -> res x res face: one (2, 3) matrix."""
    resize = np.vstack([crop_to_face_matrix(resolution), [0, 0, 1]])
    return (resize @ np.vstack([matrix, [0, 0, 1]]))[:2]


@dataclass
class AlignmentState:
    """What smoothing carries from one chunk to the next (upstream's `p_bias`)."""

    previous_bias: np.ndarray | None = None

    def to_dict(self) -> dict:
        return {"previous_bias": None if self.previous_bias is None else self.previous_bias.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "AlignmentState":
        bias = data.get("previous_bias")
        return cls(None if bias is None else np.asarray(bias, dtype=np.float64))


@dataclass
class AlignedFaces:
    """A chunk of aligned faces.

    faces: (N, res, res, 3) uint8 RGB crops; a frame without a face gets a crop
    filled with 127 (so batches keep their shape). matrices: (N, 2, 3) float64
    frame -> crop (before the resize to res), NaN where there is no face.
    has_face: (N,) bool.
    """

    faces: np.ndarray
    matrices: np.ndarray
    has_face: np.ndarray
    resolution: int

    @property
    def missing(self) -> list[int]:
        """Indices of frames (within the chunk) without a usable face."""
        return np.flatnonzero(~self.has_face).tolist()


@dataclass
class FaceAligner:
    """Aligns chunks of frames; the smoothing state crosses chunk boundaries.

    Feeding a clip in chunks of any size gives the same matrices as feeding it
    whole. Frames without a face leave the state untouched (the next face is
    smoothed against the last one seen). `round_landmarks`: round the three points
    to whole pixels before the fit, as upstream (False keeps them sub-pixel).
    """

    resolution: int
    smooth: bool = True
    state: AlignmentState = field(default_factory=AlignmentState)
    round_landmarks: bool = True

    def __post_init__(self):
        if self.resolution <= 0:
            raise InvalidInputError(f"face resolution must be positive, got {self.resolution}")
        self.template = alignment_template(self.resolution)

    def reset(self) -> None:
        self.state = AlignmentState()

    def matrix_for(self, landmarks: FaceLandmarks | np.ndarray) -> np.ndarray:
        """Frame -> crop matrix for one face, advancing the smoothing state."""
        points = landmarks.points if isinstance(landmarks, FaceLandmarks) else np.asarray(landmarks, np.float64)
        if self.round_landmarks:
            points = np.round(points)  # upstream: landmarks3 = np.round(...) (half to even)
        matrix, residual = similarity_from_points(points, self.template)
        if not self.smooth:
            return matrix
        matrix, self.state.previous_bias = smooth_translation(matrix, residual, self.state.previous_bias)
        return matrix

    def matrices_for(self, landmarks: Sequence[FaceLandmarks | None]) -> np.ndarray:
        """(N, 2, 3) matrices, NaN rows for frames without landmarks."""
        matrices = np.full((len(landmarks), 2, 3), np.nan)
        for index, face in enumerate(landmarks):
            if face is not None:
                matrices[index] = self.matrix_for(face)
        return matrices

    def align(self, frames_rgb: np.ndarray, landmarks: Sequence[FaceLandmarks | None]) -> AlignedFaces:
        """Warp each frame of a chunk (N, H, W, 3) uint8 to its res x res face crop."""
        if len(frames_rgb) != len(landmarks):
            raise InvalidInputError(f"{len(frames_rgb)} frames but {len(landmarks)} landmark entries")
        matrices = self.matrices_for(landmarks)
        return AlignedFaces(
            faces=warp_faces(frames_rgb, matrices, self.resolution),
            matrices=matrices,
            has_face=np.array([lm is not None for lm in landmarks], dtype=bool),
            resolution=self.resolution,
        )


def warp_faces(frames_rgb: np.ndarray, matrices: np.ndarray, resolution: int) -> np.ndarray:
    """Batch `warp_face`; frames whose matrix is NaN get a crop of 127."""
    faces = np.full((len(frames_rgb), resolution, resolution, 3), FILL_VALUE, dtype=np.uint8)
    for index, (frame, matrix) in enumerate(zip(frames_rgb, matrices)):
        if np.isfinite(matrix).all():
            faces[index] = warp_face(frame, matrix, resolution)
    return faces
