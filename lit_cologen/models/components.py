"""The non-transformer parts of a FLUX pipeline: latent codecs, text conditioners, their factory, a text cache.

Two small interfaces, each a frozen ``torch.nn.Module`` (``requires_grad_(False)``, pinned in eval mode):

* :class:`LatentCodec` -- ``encode(images (B, 3, H, W) in [-1, 1]) -> latents (B, C, H/f, W/f)``, already
  normalised for the transformer; ``decode(latents) -> images (B, 3, H, W)``; attributes ``channels`` (C) and
  ``factor`` (f).

  - :class:`PixelShuffleCodec` (tiny / small presets): lossless space-to-depth, no weights.
  - :class:`FluxVAECodec` (flux-dev / flux-schnell): diffusers' ``AutoencoderKL`` with FLUX's
    ``(z - shift_factor) * scaling_factor`` normalisation, exactly as ``FluxPipeline`` / ``FluxImg2ImgPipeline``.

* :class:`TextConditioner` -- ``forward(prompts: list[str]) -> (prompt_embeds (B, L, joint_attention_dim),
  pooled (B, pooled_projection_dim))``; attributes ``joint_attention_dim``, ``pooled_projection_dim``,
  ``max_length`` (L).

  - :class:`BuiltinTextEncoder` (tiny / small presets): CLIP's BPE tokenizer rebuilt offline from the vocabulary
    shipped in clip-anytorch, and a tiny ``CLIPTextModel`` whose weights are a pure function of a seed.
  - :class:`FluxTextEncoders` (flux-dev / flux-schnell): FLUX's CLIP-L (pooled vector) + T5-XXL (sequence), the
    semantics of ``FluxPipeline.encode_prompt`` reproduced (a parity test checks it against stock diffusers).

* :func:`build_components` -- preset name + optional local folder -> ``(codec, text)``.
* :class:`TextEmbeddingCache` -- in-memory LRU (+ optional safetensors folder) of per-prompt embeddings.

Frozen components stay in eval mode even when a parent module calls ``.train()`` (``train`` is overridden), and
hold no trainable parameter, so Lightning's optimiser / parameter counts never see them. To keep a component off
the training device (e.g. T5-XXL on CPU while embeddings are cached), do not register it as a submodule of the
LightningModule (Lightning would move it); keep it as a plain attribute and pass ``text_device`` /
``codec_device`` to :func:`build_components`.

Nothing here downloads: folders are local, or Hugging Face ids already in the local cache (``HF_HUB_OFFLINE=1``).
Weights are read with safetensors only.
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_cologen.utils.atomic import atomic_path

from .tokenizer_assets import CLIP_BOS_TOKEN, CLIP_EOS_TOKEN, CLIP_VOCAB_SIZE, build_clip_tokenizer

__all__ = [
    "FrozenComponent",
    "LatentCodec",
    "PixelShuffleCodec",
    "FluxVAECodec",
    "TextConditioner",
    "BuiltinTextEncoder",
    "FluxTextEncoders",
    "TextEmbeddingCache",
    "BUILTIN_PRESETS",
    "FLUX_PRESETS",
    "FLUX_LAYOUT",
    "build_components",
    "check_flux_folder",
    "resolve_pretrained_path",
]

logger = logging.getLogger(__name__)

DeviceLike = torch.device | str | int | None


# ----------------------------------------------------------------------------------------------------------------
# Frozen base
# ----------------------------------------------------------------------------------------------------------------


class FrozenComponent(nn.Module):
    """Base for frozen components: no trainable parameter, always in eval mode.

    A non-persistent 0-d buffer (``_anchor``) follows ``.to(device / dtype)``, so ``device`` and ``dtype`` are
    defined even for a component without weights (:class:`PixelShuffleCodec`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def freeze(self) -> "FrozenComponent":
        """``requires_grad_(False)`` on every parameter and eval mode; returns ``self``."""
        self.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "FrozenComponent":  # noqa: D102 - documented in the class
        # Frozen: a parent's .train() must not switch dropout etc. back on.
        return super().train(False)

    @property
    def device(self) -> torch.device:
        """Device of the component's weights (of its anchor buffer when it has none)."""
        return self._anchor.device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype the component computes in."""
        return self._anchor.dtype


# ----------------------------------------------------------------------------------------------------------------
# Latent codecs
# ----------------------------------------------------------------------------------------------------------------


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
        _check_subfolder(root, subfolder or ".", _MODEL_FILES)
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


# ----------------------------------------------------------------------------------------------------------------
# Text conditioners
# ----------------------------------------------------------------------------------------------------------------


class TextConditioner(FrozenComponent, abc.ABC):
    """Prompts -> (sequence embeddings, pooled embedding) for the MMDiT.

    Attributes:
        joint_attention_dim: D, width of the sequence embeddings (the transformer's ``joint_attention_dim``).
        pooled_projection_dim: P, width of the pooled vector (the transformer's ``pooled_projection_dim``).
        max_length: L, every prompt is padded / truncated to L tokens.
    """

    joint_attention_dim: int
    pooled_projection_dim: int
    max_length: int

    @abc.abstractmethod
    def forward(self, prompts: Sequence[str] | str) -> tuple[Tensor, Tensor]:
        """prompts (B strings) -> prompt_embeds (B, L, D), pooled (B, P), on ``self.device``."""

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A hex string that changes when the embeddings this conditioner produces would change (cache key)."""

    def encode(
        self, prompts: Sequence[str] | str, *, device: DeviceLike = None, dtype: torch.dtype | None = None
    ) -> tuple[Tensor, Tensor]:
        """``forward`` without autograd, results moved to ``device`` / ``dtype`` (e.g. the training device)."""
        with torch.no_grad():
            embeds, pooled = self(prompts)
        return embeds.to(device=device, dtype=dtype), pooled.to(device=device, dtype=dtype)

    def _empty(self) -> tuple[Tensor, Tensor]:
        return (
            torch.zeros(0, self.max_length, self.joint_attention_dim, device=self.device, dtype=self.dtype),
            torch.zeros(0, self.pooled_projection_dim, device=self.device, dtype=self.dtype),
        )


def _as_prompt_list(prompts: Sequence[str] | str) -> list[str]:
    if isinstance(prompts, str):
        return [prompts]
    prompts = list(prompts)
    if not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be a string or a sequence of strings")
    return prompts


def _tokenize(tokenizer: Any, prompts: list[str], max_length: int) -> tuple[Tensor, list[int]]:
    """Pad / truncate to ``max_length`` as diffusers does; returns ids (B, max_length) and the truncated rows."""
    ids = tokenizer(
        prompts,
        padding="max_length",
        max_length=max_length,
        truncation=True,
        return_overflowing_tokens=False,
        return_length=False,
        return_tensors="pt",
    ).input_ids
    lengths = [len(x) for x in tokenizer(prompts, padding=False, truncation=False, verbose=False).input_ids]
    return ids, [i for i, n in enumerate(lengths) if n > max_length]


def _derived_seed(seed: int, name: str) -> int:
    """A 63-bit seed for parameter ``name``: independent of parameter order, construction order and global RNG."""
    return int.from_bytes(hashlib.sha1(f"{seed}:{name}".encode()).digest()[:8], "little") & ((1 << 63) - 1)


class BuiltinTextEncoder(TextConditioner):
    """A small frozen text encoder that needs no downloaded weights (tiny / small presets).

    * Tokenizer: ``transformers.CLIPTokenizer`` over CLIP's real BPE vocabulary (49,408 tokens), rebuilt in memory
      from the table that ships inside clip-anytorch (see :mod:`lit_cologen.models.tokenizer_assets`); ids equal
      those of OpenAI's CLIP tokenizer. Prompts are padded with ``<|endoftext|>`` / truncated to ``max_length``.
    * Encoder: ``transformers.CLIPTextModel`` (causal, ``width`` wide, ``layers`` deep) whose every weight is a
      pure function of ``seed`` and the parameter's name (see :meth:`reset_parameters`), so two processes build
      identical encoders with no file. Init keeps words readable: token embeddings N(0, 1), position embeddings
      N(0, 1), Q/K/V/fc1 variance-preserving N(0, 1/fan_in), and the residual branches (attention out-projection,
      fc2) scaled by ``residual_scale`` so each output state stays dominated by its own token + position while
      the causal attention mixes in its left context (word order).
    * Outputs: ``prompt_embeds = last_hidden_state @ W_seq`` (B, L, joint_attention_dim) and ``pooled =
      summary @ W_pool`` (B, pooled_projection_dim); ``W_seq``, ``W_pool`` are fixed seeded linears (N(0, 1/width),
      no bias), giving features of unit order. ``summary`` depends on ``pooling``:

      - ``"mean"`` (default): mean of the final states over the prompt's tokens, ``<|startoftext|>`` through the
        first ``<|endoftext|>`` (padding excluded). With random frozen weights this is far more informative
        than CLIP's pooler: on Shapes-5-like captions a linear probe reads the first object's colour and shape
        from it perfectly (background colour ~90 %), against 60-80 % from the end-token state, which is
        dominated by the end token's own embedding and position.
      - ``"eos"``: CLIP's ``pooler_output`` (the final state at the first ``<|endoftext|>``), as FLUX uses.

    Args:
        joint_attention_dim: D of the sequence output.
        pooled_projection_dim: P of the pooled output.
        max_length: L, tokens per prompt including ``<|startoftext|>`` / ``<|endoftext|>``.
        width, layers, heads: CLIPTextModel hidden size, depth, attention heads (MLP is 4 x width).
        seed: weight seed.
        residual_scale: multiplier on the init of the residual-branch output projections.
        pooling: ``"mean"`` or ``"eos"`` (see above).
        tokenizer: an already-built CLIP tokenizer (default: built from clip-anytorch's vocabulary).
    """

    CONFIG_NAME = "config.json"
    WEIGHTS_NAME = "model.safetensors"
    TOKENIZER_SUBFOLDER = "tokenizer"
    FORMAT = "lit_cologen.BuiltinTextEncoder"
    FORMAT_VERSION = 1

    def __init__(
        self,
        joint_attention_dim: int,
        pooled_projection_dim: int,
        max_length: int = 32,
        width: int = 64,
        layers: int = 2,
        heads: int = 4,
        seed: int = 0,
        residual_scale: float = 0.5,
        pooling: str = "mean",
        *,
        tokenizer: Any | None = None,
    ) -> None:
        super().__init__()
        from transformers import CLIPTextConfig, CLIPTextModel

        if max_length < 3:
            raise ValueError(f"max_length must be >= 3 (start, one token, end), got {max_length}")
        if pooling not in ("mean", "eos"):
            raise ValueError(f"pooling must be 'mean' or 'eos', got {pooling!r}")
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.joint_attention_dim = int(joint_attention_dim)
        self.pooled_projection_dim = int(pooled_projection_dim)
        self.max_length = int(max_length)
        self.config = {
            "joint_attention_dim": self.joint_attention_dim,
            "pooled_projection_dim": self.pooled_projection_dim,
            "max_length": self.max_length,
            "width": int(width),
            "layers": int(layers),
            "heads": int(heads),
            "seed": int(seed),
            "residual_scale": float(residual_scale),
            "pooling": pooling,
        }
        # a tokenizer passed in is used as is (max_length is always passed explicitly when tokenising)
        self.tokenizer = tokenizer if tokenizer is not None else build_clip_tokenizer(self.max_length)
        bos_id = self.tokenizer.convert_tokens_to_ids(CLIP_BOS_TOKEN)
        eos_id = self.tokenizer.convert_tokens_to_ids(CLIP_EOS_TOKEN)
        clip_config = CLIPTextConfig(
            vocab_size=CLIP_VOCAB_SIZE,
            hidden_size=int(width),
            intermediate_size=4 * int(width),
            projection_dim=int(width),
            num_hidden_layers=int(layers),
            num_attention_heads=int(heads),
            max_position_embeddings=self.max_length,
            hidden_act="quick_gelu",
            attention_dropout=0.0,
            bos_token_id=bos_id,
            eos_token_id=eos_id,  # pooled = state at the first <|endoftext|> (padding uses it too)
            pad_token_id=eos_id,
        )
        self.text_model = CLIPTextModel(clip_config)
        self.seq_proj = nn.Linear(int(width), self.joint_attention_dim, bias=False)
        self.pooled_proj = nn.Linear(int(width), self.pooled_projection_dim, bias=False)
        self.reset_parameters()
        self.freeze()
        self._warned_truncation = False

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Re-initialise every weight from ``seed``: each parameter from its own generator seeded by
        sha1(seed, name), drawn on CPU in float32, so the result does not depend on transformers' init code, the
        global RNG, the device or parameter order."""
        seed = self.config["seed"]
        residual_scale = self.config["residual_scale"]
        for name, param in self.named_parameters():
            gen = torch.Generator().manual_seed(_derived_seed(seed, name))
            leaf = name.rsplit(".", 1)[-1]
            if "layer_norm" in name or "layernorm" in name:
                value = torch.ones(param.shape) if leaf == "weight" else torch.zeros(param.shape)
            elif leaf == "bias":
                value = torch.zeros(param.shape)
            elif name.endswith("token_embedding.weight") or name.endswith("position_embedding.weight"):
                value = torch.randn(param.shape, generator=gen)
            elif param.ndim == 2:
                std = param.shape[1] ** -0.5
                if name.endswith("out_proj.weight") or name.endswith("fc2.weight"):
                    std *= residual_scale
                value = torch.randn(param.shape, generator=gen) * std
            else:  # pragma: no cover - CLIPTextModel has no other parameter kind
                raise RuntimeError(f"no init rule for parameter {name} {tuple(param.shape)}")
            param.copy_(value.to(param.dtype))

    def forward(self, prompts: Sequence[str] | str) -> tuple[Tensor, Tensor]:
        """prompts (B strings) -> prompt_embeds (B, max_length, joint_attention_dim), pooled (B,
        pooled_projection_dim), in ``self.dtype`` on ``self.device``."""
        prompts = _as_prompt_list(prompts)
        if not prompts:
            return self._empty()
        ids, truncated = _tokenize(self.tokenizer, prompts, self.max_length)
        if truncated and not self._warned_truncation:
            self._warned_truncation = True
            logger.warning(
                "BuiltinTextEncoder: %d prompt(s) longer than max_length=%d tokens were truncated, e.g. %r "
                "(logged once per encoder)", len(truncated), self.max_length, prompts[truncated[0]]
            )
        ids = ids.to(self.device)
        out = self.text_model(input_ids=ids)
        hidden = out.last_hidden_state  # (B, L, width)
        if self.config["pooling"] == "eos":
            summary = out.pooler_output  # (B, width)
        else:
            eos_pos = (ids == self.text_model.config.eos_token_id).int().argmax(dim=1)  # (B,) first end token
            mask = torch.arange(ids.shape[1], device=ids.device)[None, :] <= eos_pos[:, None]  # (B, L)
            mask = mask.to(hidden.dtype)[..., None]
            summary = (hidden * mask).sum(dim=1) / mask.sum(dim=1)
        return self.seq_proj(hidden), self.pooled_proj(summary)

    def fingerprint(self) -> str:
        """sha1 over the config and every weight's bytes (a few M parameters: milliseconds)."""
        h = hashlib.sha1(json.dumps(self.config, sort_keys=True).encode())
        for name, tensor in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()

    # -- persistence ------------------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json``, ``model.safetensors`` (float32) and ``tokenizer/`` into ``directory``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"format": self.FORMAT, "format_version": self.FORMAT_VERSION, **self.config}
        (directory / self.CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / self.WEIGHTS_NAME), metadata={"format": self.FORMAT})
        self.tokenizer.save_pretrained(str(directory / self.TOKENIZER_SUBFOLDER))
        return directory

    @classmethod
    def is_saved_in(cls, directory: str | os.PathLike) -> bool:
        """True if ``directory`` holds a :meth:`save_pretrained` output."""
        config_path = Path(directory) / cls.CONFIG_NAME
        if not config_path.is_file():
            return False
        try:
            return json.loads(config_path.read_text(encoding="utf-8")).get("format") == cls.FORMAT
        except (ValueError, OSError):
            return False

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "BuiltinTextEncoder":
        """Load a :meth:`save_pretrained` folder (weights from safetensors, strict; tokenizer from ``tokenizer/``
        when present, else rebuilt from clip-anytorch)."""
        from safetensors.torch import load_file
        from transformers import CLIPTokenizer

        directory = Path(directory)
        missing = [n for n in (cls.CONFIG_NAME, cls.WEIGHTS_NAME) if not (directory / n).is_file()]
        if not directory.is_dir():
            raise FileNotFoundError(f"BuiltinTextEncoder folder {directory} does not exist")
        if missing:
            raise FileNotFoundError(f"BuiltinTextEncoder folder {directory}: missing {', '.join(missing)}")
        config = json.loads((directory / cls.CONFIG_NAME).read_text(encoding="utf-8"))
        if config.pop("format", None) != cls.FORMAT:
            raise ValueError(f"{directory / cls.CONFIG_NAME} is not a {cls.FORMAT} config")
        version = config.pop("format_version", None)
        if version != cls.FORMAT_VERSION:
            raise ValueError(f"{directory}: unsupported format_version {version} (expected {cls.FORMAT_VERSION})")
        tok_dir = directory / cls.TOKENIZER_SUBFOLDER
        tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir)) if tok_dir.is_dir() else None
        encoder = cls(**config, tokenizer=tokenizer)
        state = load_file(str(directory / cls.WEIGHTS_NAME))
        encoder.load_state_dict(state, strict=True)
        return encoder

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())


class FluxTextEncoders(TextConditioner):
    """FLUX.1's text conditioning: CLIP-L pooled vector + T5-XXL sequence, as ``FluxPipeline.encode_prompt``.

    * pooled (B, 768): ``tokenizer`` pads / truncates to ``tokenizer.model_max_length`` (77), ``text_encoder``
      (``CLIPTextModel``) runs on the ids (no attention mask), its ``pooler_output`` is cast to the CLIP dtype.
    * prompt_embeds (B, max_sequence_length, 4096): ``tokenizer_2`` (T5) pads / truncates to
      ``max_sequence_length`` (512 for dev, 256 for schnell), ``text_encoder_2`` (``T5EncoderModel``) runs on the
      ids (no attention mask), its last hidden state is cast to the T5 dtype.

    Both outputs are returned on ``self.device``. ``prompts_2`` (optional) feeds T5 with different text, like
    ``encode_prompt(prompt_2=...)``. Truncation is logged once per instance.
    """

    def __init__(
        self,
        text_encoder: nn.Module,
        tokenizer: Any,
        text_encoder_2: nn.Module,
        tokenizer_2: Any,
        *,
        max_sequence_length: int = 512,
    ) -> None:
        super().__init__()
        self.text_encoder = text_encoder
        self.text_encoder_2 = text_encoder_2
        self.tokenizer = tokenizer
        self.tokenizer_2 = tokenizer_2
        self.tokenizer_max_length = int(getattr(tokenizer, "model_max_length", 77) or 77)
        if self.tokenizer_max_length > 10_000:  # tokenizer saved without a max length (transformers' sentinel)
            self.tokenizer_max_length = 77
        self.max_length = int(max_sequence_length)
        self.joint_attention_dim = int(text_encoder_2.config.d_model)
        self.pooled_projection_dim = int(text_encoder.config.hidden_size)
        p = next(text_encoder_2.parameters())
        self._anchor = self._anchor.to(device=p.device, dtype=p.dtype)
        self._warned_truncation: set[str] = set()
        self.freeze()

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        max_sequence_length: int = 512,
        dtype: torch.dtype | None = None,
    ) -> "FluxTextEncoders":
        """Load from a FLUX.1-layout folder (``text_encoder``, ``tokenizer``, ``text_encoder_2``, ``tokenizer_2``)
        or a cached HF id. Safetensors only.

        Raises:
            FileNotFoundError: naming the folder and each missing subfolder / file.
        """
        from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

        root = resolve_pretrained_path(path)
        check_flux_folder(root, parts=("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"))
        kwargs: dict[str, Any] = {"use_safetensors": True}
        if dtype is not None:
            kwargs["dtype"] = dtype
        text_encoder = CLIPTextModel.from_pretrained(str(root), subfolder="text_encoder", **kwargs)
        text_encoder_2 = T5EncoderModel.from_pretrained(str(root), subfolder="text_encoder_2", **kwargs)
        tokenizer = CLIPTokenizer.from_pretrained(str(root), subfolder="tokenizer")
        tokenizer_2 = T5TokenizerFast.from_pretrained(str(root), subfolder="tokenizer_2")
        return cls(text_encoder, tokenizer, text_encoder_2, tokenizer_2, max_sequence_length=max_sequence_length)

    def _warn_truncated(self, which: str, prompts: list[str], rows: list[int], limit: int) -> None:
        if rows and which not in self._warned_truncation:
            self._warned_truncation.add(which)
            logger.warning(
                "FluxTextEncoders: %d prompt(s) longer than %d %s tokens were truncated, e.g. %r (logged once)",
                len(rows), limit, which, prompts[rows[0]],
            )

    def pooled_embeds(self, prompts: Sequence[str] | str) -> Tensor:
        """prompts (B) -> CLIP pooled output (B, hidden_size) in the CLIP dtype, on ``self.device``."""
        prompts = _as_prompt_list(prompts)
        ids, truncated = _tokenize(self.tokenizer, prompts, self.tokenizer_max_length)
        self._warn_truncated("CLIP", prompts, truncated, self.tokenizer_max_length)
        device = next(self.text_encoder.parameters()).device
        out = self.text_encoder(ids.to(device), output_hidden_states=False)
        return out.pooler_output.to(dtype=self.text_encoder.dtype, device=self.device)

    def sequence_embeds(self, prompts: Sequence[str] | str) -> Tensor:
        """prompts (B) -> T5 last hidden state (B, max_sequence_length, d_model) in the T5 dtype."""
        prompts = _as_prompt_list(prompts)
        ids, truncated = _tokenize(self.tokenizer_2, prompts, self.max_length)
        self._warn_truncated("T5", prompts, truncated, self.max_length)
        device = next(self.text_encoder_2.parameters()).device
        out = self.text_encoder_2(ids.to(device), output_hidden_states=False)[0]
        return out.to(dtype=self.text_encoder_2.dtype, device=self.device)

    def forward(
        self, prompts: Sequence[str] | str, prompts_2: Sequence[str] | str | None = None
    ) -> tuple[Tensor, Tensor]:
        """prompts (B) -> prompt_embeds (B, max_sequence_length, 4096), pooled (B, 768) (FLUX.1 sizes)."""
        prompts = _as_prompt_list(prompts)
        if not prompts:
            return self._empty()
        prompts_2 = prompts if prompts_2 is None else _as_prompt_list(prompts_2)
        if len(prompts_2) != len(prompts):
            raise ValueError(f"prompts_2 has {len(prompts_2)} entries for {len(prompts)} prompts")
        pooled = self.pooled_embeds(prompts)
        return self.sequence_embeds(prompts_2), pooled

    def fingerprint(self) -> str:
        """sha1 over both model configs, both tokenizers' identity and lengths (weights are not hashed: T5-XXL is
        ~9 GB; the configs' ``_name_or_path`` tells folders apart)."""
        parts = {
            "clip": self.text_encoder.config.to_dict(),
            "t5": self.text_encoder_2.config.to_dict(),
            "tokenizer": [type(self.tokenizer).__name__, len(self.tokenizer), self.tokenizer_max_length],
            "tokenizer_2": [type(self.tokenizer_2).__name__, len(self.tokenizer_2), self.max_length],
            "dtype": [str(self.text_encoder.dtype), str(self.text_encoder_2.dtype)],
        }
        for cfg in (parts["clip"], parts["t5"]):
            for key in ("transformers_version", "dtype", "torch_dtype"):
                cfg.pop(key, None)
        return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# Folder checks and the factory
# ----------------------------------------------------------------------------------------------------------------

_MODEL_FILES = ("config.json", "*.safetensors")
#: FLUX.1 folder layout: subfolder -> files it must hold (a tuple entry "a|b" means one of them).
FLUX_LAYOUT: dict[str, tuple[str, ...]] = {
    "vae": _MODEL_FILES,
    "text_encoder": _MODEL_FILES,
    "tokenizer": ("tokenizer.json|vocab.json",),
    "text_encoder_2": _MODEL_FILES,
    "tokenizer_2": ("tokenizer.json|spiece.model",),
}

#: Built-in presets: codec factor and BuiltinTextEncoder settings (overridable through build_components).
BUILTIN_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"codec_factor": 2, "max_length": 48, "width": 64, "layers": 2, "heads": 4},
    "small": {"codec_factor": 2, "max_length": 64, "width": 128, "layers": 3, "heads": 4},
}
#: FLUX presets: T5 max_sequence_length as in the official pipelines (dev 512, schnell 256).
FLUX_PRESETS: dict[str, dict[str, int]] = {
    "flux-dev": {"max_sequence_length": 512},
    "flux-schnell": {"max_sequence_length": 256},
}


def resolve_pretrained_path(path: str | os.PathLike) -> Path:
    """A local folder as is, or a Hugging Face repo id resolved from the local cache only (never downloads).

    Raises:
        FileNotFoundError: neither an existing folder nor a cached repo id.
    """
    p = Path(os.path.expanduser(str(path)))
    if p.is_dir():
        return p
    text = str(path)
    if p.exists():
        raise FileNotFoundError(f"pretrained path {text} is a file, expected a folder")
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(repo_id=text, local_files_only=True))
        except Exception as err:  # noqa: BLE001 - any failure means "not available offline"
            raise FileNotFoundError(
                f"pretrained path {text}: no such folder, and not a Hugging Face id in the local cache "
                f"(nothing is downloaded; fetch it beforehand or point to a local copy): {err}"
            ) from None
    raise FileNotFoundError(f"pretrained folder {text} does not exist")


def missing_in(folder: Path, required: Iterable[str]) -> list[str]:
    """Entries of ``required`` not present in ``folder`` (``"a|b"`` = one of them; ``*`` = glob)."""
    missing = []
    for spec in required:
        options = spec.split("|")
        if not any(any(folder.glob(opt)) if "*" in opt else (folder / opt).is_file() for opt in options):
            missing.append(" or ".join(options))
    return missing


def _check_subfolder(root: Path, subfolder: str, required: Iterable[str]) -> None:
    folder = root / subfolder
    if not folder.is_dir():
        raise FileNotFoundError(f"pretrained folder {root}: missing subfolder '{subfolder}/'")
    missing = missing_in(folder, required)
    if missing:
        raise FileNotFoundError(f"pretrained folder {root}: subfolder '{subfolder}/' lacks {', '.join(missing)}")


def check_flux_folder(path: str | os.PathLike, parts: Iterable[str] | None = None) -> Path:
    """Check a FLUX.1-layout folder before loading anything; returns it as a Path.

    Args:
        path: local folder.
        parts: subfolders to check (default: all of :data:`FLUX_LAYOUT`).

    Raises:
        FileNotFoundError: the message names the folder and every missing subfolder / file.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"pretrained folder {root} does not exist")
    problems = []
    for sub in parts if parts is not None else FLUX_LAYOUT:
        folder = root / sub
        if not folder.is_dir():
            problems.append(f"missing subfolder '{sub}/'")
            continue
        missing = missing_in(folder, FLUX_LAYOUT[sub])
        if missing:
            problems.append(f"subfolder '{sub}/' lacks {', '.join(missing)}")
    if problems:
        raise FileNotFoundError(f"pretrained folder {root} is not a complete FLUX.1 layout: " + "; ".join(problems))
    return root


def _place(module: FrozenComponent, device: DeviceLike, dtype: torch.dtype | None) -> FrozenComponent:
    if device is not None or dtype is not None:
        module.to(device=device, dtype=dtype)
    return module


def build_components(
    preset_name: str,
    pretrained_path: str | os.PathLike | None = None,
    *,
    joint_attention_dim: int | None = None,
    pooled_projection_dim: int | None = None,
    max_sequence_length: int | None = None,
    codec_factor: int | None = None,
    text_encoder_kwargs: Mapping[str, Any] | None = None,
    sample_posterior: bool = False,
    device: DeviceLike = None,
    dtype: torch.dtype | None = None,
    text_device: DeviceLike = None,
    text_dtype: torch.dtype | None = None,
    codec_device: DeviceLike = None,
    codec_dtype: torch.dtype | None = None,
) -> tuple[LatentCodec, TextConditioner]:
    """Build the (codec, text conditioner) pair of a preset: :func:`build_codec` + :func:`build_text_conditioner`.

    Placement: ``device`` / ``dtype`` apply to both; ``text_device`` / ``text_dtype`` and ``codec_device`` /
    ``codec_dtype`` override them per component (e.g. ``text_device="cpu"`` keeps T5 off the GPU for caching).
    """
    codec = build_codec(preset_name, pretrained_path, codec_factor=codec_factor, sample_posterior=sample_posterior,
                        device=codec_device if codec_device is not None else device, dtype=codec_dtype or dtype)
    text = build_text_conditioner(
        preset_name, pretrained_path, joint_attention_dim=joint_attention_dim,
        pooled_projection_dim=pooled_projection_dim, max_sequence_length=max_sequence_length,
        text_encoder_kwargs=text_encoder_kwargs, device=text_device if text_device is not None else device,
        dtype=text_dtype or dtype,
    )
    return codec, text


def _preset_kind(preset_name: str) -> str:
    name = preset_name.lower().replace("_", "-")
    if name not in BUILTIN_PRESETS and name not in FLUX_PRESETS:
        raise ValueError(f"unknown preset '{preset_name}'; expected one of {[*BUILTIN_PRESETS, *FLUX_PRESETS]}")
    return name


def _flux_root(name: str, pretrained_path: str | os.PathLike | None) -> Path:
    if pretrained_path is None:
        raise FileNotFoundError(
            f"preset '{name}' loads FLUX.1 weights from a local folder: pass pretrained_path "
            f"(a folder with {', '.join(s + '/' for s in FLUX_LAYOUT)}, or a cached HF id)"
        )
    return check_flux_folder(resolve_pretrained_path(pretrained_path))


def build_codec(
    preset_name: str,
    pretrained_path: str | os.PathLike | None = None,
    *,
    codec_factor: int | None = None,
    sample_posterior: bool = False,
    device: DeviceLike = None,
    dtype: torch.dtype | None = None,
) -> LatentCodec:
    """The preset's latent codec: :class:`PixelShuffleCodec` (tiny / small; factor ``codec_factor``, default the
    preset's) or :class:`FluxVAECodec` from ``pretrained_path`` (FLUX presets).

    Raises:
        ValueError: unknown preset. FileNotFoundError: a FLUX preset without a folder, or a missing subfolder.
    """
    name = _preset_kind(preset_name)
    if name in BUILTIN_PRESETS:
        codec: LatentCodec = PixelShuffleCodec(codec_factor or BUILTIN_PRESETS[name]["codec_factor"])
    else:
        codec = FluxVAECodec.from_pretrained(_flux_root(name, pretrained_path), dtype=dtype,
                                             sample_posterior=sample_posterior)
    _place(codec, device, dtype)
    return codec


def build_text_conditioner(
    preset_name: str,
    pretrained_path: str | os.PathLike | None = None,
    *,
    joint_attention_dim: int | None = None,
    pooled_projection_dim: int | None = None,
    max_sequence_length: int | None = None,
    text_encoder_kwargs: Mapping[str, Any] | None = None,
    device: DeviceLike = None,
    dtype: torch.dtype | None = None,
) -> TextConditioner:
    """The preset's text conditioner.

    * ``tiny`` / ``small``: :class:`BuiltinTextEncoder` (settings from :data:`BUILTIN_PRESETS`, overridden by
      ``max_sequence_length`` and ``text_encoder_kwargs``: width / layers / heads / seed / residual_scale).
      ``joint_attention_dim`` and ``pooled_projection_dim`` are required. If ``pretrained_path/text_encoder``
      holds a saved BuiltinTextEncoder (a trained pipeline folder), it is loaded instead and its sizes are checked.
    * ``flux-dev`` / ``flux-schnell``: :class:`FluxTextEncoders` from ``pretrained_path`` (FLUX.1 layout, or a
      cached HF id); ``max_sequence_length`` defaults to 512 / 256. When given, ``joint_attention_dim`` /
      ``pooled_projection_dim`` are checked against T5's ``d_model`` / CLIP's width.

    Raises:
        ValueError: unknown preset, missing or mismatched sizes.
        FileNotFoundError: a FLUX preset without a folder, or with a missing subfolder / file (named).
    """
    name = _preset_kind(preset_name)
    if name in BUILTIN_PRESETS:
        if joint_attention_dim is None or pooled_projection_dim is None:
            raise ValueError(f"preset '{name}' needs joint_attention_dim and pooled_projection_dim")
        settings = dict(BUILTIN_PRESETS[name])
        settings.pop("codec_factor", None)
        if max_sequence_length is not None:
            settings["max_length"] = max_sequence_length
        settings.update(text_encoder_kwargs or {})
        saved = Path(pretrained_path) / "text_encoder" if pretrained_path is not None else None
        if saved is not None and BuiltinTextEncoder.is_saved_in(saved):
            logger.info("preset '%s': loading the built-in text encoder saved in %s", name, saved)
            text: TextConditioner = BuiltinTextEncoder.from_pretrained(saved)
        else:
            text = BuiltinTextEncoder(joint_attention_dim, pooled_projection_dim, **settings)
    else:
        root = _flux_root(name, pretrained_path)
        if text_encoder_kwargs:
            raise ValueError(f"text_encoder_kwargs apply to the built-in presets only, not '{name}'")
        text = FluxTextEncoders.from_pretrained(
            root,
            max_sequence_length=max_sequence_length or FLUX_PRESETS[name]["max_sequence_length"],
            dtype=dtype,
        )
    for label, want, got in (
        ("joint_attention_dim", joint_attention_dim, text.joint_attention_dim),
        ("pooled_projection_dim", pooled_projection_dim, text.pooled_projection_dim),
    ):
        if want is not None and want != got:
            raise ValueError(
                f"preset '{name}': the text conditioner gives {label}={got}, the transformer expects {want}"
            )
    _place(text, device, dtype)
    return text


# ----------------------------------------------------------------------------------------------------------------
# Embedding cache
# ----------------------------------------------------------------------------------------------------------------


class TextEmbeddingCache:
    """Per-prompt cache of a :class:`TextConditioner`'s outputs: an in-memory LRU, optionally backed by a folder.

    ``cache(prompts)`` returns the same ``(prompt_embeds (B, L, D), pooled (B, P))`` as ``text(prompts)``, but only
    the prompts not yet cached are encoded (in one batch). Entries are stored per prompt on CPU; with
    ``cache_dir``, each prompt is also written to ``cache_dir/<fingerprint[:16]>/<sha1(prompt)>.safetensors``
    (tensors ``prompt_embeds`` (L, D), ``pooled`` (P); the prompt in the metadata, checked on read), written
    atomically so several processes can share the folder. The fingerprint subfolder keeps embeddings of
    different encoders apart.

    Args:
        text: the conditioner (may live on another device than the training one), or a zero-argument callable that
            builds it: then the conditioner is built at the first miss only (``loaded`` tells whether it was), so a
            folder filled beforehand (`cologen data encode`) lets training run without the text encoders resident.
        max_items: in-memory LRU capacity (prompts); 0 disables the memory level.
        cache_dir: optional on-disk level.
        device: where returned tensors go (default: ``text.device``; the CPU while a lazy conditioner is unbuilt).
        dtype: dtype of the returned tensors (default: the conditioner's output dtype).
        fingerprint: the conditioner's :meth:`TextConditioner.fingerprint` when known (e.g. from an encoded-shard
            manifest), so that a lazy conditioner need not be built to find the folder.

    Attributes:
        hits, disk_hits, misses: counters (``hits`` counts memory hits only).
    """

    def __init__(
        self,
        text: TextConditioner | Callable[[], TextConditioner],
        *,
        max_items: int = 4096,
        cache_dir: str | os.PathLike | None = None,
        device: DeviceLike = None,
        dtype: torch.dtype | None = None,
        fingerprint: str | None = None,
    ) -> None:
        if isinstance(text, TextConditioner):
            self._text: TextConditioner | None = text
            self._factory: Callable[[], TextConditioner] | None = None
        elif callable(text):
            self._text, self._factory = None, text
        else:
            raise TypeError(f"text must be a TextConditioner or a callable building one, got {type(text).__name__}")
        self.max_items = int(max_items)
        self.device = device
        self.dtype = dtype
        self._memory: OrderedDict[str, tuple[Tensor, Tensor]] = OrderedDict()
        self.hits = self.disk_hits = self.misses = 0
        self._cache_root = None if cache_dir is None else Path(cache_dir)
        self._fingerprint = fingerprint
        self._cache_dir: Path | None = None

    @property
    def cache_dir(self) -> Path | None:
        """``cache_dir/<fingerprint[:16]>`` (created on first use; a lazy conditioner without a given fingerprint is
        built then, on first use, not when the cache is made), or None without an on-disk level."""
        if self._cache_root is not None and self._cache_dir is None:
            self._cache_dir = self._cache_root / (self._fingerprint or self.text.fingerprint())[:16]
            self._cache_dir.mkdir(parents=True, exist_ok=True)
        return self._cache_dir

    @property
    def text(self) -> TextConditioner:
        """The conditioner (built now if it was given as a callable and not built yet)."""
        if self._text is None:
            assert self._factory is not None
            logger.info("text-embedding cache: building the text conditioner (a prompt was not in the cache)")
            self._text = self._factory()
        return self._text

    @property
    def loaded(self) -> bool:
        """Whether the conditioner exists (always, unless it was given as a callable and never needed)."""
        return self._text is not None

    def __len__(self) -> int:
        return len(self._memory)

    def __contains__(self, prompt: str) -> bool:
        path = self._disk_path(prompt)
        return prompt in self._memory or (path is not None and path.is_file())

    def put(self, prompt: str, prompt_embeds: Tensor, pooled: Tensor) -> None:
        """Store precomputed embeddings of one prompt: prompt_embeds (L, D), pooled (P) (memory, and the folder
        when there is one); later calls with ``prompt`` return them without the conditioner."""
        if prompt_embeds.ndim != 2 or pooled.ndim != 1:
            raise ValueError(f"put expects prompt_embeds (L, D) and pooled (P), got {tuple(prompt_embeds.shape)} and "
                             f"{tuple(pooled.shape)}")
        entry = (prompt_embeds.detach().to("cpu").clone(), pooled.detach().to("cpu").clone())
        self._remember(prompt, entry)
        self._write_disk(prompt, entry)

    def clear(self) -> None:
        """Empty the memory level (the folder is left alone)."""
        self._memory.clear()

    @staticmethod
    def key(prompt: str) -> str:
        """sha1 hex digest of the UTF-8 prompt (the on-disk file name)."""
        return hashlib.sha1(prompt.encode("utf-8")).hexdigest()

    def _disk_path(self, prompt: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"{self.key(prompt)}.safetensors"

    def _remember(self, prompt: str, entry: tuple[Tensor, Tensor]) -> None:
        if self.max_items <= 0:
            return
        self._memory[prompt] = entry
        self._memory.move_to_end(prompt)
        while len(self._memory) > self.max_items:
            self._memory.popitem(last=False)

    def _read_disk(self, prompt: str) -> tuple[Tensor, Tensor] | None:
        path = self._disk_path(prompt)
        if path is None or not path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}).get("prompt") != prompt:
                    return None
                return f.get_tensor("prompt_embeds"), f.get_tensor("pooled")
        except Exception:  # noqa: BLE001 - a truncated / foreign file is a miss, it gets rewritten
            return None

    def _write_disk(self, prompt: str, entry: tuple[Tensor, Tensor]) -> None:
        path = self._disk_path(prompt)
        if path is None:
            return
        from safetensors.torch import save_file

        with atomic_path(path) as tmp:
            save_file({"prompt_embeds": entry[0], "pooled": entry[1]}, str(tmp), metadata={"prompt": prompt})

    def __call__(self, prompts: Sequence[str] | str) -> tuple[Tensor, Tensor]:
        """prompts (B) -> prompt_embeds (B, L, D), pooled (B, P) on ``device``, equal to ``text(prompts)``."""
        prompts = _as_prompt_list(prompts)
        entries: dict[str, tuple[Tensor, Tensor]] = {}
        todo: list[str] = []
        for prompt in dict.fromkeys(prompts):  # unique, in order
            if prompt in self._memory:
                self._memory.move_to_end(prompt)
                entries[prompt] = self._memory[prompt]
                self.hits += 1
                continue
            entry = self._read_disk(prompt)
            if entry is not None:
                self.disk_hits += 1
                entries[prompt] = entry
                self._remember(prompt, entry)
            else:
                todo.append(prompt)
        if todo:
            self.misses += len(todo)
            with torch.no_grad():
                embeds, pooled = self.text(todo)
            for i, prompt in enumerate(todo):
                entry = (embeds[i].detach().to("cpu").clone(), pooled[i].detach().to("cpu").clone())
                entries[prompt] = entry
                self._remember(prompt, entry)
                self._write_disk(prompt, entry)
        if not prompts:
            embeds, pooled = self.text._empty()
            return embeds.to(device=self.device, dtype=self.dtype), pooled.to(device=self.device, dtype=self.dtype)
        device = self.device if self.device is not None else (self.text.device if self.loaded else torch.device("cpu"))
        embeds = torch.stack([entries[p][0] for p in prompts]).to(device=device, dtype=self.dtype)
        pooled = torch.stack([entries[p][1] for p in prompts]).to(device=device, dtype=self.dtype)
        return embeds, pooled
