"""The Lightning Trainer of a step: strategy (DDP / FSDP wrap policy), callbacks, loggers, checkpointing, quiet logs."""

from __future__ import annotations

import logging
import re
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import (
    LearningRateMonitor,
    ModelCheckpoint,
    TQDMProgressBar,
)

from lit_cologen.training.callbacks import (
    ProgressReport,
    RoutingStatsCallback,
    SampleGridCallback,
    ThroughputCallback,
)
from lit_cologen.training.checkpoints import (
    LAST_GOOD_FILE,
    AtomicCheckpointIO,
    LastGoodCheckpoint,
)
from lit_cologen.training.config import StepConfig
from lit_cologen.training.ema import AdapterEMA
from lit_cologen.training.interrupt import InterruptCheckpoint
from lit_cologen.training.loggers import ConfigToLoggers, FinishLoggers, build_loggers
from lit_cologen.training.module import CoLoGenModule

log = logging.getLogger("lit_cologen.train")


def build_datamodule(cfg: StepConfig):
    """The step's LightningDataModule (shards or the procedural Shapes-5 stream, per `data` config)."""
    from lit_cologen.data.datamodule import CoLoGenDataModule

    return CoLoGenDataModule(cfg.data)


def fsdp_wrap_policy(module: Optional[CoLoGenModule] = None):
    """FSDP auto-wrap policy: every FLUX block, every PRW adapter (experts + router) and every parameter-holding
    top-level module of the base (embedders, final norm / projection) is its own unit, so that the root unit holds
    no parameter. (A root unit stays unsharded between forward and backward; with ``use_orig_params`` its frozen
    parameters then went missing from the full state dict, which broke checkpointing on the GPU.)"""
    import functools

    from diffusers.models.transformers.transformer_flux import (
        FluxSingleTransformerBlock,
        FluxTransformerBlock,
    )
    from torch.distributed.fsdp.wrap import lambda_auto_wrap_policy

    from lit_cologen.models.prw import PRWAdapter

    units = (FluxTransformerBlock, FluxSingleTransformerBlock, PRWAdapter)
    top_level: set[int] = set()
    if module is not None:
        top_level = {id(m) for m in module.transformer.base.children()
                     if not isinstance(m, torch.nn.ModuleList) and next(m.parameters(), None) is not None}
    return functools.partial(lambda_auto_wrap_policy, lambda_fn=lambda m: isinstance(m, units) or id(m) in top_level)


def _strategy(cfg: StepConfig, module: Optional[CoLoGenModule] = None):
    if cfg.train.strategy == "fsdp":
        from lightning.pytorch.strategies import FSDPStrategy

        return FSDPStrategy(auto_wrap_policy=fsdp_wrap_policy(module), use_orig_params=True, state_dict_type="full",
                            sharding_strategy="FULL_SHARD")
    if cfg.train.strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(find_unused_parameters=True)  # blocks without source tokens leave experts unused
    return cfg.train.strategy


class GlobalBatchCheck(L.Callback):
    """Global batch = per-device batch x world size x accumulation: computed, asserted, logged."""

    def on_fit_start(self, trainer, pl_module) -> None:
        t = pl_module.cfg.train
        per_device = pl_module.cfg.data.batch_size
        actual = per_device * trainer.world_size * trainer.accumulate_grad_batches
        msg = (f"global batch = per-device {per_device} x world {trainer.world_size} x accumulate "
               f"{trainer.accumulate_grad_batches} = {actual}")
        if actual != t.global_batch:
            raise ValueError(f"{msg}, but config train.global_batch = {t.global_batch} "
                             f"(check train.devices / train.num_nodes against the launched processes)")
        if trainer.is_global_zero:
            log.info(msg)
            for logger in trainer.loggers:
                logger.log_hyperparams({"global_batch": actual, "world_size": trainer.world_size,
                                        "accumulate": trainer.accumulate_grad_batches})


class _DropLightningAdverts(logging.Filter):
    """Drops Lightning's "💡 Tip: For seamless cloud ..." INFO lines (adverts for litlogger / litmodels, logged at
    every Trainer construction): they say nothing about this run."""

    PATTERN = re.compile(r"^💡 Tip: For seamless cloud (logging|uploads)")

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.PATTERN.match(str(record.msg))


# (message regex, category, module regex of where Lightning / torch emits it): each is harmless for this project
_HARMLESS_WARNINGS = (
    # the datamodule's IterableDataset has __len__ (fixed-length epochs) and each worker draws its own share
    # (utils.dist.dist_info + worker seeds), so the length is exact with any number of workers
    (r"Your `IterableDataset` has `__len__` defined", UserWarning, r"lightning\.pytorch"),
    # resuming mid-epoch: the datamodule restores its own position (train_dataloader: resume_at the consumed
    # batches, and its state_dict), which is what the resume tests check; Lightning cannot see that
    (r"You're resuming from a checkpoint that ended before the epoch ended and your dataloader is not resumable",
     UserWarning, r"lightning\.pytorch"),
    # short epochs (small data.samples_per_epoch) only: metrics are logged per step, never per epoch
    (r"The number of training batches \(\d+\) is smaller than the logging interval", UserWarning,
     r"lightning\.pytorch"),
    # the frozen base loaded by diffusers' from_pretrained is in eval mode; FLUX blocks have no mode-dependent
    # layer (dropout 0, no batch norm), and _check_train_mode (run at train start) warns if anything else is
    (r"Found \d+ module\(s\) in eval mode at the start of training", UserWarning, r"lightning\.pytorch"),
    # resuming writes checkpoints/last.ckpt into the folder that holds it: that is the point
    (r"Checkpoint directory .* exists and is not empty", UserWarning, r"lightning\.pytorch"),
    # Lightning's own pytree helper still builds torch's deprecated LeafSpec; same behaviour, nothing for us to do
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"lightning\.pytorch"),
)


def quiet_known_library_warnings() -> None:
    """Silence, by message and category, the library warnings and adverts that are known to be harmless for a
    lit-cologen run (listed with the reason in ``_HARMLESS_WARNINGS``); every other warning still shows. Idempotent
    (``warnings.filterwarnings`` replaces an identical filter)."""
    for message, category, module in _HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLightningAdverts) for f in logger.filters):
            logger.addFilter(_DropLightningAdverts())


class _CheckTrainMode(L.Callback):
    """At train start: only the frozen base may be in eval mode (it is silenced in ``_HARMLESS_WARNINGS``); any
    other module in eval mode (an adapter, a router: router noise is train-only) is logged as a warning."""

    def on_train_start(self, trainer, pl_module) -> None:
        bad = [n for n, m in pl_module.named_modules() if not m.training and n != "transformer.base"
               and not n.startswith("transformer.base.")]
        if bad and trainer.is_global_zero:
            log.warning("%d module(s) outside the frozen base are in eval mode at the start of training (e.g. %s)",
                        len(bad), bad[:3])


def console_is_terminal() -> bool:
    """True when both stdout and stderr are terminals (the tqdm bar); False for logs (SLURM), pipes, files."""
    return all(getattr(stream, "isatty", lambda: False)() for stream in (sys.stdout, sys.stderr))


def build_trainer(cfg: StepConfig, extra_callbacks: Sequence[L.Callback] = (), enable_progress: bool = True,
                  sample_batch: Optional[dict] = None, module: Optional[CoLoGenModule] = None) -> L.Trainer:
    """The Lightning Trainer of a step (``module``: the step's module, needed for the FSDP wrap policy).

    Console: the tqdm bar when ``enable_progress`` and the console is a terminal (``console_is_terminal``),
    otherwise a one-line report every ``train.log_every`` steps (``ProgressReport``). Known harmless library
    warnings are silenced (``quiet_known_library_warnings``). SIGINT / SIGTERM save and stop at the end of the
    current step (``InterruptCheckpoint``). Loggers: ``train.loggers`` (``loggers.build_loggers``), each given the
    resolved config (``ConfigToLoggers``); none with ``train.loggers=[]``.
    """
    quiet_known_library_warnings()
    out = Path(cfg.output_dir)
    t = cfg.train
    bar = enable_progress and console_is_terminal()
    callbacks: list[L.Callback] = [
        ModelCheckpoint(dirpath=out / "checkpoints", filename="last", every_n_train_steps=t.checkpoint_every,
                        save_top_k=1, save_last=False, enable_version_counter=False),
        GlobalBatchCheck(), _CheckTrainMode(), RoutingStatsCallback(every=max(t.log_every, 1)),
        ThroughputCallback(every=t.log_every), LearningRateMonitor(logging_interval="step"),
        LastGoodCheckpoint(out / "checkpoints" / LAST_GOOD_FILE), InterruptCheckpoint(out / "checkpoints" / "last.ckpt"),
        ProgressReport(every=t.log_every, global_batch=t.global_batch, lines=not bar, logger=log),
        ConfigToLoggers(), FinishLoggers(),
    ]
    if t.ema is not None:
        callbacks.append(AdapterEMA(t.ema.decay, t.ema.start_step, t.ema.every))
    if bar:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, t.log_every // 2)))
    if t.sample_every and sample_batch is not None:
        callbacks.append(SampleGridCallback(sample_batch, t.sample_every, t.sample_steps, out / "samples"))
    callbacks.extend(extra_callbacks)
    if str(t.accelerator) in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        torch.backends.cuda.enable_cudnn_sdp(False)
        log.info("cuDNN SDPA disabled: its backward failed for these shapes on H200 (DESIGN.md section 4)")
    return L.Trainer(
        max_steps=t.max_steps, accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
        strategy=_strategy(cfg, module), precision=t.precision, accumulate_grad_batches=t.accumulate,
        logger=build_loggers(cfg, out) or False,
        callbacks=callbacks, log_every_n_steps=t.log_every, enable_progress_bar=bar,
        val_check_interval=t.val_every if t.val_every else None, check_val_every_n_epoch=None,
        limit_val_batches=t.val_batches if t.val_every else 0, num_sanity_val_steps=0,
        plugins=[AtomicCheckpointIO()], enable_model_summary=False, use_distributed_sampler=False,
        default_root_dir=str(out),
    )
