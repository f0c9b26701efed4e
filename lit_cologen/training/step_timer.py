"""Time one training step of a StepConfig through the real CoLoGenModule and Lightning Trainer.

One home for what ``benchmarks/train_step.py`` and ``cologen curriculum --estimate --measure`` time. The base is
random-init (the preset's shape, built directly on the device in the step's base dtype); the batches are
pre-encoded latents of the configured shape with a filled text-embedding cache, as with `cologen data encode`, so
neither the VAE nor the text encoders are built. What is timed is one optimizer step as `cologen train` runs it on
one device, at ``data.batch_size`` per micro-batch without accumulation: forward of source + noisy + text tokens
through the routed experts, flow-matching + veteran loss, backward (``train.checkpointing``), gradient clipping,
AdamW on the fp32 experts + router, and Lightning's loop and callbacks around it. ``train.compile`` /
``train.fp8`` / ``model.base_quantization`` are applied by the module as in training. The model is in the state of
the step: ``model.prw.num_experts`` experts, the newest trainable, the veterans frozen.
"""

from __future__ import annotations

import copy
import gc
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Optional

import lightning as L
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, IterableDataset

from lit_cologen.models.factory import build_base_transformer
from lit_cologen.models.presets import get_preset
from lit_cologen.models.transformer import CoLoGenTransformer
from lit_cologen.training.config import StepConfig
from lit_cologen.training.module import CoLoGenModule, checkpointing_policy
from lit_cologen.training.trainer import build_trainer
from lit_cologen.utils.dtypes import dtype_from_name


@dataclass
class StepTiming:
    """What :func:`time_training_step` measured (times in ms of one optimizer step = one micro-batch)."""

    step_ms_median: float
    step_ms_min: float
    steps_ms: list[float]  # every step, the untimed warm-up steps first
    samples_per_s: float  # data.batch_size / median step time
    peak_gib: Optional[float]  # peak CUDA memory allocated (None off CUDA)
    tokens_per_sample: int  # noisy + source + text tokens
    frozen_components_built: dict[str, bool]  # {"codec": ..., "text": ...}: both False when nothing leaked
    build_s: float
    fit_s: float
    batch: int
    device: str
    device_name: str
    precision: str
    strategy: str
    checkpointing: str
    trainable_params: int
    losses: list[float]  # the training loss of every step (warm-up first): equal seeds give equal batches and init

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class EncodedBatches(IterableDataset):
    """The same encoded batch forever: latents (B, C, h, w) as `cologen data encode` writes them."""

    def __init__(self, batch: dict):
        self.batch = batch

    def __iter__(self):
        while True:
            yield self.batch


class StepTimes(L.Callback):
    """Wall time of every optimizer step (device synchronised at both ends)."""

    def __init__(self, device: torch.device):
        self.device, self.times, self._t0 = device, [], None
        self.losses: list[torch.Tensor] = []  # device tensors, read after the run (no sync inside the timing)

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._sync()
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._sync()
        self.times.append((time.perf_counter() - self._t0) * 1000.0)
        self.losses.append(outputs["loss"].detach())


def resolve_device(device: Any = None) -> torch.device:
    """``device`` as a torch.device; None: cuda when available, else cpu."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def timing_config(cfg: StepConfig, steps: int, warmup: int, device: Any = None,
                  strategy: Optional[str] = None) -> StepConfig:
    """A copy of ``cfg`` that trains ``warmup + steps`` optimizer steps of one micro-batch (``data.batch_size``) on one
    device, into a temporary folder, with no checkpoints, validation or sample grids. On the CPU the precision is
    32-true. ``strategy`` (default: fsdp when the step says fsdp, else auto: DDP on one device only adds a process
    group)."""
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    device = resolve_device(device)
    gpu = device.type == "cuda"
    out = copy.deepcopy(cfg)
    out.name, out.output_dir = f"{cfg.name}-timing", tempfile.mkdtemp(prefix="cologen-step-timer-")
    out.init_from, out.add_expert = None, False  # the experts are built in place (time_training_step)
    out.data.encoded = False  # synthetic encoded batches, no manifest
    t = out.train
    t.max_steps, t.global_batch, t.accumulate, t.devices, t.num_nodes = warmup + steps, out.data.batch_size, 1, 1, 1
    t.accelerator = "gpu" if gpu else "cpu"
    if not gpu:
        t.precision = "32-true"
    t.strategy = strategy or ("fsdp" if cfg.train.strategy == "fsdp" else "auto")
    t.checkpoint_every, t.log_every, t.val_every, t.sample_every = 10**9, 1, 0, 0
    t.text_cache_dir = None
    return out


def _base_dtype(cfg: StepConfig) -> torch.dtype:
    """The module's rule (``CoLoGenModule._base_dtype``): ``train.base_dtype``; auto = bf16 under bf16 mixed precision
    for a frozen base, else fp32."""
    if cfg.train.base_dtype != "auto":
        return dtype_from_name(cfg.train.base_dtype)
    return torch.bfloat16 if cfg.train.precision.startswith("bf16") and not cfg.train.train_base else torch.float32


def tokens_per_sample(cfg: StepConfig) -> int:
    """Noisy-image tokens + source tokens (when ``train.use_source``) + text tokens of one sample."""
    preset = get_preset(cfg.model.preset)
    side = cfg.data.resolution // (preset.pixels_per_token // 2) // 2  # token-grid side (latents patchified 2x2)
    return side * side * (2 if cfg.train.use_source else 1) + preset.text_max_length


def time_training_step(cfg: StepConfig, steps: int = 5, warmup: int = 2, device: Any = None,
                       strategy: Optional[str] = None, seed: int = 0) -> StepTiming:
    """Train ``warmup + steps`` optimizer steps of ``cfg``'s shapes (see the module docstring) and time the last
    ``steps``. ``cfg`` is not changed (:func:`timing_config` makes the copy that runs)."""
    device = resolve_device(device)
    gpu = device.type == "cuda"
    run_cfg = timing_config(cfg, steps, warmup, device, strategy)
    try:
        return _time(run_cfg, steps, warmup, device, gpu, seed)
    finally:
        shutil.rmtree(run_cfg.output_dir, ignore_errors=True)
        gc.collect()
        if gpu:
            torch.cuda.empty_cache()


def _time(cfg: StepConfig, steps: int, warmup: int, device: torch.device, gpu: bool, seed: int) -> StepTiming:
    preset = get_preset(cfg.model.preset)
    batch_size = cfg.data.batch_size
    built = time.perf_counter()
    torch.manual_seed(seed)  # the experts' init: two timed configurations start from the same weights
    base = build_base_transformer(cfg.model.preset, torch_dtype=_base_dtype(cfg), seed=seed, device=device)
    prw = OmegaConf.to_object(OmegaConf.structured(cfg.model.prw))
    experts = prw.num_experts
    prw.num_experts = 1
    model = CoLoGenTransformer(base, prw)
    if prw.blocks != "none":
        for k in range(1, experts):  # veterans frozen, the newest trains (as after init_from + add_expert)
            last = k == experts - 1
            model.add_expert(rank=prw.new_rank if last else None, alpha=prw.new_alpha if last else None)
    model.to(device)
    module = CoLoGenModule(cfg, transformer=model)
    build_s = time.perf_counter() - built

    tcfg = base.config
    side = cfg.data.resolution // (preset.pixels_per_token // 2)  # latent side
    channels = tcfg.in_channels // 4
    g = torch.Generator().manual_seed(seed)
    latent_dtype = torch.bfloat16 if gpu and cfg.train.precision.startswith("bf16") else torch.float32
    mk = lambda *s: torch.randn(*s, generator=g).to(latent_dtype)  # noqa: E731
    prompts = [f"timing prompt {i}" for i in range(batch_size)]
    for p in prompts + [""]:
        module.text_cache.put(p, mk(preset.text_max_length, tcfg.joint_attention_dim), mk(tcfg.pooled_projection_dim))
    tasks = list(cfg.data.tasks)
    batch = {
        "key": [f"k{i}" for i in range(batch_size)], "task": [tasks[i % len(tasks)] for i in range(batch_size)],
        "prompt": prompts, "raw_prompt": prompts, "cond_type": [""] * batch_size, "meta": [{}] * batch_size,
        "target_latent": mk(batch_size, channels, side, side), "source_latent": mk(batch_size, channels, side, side),
    }
    timer = StepTimes(device)
    trainer = build_trainer(cfg, extra_callbacks=[timer], enable_progress=False, module=module)
    if gpu:
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    trainer.fit(module, train_dataloaders=DataLoader(EncodedBatches(batch), batch_size=None))
    fit_s = time.perf_counter() - started
    timed = timer.times[warmup:]
    if len(timed) < steps:
        raise RuntimeError(f"step timer: {len(timer.times)} steps ran, expected {warmup + steps}")
    median = statistics.median(timed)
    return StepTiming(
        step_ms_median=round(median, 1), step_ms_min=round(min(timed), 1),
        steps_ms=[round(t, 1) for t in timer.times], samples_per_s=round(batch_size * 1000 / median, 2),
        peak_gib=round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if gpu else None,
        tokens_per_sample=tokens_per_sample(cfg), frozen_components_built=dict(module.frozen_components_loaded),
        build_s=round(build_s, 1), fit_s=round(fit_s, 1), batch=batch_size, device=str(device),
        device_name=torch.cuda.get_device_name(device) if gpu else "cpu", precision=cfg.train.precision,
        strategy=cfg.train.strategy, checkpointing=checkpointing_policy(cfg),
        trainable_params=sum(p.numel() for p in module.trainable_parameters() if p.requires_grad),
        losses=[round(float(x), 6) for x in timer.losses])


__all__ = ["StepTiming", "time_training_step", "timing_config", "tokens_per_sample"]
