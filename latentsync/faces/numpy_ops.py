"""Upstream's face warp and paste-back arithmetic in numpy (+ OpenCV's exact morphology), for the CPU.

The same steps as `torch_ops` (kornia's float32 geometry, bilinear sampling written the
way `grid_sample` computes it, "fill" padding as `sample + (1 - sampled ones) * fill`,
torch's antialiased bicubic resize), on one frame at a time and in one thread per call.
The CPU stages call these from `cpu_workers` threads: torch's own CPU kernels would start
an OpenMP team of every core inside each of those threads (measured on 2 shared cores:
10x slower than one thread), while numpy and these OpenCV calls stay on their thread.

Float32 throughout, like the torch path; the two agree to float32 rounding (the order
of a few sums differs), which after upstream's truncation to uint8 moves a value by one
level in about 0.01 % of the pixels (tests/faces/test_torch_ops.py).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

F32 = np.float32


# ------------------------------------------------------------------ kornia's geometry, float32


def _homography(affine: np.ndarray) -> np.ndarray:
    matrix = np.zeros((3, 3), F32)
    matrix[:2] = affine
    matrix[2, 2] = 1
    return matrix


def _pixel_to_normalised(height: int, width: int) -> np.ndarray:
    """kornia `normal_transform_pixel`: pixel indices -> [-1, 1] (corners at +-1)."""
    matrix = np.array([[1.0, 0.0, -1.0], [0.0, 1.0, -1.0], [0.0, 0.0, 1.0]], F32)
    matrix[0, 0] = F32(2.0) / F32(1e-14 if width == 1 else width - 1.0)
    matrix[1, 1] = F32(2.0) / F32(1e-14 if height == 1 else height - 1.0)
    return matrix


def _sampling_theta(affine: np.ndarray, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> np.ndarray:
    """The (2, 3) float32 `affine_grid` theta of kornia `warp_affine(src, affine, dst_hw)`."""
    matrix = _homography(affine.astype(F32))
    src_norm = _pixel_to_normalised(*src_hw)
    dst_norm = _pixel_to_normalised(*dst_hw)
    dst_norm_from_src_norm = dst_norm @ (matrix @ np.linalg.inv(src_norm))
    return np.linalg.inv(dst_norm_from_src_norm)[:2].astype(F32)


def invert_affine(affine: np.ndarray) -> np.ndarray:
    """kornia `invert_affine_transform` in float32: (2, 3) -> (2, 3)."""
    return np.linalg.inv(_homography(affine.astype(F32)))[:2].astype(F32)


def _steps(count: int) -> np.ndarray:
    """affine_grid's base coordinates: `linspace(-1, 1, count)` (align_corners=True)."""
    if count <= 1:
        return np.zeros(1, F32)
    return np.linspace(-1, 1, count, dtype=F32)


def _source_coordinates(theta: np.ndarray, dst_hw: tuple[int, int], src_hw: tuple[int, int],
                        box: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Source pixel coordinates (x, y) of the destination pixels inside `box` (x0, y0, x1, y1):
    the affine grid, then grid_sample's unnormalisation ((g + 1) / 2 * (size - 1))."""
    height, width = dst_hw
    x0, y0, x1, y1 = box if box is not None else (0, 0, width, height)
    xs = _steps(width)[x0:x1][None, :]
    ys = _steps(height)[y0:y1][:, None]
    gx = xs * theta[0, 0] + ys * theta[0, 1] + theta[0, 2]
    gy = xs * theta[1, 0] + ys * theta[1, 1] + theta[1, 2]
    src_h, src_w = src_hw
    return (gx + F32(1)) / F32(2) * F32(src_w - 1), (gy + F32(1)) / F32(2) * F32(src_h - 1)


def _sample(image: np.ndarray, ix: np.ndarray, iy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear samples of `image` (h, w, c) at (ix, iy), zero outside, as grid_sample computes
    them (`nw * v_nw + ne * v_ne + sw * v_sw + se * v_se`), channel-planar (c, *ix.shape), and
    the coverage (the same sampling of an all-ones image, ix.shape). Both float32.

    Only the part of the image the corners reach is converted to float32, with a border of
    zeros where they reach past the image; corners outside the image get weight zero."""
    height, width = image.shape[:2]
    x0 = np.floor(ix)
    y0 = np.floor(iy)
    x1 = x0 + F32(1)
    y1 = y0 + F32(1)
    wx0, wx1 = x1 - ix, ix - x0
    wy0, wy1 = y1 - iy, iy - y0
    weights = [wx0 * wy0, wx1 * wy0, wx0 * wy1, wx1 * wy1]
    # the corners' reach, clipped to one pixel of zeros around the image
    min_x, max_x, min_y, max_y = float(x0.min()), float(x0.max()), float(y0.min()), float(y0.max())
    if not (min_x >= 0 and max_x + 1 < width and min_y >= 0 and max_y + 1 < height):
        # some corners fall outside the image: they get weight zero (grid_sample's zero padding)
        in_x0, in_x1 = (x0 >= 0) & (x0 < width), (x1 >= 0) & (x1 < width)
        in_y0, in_y1 = (y0 >= 0) & (y0 < height), (y1 >= 0) & (y1 < height)
        for k, inside in enumerate((in_x0 & in_y0, in_x1 & in_y0, in_x0 & in_y1, in_x1 & in_y1)):
            weights[k] = np.where(inside, weights[k], F32(0))
    lo_x, hi_x = int(max(min_x, -1)), int(min(max_x + 1, width))
    lo_y, hi_y = int(max(min_y, -1)), int(min(max_y + 1, height))
    if hi_x < lo_x + 1 or hi_y < lo_y + 1:  # all outside
        hi_x, hi_y = lo_x + 1, lo_y + 1
    sub_w = hi_x - lo_x + 1
    channels = image.shape[2] if image.ndim == 3 else 1
    # channel-planar, in the image's own dtype (uint8 frames gather a quarter of the bytes)
    sub = np.zeros((channels, hi_y - lo_y + 1, sub_w), image.dtype)
    src_x0, src_x1 = max(lo_x, 0), min(hi_x, width - 1) + 1
    src_y0, src_y1 = max(lo_y, 0), min(hi_y, height - 1) + 1
    if src_x1 > src_x0 and src_y1 > src_y0:
        part = image[src_y0:src_y1, src_x0:src_x1].reshape(src_y1 - src_y0, src_x1 - src_x0, channels)
        sub[:, src_y0 - lo_y : src_y1 - lo_y, src_x0 - lo_x : src_x1 - lo_x] = part.transpose(2, 0, 1)
    planes = sub.reshape(channels, -1)
    nw = ((np.clip(y0, lo_y, hi_y - 1).astype(np.intp) - lo_y) * sub_w
          + (np.clip(x0, lo_x, hi_x - 1).astype(np.intp) - lo_x)).reshape(-1)
    corners = (nw, nw + 1, nw + sub_w, nw + sub_w + 1)
    value = coverage = None
    for index, weight in zip(corners, weights):
        term = np.take(planes, index, axis=1).astype(F32) * weight.reshape(1, -1)
        value = term if value is None else value + term
        coverage = weight if coverage is None else coverage + weight
    return value.reshape(channels, *ix.shape), coverage


# ------------------------------------------------------------------ the crop


def crop_face(frame_rgb: np.ndarray, matrix: np.ndarray, crop_hw: tuple[int, int], fill: float) -> np.ndarray:
    """(crop_h, crop_w, 3) uint8: upstream's `align_warp_face` (kornia bilinear in float32,
    fill `fill`, truncated to uint8)."""
    frame_hw = frame_rgb.shape[:2]
    theta = _sampling_theta(np.asarray(matrix, np.float64), frame_hw, crop_hw)
    ix, iy = _source_coordinates(theta, crop_hw, frame_hw)
    value, coverage = _sample(frame_rgb, ix, iy)
    value += (F32(1) - coverage) * F32(fill)
    crop = np.clip(value, 0, 255, out=value).astype(np.uint8)  # astype: truncation, as upstream's
    return np.ascontiguousarray(crop.transpose(1, 2, 0))


# ------------------------------------------------------------------ the resize


def _bicubic_aa(x: np.ndarray) -> np.ndarray:
    """torch's antialiasing bicubic filter (Keys, a = -0.5, as PIL)."""
    a = F32(-0.5)
    x = np.abs(x)
    near = ((a + F32(2)) * x - (a + F32(3))) * x * x + F32(1)
    far = ((a * x - F32(5) * a) * x + F32(8) * a) * x - F32(4) * a
    return np.where(x < 1, near, np.where(x < 2, far, F32(0))).astype(F32)


def _resize_taps(input_size: int, output_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, weights), each (output_size, taps): torch's `_compute_weights_aa` for bicubic."""
    scale = F32(input_size / output_size)
    support = F32(2.0) * scale if scale >= 1 else F32(2.0)
    invscale = F32(1.0) / scale if scale >= 1 else F32(1.0)
    taps = int(math.ceil(float(support))) * 2 + 1
    centre = scale * (np.arange(output_size, dtype=F32) + F32(0.5))
    xmin = np.maximum((centre - support + F32(0.5)).astype(np.int64), 0)
    xsize = np.minimum((centre + support + F32(0.5)).astype(np.int64), input_size) - xmin
    j = np.arange(taps)
    weights = _bicubic_aa((j[None, :] + xmin[:, None] - centre[:, None] + F32(0.5)) * invscale)
    weights = np.where(j[None, :] < xsize[:, None], weights, F32(0))
    total = weights.sum(axis=1, dtype=F32)
    weights = np.where(total[:, None] != 0, weights / np.where(total == 0, F32(1), total)[:, None], weights)
    return np.minimum(xmin[:, None] + j[None, :], input_size - 1), weights.astype(F32)


def _resize_rows(rows: np.ndarray, output_size: int) -> np.ndarray:
    """Resample axis 0 of a C-contiguous float32 array (whole rows gathered: fast copies)."""
    index, weights = _resize_taps(rows.shape[0], output_size)
    shape = (output_size,) + (1,) * (rows.ndim - 1)
    out = np.take(rows, index[:, 0], axis=0) * weights[:, 0].reshape(shape)
    for tap in range(1, index.shape[1]):
        out += np.take(rows, index[:, tap], axis=0) * weights[:, tap].reshape(shape)
    return out


def resize_bicubic_aa(image: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """(h, w, c) float -> (out_h, out_w, c) float32: `F.interpolate(mode="bicubic", antialias=True,
    align_corners=False)` (what torchvision's resize runs on a tensor), width first, then height,
    each output the taps' products summed in order."""
    image = np.asarray(image, F32)
    out_h, out_w = out_hw
    if image.shape[1] != out_w:
        columns = np.ascontiguousarray(image.transpose(1, 0, 2))  # (w, h, c)
        image = _resize_rows(columns, out_w).transpose(1, 0, 2)
    if image.shape[0] != out_h:
        image = _resize_rows(np.ascontiguousarray(image), out_h)
    return np.ascontiguousarray(image)


# ------------------------------------------------------------------ the paste-back


def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """kornia `get_gaussian_kernel1d` in float32."""
    x = np.arange(size, dtype=F32) - F32(size // 2)
    if size % 2 == 0:
        x = x + F32(0.5)
    sigma32 = F32(sigma)
    kernel = np.exp(-(x * x) / (F32(2) * sigma32 * sigma32)).astype(F32)
    return (kernel / kernel.sum(dtype=F32)).astype(F32)


def restore_box(frame_box: np.ndarray, face_crop: np.ndarray, matrix: np.ndarray, frame_hw: tuple[int, int],
                box: tuple[int, int, int, int], fill: float, feather) -> np.ndarray:
    """Upstream's `restore_img` on one box of one frame, before the uint8 step.

    frame_box (y1-y0, x1-x0, 3) uint8 or float: the frame inside `box`; face_crop (crop_h, crop_w, 3)
    float32 in about [-1, 1] at crop size; `feather(area)` -> (erosion, blur size, sigma).
    Returns the blended box, float32.
    """
    crop_hw = face_crop.shape[:2]
    inverse = invert_affine(np.asarray(matrix, np.float64))
    theta = _sampling_theta(inverse, crop_hw, frame_hw)
    ix, iy = _source_coordinates(theta, frame_hw, crop_hw, box)
    value, coverage = _sample(face_crop, ix, iy)
    face = (value + (F32(1) - coverage) * F32(fill)).transpose(1, 2, 0)
    face = np.clip(face / F32(2) + F32(0.5), 0, 1) * F32(255)
    # the warped all-ones crop, eroded 2x2 (outside the image ignored, as kornia's geodesic border)
    alpha = cv2.erode(coverage, np.ones((2, 2), np.uint8))
    pasted = alpha[..., None] * face
    erosion, blur_size, sigma = feather(float(alpha.sum(dtype=F32)))
    # upstream's own cv2.erode; an empty kernel is OpenCV's 3x3 default, as upstream gets it
    centre = cv2.erode(alpha, np.ones((erosion, erosion), np.uint8))
    if blur_size > 1:
        kernel = gaussian_kernel(blur_size, sigma)
        soft = cv2.sepFilter2D(centre, cv2.CV_32F, kernel, kernel, borderType=cv2.BORDER_REFLECT_101)
    else:
        soft = centre
    soft = soft[..., None]
    return soft * pasted + (F32(1) - soft) * frame_box.astype(F32)
