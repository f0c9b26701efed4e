"""Latent codecs: images (B, 3, H, W) in [-1, 1] <-> transformer-ready latents (B, C, H/f, W/f).

:class:`LatentCodec` -- ``encode(images) -> latents``, already normalised for the transformer; ``decode(latents)
-> images``; attributes ``channels`` (C) and ``factor`` (f).

- :class:`PixelShuffleCodec` (tiny / small presets): lossless space-to-depth, no weights.
- :class:`FluxVAECodec` (flux-dev / flux-schnell): diffusers' ``AutoencoderKL`` with FLUX's
  ``(z - shift_factor) * scaling_factor`` normalisation, exactly as ``FluxPipeline`` / ``FluxImg2ImgPipeline``.

Weights are read with safetensors only, from local folders.
"""

from __future__ import annotations

import abc
import logging
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_cologen.models.frozen import FrozenComponent
from lit_cologen.models.weights import MODEL_FILES, check_subfolder, resolve_pretrained_path

logger = logging.getLogger(__name__)

DeviceLike = torch.device | str | int | None




class LatentCodec(FrozenComponent, abc.ABC):
    """Images <-> transformer-ready latents.

    Attributes:
        channels: C, latent channels.
        factor: f, spatial down-sampling factor (H and W must be multiples of it).
    """

    channels: int
    factor: int

    @abc.abstractmethod
    def encode(self, images: Tensor) -> Tensor:
        """images (B, 3, H, W) in [-1, 1] -> latents (B, C, H/f, W/f), normalised for the transformer."""

    @abc.abstractmethod
    def decode(self, latents: Tensor) -> Tensor:
        """latents (B, C, h, w) -> images (B, 3, h*f, w*f), nominally in [-1, 1] (not clamped)."""

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(C, H/f, W/f) for an image of ``height`` x ``width`` pixels; raises ValueError if not divisible."""
        if height % self.factor or width % self.factor:
            raise ValueError(f"image size {height}x{width} is not a multiple of the codec factor {self.factor}")
        return self.channels, height // self.factor, width // self.factor

    def _check_images(self, images: Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        self.latent_shape(images.shape[-2], images.shape[-1])

    def _check_latents(self, latents: Tensor) -> None:
        if latents.ndim != 4 or latents.shape[1] != self.channels:
            raise ValueError(f"expected latents of shape (B, {self.channels}, h, w), got {tuple(latents.shape)}")


class PixelShuffleCodec(LatentCodec):
    """Lossless space-to-depth "autoencoder" for the tiny / small presets (no weights, nothing to download).

    ``encode`` is ``pixel_unshuffle(images, f)``: (B, 3, H, W) -> (B, 3 f^2, H/f, W/f); ``decode`` is
    ``pixel_shuffle`` and inverts it exactly (bit for bit, any dtype). Scale and shift are the identity: pixels
    are already in [-1, 1] with roughly zero mean and unit-order variance, the range FLUX's normalised VAE
    latents are brought to, so no statistic has to be estimated (and the codec stays exactly invertible).
    Tensors keep their dtype (a pure re-indexing) and are moved to the codec's device.

    Args:
        factor: f, the block size; latents have ``3 * f * f`` channels.
    """

    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        if int(factor) < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        self.factor = int(factor)
        self.channels = 3 * self.factor * self.factor
        self.freeze()

    def encode(self, images: Tensor) -> Tensor:
        """images (B, 3, H, W) -> latents (B, 3 f^2, H/f, W/f)."""
        self._check_images(images)
        return F.pixel_unshuffle(images.to(self.device), self.factor)

    def decode(self, latents: Tensor) -> Tensor:
        """latents (B, 3 f^2, h, w) -> images (B, 3, h f, w f)."""
        self._check_latents(latents)
        return F.pixel_shuffle(latents.to(self.device), self.factor)

    def extra_repr(self) -> str:
        return f"factor={self.factor}, channels={self.channels}"


class FluxVAECodec(LatentCodec):
    """FLUX's VAE (diffusers ``AutoencoderKL``, 16 latent channels, factor 8) with FLUX's latent normalisation.

    ``encode``: ``latents = (z - shift_factor) * scaling_factor`` where ``z`` is the posterior mode (default,
    deterministic) or a sample; ``decode``: ``vae.decode(latents / scaling_factor + shift_factor)``, as
    ``FluxImg2ImgPipeline.prepare_latents`` and ``FluxPipeline.__call__`` do. The factor is
    ``2 ** (len(block_out_channels) - 1)``, as ``FluxPipeline.vae_scale_factor``.

    Args:
        vae: a diffusers ``AutoencoderKL``.
        sample_posterior: draw ``z`` from the posterior instead of taking its mode (default False).
    """

    def __init__(self, vae: nn.Module, *, sample_posterior: bool = False) -> None:
        super().__init__()
        self.vae = vae
        config = vae.config
        self.channels = int(config.latent_channels)
        self.factor = 2 ** (len(config.block_out_channels) - 1)
        self.scaling_factor = float(config.scaling_factor)
        shift = getattr(config, "shift_factor", None)
        self.shift_factor = float(shift) if shift is not None else 0.0
        self.sample_posterior = bool(sample_posterior)
        self._anchor = self._anchor.to(device=next(vae.parameters()).device, dtype=next(vae.parameters()).dtype)
        self.freeze()

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        subfolder: str | None = "vae",
        dtype: torch.dtype | None = None,
        sample_posterior: bool = False,
    ) -> "FluxVAECodec":
        """Load ``AutoencoderKL`` from ``path/subfolder`` (a local folder or a cached HF id; safetensors only).

        Raises:
            FileNotFoundError: the folder, the subfolder, its ``config.json`` or its ``*.safetensors`` is missing.
        """
        from diffusers import AutoencoderKL

        root = resolve_pretrained_path(path)
        check_subfolder(root, subfolder or ".", MODEL_FILES)
        kwargs: dict[str, Any] = {"use_safetensors": True}
        if subfolder:
            kwargs["subfolder"] = subfolder
        if dtype is not None:
            kwargs["torch_dtype"] = dtype
        vae = AutoencoderKL.from_pretrained(str(root), **kwargs)
        return cls(vae, sample_posterior=sample_posterior)

    def encode(self, images: Tensor, *, generator: torch.Generator | None = None, sample: bool | None = None) -> Tensor:
        """images (B, 3, H, W) in [-1, 1] -> latents (B, 16, H/8, W/8) = (z - shift) * scale, in the VAE's dtype.

        Args:
            generator: RNG for the posterior sample (only used when sampling).
            sample: override ``sample_posterior`` for this call.
        """
        self._check_images(images)
        posterior = self.vae.encode(images.to(device=self.device, dtype=self.dtype)).latent_dist
        use_sample = self.sample_posterior if sample is None else sample
        z = posterior.sample(generator=generator) if use_sample else posterior.mode()
        return (z - self.shift_factor) * self.scaling_factor

    def decode(self, latents: Tensor) -> Tensor:
        """latents (B, 16, h, w) -> images (B, 3, 8h, 8w), nominally in [-1, 1] (not clamped), in the VAE's dtype."""
        self._check_latents(latents)
        z = latents.to(device=self.device, dtype=self.dtype) / self.scaling_factor + self.shift_factor
        return self.vae.decode(z, return_dict=False)[0]

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, factor={self.factor}, scaling_factor={self.scaling_factor}, "
            f"shift_factor={self.shift_factor}, sample_posterior={self.sample_posterior}"
        )
