"""Depth control score: DPT depth of the output vs the condition depth map, RMSE on the 0-255 scale.

ControlNet++ ``eval/eval.py`` + ``eval_depth.py``: DPT-large (``Intel/dpt-large``) predicts relative inverse depth
for each generated image; the prediction is divided by its maximum, quantised to 8 bits and resized to the
evaluation resolution (bilinear); the label depth map is min-max normalised to 0-255 and quantised at its own size,
then resized to the resolution (nearest); the score is the per-image RMSE, averaged over images.
``pred_norm="minmax"`` min-max normalises the prediction too.

The DPT image processor is the PIL one (``DPTImageProcessorPil``: what ``DPTImageProcessor`` was in the
transformers 4.x ControlNet++ ran); a folder without ``preprocessor_config.json`` gets Intel/dpt-large's settings
(:data:`DPT_LARGE_PROCESSOR`: 384 x 384, ``resample: 2`` = bilinear, mean = std = 0.5).
"""

from __future__ import annotations

import os
import warnings
from typing import Literal, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from .hf_model import ProcessorModel
from .similarity import MeanMetricSum
from .weights import hash_folder, require_folder

__all__ = ["DepthEstimator", "normalize_depth_label", "quantize_depth", "depth_rmse", "DepthRMSE", "DPT_LARGE_PROCESSOR"]

#: Intel/dpt-large's preprocessor_config.json (resample 2 = PIL bilinear)
DPT_LARGE_PROCESSOR = {
    "do_resize": True, "size": {"height": 384, "width": 384}, "resample": 2, "keep_aspect_ratio": False,
    "ensure_multiple_of": 1, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
}


def quantize_depth(depth: np.ndarray, mode: Literal["max", "minmax"] = "max") -> np.ndarray:
    """Float depth ``[H, W]`` -> uint8 ``[H, W]``: ``depth / max`` (or min-max) times 255, truncated.

    ``max`` is computed in float32, as ControlNet++'s ``to_pil_image(x / x.max())`` on the float32 prediction;
    ``minmax`` in float64, as its numpy label normalisation.
    """
    if mode == "minmax":
        d = depth.astype(np.float64)
        lo, hi = d.min(), d.max()
        d = (d - lo) / (hi - lo) if hi > lo else np.zeros_like(d)
        return (np.clip(d, 0, 1) * 255.0).astype(np.uint8)
    d = depth.astype(np.float32)
    hi = d.max()
    d = d / hi if hi > 0 else np.zeros_like(d)
    return (np.clip(d, 0, 1) * np.float32(255.0)).astype(np.uint8)


def normalize_depth_label(label: np.ndarray | Image.Image, size: tuple[int, int] | None = None) -> np.ndarray:
    """Condition depth map (any gray / RGB image) -> uint8 ``[H, W]``, min-max normalised to 0-255.

    ``size`` = (width, height): resized with nearest neighbour afterwards, as ControlNet++ saves its labels.
    """
    arr = np.asarray(label.convert("L") if isinstance(label, Image.Image) else label, dtype=np.float64)
    if arr.ndim == 3:
        arr = arr.mean(-1)
    out = quantize_depth(arr, "minmax")
    if size is not None and (out.shape[1], out.shape[0]) != tuple(size):
        out = np.asarray(Image.fromarray(out).resize(tuple(size), Image.Resampling.NEAREST))
    return out


def depth_rmse(pred: Tensor, target: Tensor) -> Tensor:
    """Per-image RMSE of two depth maps ``[B, H, W]`` on the 0-255 scale -> ``[B]``."""
    if pred.shape != target.shape:
        raise ValueError(f"shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    return (pred.double() - target.double()).pow(2).flatten(1).mean(1).sqrt().float()


class DepthRMSE(MeanMetricSum):
    """Mean per-image depth RMSE (0-255 scale); inputs ``pred [B, H, W]``, ``target [B, H, W]``."""

    higher_is_better = False

    def values(self, pred: Tensor, target: Tensor) -> Tensor:  # type: ignore[override]
        return depth_rmse(pred, target)


class DepthEstimator(ProcessorModel):
    """DPT (transformers ``DPTForDepthEstimation``) from a local folder, with the folder's image processor.

    ``__call__(images: list of B PIL images, size=(W, H))`` -> uint8-valued float depth maps ``[B, H, W]`` (0-255).
    """

    def __init__(self, model: nn.Module, processor, weights_info: dict | None = None, pred_norm: str = "max"):
        super().__init__(model, processor, weights_info)
        self.pred_norm = pred_norm

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, device: str | torch.device = "cpu",
                    pred_norm: str = "max") -> "DepthEstimator":
        """Load ``DPTForDepthEstimation`` + the PIL ``DPTImageProcessorPil`` (Intel/dpt-large's settings if the folder
        has no ``preprocessor_config.json``)."""
        from transformers import DPTForDepthEstimation, DPTImageProcessorPil

        p = require_folder(folder, "DPT depth backbone", hint="Expected a local copy of the Hugging Face model Intel/dpt-large.")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = DPTForDepthEstimation.from_pretrained(str(p), local_files_only=True)
            if (p / "preprocessor_config.json").is_file():
                processor, source = DPTImageProcessorPil.from_pretrained(str(p), local_files_only=True), "folder"
            else:
                processor, source = DPTImageProcessorPil(**DPT_LARGE_PROCESSOR), "Intel/dpt-large defaults"
        info = {"path": str(p), "sha256": hash_folder(p), "processor": source}
        return cls(model.to(device), processor, info, pred_norm=pred_norm)

    @torch.no_grad()
    def forward(self, images: Sequence[Image.Image], size: tuple[int, int]) -> Tensor:
        depth = self.model(pixel_values=self.pixel_values(images)).predicted_depth  # [B, h, w]
        out = []
        for d in depth.float().cpu().numpy():
            q = Image.fromarray(quantize_depth(d, self.pred_norm)).convert("RGB")
            q = q.resize(tuple(size), Image.Resampling.BILINEAR).convert("L")
            out.append(torch.from_numpy(np.asarray(q, dtype=np.float32)))
        return torch.stack(out)
