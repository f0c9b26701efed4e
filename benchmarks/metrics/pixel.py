"""Pixel metrics on [0, 1] images: L1, L2, PSNR, SSIM, MS-SSIM (torchmetrics functional), per sample.

Every function takes ``preds``, ``target`` as float tensors ``[B, C, H, W]`` in [0, 1] and returns ``[B]``.
``load_images01`` turns PIL images into that form, resizing to a reference size the way MagicBrush's
``image_eval.py`` does (PIL bicubic resize of the generated image to the reference's size).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchmetrics.functional.image import (
    multiscale_structural_similarity_index_measure,
    structural_similarity_index_measure,
)

from .similarity import MeanMetricSum

__all__ = [
    "pil_to_tensor01",
    "load_images01",
    "l1_distance",
    "l2_distance",
    "psnr",
    "ssim",
    "ms_ssim",
    "L1Distance",
]


def pil_to_tensor01(image: Image.Image, mode: str = "RGB") -> Tensor:
    """One PIL image -> float tensor ``[C, H, W]`` in [0, 1] (C = 3 for RGB, 1 for L)."""
    arr = np.asarray(image.convert(mode), dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))


def load_images01(
    images: Sequence[Image.Image], size: tuple[int, int] | None = None, mode: str = "RGB"
) -> Tensor:
    """PIL images -> ``[B, C, H, W]`` in [0, 1]; ``size`` = (width, height) to resize to (PIL bicubic) first."""
    out = []
    for im in images:
        if size is not None and im.size != tuple(size):
            im = im.convert(mode).resize(tuple(size), Image.Resampling.BICUBIC)
        out.append(pil_to_tensor01(im, mode))
    return torch.stack(out)


def _check(preds: Tensor, target: Tensor) -> None:
    if preds.shape != target.shape or preds.ndim != 4:
        raise ValueError(f"expected two [B, C, H, W] tensors of one shape, got {tuple(preds.shape)} and {tuple(target.shape)}")


def l1_distance(preds: Tensor, target: Tensor) -> Tensor:
    """Mean absolute difference per sample ``[B]`` (Emu Edit / MagicBrush L1 on [0, 1] pixels)."""
    _check(preds, target)
    return (preds.float() - target.float()).abs().flatten(1).mean(1)


def l2_distance(preds: Tensor, target: Tensor) -> Tensor:
    """Mean squared difference per sample ``[B]`` (MagicBrush's "L2")."""
    _check(preds, target)
    return (preds.float() - target.float()).pow(2).flatten(1).mean(1)


def psnr(preds: Tensor, target: Tensor, data_range: float = 1.0, max_value: float = 100.0) -> Tensor:
    """PSNR in dB per sample ``[B]``; identical images give ``max_value`` (ControlNet++ caps inf at 100)."""
    mse = l2_distance(preds, target)
    out = 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-20))
    return torch.where(mse == 0, torch.full_like(out, max_value), out.clamp_max(max_value))


def ssim(preds: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """SSIM per sample ``[B]`` (Gaussian 11x11, sigma 1.5; torchmetrics defaults)."""
    _check(preds, target)
    return structural_similarity_index_measure(preds.float(), target.float(), data_range=data_range, reduction="none")


def ms_ssim(preds: Tensor, target: Tensor, data_range: float = 1.0, **kwargs) -> Tensor:
    """MS-SSIM per sample ``[B]`` (torchmetrics defaults: 5 scales, kernel 11; needs H, W > 160)."""
    _check(preds, target)
    return multiscale_structural_similarity_index_measure(
        preds.float(), target.float(), data_range=data_range, reduction="none", **kwargs
    )


class L1Distance(MeanMetricSum):
    """Mean L1 distance over samples (DDP-safe); inputs ``preds``, ``target`` ``[B, C, H, W]``."""

    higher_is_better = False

    def values(self, preds: Tensor, target: Tensor) -> Tensor:  # type: ignore[override]
        return l1_distance(preds, target)
