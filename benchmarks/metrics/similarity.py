"""Cosine-similarity metrics over pluggable encoders (CLIP-I, CLIP-T, CLIP-S, DINO), as torchmetrics Metrics.

All of them accumulate a sum and a count with ``dist_reduce_fx="sum"``, so under DDP ``compute()`` returns the mean
over every process's samples. ``score(...)`` accumulates like ``update(...)`` and returns the per-sample values
``[B]`` so a caller can also keep them.

Conventions:
* CLIP-I / DINO: cos(E(a), E(b)) in [-1, 1] (1 for identical images).
* CLIP-T: cos(E_img(image), E_txt(text)).
* CLIP-S (ControlNet++ / torchmetrics ``CLIPScore``): max(100 * cos, 0); use ``scale=100, clamp_min=0``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from .encoders import ImageEncoder, ImagesLike, ImageTextEncoder

__all__ = [
    "paired_cosine",
    "MeanMetricSum",
    "ImageSimilarity",
    "ImageTextSimilarity",
    "SubsetMean",
]


def paired_cosine(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine similarity of two embedding batches ``[B, D]`` -> ``[B]`` (float32)."""
    if a.shape != b.shape:
        raise ValueError(f"embedding shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return F.cosine_similarity(a.float(), b.float(), dim=-1, eps=1e-8)


class MeanMetricSum(Metric):
    """Mean of per-sample values: states ``total`` and ``count`` (sum-reduced across processes).

    Subclasses define :meth:`values` (inputs -> per-sample values ``[N]``). ``update(*inputs)`` accumulates them;
    ``score(*inputs)`` accumulates and returns them (torchmetrics discards ``update``'s return value).
    ``update(values=v)`` accumulates precomputed values.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def values(self, *inputs) -> Tensor:
        """Per-sample values ``[N]`` of the inputs (base class: the input itself)."""
        return torch.as_tensor(inputs[0])

    def update(self, *inputs, values: Tensor | None = None) -> None:  # type: ignore[override]
        v = (self.values(*inputs) if values is None else values).detach().reshape(-1)
        self.total += v.double().sum().to(self.total.device)
        self.count += v.numel()

    def score(self, *inputs) -> Tensor:
        """Accumulate and return the per-sample values ``[N]``."""
        v = self.values(*inputs).detach().reshape(-1)
        self.update(values=v)
        return v

    def compute(self) -> Tensor:
        if self.count == 0:
            return torch.tensor(float("nan"))
        return (self.total / self.count).float()


class ImageSimilarity(MeanMetricSum):
    """Mean cos(E(preds_i), E(targets_i)) with an image encoder (CLIP-I, DINO, Emu CLIP_i / DINO).

    Inputs: ``preds``, ``targets``: B PIL images or ``[B, 3, H, W]`` in [0, 1]; values ``[B]``.
    """

    def __init__(self, encoder: ImageEncoder, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder

    def values(self, preds: ImagesLike, targets: ImagesLike) -> Tensor:  # type: ignore[override]
        return paired_cosine(self.encoder.encode_images(preds), self.encoder.encode_images(targets))


class ImageTextSimilarity(MeanMetricSum):
    """Mean of ``max(scale * cos(E_img(image_i), E_txt(text_i)), clamp_min)`` (CLIP-T, CLIP_out, CLIP-S x100).

    Inputs: ``images`` (B images), ``texts`` (B strings); values ``[B]``.
    """

    def __init__(self, encoder: ImageTextEncoder, scale: float = 1.0, clamp_min: float | None = None, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.scale = float(scale)
        self.clamp_min = clamp_min

    def values(self, images: ImagesLike, texts: Sequence[str]) -> Tensor:  # type: ignore[override]
        if len(texts) != len(images):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        v = self.scale * paired_cosine(self.encoder.encode_images(images), self.encoder.encode_texts(texts))
        return v.clamp_min(self.clamp_min) if self.clamp_min is not None else v


class SubsetMean(Metric):
    """Overall and per-subset means of per-sample values (sum-reduced; DDP-safe).

    ``subsets``: the subset names, fixed up front so every process has the same state shape. A sample may belong
    to several subsets (e.g. ``object`` and ``subject/backpack``) or none.
    ``update(values [N], memberships)`` with ``memberships[i]`` the subset indices of sample i;
    ``compute()`` -> ``{"all": {"mean": m, "n": count}, name: {"mean": m, "n": count}, ...}``.
    NaN values are skipped (a metric undefined for a sample).
    """

    full_state_update = False

    def __init__(self, subsets: Sequence[str], **kwargs):
        super().__init__(**kwargs)
        self.subsets = list(subsets)
        n = len(self.subsets) + 1  # slot 0 = all
        self.add_state("total", default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, values: Tensor, memberships: Sequence[Sequence[int]] | None = None) -> None:  # type: ignore[override]
        values = values.detach().reshape(-1).double().cpu()
        if memberships is None:
            memberships = [[] for _ in range(values.numel())]
        if len(memberships) != values.numel():
            raise ValueError(f"{values.numel()} values but {len(memberships)} membership lists")
        slots, vals = [], []
        for v, member in zip(values.tolist(), memberships):
            if v != v:  # NaN
                continue
            for s in (0, *[int(m) + 1 for m in member]):
                slots.append(s)
                vals.append(v)
        if slots:
            idx = torch.tensor(slots, dtype=torch.long, device=self.total.device)
            self.total.index_add_(0, idx, torch.tensor(vals, dtype=torch.float64, device=self.total.device))
            self.count.index_add_(0, idx, torch.ones_like(idx))

    def compute(self) -> dict[str, dict[str, float]]:
        def entry(i: int) -> dict[str, float]:
            n = int(self.count[i])
            return {"mean": float(self.total[i] / n) if n > 0 else float("nan"), "n": n}

        out = {"all": entry(0)}
        out.update({name: entry(i + 1) for i, name in enumerate(self.subsets)})
        return out
