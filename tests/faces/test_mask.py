"""The mask is upstream's picture, resized the way upstream resizes it.

Value-for-value equality with upstream's own output (pixel and latent masks at 256
and 512) is in test_pipeline_parity.py (needs ../shared); these tests need nothing.
"""
from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from latentsync.errors import InvalidInputError
from latentsync.faces import face_mask
from latentsync.faces.mask import latent_mask, mask_codes, mask_picture

# sha256 of upstream's 256x256 mask codes (one channel; the picture's three are equal),
# as the fixture's manifest records it (per_resolution.256.mask_codes_u8_sha256)
UPSTREAM_CODES_256_SHA256 = "f8b78274914708ee3b64f800d9c4571b00906863af5df049240c708ee33ef869"
UPSTREAM_CODES_512_SHA256 = "d3ed095906075f615398881f503d10469bc76870199ce29faffd5f500c043ce8"


def test_the_stored_runs_rebuild_upstreams_picture():
    picture = mask_picture()
    assert picture.shape == (256, 256) and picture.dtype == np.uint8
    assert set(np.unique(picture)) == {0, 255}
    assert hashlib.sha256(picture.tobytes()).hexdigest() == UPSTREAM_CODES_256_SHA256


def test_512_is_the_lanczos_resize_of_the_picture():
    codes = mask_codes(512)
    assert hashlib.sha256(np.ascontiguousarray(codes).tobytes()).hexdigest() == UPSTREAM_CODES_512_SHA256
    # upstream resizes the three-channel picture; channels are resized independently
    three = cv2.resize(np.repeat(mask_picture()[..., None], 3, axis=2), (512, 512), interpolation=cv2.INTER_LANCZOS4)
    assert (three == codes[..., None]).all()
    mask = face_mask(512)
    soft = (mask > 0) & (mask < 1)
    assert soft.sum() == 9186  # the README's count of pixels strictly between 0 and 1
    np.testing.assert_array_equal(mask, (codes / 255.0).astype(np.float32))


def test_float64_values_are_upstreams_division():
    codes = mask_codes(512)
    np.testing.assert_array_equal(face_mask(512, np.float64), codes / 255.0)
    assert face_mask(512, np.float64).dtype == np.float64


@pytest.mark.parametrize("resolution", [256, 512])
def test_latent_mask_is_torch_nearest(resolution):
    latent = resolution // 8
    mask = torch.from_numpy(face_mask(resolution, np.float64).copy())[None, None]
    expected = F.interpolate(mask, size=(latent, latent))[0, 0].numpy().astype(np.float32)
    np.testing.assert_array_equal(latent_mask(resolution, latent), expected)
    cells = latent_mask(resolution, latent)
    assert ((cells > 0) & (cells < 1)).sum() == (133 if resolution == 512 else 0)


@pytest.mark.parametrize("resolution", [256, 512, 96])
def test_mask_shape_and_layout(resolution):
    mask = face_mask(resolution)
    assert mask.shape == (resolution, resolution) and mask.dtype == np.float32
    assert mask.min() >= 0 and mask.max() <= 1
    if resolution == 256:
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
