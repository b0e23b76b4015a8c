"""Mask, face crop and paste-back against upstream's own outputs.

Fixture: `../shared/reference/pipeline_parity/` (made with bytedance/LatentSync a229c39's
own code; its README gives the conventions and the tolerances used here). Skipped when
the shared folder is absent.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from latentsync.faces import FaceAligner, FaceLandmarks, face_mask, paste_faces
from latentsync.faces.align import crop_face, resize_crop
from latentsync.faces.insightface_backend import alignment_points
from latentsync.faces.mask import latent_mask
from latentsync.faces.torch_ops import crop_faces_torch, paste_faces_torch
from latentsync.paths import reference_dir

RESOLUTIONS = [256, 512]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def parity():
    ref = reference_dir()
    folder = ref / "pipeline_parity" if ref is not None else None
    if folder is None or not (folder / "manifest.json").is_file():
        pytest.skip("shared/reference/pipeline_parity not available")
    data = {}
    for name in ("mask", "align", "paste"):
        data.update(load_file(str(folder / f"{name}.safetensors")))
    data["manifest"] = json.loads((folder / "manifest.json").read_text())
    return data


def _sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _landmarks(parity) -> list[FaceLandmarks]:
    return [FaceLandmarks(points=alignment_points(lm), confidence=1.0) for lm in parity["landmarks_106"]]


def _generated_faces(parity, res: int) -> np.ndarray:
    """The manifest's recipe: V (uint8) per frame, face = (V - 127.5) / 125 in float32, (3, res, res, 3)."""
    noise = parity["noise_tile"]
    y, x, c = np.meshgrid(np.arange(res), np.arange(res), np.arange(3), indexing="ij")
    faces = []
    for i in range(3):
        t = noise[(y + 11 * i) % 64, (x + 29 * i) % 64, c].astype(np.int64)
        v = np.clip(40 + 110 * x // res + 70 * y // res + 20 * c + 15 * i + (t - 128) // 4, 0, 255).astype(np.uint8)
        assert _sha(v) == parity["manifest"]["per_resolution"][str(res)]["generated_face_u8_sha256"][i]
        faces.append((v.astype(np.float32) - np.float32(127.5)) / np.float32(125.0))
    return np.stack(faces)


# ------------------------------------------------------------------ mask: exact


@pytest.mark.parametrize("res", RESOLUTIONS)
def test_pixel_mask_equals_upstream(parity, res):
    np.testing.assert_array_equal(face_mask(res), parity[f"mask_{res}"])
    # upstream holds float64 k/255; the fixture stores them as float32
    np.testing.assert_array_equal(face_mask(res, np.float64).astype(np.float32), parity[f"mask_{res}"])


@pytest.mark.parametrize("res", RESOLUTIONS)
def test_latent_mask_equals_upstream(parity, res):
    from latentsync.pipeline.denoise import DenoiseSettings
    from latentsync.pipeline.face_synthesis import FaceSynthesizer
    from latentsync.pipeline.vae import VaeOptions

    expected = parity[f"latent_mask_{res}"]
    np.testing.assert_array_equal(latent_mask(res, res // 8), expected)
    # the mask channel the pipeline's synthesizer builds for the UNet
    synth = FaceSynthesizer(None, None, face_mask(res, np.float64), chunk_frames=16, denoise_settings=DenoiseSettings(),
                            vae_options=VaeOptions(), device="cpu", dtype=torch.float32,
                            noise=torch.zeros(4, res // 8, res // 8), pad_partial_chunks=False)
    np.testing.assert_array_equal(synth.mask_latent[0, 0].numpy(), expected)


# ------------------------------------------------------------------ landmarks and matrices


def test_points_are_rounded_like_upstream(parity):
    for lm, points, rounded in zip(parity["landmarks_106"], parity["points"], parity["landmarks3"]):
        np.testing.assert_allclose(alignment_points(lm), points, atol=1e-4)
        np.testing.assert_array_equal(np.round(alignment_points(lm)), rounded)


@pytest.mark.parametrize("res", RESOLUTIONS)
def test_matrices_and_smoothing_state_match_upstream(parity, res):
    aligner = FaceAligner(res)
    expected = parity[f"matrices_{res}"]
    for i, face in enumerate(_landmarks(parity)):
        matrix = aligner.matrix_for(face)  # frames 0, 1, 2 in order: the smoothing state carries over
        np.testing.assert_allclose(matrix[:, :2], expected[i][:, :2], atol=1e-5, rtol=0)
        np.testing.assert_allclose(matrix[:, 2], expected[i][:, 2], atol=5e-4, rtol=0)
        np.testing.assert_allclose(aligner.state.previous_bias, parity[f"p_bias_{res}"][i], atol=1e-5, rtol=0)


@pytest.mark.parametrize("res", RESOLUTIONS)
def test_subpixel_points_are_not_upstreams_crop(parity, res):
    """landmark_precision: subpixel is a real departure (1-2 crop pixels), not a rounding."""
    matrices = FaceAligner(res, round_landmarks=False).matrices_for(_landmarks(parity))
    assert np.abs(matrices[:, :, 2] - parity[f"matrices_{res}"][:, :, 2]).max() > 0.5


# ------------------------------------------------------------------ crops: max 1 level, <= 0.2 % of values


def _check_crops(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape and got.dtype == np.uint8
    difference = np.abs(got.astype(np.int16) - expected.astype(np.int16))
    assert difference.max() <= 1
    assert np.count_nonzero(difference) <= 0.002 * difference.size


@pytest.mark.parametrize("res", RESOLUTIONS)
def test_crops_given_upstreams_matrices(parity, res):
    frames, matrices = parity["frames"], parity[f"matrices_{res}"]
    crops = np.stack([crop_face(frame, matrix, res) for frame, matrix in zip(frames, matrices)])
    _check_crops(crops, parity[f"crops_{res}"])
    # frame 2's crop reaches above the canvas: the fill shows, as in upstream's
    assert (parity[f"crops_{res}"][2] == 127).all(axis=-1).any() and (crops[2] == 127).all(axis=-1).any()


@pytest.mark.parametrize("res", RESOLUTIONS)
@pytest.mark.parametrize("device", DEVICES)
def test_torch_crops_given_upstreams_matrices(parity, res, device):
    frames = torch.from_numpy(parity["frames"]).permute(0, 3, 1, 2).to(device)
    crops = crop_faces_torch(frames, parity[f"matrices_{res}"], res).permute(0, 2, 3, 1).cpu().numpy()
    _check_crops(crops, parity[f"crops_{res}"])


@pytest.mark.parametrize("res", RESOLUTIONS)
def test_crops_from_landmarks_end_to_end(parity, res):
    """Landmarks -> rounded points -> fit + smoothing -> warp, all ours."""
    aligner = FaceAligner(res)
    matrices = aligner.matrices_for(_landmarks(parity))
    crops = np.stack([crop_face(frame, matrix, res) for frame, matrix in zip(parity["frames"], matrices)])
    _check_crops(crops, parity[f"crops_{res}"])


@pytest.mark.parametrize("res", RESOLUTIONS)
def test_crop_resize_is_upstreams_lanczos(parity, res):
    faces = np.stack([resize_crop(crop, res) for crop in parity[f"crops_{res}"]])
    assert faces.shape == (3, res, res, 3)
    assert _sha(faces) == parity["manifest"]["per_resolution"][str(res)]["lanczos_faces_sha256"]


# ------------------------------------------------------------------ paste-back: max 1 level, <= 0.5 % in the boxes


def _check_restored(parity, res: int, restored: np.ndarray) -> None:
    boxes = parity["manifest"]["per_resolution"][str(res)]["restored_boxes_x0y0x1y1"]
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        expected = parity[f"restored_{res}_f{i}"]
        difference = np.abs(restored[i, y0:y1, x0:x1].astype(np.int16) - expected.astype(np.int16))
        assert difference.max() <= 1, f"frame {i}"
        assert np.count_nonzero(difference) <= 0.005 * difference.size, f"frame {i}"
        outside = restored[i].copy()
        outside[y0:y1, x0:x1] = parity["frames"][i][y0:y1, x0:x1]
        np.testing.assert_array_equal(outside, parity["frames"][i], err_msg=f"frame {i} outside its box")


@pytest.mark.parametrize("res", RESOLUTIONS)
def test_cpu_paste_matches_upstream(parity, res):
    restored = paste_faces(parity["frames"], _generated_faces(parity, res), parity[f"matrices_{res}"], res)
    _check_restored(parity, res, restored)


@pytest.mark.parametrize("res", RESOLUTIONS)
@pytest.mark.parametrize("device", DEVICES)
def test_torch_paste_matches_upstream(parity, res, device):
    """The `paste_backend: torch` path, as the pipeline calls it (paste_faces_on_device)."""
    from latentsync.pipeline.lipsync import paste_faces_on_device

    restored = paste_faces_on_device(parity["frames"], _generated_faces(parity, res), parity[f"matrices_{res}"], res,
                                     torch.device(device))
    _check_restored(parity, res, restored)
    direct = paste_faces_torch(torch.from_numpy(parity["frames"]).permute(0, 3, 1, 2).to(device),
                               torch.from_numpy(_generated_faces(parity, res)).permute(0, 3, 1, 2).to(device),
                               parity[f"matrices_{res}"], res)
    np.testing.assert_array_equal(direct.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy(), restored)
