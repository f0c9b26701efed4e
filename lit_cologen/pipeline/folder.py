"""The pipeline folder format: what ``CoLoGenPipeline.save_pretrained`` writes and ``from_pretrained`` reads.

This module holds the format (:data:`PIPELINE_FORMAT`, the ``model_index.json`` checks), the readers of a folder's
parts (which preset a transformer config is, its frozen-weights origin, text conditioner, codec, scheduler,
adapters) and the writers of the text conditioner / codec entries; the pipeline class only sequences them.

Folder format (``save_pretrained`` / ``from_pretrained``)
----------------------------------------------------------
::

    model_index.json          {"_class_name": "CoLoGenPipeline", "_lit_cologen_format": 1, "preset": ..., ...}
    transformer/              diffusers FluxTransformer2DModel (config.json + safetensors): the frozen base
    adapters.safetensors      PRW experts + routers (the file a training run exports; optional)
    scheduler/                FlowMatchEulerDiscreteScheduler config
    text_encoder/             tiny / small: the BuiltinTextEncoder (config, weights, tokenizer/)
                              flux-*: CLIPTextModel; with tokenizer/, text_encoder_2/ (T5), tokenizer_2/
    vae/                      flux-* only: AutoencoderKL (tiny / small use the weightless pixel codec, whose
                              factor is in model_index.json)

For FLUX this is the FLUX.1 folder layout plus our adapters file and index, so ``from_preset("flux-dev",
pretrained_path=folder)`` also reads it. ``save_pretrained(dir, save_base=False)`` writes only the adapters, the
scheduler, the index (and the built-in text encoder, a few MB) and records where the frozen weights come from (the
folder they were loaded from, or the preset's seeded random init), so a FLUX run need not copy 30 GB.
``from_pretrained`` also accepts a stock FLUX.1 folder (its ``model_index.json`` names ``FluxPipeline``), with an
``adapters.safetensors`` in it or passed as ``adapters=``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from lit_cologen.models.adapter_io import adapter_file, read_adapter_metadata
from lit_cologen.models.codecs import FluxVAECodec, LatentCodec, PixelShuffleCodec
from lit_cologen.models.config import PRWConfig
from lit_cologen.models.factory import build_components
from lit_cologen.models.presets import PRESETS, Preset
from lit_cologen.models.schedule import flux_scheduler
from lit_cologen.models.text_encoders import BuiltinTextEncoder, FluxTextEncoders, TextConditioner
from lit_cologen.models.transformer import CoLoGenTransformer

__all__ = ["INDEX_FILE", "PIPELINE_FORMAT", "infer_preset"]

#: version of the folder layout written to ``model_index.json`` as ``_lit_cologen_format``
PIPELINE_FORMAT = 1
INDEX_FILE = "model_index.json"


# ----------------------------------------------------------------------------------------------------------------
# Presets of a weights folder
# ----------------------------------------------------------------------------------------------------------------


def _transformer_config_path(folder: Path) -> Optional[Path]:
    """``folder/transformer/config.json``, else ``folder/config.json`` (a transformer folder), else None."""
    for candidate in (folder / "transformer" / "config.json", folder / "config.json"):
        if candidate.is_file():
            return candidate
    return None


def infer_preset(folder: str | os.PathLike) -> str:
    """The preset whose transformer shape matches the FluxTransformer2DModel config in ``folder`` (a FLUX.1-layout
    folder, a training export with ``transformer/``, or a transformer folder).

    Raises:
        FileNotFoundError: the folder or its transformer config is missing.
        ValueError: no preset has that shape.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"weights folder {root} does not exist")
    cfg_path = _transformer_config_path(root)
    if cfg_path is None:
        raise FileNotFoundError(f"weights folder {root}: no transformer/config.json (nor config.json) in it")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    for name, preset in PRESETS.items():
        if all(_same(cfg.get(k), v) for k, v in preset.transformer.items()):
            return name
    raise ValueError(f"{cfg_path}: the transformer matches no preset in {sorted(PRESETS)}")


def _flux_preset_of(folder: Path) -> str:
    """flux-dev (guidance embedding, T5 512) or flux-schnell (none, T5 256) for a FLUX.1-layout folder, read from
    its transformer config (any depth / width: FLUX variants load with the folder's own shape)."""
    cfg_path = _transformer_config_path(folder)
    if cfg_path is None:
        raise FileNotFoundError(f"FLUX folder {folder}: missing transformer/config.json")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    return "flux-dev" if cfg.get("guidance_embeds") else "flux-schnell"


def _same(a: Any, b: Any) -> bool:
    if isinstance(b, (tuple, list)):
        return isinstance(a, (tuple, list)) and list(a) == list(b)
    return a == b


# ----------------------------------------------------------------------------------------------------------------
# Reading a folder
# ----------------------------------------------------------------------------------------------------------------


def read_index(root: Path) -> tuple[Path, dict[str, Any]]:
    """``(root / model_index.json, its parsed content)``.

    Raises:
        FileNotFoundError: the folder or its index is missing (named, with how to write one).
    """
    if not root.is_dir():
        raise FileNotFoundError(f"pipeline folder {root} does not exist")
    index_path = root / INDEX_FILE
    if not index_path.is_file():
        raise FileNotFoundError(
            f"{root} is not a pipeline folder: missing {INDEX_FILE} (write one with CoLoGenPipeline.save_pretrained, "
            f"or build from weights with CoLoGenPipeline.from_preset(preset, pretrained_path=..., adapters=...))"
        )
    return index_path, json.loads(index_path.read_text(encoding="utf-8"))


def check_index(index_path: Path, index: dict[str, Any], class_name: str) -> None:
    """ValueError unless the index names ``class_name`` and this version's :data:`PIPELINE_FORMAT`."""
    name = index.get("_class_name")
    if name != class_name:
        raise ValueError(f"{index_path}: _class_name is {name!r}, expected {class_name!r} (or 'FluxPipeline')")
    if index.get("_lit_cologen_format") != PIPELINE_FORMAT:
        raise ValueError(f"{index_path}: unsupported _lit_cologen_format {index.get('_lit_cologen_format')!r} "
                         f"(this version reads {PIPELINE_FORMAT})")


def frozen_weights_of(root: Path, index_path: Path, index: dict[str, Any],
                      preset: Preset) -> tuple[Optional[Path], dict[str, Any]]:
    """Where a saved pipeline's frozen base comes from: ``(weights folder, or None for the preset's seeded random
    init; the index's origin record)``. The origin is ``{"source": "saved"}`` (in ``root``), ``{"source": "folder",
    "path": ...}`` or ``{"source": "preset-seed", "seed": ...}``.

    Raises:
        FileNotFoundError: a tiny / small base recorded in a folder that no longer exists.
    """
    origin = index.get("base", {"source": "saved"})
    if origin["source"] == "saved":
        return root, origin
    if origin["source"] == "folder":
        weights = Path(origin["path"])
        if not weights.exists() and preset.builtin_components:
            raise FileNotFoundError(f"{index_path}: the frozen weights were not saved here and their folder "
                                    f"{weights} does not exist")
        return weights, origin
    return None, origin


def load_text_and_codec(root: Path, index: dict[str, Any], preset: str, p: Preset, weights: Optional[Path],
                        base_config: Any, dtype: torch.dtype,
                        text_dtype: Optional[torch.dtype]) -> tuple[LatentCodec, TextConditioner]:
    """The codec and text conditioner of a saved pipeline: tiny / small read the built-in text encoder from
    ``root/text_encoder`` and the pixel codec's factor from the index; FLUX presets load theirs from ``weights``
    (or ``root``) with the base transformer's ``base_config`` dimensions.

    Raises:
        FileNotFoundError: the built-in text encoder is missing.
    """
    if p.builtin_components:
        text_dir = root / "text_encoder"
        if not BuiltinTextEncoder.is_saved_in(text_dir):
            raise FileNotFoundError(f"pipeline folder {root}: missing the built-in text encoder in text_encoder/")
        text: TextConditioner = BuiltinTextEncoder.from_pretrained(text_dir)
        if text_dtype is not None:
            text.to(dtype=text_dtype)
        codec_cfg = index.get("codec", {})
        codec: LatentCodec = PixelShuffleCodec(int(codec_cfg.get("factor", p.codec_factor)))
        return codec, text
    return build_components(
        preset, weights if weights is not None else root, joint_attention_dim=base_config.joint_attention_dim,
        pooled_projection_dim=base_config.pooled_projection_dim,
        max_sequence_length=int(index.get("text_max_length", p.text_max_length)),
        text_dtype=text_dtype or dtype, codec_dtype=dtype,
    )


def load_scheduler(root: Path) -> FlowMatchEulerDiscreteScheduler:
    """``root/scheduler`` when saved there, else FLUX's flow-match scheduler."""
    scheduler_dir = root / "scheduler"
    return (FlowMatchEulerDiscreteScheduler.from_pretrained(str(root), subfolder="scheduler")
            if (scheduler_dir / "scheduler_config.json").is_file() else flux_scheduler())


def transformer_with_adapters(base: torch.nn.Module, adapters: str | os.PathLike | None,
                              prw: Optional[PRWConfig] = None, use_ema: bool = True) -> CoLoGenTransformer:
    """:class:`CoLoGenTransformer` on ``base``: with the adapters file (or export folder) ``adapters``, its PRW shape
    read from the file's metadata; without, ``prw`` (default: no adapters, the plain in-context model). For a folder
    with ``adapters_ema.safetensors`` (``train.ema``), ``use_ema`` loads the EMA weights; ``transformer.adapters_file``
    records the file loaded.

    Raises:
        FileNotFoundError / ValueError: a missing adapters file, or adapters that do not fit the base.
    """
    if adapters is not None:
        path = adapter_file(adapters, use_ema=use_ema)
        transformer = CoLoGenTransformer(base, _prw_from_metadata(read_adapter_metadata(path)))
        transformer.load_adapters(path)
        transformer.adapters_file = str(path)
        return transformer
    return CoLoGenTransformer(base, prw or PRWConfig(blocks="none"))


def _own_aligned_memory(module: torch.nn.Module) -> torch.nn.Module:
    """Copy CPU parameters / buffers that live in unaligned memory (safetensors' memory-mapped loads) into
    PyTorch-allocated, 64-byte-aligned storage, one tensor at a time.

    BLAS picks different kernels for unaligned operands, so a model loaded from disk would otherwise compute
    results ~1e-7 away from the same weights built in memory; with this, a saved-and-reloaded pipeline reproduces
    its images bit for bit.
    """
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.device.type == "cpu" and tensor.numel() and tensor.data_ptr() % 64:
                tensor.data = tensor.data.clone()
    return module


def _prw_from_metadata(meta: dict) -> PRWConfig:
    """The PRW shape an adapters file's metadata records (one expert; ``load_adapters`` adds the file's others)."""
    prw = meta.get("prw", {})
    return PRWConfig(num_experts=1, rank=int(prw["rank"]), lora_alpha=prw.get("lora_alpha"),
                     routing=prw.get("routing", "sample"), blocks=prw.get("blocks", "all"),
                     router_noise=bool(prw.get("router_noise", True)))


# ----------------------------------------------------------------------------------------------------------------
# Writing a folder
# ----------------------------------------------------------------------------------------------------------------


def save_text_encoder(text: TextConditioner, root: Path, save_base: bool) -> dict[str, Any]:
    """Write the text conditioner's part of the folder (the built-in encoder always; FLUX's CLIP / T5 and their
    tokenizers with ``save_base``); returns its ``model_index.json`` entries.

    Raises:
        TypeError: a text conditioner this format cannot hold.
    """
    if isinstance(text, BuiltinTextEncoder):
        text.save_pretrained(root / "text_encoder")
        return {"text_encoder": ["lit_cologen", "BuiltinTextEncoder"]}
    if isinstance(text, FluxTextEncoders):
        if save_base:
            text.text_encoder.save_pretrained(str(root / "text_encoder"), safe_serialization=True)
            text.tokenizer.save_pretrained(str(root / "tokenizer"))
            text.text_encoder_2.save_pretrained(str(root / "text_encoder_2"), safe_serialization=True)
            text.tokenizer_2.save_pretrained(str(root / "tokenizer_2"))
        return dict(text_encoder=["transformers", type(text.text_encoder).__name__],
                    tokenizer=["transformers", type(text.tokenizer).__name__],
                    text_encoder_2=["transformers", type(text.text_encoder_2).__name__],
                    tokenizer_2=["transformers", type(text.tokenizer_2).__name__])
    raise TypeError(f"cannot save a text conditioner of type {type(text).__name__}")


def save_codec(codec: LatentCodec, root: Path, save_base: bool) -> dict[str, Any]:
    """Write the codec's part of the folder (FLUX's VAE with ``save_base``; the pixel codec has no weights);
    returns its ``model_index.json`` entries.

    Raises:
        TypeError: a codec this format cannot hold.
    """
    if isinstance(codec, PixelShuffleCodec):
        return {"codec": {"type": "PixelShuffleCodec", "factor": codec.factor}}
    if isinstance(codec, FluxVAECodec):
        if save_base:
            codec.vae.save_pretrained(str(root / "vae"), safe_serialization=True)
        return {"vae": ["diffusers", type(codec.vae).__name__], "codec": {"type": "FluxVAECodec"}}
    raise TypeError(f"cannot save a codec of type {type(codec).__name__}")
