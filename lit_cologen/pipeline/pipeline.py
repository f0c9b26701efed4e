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
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Optional, Union

import numpy as np
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.utils import BaseOutput
from torch import Tensor

from lit_cologen.data.schema import COND_TYPES, TASKS
from lit_cologen.data.tasks import format_prompt, source_layout
from lit_cologen.models.adapter_io import ADAPTER_FILE
from lit_cologen.models.codecs import LatentCodec
from lit_cologen.models.config import PRWConfig
from lit_cologen.models.factory import build_base_transformer, build_components
from lit_cologen.models.latents import latent_ids, pack_latents, source_ids, text_ids, unpack_latents
from lit_cologen.models.presets import get_preset
from lit_cologen.models.runtime import configure_runtime
from lit_cologen.models.schedule import flux_scheduler
from lit_cologen.models.text_encoders import TextConditioner
from lit_cologen.models.transformer import CoLoGenTransformer
from lit_cologen.pipeline.folder import (
    INDEX_FILE,
    PIPELINE_FORMAT,
    _flux_preset_of,
    _own_aligned_memory,
    check_index,
    frozen_weights_of,
    load_scheduler,
    load_text_and_codec,
    read_index,
    save_codec,
    save_text_encoder,
    transformer_with_adapters,
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
from lit_cologen.sampling import denoise
from lit_cologen.utils.atomic import atomic_write_json

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


class CoLoGenPipeline(DiffusionPipeline):
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
        compile: bool = False,
        fp8: bool = False,
        base_quantization: str = "none",
        use_ema: bool = True,
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
            compile / fp8 / base_quantization: how the transformer runs (:mod:`lit_cologen.models.runtime`):
                compiled block forwards, FP8 matmuls in the frozen base (GPUs with FP8 only), weight-only
                ``int8`` / ``nf4`` base (the 24 GB mode).
            use_ema: for an export folder with ``adapters_ema.safetensors`` (``train.ema``), load the EMA weights
                (default); False: the raw ``adapters.safetensors``.

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
        transformer = configure_runtime(transformer_with_adapters(base, adapters, prw, use_ema=use_ema), device=device,
                                        compile=compile, fp8=fp8, base_quantization=base_quantization, training=False)
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
        return pipe._placed(device, text_device)

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
        compile: bool = False,
        fp8: bool = False,
        base_quantization: str = "none",
        use_ema: bool = True,
        **kwargs: Any,
    ) -> "CoLoGenPipeline":
        """Load a folder written by :meth:`save_pretrained` (or a stock FLUX.1 folder; format:
        :mod:`lit_cologen.pipeline.folder`).

        Args:
            pretrained_model_name_or_path: the local folder.
            adapters: adapters to load instead of the folder's ``adapters.safetensors``.
            torch_dtype, device, text_dtype, text_device, compile, fp8, base_quantization, use_ema: as in
                :meth:`from_preset`.

        Raises:
            FileNotFoundError: the folder, its index or a weights subfolder is missing (named).
            ValueError: the folder is not a CoLoGen / FLUX pipeline folder.
        """
        if kwargs:
            raise TypeError(f"CoLoGenPipeline.from_pretrained: unsupported arguments {sorted(kwargs)}")
        root = Path(pretrained_model_name_or_path)
        index_path, index = read_index(root)
        if index.get("_class_name") == "FluxPipeline":  # a stock FLUX.1 folder, possibly with our adapters in it
            local_adapters = root / ADAPTER_FILE
            return cls.from_preset(_flux_preset_of(root), root,
                                   adapters or (local_adapters if local_adapters.is_file() else None),
                                   torch_dtype=torch_dtype, device=device, text_dtype=text_dtype, text_device=text_device,
                                   compile=compile, fp8=fp8, base_quantization=base_quantization, use_ema=use_ema)
        check_index(index_path, index, cls.__name__)
        preset = index["preset"]
        p = get_preset(preset)
        weights, origin = frozen_weights_of(root, index_path, index, p)
        dtype = torch_dtype or (torch.float32 if p.builtin_components else torch.bfloat16)
        base = build_base_transformer(preset, str(weights) if weights is not None else None, torch_dtype=dtype,
                                      seed=int(origin.get("seed", 0)))
        adapter_file = adapters or (root / index["adapters"] if index.get("adapters") else None)
        transformer = configure_runtime(transformer_with_adapters(base, adapter_file, use_ema=use_ema), device=device,
                                        compile=compile, fp8=fp8, base_quantization=base_quantization, training=False)
        codec, text = load_text_and_codec(root, index, preset, p, weights, base.config, dtype, text_dtype)
        pipe = cls(transformer, text, codec, load_scheduler(root), preset=preset)
        pipe.base_origin = ({"source": "folder", "path": str(root.resolve())} if origin["source"] == "saved"
                            else dict(origin))
        return pipe._placed(device, text_device)

    def save_pretrained(self, save_directory: str | os.PathLike, save_base: bool = True, *,
                        results: Sequence[str | os.PathLike] = (), training_run: str | os.PathLike | None = None,
                        **kwargs: Any) -> Path:
        """Write the pipeline folder (layout: :mod:`lit_cologen.pipeline.folder`) with its model card
        (``README.md``: :func:`lit_cologen.training.model_card.pipeline_card`); returns its path.

        Args:
            save_directory: target folder (created).
            save_base: also write the frozen weights (base transformer; FLUX VAE and text encoders). With False, the
                index records where they come from (the folder they were loaded from, or the preset's seed).
            results: results.json files (or folders holding them, from ``cologen bench score``) for the card.
            training_run: the training step (its folder or ``final/``) whose config summary goes into the card;
                default: the run whose ``final/`` the adapters were loaded from, when it has a config.yaml.
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
        index.update(save_text_encoder(self.text_encoder, root, save_base))
        index.update(save_codec(self.codec, root, save_base))
        self.scheduler.save_pretrained(str(root / "scheduler"))
        from lit_cologen.training.model_card import pipeline_card, write_card

        loaded_from = getattr(self.transformer, "adapters_file", None)  # a training export's final/ ...
        if training_run is None and loaded_from:
            final = Path(loaded_from).parent  # ... whose step folder has its config.yaml
            if (final / "done.json").is_file() and (final.parent / "config.yaml").is_file():
                training_run = final
        adapter_meta = self.transformer.adapter_metadata() if index.get("adapters") else None
        write_card(root, pipeline_card(self.preset, index["base"], adapter_meta, save_base, results, training_run,
                                       card_dir=root))
        atomic_write_json(root / INDEX_FILE, index, sort_keys=True, newline=True)  # last: an index = complete
        return root

    def push_to_hub(self, repo_id: str, commit_message: Optional[str] = None, private: Optional[bool] = None,
                    token: Optional[str] = None, create_pr: bool = False, *, save_base: bool = True,
                    results: Sequence[str | os.PathLike] = (), training_run: str | os.PathLike | None = None,
                    **kwargs: Any) -> Any:
        """Upload the pipeline to the Hub repo ``repo_id`` (created if needed): :meth:`save_pretrained` (card
        included) into a temporary folder, then diffusers' ``_upload_folder`` (``huggingface_hub.upload_folder``).
        Returns the commit info.

        Raises:
            HubOfflineError: ``HF_HUB_OFFLINE`` is set (one line; nothing is written or sent).
        """
        if kwargs:
            raise TypeError(f"CoLoGenPipeline.push_to_hub: unsupported arguments {sorted(kwargs)}")
        import tempfile

        from huggingface_hub import create_repo
        from huggingface_hub.errors import OfflineModeIsEnabled

        from lit_cologen.training.model_card import HubOfflineError, refuse_offline

        refuse_offline("CoLoGenPipeline.push_to_hub", repo_id)
        try:
            repo_id = create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
            with tempfile.TemporaryDirectory(prefix="cologen-push-") as tmp:
                self.save_pretrained(tmp, save_base=save_base, results=results, training_run=training_run)
                return self._upload_folder(tmp, repo_id, token=token, commit_message=commit_message,
                                           create_pr=create_pr)
        except OfflineModeIsEnabled as err:  # offline mode switched on inside huggingface_hub after the check
            raise HubOfflineError(f"CoLoGenPipeline.push_to_hub: {err}".splitlines()[0]) from None

    def load_adapters(self, path: str | os.PathLike, use_ema: bool = True) -> None:
        """Replace the adapters by those in ``path`` (``adapters.safetensors`` or a run's export folder).

        The PRW shape is read from the file, so a pipeline built without adapters (or with another rank) can load
        any export made for the same base. Raises FileNotFoundError / ValueError naming the file.
        """
        old = self.transformer
        new = transformer_with_adapters(old.base, path, use_ema=use_ema)
        device = old.base.x_embedder.weight.device
        self.transformer = new.to(device).eval().requires_grad_(False)

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
            guidance_scale=guidance_scale, true_cfg_scale=true_cfg_scale, use_source_cache=use_source_cache,
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
