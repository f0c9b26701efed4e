"""Image I/O and conversions of the pipeline: what users pass in -> float tensors, and tensors -> PIL.

* :func:`to_image_tensor`: PIL (RGB / RGBA / L / LA / P), numpy, tensors or a file path -> (3, H, W) float32 in
  [0, 1] (transparent images composited over white).
* :func:`to_mask_tensor`: a mask in the same formats -> (1, H, W) float32 in {0, 1} (1 = region to regenerate).
* :func:`resize`: (C, H, W) -> (C, height, width) (bicubic, antialiased; masks: nearest).
* :func:`fill_masked`: the inpainting source, the masked pixels set to :data:`INPAINT_FILL` (mid-grey).
* :func:`tensor_to_pil`: (3, H, W) in [0, 1] -> RGB PIL (the pipeline's ``output_type="pil"``, ``cologen sample``).
* :func:`canny`: a photo (3, H, W) -> its kornia Canny edges (3, H, W), the data builders' function.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

__all__ = ["INPAINT_FILL", "ImageBatch", "ImageInput", "canny", "fill_masked", "resize", "tensor_to_pil",
           "to_image_tensor", "to_mask_tensor"]

#: Fill of the masked region of an inpainting source, RGB (mid-grey; 128 / 127.5 - 1 ~ 0 in [-1, 1]). The same
#: value as the data builders' ``fill="grey"`` and Shapes-5's ``INPAINT_FILL``, so inference sees what training saw.
INPAINT_FILL: tuple[int, int, int] = (128, 128, 128)
_IMAGE_MODES = ("RGB", "RGBA", "L", "LA", "P")
_MASK_MODES = ("1", "L", "LA", "RGB", "RGBA", "P", "I", "F")

#: one image as the pipeline accepts it (see :func:`to_image_tensor`)
ImageInput = Union[Image.Image, np.ndarray, Tensor, str, os.PathLike]
#: one image or a batch (a list, or a 4-D array / tensor)
ImageBatch = Union[ImageInput, Sequence[ImageInput]]


def _open(path: str | os.PathLike, name: str) -> Image.Image:
    """The image file at ``path``, fully read (FileNotFoundError / ValueError naming ``name``)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{name}: image file {p} does not exist")
    try:
        with Image.open(p) as im:
            im.load()
            return im.copy()
    except OSError as err:
        raise ValueError(f"{name}: cannot read {p} as an image: {err}") from err


def _composite_on_white(image: Image.Image) -> Image.Image:
    """An image with transparency -> RGB over a white background."""
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(canvas, rgba).convert("RGB")


def to_image_tensor(image: ImageInput, name: str = "image") -> Tensor:
    """Any supported image -> float32 tensor (3, H, W) in [0, 1] on CPU.

    Accepted:
      * PIL images in mode RGB; RGBA / LA / P-with-transparency (composited over white); L / LA (grey replicated
        to RGB); P (palette, converted). Other modes (CMYK, I, F, 1, YCbCr, ...) raise ValueError naming the mode.
      * numpy arrays (H, W), (H, W, 1), (H, W, 3), (H, W, 4): uint8 in [0, 255] or float in [0, 1].
      * tensors (3, H, W), (1, H, W) or (H, W), float in [0, 1] (the pipeline's ``output_type="pt"`` range), or
        uint8.
      * a file path (opened with PIL).

    Raises:
        ValueError / TypeError naming ``name`` and the problem (mode, shape, dtype, value range).
    """
    if isinstance(image, (str, os.PathLike)):
        image = _open(image, name)
    if isinstance(image, Image.Image):
        mode = image.mode
        if mode not in _IMAGE_MODES:
            raise ValueError(
                f"{name}: unsupported PIL image mode {mode!r}; expected one of {_IMAGE_MODES} "
                f"(convert it first, e.g. image.convert('RGB'))"
            )
        if mode in ("RGBA", "LA") or (mode == "P" and "transparency" in image.info):
            image = _composite_on_white(image)
        elif mode != "RGB":
            image = image.convert("RGB")
        arr = np.asarray(image, dtype=np.uint8)
        return torch.from_numpy(arr.astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
            raise ValueError(f"{name}: numpy image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}")
        if arr.dtype == np.uint8:
            x = arr.astype(np.float32) / 255.0
        elif np.issubdtype(arr.dtype, np.floating):
            x = arr.astype(np.float32)
            _check_unit_range(x.min(), x.max(), name)
        else:
            raise ValueError(f"{name}: numpy image dtype must be uint8 or float, got {arr.dtype}")
        if x.shape[-1] == 4:  # composite over white
            alpha = x[..., 3:4]
            x = x[..., :3] * alpha + (1.0 - alpha)
        if x.shape[-1] == 1:
            x = np.repeat(x, 3, axis=-1)
        return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1).contiguous()
    if isinstance(image, Tensor):
        x = image.detach()
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[0] not in (1, 3):
            raise ValueError(f"{name}: tensor image must be (3, H, W), (1, H, W) or (H, W), got {tuple(image.shape)}")
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        elif x.is_floating_point():
            x = x.float().cpu()
            _check_unit_range(float(x.min()), float(x.max()), name)
        else:
            raise ValueError(f"{name}: tensor image dtype must be float or uint8, got {x.dtype}")
        return x.expand(3, -1, -1).contiguous().cpu()
    raise TypeError(f"{name}: expected a PIL image, numpy array, tensor or file path, got {type(image).__name__}")


def _check_unit_range(lo: float, hi: float, name: str) -> None:
    if lo < -1e-4 or hi > 1 + 1e-4:
        raise ValueError(f"{name}: float images must be in [0, 1], got values in [{lo:.3f}, {hi:.3f}]")


def to_mask_tensor(mask: ImageInput, name: str = "mask") -> Tensor:
    """A mask -> float32 tensor (1, H, W) with values {0, 1} on CPU; 1 (white, >= 50 %) = region to regenerate.

    Accepted: PIL modes 1 / L / LA / RGB / RGBA / P / I / F (RGB-like ones are converted to luminance, alpha is
    ignored), numpy (H, W) / (H, W, 1) bool / uint8 / float in [0, 1], tensors (H, W) / (1, H, W), file paths.
    """
    if isinstance(mask, (str, os.PathLike)):
        mask = _open(mask, name)
    if isinstance(mask, Image.Image):
        if mask.mode not in _MASK_MODES:
            raise ValueError(f"{name}: unsupported PIL mask mode {mask.mode!r}; expected one of {_MASK_MODES}")
        if mask.mode in ("I", "F"):
            arr = np.asarray(mask, dtype=np.float32)
            top = 255.0 if arr.max() > 1.0 else 1.0
            m = arr / top
        else:
            m = np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
        return torch.from_numpy((m >= 0.5).astype(np.float32))[None]
    if isinstance(mask, np.ndarray):
        arr = mask[..., 0] if mask.ndim == 3 and mask.shape[-1] == 1 else mask
        if arr.ndim != 2:
            raise ValueError(f"{name}: numpy mask must be (H, W) or (H, W, 1), got {mask.shape}")
        if arr.dtype == np.bool_:
            m = arr.astype(np.float32)
        elif arr.dtype == np.uint8:
            m = arr.astype(np.float32) / 255.0
        elif np.issubdtype(arr.dtype, np.floating):
            m = arr.astype(np.float32)
            _check_unit_range(float(m.min()), float(m.max()), name)
        else:
            raise ValueError(f"{name}: numpy mask dtype must be bool, uint8 or float, got {arr.dtype}")
        return torch.from_numpy((m >= 0.5).astype(np.float32))[None]
    if isinstance(mask, Tensor):
        m = mask.detach().cpu()
        if m.ndim == 3 and m.shape[0] == 1:
            m = m[0]
        if m.ndim != 2:
            raise ValueError(f"{name}: tensor mask must be (H, W) or (1, H, W), got {tuple(mask.shape)}")
        if m.dtype == torch.bool:
            m = m.float()
        elif m.dtype == torch.uint8:
            m = m.float() / 255.0
        elif m.is_floating_point():
            m = m.float()
            _check_unit_range(float(m.min()), float(m.max()), name)
        else:
            raise ValueError(f"{name}: tensor mask dtype must be bool, uint8 or float, got {m.dtype}")
        return (m >= 0.5).float()[None]
    raise TypeError(f"{name}: expected a PIL image, numpy array, tensor or file path, got {type(mask).__name__}")


def resize(x: Tensor, height: int, width: int, mode: str = "bicubic") -> Tensor:
    """(C, H, W) -> (C, height, width); no-op when the size already matches."""
    if tuple(x.shape[-2:]) == (height, width):
        return x
    if mode == "nearest":
        return F.interpolate(x[None], size=(height, width), mode="nearest")[0]
    return F.interpolate(x[None], size=(height, width), mode=mode, antialias=True, align_corners=False)[0].clamp(0, 1)


def fill_masked(image: Tensor, mask: Tensor) -> Tensor:
    """The inpainting source: image (3, H, W) in [0, 1] with the pixels where mask (1, H, W) is 1 set to
    :data:`INPAINT_FILL` (as the inpainting data builders write it)."""
    fill = torch.tensor(INPAINT_FILL, dtype=torch.float32).view(3, 1, 1) / 255.0
    return image * (1 - mask) + fill * mask


def tensor_to_pil(x: Tensor) -> Image.Image:
    """(3, H, W) float in [0, 1] -> RGB PIL (values rounded to uint8; out-of-range values clamped)."""
    arr = (x.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, mode="RGB")


def canny(image: Tensor, low: float = 0.1, high: float = 0.2) -> Tensor:
    """(3, H, W) in [0, 1] photo -> (3, H, W) in {0, 1} canny edges (kornia, the data builders' function)."""
    from lit_cologen.data.builders.detectors import canny_edges

    return to_image_tensor(canny_edges(tensor_to_pil(image), low, high), "canny")
