"""The base of the transformers-backed scorers (DPT depth, segmentation): a local model in eval mode, its image
processor, and the record of the weights it was loaded from."""

from __future__ import annotations

from typing import Sequence

from PIL import Image
from torch import Tensor, nn


class ProcessorModel(nn.Module):
    """``model`` (eval mode) + ``processor``; :meth:`weights` is what a results file records about the weights."""

    def __init__(self, model: nn.Module, processor, weights_info: dict | None = None):
        super().__init__()
        self.model = model.eval()
        self.processor = processor
        self._weights_info = weights_info or {}

    def weights(self) -> dict:
        return dict(self._weights_info)

    def pixel_values(self, images: Sequence[Image.Image]) -> Tensor:
        """The processor's ``pixel_values`` of ``images`` (as RGB), on the model's device."""
        dev = next(self.model.parameters()).device
        return self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"].to(dev)
