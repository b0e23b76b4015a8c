"""Faces: landmark backends, alignment, the fixed mask, paste-back.

    backend = get_face_backend("auto")            # or "mediapipe", "insightface"
    aligner = FaceAligner(resolution=512)          # keep one per clip: carries smoothing
    landmarks = backend.detect_batch(chunk)        # chunk: (N, H, W, 3) uint8 RGB
    aligned = aligner.align(chunk, landmarks)      # faces (N, 512, 512, 3), matrices, has_face
    ... model repaints aligned.faces where face_mask(512) == 0 ...
    frames_out = paste_faces(chunk, new_faces, aligned.matrices, 512)

Frames without a face (`aligned.missing`) pass through `paste_faces` unchanged.
`torch_ops` has tensor versions of the warp and the paste (not imported here).
"""
from .align import (
    AlignedFaces,
    AlignmentState,
    FaceAligner,
    alignment_template,
    crop_size,
    invert_affine,
    similarity_from_points,
    smooth_translation,
    warp_face,
    warp_faces,
)
from .landmarks import BACKEND_NAMES, DEFAULT_BACKEND, FaceBackend, FaceLandmarks, get_face_backend
from .mask import face_mask
from .paste import paste_face, paste_faces

__all__ = [
    "AlignedFaces",
    "AlignmentState",
    "BACKEND_NAMES",
    "DEFAULT_BACKEND",
    "FaceAligner",
    "FaceBackend",
    "FaceLandmarks",
    "alignment_template",
    "crop_size",
    "face_mask",
    "get_face_backend",
    "invert_affine",
    "paste_face",
    "paste_faces",
    "similarity_from_points",
    "smooth_translation",
    "warp_face",
    "warp_faces",
]
