"""How a :class:`~lit_cologen.pipeline.pipeline.CoLoGenPipeline` is built, saved and shared: from a preset, from a
saved folder (or a stock FLUX.1 folder), to a folder with its model card, to the Hub, and swapping its adapters.

A mixin, first in the pipeline's bases, so that these definitions win over ``DiffusionPipeline``'s generic
``from_pretrained`` / ``save_pretrained`` (the folder format is :mod:`lit_cologen.pipeline.folder`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import torch

from lit_cologen.models.adapter_io import ADAPTER_FILE
from lit_cologen.models.config import PRWConfig
from lit_cologen.models.factory import build_base_transformer, build_components
from lit_cologen.models.presets import get_preset
from lit_cologen.models.runtime import configure_runtime
from lit_cologen.models.schedule import flux_scheduler
from lit_cologen.pipeline.folder import (
    INDEX_FILE,
    PIPELINE_FORMAT,
    _flux_preset_of,
    check_index,
    frozen_weights_of,
    load_scheduler,
    load_text_and_codec,
    read_index,
    save_codec,
    save_text_encoder,
    transformer_with_adapters,
)
from lit_cologen.utils.atomic import atomic_write_json

if TYPE_CHECKING:  # the class this mixin is part of
    from lit_cologen.pipeline.pipeline import CoLoGenPipeline


class PipelineLoadingMixin:
    """``from_preset`` / ``from_pretrained`` / ``save_pretrained`` / ``push_to_hub`` / ``load_adapters``."""

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

