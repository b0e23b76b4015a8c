"""Paste generated faces back into their frames (inverse warp + feathered alpha), on the CPU.

Upstream LatentSync's `restore_video` + `AlignRestore.restore_img`, step by step, in numpy
on the calling thread (`numpy_ops`; `paste_backend: torch` runs the same steps with torch,
`torch_ops`, and agrees to float32 rounding):

* the generated face is float in [-1, 1] (the VAE decoder's scale, composed with the
  reference outside the mask; no clamp, no uint8 step). It is resized to the crop size
  (100r x 75r) with bicubic + antialias (torchvision's `resize` on a tensor);
* it is warped into the frame with the inverse matrix (kornia, bilinear, fill 127) and
  mapped to pixels with `(x / 2 + 0.5).clamp(0, 1) * 255`;
* the alpha is the crop's all-ones rectangle warped the same way (zero outside),
  eroded with a 2x2 kernel; then `w_edge = int(sqrt(sum(alpha))) // 20`, the
  alpha is eroded again with a (2 w_edge)^2 kernel and Gaussian-blurred with
  size 2 w_edge + 1 and sigma 0.3 ((size - 1) / 2 - 1) + 0.8;
* out = soft * (alpha * face) + (1 - soft) * frame, truncated to uint8.

Everything outside the blurred alpha is exactly the input frame, so the work is
done on the face's box only (plus the feathering margin): the box's sampling grid is
the whole frame's at those pixels, so the pixels are the whole-frame computation's.
"""
from __future__ import annotations

from concurrent.futures import Executor

import numpy as np
import torch

from ..errors import InvalidInputError
from . import numpy_ops
from .align import FILL_VALUE, crop_size
from .parallel import run_all
from .torch_ops import feather_parameters, paste_box

__all__ = ["feather_parameters", "face_array", "face_tensor", "paste_face", "paste_face_into", "paste_faces"]


def face_array(face_rgb: np.ndarray) -> np.ndarray:
    """(res, res, 3) face -> float32 in [-1, 1]: float faces (the decoder's scale) as they are,
    uint8 faces (0..255) mapped with x / 127.5 - 1."""
    face = np.asarray(face_rgb)
    if face.dtype == np.uint8:
        return face.astype(np.float32) / np.float32(127.5) - np.float32(1)
    if not np.issubdtype(face.dtype, np.floating):
        raise InvalidInputError(f"a face must be uint8 or float, got {face.dtype}")
    return face.astype(np.float32, copy=False)


def face_tensor(face_rgb: np.ndarray) -> torch.Tensor:
    """(res, res, 3) face -> (3, res, res) float in [-1, 1] (see `face_array`); float16 stays float16."""
    face = np.asarray(face_rgb)
    if face.dtype != np.uint8 and np.issubdtype(face.dtype, np.floating):
        return torch.from_numpy(np.ascontiguousarray(face)).permute(2, 0, 1)
    return torch.from_numpy(face_array(face)).permute(2, 0, 1)


def paste_face(frame_rgb: np.ndarray, face_rgb: np.ndarray, matrix: np.ndarray, resolution: int) -> np.ndarray:
    """A copy of `frame_rgb` with `face_rgb` (res x res x 3, or crop size: float in [-1, 1], or uint8)
    pasted back.

    `matrix` is the frame -> crop matrix the face was aligned with.
    """
    out = np.array(frame_rgb, dtype=np.uint8, copy=True)
    paste_face_into(out, face_rgb, matrix, resolution)
    return out


def paste_face_into(frame_rgb: np.ndarray, face_rgb: np.ndarray, matrix: np.ndarray, resolution: int) -> None:
    """`paste_face`, writing into `frame_rgb` (H, W, 3) uint8 in place."""
    matrix = np.asarray(matrix, dtype=np.float64)
    crop_hw = crop_size(resolution)
    if face_rgb.shape not in ((resolution, resolution, 3), (*crop_hw, 3)):
        raise InvalidInputError(f"face must be ({resolution}, {resolution}, 3) or the crop size "
                                f"({crop_hw[0]}, {crop_hw[1]}, 3), got {face_rgb.shape}")
    frame_hw = frame_rgb.shape[:2]
    box = paste_box(matrix, crop_hw, frame_hw)
    if box is None:
        return
    x0, y0, x1, y1 = box
    face = face_array(face_rgb)
    # at crop size already when the synthesizer resized it on the GPU (as upstream does)
    crop = face if face.shape[:2] == crop_hw else numpy_ops.resize_bicubic_aa(face, crop_hw)
    blended = numpy_ops.restore_box(frame_rgb[y0:y1, x0:x1], crop, matrix, frame_hw, box, FILL_VALUE,
                                    feather_parameters)
    # upstream's `.to(torch.uint8)`: truncation (values lie in 0..255)
    frame_rgb[y0:y1, x0:x1] = np.clip(blended, 0, 255).astype(np.uint8)


def paste_faces(
    frames_rgb: np.ndarray,
    faces_rgb: np.ndarray,
    matrices: np.ndarray,
    resolution: int,
    out: np.ndarray | None = None,
    *,
    executor: Executor | None = None,
) -> np.ndarray:
    """Batch paste for a chunk: frames (N, H, W, 3) uint8, faces (N, res, res, 3) float in
    [-1, 1] (or uint8), or already resized to the crop size (N, 100r, 75r, 3).

    Frames whose matrix is NaN (no face) come back unchanged. Returns `out`
    (a new array unless given; pass `out=frames_rgb` to paste in place).
    With `executor` (a thread pool; numpy and OpenCV release the GIL) the frames are pasted
    concurrently, each into its own slice of `out`: the same pixels as the serial loop.
    """
    if not (len(frames_rgb) == len(faces_rgb) == len(matrices)):
        raise InvalidInputError(f"{len(frames_rgb)} frames, {len(faces_rgb)} faces, {len(matrices)} matrices: counts differ")
    if out is None:
        out = np.array(frames_rgb, dtype=np.uint8, copy=True)
    elif out is not frames_rgb:
        out[...] = frames_rgb
    wanted = [index for index, matrix in enumerate(matrices) if np.isfinite(matrix).all()]

    def paste(index: int) -> None:
        paste_face_into(out[index], np.asarray(faces_rgb[index]), matrices[index], resolution)

    if executor is None or len(wanted) < 2:
        for index in wanted:
            paste(index)
    else:
        run_all(executor, paste, wanted)
    return out
