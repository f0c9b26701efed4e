"""Uploaded images: read only as raster images, within the app's size limits; the inpainting mask from drawn layers.

Every file the app reads comes in through :func:`open_upload`:

1. its size in bytes is checked before it is opened (``UploadLimits.max_bytes``; Gradio's server is given the same
   limit, ``launch(max_file_size=...)``, and refuses a larger upload before it reaches the app);
2. PIL reads only its header, restricted to raster formats (:data:`IMAGE_FORMATS`), and the pixel count is checked
   against ``UploadLimits.max_pixels`` before a single pixel is decoded;
3. only then are the pixels decoded. Nothing uploaded is executed or unpickled.

The inpaint tab's editor returns the uploaded image as its ``background`` and what the user drew as RGBA
``layers``; :func:`mask_from_layers` turns them into the mask the pipeline expects (mode ``L``, same size as the
image)::

    mask = 255  where any layer has paint (alpha > 0)     -> the region to regenerate
    mask = 0    elsewhere                                 -> kept

Refusals are :class:`~lit_cologen.errors.UserError` with a one-line message saying what to do.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image

from lit_cologen.app.defaults import MAX_IMAGE_PIXELS, MAX_UPLOAD_MB
from lit_cologen.errors import UserError

__all__ = ["IMAGE_FORMATS", "UploadLimits", "editor_image_and_mask", "mask_from_layers", "open_upload"]

#: the only formats PIL may read an upload as (raster images; no EPS / PDF, which would run an interpreter)
IMAGE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")


@dataclass(frozen=True)
class UploadLimits:
    """What the app accepts from one upload.

    max_bytes:  file size (also Gradio's ``max_file_size``, so the server refuses a larger upload first).
    max_pixels: width x height, read from the header before decoding (a small compressed file can hold a huge image).
    """

    max_bytes: int = MAX_UPLOAD_MB * 1024 * 1024
    max_pixels: int = MAX_IMAGE_PIXELS

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_pixels <= 0:
            raise UserError(f"upload limits must be > 0, got max_bytes={self.max_bytes}, max_pixels={self.max_pixels}")


def _file_size(n: int) -> str:
    """Bytes as people read them: ``20.0 MB``, ``51 KB``."""
    return f"{n / (1024 * 1024):.1f} MB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KB"


def open_upload(path: Optional[str | os.PathLike], limits: UploadLimits, name: str = "image") -> Image.Image:
    """The uploaded image at ``path``, decoded (mode as stored), after the checks of the module docstring.

    Raises:
        UserError: no upload, a file over ``limits.max_bytes``, not one of :data:`IMAGE_FORMATS`, or more pixels
            than ``limits.max_pixels``; the message names ``name`` and the limit.
    """
    if path is None or str(path) == "":
        raise UserError(f"{name}: upload an image first")
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{name}: the uploaded file is gone ({p.name}); upload it again")
    size = p.stat().st_size
    if size > limits.max_bytes:
        raise UserError(f"{name}: the file is {_file_size(size)}, over the app's limit of "
                        f"{_file_size(limits.max_bytes)} (cologen app --max-upload-mb); upload a smaller image")
    try:
        im = Image.open(p, formats=IMAGE_FORMATS)  # reads the header only
    except (OSError, Image.DecompressionBombError) as err:
        raise UserError(f"{name}: not a readable image ({', '.join(IMAGE_FORMATS)}): {err}") from err
    with im:
        w, h = im.size
        if w * h > limits.max_pixels:
            raise UserError(f"{name}: the image is {w}x{h} = {w * h} pixels, over the app's limit of "
                            f"{limits.max_pixels} (cologen app --max-image-pixels); upload a smaller image")
        try:
            im.load()
        except (OSError, ValueError) as err:
            raise UserError(f"{name}: the image file is damaged: {err}") from err
        return im.copy()


def mask_from_layers(layers: Sequence[Image.Image], size: tuple[int, int]) -> Image.Image:
    """The inpainting mask (mode ``L``, ``size`` = (W, H)): 255 where any layer has paint (alpha > 0), 0 elsewhere.

    A layer of another size (the editor cropped or resized the background) is resized to ``size`` (nearest).

    Raises:
        UserError: nothing is drawn (no layer, or only transparent ones).
    """
    mask = np.zeros((size[1], size[0]), dtype=bool)
    for layer in layers:
        alpha = layer.convert("RGBA").getchannel("A")
        if alpha.size != size:
            alpha = alpha.resize(size, Image.Resampling.NEAREST)
        mask |= np.asarray(alpha) > 0
    if not mask.any():
        raise UserError("inpaint: draw the region to regenerate on the image with the brush (the mask is empty)")
    return Image.fromarray(mask.astype(np.uint8) * 255, mode="L")


def editor_image_and_mask(value: Optional[dict[str, Any]], limits: UploadLimits) -> tuple[Image.Image, Image.Image]:
    """An ``gr.ImageEditor`` value (``type="filepath"``: ``{"background": path, "layers": [paths], "composite":
    path}``) -> (the background image, its mask from :func:`mask_from_layers`).

    Raises:
        UserError: no background uploaded, an upload over the limits, or an empty mask.
    """
    if not value or not value.get("background"):
        raise UserError("inpaint: upload an image first, then draw the region to regenerate")
    image = open_upload(value["background"], limits, "inpaint image")
    layers = [open_upload(p, limits, "inpaint mask layer") for p in value.get("layers") or [] if p]
    return image, mask_from_layers(layers, image.size)
