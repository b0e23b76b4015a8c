"""`paste_backend: torch` and the CPU path run the same arithmetic (CPU here; the same code runs on CUDA).

The torch path is kornia's arithmetic op for op (as upstream calls it); the CPU path writes
the same steps in numpy on one thread, so the two agree to float32 rounding: after the
truncation to uint8, one level at a few pixels in ten thousand."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from latentsync.faces import alignment_template, paste_faces, similarity_from_points, warp_faces  # noqa: E402
from latentsync.faces import torch_ops  # noqa: E402
from latentsync.faces.align import crop_face  # noqa: E402
from latentsync.faces.torch_ops import crop_faces_torch, paste_faces_torch, warp_faces_torch  # noqa: E402


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2)


def _to_numpy(images: torch.Tensor) -> np.ndarray:
    return images.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _assert_close(got: np.ndarray, expected: np.ndarray, fraction: float = 1e-3) -> None:
    difference = np.abs(got.astype(int) - expected.astype(int))
    assert difference.max() <= 1
    assert np.count_nonzero(difference) <= fraction * difference.size


def _matrices(resolution):
    first, _ = similarity_from_points(np.array([[180.0, 90.0], [260.0, 100.0], [222.0, 140.0]]), alignment_template(resolution))
    second, _ = similarity_from_points(np.array([[150.0, 80.0], [200.0, 60.0], [185.0, 110.0]]), alignment_template(resolution))
    return np.stack([first, np.full((2, 3), np.nan), second])


def test_box_grid_is_affine_grids_rows_and_columns():
    theta = torch_ops._sampling_theta(torch.tensor([[[1.7, 0.2, -40.0], [-0.2, 1.7, -30.0]]]), (240, 426), (280, 210))
    whole = F.affine_grid(theta, [1, 3, 280, 210], align_corners=True)
    assert torch.equal(torch_ops._grid(theta, (280, 210)), whole)
    assert torch.equal(torch_ops._grid(theta, (280, 210), (13, 40, 101, 200)), whole[:, 40:200, 13:101])


def test_crop_is_truncated_not_rounded():
    """Columns alternating 0 / 255 sampled half-way between them give 127.5: upstream's
    astype(uint8) keeps 127, rounding would give 128."""
    frame = np.zeros((400, 400, 3), np.uint8)
    frame[:, 1::2] = 255
    matrix = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, 0.0]])  # crop x = frame x - 0.5
    crop = crop_face(frame, matrix, 256)
    assert crop.shape == (280, 210, 3)
    assert (crop[:, :-1] == 127).all()  # every column half-way between two frame columns


def test_crop_fill_is_127_outside_the_frame():
    frame = np.full((100, 100, 3), 200, np.uint8)
    matrix = np.array([[1.0, 0.0, 150.0], [0.0, 1.0, 0.0]])  # the frame lands at crop x 150..249
    crop = crop_face(frame, matrix, 256)
    assert (crop[:99, :149] == 127).all()
    # inside, kornia's float32 arithmetic gives 200 or a hair under it, which truncation
    # makes 199: upstream's crops carry that too
    assert np.isin(crop[:99, 151:], (199, 200)).all() and (crop[:99, 151:] == 200).any()


def test_torch_crops_equal_the_cpu_crops(astronaut):
    frames = np.stack([astronaut[:400]] * 3)
    matrices = _matrices(256)
    crops = crop_faces_torch(_to_tensor(frames), matrices, 256).permute(0, 2, 3, 1).numpy()
    assert (crops[1] == 127).all()
    _assert_close(crops[0], crop_face(frames[0], matrices[0], 256))
    _assert_close(crops[2], crop_face(frames[2], matrices[2], 256))


def test_warp_agrees_with_the_lanczos_faces(astronaut):
    frames = np.stack([astronaut[:400]] * 3)
    matrices = _matrices(256)
    expected = warp_faces(frames, matrices, 256)
    got = _to_numpy(warp_faces_torch(_to_tensor(frames), matrices, 256))
    difference = np.abs(got.astype(int) - expected.astype(int))
    assert (got[1] == 127).all()
    assert difference.mean() < 1.5
    assert np.percentile(difference, 99) <= 12  # Lanczos vs antialiased bicubic on edges


def test_torch_paste_equals_the_cpu_paste(astronaut):
    frames = np.stack([astronaut[:400]] * 3)
    matrices = _matrices(256)
    faces = np.random.default_rng(0).uniform(-1.02, 1.02, (3, 256, 256, 3)).astype(np.float32)
    expected = paste_faces(frames, faces, matrices, 256)
    got = paste_faces_torch(_to_tensor(frames), _to_tensor(faces), matrices, 256)
    assert torch.equal(got, got.trunc())  # already truncated
    got = got.to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(got[1], frames[1])
    _assert_close(got, expected)
    assert (got != frames).any()


def test_torch_paste_wants_float_faces(astronaut):
    frames = np.stack([astronaut[:400]])
    with pytest.raises(TypeError, match="float"):
        paste_faces_torch(_to_tensor(frames), torch.zeros(1, 3, 256, 256, dtype=torch.uint8), _matrices(256)[:1], 256)


@pytest.mark.parametrize("size_in, size_out", [((256, 256), (280, 210)), ((512, 512), (560, 420)), ((64, 80), (64, 80))])
def test_numpy_resize_is_torchs_antialiased_bicubic(size_in, size_out):
    from latentsync.faces.numpy_ops import resize_bicubic_aa

    image = np.random.default_rng(1).uniform(-1.02, 1.02, (*size_in, 3)).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None], size=size_out, mode="bicubic",
                             antialias=True, align_corners=False)[0].permute(1, 2, 0).numpy()
    got = resize_bicubic_aa(image, size_out)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-6, rtol=0)
