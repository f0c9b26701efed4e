"""Where each scoring backbone's local weights live, loaded lazily, with the hashes of what was used.

A backbone is named by a key (``clip_b32``, ``dino_vits16``, ...). Its path comes from, in order:
an explicit ``paths[key]``, or ``weights_dir / DEFAULT_NAMES[key]`` when that exists. Nothing is downloaded.
Tests (or users with their own encoders) can :meth:`Backbones.register` a ready module under a key.

``used()`` returns ``{key: {"path": ..., "sha256": ..., "dtype": ...}}`` for every backbone actually loaded; the
harness writes it into each results file, so two numbers are only compared when their backbones match. ``dtype`` is
the precision the module's weights are in when the record is read (``"float32"``; None for a module without
tensors); a module with a ``layer_norm_eps`` (DINO) records it too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .weights import MissingWeightsError

__all__ = ["BackboneSpec", "BACKBONES", "Backbones", "module_dtype", "run_settings"]


@dataclass(frozen=True)
class BackboneSpec:
    key: str
    kind: str  # "file" or "folder"
    default_name: str  # file / folder name looked up under weights_dir
    description: str


BACKBONES: dict[str, BackboneSpec] = {
    s.key: s
    for s in [
        BackboneSpec("clip_b32", "file", "ViT-B-32.pt", "OpenAI CLIP ViT-B/32 (clip-anytorch checkpoint)"),
        BackboneSpec("clip_b16", "file", "ViT-B-16.pt", "OpenAI CLIP ViT-B/16 (Canny CLIP-S, ControlNet++)"),
        BackboneSpec("clip_l14", "file", "ViT-L-14.pt", "OpenAI CLIP ViT-L/14 (alternative editing protocol)"),
        BackboneSpec("dino_vits16", "folder", "dino-vits16", "DINO ViT-S/16, Hugging Face facebook/dino-vits16 folder"),
        BackboneSpec("dpt_large", "folder", "dpt-large", "DPT-large depth, Hugging Face Intel/dpt-large folder"),
        BackboneSpec("seg_ade20k", "folder", "seg-ade20k", "ADE20K semantic segmenter (HF folder, e.g. Mask2Former Swin-L)"),
        BackboneSpec("seg_cocostuff", "folder", "seg-cocostuff", "COCO-Stuff semantic segmenter (HF folder)"),
        BackboneSpec("inception", "file", "pt_inception-2015-12-05-6726825d.pth", "FID Inception-v3 (pytorch-fid weights)"),
        BackboneSpec("hed", "file", "ControlNetHED.pth", "HED annotator (lllyasviel/Annotators ControlNetHED.pth)"),
        BackboneSpec("lineart", "file", "lineart_model.pth", "line-drawing annotator (Image-to-Line-Drawings model.pth)"),
        BackboneSpec("judge", "folder", "judge-vlm", "VLM judge for GEdit-Bench (transformers image-text-to-text folder)"),
    ]
}


def module_dtype(module: Any) -> str | None:
    """Dtype name (``"float32"``) of the first floating tensor of a module (or of its ``model`` / ``net``)."""
    for m in (module, getattr(module, "model", None), getattr(module, "net", None)):
        if isinstance(m, torch.nn.Module):
            for t in list(m.parameters()) + list(m.buffers()):
                if t.is_floating_point():
                    return str(t.dtype).removeprefix("torch.")
    return None


def run_settings(module: Any) -> dict[str, Any]:
    """What a backbone ran with, for its record: ``dtype``, and ``layer_norm_eps`` where the module has one."""
    out: dict[str, Any] = {"dtype": module_dtype(module)}
    if getattr(module, "layer_norm_eps", None) is not None:
        out["layer_norm_eps"] = float(module.layer_norm_eps)
    return out


class Backbones:
    """Lazy, cached loader of scoring backbones from local paths.

    ``paths``: key -> local file / folder; ``weights_dir``: a folder holding files named as in ``BACKBONES``.
    """

    def __init__(
        self,
        paths: dict[str, str | os.PathLike] | None = None,
        weights_dir: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
    ):
        unknown = sorted(set(paths or {}) - set(BACKBONES))
        if unknown:
            raise KeyError(f"unknown backbone key(s) {unknown}; known: {sorted(BACKBONES)}")
        self.paths = {k: str(v) for k, v in (paths or {}).items()}
        self.weights_dir = Path(weights_dir) if weights_dir else None
        self.device = torch.device(device)
        self._cache: dict[str, Any] = {}
        self._used: dict[str, dict] = {}

    def path(self, key: str) -> str | None:
        """The configured local path of ``key`` (or None)."""
        if key not in BACKBONES:
            raise KeyError(f"unknown backbone {key!r}; known: {sorted(BACKBONES)}")
        if key in self.paths:
            return self.paths[key]
        if self.weights_dir is not None:
            cand = self.weights_dir / BACKBONES[key].default_name
            if cand.exists():
                return str(cand)
        return None

    def available(self, key: str) -> bool:
        return key in self._cache or self.path(key) is not None

    def register(self, key: str, module: Any, info: dict | None = None) -> None:
        """Use a ready module for ``key`` (its ``weights()`` or ``info`` is recorded as the weights used)."""
        self._cache[key] = module
        self._used[key] = info if info is not None else (module.weights() if hasattr(module, "weights")
                                                         else {"path": "<registered>"})

    def used(self) -> dict[str, dict]:
        """``{key: weights info + dtype (+ layer_norm_eps) + random_init}`` of every backbone loaded so far
        (``random_init``: the weights carry ``benchmarks.metrics.random_init``'s marker)."""
        from .random_init import is_random_init

        return {k: {**v, **run_settings(self._cache.get(k)), "random_init": is_random_init(v.get("path"))}
                for k, v in sorted(self._used.items())}

    def _load(self, key: str, loader: Callable[[str], Any]) -> Any:
        if key not in self._cache:
            path = self.path(key)
            if path is None:
                spec = BACKBONES[key]
                where = f" or put it at {self.weights_dir / spec.default_name}" if self.weights_dir else ""
                raise MissingWeightsError(
                    f"backbone {key!r} ({spec.description}): no local {spec.kind} configured; pass "
                    f"--backbone {key}=PATH{where} (nothing is downloaded)"
                )
            module = loader(path)
            self._cache[key] = module
            self._used[key] = module.weights() if hasattr(module, "weights") else {"path": path}
        return self._cache[key]

    def clip(self, key: str = "clip_b32"):
        """:class:`~benchmarks.metrics.encoders.CLIPEncoder` for ``clip_b32`` / ``clip_b16`` / ``clip_l14``."""
        from .encoders import CLIPEncoder

        return self._load(key, lambda p: CLIPEncoder.from_file(p, device=self.device, name=key))

    def dino(self, key: str = "dino_vits16"):
        from .encoders import DinoEncoder

        return self._load(key, lambda p: DinoEncoder.from_folder(p, device=self.device, name=key))

    def depth(self, key: str = "dpt_large", pred_norm: str = "max"):
        from .depth import DepthEstimator

        return self._load(key, lambda p: DepthEstimator.from_folder(p, device=self.device, pred_norm=pred_norm))

    def segmenter(self, key: str):
        from .segmentation import HFSegmenter

        return self._load(key, lambda p: HFSegmenter.from_folder(p, device=self.device))

    def inception(self, key: str = "inception"):
        from .fid import load_fid_inception

        return self._load(key, lambda p: load_fid_inception(p, device=self.device))

    def hed(self, key: str = "hed"):
        from .edges import HEDAnnotator

        return self._load(key, lambda p: HEDAnnotator.from_file(p, device=self.device))

    def lineart(self, key: str = "lineart"):
        from .edges import LineartAnnotator

        return self._load(key, lambda p: LineartAnnotator.from_file(p, device=self.device))

    def judge(self, key: str = "judge"):
        """The GEdit-Bench VLM judge (a local transformers image-text-to-text folder), or a registered Judge."""
        from ..suites.gedit import TransformersVLMJudge

        return self._load(key, lambda p: TransformersVLMJudge.from_folder(p, device=str(self.device)))

    def get(self, key: str):
        """A registered module, or the default loader for ``key``."""
        if key in self._cache:
            return self._cache[key]
        loaders = {
            "clip_b32": self.clip, "clip_b16": self.clip, "clip_l14": self.clip, "dino_vits16": self.dino,
            "dpt_large": self.depth, "seg_ade20k": self.segmenter, "seg_cocostuff": self.segmenter,
            "inception": self.inception, "hed": self.hed, "lineart": self.lineart, "judge": self.judge,
        }
        if key not in loaders:
            raise MissingWeightsError(f"backbone {key!r} has no default loader; register a module for it")
        return loaders[key](key)
