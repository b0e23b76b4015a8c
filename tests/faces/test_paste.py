"""Paste-back: upstream's arithmetic, the box equals the whole frame, untouched outside the face,
frames without a face unchanged.

Equality with upstream's own output is in test_pipeline_parity.py (needs ../shared).
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from latentsync.faces import alignment_template, crop_size, paste_face, paste_faces, similarity_from_points
from latentsync.faces import torch_ops
from latentsync.faces.paste import feather_parameters


def _setup(resolution=256, seed=0, shape=(360, 640)):
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    face = rng.uniform(-1.02, 1.02, (resolution, resolution, 3)).astype(np.float32)
    points = np.array([[280.0, 150.0], [340.0, 160.0], [305.0, 190.0]])
    matrix, _ = similarity_from_points(points, alignment_template(resolution))
    return frame, face, matrix


def _whole_frame_paste(frame, face, matrix, resolution):
    """Upstream's restore_video + restore_img on the whole frame, written out step by step:
    F.affine_grid over the whole frame, OpenCV's erosion as upstream runs it, no boxes."""
    height, width = frame.shape[:2]
    crop_h, crop_w = crop_size(resolution)
    face_t = torch.from_numpy(face).permute(2, 0, 1)[None].float()
    crop = F.interpolate(face_t, size=(crop_h, crop_w), mode="bicubic", antialias=True, align_corners=False)
    affine = torch.from_numpy(matrix).float()[None]
    inverse = torch_ops._inverse(torch_ops._homography(affine))[:, :2, :3]
    theta = torch_ops._sampling_theta(inverse, (crop_h, crop_w), (height, width))
    grid = F.affine_grid(theta, [1, 3, height, width], align_corners=True)
    sampled = F.grid_sample(crop, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    ones = F.grid_sample(torch.ones(1, 1, crop_h, crop_w), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=True)
    inv_face = ((sampled + (1 - ones) * 127) / 2 + 0.5).clamp(0, 1) * 255
    alpha = torch_ops._erode(ones, 2)
    area = torch.sum(alpha.float())
    w_edge = int(area**0.5) // 20
    centre = cv2.erode(alpha[0, 0].numpy(), np.ones((2 * w_edge, 2 * w_edge), np.uint8))
    soft = torch_ops._gaussian_blur(torch.from_numpy(centre)[None, None], 2 * w_edge + 1,
                                    0.3 * ((2 * w_edge) * 0.5 - 1) + 0.8)
    image = torch.from_numpy(frame).permute(2, 0, 1).float()
    out = soft[0] * (alpha[0] * inv_face[0]) + (1 - soft[0]) * image
    return out.to(torch.uint8).permute(1, 2, 0).numpy()


def test_feather_parameters_follow_upstream():
    # w_edge = int(sqrt(area)) // 20; erosion 2 w_edge; blur 2 w_edge + 1
    assert feather_parameters(200 * 200) == (20, 21, 0.3 * (10 - 1) + 0.8)
    assert feather_parameters(100.0)[:2] == (0, 1)


@pytest.mark.parametrize("resolution", [256, 512])
def test_box_paste_equals_whole_frame_paste(resolution):
    frame, face, matrix = _setup(resolution)
    whole = _whole_frame_paste(frame, face, matrix, resolution)
    # the torch path on its box: the whole frame's grid at those pixels, bit for bit
    boxed = torch_ops.paste_faces_torch(torch.from_numpy(frame).permute(2, 0, 1)[None],
                                        torch.from_numpy(face).permute(2, 0, 1)[None], matrix[None], resolution)
    np.testing.assert_array_equal(boxed[0].to(torch.uint8).permute(1, 2, 0).numpy(), whole)
    # the CPU path (numpy, one thread): the same arithmetic to float32 rounding
    difference = np.abs(paste_face(frame, face, matrix, resolution).astype(int) - whole)
    assert difference.max() <= 1 and np.count_nonzero(difference) <= 1e-3 * difference.size


@pytest.mark.parametrize("resolution", [256, 512])
def test_faces_at_crop_size_skip_the_resize(resolution):
    """The pipeline hands over faces already resized on the GPU (as upstream's restore_video)."""
    frame, face, matrix = _setup(resolution)
    crop_h, crop_w = crop_size(resolution)
    at_crop = F.interpolate(torch.from_numpy(face).permute(2, 0, 1)[None], size=(crop_h, crop_w), mode="bicubic",
                            antialias=True, align_corners=False)[0].permute(1, 2, 0).numpy()
    difference = np.abs(paste_face(frame, at_crop, matrix, resolution).astype(int)
                        - paste_face(frame, face, matrix, resolution))
    assert difference.max() <= 1 and np.count_nonzero(difference) <= 1e-3 * difference.size
    with pytest.raises(Exception, match="crop size"):
        paste_face(frame, at_crop[:-1], matrix, resolution)


def test_the_blend_is_truncated_not_rounded():
    """A flat face and frame whose blend lands between two levels: upstream's `.to(uint8)` floors."""
    frame, _, matrix = _setup()
    frame[...] = 100
    face = np.full((256, 256, 3), (0.5 - 0.5) * 2, np.float32)  # maps to 255 * 0.5 = 127.5
    out = paste_face(frame, face, matrix, 256)
    crop_h, crop_w = crop_size(256)
    centre = np.round(cv2.invertAffineTransform(matrix) @ [crop_w / 2, crop_h / 2, 1]).astype(int)
    assert (out[centre[1], centre[0]] == 127).all()  # 127.5 -> 127 (rounding: 128)
    # the feathered rim holds values between 100 and 127, all from floor()
    rim = (out != 100).any(axis=2) & (out != 127).any(axis=2)
    assert rim.sum() > 100


def test_float_faces_keep_values_beyond_the_uint8_grid():
    """The face is pasted from floats (no uint8 step before the resize): two faces one
    tenth of a level apart give different frames somewhere."""
    frame, face, matrix = _setup()
    shifted = face + np.float32(0.1 / 127.5)
    a, b = paste_face(frame, face, matrix, 256), paste_face(frame, shifted, matrix, 256)
    assert (a != b).any()


def test_uint8_faces_are_mapped_to_the_decoder_scale():
    frame, face, matrix = _setup()
    as_uint8 = np.clip(np.round((face + 1) * 127.5), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(paste_face(frame, as_uint8, matrix, 256),
                                  paste_face(frame, as_uint8.astype(np.float32) / 127.5 - 1, matrix, 256))


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
    # deep inside the footprint the pixels are the face's own (x / 2 + 0.5) * 255, truncated
    flat_face = np.empty_like(face)
    flat_face[...] = (np.array([10, 200, 30], np.float32) / 255 - 0.5) * 2
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
