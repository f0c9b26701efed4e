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

Centre crop (``crop_offset``): the Hugging Face processors (``CLIPImageProcessor``, ``BitImageProcessor``:
``transformers.image_transforms.center_crop``) put the crop at ``floor((W - R) / 2)``; torchvision's ``CenterCrop``
(``clip.load``'s transform, MagicBrush's DINO transform) at ``int(round((W - R) / 2))`` (Python's round half to
even). They differ by one pixel when ``(W - R) / 2`` rounds up, on non-square images. Defaults: CLIP ``floor``,
DINO ``round``; a scorer passes the rule of its protocol's reference (``settings["clip_crop_offset"]`` /
``settings["dino_crop_offset"]``).

Text truncation (``truncation``, CLIP): ``"keep_eot"`` (``clip.tokenize(truncate=True)``: the 77th token is replaced
by end-of-text) or ``"drop_eot"`` (torchmetrics ``CLIPScore``: the token ids are cut to 77, so a caption over 77
tokens has no end-of-text token and the embedding is read at the largest token id, as CLIP's pooling does).
"""

from __future__ import annotations

import functools
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
    "center_crop",
    "center_crop_offset",
    "CROP_OFFSETS",
    "TEXT_TRUNCATIONS",
    "DINO_LAYER_NORM_EPS",
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

CROP_OFFSETS = ("floor", "round")
TEXT_TRUNCATIONS = ("keep_eot", "drop_eot")
#: LayerNorm epsilon of the torch.hub DINO ViTs (facebookresearch/dino vision_transformer.py); the Hugging Face
#: facebook/dino-vits16 config says 1e-12
DINO_LAYER_NORM_EPS = 1e-6


@functools.lru_cache(maxsize=1)
def _bpe_tokenizer():
    """CLIP's BPE tokenizer (the one ``clip.tokenize`` uses), built once."""
    from clip.simple_tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def center_crop_offset(length: int, size: int, rule: str = "floor") -> int:
    """Start of a centred window of ``size`` in ``length`` pixels: ``floor`` (HF) or ``round`` (torchvision)."""
    if rule not in CROP_OFFSETS:
        raise ValueError(f"crop_offset must be one of {CROP_OFFSETS}, got {rule!r}")
    if size > length:
        raise ValueError(f"crop size {size} exceeds the image side {length}")
    return (length - size) // 2 if rule == "floor" else int(round((length - size) / 2.0))


def center_crop(image: Image.Image, size: int, rule: str = "floor") -> Image.Image:
    """Centre ``size`` x ``size`` crop of a PIL image, offsets by :func:`center_crop_offset`."""
    left = center_crop_offset(image.width, size, rule)
    top = center_crop_offset(image.height, size, rule)
    return image.crop((left, top, left + size, top + size))


@runtime_checkable
class ImageEncoder(Protocol):
    """Anything that maps images to embeddings ``[B, D]``; ``weights`` describes the files used (for results)."""

    name: str

    def encode_images(self, images: ImagesLike, crop_offset: str | None = None) -> Tensor: ...

    def weights(self) -> dict: ...


@runtime_checkable
class ImageTextEncoder(ImageEncoder, Protocol):
    """An image encoder that also embeds text into the same space, ``[B, D]``."""

    def encode_texts(self, texts: Sequence[str], truncation: str = "keep_eot") -> Tensor: ...


def as_pil_list(images: ImagesLike) -> list[Image.Image]:
    """PIL images (RGB) from a list of PIL images or a float tensor ``[B, 3, H, W]`` in [0, 1]."""
    if isinstance(images, Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected an image tensor [B, 3, H, W], got shape {tuple(images.shape)}")
        return [to_pil_image(img.detach().float().clamp(0, 1).cpu()) for img in images]
    return [im.convert("RGB") for im in images]


class _TorchImageEncoder(nn.Module):
    """What the CLIP and DINO encoders share: a wrapped ``model``, PIL preprocessing (resize the short side to
    ``resize`` bicubic, centre crop ``crop``, normalise with ``mean`` / ``std``) and weight provenance."""

    model: nn.Module
    _weights_info: dict

    def _set_preprocessing(self, resize: int, crop: int, mean, std, crop_offset: str) -> None:
        center_crop_offset(crop, crop, crop_offset)  # validates the rule
        self.resize, self.crop, self.crop_offset = int(resize), int(crop), crop_offset
        self._resize = T.Resize(self.resize, interpolation=T.InterpolationMode.BICUBIC)
        self._to_tensor = T.Compose([T.ToTensor(), T.Normalize(mean, std)])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The precision the model runs in."""
        return next(self.model.parameters()).dtype

    def weights(self) -> dict:
        return dict(self._weights_info)

    def preprocess(self, image: Image.Image, crop_offset: str | None = None) -> Tensor:
        """One PIL image -> ``[3, crop, crop]`` float32 (resize short side, centre crop, normalise);
        ``crop_offset`` None = the encoder's ``crop_offset``."""
        return self._to_tensor(center_crop(self._resize(image), self.crop, crop_offset or self.crop_offset))

    def pixel_values(self, images: ImagesLike, crop_offset: str | None = None) -> Tensor:
        """Preprocessed batch ``[B, 3, R, R]`` (float32, on the encoder's device; R = the encoder's input size)."""
        return torch.stack([self.preprocess(im, crop_offset) for im in as_pil_list(images)]).to(self.device)


class CLIPEncoder(_TorchImageEncoder):
    """OpenAI CLIP (clip-anytorch's ``clip.model.CLIP``) as an image/text encoder.

    Preprocessing as ``clip.load``'s transform and HF's ``CLIPImageProcessor``: Resize(short side -> R, bicubic) ->
    centre crop R (offset rule ``crop_offset``, see the module docstring) -> ToTensor -> Normalize(CLIP mean/std),
    R = the model's input resolution (224 for ViT-B/32, ViT-B/16). ``crop_offset`` default ``floor`` (HF's
    ``CLIPImageProcessor``, which torchmetrics' ``CLIPScore`` and Kosmos-G's scorer use); ``clip.load``'s transform
    is ``round``.
    """

    def __init__(self, model: nn.Module, name: str = "clip", weights_info: dict | None = None, crop_offset: str = "floor"):
        super().__init__()
        self.model = model.eval().float()
        self.name = name
        self._weights_info = weights_info or {}
        res = int(model.visual.input_resolution)
        self._set_preprocessing(res, res, CLIP_MEAN, CLIP_STD, crop_offset)

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
    def encode_images(self, images: ImagesLike, crop_offset: str | None = None) -> Tensor:
        """Image embeddings ``[B, D]`` (float32, unnormalised)."""
        return self.model.encode_image(self.pixel_values(images, crop_offset)).float()

    def tokenize(self, texts: Sequence[str], truncation: str = "keep_eot") -> Tensor:
        """Token ids ``[B, 77]`` (long): ``[SOT] + BPE(text) + [EOT]``, zero-padded; see the module docstring for
        ``truncation`` of texts over 77 tokens."""
        import clip

        if truncation not in TEXT_TRUNCATIONS:
            raise ValueError(f"truncation must be one of {TEXT_TRUNCATIONS}, got {truncation!r}")
        if truncation == "keep_eot":
            return clip.tokenize(list(texts), truncate=True)
        tok = _bpe_tokenizer()
        sot, eot = tok.encoder["<|startoftext|>"], tok.encoder["<|endoftext|>"]
        n = int(self.model.context_length)
        out = torch.zeros(len(texts), n, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = ([sot] + tok.encode(text) + [eot])[:n]
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], truncation: str = "keep_eot") -> Tensor:
        """Text embeddings ``[B, D]`` (float32, unnormalised); texts over 77 tokens are cut per ``truncation``."""
        return self.model.encode_text(self.tokenize(texts, truncation).to(self.device)).float()


class DinoEncoder(_TorchImageEncoder):
    """DINO ViT (``facebook/dino-vits16`` layout, transformers ``ViTModel``): CLS embedding ``[B, 384]``.

    Preprocessing as MagicBrush's ``image_eval.py`` / DreamBooth: Resize(256, bicubic) -> centre crop 224 (offset
    rule ``crop_offset``, default ``round``: every DINO reference uses torchvision's ``CenterCrop``) -> ToTensor ->
    Normalize(ImageNet mean/std).

    Every LayerNorm runs with ``layer_norm_eps`` (default 1e-6, the torch.hub DINO models' value), whatever the
    loaded config says (the Hub ``facebook/dino-vits16`` config has 1e-12); both are recorded in ``weights()``.
    """

    def __init__(
        self,
        model: nn.Module,
        name: str = "dino",
        weights_info: dict | None = None,
        resize: int = 256,
        crop: int = 224,
        layer_norm_eps: float = DINO_LAYER_NORM_EPS,
        crop_offset: str = "round",
    ):
        super().__init__()
        config_eps = getattr(model.config, "layer_norm_eps", None)
        self.model = model.eval().float()
        self.name = name
        self.layer_norm_eps = float(layer_norm_eps)
        self._set_layer_norm_eps(self.layer_norm_eps)
        self._weights_info = {"config_layer_norm_eps": config_eps, **(weights_info or {})}
        self._weights_info["layer_norm_eps"] = self.layer_norm_eps
        self._set_preprocessing(resize, crop, IMAGENET_MEAN, IMAGENET_STD, crop_offset)
        self._interpolate = int(getattr(model.config, "image_size", crop)) != crop

    def _set_layer_norm_eps(self, eps: float) -> None:
        """Run every LayerNorm of the model with ``eps`` (and say so in its config)."""
        for m in self.model.modules():
            if isinstance(m, nn.LayerNorm):
                m.eps = eps
        self.model.config.layer_norm_eps = eps

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
        info = {"path": str(p), "sha256": hash_folder(p), "config_layer_norm_eps": model.config.layer_norm_eps}
        return cls(model.to(device), name=name or p.name, weights_info=info)

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
    def encode_images(self, images: ImagesLike, crop_offset: str | None = None) -> Tensor:
        """CLS embeddings ``[B, hidden]`` (float32, unnormalised)."""
        pv = self.pixel_values(images, crop_offset)
        out = self.model(pixel_values=pv, interpolate_pos_encoding=self._interpolate)
        return out.last_hidden_state[:, 0].float()
