"""Pluggable image / text encoders for similarity metrics: OpenAI CLIP (clip-anytorch) and DINO ViT (transformers).

Both load from LOCAL weights only:

* CLIP: an OpenAI checkpoint file (``ViT-B-32.pt``, ``ViT-B-16.pt``: TorchScript archives as OpenAI ships them, or
  a plain state-dict file / ``.safetensors`` with the same keys). ``clip.model.build_model`` rebuilds the
  architecture from the state dict, so any CLIP variant works. This is the same reconstruction ``clip.load(path,
  jit=False)`` does, without its unrestricted ``torch.load``.
* DINO: a Hugging Face ``ViTModel`` folder in the ``facebook/dino-vits16`` layout (``config.json`` +
  ``model.safetensors`` / ``pytorch_model.bin``); the embedding is the CLS token of the last hidden state (after the
  final LayerNorm), which is what the torch.hub ``dino_vits16`` model returns.

Encoders take a list of PIL images (so the reference preprocessing, done on PIL images, is reproduced exactly) or a
float tensor ``[B, 3, H, W]`` in [0, 1] (converted to 8-bit PIL first) and return unnormalised embeddings ``[B, D]``
(float32, on the encoder's device).
"""

from __future__ import annotations

import os
import warnings
from typing import Protocol, Sequence, runtime_checkable

import torch
from PIL import Image
from torch import Tensor, nn
from torchvision import transforms as T
from torchvision.transforms.functional import to_pil_image

from .weights import hash_folder, load_state_dict, require_file, require_folder, sha256_file

__all__ = [
    "ImageEncoder",
    "ImageTextEncoder",
    "CLIPEncoder",
    "DinoEncoder",
    "as_pil_list",
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ImagesLike = Sequence[Image.Image] | Tensor


@runtime_checkable
class ImageEncoder(Protocol):
    """Anything that maps images to embeddings ``[B, D]``; ``weights`` describes the files used (for results)."""

    name: str

    def encode_images(self, images: ImagesLike) -> Tensor: ...

    def weights(self) -> dict: ...


@runtime_checkable
class ImageTextEncoder(ImageEncoder, Protocol):
    """An image encoder that also embeds text into the same space, ``[B, D]``."""

    def encode_texts(self, texts: Sequence[str]) -> Tensor: ...


def as_pil_list(images: ImagesLike) -> list[Image.Image]:
    """PIL images (RGB) from a list of PIL images or a float tensor ``[B, 3, H, W]`` in [0, 1]."""
    if isinstance(images, Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected an image tensor [B, 3, H, W], got shape {tuple(images.shape)}")
        return [to_pil_image(img.detach().float().clamp(0, 1).cpu()) for img in images]
    return [im.convert("RGB") for im in images]


class _TorchImageEncoder(nn.Module):
    """What the CLIP and DINO encoders share: a wrapped ``model``, a PIL ``preprocess`` and weight provenance."""

    model: nn.Module
    _weights_info: dict

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def weights(self) -> dict:
        return dict(self._weights_info)

    def pixel_values(self, images: ImagesLike) -> Tensor:
        """Preprocessed batch ``[B, 3, R, R]`` (float32, on the encoder's device; R = the encoder's input size)."""
        return torch.stack([self.preprocess(im) for im in as_pil_list(images)]).to(self.device)


class CLIPEncoder(_TorchImageEncoder):
    """OpenAI CLIP (clip-anytorch's ``clip.model.CLIP``) as an image/text encoder.

    Preprocessing as ``clip.load``'s transform: Resize(short side -> R, bicubic) -> CenterCrop(R) -> ToTensor ->
    Normalize(CLIP mean/std), R = the model's input resolution (224 for ViT-B/32, ViT-B/16).
    """

    def __init__(self, model: nn.Module, name: str = "clip", weights_info: dict | None = None):
        super().__init__()
        self.model = model.eval().float()
        self.name = name
        self._weights_info = weights_info or {}
        res = int(model.visual.input_resolution)
        self.preprocess = T.Compose(
            [
                T.Resize(res, interpolation=T.InterpolationMode.BICUBIC),
                T.CenterCrop(res),
                T.ToTensor(),
                T.Normalize(CLIP_MEAN, CLIP_STD),
            ]
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike, device: str | torch.device = "cpu", name: str | None = None) -> "CLIPEncoder":
        """Load an OpenAI CLIP checkpoint from a local file (TorchScript archive, state dict, or safetensors)."""
        from clip.model import build_model

        p = require_file(
            path,
            f"CLIP backbone {name or ''}".strip(),
            hint="Expected an OpenAI CLIP checkpoint such as ViT-B-32.pt (the file clip.load downloads to "
            "~/.cache/clip); copy it here and pass its path.",
        )
        state = load_state_dict(p)
        model = build_model(dict(state)).float().to(device)
        return cls(model, name=name or p.stem, weights_info={"path": str(p), "sha256": sha256_file(p)})

    @torch.no_grad()
    def encode_images(self, images: ImagesLike) -> Tensor:
        """Image embeddings ``[B, D]`` (float32, unnormalised)."""
        return self.model.encode_image(self.pixel_values(images)).float()

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        """Text embeddings ``[B, D]`` (float32, unnormalised); texts longer than 77 tokens are truncated."""
        import clip

        tokens = clip.tokenize(list(texts), truncate=True).to(self.device)
        return self.model.encode_text(tokens).float()


class DinoEncoder(_TorchImageEncoder):
    """DINO ViT (``facebook/dino-vits16`` layout, transformers ``ViTModel``): CLS embedding ``[B, 384]``.

    Preprocessing as MagicBrush's ``image_eval.py`` / DreamBooth: Resize(256, bicubic) -> CenterCrop(224) ->
    ToTensor -> Normalize(ImageNet mean/std).
    """

    def __init__(
        self,
        model: nn.Module,
        name: str = "dino",
        weights_info: dict | None = None,
        resize: int = 256,
        crop: int = 224,
    ):
        super().__init__()
        self.model = model.eval().float()
        self.name = name
        self._weights_info = weights_info or {}
        self.preprocess = T.Compose(
            [
                T.Resize(resize, interpolation=T.InterpolationMode.BICUBIC),
                T.CenterCrop(crop),
                T.ToTensor(),
                T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )
        self._interpolate = int(getattr(model.config, "image_size", crop)) != crop

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, device: str | torch.device = "cpu", name: str | None = None) -> "DinoEncoder":
        """Load a DINO ``ViTModel`` from a local Hugging Face folder (no pooling layer; CLS of the last layer)."""
        from transformers import ViTModel

        p = require_folder(
            folder,
            f"DINO backbone {name or ''}".strip(),
            hint="Expected a local copy of the Hugging Face model facebook/dino-vits16 (config.json + weights).",
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = ViTModel.from_pretrained(str(p), add_pooling_layer=False, local_files_only=True)
        return cls(model.to(device), name=name or p.name, weights_info={"path": str(p), "sha256": hash_folder(p)})

    @staticmethod
    def vits16_config():
        """The DINO ViT-S/16 architecture (hidden 384, 12 layers, 6 heads, patch 16, 224 px) as a ViTConfig."""
        from transformers import ViTConfig

        return ViTConfig(
            hidden_size=384,
            num_hidden_layers=12,
            num_attention_heads=6,
            intermediate_size=1536,
            image_size=224,
            patch_size=16,
            qkv_bias=True,
            layer_norm_eps=1e-6,
        )

    @torch.no_grad()
    def encode_images(self, images: ImagesLike) -> Tensor:
        """CLS embeddings ``[B, hidden]`` (float32, unnormalised)."""
        out = self.model(pixel_values=self.pixel_values(images), interpolate_pos_encoding=self._interpolate)
        return out.last_hidden_state[:, 0].float()
