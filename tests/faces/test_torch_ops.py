"""The torch warp / paste agree with the cv2 path (CPU here; the same code runs on CUDA)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from latentsync.faces import alignment_template, paste_faces, similarity_from_points, warp_faces  # noqa: E402
from latentsync.faces.torch_ops import paste_faces_torch, warp_faces_torch  # noqa: E402


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).to(torch.float32)


def _to_numpy(images: torch.Tensor) -> np.ndarray:
    return images.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _matrices(resolution):
    first, _ = similarity_from_points(np.array([[180.0, 90.0], [260.0, 100.0], [222.0, 140.0]]), alignment_template(resolution))
    second, _ = similarity_from_points(np.array([[150.0, 80.0], [200.0, 60.0], [185.0, 110.0]]), alignment_template(resolution))
    return np.stack([first, np.full((2, 3), np.nan), second])


def test_warp_agrees_with_cv2(astronaut):
    frames = np.stack([astronaut[:400]] * 3)
    matrices = _matrices(256)
    expected = warp_faces(frames, matrices, 256)
    got = _to_numpy(warp_faces_torch(_to_tensor(frames), matrices, 256))
    difference = np.abs(got.astype(int) - expected.astype(int))
    assert (got[1] == 127).all()
    assert difference.mean() < 1.5
    assert np.percentile(difference, 99) <= 12  # Lanczos vs antialiased bicubic on edges


def test_paste_agrees_with_cv2(astronaut):
    frames = np.stack([astronaut[:400]] * 3)
    matrices = _matrices(256)
    faces = np.random.default_rng(0).integers(0, 256, (3, 256, 256, 3), dtype=np.uint8)
    expected = paste_faces(frames, faces, matrices, 256)
    got = _to_numpy(paste_faces_torch(_to_tensor(frames), _to_tensor(faces), matrices, 256))
    np.testing.assert_array_equal(got[1], frames[1])
    difference = np.abs(got.astype(int) - expected.astype(int))
    assert difference.mean() < 1.5
    # untouched pixels agree exactly
    untouched = (expected == frames).all(axis=-1) & (got == frames).all(axis=-1)
    assert untouched.mean() > 0.3
