"""CoLoGenModule: the LightningModule of one curriculum step.

Loss = rectified-flow velocity MSE on the noisy tokens (D10) + veteran gate routing supervision (Eq. 8-10, D9).
Only the experts + routers train (fp32), unless `train.train_base` (the tiny/small base pre-training). Checkpoints
hold the trainable weights, optimizer, scheduler and loop state: never the frozen base.

Every random draw of a step (timesteps, noise, text dropout, router noise) is seeded from (seed, step, micro-batch),
so a run killed and resumed reproduces the uninterrupted run's loss sequence.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import lightning as L
import torch
from omegaconf import OmegaConf
from torch import Tensor

from lit_cologen.config import check
from lit_cologen.data.encoded import manifest_folder, read_manifest
from lit_cologen.data.tasks import source_layout
from lit_cologen.models.adapter_io import EMA_ADAPTER_FILE, write_adapters
from lit_cologen.models.codecs import LatentCodec
from lit_cologen.models.factory import (
    build_base_transformer,
    build_codec,
    build_text_conditioner,
)
from lit_cologen.models.latents import latent_ids, pack_latents, source_ids, text_ids
from lit_cologen.models.presets import get_preset
from lit_cologen.models.runtime import configure_runtime
from lit_cologen.models.text_cache import TextEmbeddingCache
from lit_cologen.models.text_encoders import TextConditioner
from lit_cologen.models.transformer import CoLoGenTransformer
from lit_cologen.training.config import StepConfig
from lit_cologen.training.ema import AdapterEMA, ema_metadata
from lit_cologen.training.losses import (
    flow_matching_loss,
    noisy_latents,
    sample_timesteps,
    veteran_loss,
)
from lit_cologen.utils.dist import local_cuda_device
from lit_cologen.utils.dtypes import dtype_from_name

log = logging.getLogger(__name__)
VAL_TIMESTEPS = (0.1, 0.3, 0.5, 0.7, 0.9)  # fixed, stratified: comparable across steps (forgetting)
TIMESTEP_BUCKETS = ("t<0.33", "t<0.66", "t<=1")


@dataclass
class RoutingRecord:
    """What one training step routed, for :class:`~lit_cologen.training.callbacks.RoutingStatsCallback`.

    Attributes:
        decisions: per routed block (double then single), (expert index (B,) or (B, L), probabilities (B, E) or
            (B, L, E)), detached and still on the training device.
        tasks: the task of each sample (B,).
        t: the flow-matching timesteps (B,) of the step.
    """

    decisions: list[tuple[Tensor, Tensor]]
    tasks: list[str]
    t: Tensor


SELF_SOURCE = "self"  # StepPlan group of the samples whose source is their own target (train.self_source)


@dataclass
class StepPlan:
    """The host-side inputs of one forward, made on the CPU before any device work.

    Attributes:
        prompts: the prompts after text dropout (B).
        t: flow-matching timesteps (B,).
        noise: the noise of the packed noisy tokens (B, L, C_in).
        groups: source layout -> sample indices (n,) of the samples that share it (one forward each); the layout
            ``SELF_SOURCE`` (base pre-training, ``train.self_source``) feeds a sample's clean target as its source.
        text: the prompts' embeddings from the text cache, (B, Ly, D) and pooled (B, P), on the CPU.
    """

    prompts: list[str]
    t: Tensor
    noise: Tensor
    groups: dict[str, Tensor]
    text: tuple[Tensor, Tensor]


def checkpointing_policy(cfg: StepConfig) -> str:
    """``train.checkpointing`` with ``auto`` resolved: ``full`` for a FLUX preset on a GPU (a 12 B base at 512^2 +
    source does not keep every block's activations in 80 GB at batch 4), ``none`` for the built-in presets or on
    the CPU (memory is not the limit there)."""
    policy = cfg.train.checkpointing
    if policy != "auto":
        return policy
    return "full" if trains_on_gpu(cfg) and not get_preset(cfg.model.preset).builtin_components else "none"


def trains_on_gpu(cfg: StepConfig) -> bool:
    """Whether the step trains on a CUDA device (``train.accelerator`` gpu / cuda, or auto with CUDA available)."""
    return cfg.train.accelerator in ("gpu", "cuda") or (cfg.train.accelerator == "auto" and torch.cuda.is_available())


def _bucket(t: float) -> str:
    return TIMESTEP_BUCKETS[min(int(t * 3), 2)]


class CoLoGenModule(L.LightningModule):
    """One training step of CoLoGen (or the base pre-training of the tiny/small presets)."""

    def __init__(self, cfg: StepConfig, transformer: Optional[CoLoGenTransformer] = None):
        super().__init__()
        self.cfg = cfg
        self.strict_loading = False  # checkpoints omit the frozen base
        ppt = get_preset(cfg.model.preset).pixels_per_token  # aspect-ratio buckets must fall on whole tokens
        check(all(h % ppt == 0 and w % ppt == 0 for h, w in cfg.data.bucket_list() or []), "data.bucket_step",
              f"{cfg.data.bucket_step}: bucket sides must be multiples of preset {cfg.model.preset!r}'s {ppt} pixels "
              f"per token (codec factor x 2x2 packing)")
        base_dtype = self._base_dtype()
        if transformer is None:
            base = build_base_transformer(cfg.model.preset, cfg.model.pretrained_path, torch_dtype=base_dtype,
                                          seed=cfg.train.seed)
            prw = OmegaConf.to_object(OmegaConf.structured(cfg.model.prw))
            expected = prw.num_experts
            if cfg.init_from:
                prw.num_experts = 1
            transformer = CoLoGenTransformer(base, prw)
            if cfg.init_from:
                transformer.load_adapters(cfg.init_from)
                if cfg.add_expert:  # the new expert's own LoRA rank / alpha (default: model.prw.rank / alpha)
                    transformer.add_expert(rank=cfg.model.prw.new_rank, alpha=cfg.model.prw.new_alpha)
            if transformer.num_experts != expected and cfg.model.prw.blocks != "none":
                raise ValueError(f"step '{cfg.name}': model has {transformer.num_experts} experts after loading "
                                 f"{cfg.init_from!r}, config model.prw.num_experts={expected}")
        self.transformer = transformer
        if cfg.train.train_base:
            self.transformer.base.requires_grad_(True)
        self.transformer.set_checkpointing(checkpointing_policy(cfg), cfg.train.checkpoint_ratio)
        configure_runtime(self.transformer, device=local_cuda_device() if trains_on_gpu(cfg) else "cpu",
                          compile=cfg.train.compile, compile_backend=cfg.train.compile_backend, fp8=cfg.train.fp8,
                          base_quantization=cfg.model.base_quantization, training=True)
        # The frozen codec (VAE) and text encoders are built on first use and kept out of the registered submodules:
        # Lightning neither moves nor checkpoints them and DDP / FSDP never wrap them. With encoded shards
        # (data.encoded) and their filled text cache, a step never builds either (see data/encoded.py).
        self._frozen: dict[str, LatentCodec] = {}
        self.encoded_manifest, manifest_dir = self._read_encoded_manifest()
        fingerprint, cache_dir = None, cfg.train.text_cache_dir
        if self.encoded_manifest is not None:
            fingerprint = self.encoded_manifest["text_fingerprint"]
            cache_dir = str(manifest_dir / self.encoded_manifest["text_cache"])
        self.text_cache = TextEmbeddingCache(self._build_text, cache_dir=cache_dir, fingerprint=fingerprint,
                                             device="cpu")
        self.newest = self.transformer.num_experts - 1
        self._pending_finite: deque = deque()  # (step, host flag, CUDA event, batch keys) of unchecked losses

    # ------------------------------------------------------------------ frozen components (lazy)
    def _read_encoded_manifest(self):
        """(manifest, its folder) of the encoded shards of data.train_shards, or (None, None) without data.encoded."""
        if not self.cfg.data.encoded:
            return None, None
        folder = manifest_folder(list(self.cfg.data.train_shards))
        if folder is None:
            check(False, "data.train_shards", f"data.encoded=true but no encoded.json was found beside "
                                                   f"{self.cfg.data.train_shards} (write it with `cologen data encode`)")
        manifest = read_manifest(folder)
        saved_path, path = manifest.get("pretrained_path"), self.cfg.model.pretrained_path
        if saved_path and path and saved_path != str(path) and not get_preset(self.cfg.model.preset).builtin_components:
            log.warning("encoded shards in %s were written with the weights in %s, this step uses %s: the cached "
                        "latents / text embeddings come from the former", folder, saved_path, path)
        if manifest["preset"] != self.cfg.model.preset:
            check(False, "model.preset", f"{self.cfg.model.preset!r}, but the encoded shards in {folder} were "
                                              f"written for preset {manifest['preset']!r}")
        return manifest, folder

    def _component_dtype(self) -> Optional[torch.dtype]:
        """FLUX presets: the base dtype (bf16 VAE / T5 under bf16 training); built-in presets: fp32."""
        return None if get_preset(self.cfg.model.preset).builtin_components else self._base_dtype()

    def _build_text(self) -> TextConditioner:
        tcfg = self.transformer.base.config
        return build_text_conditioner(
            self.cfg.model.preset, self.cfg.model.pretrained_path, joint_attention_dim=tcfg.joint_attention_dim,
            pooled_projection_dim=tcfg.pooled_projection_dim,
            max_sequence_length=get_preset(self.cfg.model.preset).text_max_length,
            device=self.device, dtype=self._component_dtype(),
        )

    @property
    def codec(self) -> LatentCodec:
        """The latent codec, built (and moved to this module's device) on first use."""
        codec = self._frozen.get("codec")
        if codec is None:
            codec = self._frozen["codec"] = build_codec(self.cfg.model.preset, self.cfg.model.pretrained_path,
                                                        dtype=self._component_dtype())
        if codec.device != self.device:
            codec.to(self.device)
        return codec

    @property
    def text(self) -> TextConditioner:
        """The text conditioner, built on first use (the text cache builds it on this module's device at its first
        miss or first disk access)."""
        text = self.text_cache.text
        if text.device != self.device:
            text.to(self.device)
        return text

    @property
    def frozen_components_loaded(self) -> dict[str, bool]:
        """Which frozen components exist so far: {"codec": bool, "text": bool}."""
        return {"codec": "codec" in self._frozen, "text": self.text_cache.loaded}

    # ------------------------------------------------------------------ setup
    def _base_dtype(self) -> torch.dtype:
        """``train.base_dtype``; ``auto``: bf16 under bf16 mixed precision (a frozen base), else fp32."""
        choice = self.cfg.train.base_dtype
        if choice == "auto":
            return (torch.bfloat16 if self.cfg.train.precision.startswith("bf16") and not self.cfg.train.train_base
                    else torch.float32)
        return dtype_from_name(choice)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        params = list(self.transformer.trainable_parameters())
        if self.cfg.train.train_base:
            params = [p for p in self.transformer.base.parameters() if p.requires_grad] + params
        return params

    def configure_optimizers(self):
        o = self.cfg.optim
        for p in self.trainable_parameters():
            if p.dtype != torch.float32:
                p.data = p.data.float()  # trainable weights in fp32 (D11)
        opt = torch.optim.AdamW(self.trainable_parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                weight_decay=o.weight_decay)
        total, warmup = self.cfg.train.max_steps, o.warmup_steps

        def factor(step: int) -> float:
            if warmup and step < warmup:
                return (step + 1) / warmup
            if o.schedule == "cosine":
                progress = min(1.0, (step - warmup) / max(1, total - warmup))
                return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
            return 1.0

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip the global gradient norm to ``optim.grad_clip`` (0: off). Under FSDP the norm is taken over all
        shards by FSDP's own ``clip_grad_norm_`` (Lightning's FSDP precision plugin refuses norm clipping)."""
        clip = self.cfg.optim.grad_clip
        if not clip:
            return
        from torch.distributed.fsdp import FullyShardedDataParallel

        wrapped = self.trainer.strategy.model if self._trainer is not None else None
        if isinstance(wrapped, FullyShardedDataParallel):
            wrapped.clip_grad_norm_(clip)
        else:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    # ------------------------------------------------------------------ checkpoints: adapters only
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if not self.cfg.train.train_base:
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                        if k.startswith("transformer.") and not k.startswith("transformer.base.")}
        else:  # the tiny/small base is part of what trains; codec/text stay out (rebuilt from the preset)
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("transformer.")}
        bad = [k for k, v in checkpoint["state_dict"].items() if torch.is_tensor(v) and v.is_floating_point()
               and not torch.isfinite(v).all()]
        if bad:  # never replace a good checkpoint with diverged weights (e.g. after an optimizer step with lr=inf)
            raise FloatingPointError(f"step '{self.cfg.name}': non-finite weights at global step {self.global_step} "
                                     f"({len(bad)} tensors, e.g. {bad[0]}): checkpoint not written")
        checkpoint["cologen_config"] = OmegaConf.to_yaml(OmegaConf.structured(self.cfg))
        checkpoint["cologen_num_experts"] = self.transformer.num_experts

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("cologen_num_experts")
        if saved is not None and saved != self.transformer.num_experts:
            raise ValueError(f"checkpoint has {saved} experts, this step's model has {self.transformer.num_experts}")

    # ------------------------------------------------------------------ the step
    def _step_seed(self, batch_idx: int) -> int:
        acc = self.cfg.train.accumulate or 1
        micro = self.global_step * acc + batch_idx % acc
        return (self.cfg.train.seed * 1_000_003 + micro * 7919 + self.global_rank * 104_729) % (2**62)

    def token_grid(self, batch: dict[str, Any]) -> tuple[int, int]:
        """(th, tw): the noisy-token grid of a batch (latents are 2x2-patchified), from the batch's own (H, W): with
        ``data.buckets`` it changes from batch to batch, and so do the position ids made from it."""
        if "target_latent" in batch:
            return batch["target_latent"].shape[-2] // 2, batch["target_latent"].shape[-1] // 2
        f = self.codec.factor * 2
        return batch["target"].shape[-2] // f, batch["target"].shape[-1] // f

    def to_device(self, tensor: Tensor) -> Tensor:
        """A host tensor on the training device without a host sync: pinned and copied asynchronously on CUDA."""
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def encode_batch(self, batch: dict[str, Any], prompts: list[str],
                     text: Optional[tuple[Tensor, Tensor]] = None):
        """Frozen components: text embeddings (B, Ly, D), pooled (B, P); packed target / source tokens (B, L, C).
        ``text``: the prompts' embeddings already looked up on the host (``plan_step``)."""
        with torch.no_grad():
            embeds, pooled = text if text is not None else self.text_cache(prompts)
            embeds, pooled = self.to_device(embeds), self.to_device(pooled)
            if "target_latent" in batch:  # encoded shards: the codec is never needed
                target = batch["target_latent"].to(self.device)
                source = batch["source_latent"].to(self.device) if self.cfg.train.use_source else None
            else:
                target = self.codec.encode(batch["target"].to(self.device))
                source = self.codec.encode(batch["source"].to(self.device)) if self.cfg.train.use_source else None
        th, tw = target.shape[-2] // 2, target.shape[-1] // 2
        src_tokens = pack_latents(source) if source is not None else None
        return embeds, pooled, pack_latents(target), src_tokens, (th, tw)

    def _noisy_token_shape(self, batch: dict[str, Any]) -> tuple[int, int, int]:
        """(B, L, C_in) of the packed noisy tokens, known before encoding (latent channels x 2 x 2 per token)."""
        th, tw = self.token_grid(batch)
        channels = (batch["target_latent"].shape[1] if "target_latent" in batch
                    else get_preset(self.cfg.model.preset).codec_channels)
        return len(batch["task"]), th * tw, 4 * channels

    def plan_step(self, batch: dict[str, Any], t: Tensor, noise_gen: torch.Generator, prompts: list[str]) -> StepPlan:
        """The host side of a forward: the noise draw (after ``t``'s, from the same generator), the prompts' text
        embeddings and the per-layout sample groups, all on the CPU, before any device work."""
        noise = torch.randn(self._noisy_token_shape(batch), generator=noise_gen)
        share = self.cfg.train.self_source  # drawn only when set: other configs keep their random stream
        own = (torch.rand(len(batch["task"]), generator=noise_gen) < share).tolist() if share else None
        groups: dict[str, list[int]] = defaultdict(list)
        for i, task in enumerate(batch["task"]):
            if own is not None and own[i]:
                groups[SELF_SOURCE].append(i)
            else:
                groups[source_layout(task) if self.cfg.train.use_source else "none"].append(i)
        with torch.no_grad():
            text = self.text_cache(prompts)  # CPU tensors: the cache returns on its device, the CPU
        return StepPlan(prompts, t, noise, {k: torch.tensor(v) for k, v in groups.items()}, text)

    def diffusion_losses(self, batch: dict[str, Any], t: Tensor, noise_gen: torch.Generator,
                         prompts: list[str]) -> tuple[Tensor, list]:
        """Per-sample flow-matching loss (B,) and the routing decisions of every forward."""
        return self.device_losses(batch, self.plan_step(batch, t, noise_gen, prompts))

    def device_losses(self, batch: dict[str, Any], plan: StepPlan) -> tuple[Tensor, list]:
        """The device side of :meth:`diffusion_losses`: no host sync (no ``.item()``, ``.cpu()``, boolean masks)."""
        embeds, pooled, x0, src, (th, tw) = self.encode_batch(batch, plan.prompts, plan.text)
        noise = self.to_device(plan.noise).to(x0.dtype)
        t = self.to_device(plan.t)  # drawn on the CPU (seeded generator); indexed below with device indices
        xt, v = noisy_latents(x0, noise, t)
        dtype = self.transformer.base.x_embedder.weight.dtype
        b = x0.shape[0]
        guidance = torch.full((b,), self.cfg.loss.guidance, device=self.device)
        img_ids, txt = latent_ids(th, tw, device=self.device), text_ids(embeds.shape[1], device=self.device)
        losses = torch.zeros(b, device=self.device)
        routing = []
        for layout, idx in plan.groups.items():
            sel = self.to_device(idx)
            kwargs = {}
            if layout == SELF_SOURCE:  # base pre-training: the clean target is its own aligned source
                kwargs = dict(source_hidden_states=x0[sel].to(dtype), source_ids=source_ids(th, tw, "aligned",
                                                                                              device=self.device))
            elif layout != "none":
                kwargs = dict(source_hidden_states=src[sel].to(dtype),
                              source_ids=source_ids(th, tw, layout, device=self.device))
            out = self.transformer(xt[sel].to(dtype), embeds[sel].to(dtype), pooled[sel].to(dtype), t[sel],
                                   img_ids, txt, guidance=guidance[sel], **kwargs)
            losses = losses.index_put((sel,), flow_matching_loss(out.sample, v[sel]))
            routing.extend(out.routing)
        return losses, routing

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """One micro-batch: ``{"loss": scalar, "routing": RoutingRecord}`` (Lightning optimises ``loss``).

        Host work (seeded draws on the CPU, text-cache lookups, grouping) happens in :meth:`plan_step` before the
        device work (:meth:`device_step`), which makes no host sync; the finite-loss check syncs only on the CPU,
        on logging steps, or when an earlier step's flag has already arrived (:meth:`_check_finite`).
        """
        seed = self._step_seed(batch_idx)
        torch.manual_seed(seed)  # router noise (and any other global draw) of this micro-batch
        gen = torch.Generator().manual_seed(seed)
        b = len(batch["task"])
        drop = torch.rand(b, generator=gen) < self.cfg.loss.text_dropout
        prompts = ["" if d else p for p, d in zip(batch["prompt"], drop.tolist())]
        th, tw = self.token_grid(batch)
        t = sample_timesteps(b, th * tw, self.cfg.loss.timestep_sampling, self.cfg.loss.shift, generator=gen)
        plan = self.plan_step(batch, t, gen, prompts)
        loss, logs, routing = self.device_step(batch, plan)
        self._check_finite(loss, batch)
        self.log_dict(logs, prog_bar=False, batch_size=b)
        self.log("loss", loss.detach(), prog_bar=True, logger=False, batch_size=b)
        # the routing goes to RoutingStatsCallback through Lightning's `outputs`, still on the device: the callback
        # copies it to the host only on the steps it logs (no per-step device-to-host sync here)
        return {"loss": loss, "routing": RoutingRecord([(d.index.detach(), d.probs.detach()) for d in routing],
                                                       list(batch["task"]), t)}

    def device_step(self, batch: dict[str, Any], plan: StepPlan) -> tuple[Tensor, dict[str, Tensor], list]:
        """Loss (task + veteran), the step's logged values (device tensors) and the routing; no host sync."""
        per_sample, routing = self.device_losses(batch, plan)
        task_loss = per_sample.mean()
        loss = task_loss
        logs = {"train/loss_task": task_loss.detach()}
        vcfg = self.cfg.veteran
        if routing and self.transformer.num_experts > 1:
            vet, u_hard, u_soft = veteran_loss(routing, self.newest, vcfg.alpha, vcfg.rho, vcfg.estimator)
            if vcfg.alpha > 0:
                loss = loss + vet
            logs.update({"train/loss_veteran": vet.detach(), "train/U_t": u_hard, "train/U_soft": u_soft})
        logs["train/loss"] = loss.detach()
        tasks = sorted(set(batch["task"]))
        members = torch.tensor([[x == task for x in batch["task"]] for task in tasks], dtype=per_sample.dtype)
        means = (self.to_device(members) @ per_sample.detach()) / self.to_device(members.sum(dim=1))
        logs.update({f"train/loss_{task}": means[k] for k, task in enumerate(tasks)})
        return loss, logs, routing

    def _check_finite(self, loss: Tensor, batch: dict[str, Any]) -> None:
        """Raise FloatingPointError for a non-finite loss. On the CPU at once; on a GPU the flag is copied to the
        host asynchronously and read when it has arrived (a step or two later), or at once on logging steps, so
        the step itself never waits for the device."""
        if loss.device.type != "cuda":
            if not torch.isfinite(loss):
                self._raise_non_finite(float(loss), self.global_step, batch.get("key", []))
            return
        # a pinned host buffer: a device-to-host copy into pageable memory would block until the step is done
        flag = torch.empty((), dtype=torch.bool, pin_memory=True)
        flag.copy_(~torch.isfinite(loss.detach()), non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._pending_finite.append((self.global_step, flag, event, list(batch.get("key", []))[:4]))
        self._drain_finite(wait=self.global_step % max(self.cfg.train.log_every, 1) == 0)

    def _drain_finite(self, wait: bool) -> None:
        """Read the finite-loss flags that have arrived (all of them with ``wait``); raise for a non-finite one."""
        while self._pending_finite and (wait or self._pending_finite[0][2].query()):
            step, flag, event, keys = self._pending_finite.popleft()
            event.synchronize()
            if bool(flag):
                self._raise_non_finite(float("nan"), step, keys)

    def on_train_end(self) -> None:
        """The last steps' flags (after the last logging step) are read before the run counts as finished."""
        self._drain_finite(wait=True)

    def _raise_non_finite(self, value: float, step: int, keys: Sequence[str]) -> None:
        raise FloatingPointError(
            f"step '{self.cfg.name}': non-finite loss {value} at global step {step} "
            f"(batch keys {list(keys)[:4]})"
        )  # run_step adds where the last good state is (checkpoints/last-good.ckpt or last.ckpt)

    @torch.no_grad()
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Fixed-timestep (stratified) loss per task on held-out data: comparable across steps (forgetting)."""
        b = len(batch["task"])
        totals = torch.zeros(b, device=self.device)
        for j, tv in enumerate(VAL_TIMESTEPS):
            gen = torch.Generator().manual_seed(10_000 * batch_idx + j)
            per_sample, _ = self.diffusion_losses(batch, torch.full((b,), tv), gen, list(batch["prompt"]))
            totals += per_sample
        totals /= len(VAL_TIMESTEPS)
        self.log("val/loss", totals.mean(), batch_size=b, sync_dist=True)
        for task in sorted(set(batch["task"])):
            mask = torch.tensor([x == task for x in batch["task"]], device=totals.device)
            self.log(f"val/loss_{task}", totals[mask].mean(), batch_size=int(mask.sum()), sync_dist=True)

    # ------------------------------------------------------------------ export
    def export(self, directory, ema: Optional["AdapterEMA"] = None) -> None:
        """Write the final adapters (and the trained base, for the tiny/small base pre-training) to `directory`;
        with an updated ``ema``, also its averaged adapters as ``adapters_ema.safetensors``."""
        from pathlib import Path

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.cfg.train.train_base:
            self.transformer.base.save_pretrained(directory / "transformer")
        if self.transformer.adapters() or self.transformer.peft_source_lora:
            self.transformer.save_adapters(directory)
        if ema is not None and ema.updates:
            write_adapters(directory, ema.adapter_state_dict(), ema_metadata(self.transformer.adapter_metadata(), ema),
                           file_name=EMA_ADAPTER_FILE)
