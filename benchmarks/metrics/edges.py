"""Edge / line maps and their scores: kornia Canny, binary F1, and the HED / line-drawing annotators.

ControlNet++ (``eval/eval.py``, ``eval/eval_edge.py``) scores Canny control by re-extracting edges from the output
with ``kornia.filters.canny(img, 0.1, 0.2)`` at 512 px and computing a binary F1 against the condition's edges over
the 4 images of a prompt together; HED and line-art outputs are re-extracted with the annotators below and compared
with the condition by MS-SSIM.

The annotators are written here with the state-dict layout of the public checkpoints they load:

* :class:`ControlNetHED` — the Apache-2.0 HED re-implementation of ControlNet (``ControlNetHED.pth`` from
  ``lllyasviel/Annotators``): five VGG-like stages, each with a 1x1 side projection; the edge map is the sigmoid of
  the mean of the five upsampled projections.
* :class:`LineDrawingGenerator` — the "informative drawings" ResNet generator (``model.pth`` of the
  ``Image-to-Line-Drawings`` space): 7x7 stem, two stride-2 downsamplings, 3 residual blocks, two transposed-conv
  upsamplings, 7x7 head, sigmoid.
"""

from __future__ import annotations

import os

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .similarity import MeanMetricSum
from .weights import load_state_dict, require_file, sha256_file

__all__ = [
    "canny_edges",
    "binary_f1",
    "EdgeF1",
    "ControlNetHED",
    "HEDAnnotator",
    "LineDrawingGenerator",
    "LineartAnnotator",
    "LINEART_INVERSIONS",
    "invert_line_levels",
]

LINEART_INVERSIONS = ("uint8_one_minus", "255_minus")


def invert_line_levels(levels: Tensor, rule: str) -> Tensor:
    """Invert an 8-bit line map ``[B, 1, H, W]`` (uint8) -> ``[B, 1, H, W]`` float in [0, 1].

    ``uint8_one_minus``: ControlNet++ ``eval_edge.py``, ``(1 - pred) / 255`` with ``pred`` a uint8 tensor, so the
    subtraction wraps mod 256: level p becomes (257 - p) % 256 (0 -> 1, 1 -> 0, 2 -> 255, 255 -> 2).
    ``255_minus``: the intended inversion, (255 - p) / 255.
    """
    if levels.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 line map, got {levels.dtype}")
    if rule == "uint8_one_minus":
        inverted = 1 - levels  # uint8 arithmetic, as the reference
    elif rule == "255_minus":
        inverted = 255 - levels
    else:
        raise ValueError(f"lineart inversion must be one of {LINEART_INVERSIONS}, got {rule!r}")
    return (inverted.float() / 255.0).clamp(0, 1)


def _to_levels(x: Tensor) -> Tensor:
    """Float map in [0, 1] -> uint8 levels as ``torchvision.transforms.functional.to_pil_image`` (``mul(255).byte()``,
    truncation), which is how ControlNet++ saves its maps."""
    return (x.float() * 255.0).clamp(0, 255).to(torch.uint8)


def canny_edges(images: Tensor, low: float = 0.1, high: float = 0.2) -> Tensor:
    """Canny edges of ``[B, 3, H, W]`` images in [0, 1] -> binary float map ``[B, 1, H, W]`` in {0, 1}.

    kornia's Canny (Gaussian 5x5, sigma 1, hysteresis), thresholds 0.1 / 0.2 as ControlNet++. Images are processed
    one at a time: kornia 0.9's batched Canny gives slightly different edges for an image depending on the other
    images in the batch (seen here), and ControlNet++ extracts each condition from a single image.
    """
    if images.ndim != 4:
        raise ValueError(f"expected [B, C, H, W], got {tuple(images.shape)}")
    out = [kornia.filters.canny(img[None].float(), low_threshold=low, high_threshold=high)[1] for img in images]
    return (torch.cat(out) > 0.5).float()


def binary_f1(preds: Tensor, target: Tensor, zero_division: float = 0.0) -> Tensor:
    """F1 of two binary maps of any (equal) shape, over all their elements together -> scalar tensor.

    ``preds``, ``target``: values in {0, 1} (anything > 0.5 counts as positive). Like torchmetrics
    ``BinaryF1Score``, two empty maps give ``zero_division`` (0 by default).
    """
    if preds.shape != target.shape:
        raise ValueError(f"shapes differ: {tuple(preds.shape)} vs {tuple(target.shape)}")
    p = preds.reshape(-1) > 0.5
    t = target.reshape(-1) > 0.5
    tp = (p & t).sum().double()
    fp = (p & ~t).sum().double()
    fn = (~p & t).sum().double()
    denom = 2 * tp + fp + fn
    if denom == 0:
        return torch.tensor(float(zero_division))
    return (2 * tp / denom).float()


class EdgeF1(MeanMetricSum):
    """Mean over groups of the binary F1 of a group's edge maps (ControlNet++: one group = a prompt's 4 images).

    Inputs ``pred_edges [B, 1, H, W]``, ``target_edges [B, 1, H, W]``: the B maps are scored as one unit (value ``[1]``).
    """

    def values(self, preds: Tensor, target: Tensor) -> Tensor:  # type: ignore[override]
        return binary_f1(preds, target).reshape(1)


class _DoubleConvStage(nn.Module):
    """``n`` 3x3 conv + ReLU layers and a 1x1 side projection to one channel."""

    def __init__(self, c_in: int, c_out: int, n: int):
        super().__init__()
        self.convs = nn.Sequential(
            *[nn.Conv2d(c_in if i == 0 else c_out, c_out, kernel_size=3, padding=1) for i in range(n)]
        )
        self.projection = nn.Conv2d(c_out, 1, kernel_size=1)

    def forward(self, x: Tensor, down: bool) -> tuple[Tensor, Tensor]:
        h = F.max_pool2d(x, kernel_size=2, stride=2) if down else x
        for conv in self.convs:
            h = F.relu(conv(h))
        return h, self.projection(h)


class ControlNetHED(nn.Module):
    """HED edge network, ControlNet's Apache-2.0 layout (keys ``norm``, ``block{1..5}.convs.*``, ``.projection``).

    ``forward(x [B, 3, H, W] in 0..255)`` -> five side outputs ``[B, 1, H / 2^k, W / 2^k]``.
    """

    def __init__(self):
        super().__init__()
        self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.block1 = _DoubleConvStage(3, 64, 2)
        self.block2 = _DoubleConvStage(64, 128, 2)
        self.block3 = _DoubleConvStage(128, 256, 3)
        self.block4 = _DoubleConvStage(256, 512, 3)
        self.block5 = _DoubleConvStage(512, 512, 3)

    def forward(self, x: Tensor) -> list[Tensor]:
        h = x - self.norm
        sides = []
        for i, block in enumerate((self.block1, self.block2, self.block3, self.block4, self.block5)):
            h, side = block(h, down=i > 0)
            sides.append(side)
        return sides


class HEDAnnotator(nn.Module):
    """HED soft edges of ``[B, 3, H, W]`` images in [0, 1] -> ``[B, 1, H, W]`` in [0, 1] (8-bit levels)."""

    def __init__(self, net: ControlNetHED, weights_info: dict | None = None):
        super().__init__()
        self.net = net.eval()
        self._weights_info = weights_info or {}

    @classmethod
    def from_file(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "HEDAnnotator":
        p = require_file(path, "HED annotator", hint="Expected ControlNetHED.pth from the lllyasviel/Annotators repository.")
        net = ControlNetHED()
        net.load_state_dict(load_state_dict(p))
        return cls(net.to(device), {"path": str(p), "sha256": sha256_file(p)})

    def weights(self) -> dict:
        return dict(self._weights_info)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        h, w = images.shape[-2:]
        x = (images.float() * 255.0).clamp(0, 255).to(self.net.norm.device)
        sides = [F.interpolate(s, size=(h, w), mode="bilinear") for s in self.net(x)]
        edge = torch.sigmoid(torch.stack(sides, dim=1).mean(dim=1))
        return (edge * 255.0).clamp(0, 255).to(torch.uint8).float() / 255.0


class _ResidualBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(c, c, 3),
            nn.InstanceNorm2d(c),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(c, c, 3),
            nn.InstanceNorm2d(c),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_block(x)


class LineDrawingGenerator(nn.Module):
    """The line-drawing ResNet generator (keys ``model0`` .. ``model4``); ``[B, 3, H, W]`` -> ``[B, 1, H, W]``."""

    def __init__(self, in_channels: int = 3, out_channels: int = 1, n_residual_blocks: int = 3, width: int = 64):
        super().__init__()
        self.model0 = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(in_channels, width, 7), nn.InstanceNorm2d(width), nn.ReLU(inplace=True)
        )
        down, c = [], width
        for _ in range(2):
            down += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.InstanceNorm2d(2 * c), nn.ReLU(inplace=True)]
            c *= 2
        self.model1 = nn.Sequential(*down)
        self.model2 = nn.Sequential(*[_ResidualBlock(c) for _ in range(n_residual_blocks)])
        up = []
        for _ in range(2):
            up += [
                nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1),
                nn.InstanceNorm2d(c // 2),
                nn.ReLU(inplace=True),
            ]
            c //= 2
        self.model3 = nn.Sequential(*up)
        self.model4 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return self.model4(self.model3(self.model2(self.model1(self.model0(x)))))


class LineartAnnotator(nn.Module):
    """Line art of ``[B, 3, H, W]`` images in [0, 1] -> ``[B, 1, H, W]`` in [0, 1].

    ``invert=True`` (the condition convention of ControlNet++'s eval: ``1 - model(x)``, white lines on black) is
    what ``forward`` returns (conditions, labels). :meth:`levels` gives the map ControlNet++ saves for a generated
    image: ``model(x)`` itself, 8-bit; its scorer inverts that (:func:`invert_line_levels`).
    """

    def __init__(self, net: LineDrawingGenerator, weights_info: dict | None = None, invert: bool = True):
        super().__init__()
        self.net = net.eval()
        self.invert = invert
        self._weights_info = weights_info or {}

    @classmethod
    def from_file(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "LineartAnnotator":
        p = require_file(
            path, "line-art annotator", hint="Expected model.pth of the Image-to-Line-Drawings (informative drawings) model."
        )
        net = LineDrawingGenerator()
        net.load_state_dict(load_state_dict(p))
        return cls(net.to(device), {"path": str(p), "sha256": sha256_file(p)})

    def weights(self) -> dict:
        return dict(self._weights_info)

    @torch.no_grad()
    def levels(self, images: Tensor) -> Tensor:
        """The uninverted line map of ``[B, 3, H, W]`` images in [0, 1] -> uint8 ``[B, 1, H, W]`` (truncated)."""
        dev = next(self.net.parameters()).device
        return _to_levels(self.net(images.float().to(dev)))

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        dev = next(self.net.parameters()).device
        out = self.net(images.float().to(dev))
        out = 1.0 - out if self.invert else out
        return _to_levels(out).float() / 255.0
