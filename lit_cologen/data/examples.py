"""Samples -> training examples -> batches: resize + crop to a square resolution (or an aspect-ratio bucket),
uint8 tensors, collation.

An example holds target / source uint8 (3, H, W), mask uint8 (1, H, W) in {0, 1}, the formatted and raw prompts,
the cond type and meta (H = W = R for a square ``resolution``; (H, W) = the bucket with ``data.buckets``);
:func:`collate` turns a list of examples (all of one size) into the batch dict (float32 images in [-1, 1]).
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from .schema import Sample
from .tasks import format_prompt, source_layout


def _out_size(resolution: int | tuple[int, int]) -> tuple[int, int]:
    """``resolution`` (R, or a bucket (h, w)) -> (h, w)."""
    if isinstance(resolution, int):
        return resolution, resolution
    return int(resolution[0]), int(resolution[1])


def _crop_box(size: tuple[int, int], out: tuple[int, int], crop: str,
              rng: np.random.Generator | None) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """(resized (w, h), crop box) mapping an image of PIL ``size`` (w, h) onto ``out`` = (oh, ow): resized to cover
    it (the smallest scale with both sides >= the output's; the shorter side -> R for a square output), then
    cropped (centre, or uniformly random with ``crop="random"`` and an ``rng``)."""
    w, h = size
    oh, ow = out
    scale = max(ow / w, oh / h)  # = R / min(w, h) for a square R x R (the same float)
    rw, rh = max(ow, round(w * scale)), max(oh, round(h * scale))
    if crop == "random" and rng is not None:
        x0, y0 = int(rng.integers(0, rw - ow + 1)), int(rng.integers(0, rh - oh + 1))
    else:
        x0, y0 = (rw - ow) // 2, (rh - oh) // 2
    return (rw, rh), (x0, y0, x0 + ow, y0 + oh)


def _fit(im: Image.Image, resized: tuple[int, int], box: tuple[int, int, int, int], resample: int) -> Image.Image:
    if im.size != resized:
        im = im.resize(resized, resample, reducing_gap=None if resample == Image.NEAREST else 2.0)
    if (0, 0) + im.size != box:
        im = im.crop(box)
    return im


def _image_tensor(im: Image.Image) -> torch.Tensor:
    """PIL RGB -> uint8 (3, H, W) (a read-only view of one copy of the pixels; collate copies it again)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.asarray(im, dtype=np.uint8)).permute(2, 0, 1)


def example_from_sample(
    sample: Sample, resolution: int | tuple[int, int], crop: str = "center", rng: np.random.Generator | None = None
) -> dict[str, Any]:
    """One Sample -> one example: target / source uint8 (3, H, W), mask uint8 (1, H, W) in {0, 1}, prompts, meta.

    ``resolution``: R (H = W = R) or a bucket (H, W) (:func:`~lit_cologen.data.buckets.nearest_bucket`).
    Aligned sources (and the mask) get the target's resize + crop, so a pair stays pixel-aligned; a subject
    reference is fitted to the same (H, W) on its own (cover + centre crop). Examples stay uint8 (4x less to
    shuffle and copy); :func:`collate` converts whole batches to float.
    """
    out = _out_size(resolution)
    resized, box = _crop_box(sample.target.size, out, crop, rng)
    target = _fit(sample.target, resized, box, Image.BICUBIC)
    if source_layout(sample.task) == "aligned":
        source = _fit(sample.source, resized, box, Image.BICUBIC)
        mask_geom = (resized, box)
    else:
        mask_geom = _crop_box(sample.source.size, out, "center", None)
        source = _fit(sample.source, *mask_geom, Image.BICUBIC)
    if sample.mask is not None:
        m = _fit(sample.mask, *mask_geom, Image.NEAREST)
        mask = torch.from_numpy((np.asarray(m, dtype=np.uint8) >= 128).view(np.uint8))[None]
    else:
        mask = torch.zeros(1, *out, dtype=torch.uint8)
    return {
        "key": sample.key,
        "task": sample.task,
        "prompt": format_prompt(sample.task, sample.prompt, sample.cond_type),
        "raw_prompt": sample.prompt,
        "cond_type": sample.cond_type or "",
        "target": _image_tensor(target),
        "source": _image_tensor(source),
        "mask": mask,
        "meta": sample.meta,
    }


def collate(examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Examples (all of one size) -> the batch dict: target / source float32 (B, 3, H, W) in [-1, 1]
    (x / 127.5 - 1), mask float32 (B, 1, H, W) in {0, 1}, everything else as lists. Encoded examples give
    ``target_latent`` / ``source_latent`` (B, C, h, w) instead of target / source / mask."""
    batch: dict[str, Any] = {}
    for k in ("key", "task", "prompt", "raw_prompt", "cond_type", "meta"):
        batch[k] = [e[k] for e in examples]
    if "target_latent" in examples[0]:  # encoded shards: latents (B, C, h, w) in their stored dtype, no pixels
        for k in ("target_latent", "source_latent"):
            batch[k] = torch.stack([e[k] for e in examples])
        return batch
    for k in ("target", "source"):
        out = torch.empty((len(examples),) + tuple(examples[0][k].shape), dtype=torch.float32)
        for i, e in enumerate(examples):
            out[i].copy_(e[k])  # uint8 (3, H, W) view -> float32 in one pass
        batch[k] = out.div_(127.5).sub_(1.0)
    batch["mask"] = torch.stack([e["mask"] for e in examples]).float()
    return batch
