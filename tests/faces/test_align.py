"""Alignment: the similarity fit, the template, smoothing across chunks, warp round trip."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from latentsync.errors import InvalidInputError
from latentsync.faces import (
    AlignmentState,
    FaceAligner,
    FaceLandmarks,
    alignment_template,
    crop_size,
    paste_faces,
    similarity_from_points,
    smooth_translation,
    warp_face,
)
from latentsync.faces.align import frame_to_face_matrix

from .conftest import apply_affine


def _similarity(angle_deg, scale, tx, ty):
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])


def test_template_and_crop_size_follow_upstream():
    assert crop_size(256) == (280, 210)
    assert crop_size(512) == (560, 420)
    np.testing.assert_allclose(alignment_template(256), [[47.6, 56.0], [162.4, 56.0], [105.0, 112.0]])
    np.testing.assert_allclose(alignment_template(512), 2 * alignment_template(256))


@pytest.mark.parametrize("angle, scale, tx, ty", [(0, 1, 0, 0), (0, 0.4, 300, -20), (17, 0.4, 300, -20), (-40, 2.5, -50, 600)])
def test_similarity_recovers_an_exact_transform(angle, scale, tx, ty):
    template = alignment_template(512)
    frame_to_template = _similarity(angle, scale, tx, ty)
    points = apply_affine(cv2.invertAffineTransform(frame_to_template), template)
    matrix, residual = similarity_from_points(points, template)
    np.testing.assert_allclose(matrix, frame_to_template, atol=1e-9)
    # upstream's nose residual compares normalised points without undoing the
    # rotation: zero for pure scale + shift, not for a rotated face
    if angle == 0:
        np.testing.assert_allclose(residual, 0.0, atol=1e-9)
    else:
        assert np.abs(residual).max() > 1e-3


def test_similarity_never_reflects():
    template = alignment_template(256)
    mirrored = template * [-1, 1]  # brows swapped left-right
    matrix, _ = similarity_from_points(mirrored, template)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_degenerate_points_are_an_error():
    with pytest.raises(InvalidInputError, match="degenerate"):
        similarity_from_points(np.ones((3, 2)), alignment_template(256))


def test_smoothing_is_point2_previous_point8_current():
    matrix = np.zeros((2, 3))
    first, state = smooth_translation(matrix, np.array([1.0, -2.0]), None)
    np.testing.assert_allclose(first[:, 2], [1.0, -2.0])  # first frame: the residual itself
    second, state2 = smooth_translation(matrix, np.array([3.0, 0.0]), state)
    np.testing.assert_allclose(state2, 0.2 * np.array([1.0, -2.0]) + 0.8 * np.array([3.0, 0.0]))
    np.testing.assert_allclose(second[:, 2], state2)
    np.testing.assert_allclose(second[:, :2], 0.0)


def _noisy_track(count, seed=0):
    rng = np.random.default_rng(seed)
    base = np.array([[200.0, 90.0], [251.0, 93.0], [224.0, 127.0]])
    return [FaceLandmarks(points=base + rng.normal(0, 2.0, (3, 2)) + [i, 0.5 * i], confidence=1.0) for i in range(count)]


def test_smoothing_state_crosses_chunk_boundaries():
    track = _noisy_track(13)
    track[5] = None  # a frame without a face keeps the state
    whole = FaceAligner(256).matrices_for(track)
    chunked_aligner = FaceAligner(256)
    chunked = np.concatenate([chunked_aligner.matrices_for(track[i : i + 4]) for i in range(0, 13, 4)])
    np.testing.assert_array_equal(np.isnan(whole), np.isnan(chunked))
    np.testing.assert_allclose(whole[~np.isnan(whole)], chunked[~np.isnan(chunked)], atol=1e-12)
    # the state survives a round trip through plain data (a resumed job)
    resumed = FaceAligner(256, state=AlignmentState.from_dict(chunked_aligner.state.to_dict()))
    more = _noisy_track(3, seed=1)
    np.testing.assert_allclose(resumed.matrices_for(more), chunked_aligner.matrices_for(more), atol=1e-12)
    # smoothing changes the result after the first frame; without it each frame stands alone
    plain = FaceAligner(256, smooth=False).matrices_for(track)
    assert not np.allclose(plain[1], whole[1])


def test_warp_puts_the_three_points_on_the_template():
    resolution = 256
    frame = np.zeros((720, 1280, 3), np.uint8)
    points = np.array([[600.0, 300.0], [700.0, 310.0], [645.0, 360.0]])
    for x, y in points:
        cv2.circle(frame, (int(x), int(y)), 4, (255, 255, 255), -1)
    matrix, _ = similarity_from_points(points, alignment_template(resolution))
    face = warp_face(frame, matrix, resolution)
    assert face.shape == (resolution, resolution, 3) and face.dtype == np.uint8
    expected = apply_affine(frame_to_face_matrix(matrix, resolution), points)
    for x, y in expected:
        assert face[int(round(y)), int(round(x))].min() > 150
    # fill 127 outside the frame: a matrix that looks far outside the frame
    far = matrix.copy()
    far[:, 2] += 5000
    assert (warp_face(frame, far, resolution) == 127).all()


def test_align_chunk_and_missing_frames(astronaut):
    aligner = FaceAligner(256)
    track = _noisy_track(3)
    track[1] = None
    chunk = np.stack([astronaut] * 3)
    aligned = aligner.align(chunk, track)
    assert aligned.faces.shape == (3, 256, 256, 3)
    assert aligned.missing == [1]
    assert (aligned.faces[1] == 127).all()
    assert np.isnan(aligned.matrices[1]).all() and np.isfinite(aligned.matrices[0]).all()
    with pytest.raises(InvalidInputError):
        aligner.align(chunk, track[:2])


@pytest.mark.parametrize("resolution", [256, 512])
def test_round_trip_recovers_the_face_region(mediapipe_backend, astronaut, resolution):
    frame = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    frame = np.ascontiguousarray(frame[100:820, :])  # 720 x 1024 with the face in it
    mediapipe_backend.reset()
    face = mediapipe_backend.detect(frame)
    aligned = FaceAligner(resolution).align(frame[None], [face])
    restored = paste_faces(frame[None], aligned.faces, aligned.matrices, resolution)[0]
    # inside the face (around the nose, mouth and brows) the round trip is close
    nose = face.points[2].astype(int)
    window = (slice(nose[1] - 120, nose[1] + 120), slice(nose[0] - 120, nose[0] + 120))
    difference = np.abs(restored[window].astype(int) - frame[window].astype(int))
    assert difference.mean() < 3.0
    # far from the face nothing changed
    assert (restored[:, :30] == frame[:, :30]).all()


def test_points_are_rounded_before_the_fit_as_upstream():
    points = np.array([[200.4, 90.5], [251.6, 93.5], [224.5, 127.2]])
    face = FaceLandmarks(points=points, confidence=1.0)
    rounded = np.round(points)  # half to even: 90.5 -> 90, 93.5 -> 94, 224.5 -> 224
    assert rounded.tolist() == [[200.0, 90.0], [252.0, 94.0], [224.0, 127.0]]
    expected, _ = similarity_from_points(rounded, alignment_template(256))
    np.testing.assert_allclose(FaceAligner(256, smooth=False).matrix_for(face), expected, atol=1e-12)
    subpixel, _ = similarity_from_points(points, alignment_template(256))
    np.testing.assert_allclose(FaceAligner(256, smooth=False, round_landmarks=False).matrix_for(face), subpixel,
                               atol=1e-12)
    assert np.abs(subpixel - expected).max() > 0.1


def test_insightface_points_are_upstreams_group_means():
    from latentsync.faces.insightface_backend import alignment_points

    landmarks = np.random.default_rng(0).uniform(0, 640, (106, 2)).astype(np.float32)
    points = alignment_points(landmarks)
    assert points.dtype == np.float64 and points.shape == (3, 2)
    # upstream: np.mean of the float32 landmarks per group, in float32
    expected = [np.mean(landmarks[[43, 48, 49, 51, 50]], axis=0), np.mean(landmarks[101:106], axis=0),
                np.mean(landmarks[[74, 77, 83, 86]], axis=0)]
    np.testing.assert_array_equal(points, np.array(expected, dtype=np.float32).astype(np.float64))
