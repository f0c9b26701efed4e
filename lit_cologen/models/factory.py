"""The factory: a preset name (+ an optional weights folder) -> the transformer base, the codec, the text conditioner.

Training, encoding, the pipeline and the speed scripts all build their parts here, from the one record of each
preset (:mod:`lit_cologen.models.presets`).

* :func:`build_base_transformer` -- a stock ``FluxTransformer2DModel``: seeded random init or loaded weights.
* :func:`build_codec` / :func:`build_text_conditioner` / :func:`build_components` -- the frozen parts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import torch
from diffusers import FluxTransformer2DModel

from lit_cologen.models.codecs import FluxVAECodec, LatentCodec, PixelShuffleCodec
from lit_cologen.models.frozen import FrozenComponent
from lit_cologen.models.presets import PRESETS, Preset, get_preset
from lit_cologen.models.text_encoders import BuiltinTextEncoder, FluxTextEncoders, TextConditioner
from lit_cologen.models.weights import FLUX_LAYOUT, check_flux_folder, resolve_pretrained_path
from lit_cologen.utils.hub import looks_like_hub_id

logger = logging.getLogger(__name__)

DeviceLike = torch.device | str | int | None


def build_base_transformer(preset: str, pretrained_path: Optional[str] = None, torch_dtype: torch.dtype = torch.float32,
                           seed: int = 0, device: str | torch.device | None = None) -> FluxTransformer2DModel:
    """A stock FluxTransformer2DModel: random init from `preset` (seeded) or loaded from a local folder/HF cache.

    A folder in the FLUX.1 layout (with a `transformer/` subfolder) or a transformer folder itself is accepted.
    Random init happens directly on `device` in `torch_dtype` (a 12 B-parameter flux-dev never exists in fp32).
    """
    if pretrained_path:
        path = Path(pretrained_path)
        if path.exists():
            sub = "transformer" if (path / "transformer" / "config.json").is_file() else None
            if sub is None and not (path / "config.json").is_file():
                raise FileNotFoundError(
                    f"no transformer weights in {path}: expected {path / 'transformer' / 'config.json'} "
                    f"or {path / 'config.json'}"
                )
            folder = path / sub if sub else path
            try:  # safetensors only: a pickled diffusion_pytorch_model.bin is never unpickled
                model = FluxTransformer2DModel.from_pretrained(str(path), subfolder=sub, torch_dtype=torch_dtype,
                                                               use_safetensors=True)
            except OSError as err:
                pickled = sorted(p.name for p in folder.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
                hint = (f" ({', '.join(pickled)} not loaded: pickled weights are refused, convert them to "
                        f"safetensors)") if pickled else ""
                first = (str(err).splitlines() or [repr(err)])[0]
                raise OSError(f"cannot load the transformer weights in {folder}: {first}{hint}") from err
            return _check_preset_shape(model, preset, folder)
        if not looks_like_hub_id(pretrained_path):
            raise FileNotFoundError(f"pretrained folder {pretrained_path} does not exist")
        try:  # a Hugging Face id resolved from the local cache (HF_HUB_OFFLINE=1)
            model = FluxTransformer2DModel.from_pretrained(pretrained_path, subfolder="transformer",
                                                           torch_dtype=torch_dtype, use_safetensors=True)
        except Exception as err:  # noqa: BLE001 - re-raised with the path named
            raise FileNotFoundError(f"cannot load a FLUX transformer from {pretrained_path!r}: {err}") from err
        return _check_preset_shape(model, preset, pretrained_path)
    device = torch.device(device or "cpu")
    previous_dtype = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        try:
            torch.set_default_dtype(torch_dtype)
            with device:
                model = FluxTransformer2DModel(**get_preset(preset).transformer)
        finally:
            torch.set_default_dtype(previous_dtype)
    return model


def _check_preset_shape(model: FluxTransformer2DModel, preset: str, where) -> FluxTransformer2DModel:
    """A loaded transformer must fit the preset: the built-in tiny/small presets fix the whole shape; the FLUX
    presets fix the latent channels (the VAE's 16 x 2 x 2 packed tokens); smaller FLUX-layout folders are allowed."""
    p = get_preset(preset)
    keys = (("in_channels", "patch_size", "num_layers", "num_single_layers", "attention_head_dim",
             "num_attention_heads", "joint_attention_dim", "pooled_projection_dim", "guidance_embeds")
            if p.builtin_components else ("in_channels", "patch_size"))
    for key in keys:
        want, got = p.transformer[key], model.config.get(key)
        if got != want:
            raise ValueError(f"transformer in {where} has {key}={got}, but preset '{preset}' needs {key}={want} "
                             f"(wrong model.preset, or weights of another architecture)")
    return model


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


def _preset(preset_name: str) -> Preset:
    """The preset record; ValueError (not KeyError) for an unknown name, as the builders document."""
    try:
        return get_preset(preset_name)
    except KeyError:
        raise ValueError(f"unknown preset '{preset_name}'; expected one of {list(PRESETS)}") from None


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
    preset = _preset(preset_name)
    name = preset.name
    if preset.builtin_components:
        codec: LatentCodec = PixelShuffleCodec(codec_factor or preset.codec_factor)
    else:
        codec = FluxVAECodec.from_pretrained(_flux_root(name, pretrained_path), dtype=dtype,
                                             sample_posterior=sample_posterior)
    if codec_factor is None and codec.channels != preset.codec_channels:
        raise ValueError(f"preset '{name}': the codec gives {codec.channels} latent channels, the transformer packs "
                         f"{preset.codec_channels} x 4 per token")
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

    * ``tiny`` / ``small``: :class:`BuiltinTextEncoder` (settings: the preset's ``builtin_text``, overridden by
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
    preset = _preset(preset_name)
    name = preset.name
    if preset.builtin_components:
        if joint_attention_dim is None or pooled_projection_dim is None:
            raise ValueError(f"preset '{name}' needs joint_attention_dim and pooled_projection_dim")
        settings: dict[str, Any] = {**preset.builtin_text, "max_length": max_sequence_length or preset.text_max_length}
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
            max_sequence_length=max_sequence_length or preset.text_max_length,
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
