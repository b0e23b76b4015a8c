"""Upstream's fixed face mask (1 keep, 0 repaint), as data, at any resolution.

Upstream ships a 256x256 binary picture (`latentsync/utils/mask.png`, sha256
aa233251...053c, three equal channels) and loads it with `load_fixed_mask`:
`cv2.resize(picture, (res, res), interpolation=cv2.INTER_LANCZOS4) / 255.0`. At 256
the resize changes nothing; at 512 Lanczos softens the edges (9,186 pixels strictly
between 0 and 1). The UNet's mask channel is this mask sampled with nearest
neighbour onto the latent grid (rows and columns 0, 8, 16, ...; soft values kept).

The picture is stored here as the runs of repainted pixels on each of its rows,
measured from the reference fixture `shared/reference/pipeline_parity/mask.safetensors`
(`mask_256`; the codes' sha256 is f8b78274...f869): two cheek bands beside the nose on
rows 95..127, then one run per row from row 128 down to the chin (row 242). The
picture is rebuilt from the runs and resized with OpenCV's Lanczos exactly as
upstream does, so `face_mask(256)` and `face_mask(512)` equal upstream's masks value
for value (tests/faces/test_pipeline_parity.py).
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from ..errors import InvalidInputError

PICTURE_SIZE = 256
# rows 95..127: the cheek bands [9, 78) and [178, 247) (the nose between them is kept)
CHEEK_ROWS = (95, 128)
CHEEK_RUNS = ((9, 78), (178, 247))
# rows 128..242: one repainted run [start, stop) per row, row 128 first
LOWER_FACE_FIRST_ROW = 128
LOWER_FACE_RUNS = (
    (9, 248), (9, 248), (9, 248), (9, 248), (9, 248), (9, 248), (9, 248), (9, 247),  # rows 128..135
    (10, 247), (10, 247), (10, 247), (10, 247), (10, 247), (10, 247), (10, 247), (10, 247),  # rows 136..143
    (10, 247), (10, 247), (10, 247), (10, 247), (10, 247), (10, 246), (11, 246), (11, 246),  # rows 144..151
    (11, 246), (11, 246), (11, 246), (11, 246), (11, 246), (11, 246), (11, 246), (11, 246),  # rows 152..159
    (11, 246), (11, 246), (11, 246), (11, 245), (12, 245), (12, 245), (12, 245), (12, 245),  # rows 160..167
    (12, 245), (12, 245), (12, 244), (13, 244), (13, 243), (14, 243), (14, 242), (15, 242),  # rows 168..175
    (15, 241), (16, 241), (16, 240), (17, 239), (18, 239), (18, 238), (19, 237), (19, 237),  # rows 176..183
    (20, 236), (21, 235), (21, 235), (22, 234), (22, 233), (23, 233), (24, 232), (25, 231),  # rows 184..191
    (26, 231), (26, 230), (27, 229), (28, 229), (29, 228), (30, 227), (31, 226), (32, 225),  # rows 192..199
    (33, 224), (34, 224), (34, 223), (35, 222), (36, 221), (37, 220), (38, 219), (39, 218),  # rows 200..207
    (40, 217), (42, 216), (43, 215), (44, 214), (45, 213), (47, 212), (48, 211), (49, 209),  # rows 208..215
    (51, 208), (52, 207), (54, 205), (56, 204), (57, 203), (59, 201), (60, 200), (62, 198),  # rows 216..223
    (64, 197), (66, 195), (68, 193), (70, 192), (72, 190), (74, 188), (76, 186), (78, 184),  # rows 224..231
    (80, 181), (82, 179), (85, 176), (87, 174), (90, 172), (93, 169), (95, 167), (99, 165),  # rows 232..239
    (104, 161), (108, 157), (131, 153),  # rows 240..242
)


def mask_picture() -> np.ndarray:
    """Upstream's 256x256 mask picture as uint8 codes (255 keep, 0 repaint), one channel."""
    picture = np.full((PICTURE_SIZE, PICTURE_SIZE), 255, dtype=np.uint8)
    for row in range(*CHEEK_ROWS):
        for start, stop in CHEEK_RUNS:
            picture[row, start:stop] = 0
    for offset, (start, stop) in enumerate(LOWER_FACE_RUNS):
        picture[LOWER_FACE_FIRST_ROW + offset, start:stop] = 0
    return picture


@lru_cache(maxsize=8)
def mask_codes(resolution: int) -> np.ndarray:
    """(res, res) uint8: the picture resized as upstream resizes it (OpenCV Lanczos-4). Read-only."""
    picture = mask_picture()
    if resolution != PICTURE_SIZE:
        picture = cv2.resize(picture, (resolution, resolution), interpolation=cv2.INTER_LANCZOS4)
    picture.setflags(write=False)
    return picture


@lru_cache(maxsize=16)
def _face_mask(resolution: int, dtype: str) -> np.ndarray:
    # upstream divides the uint8 codes by 255.0 in float64
    mask = (mask_codes(resolution) / 255.0).astype(dtype)
    mask.setflags(write=False)
    return mask


def face_mask(resolution: int, dtype=np.float32) -> np.ndarray:
    """(res, res) mask, 1 = keep the reference pixels, 0 = repaint, soft in between: upstream's
    codes / 255 (computed in float64, returned as `dtype`). Read-only."""
    if not isinstance(resolution, (int, np.integer)) or resolution < 8:
        raise InvalidInputError(f"mask resolution must be an int >= 8, got {resolution!r}")
    return _face_mask(int(resolution), np.dtype(dtype).name)


def latent_mask(resolution: int, latent_size: int, dtype=np.float32) -> np.ndarray:
    """(latent, latent): the mask as the UNet gets it, `F.interpolate(mask, size)`'s default
    nearest neighbour (row and column i*res // latent of the pixel mask)."""
    mask = face_mask(resolution, np.float64)
    index = (np.arange(latent_size) * resolution) // latent_size
    return mask[np.ix_(index, index)].astype(dtype)
