"""Upstream's face warp and paste-back arithmetic in torch, for the CPU and for CUDA.

Upstream LatentSync (`latentsync/utils/affine_transform.py`, `AlignRestore`) warps with
kornia; kornia is not a dependency here, so its few functions upstream calls are written
out below with kornia's own float32 arithmetic (pixel-index matrices normalised to
[-1, 1], `align_corners=True` grids, "fill" padding as `sample + (1 - sampled ones) * fill`):

* `crop_faces_torch`: `align_warp_face` up to its uint8 step: bilinear, fill 127, then
  truncation (`astype(uint8)`, not rounding). The pipeline resizes the crop to res x res
  with OpenCV's Lanczos afterwards (`align.warp_face`), as upstream does.
* `paste_faces_torch`: `restore_video` + `restore_img`: the float face in [-1, 1] (the VAE
  decoder's scale, no clamp, no uint8 step) resized to the crop size with bicubic +
  antialias (what torchvision's `resize` runs for tensors), warped back bilinearly with
  fill 127, mapped with `(x / 2 + 0.5).clamp(0, 1) * 255`, masked by the warped all-ones
  crop eroded 2x2, blended through the feathered alpha, truncated to uint8.

Both run on whatever device their tensors are on; the OpenCV-free CPU path
(`paste.paste_faces`, `align.warp_faces`) calls the same functions, so `paste_backend:
cpu` and `paste_backend: torch` give the same pixels up to float rounding of the device.
Matrices are (2, 3) frame -> crop in pixel-index coordinates, as upstream's.

The paste works on the face's box in the frame (plus the feathering margin), not the
whole frame: the sampling grid of a box is the whole frame's grid at those pixels (same
normalisation, same matrix), and outside the box upstream's blend returns the frame.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .align import FILL_VALUE, crop_size

# kornia.morphology.erosion's "geodesic" border: pixels outside the image count as this
# (larger than any mask value), so they never win the minimum.
_GEODESIC_BORDER = 1e4


def feather_parameters(alpha_area: float) -> tuple[int, int, float]:
    """(second erosion size, blur size, blur sigma) for an eroded alpha of this area (pixels).

    Upstream: `w_edge = int(area ** 0.5) // 20`, erosion `2 w_edge`, blur `2 w_edge + 1`,
    sigma `0.3 ((size - 1) / 2 - 1) + 0.8`.
    """
    w_edge = int(max(float(alpha_area), 0.0) ** 0.5) // 20
    blur_size = 2 * w_edge + 1
    sigma = 0.3 * ((blur_size - 1) * 0.5 - 1) + 0.8
    return 2 * w_edge, blur_size, sigma


# ------------------------------------------------------------------ kornia's geometry, float32


def _homography(affine: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) -> (B, 3, 3) with a last row (0, 0, 1) (kornia convert_affinematrix_to_homography)."""
    matrix = F.pad(affine, [0, 0, 0, 1], "constant", value=0.0)
    matrix[..., -1, -1] += 1.0
    return matrix


def _inverse(matrix: torch.Tensor) -> torch.Tensor:
    """kornia's `_torch_inverse_cast`: inverse in float32 (or float64), back to the input dtype."""
    dtype = matrix.dtype if matrix.dtype in (torch.float32, torch.float64) else torch.float32
    return torch.inverse(matrix.to(dtype)).to(matrix.dtype)


def _pixel_to_normalised(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """kornia `normal_transform_pixel`: pixel indices -> [-1, 1] (corners at +-1)."""
    matrix = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, -1.0], [0.0, 0.0, 1.0]])
    width_denom = 1e-14 if width == 1 else width - 1.0
    height_denom = 1e-14 if height == 1 else height - 1.0
    matrix[0, 0] = matrix[0, 0] * 2.0 / width_denom
    matrix[1, 1] = matrix[1, 1] * 2.0 / height_denom
    return matrix.unsqueeze(0).to(like)


def _sampling_theta(affine: torch.Tensor, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> torch.Tensor:
    """The (B, 2, 3) `affine_grid` theta of kornia `warp_affine(src, affine, dst_hw)`."""
    matrix = _homography(affine)
    src_norm = _pixel_to_normalised(src_hw[0], src_hw[1], matrix)
    dst_norm = _pixel_to_normalised(dst_hw[0], dst_hw[1], matrix)
    dst_norm_from_src_norm = dst_norm @ (matrix @ _inverse(src_norm))
    return _inverse(dst_norm_from_src_norm)[:, :2, :]


def _grid(theta: torch.Tensor, dst_hw: tuple[int, int], box: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """`F.affine_grid(theta, (B, C, h, w), align_corners=True)`, or its rows and columns inside
    `box` (x0, y0, x1, y1): the same base coordinates and the same product, fewer pixels."""
    height, width = dst_hw
    batch = theta.shape[0]
    if box is None or tuple(box) == (0, 0, width, height):
        return F.affine_grid(theta, [batch, 1, height, width], align_corners=True)
    x0, y0, x1, y1 = box

    def steps(count: int) -> torch.Tensor:  # affine_grid's linspace_from_neg_one
        if count <= 1:
            return torch.zeros(1, dtype=theta.dtype, device=theta.device)
        return torch.linspace(-1, 1, count, dtype=theta.dtype, device=theta.device)

    xs = steps(width)[x0:x1]
    ys = steps(height)[y0:y1]
    shape = (y1 - y0, x1 - x0)
    base = torch.stack([xs.expand(shape), ys[:, None].expand(shape), torch.ones(shape, dtype=theta.dtype,
                                                                                device=theta.device)], dim=-1)
    base = base.unsqueeze(0).expand(batch, *shape, 3).reshape(batch, -1, 3)
    return base.bmm(theta.transpose(1, 2)).view(batch, *shape, 2)


def _sample(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _sample_filled(image: torch.Tensor, grid: torch.Tensor, fill: float) -> tuple[torch.Tensor, torch.Tensor]:
    """kornia's "fill" padding: (sample + (1 - sampled ones) * fill, sampled ones)."""
    # an expanded one (no memory) samples like a tensor of ones
    ones = torch.ones((1, 1, 1, 1), dtype=image.dtype, device=image.device).expand(image.shape[0], 1,
                                                                                   *image.shape[-2:])
    coverage = _sample(ones, grid)
    return _sample(image, grid) + (1 - coverage) * fill, coverage


def _erode(alpha: torch.Tensor, size: int) -> torch.Tensor:
    """Min filter of a (B, 1, h, w) mask over a size x size window anchored at (size // 2, size // 2),
    pixels outside ignored: kornia's erosion (geodesic border) and cv2.erode alike."""
    before, after = size // 2, size - 1 - size // 2
    padded = F.pad(alpha, (before, after, before, after), value=_GEODESIC_BORDER)
    # a rectangular min filter is separable: rows, then columns
    rows = -F.max_pool2d(-padded, kernel_size=(1, size), stride=1)
    return -F.max_pool2d(-rows, kernel_size=(size, 1), stride=1)


def _gaussian_blur(image: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """kornia `gaussian_blur2d(image, (size, size), (sigma, sigma))`: separable, reflect border,
    the kernel computed in the image's dtype."""
    if size == 1:
        return image
    sigma_t = torch.tensor(sigma, dtype=image.dtype, device=image.device)
    x = torch.arange(size, dtype=image.dtype, device=image.device) - size // 2
    kernel = torch.exp(-x.pow(2.0) / (2 * sigma_t.pow(2.0)))
    kernel = kernel / kernel.sum()
    half = size // 2
    rows = F.conv2d(F.pad(image, (half, half, 0, 0), mode="reflect"), kernel.view(1, 1, 1, size))
    return F.conv2d(F.pad(rows, (0, 0, half, half), mode="reflect"), kernel.view(1, 1, size, 1))


def _as_affine(matrix, device) -> torch.Tensor:
    """A (2, 3) frame -> crop matrix as upstream hands it to kornia: float32, (1, 2, 3)."""
    return torch.as_tensor(np.asarray(matrix, dtype=np.float64), device=device).to(torch.float32).unsqueeze(0)


# ------------------------------------------------------------------ the crop


def crop_faces_torch(frames: torch.Tensor, matrices, resolution: int) -> torch.Tensor:
    """(N, 3, H, W) frames (uint8 or float, 0..255) -> (N, 3, 100r, 75r) uint8 face crops.

    Upstream's `align_warp_face`: kornia `warp_affine` in float32, bilinear, fill 127,
    then truncation to uint8. Frames whose matrix is not finite get a crop of 127.
    """
    crop_hw = crop_size(resolution)
    out = torch.full((frames.shape[0], 3, *crop_hw), FILL_VALUE, dtype=torch.uint8, device=frames.device)
    matrices = np.asarray(matrices, dtype=np.float64)
    for index in range(frames.shape[0]):
        if not np.isfinite(matrices[index]).all():
            continue
        frame = frames[index : index + 1].to(torch.float32)
        theta = _sampling_theta(_as_affine(matrices[index], frames.device), tuple(frame.shape[-2:]), crop_hw)
        crop, _ = _sample_filled(frame, _grid(theta, crop_hw), float(FILL_VALUE))
        # numpy's astype(uint8) of values in 0..255: truncation
        out[index] = crop[0].clamp_(0, 255).to(torch.uint8)
    return out


def warp_faces_torch(frames: torch.Tensor, matrices, resolution: int) -> torch.Tensor:
    """(N, 3, H, W) frames -> (N, 3, res, res) float faces in 0..255 (NaN matrices: 127).

    The crop is upstream's (`crop_faces_torch`); the resize to res x res is bicubic with
    antialiasing here, where the pipeline (`align.warp_face`) and upstream use OpenCV's
    Lanczos: the two agree to about a grey level, not bit for bit.
    """
    crops = crop_faces_torch(frames, matrices, resolution).to(torch.float32)
    faces = F.interpolate(crops, size=(resolution, resolution), mode="bicubic", antialias=True, align_corners=False)
    return faces.clamp(0, 255)


# ------------------------------------------------------------------ the paste-back


def resize_faces_to_crop(faces: torch.Tensor, resolution: int) -> torch.Tensor:
    """(N, 3, res, res) float faces -> (N, 3, 100r, 75r) float32: torchvision's
    `resize(face, crop size, BICUBIC, antialias=True)` on a float tensor (no clamp)."""
    return F.interpolate(faces.to(torch.float32), size=crop_size(resolution), mode="bicubic", antialias=True,
                         align_corners=False)


def paste_box(matrix, crop_hw: tuple[int, int], frame_hw: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the frame that a paste can change, with the feathering margin;
    None when the face lies outside the frame. Outside it upstream's blend gives the frame."""
    matrix = np.asarray(matrix, dtype=np.float64)
    height, width = crop_hw
    linear = matrix[:, :2]
    inverse_linear = np.linalg.inv(linear)
    inverse_shift = -inverse_linear @ matrix[:, 2]
    corners = np.array([[-1.0, -1.0], [width, -1.0], [-1.0, height], [width, height]])
    mapped = corners @ inverse_linear.T + inverse_shift
    # the footprint's area bounds the alpha's, hence the feathering's reach
    area = abs(np.linalg.det(inverse_linear)) * width * height
    erosion, blur_size, _ = feather_parameters(area)
    margin = blur_size // 2 + max(erosion, 3) + 3
    frame_h, frame_w = frame_hw
    x0 = max(int(math.floor(mapped[:, 0].min())) - margin, 0)
    y0 = max(int(math.floor(mapped[:, 1].min())) - margin, 0)
    x1 = min(int(math.ceil(mapped[:, 0].max())) + margin + 1, frame_w)
    y1 = min(int(math.ceil(mapped[:, 1].max())) + margin + 1, frame_h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def restore_box(frame_box: torch.Tensor, face_crop: torch.Tensor, matrix, frame_hw: tuple[int, int],
                box: tuple[int, int, int, int]) -> torch.Tensor:
    """Upstream's `restore_img` on one box of one frame.

    frame_box (3, y1-y0, x1-x0) float32, 0..255: the frame's pixels inside `box`.
    face_crop (3, 100r, 75r) float32 in about [-1, 1]: the generated face at crop size.
    Returns the blended box, float32, before upstream's truncation to uint8.
    """
    crop_hw = tuple(face_crop.shape[-2:])
    affine = _as_affine(matrix, face_crop.device)
    inverse = _inverse(_homography(affine))[:, :2, :3]  # kornia invert_affine_transform
    grid = _grid(_sampling_theta(inverse, crop_hw, frame_hw), frame_hw, box)
    face, coverage = _sample_filled(face_crop.unsqueeze(0), grid, float(FILL_VALUE))
    face = (face / 2 + 0.5).clamp(0, 1) * 255
    # the warped all-ones crop (zero padding) is the coverage the fill used
    alpha = _erode(coverage, 2)
    pasted = alpha * face
    erosion, blur_size, sigma = feather_parameters(float(alpha.float().sum()))
    # upstream erodes with cv2, which takes an empty (0 x 0) kernel for its default 3 x 3
    centre = _erode(alpha, erosion if erosion > 0 else 3)
    soft = _gaussian_blur(centre, blur_size, sigma)
    return (soft * pasted + (1 - soft) * frame_box.unsqueeze(0))[0]


def paste_faces_torch(frames: torch.Tensor, faces: torch.Tensor, matrices, resolution: int) -> torch.Tensor:
    """(N, 3, H, W) frames (0..255) with (N, 3, res, res) generated faces pasted back.

    `faces` are float in about [-1, 1] (the decoder's scale, as upstream's `restore_video`
    gets them), at res x res or already at the crop size. Returns float32 frames holding
    whole numbers: upstream's uint8 truncation is applied (`.to(torch.uint8)` gives the
    output frames). Frames whose matrix is not finite come back unchanged.
    """
    if not torch.is_floating_point(faces):
        raise TypeError("paste_faces_torch: faces must be float in [-1, 1] (the decoder's scale)")
    matrices = np.asarray(matrices, dtype=np.float64)
    frame_hw = tuple(frames.shape[-2:])
    crop_hw = crop_size(resolution)
    out = frames.to(torch.float32, copy=True)
    wanted = [index for index in range(frames.shape[0]) if np.isfinite(matrices[index]).all()]
    if not wanted:
        return out
    crops = faces[wanted].to(torch.float32)
    if tuple(crops.shape[-2:]) != crop_hw:
        crops = resize_faces_to_crop(crops, resolution)
    for crop, index in zip(crops, wanted):
        box = paste_box(matrices[index], crop_hw, frame_hw)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        region = out[index, :, y0:y1, x0:x1]
        blended = restore_box(region, crop, matrices[index], frame_hw, box)
        region.copy_(blended.clamp_(0, 255).trunc_())
    return out
