"""FID with a local Inception: the FID Inception-v3 (pytorch-fid's port of the TF 2015-12-05 graph) as an nn.Module.

torchmetrics' ``FrechetInceptionDistance`` defaults to torch-fidelity's Inception, which downloads its weights; we
pass our own feature module instead (``FrechetInceptionDistance(feature=module)``), loaded from a local file:

* ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid's FID weights; keys of torchvision's ``Inception3`` with
  1008 classes): :func:`load_fid_inception` with ``variant="fid"`` (the FID blocks: average pools that exclude
  padding, max pool in the last block), or
* torchvision ImageNet weights (``inception_v3_google-*.pth``): ``variant="torchvision"`` (not the FID standard;
  numbers are not comparable with published FIDs, recorded in the results as such).

Input: ``[B, 3, H, W]`` uint8 (0-255) or float in [0, 1]; resized to 299 (bilinear), scaled to [-1, 1]; output:
the 2048-d pool3 features ``[B, 2048]``.

ControlNet++ computes FID with clean-fid (PIL-bicubic resize to 299) at 512 px, averaged over the 4 image groups;
:func:`fid_over_groups` averages the same way, with this module's bilinear resize (the difference is recorded in
the protocol's settings).
"""

from __future__ import annotations

import os
from typing import Iterable, Literal, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchvision.models import inception as tv_inception

from .weights import load_state_dict, require_file, sha256_file

__all__ = ["FIDInceptionV3", "load_fid_inception", "make_fid", "fid_over_groups"]


def _avg_pool_no_pad(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class _FIDInceptionA(tv_inception.InceptionA):
    def _forward(self, x: Tensor) -> list[Tensor]:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_no_pad(x))
        return [b1, b5, b3, bp]


class _FIDInceptionC(tv_inception.InceptionC):
    def _forward(self, x: Tensor) -> list[Tensor]:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(_avg_pool_no_pad(x))
        return [b1, b7, bd, bp]


class _FIDInceptionE(tv_inception.InceptionE):
    """InceptionE with the FID graph's pooling: average (no padding) in Mixed_7b, max in Mixed_7c."""

    def __init__(self, in_channels: int, pool: Literal["avg", "max"]):
        super().__init__(in_channels)
        self.pool = pool

    def _forward(self, x: Tensor) -> list[Tensor]:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = _avg_pool_no_pad(x) if self.pool == "avg" else F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return [b1, b3, bd, self.branch_pool(pooled)]


class FIDInceptionV3(nn.Module):
    """Inception-v3 pool3 features ``[B, 2048]``; ``num_features`` = 2048 (read by torchmetrics)."""

    num_features = 2048

    def __init__(self, variant: Literal["fid", "torchvision"] = "fid", weights_info: dict | None = None):
        super().__init__()
        num_classes = 1008 if variant == "fid" else 1000
        net = tv_inception.Inception3(num_classes=num_classes, aux_logits=False, init_weights=False, transform_input=False)
        if variant == "fid":
            net.Mixed_5b = _FIDInceptionA(192, pool_features=32)
            net.Mixed_5c = _FIDInceptionA(256, pool_features=64)
            net.Mixed_5d = _FIDInceptionA(288, pool_features=64)
            net.Mixed_6b = _FIDInceptionC(768, channels_7x7=128)
            net.Mixed_6c = _FIDInceptionC(768, channels_7x7=160)
            net.Mixed_6d = _FIDInceptionC(768, channels_7x7=160)
            net.Mixed_6e = _FIDInceptionC(768, channels_7x7=192)
            net.Mixed_7b = _FIDInceptionE(1280, pool="avg")
            net.Mixed_7c = _FIDInceptionE(2048, pool="max")
        self.net = net.eval()
        self.variant = variant
        self._weights_info = weights_info or {}

    def weights(self) -> dict:
        return dict(self._weights_info)

    def forward(self, images: Tensor) -> Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        x = x.to(self.net.Conv2d_1a_3x3.conv.weight.device)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2.0 * x - 1.0
        n = self.net
        x = n.maxpool1(n.Conv2d_2b_3x3(n.Conv2d_2a_3x3(n.Conv2d_1a_3x3(x))))
        x = n.maxpool2(n.Conv2d_4a_3x3(n.Conv2d_3b_1x1(x)))
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
                     "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(n, name)(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def load_fid_inception(
    path: str | os.PathLike, variant: Literal["fid", "torchvision"] = "fid", device: str | torch.device = "cpu"
) -> FIDInceptionV3:
    """Build :class:`FIDInceptionV3` and load a local state dict (classifier / aux-head keys may be absent)."""
    p = require_file(
        path,
        "FID Inception backbone",
        hint="Expected pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or torchvision inception_v3 weights with "
        "variant='torchvision').",
    )
    module = FIDInceptionV3(variant, weights_info={"path": str(p), "sha256": sha256_file(p), "variant": variant})
    result = module.net.load_state_dict(load_state_dict(p), strict=False)
    optional = ("fc.", "AuxLogits.")
    missing = [k for k in result.missing_keys if not k.startswith(optional)]
    unexpected = [k for k in result.unexpected_keys if not k.startswith(optional)]
    if missing or unexpected:
        raise ValueError(f"{p}: not an Inception-v3 ({variant}) state dict: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return module.to(device).eval()


def make_fid(feature: nn.Module, reset_real_features: bool = True) -> FrechetInceptionDistance:
    """A torchmetrics FID over ``feature`` (float inputs in [0, 1]: ``normalize=True``)."""
    return FrechetInceptionDistance(feature=feature, normalize=True, reset_real_features=reset_real_features)


@torch.no_grad()
def fid_over_groups(
    feature: nn.Module,
    real_batches: Iterable[Tensor],
    group_batches: Mapping[str, Iterable[Tensor]],
) -> dict[str, float]:
    """FID of each generated group against one real set, and their mean (ControlNet++: mean over 4 groups).

    ``real_batches``: batches ``[b, 3, H, W]`` in [0, 1]; ``group_batches``: group name -> batches of that group
    (iterables: generators keep only one batch in memory). Real features are computed once. Returns
    ``{group: fid, ..., "mean": mean}``.
    """
    fid = make_fid(feature, reset_real_features=False)
    for batch in real_batches:
        fid.update(batch, real=True)
    out: dict[str, float] = {}
    for name, batches in group_batches.items():
        fid.reset()  # keeps the real features (reset_real_features=False)
        for batch in batches:
            fid.update(batch, real=False)
        out[name] = float(fid.compute())
    if out:
        out["mean"] = sum(out.values()) / len(out)
    return out
