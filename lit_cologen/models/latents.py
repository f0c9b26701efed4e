"""Latent packing and FLUX position ids (DESIGN.md D2, D5).

FLUX packs a latent (B, C, H, W) into 2x2 patches: (B, H/2 * W/2, 4C) tokens, row-major, with position ids
(axis0, y, x). Noisy tokens use axis0 = 0; aligned sources (inpaint, ground, control, edit) use axis0 = 1 with the
same (y, x); subject references use axis0 = 1 and x shifted by the token width W/2 (D5).
"""

from __future__ import annotations

import torch
from torch import Tensor

SOURCE_LAYOUTS = ("aligned", "reference", "subject")  # "subject" is an alias of "reference"


def pack_latents(latents: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, (H/2)(W/2), 4C), identical to diffusers' FluxPipeline packing."""
    b, c, h, w = latents.shape
    if h % 2 or w % 2:
        raise ValueError(f"latent height and width must be even for 2x2 packing, got {h}x{w}")
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: Tensor, height: int, width: int) -> Tensor:
    """(B, (H/2)(W/2), 4C) -> (B, C, H, W) for a latent of `height` x `width`; inverse of `pack_latents`."""
    b, n, d = tokens.shape
    if n != (height // 2) * (width // 2):
        raise ValueError(f"{n} tokens do not match a {height}x{width} latent")
    x = tokens.view(b, height // 2, width // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, d // 4, height, width)


def latent_ids(token_h: int, token_w: int, axis0: int = 0, x_offset: int = 0, y_offset: int = 0,
               device: torch.device | None = None) -> Tensor:
    """Position ids (token_h * token_w, 3) = (axis0, y + y_offset, x + x_offset), row-major like the packing."""
    ids = torch.zeros(token_h, token_w, 3, device=device)
    ids[..., 0] = axis0
    ids[..., 1] = torch.arange(token_h, device=device)[:, None] + y_offset
    ids[..., 2] = torch.arange(token_w, device=device)[None, :] + x_offset
    return ids.reshape(token_h * token_w, 3)


def source_ids(token_h: int, token_w: int, layout: str = "aligned", device: torch.device | None = None) -> Tensor:
    """Position ids of source tokens per D5: 'aligned' -> (1, y, x); 'reference' (= 'subject') -> (1, y, x + W)."""
    if layout not in SOURCE_LAYOUTS:
        raise ValueError(f"unknown source layout {layout!r}; expected one of {SOURCE_LAYOUTS}")
    return latent_ids(token_h, token_w, axis0=1, x_offset=0 if layout == "aligned" else token_w, device=device)


def text_ids(length: int, device: torch.device | None = None) -> Tensor:
    """FLUX text position ids: zeros (length, 3)."""
    return torch.zeros(length, 3, device=device)
