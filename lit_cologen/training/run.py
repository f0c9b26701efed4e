"""Running one step and the curriculum: trainer construction, resume, export, skip-if-finished.

A step's folder::

    <output_dir>/config.yaml            the resolved StepConfig
    <output_dir>/checkpoints/last.ckpt  adapters + optimizer + scheduler + loop state (atomic; never the base)
    <output_dir>/tb/                    TensorBoard logs
    <output_dir>/samples/               sample grids
    <output_dir>/final/                 adapters.safetensors (+ transformer/ for the tiny/small base step), done.json

A finished step (final/done.json) is not re-run; an interrupted one resumes from checkpoints/last.ckpt.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import OmegaConf

from lit_cologen.training.callbacks import RoutingStatsCallback, SampleGridCallback, ThroughputCallback
from lit_cologen.config import ConfigError
from lit_cologen.training.config import StepConfig, load_curriculum
from lit_cologen.training.module import CoLoGenModule
from lit_cologen.training.run_folder import check_run_folder

log = logging.getLogger("lit_cologen.train")
DONE_FILE = "done.json"
LAST_GOOD_FILE = "last-good.ckpt"
TMP_MARK = ".tmp-"  # checkpoint temporary files: .<name>.tmp-<pid>


class _RecordingWriter:
    """A file wrapper for torch.save that remembers the OSError of a failed write."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        try:
            self.f.flush()
        except OSError as err:
            self.error = err
            raise


class AtomicCheckpointIO(CheckpointIO):
    """torch.save to a temporary file, fsync, then rename: a kill never leaves a truncated checkpoint.
    Loading uses `weights_only=True` (checkpoints hold tensors and plain containers only)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
        writer = None
        try:
            with open(tmp, "wb") as f:
                writer = _RecordingWriter(f)
                torch.save(checkpoint, writer)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as err:
            tmp.unlink(missing_ok=True)
            # torch.save turns a failed write (disk full, ...) into an opaque RuntimeError: report the OS error
            os_err = err if isinstance(err, OSError) else getattr(writer, "error", None)
            if os_err is not None and os_err.errno is not None:
                raise OSError(os_err.errno, f"cannot write checkpoint {path}: {os_err.strerror or os_err} (the "
                                            f"previous checkpoint there, if any, is intact)") from err
            raise

    def load_checkpoint(self, path, map_location: Optional[Any] = None, weights_only: Optional[bool] = True) -> dict[str, Any]:
        try:
            return torch.load(path, map_location=map_location or "cpu", weights_only=True)
        except pickle.UnpicklingError as err:  # never retried with weights_only=False: that would run its code
            lines = str(err).splitlines()
            detail = next((x.strip() for x in lines if "WeightsUnpickler error" in x), lines[0] if lines else "")
            raise ValueError(
                f"checkpoint {path} holds objects other than tensors and plain containers, so it was not loaded "
                f"(checkpoints are read with torch.load(weights_only=True) only; lit-cologen checkpoints never hold "
                f"such objects). Move it away to restart the step. {detail[:300]}"
            ) from None
        except RuntimeError as err:  # not a torch zip archive: truncated or corrupt
            raise ValueError(f"checkpoint {path} is truncated or corrupt ({str(err).splitlines()[0][:200]}); "
                             f"move it away to restart the step") from err

    def remove_checkpoint(self, path) -> None:
        Path(path).unlink(missing_ok=True)


def remove_stale_checkpoint_tmp(directory: Path) -> list[Path]:
    """Delete the temporary files a killed `AtomicCheckpointIO.save_checkpoint` left in `directory` (run before
    training starts, when no save is in flight); returns them."""
    stale = sorted(directory.glob(f".*{TMP_MARK}*")) if directory.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
        log.info("removed %s (an interrupted checkpoint write)", p)
    return stale


class LastGoodCheckpoint(L.Callback):
    """On a non-finite loss (FloatingPointError) write `checkpoints/last-good.ckpt`: the state after the last
    finished step (the failing step raised before its update). Skipped when the weights themselves are already
    non-finite (nothing good to save) and on more than one process (the periodic checkpoint is then the last good).
    `outcome` says what happened, for the error message."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.outcome: Optional[str] = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, FloatingPointError):
            return
        if trainer.world_size != 1:
            self.outcome = "not saved on several processes"
            return
        if not all(torch.isfinite(p).all() for p in pl_module.parameters() if p.requires_grad):
            self.outcome = "the weights were already non-finite, so nothing new was saved"
            return
        try:
            trainer.save_checkpoint(self.path, weights_only=False)
        except Exception as err:  # noqa: BLE001 - the original error is the one to report
            log.exception("could not write %s", self.path)
            self.outcome = f"writing {self.path} failed ({err})"
            return
        self.outcome = f"the last good state (global step {trainer.global_step}) was saved to {self.path}"


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

    from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock, FluxTransformerBlock
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
            if trainer.logger is not None:
                trainer.logger.log_hyperparams({"global_batch": actual, "world_size": trainer.world_size,
                                                "accumulate": trainer.accumulate_grad_batches})


def build_trainer(cfg: StepConfig, extra_callbacks: Sequence[L.Callback] = (), enable_progress: bool = True,
                  sample_batch: Optional[dict] = None, module: Optional[CoLoGenModule] = None) -> L.Trainer:
    """The Lightning Trainer of a step (``module``: the step's module, needed for the FSDP wrap policy)."""
    out = Path(cfg.output_dir)
    t = cfg.train
    callbacks: list[L.Callback] = [
        ModelCheckpoint(dirpath=out / "checkpoints", filename="last", every_n_train_steps=t.checkpoint_every,
                        save_top_k=1, save_last=False, enable_version_counter=False),
        GlobalBatchCheck(), RoutingStatsCallback(every=max(t.log_every, 1)), ThroughputCallback(every=t.log_every),
        LearningRateMonitor(logging_interval="step"), LastGoodCheckpoint(out / "checkpoints" / LAST_GOOD_FILE),
    ]
    if enable_progress:
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
        logger=TensorBoardLogger(str(out), name="tb", version=""),
        callbacks=callbacks, log_every_n_steps=t.log_every, enable_progress_bar=enable_progress,
        val_check_interval=t.val_every if t.val_every else None, check_val_every_n_epoch=None,
        limit_val_batches=t.val_batches if t.val_every else 0, num_sanity_val_steps=0,
        plugins=[AtomicCheckpointIO()], enable_model_summary=False, use_distributed_sampler=False,
        default_root_dir=str(out),
    )


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def run_step(cfg: StepConfig, datamodule=None, extra_callbacks: Sequence[L.Callback] = (),
             enable_progress: bool = True, extend: bool = False) -> Path:
    """Train one step to `train.max_steps` (resuming if interrupted) and export `final/`. Returns final/.

    A folder written by another configuration is refused before anything is written (``check_run_folder``);
    ``extend`` trains a finished or interrupted step further when only a larger ``train.max_steps`` differs.
    """
    out = Path(cfg.output_dir)
    final = out / "final"
    extending = check_run_folder(cfg, extend=extend)
    if (final / DONE_FILE).is_file() and not extending:
        log.info("step '%s' already finished (%s): skipped", cfg.name, final / DONE_FILE)
        return final
    if extending and not (out / "checkpoints" / "last.ckpt").is_file():
        raise ConfigError(f"--extend: {out / 'checkpoints' / 'last.ckpt'} not found, so there is nothing to train "
                          "further from; use a new output_dir")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    module = CoLoGenModule(cfg)
    datamodule = datamodule if datamodule is not None else build_datamodule(cfg)
    sample_batch = None
    if cfg.train.sample_every:
        sample_batch = next(iter(_first_val_loader(datamodule)))
    trainer = build_trainer(cfg, extra_callbacks, enable_progress, sample_batch, module=module)
    last = out / "checkpoints" / "last.ckpt"
    remove_stale_checkpoint_tmp(last.parent)
    ckpt_path = str(last) if last.is_file() else None
    if ckpt_path:
        log.info("step '%s': resuming from %s", cfg.name, ckpt_path)
    started = time.time()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except FloatingPointError as err:
        good = next(c for c in trainer.callbacks if isinstance(c, LastGoodCheckpoint))
        where = good.outcome or "no last-good checkpoint was written"
        if "saved to" not in where:
            where += (f"; the last periodic checkpoint {last} holds the last good state" if last.is_file()
                      else "; no checkpoint of a good state exists")
        raise FloatingPointError(f"{err}; {where}") from err
    if trainer.global_step < cfg.train.max_steps:
        raise RuntimeError(f"step '{cfg.name}' stopped at global step {trainer.global_step} < {cfg.train.max_steps}; "
                           f"rerun to resume from {last}")
    if trainer.is_global_zero:
        tmp = out / ".final.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        module.export(tmp)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
        _write_json_atomic(tmp / DONE_FILE, {"step": cfg.name, "global_step": trainer.global_step,
                                             "num_experts": module.transformer.num_experts,
                                             "seconds": round(time.time() - started, 1), "metrics": metrics})
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    return final


def _first_val_loader(datamodule):
    datamodule.setup("validate")
    return datamodule.val_dataloader()


def run_curriculum(path: str | Path, overrides: Sequence[str] = (), enable_progress: bool = True,
                   only: Optional[Sequence[str]] = None, step_scale: float = 1.0) -> list[Path]:
    """Run the curriculum's steps in order (``only``: these step names); finished steps are skipped, an
    interrupted one resumes. Returns the ``final/`` folders of the steps run. An unknown name in ``only`` is an error
    listing the curriculum's steps."""
    spec, steps = load_curriculum(path, overrides, step_scale=step_scale)
    names = [cfg.name for cfg in steps]
    unknown = [n for n in (only or []) if n not in names]
    if unknown:
        raise ConfigError(f"--only: no step named {unknown} in curriculum '{spec.name}' ({path}); its steps are "
                          f"{names}")
    finals = []
    for cfg in steps:
        if only and cfg.name not in only:
            continue
        log.info("curriculum '%s': step '%s' (%d experts) -> %s", spec.name, cfg.name, cfg.model.prw.num_experts,
                 cfg.output_dir)
        finals.append(run_step(cfg, enable_progress=enable_progress))
    return finals
