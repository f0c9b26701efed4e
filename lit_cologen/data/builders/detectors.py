"""Condition extractors for controllable generation: kornia Canny and pluggable edge detectors (HED, lineart).

The paper extracts HED and lineart "online during training" and names no detector. We do not ship or download any
detector weights. ``EdgeDetector`` is the protocol (a callable PIL -> PIL); ``TorchEdgeDetector`` is the real
implementation, which runs a model **the user provides as a local file**:

* a TorchScript archive (``.pt`` / ``.ts`` / ``.jit`` / ``.torchscript``; ``torch.jit.load``),
* a ``torch.export`` program (``.pt2``; ``torch.export.load``), or
* a ``.safetensors`` state dict plus the module to load it into (``module="package.module:ClassName"`` or a
  zero-argument factory), e.g. the ControlNet annotators' ``ControlNetHED_Apache2`` or the "Image-to-Line-Drawings"
  generator converted to safetensors.

No pickle is ever loaded (``torch.load`` is not used). The model takes ``(1, 3, H, W)`` float RGB in [0, 1] (the
ControlNet++ evaluation convention, ``pil_to_tensor / 255``) and returns an edge map of shape ``(1, 1, H', W')``,
``(1, H', W')`` or ``(H', W')`` in [0, 1] (or logits with ``apply_sigmoid=True``); the result is resized back to
(H, W) if needed, optionally inverted (ControlNet++ inverts lineart: ``1 - y``) and returned as an RGB PIL image.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from ._common import DataSourceError

TORCHSCRIPT_SUFFIXES = (".pt", ".ts", ".jit", ".torchscript")


@runtime_checkable
class EdgeDetector(Protocol):
    """A condition extractor: RGB image (W x H) -> condition map (RGB, W x H)."""

    name: str

    def __call__(self, image: Image.Image) -> Image.Image: ...


# ---------------------------------------------------------------------------------------------------------- canny


def canny_edges(image: Image.Image, low: float = 0.1, high: float = 0.2) -> Image.Image:
    """Canny edges with kornia (``kornia.filters.canny``), thresholds on [0, 1] gradients (ControlNet++: 0.1 / 0.2).

    Args:
        image: RGB PIL image, W x H.
    Returns:
        RGB PIL image, W x H, edges 255 on 0.
    """
    import torch
    from kornia.filters import canny

    if not 0.0 <= low <= high:
        raise DataSourceError(f"canny thresholds need 0 <= low <= high, got low={low}, high={high}")
    x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        _, edges = canny(x, low_threshold=low, high_threshold=high)
    e = (edges[0, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(e, mode="L").convert("RGB")


class CannyDetector:
    """``EdgeDetector`` wrapper around ``canny_edges``."""

    def __init__(self, low: float = 0.1, high: float = 0.2):
        self.low, self.high = float(low), float(high)
        self.name = f"kornia-canny({self.low},{self.high})"

    def __call__(self, image: Image.Image) -> Image.Image:
        return canny_edges(image, self.low, self.high)


# ------------------------------------------------------------------------------------------------- torch models


def _import_object(spec: str) -> Any:
    if ":" not in spec:
        raise DataSourceError(f"module spec must be 'package.module:ClassName', got {spec!r}")
    mod_name, _, attr = spec.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise DataSourceError(f"cannot import module {mod_name!r} (from spec {spec!r}): {exc}") from exc
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise DataSourceError(f"module {mod_name!r} has no attribute {attr!r} (spec {spec!r})")
        obj = getattr(obj, part)
    return obj


def load_torch_model(
    path: str | Path,
    module: str | Callable[[], Any] | None = None,
    *,
    module_kwargs: dict[str, Any] | None = None,
    strict: bool = True,
    device: str = "cpu",
) -> Any:
    """Load a local model file as a callable ``torch.nn.Module`` in eval mode (see the module docstring for formats)."""
    import torch

    p = Path(path).expanduser()
    if not p.is_file():
        raise DataSourceError(f"detector model file not found: {p}")
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        if module is None:
            raise DataSourceError(
                f"{p}: a safetensors state dict needs the module to load it into "
                "(option `module`: 'package.module:ClassName' or a factory)"
            )
        from safetensors.torch import load_file

        factory = _import_object(module) if isinstance(module, str) else module
        net = factory(**(module_kwargs or {}))
        state = load_file(str(p), device="cpu")
        try:
            net.load_state_dict(state, strict=strict)
        except RuntimeError as exc:
            raise DataSourceError(f"{p}: state dict does not fit module {module!r}: {exc}") from exc
    elif suffix == ".pt2":
        try:
            net = torch.export.load(str(p)).module()
        except Exception as exc:
            raise DataSourceError(f"{p}: not a torch.export program: {exc}") from exc
    elif suffix in TORCHSCRIPT_SUFFIXES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream; still loads
                net = torch.jit.load(str(p), map_location="cpu")
        except Exception as exc:
            raise DataSourceError(
                f"{p}: not a TorchScript archive ({exc}); pickled checkpoints are not loaded, convert them to "
                "TorchScript, torch.export (.pt2) or safetensors"
            ) from exc
    else:
        raise DataSourceError(
            f"{p}: unsupported detector file type {suffix!r}; use .safetensors (+ module), .pt2, or TorchScript "
            f"({', '.join(TORCHSCRIPT_SUFFIXES)})"
        )
    net = net.to(device)
    if hasattr(net, "eval"):
        try:
            net.eval()
        except (NotImplementedError, RuntimeError):  # torch.export modules refuse .eval()
            pass
    return net


class TorchEdgeDetector:
    """``EdgeDetector`` running a user-provided local torch model (HED, lineart, ...).

    Args:
        path: model file (TorchScript, ``.pt2`` or ``.safetensors``).
        name: label recorded in sample metadata (e.g. ``hed``).
        module / module_kwargs / strict: for ``.safetensors``: the module to instantiate and load into.
        invert: return ``1 - y`` (ControlNet++ draws lineart as black lines on white).
        apply_sigmoid: the model returns logits.
        device: torch device string.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        name: str = "edges",
        module: str | Callable[[], Any] | None = None,
        module_kwargs: dict[str, Any] | None = None,
        strict: bool = True,
        invert: bool = False,
        apply_sigmoid: bool = False,
        device: str = "cpu",
    ):
        self.path = Path(path)
        self.name = name
        self.invert = invert
        self.apply_sigmoid = apply_sigmoid
        self.device = device
        self.model = load_torch_model(path, module, module_kwargs=module_kwargs, strict=strict, device=device)

    def __call__(self, image: Image.Image) -> Image.Image:
        import torch
        import torch.nn.functional as F

        rgb = image.convert("RGB")
        w, h = rgb.size
        x = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)[None].to(self.device)
        with torch.no_grad():
            y = self.model(x)
        if isinstance(y, (list, tuple)):
            y = y[0]
        if not torch.is_tensor(y):
            raise DataSourceError(f"detector {self.path}: output is {type(y).__name__}, expected a tensor")
        y = y.float()
        if y.ndim == 2:
            y = y[None, None]
        elif y.ndim == 3:
            y = y[None]
        if y.ndim != 4 or y.shape[0] != 1:
            raise DataSourceError(f"detector {self.path}: output shape {tuple(y.shape)}, expected (1, C, H, W)")
        if y.shape[1] != 1:
            y = y.mean(dim=1, keepdim=True)
        if self.apply_sigmoid:
            y = torch.sigmoid(y)
        if y.shape[-2:] != (h, w):
            y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
        y = y.clamp(0, 1)
        if self.invert:
            y = 1.0 - y
        arr = (y[0, 0] * 255).round().to(torch.uint8).cpu().numpy()
        return Image.fromarray(arr, mode="L").convert("RGB")


def load_edge_detector(
    path: str | Path | None,
    *,
    name: str,
    option: str,
    module: str | Callable[[], Any] | None = None,
    invert: bool = False,
    device: str = "cpu",
) -> TorchEdgeDetector:
    """Build a ``TorchEdgeDetector`` or raise naming the missing option (never falls back silently)."""
    if path is None or str(path) == "":
        raise DataSourceError(
            f"condition {name!r} needs a detector model file: set option `{option}` to a local TorchScript, "
            f".pt2 or .safetensors file (with `{option.replace('_detector', '_module')}` for safetensors); "
            "nothing is downloaded"
        )
    return TorchEdgeDetector(path, name=name, module=module, invert=invert, device=device)
