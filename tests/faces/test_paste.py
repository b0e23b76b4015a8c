"""Paste-back: untouched outside the face, frames without a face unchanged, ROI == full frame."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from latentsync.faces import alignment_template, crop_size, paste_face, paste_faces, similarity_from_points
from latentsync.faces.paste import feather_parameters


def _setup(resolution=256, seed=0, shape=(360, 640)):
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    face = rng.integers(0, 256, (resolution, resolution, 3), dtype=np.uint8)
    points = np.array([[280.0, 150.0], [340.0, 160.0], [305.0, 190.0]])
    matrix, _ = similarity_from_points(points, alignment_template(resolution))
    return frame, face, matrix


def _reference_paste(frame, face, matrix, resolution):
    """Whole-frame feathered paste, written out step by step as upstream does it."""
    height, width = frame.shape[:2]
    crop_h, crop_w = crop_size(resolution)
    crop = cv2.resize(face.astype(np.float32), (crop_w, crop_h), interpolation=cv2.INTER_CUBIC)
    inverse = cv2.invertAffineTransform(matrix)
    face_in_frame = cv2.warpAffine(crop, inverse, (width, height), flags=cv2.INTER_LINEAR, borderValue=(127, 127, 127))
    alpha = cv2.warpAffine(np.ones((crop_h, crop_w), np.float32), inverse, (width, height), flags=cv2.INTER_LINEAR)
    alpha = cv2.erode(alpha, np.ones((2, 2), np.uint8))
    erosion, blur, sigma = feather_parameters(float(alpha.sum()))
    soft = cv2.GaussianBlur(cv2.erode(alpha, np.ones((erosion, erosion), np.uint8)), (blur, blur), sigma)[..., None]
    out = soft * (alpha[..., None] * face_in_frame) + (1 - soft) * frame
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def test_feather_parameters_follow_upstream():
    # w_edge = int(sqrt(area)) // 20; erosion 2 w_edge; blur 2 w_edge + 1
    assert feather_parameters(200 * 200) == (20, 21, 0.3 * (10 - 1) + 0.8)
    assert feather_parameters(100.0)[:2] == (0, 1)


@pytest.mark.parametrize("resolution", [256, 512])
def test_roi_paste_equals_whole_frame_paste(resolution):
    frame, face, matrix = _setup(resolution)
    fast = paste_face(frame, face, matrix, resolution)
    slow = _reference_paste(frame, face, matrix, resolution)
    assert np.abs(fast.astype(int) - slow.astype(int)).max() <= 1


def test_pixels_outside_the_face_are_untouched():
    frame, face, matrix = _setup()
    out = paste_face(frame, face, matrix, 256)
    crop_h, crop_w = crop_size(256)
    inverse = cv2.invertAffineTransform(matrix)
    footprint = cv2.warpAffine(np.ones((crop_h, crop_w), np.uint8), inverse, frame.shape[1::-1], flags=cv2.INTER_NEAREST)
    outside = cv2.dilate(footprint, np.ones((5, 5), np.uint8)) == 0
    assert outside.sum() > 0.5 * outside.size
    assert (out[outside] == frame[outside]).all()
    changed = (out != frame).any(axis=2)
    assert changed.sum() > 0.5 * footprint.sum()  # and the face did go in
    # deep inside the footprint the pixels are the face's own
    flat_face = np.empty_like(face)
    flat_face[...] = (10, 200, 30)
    flat = paste_face(frame, flat_face, matrix, 256)
    centre = np.round(inverse @ [crop_w / 2, crop_h / 2, 1]).astype(int)
    np.testing.assert_allclose(flat[centre[1], centre[0]], (10, 200, 30), atol=1)


def test_frames_without_a_face_pass_through():
    frame, face, matrix = _setup()
    frames = np.stack([frame, frame[::-1].copy(), frame])
    faces = np.stack([face] * 3)
    matrices = np.stack([matrix, np.full((2, 3), np.nan), matrix])
    out = paste_faces(frames, faces, matrices, 256)
    assert out is not frames
    assert (out[1] == frames[1]).all()
    assert not (out[0] == frames[0]).all()
    np.testing.assert_array_equal(out[0], out[2])
    # in place
    before = frames.copy()
    paste_faces(frames, faces, matrices, 256, out=frames)
    np.testing.assert_array_equal(frames, out)
    assert (frames[1] == before[1]).all()


def test_face_far_outside_the_frame_changes_nothing():
    frame, face, matrix = _setup()
    far = matrix.copy()
    far[:, 2] -= 10000
    np.testing.assert_array_equal(paste_face(frame, face, far, 256), frame)


def test_count_mismatch_is_an_error():
    from latentsync.errors import InvalidInputError

    frame, face, matrix = _setup()
    with pytest.raises(InvalidInputError, match="counts differ"):
        paste_faces(frame[None], np.stack([face, face]), matrix[None], 256)
