"""Tensor versions of the face warp and paste-back (grid_sample), for CUDA.

Same matrices and same feathering as `align.warp_faces` / `paste.paste_faces`;
images are float tensors in 0..255, channels first. The warp's final resize is
bicubic with antialiasing here (Lanczos in the cv2 path), so the two agree to
about one grey level on average, not bit for bit.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .align import FILL_VALUE, crop_size
from .paste import feather_parameters


def _as_matrices(matrices, device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(matrices, dtype=np.float64), device=device)


def _sample_grid(matrices: torch.Tensor, out_hw: tuple[int, int], src_hw: tuple[int, int], dtype) -> torch.Tensor:
    """grid_sample grid: output pixel (x, y) samples source pixel M @ (x, y, 1)."""
    out_h, out_w = out_hw
    src_h, src_w = src_hw
    device = matrices.device
    ys, xs = torch.meshgrid(
        torch.arange(out_h, device=device, dtype=torch.float64), torch.arange(out_w, device=device, dtype=torch.float64), indexing="ij"
    )
    pixels = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)  # (h, w, 3)
    source = torch.einsum("nij,hwj->nhwi", matrices, pixels)  # (n, h, w, 2)
    # pixel index -> [-1, 1] with align_corners=False (pixel centres at (2i + 1) / size - 1)
    scale = torch.tensor([2.0 / src_w, 2.0 / src_h], device=device, dtype=torch.float64)
    return (source * scale + (scale / 2 - 1)).to(dtype)


def _invert(matrices: torch.Tensor) -> torch.Tensor:
    linear = matrices[:, :, :2]
    inverse_linear = torch.linalg.inv(linear)
    return torch.cat([inverse_linear, -inverse_linear @ matrices[:, :, 2:]], dim=2)


def warp_faces_torch(frames: torch.Tensor, matrices, resolution: int) -> torch.Tensor:
    """(N, 3, H, W) frames -> (N, 3, res, res) face crops. NaN matrices give crops of 127."""
    matrices = _as_matrices(matrices, frames.device)
    valid = torch.isfinite(matrices).flatten(1).all(dim=1)
    safe = torch.where(valid[:, None, None], matrices, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], device=frames.device, dtype=torch.float64))
    crop_h, crop_w = crop_size(resolution)
    grid = _sample_grid(_invert(safe), (crop_h, crop_w), frames.shape[-2:], frames.dtype)
    # zero padding around (frame - fill) is constant-fill padding around the frame
    crops = F.grid_sample(frames - FILL_VALUE, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + FILL_VALUE
    faces = F.interpolate(crops, size=(resolution, resolution), mode="bicubic", antialias=True, align_corners=False)
    faces = faces.clamp(0, 255)
    return torch.where(valid[:, None, None, None], faces, torch.full_like(faces, FILL_VALUE))


def _erode(alpha: torch.Tensor, size: int) -> torch.Tensor:
    """Min filter with cv2's anchor (size // 2) and cv2's border (outside ignored)."""
    before, after = size // 2, size - 1 - size // 2
    padded = F.pad(alpha, (before, after, before, after), value=1.0)
    # a rectangular min filter is separable: rows, then columns
    rows = -F.max_pool2d(-padded, kernel_size=(1, size), stride=1)
    return -F.max_pool2d(-rows, kernel_size=(size, 1), stride=1)


def _gaussian_blur(image: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    half = size // 2
    offsets = torch.arange(size, device=image.device, dtype=image.dtype) - half
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    padded = F.pad(image, (half, half, half, half), mode="reflect")
    blurred = F.conv2d(padded, kernel.view(1, 1, 1, size))
    return F.conv2d(blurred, kernel.view(1, 1, size, 1))


def paste_faces_torch(frames: torch.Tensor, faces: torch.Tensor, matrices, resolution: int) -> torch.Tensor:
    """(N, 3, H, W) frames with (N, 3, res, res) faces pasted back; NaN-matrix frames unchanged."""
    matrices = _as_matrices(matrices, frames.device)
    crop_h, crop_w = crop_size(resolution)
    crops = F.interpolate(faces.to(frames.dtype), size=(crop_h, crop_w), mode="bicubic", antialias=True, align_corners=False)
    out = frames.clone()
    height, width = frames.shape[-2:]
    for index in range(frames.shape[0]):
        matrix = matrices[index : index + 1]
        if not bool(torch.isfinite(matrix).all()):
            continue
        grid = _sample_grid(matrix, (height, width), (crop_h, crop_w), frames.dtype)
        face = F.grid_sample(crops[index : index + 1] - FILL_VALUE, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + FILL_VALUE
        ones = torch.ones((1, 1, crop_h, crop_w), device=frames.device, dtype=frames.dtype)
        alpha = _erode(F.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros", align_corners=False), 2)
        erosion, blur_size, sigma = feather_parameters(float(alpha.sum(dtype=torch.float64)))
        soft = _erode(alpha, erosion) if erosion > 0 else alpha
        if blur_size > 1:
            soft = _gaussian_blur(soft, blur_size, sigma)
        out[index] = (soft * (alpha * face) + (1 - soft) * frames[index : index + 1])[0]
    return out
