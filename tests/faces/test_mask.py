"""The mask drawn in code matches upstream's picture."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from latentsync.errors import InvalidInputError
from latentsync.faces import face_mask
from latentsync.paths import reference_dir


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _reference_keep() -> np.ndarray:
    reference = reference_dir()
    if reference is None or not (reference / "latentsync_mask.png").is_file():
        pytest.skip("shared reference data not present")
    picture = cv2.imread(str(reference / "latentsync_mask.png"))
    assert picture is not None and picture.shape[:2] == (256, 256)
    return picture[..., 0] > 127


def test_mask_matches_reference_at_256():
    keep_reference = _reference_keep()
    keep = face_mask(256) > 0.5
    assert _iou(keep, keep_reference) >= 0.98
    assert _iou(~keep, ~keep_reference) >= 0.98  # the smaller, repainted region too


def test_mask_matches_upstream_resize_at_512():
    keep_reference = _reference_keep()
    # upstream resizes its 256 picture with Lanczos for 512 crops
    resized = cv2.resize(keep_reference.astype(np.float32), (512, 512), interpolation=cv2.INTER_LANCZOS4) > 0.5
    keep = face_mask(512) > 0.5
    assert _iou(~keep, ~resized) >= 0.98


@pytest.mark.parametrize("resolution", [256, 512, 96])
def test_mask_shape_and_layout(resolution):
    mask = face_mask(resolution)
    assert mask.shape == (resolution, resolution) and mask.dtype == np.float32
    assert set(np.unique(mask)) == {0.0, 1.0}
    r = resolution / 256
    assert mask[: int(90 * r)].min() == 1.0  # eyes and above kept
    assert mask[int(110 * r), int(128 * r)] == 1.0  # the nose kept
    assert mask[int(110 * r), int(40 * r)] == 0.0  # cheek beside the nose repainted
    assert mask[int(180 * r), int(128 * r)] == 0.0  # mouth and chin repainted
    assert mask[int(250 * r), int(128 * r)] == 1.0  # below the chin kept
    with pytest.raises(ValueError):
        mask[0, 0] = 0.5  # shared cached array is read-only


def test_bad_resolution():
    with pytest.raises(InvalidInputError):
        face_mask(0)
