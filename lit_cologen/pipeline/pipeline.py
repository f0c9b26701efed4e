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

The steps are the methods :meth:`CoLoGenPipeline.check_inputs`, :meth:`~CoLoGenPipeline.prepare_images`,
:meth:`~CoLoGenPipeline.output_size`, :meth:`~CoLoGenPipeline.prepare_source`,
:meth:`~CoLoGenPipeline.prepare_source_latents`, :meth:`~CoLoGenPipeline.prepare_latents`,
:meth:`~CoLoGenPipeline.encode_prompt` / :meth:`~CoLoGenPipeline.prepare_prompt_embeds`,
:meth:`~CoLoGenPipeline.denoise_latents`, :meth:`~CoLoGenPipeline.decode_latents` and
:meth:`~CoLoGenPipeline.format_output`; ``__call__`` runs them in that order.

The folder format of ``save_pretrained`` / ``from_pretrained`` is described in :mod:`lit_cologen.pipeline.folder`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional, Union

import numpy as np
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.utils import BaseOutput
from torch import Tensor

from lit_cologen.data.schema import COND_TYPES, TASKS
from lit_cologen.data.tasks import format_prompt, source_layout
from lit_cologen.models.codecs import LatentCodec
from lit_cologen.models.latents import latent_ids, pack_latents, source_ids, text_ids, unpack_latents
from lit_cologen.models.presets import get_preset
from lit_cologen.models.text_encoders import TextConditioner
from lit_cologen.models.transformer import CoLoGenTransformer
from lit_cologen.pipeline.folder import (
    INDEX_FILE,
    _own_aligned_memory,
)
from lit_cologen.pipeline.images import (
    ImageBatch,
    canny,
    fill_masked,
    resize,
    tensor_to_pil,
    to_image_tensor,
    to_mask_tensor,
)
from lit_cologen.pipeline.loading import PipelineLoadingMixin
from lit_cologen.sampling import denoise

__all__ = ["CoLoGenPipeline", "CoLoGenPipelineOutput", "OUTPUT_TYPES", "TASK_ALIASES"]

logger = logging.getLogger(__name__)

#: Names accepted for ``task`` besides :data:`TASKS`.
TASK_ALIASES: dict[str, str] = {"customize": "subject", "customization": "subject", "inpainting": "inpaint",
                                "grounding": "ground", "editing": "edit"}
#: ``output_type`` values (and their aliases below)
OUTPUT_TYPES = ("pil", "np", "pt", "latent")
_OUTPUT_ALIASES = {"numpy": "np", "tensor": "pt", "torch": "pt", "pil": "pil", "np": "np", "pt": "pt", "latent": "latent"}


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


class _Prepared(NamedTuple):
    """The batch as the model sees it (B = sources x num_images_per_prompt), from :meth:`prepare_source`."""

    sources: Tensor  # (B, 3, H, W) in [0, 1]: the model's source images
    originals: list[Tensor]  # B x (3, H, W) in [0, 1]: the inputs at the output size (keep_unmasked pastes them)
    masks: list[Tensor]  # inpaint: B x (1, H, W) in {0, 1}; other tasks: empty
    texts: list[str]  # B prompts after format_prompt


# ----------------------------------------------------------------------------------------------------------------
# Batch helpers
# ----------------------------------------------------------------------------------------------------------------


def _as_list(x: Any) -> list:
    """One item or a batch (list, tuple, 4-D tensor / array) -> a list; None -> []."""
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
    """``items`` as n items: as is, or one repeated n times; ValueError naming ``what`` otherwise."""
    if len(items) == n:
        return items
    if len(items) == 1:
        return items * n
    raise ValueError(f"got {len(items)} {what} for a batch of {n}; pass one, or one per sample")


# ----------------------------------------------------------------------------------------------------------------
# The pipeline
# ----------------------------------------------------------------------------------------------------------------


class CoLoGenPipeline(PipelineLoadingMixin, DiffusionPipeline):
    """The five CoLoGen tasks with one model (a diffusers ``DiffusionPipeline``; how a call runs: the module
    docstring).

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
    def _placed(self, device: str | torch.device | None, text_device: str | torch.device | None) -> "CoLoGenPipeline":
        """Move to ``device`` (the text conditioner then to ``text_device`` if given), own aligned memory; self."""
        self.to(device)
        if text_device is not None:
            self.text_encoder.to(text_device)
        return self._own_memory()

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
    def default_guidance(self) -> float:
        """The embedded guidance used when a call gives none: the preset's ``sampling_guidance``."""
        return get_preset(self.preset).sampling_guidance

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

    def output_size(self, sizes: list[tuple[int, int]], height: Optional[int], width: Optional[int]) -> tuple[int, int]:
        """The output ``(height, width)`` in pixels: as given (each a positive multiple of :attr:`pixels_per_token`),
        else the sources' common size ``sizes`` ((H, W) each) rounded to the nearest multiple.

        Raises:
            ValueError: a size that is not such a multiple, or sources of different sizes without both given.
        """
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

    # ------------------------------------------------------------------ the steps of a call
    def check_inputs(
        self,
        task: str,
        *,
        mask: Optional[ImageBatch],
        cond_type: Optional[str],
        compute_canny: bool,
        keep_unmasked: bool,
        output_type: str,
        num_inference_steps: int,
        num_images_per_prompt: int,
    ) -> tuple[str, str]:
        """Check the call's options before any image is read; returns ``(canonical task, output kind)``, the kind one
        of :data:`OUTPUT_TYPES`.

        Raises:
            ValueError: an unknown task / cond_type / output_type, an option given to a task it is not for, a
                missing mask (inpaint) or cond_type (control), num_inference_steps or num_images_per_prompt < 1.
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
        return task, out_kind

    def prepare_images(
        self, task: str, source: ImageBatch, prompt: Union[str, Sequence[str]], mask: Optional[ImageBatch]
    ) -> tuple[list[Tensor], list[Optional[Tensor]], list[str]]:
        """The inputs as n sources (3, H, W) in [0, 1], n masks (1, H, W) in {0, 1} (None unless a mask is given)
        and n prompts, where n = max(images, prompts): a single image is broadcast over several prompts and vice
        versa (formats: :func:`to_image_tensor`, :func:`to_mask_tensor`).

        Raises:
            ValueError / TypeError / FileNotFoundError: no source, a prompt that is not a string (list), counts that
                do not broadcast, an unreadable image or mask, a mask whose size is not its image's.
        """
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
        return srcs, masks, prompts

    def prepare_source(
        self, task: str, srcs: list[Tensor], masks: list[Optional[Tensor]], prompts: list[str], height: int,
        width: int, cond_type: Optional[str], compute_canny: bool, num_images_per_prompt: int,
    ) -> _Prepared:
        """The task's source images (D2) and texts at the output size, each repeated ``num_images_per_prompt``
        times: inpaint -> the image with the masked region :data:`INPAINT_FILL` grey; control with
        ``compute_canny`` -> the photo's Canny edges; the other tasks -> the (resized) image. Texts are the prompts
        through :func:`format_prompt`."""
        originals = [resize(s, height, width) for s in srcs]
        model_src, mask_t = [], []
        for img, m in zip(originals, masks):
            if task == "inpaint":
                m = resize(m, height, width, mode="nearest")
                mask_t.append(m)
                img = fill_masked(img, m)
            elif compute_canny:
                img = canny(img)
            model_src.append(img)
        k = int(num_images_per_prompt)
        rep = lambda xs: [x for x in xs for _ in range(k)]  # noqa: E731
        model_src, originals, prompts = rep(model_src), rep(originals), rep(prompts)
        texts = [format_prompt(task, p, cond_type) for p in prompts]
        return _Prepared(sources=torch.stack(model_src), originals=originals, masks=rep(mask_t), texts=texts)

    def prepare_source_latents(self, task: str, sources: Tensor, tokens_h: int, tokens_w: int) -> tuple[Tensor, Tensor]:
        """Source images (B, 3, H, W) in [0, 1] -> packed source tokens (B, tokens_h * tokens_w, 4C) in the
        transformer's dtype / device, and their RoPE ids (tokens_h * tokens_w, 3) in the task's layout (D5)."""
        src_latents = self.codec.encode((sources * 2 - 1).to(self.codec.device, self.codec.dtype))
        src_tokens = pack_latents(src_latents).to(self.device, self.dtype)  # (B, Lh, 4C)
        return src_tokens, source_ids(tokens_h, tokens_w, source_layout(task), device=self.device)

    def prepare_latents(self, batch: int, tokens_h: int, tokens_w: int, seed: Any,
                        generator: Any) -> tuple[Tensor, Tensor]:
        """The initial noise, packed (B, tokens_h * tokens_w, 4C) (:meth:`prepare_noise`, one generator per image
        from ``seed`` or ``generator``), and the output tokens' RoPE ids (tokens_h * tokens_w, 3).

        Raises:
            ValueError: both seed and generator, or a seed / generator count that is not the batch size.
        """
        gens = self._generators(batch, seed, generator)
        noise = self.prepare_noise((self.codec.channels, tokens_h * 2, tokens_w * 2), gens)  # (B, Lx, 4C)
        return noise, latent_ids(tokens_h, tokens_w, device=self.device)

    def prepare_prompt_embeds(
        self, texts: list[str], negative_prompt: Union[str, Sequence[str], None], true_cfg_scale: float
    ) -> tuple[Tensor, Tensor, Optional[Tensor], Optional[Tensor]]:
        """``(prompt_embeds (B, L, D), pooled (B, P), negative_embeds, negative_pooled)``; the negatives (default
        ``""``, not templated) only with ``true_cfg_scale > 1``, else None (a negative_prompt is then ignored, with
        a warning)."""
        embeds, pooled = self.encode_prompt(texts)
        neg_embeds = neg_pooled = None
        if negative_prompt is not None and true_cfg_scale <= 1.0:
            logger.warning("negative_prompt is ignored: it needs true_cfg_scale > 1 (got %s)", true_cfg_scale)
        if true_cfg_scale > 1.0:
            negs = [negative_prompt] if negative_prompt is None or isinstance(negative_prompt, str) else list(negative_prompt)
            negs = ["" if x is None else x for x in negs]
            neg_embeds, neg_pooled = self.encode_prompt(_broadcast(negs, len(texts), "negative prompts"))
        return embeds, pooled, neg_embeds, neg_pooled

    def denoise_latents(
        self, noise: Tensor, text: tuple[Tensor, Tensor, Optional[Tensor], Optional[Tensor]], img_ids: Tensor,
        src_tokens: Tensor, src_ids: Tensor, *, num_inference_steps: int, guidance_scale: float,
        true_cfg_scale: float, use_source_cache: bool, show_progress: Optional[bool],
        callback: Optional[Callable[[int, int], None]],
    ) -> Tensor:
        """The denoising loop (:func:`lit_cologen.sampling.denoise`) from the packed noise (B, Lx, 4C) with the
        text of :meth:`prepare_prompt_embeds` and the packed source tokens; returns the packed latents (B, Lx, 4C).
        A tqdm bar over the steps unless ``show_progress`` is False (default: the progress-bar config's)."""
        embeds, pooled, neg_embeds, neg_pooled = text
        txt_ids = text_ids(embeds.shape[1], device=self.device)
        config = dict(getattr(self, "_progress_bar_config", {}) or {})
        disable = (not show_progress) if show_progress is not None else bool(config.get("disable", False))
        bar = self.progress_bar(total=int(num_inference_steps)) if not disable else None

        def on_step(i: int, total: int) -> None:
            if bar is not None:
                bar.update(1)
            if callback is not None:
                callback(i, total)

        try:
            return denoise(
                self.transformer, noise, embeds, pooled, img_ids, txt_ids, num_steps=int(num_inference_steps),
                guidance=guidance_scale, source_tokens=src_tokens, source_ids=src_ids,
                use_source_cache=use_source_cache, true_cfg_scale=float(true_cfg_scale), negative_embeds=neg_embeds,
                negative_pooled=neg_pooled, scheduler=self.scheduler, callback=on_step,
            )
        finally:
            if bar is not None:
                bar.close()

    def decode_latents(self, latents: Tensor) -> Tensor:
        """Latents (B, C, h, w) -> images (B, 3, H, W) float32 in [0, 1] on CPU."""
        decoded = self.codec.decode(latents.to(self.codec.device, self.codec.dtype))
        return ((decoded.float() + 1) / 2).clamp(0, 1).cpu()

    def format_output(self, latents: Tensor, prepared: _Prepared, out_kind: str, keep_unmasked: bool) -> Any:
        """Latents (B, C, h, w) -> the call's ``images``: the latents themselves (``latent``), or decoded (with
        the unmasked input pixels pasted back for ``keep_unmasked``) as a tensor (B, 3, H, W) (``pt``), an array
        (B, H, W, 3) (``np``) or B PIL images (``pil``)."""
        if out_kind == "latent":
            return latents
        out = self.decode_latents(latents)  # (B, 3, H, W) in [0, 1]
        if keep_unmasked:
            m = torch.stack(prepared.masks)
            out = torch.stack(prepared.originals) * (1 - m) + out * m
        if out_kind == "pt":
            return out
        if out_kind == "np":
            return out.permute(0, 2, 3, 1).numpy()
        return [tensor_to_pil(x) for x in out]

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
        guidance_scale: Optional[float] = None,
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
                the others. Default: the preset's ``sampling_guidance`` (flux-dev 3.5, tiny 1.0, its training value).
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
        task, out_kind = self.check_inputs(
            task, mask=mask, cond_type=cond_type, compute_canny=compute_canny, keep_unmasked=keep_unmasked,
            output_type=output_type, num_inference_steps=num_inference_steps,
            num_images_per_prompt=num_images_per_prompt)
        srcs, masks, prompts = self.prepare_images(task, source, prompt, mask)
        height, width = self.output_size([tuple(s.shape[-2:]) for s in srcs], height, width)
        prepared = self.prepare_source(task, srcs, masks, prompts, height, width, cond_type, compute_canny,
                                       num_images_per_prompt)
        tokens_h, tokens_w = height // self.pixels_per_token, width // self.pixels_per_token
        src_tokens, src_ids = self.prepare_source_latents(task, prepared.sources, tokens_h, tokens_w)
        noise, img_ids = self.prepare_latents(len(prepared.texts), tokens_h, tokens_w, seed, generator)
        text = self.prepare_prompt_embeds(prepared.texts, negative_prompt, true_cfg_scale)
        latents = self.denoise_latents(
            noise, text, img_ids, src_tokens, src_ids, num_inference_steps=num_inference_steps,
            guidance_scale=self.default_guidance if guidance_scale is None else float(guidance_scale),
            true_cfg_scale=true_cfg_scale, use_source_cache=use_source_cache,
            show_progress=show_progress, callback=callback)
        latents = unpack_latents(latents, tokens_h * 2, tokens_w * 2)  # (B, C, h, w)
        images = self.format_output(latents, prepared, out_kind, keep_unmasked)
        sources = prepared.sources.float().cpu()
        if not return_dict:
            return images, prepared.texts, sources
        return CoLoGenPipelineOutput(images=images, prompts=prepared.texts, sources=sources)

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
