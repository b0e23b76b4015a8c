"""Shared fixtures: real face photos shipped with scikit-image / matplotlib, one backend per session."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(skimage_data.astronaut())


@pytest.fixture(scope="session")
def grace_hopper() -> np.ndarray:
    matplotlib = pytest.importorskip("matplotlib")
    path = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    if not os.path.isfile(path):
        pytest.skip("matplotlib sample data not installed")
    return cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="session")
def mediapipe_backend():
    from latentsync.faces.mediapipe_backend import MediaPipeFaceBackend

    backend = MediaPipeFaceBackend()
    yield backend
    backend.close()


def place_on_canvas(image: np.ndarray, angle_deg: float, scale: float, centre_xy, canvas_hw=(720, 1280), background=(90, 110, 130)):
    """`image` rotated / scaled about its centre and moved so its centre lands on `centre_xy`.

    Returns (canvas, M) with M the (2, 3) image -> canvas matrix.
    """
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle_deg, scale)
    matrix[:, 2] += np.asarray(centre_xy, dtype=np.float64) - (w / 2, h / 2)
    canvas = cv2.warpAffine(
        image, matrix, (canvas_hw[1], canvas_hw[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=background
    )
    return canvas, matrix


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]
