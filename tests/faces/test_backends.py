"""Landmark backends: the default (MediaPipe) on real photos, the factory, InsightFace's errors."""
from __future__ import annotations

import numpy as np
import pytest

from latentsync.errors import InvalidInputError
from latentsync.faces import FaceLandmarks, get_face_backend
from latentsync.faces.insightface_backend import InsightFaceBackend, insightface_available

from .conftest import apply_affine, place_on_canvas

# Hand-checked on skimage.data.astronaut(): brow centres and nose (x, y), pixels.
ASTRONAUT_POINTS = np.array([[200.0, 90.0], [251.0, 93.0], [224.0, 127.0]])


def test_astronaut_points_on_brows_and_nose(mediapipe_backend, astronaut):
    mediapipe_backend.reset()
    face = mediapipe_backend.detect(astronaut)
    assert isinstance(face, FaceLandmarks)
    assert face.points.shape == (3, 2)
    assert np.abs(face.points - ASTRONAUT_POINTS).max() < 4.0
    assert face.points[0, 0] < face.points[1, 0]  # image-left brow first
    x0, y0, x1, y1 = face.box
    assert x0 < ASTRONAUT_POINTS[:, 0].min() and x1 > ASTRONAUT_POINTS[:, 0].max()


@pytest.mark.parametrize(
    "angle, scale, centre",
    [(20.0, 1.0, (400, 360)), (-15.0, 1.5, (900, 330)), (10.0, 0.8, (1000, 400))],
)
def test_transformed_astronaut_points_follow_the_transform(mediapipe_backend, astronaut, angle, scale, centre):
    mediapipe_backend.reset()
    base = mediapipe_backend.detect(astronaut).points
    canvas, matrix = place_on_canvas(astronaut, angle, scale, centre)
    mediapipe_backend.reset()
    face = mediapipe_backend.detect(canvas)
    assert face is not None
    expected = apply_affine(matrix, base)
    assert np.abs(face.points - expected).max() < 3.0 * max(scale, 1.0)


def test_small_face_found_by_tile_search_and_then_tracked(astronaut):
    from latentsync.faces.mediapipe_backend import MediaPipeFaceBackend

    # brows ~51 px apart in a 1280x720 frame: too small for one whole-frame pass
    canvas, matrix = place_on_canvas(astronaut, 0.0, 1.0, (300, 420))
    with MediaPipeFaceBackend(search_levels=0) as whole_frame_only:
        assert whole_frame_only.detect(canvas) is None
    with MediaPipeFaceBackend() as backend:
        first = backend.detect(canvas)
        assert first is not None
        expected = apply_affine(matrix, ASTRONAUT_POINTS)
        assert np.abs(first.points - expected).max() < 4.0
        # next frame: the face moved 6 px; found again around the previous box
        shifted, _ = place_on_canvas(astronaut, 0.0, 1.0, (306, 420))
        second = backend.detect(shifted)
        assert second is not None
        assert np.allclose(second.points - first.points, (6.0, 0.0), atol=1.5)


@pytest.mark.parametrize("name", ["chelsea", "coffee", "gray", "noise", "black"])
def test_no_face_gives_none(mediapipe_backend, name):
    if name == "gray":
        image = np.full((720, 1280, 3), 127, np.uint8)
    elif name == "black":
        image = np.zeros((360, 640, 3), np.uint8)
    elif name == "noise":
        image = np.random.default_rng(0).integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    else:
        skimage_data = pytest.importorskip("skimage.data")
        image = np.ascontiguousarray(getattr(skimage_data, name)())  # a cat, a coffee cup
    mediapipe_backend.reset()
    assert mediapipe_backend.detect(image) is None


def test_detect_batch_marks_frames_without_a_face(mediapipe_backend, astronaut):
    mediapipe_backend.reset()
    chunk = np.stack([astronaut, np.zeros_like(astronaut), astronaut])
    found = mediapipe_backend.detect_batch(chunk)
    assert [face is not None for face in found] == [True, False, True]


def test_faces_below_upstream_minimum_size_are_dropped(mediapipe_backend, astronaut):
    # landmark box ~65 x 75 px: under upstream's 50 x 80 minimum
    canvas, _ = place_on_canvas(astronaut, 0.0, 0.7, (320, 360), canvas_hw=(720, 720))
    mediapipe_backend.reset()
    assert mediapipe_backend.detect(canvas) is None
    canvas, _ = place_on_canvas(astronaut, 0.0, 1.0, (320, 360), canvas_hw=(720, 720))
    assert mediapipe_backend.detect(canvas) is not None


def test_bad_frame_is_a_clear_error(mediapipe_backend):
    with pytest.raises(InvalidInputError, match="uint8 RGB"):
        mediapipe_backend.detect(np.zeros((64, 64), np.uint8))
    with pytest.raises(InvalidInputError, match="uint8 RGB"):
        mediapipe_backend.detect(np.zeros((64, 64, 3), np.float32))


def test_factory_names(monkeypatch):
    monkeypatch.delenv("LATENTSYNC_INSIGHTFACE_DIR", raising=False)
    with pytest.raises(InvalidInputError, match="unknown face backend"):
        get_face_backend("dlib")
    backend = get_face_backend("auto")  # no InsightFace model pack -> the default
    try:
        assert backend.name == "mediapipe"
    finally:
        backend.close()


def test_missing_landmarker_model_is_a_clear_error(tmp_path):
    from latentsync.faces.mediapipe_backend import MediaPipeFaceBackend

    with pytest.raises(InvalidInputError, match="face landmarker model not found") as error:
        MediaPipeFaceBackend(model_path=tmp_path / "nope.task")
    assert "nope.task" in str(error.value)


def test_insightface_needs_its_model_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("LATENTSYNC_INSIGHTFACE_DIR", raising=False)
    with pytest.raises(InvalidInputError, match="model pack folder"):
        InsightFaceBackend()
    with pytest.raises(InvalidInputError, match="does not exist"):
        InsightFaceBackend(tmp_path / "missing")
    (tmp_path / "buffalo_l").mkdir()
    (tmp_path / "buffalo_l" / "det_10g.onnx").write_bytes(b"")
    with pytest.raises(InvalidInputError, match="2d106det.onnx"):
        InsightFaceBackend(tmp_path / "buffalo_l")
    assert not insightface_available(tmp_path / "buffalo_l")


def test_insightface_backend_on_astronaut(astronaut):
    import os

    pytest.importorskip("insightface")
    model_dir = os.environ.get("LATENTSYNC_INSIGHTFACE_DIR")
    if not model_dir or not insightface_available(model_dir):
        pytest.skip("set LATENTSYNC_INSIGHTFACE_DIR to an InsightFace model pack (buffalo_l) to run")
    backend = InsightFaceBackend(model_dir)
    face = backend.detect(astronaut)
    assert face is not None
    assert np.abs(face.points - ASTRONAUT_POINTS).max() < 8.0
    assert backend.detect(np.zeros((512, 512, 3), np.uint8)) is None
