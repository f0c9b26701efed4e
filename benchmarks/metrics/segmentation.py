"""Segmentation control score: segment the output, compare with the condition's label map, mean IoU.

mIoU follows mmseg (ControlNet++'s seg eval): per-class intersection and union are summed over the whole
dataset, IoU = I / U for every class with U > 0, mIoU = mean of those (classes absent from both prediction and
label everywhere are skipped); label pixels equal to ``ignore_index`` (255) are ignored.

Segmenters are pluggable (:class:`Segmenter`: list of PIL images -> label maps ``[B, H, W]``); :class:`HFSegmenter`
runs any transformers semantic / universal segmentation model from a local folder with its image processor's
``post_process_semantic_segmentation`` (Mask2Former, Segformer, UperNet, ...).
"""

from __future__ import annotations

import os
import warnings
from typing import Protocol, Sequence, runtime_checkable

import torch
from PIL import Image
from torch import Tensor, nn
from torchmetrics import Metric

from .hf_model import ProcessorModel
from .weights import hash_folder, require_folder

__all__ = ["Segmenter", "HFSegmenter", "MeanIoU", "intersection_union"]


@runtime_checkable
class Segmenter(Protocol):
    """``segmenter(images, size=(W, H))`` -> class-index maps ``LongTensor [B, H, W]``."""

    def __call__(self, images: Sequence[Image.Image], size: tuple[int, int]) -> Tensor: ...


def intersection_union(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255) -> tuple[Tensor, Tensor]:
    """Per-class intersection and union pixel counts ``([K], [K])`` of label maps ``[..., H, W]``."""
    if pred.shape != target.shape:
        raise ValueError(f"shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    pred = pred.reshape(-1).long()
    target = target.reshape(-1).long()
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    valid = (target >= 0) & (target < num_classes)
    pred, target = pred[valid], target[valid]
    inter = torch.bincount(target[pred == target], minlength=num_classes)[:num_classes]
    in_range = (pred >= 0) & (pred < num_classes)
    area_pred = torch.bincount(pred[in_range], minlength=num_classes)[:num_classes]
    area_target = torch.bincount(target, minlength=num_classes)[:num_classes]
    return inter, area_pred + area_target - inter


class MeanIoU(Metric):
    """Dataset-level mIoU (mmseg convention); ``update(pred [B, H, W], target [B, H, W])``; DDP-safe (sum)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_classes: int, ignore_index: int = 255, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.add_state("intersection", default=torch.zeros(self.num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("union", default=torch.zeros(self.num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:  # type: ignore[override]
        i, u = intersection_union(pred.cpu(), target.cpu(), self.num_classes, self.ignore_index)
        self.intersection += i.to(self.intersection.device)
        self.union += u.to(self.union.device)

    def per_class_iou(self) -> Tensor:
        """IoU per class ``[K]`` (NaN where the union is empty)."""
        u = self.union.double()
        return torch.where(u > 0, self.intersection.double() / u.clamp_min(1), torch.full_like(u, float("nan")))

    def compute(self) -> Tensor:
        iou = self.per_class_iou()
        present = ~torch.isnan(iou)
        return iou[present].mean().float() if present.any() else torch.tensor(float("nan"))


class HFSegmenter(ProcessorModel):
    """A transformers segmentation model + its image processor, loaded from a local folder.

    The model class is chosen from ``config.model_type``: ``mask2former`` / ``maskformer`` / ``oneformer``
    (universal; semantic maps via the processor's post-processing), else ``AutoModelForSemanticSegmentation``
    (Segformer, UperNet, DPT, BEiT, ...). ``label_offset`` is added to predicted ids (to match a label convention).
    """

    def __init__(self, model: nn.Module, processor, weights_info: dict | None = None, label_offset: int = 0):
        super().__init__(model, processor, weights_info)
        self.label_offset = int(label_offset)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, device: str | torch.device = "cpu", label_offset: int = 0) -> "HFSegmenter":
        from transformers import AutoConfig, AutoImageProcessor

        p = require_folder(
            folder,
            "segmentation backbone",
            required=("config.json", "preprocessor_config.json"),
            hint="Expected a local Hugging Face segmentation model folder, e.g. facebook/mask2former-swin-large-ade-semantic.",
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg = AutoConfig.from_pretrained(str(p), local_files_only=True)
            if cfg.model_type in ("mask2former", "maskformer", "oneformer"):
                from transformers import AutoModelForUniversalSegmentation as _Auto
            else:
                from transformers import AutoModelForSemanticSegmentation as _Auto
            model = _Auto.from_pretrained(str(p), local_files_only=True)
            processor = AutoImageProcessor.from_pretrained(str(p), local_files_only=True)
        return cls(model.to(device), processor, {"path": str(p), "sha256": hash_folder(p)}, label_offset=label_offset)

    @torch.no_grad()
    def forward(self, images: Sequence[Image.Image], size: tuple[int, int]) -> Tensor:
        outputs = self.model(pixel_values=self.pixel_values(images))
        w, h = size
        maps = self.processor.post_process_semantic_segmentation(outputs, target_sizes=[(h, w)] * len(images))
        return torch.stack([m.long().cpu() for m in maps]) + self.label_offset
