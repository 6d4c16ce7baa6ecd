"""JPEG's view of an image: full-range BT.601 YCbCr and the orthonormal 2-D DCT-II of 8x8 blocks.

Everything works on torch tensors so that the same code serves the finite-difference and the
autograd paths of :mod:`lossyvision.sensitivity`. YCbCr values are in JPEG's 0..255 units (RGB
inputs are floats in [0, 1]); a DCT coefficient of 1 is therefore one JPEG "unit".

Shapes: images are ``[..., 3, H, W]`` with H and W multiples of 8; blockwise coefficients are
``[..., Hb, Wb, 8, 8]`` with ``Hb = H // 8``, ``Wb = W // 8`` (block ``b = row * Wb + col``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

BLOCK = 8
CHANNELS = ("Y", "Cb", "Cr")

#: JPEG (JFIF) full-range BT.601: ``ycbcr = RGB_TO_YCBCR @ rgb255 + YCBCR_OFFSET``.
RGB_TO_YCBCR = np.array([
    [0.299, 0.587, 0.114],
    [-0.168735891647856, -0.331264108352144, 0.5],
    [0.5, -0.418687589158345, -0.081312410841655],
], dtype=np.float64)
YCBCR_OFFSET = np.array([0.0, 128.0, 128.0], dtype=np.float64)
#: The exact inverse, so that the round trip is exact up to float rounding.
YCBCR_TO_RGB = np.linalg.inv(RGB_TO_YCBCR)


def dct_matrix(n: int = BLOCK) -> np.ndarray:
    """Orthonormal DCT-II matrix ``D`` (``D @ D.T == I``): row ``k`` is the k-th cosine basis vector."""
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    d = np.cos(math.pi * (2 * x + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


def basis_function(i: int, j: int, n: int = BLOCK) -> np.ndarray:
    """The 8x8 pixel pattern of coefficient ``(i, j)`` (vertical frequency i, horizontal j), unit norm."""
    d = dct_matrix(n)
    return np.outer(d[i], d[j])


def _t(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(a, dtype=like.dtype, device=like.device)


def rgb_to_ycbcr(rgb01: torch.Tensor) -> torch.Tensor:
    """``[..., 3, H, W]`` RGB in [0, 1] -> YCbCr in JPEG's 0..255 units."""
    m = _t(RGB_TO_YCBCR, rgb01)
    out = torch.einsum("ck,...khw->...chw", m, rgb01 * 255.0)
    return out + _t(YCBCR_OFFSET, rgb01)[:, None, None]


def ycbcr_to_rgb(ycbcr: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr` (no clipping: perturbations may leave [0, 1] slightly)."""
    m = _t(YCBCR_TO_RGB, ycbcr)
    centred = ycbcr - _t(YCBCR_OFFSET, ycbcr)[:, None, None]
    return torch.einsum("kc,...chw->...khw", m, centred) / 255.0


def check_block_shape(h: int, w: int) -> None:
    if h % BLOCK or w % BLOCK or h == 0 or w == 0:
        raise ValueError(f"image size {h}x{w} must be a positive multiple of {BLOCK} in both directions")


def block_dct(x: torch.Tensor) -> torch.Tensor:
    """``[..., H, W]`` -> ``[..., H/8, W/8, 8, 8]`` orthonormal DCT-II coefficients of each block."""
    h, w = x.shape[-2:]
    check_block_shape(h, w)
    d = _t(dct_matrix(), x)
    blocks = x.reshape(*x.shape[:-2], h // BLOCK, BLOCK, w // BLOCK, BLOCK).transpose(-3, -2)
    return d @ blocks @ d.T


def block_idct(coefficients: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`block_dct`: ``[..., Hb, Wb, 8, 8]`` -> ``[..., 8 Hb, 8 Wb]``."""
    d = _t(dct_matrix(), coefficients)
    blocks = d.T @ coefficients @ d
    hb, wb = blocks.shape[-4], blocks.shape[-3]
    return blocks.transpose(-3, -2).reshape(*blocks.shape[:-4], hb * BLOCK, wb * BLOCK)


def image_to_coefficients(rgb01: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] ``[..., 3, H, W]`` -> blockwise DCT of Y, Cb, Cr: ``[..., 3, Hb, Wb, 8, 8]``."""
    return block_dct(rgb_to_ycbcr(rgb01))


def coefficients_to_image(coefficients: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`image_to_coefficients`."""
    return ycbcr_to_rgb(block_idct(coefficients))


def perturbation(channel: int, i: int, j: int, *, block: tuple[int, int] | None, height: int, width: int,
                 eps: float = 1.0, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """The RGB-[0, 1] change ``[3, H, W]`` made by adding ``eps`` to coefficient ``(i, j)`` of ``channel``.

    ``block=(row, col)`` perturbs one block; ``None`` perturbs every block (the study's illustration).
    The map is linear, so the change does not depend on the image.
    """
    check_block_shape(height, width)
    pattern = torch.as_tensor(basis_function(i, j) * eps, dtype=dtype, device=device)
    ycc = torch.zeros(3, height, width, dtype=dtype, device=device)
    if block is None:
        ycc[channel] = pattern.repeat(height // BLOCK, width // BLOCK)
    else:
        r, c = block
        ycc[channel, r * BLOCK:(r + 1) * BLOCK, c * BLOCK:(c + 1) * BLOCK] = pattern
    mix = torch.as_tensor(YCBCR_TO_RGB[:, channel], dtype=dtype, device=device)
    return mix[:, None, None] * ycc[channel][None] / 255.0


def gradient_to_coefficients(grad_rgb01: torch.Tensor) -> torch.Tensor:
    """Chain rule through the linear transform: d/d(coefficient) from d/d(RGB in [0, 1]).

    If ``g = dp/dx`` for ``x`` RGB in [0, 1], then ``dp/dθ = <g, dx/dθ>`` for each blockwise YCbCr
    DCT coefficient ``θ``. ``x = YCBCR_TO_RGB @ idct(θ) / 255`` and the DCT is orthonormal, so the
    derivative is the blockwise DCT of ``YCBCR_TO_RGB.T @ g / 255``: ``[..., 3, Hb, Wb, 8, 8]``.
    """
    m = _t(YCBCR_TO_RGB, grad_rgb01)
    g_ycc = torch.einsum("kc,...khw->...chw", m, grad_rgb01) / 255.0
    return block_dct(g_ycc)
