"""CoLoGenPipeline: the five CoLoGen tasks at inference (DESIGN.md D2-D5, D13).

One pipeline object holds the denoiser (:class:`CoLoGenTransformer`: a frozen FLUX MMDiT + PRW adapters), the text
conditioner, the latent codec and FLUX's flow-match Euler scheduler, and exposes one call per task::

    pipe = CoLoGenPipeline.from_preset("tiny", adapters="runs/step4/final")      # or .from_pretrained(folder)
    pipe.inpaint(image, mask, "a red circle at the center").images[0]
    pipe.ground(image, "draw a yellow box around the blue star")
    pipe.control(photo, "canny", "a red circle ...", compute_canny=True)      # canny computed from the photo
    pipe.customize(subject, "the subject at the bottom right on a checker background")
    pipe.edit(image, "make the circle green")
    pipe(task="edit", source=image, prompt="make the circle green", seed=0)   # the generic form

How a call runs
---------------
1. Inputs become float tensors (3, H, W) in [0, 1] (PIL RGB / RGBA / L / LA / P, numpy, tensors or file paths;
   see :func:`to_image_tensor`). The output size is ``height`` x ``width`` when given (each must be a multiple of
   ``codec.factor * 2``, the pixels per packed token), otherwise the source size rounded to the nearest such
   multiple; sources of another size are resized (bicubic, antialiased; masks: nearest).
2. The task's source image (D2): inpaint -> the image with the masked region filled with mid-grey (RGB 128, i.e.
   ~0 in the model's [-1, 1] range: exactly what the inpainting data builders write, ``INPAINT_FILL``); ground /
   edit -> the image; control -> the condition map (or kornia Canny of a photo, thresholds 0.1 / 0.2, with
   ``compute_canny=True``); subject -> the reference image.
3. Text: ``format_prompt(task, prompt, cond_type)`` (the templates shared with training), then the conditioner:
   prompt_embeds (B, L, D), pooled (B, P).
4. Latents: codec.encode(source * 2 - 1) -> (B, C, h, w) -> packed source tokens (B, h/2 * w/2, 4C) with RoPE ids
   ``source_ids(h/2, w/2, source_layout(task))`` (D5); noise (B, C, h, w) drawn per sample on CPU in float32
   from its own generator (so an image depends only on its seed, not on the device or the batch), packed.
5. :func:`lit_cologen.sampling.denoise`: ``num_inference_steps`` flow-match Euler steps with FLUX's resolution
   shift, embedded guidance ``guidance_scale`` (models with a guidance embedding: flux-dev, tiny), optional true
   CFG against ``negative_prompt`` (default ``""``, the text-dropout condition of training), and the source K/V
   cache (D3: the source branch runs once, not at every step; ``use_source_cache=False`` recomputes it).
6. Decode, map to [0, 1]; for inpaint with ``keep_unmasked=True`` the unmasked pixels of the (resized) input are
   pasted back. Output as PIL images, a numpy array (B, H, W, 3), a tensor (B, 3, H, W) (both float32 in
   [0, 1]) or the raw latents (B, C, h, w) (``output_type`` = "pil" | "np" | "pt" | "latent").

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
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.utils import BaseOutput
from PIL import Image
from torch import Tensor

from lit_cologen.models.config import PRWConfig
from lit_cologen.data.schema import COND_TYPES, TASKS
from lit_cologen.data.tasks import format_prompt, source_layout
from lit_cologen.models.adapter_io import ADAPTER_FILE, read_adapter_metadata
from lit_cologen.models.codecs import FluxVAECodec, LatentCodec, PixelShuffleCodec
from lit_cologen.models.factory import build_base_transformer, build_components
from lit_cologen.models.text_encoders import BuiltinTextEncoder, FluxTextEncoders, TextConditioner
from lit_cologen.models.latents import latent_ids, pack_latents, source_ids, text_ids, unpack_latents
from lit_cologen.models.presets import PRESETS, get_preset
from lit_cologen.models.transformer import CoLoGenTransformer
from lit_cologen.models.schedule import flux_scheduler
from lit_cologen.sampling import denoise
from lit_cologen.utils.atomic import atomic_write_json

__all__ = [
    "CoLoGenPipeline",
    "CoLoGenPipelineOutput",
    "INPAINT_FILL",
    "OUTPUT_TYPES",
    "PIPELINE_FORMAT",
    "TASK_ALIASES",
    "infer_preset",
    "to_image_tensor",
    "to_mask_tensor",
]

logger = logging.getLogger(__name__)

PIPELINE_FORMAT = 1
INDEX_FILE = "model_index.json"
#: Fill of the masked region of an inpainting source, RGB (mid-grey; 128 / 127.5 - 1 ~ 0 in [-1, 1]). The same
#: value as the data builders' ``fill="grey"`` and Shapes-5's ``INPAINT_FILL``, so inference sees what training saw.
INPAINT_FILL: tuple[int, int, int] = (128, 128, 128)
#: Names accepted for ``task`` besides :data:`TASKS`.
TASK_ALIASES: dict[str, str] = {"customize": "subject", "customization": "subject", "inpainting": "inpaint",
                                "grounding": "ground", "editing": "edit"}
OUTPUT_TYPES = ("pil", "np", "pt", "latent")
_OUTPUT_ALIASES = {"numpy": "np", "tensor": "pt", "torch": "pt", "pil": "pil", "np": "np", "pt": "pt", "latent": "latent"}
_IMAGE_MODES = ("RGB", "RGBA", "L", "LA", "P")
_MASK_MODES = ("1", "L", "LA", "RGB", "RGBA", "P", "I", "F")

ImageInput = Union[Image.Image, np.ndarray, Tensor, str, os.PathLike]
ImageBatch = Union[ImageInput, Sequence[ImageInput]]


@dataclass
class CoLoGenPipelineOutput(BaseOutput):
    """What a pipeline call returns.

    images:  list of B PIL images, or np.ndarray (B, H, W, 3) float32 in [0, 1], or Tensor (B, 3, H, W) float32
             in [0, 1] on CPU, or latents (B, C, H/f, W/f) (``output_type="latent"``).
    prompts: the B texts the model saw (after :func:`format_prompt`).
    sources: (B, 3, H, W) float32 in [0, 1] on CPU: the source images the model saw (masked image, condition
             map or computed canny, reference, ...), at the output size.
    """

    images: Any
    prompts: list[str]
    sources: Tensor


# ----------------------------------------------------------------------------------------------------------------
# Input conversion
# ----------------------------------------------------------------------------------------------------------------


def _open(path: str | os.PathLike, name: str) -> Image.Image:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{name}: image file {p} does not exist")
    try:
        with Image.open(p) as im:
            im.load()
            return im.copy()
    except OSError as err:
        raise ValueError(f"{name}: cannot read {p} as an image: {err}") from err


def _composite_on_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(canvas, rgba).convert("RGB")


def to_image_tensor(image: ImageInput, name: str = "image") -> Tensor:
    """Any supported image -> float32 tensor (3, H, W) in [0, 1] on CPU.

    Accepted:
      * PIL images in mode RGB; RGBA / LA / P-with-transparency (composited over white); L / LA (grey replicated
        to RGB); P (palette, converted). Other modes (CMYK, I, F, 1, YCbCr, ...) raise ValueError naming the mode.
      * numpy arrays (H, W), (H, W, 1), (H, W, 3), (H, W, 4): uint8 in [0, 255] or float in [0, 1].
      * tensors (3, H, W), (1, H, W) or (H, W), float in [0, 1] (the pipeline's ``output_type="pt"`` range), or
        uint8.
      * a file path (opened with PIL).

    Raises:
        ValueError / TypeError naming ``name`` and the problem (mode, shape, dtype, value range).
    """
    if isinstance(image, (str, os.PathLike)):
        image = _open(image, name)
    if isinstance(image, Image.Image):
        mode = image.mode
        if mode not in _IMAGE_MODES:
            raise ValueError(
                f"{name}: unsupported PIL image mode {mode!r}; expected one of {_IMAGE_MODES} "
                f"(convert it first, e.g. image.convert('RGB'))"
            )
        if mode in ("RGBA", "LA") or (mode == "P" and "transparency" in image.info):
            image = _composite_on_white(image)
        elif mode != "RGB":
            image = image.convert("RGB")
        arr = np.asarray(image, dtype=np.uint8)
        return torch.from_numpy(arr.astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
            raise ValueError(f"{name}: numpy image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}")
        if arr.dtype == np.uint8:
            x = arr.astype(np.float32) / 255.0
        elif np.issubdtype(arr.dtype, np.floating):
            x = arr.astype(np.float32)
            _check_unit_range(x.min(), x.max(), name)
        else:
            raise ValueError(f"{name}: numpy image dtype must be uint8 or float, got {arr.dtype}")
        if x.shape[-1] == 4:  # composite over white
            alpha = x[..., 3:4]
            x = x[..., :3] * alpha + (1.0 - alpha)
        if x.shape[-1] == 1:
            x = np.repeat(x, 3, axis=-1)
        return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1).contiguous()
    if isinstance(image, Tensor):
        x = image.detach()
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[0] not in (1, 3):
            raise ValueError(f"{name}: tensor image must be (3, H, W), (1, H, W) or (H, W), got {tuple(image.shape)}")
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        elif x.is_floating_point():
            x = x.float().cpu()
            _check_unit_range(float(x.min()), float(x.max()), name)
        else:
            raise ValueError(f"{name}: tensor image dtype must be float or uint8, got {x.dtype}")
        return x.expand(3, -1, -1).contiguous().cpu()
    raise TypeError(f"{name}: expected a PIL image, numpy array, tensor or file path, got {type(image).__name__}")


def _check_unit_range(lo: float, hi: float, name: str) -> None:
    if lo < -1e-4 or hi > 1 + 1e-4:
        raise ValueError(f"{name}: float images must be in [0, 1], got values in [{lo:.3f}, {hi:.3f}]")


def to_mask_tensor(mask: ImageInput, name: str = "mask") -> Tensor:
    """A mask -> float32 tensor (1, H, W) with values {0, 1} on CPU; 1 (white, >= 50 %) = region to regenerate.

    Accepted: PIL modes 1 / L / LA / RGB / RGBA / P / I / F (RGB-like ones are converted to luminance, alpha is
    ignored), numpy (H, W) / (H, W, 1) bool / uint8 / float in [0, 1], tensors (H, W) / (1, H, W), file paths.
    """
    if isinstance(mask, (str, os.PathLike)):
        mask = _open(mask, name)
    if isinstance(mask, Image.Image):
        if mask.mode not in _MASK_MODES:
            raise ValueError(f"{name}: unsupported PIL mask mode {mask.mode!r}; expected one of {_MASK_MODES}")
        if mask.mode in ("I", "F"):
            arr = np.asarray(mask, dtype=np.float32)
            top = 255.0 if arr.max() > 1.0 else 1.0
            m = arr / top
        else:
            m = np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
        return torch.from_numpy((m >= 0.5).astype(np.float32))[None]
    if isinstance(mask, np.ndarray):
        arr = mask[..., 0] if mask.ndim == 3 and mask.shape[-1] == 1 else mask
        if arr.ndim != 2:
            raise ValueError(f"{name}: numpy mask must be (H, W) or (H, W, 1), got {mask.shape}")
        if arr.dtype == np.bool_:
            m = arr.astype(np.float32)
        elif arr.dtype == np.uint8:
            m = arr.astype(np.float32) / 255.0
        elif np.issubdtype(arr.dtype, np.floating):
            m = arr.astype(np.float32)
            _check_unit_range(float(m.min()), float(m.max()), name)
        else:
            raise ValueError(f"{name}: numpy mask dtype must be bool, uint8 or float, got {arr.dtype}")
        return torch.from_numpy((m >= 0.5).astype(np.float32))[None]
    if isinstance(mask, Tensor):
        m = mask.detach().cpu()
        if m.ndim == 3 and m.shape[0] == 1:
            m = m[0]
        if m.ndim != 2:
            raise ValueError(f"{name}: tensor mask must be (H, W) or (1, H, W), got {tuple(mask.shape)}")
        if m.dtype == torch.bool:
            m = m.float()
        elif m.dtype == torch.uint8:
            m = m.float() / 255.0
        elif m.is_floating_point():
            m = m.float()
            _check_unit_range(float(m.min()), float(m.max()), name)
        else:
            raise ValueError(f"{name}: tensor mask dtype must be bool, uint8 or float, got {m.dtype}")
        return (m >= 0.5).float()[None]
    raise TypeError(f"{name}: expected a PIL image, numpy array, tensor or file path, got {type(mask).__name__}")


def _as_list(x: Any) -> list:
    if x is None:
        return []
    if isinstance(x, (list, tuple)):
        return list(x)
    if isinstance(x, Tensor) and x.ndim == 4:
        return list(x.unbind(0))
    if isinstance(x, np.ndarray) and x.ndim == 4:
        return list(x)
    return [x]


def _broadcast(items: list, n: int, what: str) -> list:
    if len(items) == n:
        return items
    if len(items) == 1:
        return items * n
    raise ValueError(f"got {len(items)} {what} for a batch of {n}; pass one, or one per sample")


def _resize(x: Tensor, height: int, width: int, mode: str = "bicubic") -> Tensor:
    """(C, H, W) -> (C, height, width); no-op when the size already matches."""
    if tuple(x.shape[-2:]) == (height, width):
        return x
    if mode == "nearest":
        return F.interpolate(x[None], size=(height, width), mode="nearest")[0]
    return F.interpolate(x[None], size=(height, width), mode=mode, antialias=True, align_corners=False)[0].clamp(0, 1)


def _tensor_to_pil(x: Tensor) -> Image.Image:
    """(3, H, W) float in [0, 1] -> RGB PIL."""
    arr = (x.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, mode="RGB")


def _canny(image: Tensor, low: float = 0.1, high: float = 0.2) -> Tensor:
    """(3, H, W) in [0, 1] photo -> (3, H, W) in {0, 1} canny edges (kornia, the data builders' function)."""
    from lit_cologen.data.builders.detectors import canny_edges

    return to_image_tensor(canny_edges(_tensor_to_pil(image), low, high), "canny")


# ----------------------------------------------------------------------------------------------------------------
# Folder helpers
# ----------------------------------------------------------------------------------------------------------------


def _transformer_config_path(folder: Path) -> Optional[Path]:
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
    prw = meta.get("prw", {})
    return PRWConfig(num_experts=1, rank=int(prw["rank"]), lora_alpha=prw.get("lora_alpha"),
                     routing=prw.get("routing", "sample"), blocks=prw.get("blocks", "all"),
                     router_noise=bool(prw.get("router_noise", True)))


# ----------------------------------------------------------------------------------------------------------------
# The pipeline
# ----------------------------------------------------------------------------------------------------------------


class CoLoGenPipeline(DiffusionPipeline):
    """The five CoLoGen tasks with one model (a diffusers ``DiffusionPipeline``; see the module docstring).

    Registered modules:
        transformer:  :class:`CoLoGenTransformer` (frozen FLUX base as ``.base`` + PRW adapters), in eval mode
                      (deterministic routing, D13).
        text_encoder: :class:`TextConditioner` -- prompts -> (prompt_embeds (B, L, D), pooled (B, P)).
        codec:        :class:`LatentCodec` -- images (B, 3, H, W) in [-1, 1] <-> latents (B, C, H/f, W/f).
        scheduler:    ``FlowMatchEulerDiscreteScheduler`` with FLUX's dynamic shift.

    Build with :meth:`from_preset` or :meth:`from_pretrained`; save with :meth:`save_pretrained`.
    """

    config_name = INDEX_FILE

    def __init__(
        self,
        transformer: CoLoGenTransformer,
        text_encoder: TextConditioner,
        codec: LatentCodec,
        scheduler: FlowMatchEulerDiscreteScheduler,
        preset: str = "tiny",
    ) -> None:
        super().__init__()
        get_preset(preset)  # raises naming the preset
        transformer.eval().requires_grad_(False)  # inference only: deterministic routing, no autograd state
        self.register_modules(transformer=transformer, text_encoder=text_encoder, codec=codec, scheduler=scheduler)
        self.register_to_config(preset=preset)
        self.preset = preset
        # where the frozen weights came from, for save_pretrained(save_base=False): {"source": "folder", "path":..}
        # or {"source": "preset-seed", "seed": ...}
        self.base_origin: dict[str, Any] = {"source": "preset-seed", "seed": 0}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_preset(
        cls,
        preset: str = "tiny",
        pretrained_path: str | os.PathLike | None = None,
        adapters: str | os.PathLike | None = None,
        *,
        prw: Optional[PRWConfig] = None,
        torch_dtype: Optional[torch.dtype] = None,
        device: str | torch.device | None = None,
        seed: int = 0,
        text_dtype: Optional[torch.dtype] = None,
        text_device: str | torch.device | None = None,
    ) -> "CoLoGenPipeline":
        """Build a pipeline from a preset.

        Args:
            preset: ``tiny`` | ``small`` | ``flux-dev`` | ``flux-schnell``.
            pretrained_path: frozen weights. FLUX presets: a FLUX.1-layout folder (transformer/, vae/,
                text_encoder/, tokenizer/, text_encoder_2/, tokenizer_2/) or a cached HF id (required).
                tiny / small: optional; a folder with ``transformer/`` (the base pre-training export) and possibly
                a saved built-in ``text_encoder/``; without it the base is the preset's random init from ``seed``.
            adapters: ``adapters.safetensors`` or a folder holding it (a training run's ``final/`` export); the PRW
                shape (rank, routing, blocks, number of experts) is read from the file.
            prw: PRW shape when no ``adapters`` are given (default: no adapters, the plain in-context model).
            torch_dtype: transformer dtype (default float32 for tiny / small, bfloat16 for FLUX presets).
            device: where everything goes (default CPU).
            seed: random-init seed of a tiny / small base without ``pretrained_path``.
            text_dtype / text_device: text conditioner placement (default: the transformer's / ``device``).

        Raises:
            FileNotFoundError: a missing weights folder or adapter file (named).
            KeyError / ValueError: unknown preset, adapters that do not fit the base.
        """
        p = get_preset(preset)
        if pretrained_path is None and not p.builtin_components:
            raise FileNotFoundError(
                f"preset '{preset}' loads FLUX.1 weights: pass pretrained_path (a FLUX.1-layout folder with "
                f"transformer/, vae/, text_encoder/, tokenizer/, text_encoder_2/, tokenizer_2/, or a cached HF id)"
            )
        if pretrained_path is not None and p.builtin_components and not Path(pretrained_path).is_dir():
            raise FileNotFoundError(f"weights folder {pretrained_path} does not exist")
        dtype = torch_dtype or (torch.float32 if p.builtin_components else torch.bfloat16)
        base = build_base_transformer(preset, str(pretrained_path) if pretrained_path else None, torch_dtype=dtype,
                                      seed=seed)
        if adapters is not None:
            meta = read_adapter_metadata(adapters)
            transformer = CoLoGenTransformer(base, _prw_from_metadata(meta))
            transformer.load_adapters(adapters)
        else:
            transformer = CoLoGenTransformer(base, prw or PRWConfig(blocks="none"))
        cfg = base.config
        codec, text = build_components(
            preset, pretrained_path, joint_attention_dim=cfg.joint_attention_dim,
            pooled_projection_dim=cfg.pooled_projection_dim, max_sequence_length=p.text_max_length,
            text_dtype=text_dtype or (None if p.builtin_components else dtype),
            codec_dtype=None if p.builtin_components else dtype,
        )
        pipe = cls(transformer, text, codec, flux_scheduler(), preset=preset)
        if pretrained_path is not None:
            pipe.base_origin = {"source": "folder", "path": str(Path(pretrained_path).resolve())
                                if Path(pretrained_path).exists() else str(pretrained_path)}
        else:
            pipe.base_origin = {"source": "preset-seed", "seed": int(seed)}
        pipe.to(device)
        if text_device is not None:
            pipe.text_encoder.to(text_device)
        return pipe._own_memory()

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        adapters: str | os.PathLike | None = None,
        torch_dtype: Optional[torch.dtype] = None,
        device: str | torch.device | None = None,
        text_dtype: Optional[torch.dtype] = None,
        text_device: str | torch.device | None = None,
        **kwargs: Any,
    ) -> "CoLoGenPipeline":
        """Load a folder written by :meth:`save_pretrained` (or a stock FLUX.1 folder, see the module docstring).

        Args:
            pretrained_model_name_or_path: the local folder.
            adapters: adapters to load instead of the folder's ``adapters.safetensors``.
            torch_dtype, device, text_dtype, text_device: as in :meth:`from_preset`.

        Raises:
            FileNotFoundError: the folder, its index or a weights subfolder is missing (named).
            ValueError: the folder is not a CoLoGen / FLUX pipeline folder.
        """
        if kwargs:
            raise TypeError(f"CoLoGenPipeline.from_pretrained: unsupported arguments {sorted(kwargs)}")
        root = Path(pretrained_model_name_or_path)
        if not root.is_dir():
            raise FileNotFoundError(f"pipeline folder {root} does not exist")
        index_path = root / INDEX_FILE
        if not index_path.is_file():
            raise FileNotFoundError(
                f"{root} is not a pipeline folder: missing {INDEX_FILE} (write one with CoLoGenPipeline.save_pretrained, "
                f"or build from weights with CoLoGenPipeline.from_preset(preset, pretrained_path=..., adapters=...))"
            )
        index = json.loads(index_path.read_text(encoding="utf-8"))
        name = index.get("_class_name")
        local_adapters = root / ADAPTER_FILE
        if name == "FluxPipeline":  # a stock FLUX.1 folder, possibly with our adapters dropped in
            return cls.from_preset(_flux_preset_of(root), root,
                                   adapters or (local_adapters if local_adapters.is_file() else None),
                                   torch_dtype=torch_dtype, device=device, text_dtype=text_dtype, text_device=text_device)
        if name != cls.__name__:
            raise ValueError(f"{index_path}: _class_name is {name!r}, expected {cls.__name__!r} (or 'FluxPipeline')")
        if index.get("_lit_cologen_format") != PIPELINE_FORMAT:
            raise ValueError(f"{index_path}: unsupported _lit_cologen_format {index.get('_lit_cologen_format')!r} "
                             f"(this version reads {PIPELINE_FORMAT})")
        preset = index["preset"]
        p = get_preset(preset)
        origin = index.get("base", {"source": "saved"})
        if origin["source"] == "saved":
            weights: Optional[Path] = root
        elif origin["source"] == "folder":
            weights = Path(origin["path"])
            if not weights.exists() and p.builtin_components:
                raise FileNotFoundError(f"{index_path}: the frozen weights were not saved here and their folder "
                                        f"{weights} does not exist")
        else:
            weights = None
        dtype = torch_dtype or (torch.float32 if p.builtin_components else torch.bfloat16)
        base = build_base_transformer(preset, str(weights) if weights is not None else None, torch_dtype=dtype,
                                      seed=int(origin.get("seed", 0)))
        adapter_file = adapters or (root / index["adapters"] if index.get("adapters") else None)
        if adapter_file is not None:
            transformer = CoLoGenTransformer(base, _prw_from_metadata(read_adapter_metadata(adapter_file)))
            transformer.load_adapters(adapter_file)
        else:
            transformer = CoLoGenTransformer(base, PRWConfig(blocks="none"))
        cfg = base.config
        if p.builtin_components:
            text_dir = root / "text_encoder"
            if not BuiltinTextEncoder.is_saved_in(text_dir):
                raise FileNotFoundError(f"pipeline folder {root}: missing the built-in text encoder in text_encoder/")
            text: TextConditioner = BuiltinTextEncoder.from_pretrained(text_dir)
            if text_dtype is not None:
                text.to(dtype=text_dtype)
            codec_cfg = index.get("codec", {})
            codec: LatentCodec = PixelShuffleCodec(int(codec_cfg.get("factor", p.codec_factor)))
        else:
            codec, text = build_components(
                preset, weights if weights is not None else root, joint_attention_dim=cfg.joint_attention_dim,
                pooled_projection_dim=cfg.pooled_projection_dim,
                max_sequence_length=int(index.get("text_max_length", p.text_max_length)),
                text_dtype=text_dtype or dtype, codec_dtype=dtype,
            )
        scheduler_dir = root / "scheduler"
        scheduler = (FlowMatchEulerDiscreteScheduler.from_pretrained(str(root), subfolder="scheduler")
                     if (scheduler_dir / "scheduler_config.json").is_file() else flux_scheduler())
        pipe = cls(transformer, text, codec, scheduler, preset=preset)
        pipe.base_origin = ({"source": "folder", "path": str(root.resolve())} if origin["source"] == "saved"
                            else dict(origin))
        pipe.to(device)
        if text_device is not None:
            pipe.text_encoder.to(text_device)
        return pipe._own_memory()

    def save_pretrained(self, save_directory: str | os.PathLike, save_base: bool = True, **kwargs: Any) -> Path:
        """Write the pipeline folder (layout in the module docstring); returns its path.

        Args:
            save_directory: target folder (created).
            save_base: also write the frozen weights (base transformer; FLUX VAE and text encoders). With False, the
                index records where they come from (the folder they were loaded from, or the preset's seed).
        """
        if kwargs:
            raise TypeError(f"CoLoGenPipeline.save_pretrained: unsupported arguments {sorted(kwargs)}")
        root = Path(save_directory)
        root.mkdir(parents=True, exist_ok=True)
        import diffusers

        index: dict[str, Any] = {
            "_class_name": type(self).__name__,
            "_diffusers_version": diffusers.__version__,
            "_lit_cologen_format": PIPELINE_FORMAT,
            "preset": self.preset,
            "text_max_length": int(self.text_encoder.max_length),
            "transformer": ["diffusers", "FluxTransformer2DModel"],
            "scheduler": ["diffusers", type(self.scheduler).__name__],
            "adapters": None,
        }
        if save_base:
            self.transformer.base.save_pretrained(str(root / "transformer"), safe_serialization=True)
            index["base"] = {"source": "saved"}
        else:
            index["base"] = dict(self.base_origin)
        if self.transformer.adapters() or self.transformer.peft_source_lora:
            self.transformer.save_adapters(root)
            index["adapters"] = ADAPTER_FILE
            index["prw"] = self.transformer.adapter_metadata()["prw"]
            index["num_experts"] = self.transformer.num_experts
        elif (root / ADAPTER_FILE).is_file():
            (root / ADAPTER_FILE).unlink()  # a stale file from an earlier save must not be picked up
        text, codec = self.text_encoder, self.codec
        if isinstance(text, BuiltinTextEncoder):
            text.save_pretrained(root / "text_encoder")
            index["text_encoder"] = ["lit_cologen", "BuiltinTextEncoder"]
        elif isinstance(text, FluxTextEncoders):
            if save_base:
                text.text_encoder.save_pretrained(str(root / "text_encoder"), safe_serialization=True)
                text.tokenizer.save_pretrained(str(root / "tokenizer"))
                text.text_encoder_2.save_pretrained(str(root / "text_encoder_2"), safe_serialization=True)
                text.tokenizer_2.save_pretrained(str(root / "tokenizer_2"))
            index.update(text_encoder=["transformers", type(text.text_encoder).__name__],
                         tokenizer=["transformers", type(text.tokenizer).__name__],
                         text_encoder_2=["transformers", type(text.text_encoder_2).__name__],
                         tokenizer_2=["transformers", type(text.tokenizer_2).__name__])
        else:
            raise TypeError(f"cannot save a text conditioner of type {type(text).__name__}")
        if isinstance(codec, PixelShuffleCodec):
            index["codec"] = {"type": "PixelShuffleCodec", "factor": codec.factor}
        elif isinstance(codec, FluxVAECodec):
            if save_base:
                codec.vae.save_pretrained(str(root / "vae"), safe_serialization=True)
            index["vae"] = ["diffusers", type(codec.vae).__name__]
            index["codec"] = {"type": "FluxVAECodec"}
        else:
            raise TypeError(f"cannot save a codec of type {type(codec).__name__}")
        self.scheduler.save_pretrained(str(root / "scheduler"))
        atomic_write_json(root / INDEX_FILE, index, sort_keys=True, newline=True)  # last: an index = complete
        return root

    def load_adapters(self, path: str | os.PathLike) -> None:
        """Replace the adapters by those in ``path`` (``adapters.safetensors`` or a run's export folder).

        The PRW shape is read from the file, so a pipeline built without adapters (or with another rank) can load
        any export made for the same base. Raises FileNotFoundError / ValueError naming the file.
        """
        meta = read_adapter_metadata(path)
        old = self.transformer
        new = CoLoGenTransformer(old.base, _prw_from_metadata(meta))
        new.load_adapters(path)
        device = old.base.x_embedder.weight.device
        self.transformer = new.to(device).eval().requires_grad_(False)

    def _own_memory(self) -> "CoLoGenPipeline":
        for module in (self.transformer, self.text_encoder, self.codec):
            _own_aligned_memory(module)  # only CPU tensors in memory-mapped files are copied
        return self

    # ------------------------------------------------------------------ placement
    @property
    def device(self) -> torch.device:
        """The transformer's device (where sampling runs)."""
        return self.transformer.base.x_embedder.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The transformer's dtype (latents and embeddings are cast to it)."""
        return self.transformer.base.x_embedder.weight.dtype

    def to(self, *args: Any, **kwargs: Any) -> "CoLoGenPipeline":
        """``to(device)``, ``to(dtype)`` or ``to(device, dtype)``: moves every module (the PRW adapters follow the
        dtype too; they cast to the activations' dtype anyway). ``to(None)`` is a no-op."""
        device = kwargs.pop("device", None)
        dtype = kwargs.pop("dtype", None)
        kwargs.pop("silence_dtype_warnings", None)
        if kwargs:
            raise TypeError(f"CoLoGenPipeline.to: unsupported arguments {sorted(kwargs)}")
        for arg in args:
            if isinstance(arg, torch.dtype):
                dtype = arg
            elif arg is not None:
                device = arg
        if device is None and dtype is None:
            return self
        for module in (self.transformer, self.text_encoder, self.codec):
            module.to(device=device, dtype=dtype)
        return self

    # ------------------------------------------------------------------ building blocks
    @property
    def pixels_per_token(self) -> int:
        """Pixels per packed latent token along each side: codec factor x 2 (FLUX's 2x2 packing)."""
        return self.codec.factor * 2

    @torch.no_grad()
    def encode_prompt(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Already formatted prompts (B) -> prompt_embeds (B, L, D), pooled (B, P) in the transformer's dtype and
        device."""
        embeds, pooled = self.text_encoder(list(prompts))
        return embeds.to(self.device, self.dtype), pooled.to(self.device, self.dtype)

    def _target_size(self, sizes: list[tuple[int, int]], height: Optional[int], width: Optional[int]) -> tuple[int, int]:
        m = self.pixels_per_token
        for label, value in (("height", height), ("width", width)):
            if value is not None and (int(value) != value or value <= 0 or value % m):
                raise ValueError(
                    f"{label}={value} is not a positive multiple of {m} (codec factor {self.codec.factor} x 2x2 "
                    f"token packing); use e.g. {max(m, int(math.floor(value / m + 0.5)) * m) if value else m}"
                )
        if height is not None and width is not None:
            return int(height), int(width)
        if len(set(sizes)) > 1:
            raise ValueError(
                f"the source images have different sizes {[f'{w}x{h}' for h, w in sizes]} (W x H); resize them to one "
                f"size or pass height= and width= to resize them all"
            )
        h0, w0 = sizes[0]
        rounded = lambda s: max(m, int(math.floor(s / m + 0.5)) * m)  # noqa: E731
        return (int(height) if height is not None else rounded(h0)), (int(width) if width is not None else rounded(w0))

    def _generators(self, batch: int, seed: Any, generator: Any) -> list[Optional[torch.Generator]]:
        if seed is not None and generator is not None:
            raise ValueError("pass either seed or generator, not both")
        if generator is not None:
            if isinstance(generator, torch.Generator):
                return [generator] * batch  # one stream drawn sample after sample
            gens = list(generator)
            if len(gens) != batch:
                raise ValueError(f"got {len(gens)} generators for a batch of {batch} images; pass one per image")
            return gens
        if seed is None:
            return [None] * batch
        if isinstance(seed, int):
            seeds = [seed + i for i in range(batch)]
        else:
            seeds = [int(s) for s in seed]
            if len(seeds) != batch:
                raise ValueError(f"got {len(seeds)} seeds for a batch of {batch} images; pass one per image")
        return [torch.Generator("cpu").manual_seed(s) for s in seeds]

    def prepare_noise(self, shape: tuple[int, int, int], generators: list[Optional[torch.Generator]]) -> Tensor:
        """Latent noise (B, C, h, w) -> packed (B, h/2 * w/2, 4C) in the transformer's dtype / device.

        Each sample is drawn in float32 from its own generator (on the generator's device, CPU for seeds), so an
        image depends on its seed only, not on the batch it is in or on where the model runs.
        """
        noise = []
        for g in generators:
            dev = g.device if g is not None else torch.device("cpu")
            noise.append(torch.randn((1, *shape), generator=g, device=dev, dtype=torch.float32).cpu())
        return pack_latents(torch.cat(noise)).to(self.device, self.dtype)

    # ------------------------------------------------------------------ the generic call
    @torch.no_grad()
    def __call__(
        self,
        task: str,
        source: ImageBatch,
        prompt: Union[str, Sequence[str]] = "",
        *,
        mask: Optional[ImageBatch] = None,
        cond_type: Optional[str] = None,
        compute_canny: bool = False,
        keep_unmasked: bool = False,
        height: Optional[int] = None,
        width: Optional[int] = None,
        num_inference_steps: int = 28,
        guidance_scale: float = 3.5,
        true_cfg_scale: float = 1.0,
        negative_prompt: Union[str, Sequence[str], None] = None,
        num_images_per_prompt: int = 1,
        seed: Union[int, Sequence[int], None] = None,
        generator: Union[torch.Generator, Sequence[torch.Generator], None] = None,
        output_type: str = "pil",
        use_source_cache: bool = True,
        show_progress: Optional[bool] = None,
        callback: Optional[Callable[[int, int], None]] = None,
        return_dict: bool = True,
    ) -> Union[CoLoGenPipelineOutput, tuple]:
        """Run one task on a batch.

        Args:
            task: one of ``inpaint``, ``ground``, ``control``, ``subject`` (alias ``customize``), ``edit``.
            source: one image or a list (B): the image to inpaint / ground / edit, the condition map (or a photo
                with ``compute_canny``), the subject reference. Formats: :func:`to_image_tensor`.
            prompt: caption (inpaint, control, subject) or instruction (ground, edit); one string or B strings
                (a single image is broadcast over several prompts and vice versa). Templated by
                :func:`format_prompt`.
            mask: inpaint only, one per image (or one for all): white / 1 = regenerate; same size as its image.
            cond_type: control only: one of ``COND_TYPES``.
            compute_canny: control only (cond_type ``canny``): the sources are photos; their kornia Canny edges
                (thresholds 0.1 / 0.2, at the output size) are the condition.
            keep_unmasked: inpaint only: paste the unmasked input pixels back into the output.
            height, width: output size in pixels (multiples of ``codec.factor * 2``); default: the source size
                rounded to the nearest multiple. Sources are resized to it.
            num_inference_steps: Euler steps (D13: 28).
            guidance_scale: embedded guidance of models with a guidance embedding (flux-dev, tiny); ignored by
                the others.
            true_cfg_scale: > 1 enables true classifier-free guidance (a second pass with ``negative_prompt``).
            negative_prompt: default ``""`` (the text-dropout condition of training); not templated.
            num_images_per_prompt: images per (source, prompt) pair; the batch is B * this.
            seed: int (image i gets seed + i) or one seed per image; exclusive with ``generator``.
            generator: one ``torch.Generator`` (drawn image after image) or one per image.
            output_type: ``pil`` | ``np`` | ``pt`` | ``latent`` (aliases ``numpy``, ``tensor``).
            use_source_cache: compute the source branch once and reuse its K/V at every step (D3).
            show_progress: tqdm bar over the steps (default: on, unless ``set_progress_bar_config(disable=True)``).
            callback: ``callback(step, total)`` after every step.
            return_dict: return a :class:`CoLoGenPipelineOutput` (else the tuple ``(images, prompts, sources)``).

        Raises:
            ValueError / TypeError / FileNotFoundError naming the bad input.
        """
        task = self.check_task(task)
        if cond_type is not None and cond_type not in COND_TYPES:
            raise ValueError(f"unknown condition type {cond_type!r}; expected one of {COND_TYPES}")
        if task == "control" and cond_type is None:
            raise ValueError(f"task 'control' needs cond_type, one of {COND_TYPES}")
        if task != "control" and cond_type is not None:
            raise ValueError(f"cond_type is only for task 'control' (got cond_type={cond_type!r} for task {task!r})")
        if compute_canny and (task != "control" or cond_type != "canny"):
            raise ValueError("compute_canny=True needs task 'control' with cond_type 'canny'")
        if task == "inpaint" and mask is None:
            raise ValueError("task 'inpaint' needs a mask (white / 1 = region to regenerate)")
        if task != "inpaint" and mask is not None:
            raise ValueError(f"mask is only for task 'inpaint' (got a mask for task {task!r})")
        if keep_unmasked and task != "inpaint":
            raise ValueError("keep_unmasked is only for task 'inpaint'")
        out_kind = _OUTPUT_ALIASES.get(str(output_type).lower())
        if out_kind is None:
            raise ValueError(f"unknown output_type {output_type!r}; expected one of {OUTPUT_TYPES}")
        if int(num_inference_steps) < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if int(num_images_per_prompt) < 1:
            raise ValueError(f"num_images_per_prompt must be >= 1, got {num_images_per_prompt}")

        # ---- inputs -> tensors (3, H, W) in [0, 1]
        images = _as_list(source)
        if not images:
            raise ValueError(f"task {task!r} needs a source image")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompt must be a string or a non-empty list of strings")
        n = max(len(images), len(prompts))
        images = _broadcast(images, n, "source images")
        prompts = _broadcast(prompts, n, "prompts")
        srcs = [to_image_tensor(im, f"source image {i}" if n > 1 else "source image") for i, im in enumerate(images)]
        masks: list[Optional[Tensor]] = [None] * n
        if mask is not None:
            mlist = _broadcast(_as_list(mask), n, "masks")
            masks = [to_mask_tensor(m, f"mask {i}" if n > 1 else "mask") for i, m in enumerate(mlist)]
            for i, (s, m) in enumerate(zip(srcs, masks)):
                if s.shape[-2:] != m.shape[-2:]:
                    raise ValueError(
                        f"mask {i} is {m.shape[-1]}x{m.shape[-2]} but its image is {s.shape[-1]}x{s.shape[-2]} "
                        f"(W x H); they must match"
                    )
        height, width = self._target_size([tuple(s.shape[-2:]) for s in srcs], height, width)

        # ---- the model's source images and texts
        originals = [_resize(s, height, width) for s in srcs]
        fill = torch.tensor(INPAINT_FILL, dtype=torch.float32).view(3, 1, 1) / 255.0
        model_src, mask_t = [], []
        for img, m in zip(originals, masks):
            if task == "inpaint":
                m = _resize(m, height, width, mode="nearest")
                mask_t.append(m)
                img = img * (1 - m) + fill * m
            elif compute_canny:
                img = _canny(img)
            model_src.append(img)
        k = int(num_images_per_prompt)
        rep = lambda xs: [x for x in xs for _ in range(k)]  # noqa: E731
        model_src, originals, prompts = rep(model_src), rep(originals), rep(prompts)
        mask_t = rep(mask_t)
        batch = len(prompts)
        texts = [format_prompt(task, p, cond_type) for p in prompts]
        sources = torch.stack(model_src)  # (B, 3, H, W) in [0, 1]

        # ---- latents, text, ids
        tokens_h, tokens_w = height // self.pixels_per_token, width // self.pixels_per_token
        src_latents = self.codec.encode((sources * 2 - 1).to(self.codec.device, self.codec.dtype))
        src_tokens = pack_latents(src_latents).to(self.device, self.dtype)  # (B, Lh, 4C)
        gens = self._generators(batch, seed, generator)
        noise = self.prepare_noise((self.codec.channels, tokens_h * 2, tokens_w * 2), gens)  # (B, Lx, 4C)
        embeds, pooled = self.encode_prompt(texts)
        neg_embeds = neg_pooled = None
        if negative_prompt is not None and true_cfg_scale <= 1.0:
            logger.warning("negative_prompt is ignored: it needs true_cfg_scale > 1 (got %s)", true_cfg_scale)
        if true_cfg_scale > 1.0:
            negs = [negative_prompt] if negative_prompt is None or isinstance(negative_prompt, str) else list(negative_prompt)
            negs = ["" if x is None else x for x in negs]
            neg_embeds, neg_pooled = self.encode_prompt(_broadcast(negs, batch, "negative prompts"))
        img_ids = latent_ids(tokens_h, tokens_w, device=self.device)
        src_ids = source_ids(tokens_h, tokens_w, source_layout(task), device=self.device)
        txt_ids = text_ids(embeds.shape[1], device=self.device)

        # ---- sampling
        config = dict(getattr(self, "_progress_bar_config", {}) or {})
        disable = (not show_progress) if show_progress is not None else bool(config.get("disable", False))
        bar = self.progress_bar(total=int(num_inference_steps)) if not disable else None

        def on_step(i: int, total: int) -> None:
            if bar is not None:
                bar.update(1)
            if callback is not None:
                callback(i, total)

        try:
            latents = denoise(
                self.transformer, noise, embeds, pooled, img_ids, txt_ids, num_steps=int(num_inference_steps),
                guidance=guidance_scale, source_tokens=src_tokens, source_ids=src_ids,
                use_source_cache=use_source_cache, true_cfg_scale=float(true_cfg_scale), negative_embeds=neg_embeds,
                negative_pooled=neg_pooled, scheduler=self.scheduler, callback=on_step,
            )
        finally:
            if bar is not None:
                bar.close()
        latents = unpack_latents(latents, tokens_h * 2, tokens_w * 2)  # (B, C, h, w)
        sources_cpu = sources.float().cpu()
        if out_kind == "latent":
            result: Any = latents
        else:
            decoded = self.codec.decode(latents.to(self.codec.device, self.codec.dtype))
            out = ((decoded.float() + 1) / 2).clamp(0, 1).cpu()  # (B, 3, H, W) in [0, 1]
            if keep_unmasked:
                m = torch.stack(mask_t)
                out = torch.stack(originals) * (1 - m) + out * m
            if out_kind == "pt":
                result = out
            elif out_kind == "np":
                result = out.permute(0, 2, 3, 1).numpy()
            else:
                result = [_tensor_to_pil(x) for x in out]
        if not return_dict:
            return result, texts, sources_cpu
        return CoLoGenPipelineOutput(images=result, prompts=texts, sources=sources_cpu)

    @staticmethod
    def check_task(task: str) -> str:
        """The canonical task name (``TASKS`` or an alias in ``TASK_ALIASES``); ValueError naming an unknown one."""
        name = TASK_ALIASES.get(str(task).lower(), str(task).lower())
        if name not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {TASKS} (or {sorted(TASK_ALIASES)})")
        return name

    # ------------------------------------------------------------------ one call per task
    def inpaint(self, image: ImageBatch, mask: ImageBatch, prompt: Union[str, Sequence[str]] = "",
                keep_unmasked: bool = False, **kwargs: Any) -> CoLoGenPipelineOutput:
        """Fill the masked region (white / 1 in ``mask``) of ``image`` following the caption ``prompt``.

        The model's source is ``image`` with the masked pixels set to mid-grey (:data:`INPAINT_FILL`), as in
        training; ``keep_unmasked=True`` pastes the unmasked input pixels back into the output. Other keyword
        arguments: see :meth:`__call__`.
        """
        return self("inpaint", image, prompt, mask=mask, keep_unmasked=keep_unmasked, **kwargs)

    def ground(self, image: ImageBatch, instruction: Union[str, Sequence[str]], **kwargs: Any) -> CoLoGenPipelineOutput:
        """Draw what ``instruction`` asks onto ``image`` ("draw a yellow box around the blue star", "cover the
        square with a red mask"). See :meth:`__call__`."""
        return self("ground", image, instruction, **kwargs)

    def control(self, condition_image: ImageBatch, cond_type: str, prompt: Union[str, Sequence[str]] = "",
                compute_canny: bool = False, **kwargs: Any) -> CoLoGenPipelineOutput:
        """Generate the caption ``prompt`` following a ``cond_type`` map (canny, depth, hed, lineart, seg).

        With ``compute_canny=True`` (cond_type ``canny``), ``condition_image`` is a photo and its kornia Canny
        edges (thresholds 0.1 / 0.2) are the condition. See :meth:`__call__`.
        """
        return self("control", condition_image, prompt, cond_type=cond_type, compute_canny=compute_canny, **kwargs)

    def customize(self, subject_image: ImageBatch, prompt: Union[str, Sequence[str]], **kwargs: Any) -> CoLoGenPipelineOutput:
        """Subject-driven generation: the subject of ``subject_image`` (a reference, RoPE-shifted per D5) in the
        scene ``prompt`` describes. See :meth:`__call__`."""
        return self("subject", subject_image, prompt, **kwargs)

    def edit(self, image: ImageBatch, instruction: Union[str, Sequence[str]], **kwargs: Any) -> CoLoGenPipelineOutput:
        """Edit ``image`` as ``instruction`` says ("make the circle green"). See :meth:`__call__`."""
        return self("edit", image, instruction, **kwargs)
