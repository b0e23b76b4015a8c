"""The fixed face mask, drawn in code at any resolution (1 keep, 0 repaint).

Upstream ships a 256x256 picture (`latentsync/utils/mask.png`): the face crop is
repainted from just under the nose down to the chin. Its shape, measured on that
picture in 256-pixel units:

* two cheek bands beside the nose, rows 95..127, columns 9..77 and 178..246
  (the nose between them is kept);
* below row 128, the lower half of an ellipse centred at (129, 134.2) with
  semi-axes 120.4 (across) and 108.6 (down), which closes at the chin (row ~242).

Drawn from these numbers it matches the picture with IoU ~0.99 (repaint region)
at 256 and at 512 (against the picture resized the way upstream resizes it).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import InvalidInputError

_UNITS = 256.0
CHEEK_TOP, NOSE_BOTTOM = 95.0, 128.0
CHEEK_COLUMNS = ((9.0, 78.0), (178.0, 247.0))
ELLIPSE_CENTRE = (129.0, 134.2)
ELLIPSE_AXES = (120.4, 108.6)


@lru_cache(maxsize=8)
def _face_mask(resolution: int) -> np.ndarray:
    centres = (np.arange(resolution, dtype=np.float64) + 0.5) * (_UNITS / resolution)
    v = centres[:, None]
    u = centres[None, :]
    in_cheeks = np.zeros((1, resolution), dtype=bool)
    for left, right in CHEEK_COLUMNS:
        in_cheeks |= (u >= left) & (u < right)
    cheeks = (v >= CHEEK_TOP) & (v < NOSE_BOTTOM) & in_cheeks
    below_nose = np.maximum(v - ELLIPSE_CENTRE[1], 0.0) / ELLIPSE_AXES[1]
    across = (u - ELLIPSE_CENTRE[0]) / ELLIPSE_AXES[0]
    lower = (v >= NOSE_BOTTOM) & (across**2 + below_nose**2 <= 1.0)
    keep = ~(cheeks | lower)
    keep = keep.astype(np.float32)
    keep.setflags(write=False)
    return keep


def face_mask(resolution: int) -> np.ndarray:
    """(res, res) float32 mask, 1 = keep the reference pixels, 0 = repaint. Read-only."""
    if not isinstance(resolution, (int, np.integer)) or resolution < 8:
        raise InvalidInputError(f"mask resolution must be an int >= 8, got {resolution!r}")
    return _face_mask(int(resolution))
