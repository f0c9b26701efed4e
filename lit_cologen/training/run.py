"""Running one step and the curriculum: trainer construction, resume, export, skip-if-finished.

A step's folder::

    <output_dir>/config.yaml            the resolved StepConfig
    <output_dir>/checkpoints/last.ckpt  adapters + optimizer + scheduler + loop state (atomic; never the base)
    <output_dir>/tb/                    TensorBoard logs
    <output_dir>/samples/               sample grids
    <output_dir>/final/                 adapters.safetensors (+ transformer/ for the tiny/small base step), done.json

A finished step (final/done.json) is not re-run; an interrupted one resumes from checkpoints/last.ckpt. Ctrl-C
(SIGINT) and SIGTERM (SLURM preemption) write checkpoints/last.ckpt at the end of the current optimizer step and
stop (``InterruptCheckpoint``, ``TrainingInterrupted``): rerunning the same command resumes from that step.

Every run ends with a summary (``format_summary``: steps, losses, time, samples/s, skipped samples, outputs, the
next command); ``plan_curriculum`` / ``format_plan`` describe what a curriculum would do without training.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shlex
import shutil
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import lightning as L
import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import OmegaConf

from lit_cologen.training.callbacks import (
    ProgressReport, RoutingStatsCallback, SampleGridCallback, ThroughputCallback, format_duration,
)
from lit_cologen.config import ConfigError
from lit_cologen.training.config import StepConfig, load_curriculum
from lit_cologen.training.module import CoLoGenModule
from lit_cologen.training.run_folder import check_run_folder, saved_config_differences
from lit_cologen.utils.atomic import atomic_write_json

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


class TrainingInterrupted(SystemExit):
    """A step stopped by SIGINT (Ctrl-C) or SIGTERM. ``saved_step``: the global step written to ``checkpoint`` at
    the signal (None: nothing was written then, e.g. a second Ctrl-C); ``resume_step``: the step a rerun resumes
    from (None: it starts over). ``exit_code`` (= ``code``): 128 + the signal number (130 for SIGINT, 143 for
    SIGTERM); ``str()``: the one-line message.

    Like Lightning's ``SIGTERMException`` it is a ``SystemExit``: an ``except Exception`` (e.g. a sweep's per-point
    error handling) does not swallow an interruption, and uncaught it ends the process with ``exit_code``."""

    def __init__(self, step_name: str, signum: int, checkpoint: Path, saved_step: Optional[int],
                 resume_step: Optional[int], max_steps: int):
        self.step_name, self.signum, self.checkpoint = step_name, int(signum), Path(checkpoint)
        self.saved_step, self.resume_step, self.max_steps = saved_step, resume_step, max_steps
        self.exit_code = 128 + self.signum
        name = signal.Signals(self.signum).name
        if saved_step is not None:
            what = (f"saved {self.checkpoint} at step {saved_step}/{max_steps}; rerun the same command to resume "
                    f"from step {saved_step}")
        elif resume_step is not None:
            what = (f"nothing new was saved; rerun the same command to resume from step {resume_step} "
                    f"({self.checkpoint})")
        else:
            what = "nothing was saved; rerunning the same command starts the step over"
        self.message = f"step '{step_name}' interrupted ({name}): {what}"
        super().__init__(self.exit_code)

    def __str__(self) -> str:
        return self.message


class InterruptCheckpoint(L.Callback):
    """SIGINT (Ctrl-C) and SIGTERM stop training at the end of the current optimizer step with
    ``checkpoints/last.ckpt`` written there (``trainer.save_checkpoint``: the same file, writer and hook point as the
    periodic ``ModelCheckpoint``, so a rerun resumes exactly from that step).

    SIGTERM: Lightning's own handler sets ``trainer.received_sigterm``; at the next optimizer-step boundary this
    callback saves and Lightning's loop then ends with ``SIGTERMException``. SIGINT: while training, this callback's
    handler only records the request (a second Ctrl-C aborts at once, without saving: Lightning's KeyboardInterrupt
    path); at the next boundary it saves and sets ``trainer.should_stop``. On several processes the decision is
    reduced over all ranks (``strategy.reduce_boolean_decision``) so that all save and stop at the same step.

    A SIGTERM that Lightning acts on inside an accumulation group (``train.accumulate`` > 1, the loop stops after
    the current micro-batch) leaves no consistent state to save: nothing is written, the checkpoint of the last
    boundary (if any) stays the resume point, and ``TrainingInterrupted`` says so. ``signum``, ``saved_step`` and
    ``aborted`` feed ``TrainingInterrupted``.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.signum: Optional[int] = None
        self.saved_step: Optional[int] = None
        self.aborted = False  # a second Ctrl-C (KeyboardInterrupt): stopped without saving
        self._sigint_requested = False
        self._original_sigint = None
        self._boundary_step: Optional[int] = None  # global step of the last optimizer-step boundary
        self._at_boundary = False

    # ---------------------------------------------------------------- the SIGINT handler (main thread only)
    def _on_sigint(self, signum, frame) -> None:
        if self._sigint_requested:  # second Ctrl-C: stop now, unsaved
            self._restore_sigint()
            signal.default_int_handler(signum, frame)
        self._sigint_requested = True
        print("Ctrl-C: saving a checkpoint at the end of this step, then stopping (Ctrl-C again: stop now, "
              "without saving)", file=sys.stderr, flush=True)

    def _restore_sigint(self) -> None:
        """Put the previous SIGINT handler back, unless someone replaced ours since (Lightning ignores SIGINT while
        it shuts down after a KeyboardInterrupt)."""
        if (self._original_sigint is not None and threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) == self._on_sigint):
            signal.signal(signal.SIGINT, self._original_sigint)
        self._original_sigint = None

    def on_train_start(self, trainer, pl_module) -> None:
        self._boundary_step, self._at_boundary = trainer.global_step, True
        if threading.current_thread() is threading.main_thread():
            self._original_sigint = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._on_sigint)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._restore_sigint()

    # ---------------------------------------------------------------- saving at a step boundary
    def _save(self, trainer) -> None:
        self.signum = signal.SIGINT if self._sigint_requested else signal.SIGTERM
        trainer.save_checkpoint(self.path, weights_only=False)
        self.saved_step = trainer.global_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._at_boundary = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._at_boundary = trainer.global_step != self._boundary_step
        if not self._at_boundary or self.saved_step is not None:
            return  # inside an accumulation group (no optimizer step yet), or already saved
        self._boundary_step = trainer.global_step
        requested = self._sigint_requested or trainer.received_sigterm
        if trainer.world_size > 1:
            requested = trainer.strategy.reduce_boolean_decision(bool(requested), all=False)
        if requested and trainer.global_step < trainer.max_steps:
            self._save(trainer)
            trainer.should_stop = True

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._restore_sigint()  # `teardown` is not called after an exception
        if isinstance(exception, KeyboardInterrupt):
            self.signum, self.aborted = signal.SIGINT, True
        elif isinstance(exception, SIGTERMException):
            if self.signum is None:
                self.signum = signal.SIGTERM
            # raised between micro-batches at a step boundary (e.g. broadcast from rank 0 before the next batch):
            # the state is consistent, save it; inside an accumulation group it is not
            if self.saved_step is None and self._at_boundary and trainer.global_step < trainer.max_steps:
                self._save(trainer)


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


class _DropLightningAdverts(logging.Filter):
    """Drops Lightning's "💡 Tip: For seamless cloud ..." INFO lines (adverts for litlogger / litmodels, logged at
    every Trainer construction): they say nothing about this run."""

    PATTERN = re.compile(r"^💡 Tip: For seamless cloud (logging|uploads)")

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.PATTERN.match(str(record.msg))


# (message regex, category, module regex of where Lightning / torch emits it): each is harmless for this project
_HARMLESS_WARNINGS = (
    # the datamodule's IterableDataset has __len__ (fixed-length epochs) and each worker draws its own share
    # (datamodule.dist_info + worker seeds), so the length is exact with any number of workers
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
    current step (``InterruptCheckpoint``).
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
    ]
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
        logger=TensorBoardLogger(str(out), name="tb", version=""),
        callbacks=callbacks, log_every_n_steps=t.log_every, enable_progress_bar=bar,
        val_check_interval=t.val_every if t.val_every else None, check_val_every_n_epoch=None,
        limit_val_batches=t.val_batches if t.val_every else 0, num_sanity_val_steps=0,
        plugins=[AtomicCheckpointIO()], enable_model_summary=False, use_distributed_sampler=False,
        default_root_dir=str(out),
    )


def checkpoint_step(path: str | Path) -> Optional[int]:
    """The global step a checkpoint holds (memory-mapped, tensors are not read), or None when unreadable."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])
    except Exception:  # noqa: BLE001 - missing, truncated or foreign: no step to report
        return None


def sample_command(cfg: StepConfig, final: Path) -> str:
    """The `cologen sample` command that tries a step's export (``final``) on one image."""
    task = list(cfg.data.tasks)[0] if list(cfg.data.tasks) else "edit"
    args = ["cologen", "sample", "--task", task, "--image", "IN.png", "--out", "OUT.png"]
    if cfg.train.train_base:  # the tiny/small base pre-training exports the base itself
        args += ["--base", str(final)]
    else:
        if cfg.model.pretrained_path:
            args += ["--base", str(cfg.model.pretrained_path)]
        else:
            args += ["--preset", str(cfg.model.preset)]
        args += ["--adapters", str(final)]
    return shlex.join(args)


def _fmt_loss(value: Any) -> str:
    return f"{float(value):.4f}" if isinstance(value, (int, float)) else "-"


def _fmt_skipped(skipped: Optional[dict]) -> str:
    if skipped is None:
        return "not counted (a datamodule without skip counts)"
    if not skipped.get("total"):
        return "none"
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(skipped.get("by_kind", {}).items()))
    return f"{skipped['total']} ({kinds})"


def format_summary(done: dict, final: Path, next_command: str) -> str:
    """The end-of-run summary of a step from its done.json record (``done``)::

        step 't' finished: 6/6 steps (6 in this run) in 1.2s, 10.3 samples/s
          loss: train 1.7749 (mean of the last 1 step(s)), val -
          skipped samples: none
          outputs: /runs/t/final (adapters.safetensors, done.json)
          next: cologen sample --task inpaint ...
    """
    outputs = sorted(p.name for p in Path(final).iterdir()) if Path(final).is_dir() else []
    rate = done.get("samples_per_s")
    rate_text = f"{rate:.1f} samples/s" if isinstance(rate, (int, float)) else "- samples/s"
    lines = [
        f"step '{done.get('step')}' finished: {done.get('global_step')}/{done.get('max_steps', '?')} steps "
        f"({done.get('steps_this_run', '?')} in this run) in {format_duration(done.get('seconds', 0))}, {rate_text}",
        f"  loss: train {_fmt_loss(done.get('train_loss'))} (mean of the last {done.get('train_loss_steps', '?')} "
        f"step(s)), val {_fmt_loss(done.get('val_loss'))}",
        f"  skipped samples: {_fmt_skipped(done.get('skipped'))}",
        f"  outputs: {final} ({', '.join(outputs)})",
        f"  next: {next_command}",
    ]
    return "\n".join(lines)


def format_finished(done: dict, final: Path) -> str:
    """One line for a step that is not re-run because it finished earlier (its done.json numbers)."""
    return (f"step '{done.get('step')}' already finished, skipped: {done.get('global_step')} steps, train loss "
            f"{_fmt_loss(done.get('train_loss', done.get('metrics', {}).get('train/loss')))}, val loss "
            f"{_fmt_loss(done.get('val_loss', done.get('metrics', {}).get('val/loss')))}, skipped samples "
            f"{_fmt_skipped(done.get('skipped')) if 'skipped' in done else '-'} ({Path(final) / DONE_FILE})")


def _read_done(final: Path) -> dict:
    try:
        return json.loads((Path(final) / DONE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _emit(report: Optional[Callable[[str], None]], text: str) -> None:
    """Hand ``text`` to ``report`` (default: the ``lit_cologen.train`` logger) on global rank zero only."""
    if rank_zero_only.rank == 0:
        (report or log.info)(text)


def run_step(cfg: StepConfig, datamodule=None, extra_callbacks: Sequence[L.Callback] = (),
             enable_progress: bool = True, extend: bool = False, report: Optional[Callable[[str], None]] = None,
             next_command: Optional[str] = None) -> Path:
    """Train one step to `train.max_steps` (resuming if interrupted) and export `final/`. Returns final/.

    A folder written by another configuration is refused before anything is written (``check_run_folder``);
    ``extend`` trains a finished or interrupted step further when only a larger ``train.max_steps`` differs.

    ``report`` (default: the ``lit_cologen.train`` logger) receives, on global rank zero, the end-of-run summary
    (``format_summary``, ending with ``next_command``; default: the ``cologen sample`` command of the export) or,
    for a step that finished earlier, one line with its done.json numbers (``format_finished``). done.json records
    the same numbers, skipped samples by kind included.

    SIGINT / SIGTERM during training: checkpoints/last.ckpt is written at the end of the current step and
    ``TrainingInterrupted`` is raised (its message: what was saved and that rerunning resumes).
    """
    out = Path(cfg.output_dir)
    final = out / "final"
    extending = check_run_folder(cfg, extend=extend)
    if (final / DONE_FILE).is_file() and not extending:
        _emit(report, format_finished(_read_done(final), final))
        return final
    for key, path in (("init_from", cfg.init_from), ("model.pretrained_path", cfg.model.pretrained_path)):
        looks_like_hub_id = bool(path) and str(path).count("/") == 1 and not str(path).startswith(("/", ".", "~"))
        if path and not Path(path).exists() and not (key == "model.pretrained_path" and looks_like_hub_id):
            raise ConfigError(f"config key '{key}': {path} does not exist"
                              + (" (the previous step's final/ folder: train that step first, or set init_from=null)"
                                 if key == "init_from" else ""))
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
    stop = next(c for c in trainer.callbacks if isinstance(c, InterruptCheckpoint))
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
    except SystemExit:  # SIGTERMException, or Lightning's exit after a KeyboardInterrupt (a second Ctrl-C)
        if stop.signum is None:
            raise
        raise _interrupted(cfg, stop, last) from None
    if stop.saved_step is not None:  # SIGINT: saved, then trainer.should_stop
        raise _interrupted(cfg, stop, last)
    if trainer.global_step < cfg.train.max_steps:
        raise RuntimeError(f"step '{cfg.name}' stopped at global step {trainer.global_step} < {cfg.train.max_steps}; "
                           f"rerun to resume from {last}")
    if trainer.is_global_zero:
        progress = next(c for c in trainer.callbacks if isinstance(c, ProgressReport))
        tmp = out / ".final.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        module.export(tmp)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
        skipped = getattr(trainer.datamodule, "skipped", None)
        done = {"step": cfg.name, "global_step": trainer.global_step, "max_steps": cfg.train.max_steps,
                "num_experts": module.transformer.num_experts, "seconds": round(time.time() - started, 1),
                "metrics": metrics, "global_batch": cfg.train.global_batch,
                "steps_this_run": progress.steps_this_run, "train_seconds": round(progress.seconds, 2),
                "samples_per_s": progress.samples_per_s, "train_loss": progress.train_loss,
                "train_loss_steps": progress.loss_steps, "val_loss": metrics.get("val/loss"),
                "skipped": ({"total": int(skipped["total"]), "by_kind": dict(skipped["by_kind"])}
                            if isinstance(skipped, dict) else None)}
        atomic_write_json(tmp / DONE_FILE, done, sort_keys=True)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _emit(report, format_summary(done, final, next_command or sample_command(cfg, final)))
    return final


def _interrupted(cfg: StepConfig, stop: InterruptCheckpoint, last: Path) -> TrainingInterrupted:
    resume = stop.saved_step if stop.saved_step is not None else (checkpoint_step(last) if last.is_file() else None)
    return TrainingInterrupted(cfg.name, int(stop.signum or signal.SIGINT), last, stop.saved_step, resume,
                               cfg.train.max_steps)


def _first_val_loader(datamodule):
    datamodule.setup("validate")
    return datamodule.val_dataloader()


def _select_steps(spec, steps: list[StepConfig], path, only: Optional[Sequence[str]]) -> list[StepConfig]:
    names = [cfg.name for cfg in steps]
    unknown = [n for n in (only or []) if n not in names]
    if unknown:
        raise ConfigError(f"--only: no step named {unknown} in curriculum '{spec.name}' ({path}); its steps are "
                          f"{names}")
    return [cfg for cfg in steps if not only or cfg.name in only]


def run_curriculum(path: str | Path, overrides: Sequence[str] = (), enable_progress: bool = True,
                   only: Optional[Sequence[str]] = None, step_scale: float = 1.0,
                   report: Optional[Callable[[str], None]] = None) -> list[Path]:
    """Run the curriculum's steps in order (``only``: these step names); finished steps are skipped, an
    interrupted one resumes. Returns the ``final/`` folders of the steps run. An unknown name in ``only`` is an error
    listing the curriculum's steps. Each step ends with its summary (``run_step``'s ``report``), whose next command is
    the next step (starting now, or the `cologen curriculum ... --only NAME` that runs it) or, after the last step,
    the `cologen sample` command of its export."""
    spec, steps = load_curriculum(path, overrides, step_scale=step_scale)
    selected = _select_steps(spec, steps, path, only)
    finals = []
    for k, cfg in enumerate(steps):
        if cfg not in selected:
            continue
        later_selected = [c for c in steps[k + 1:] if c in selected]
        if later_selected:
            nxt = f"step '{later_selected[0].name}' (starting now)"
        elif k + 1 < len(steps):
            nxt = shlex.join(["cologen", "curriculum", str(path), *overrides, "--only", steps[k + 1].name])
        else:
            nxt = sample_command(cfg, Path(cfg.output_dir) / "final")
        log.info("curriculum '%s': step '%s' (%d experts) -> %s", spec.name, cfg.name, cfg.model.prw.num_experts,
                 cfg.output_dir)
        finals.append(run_step(cfg, enable_progress=enable_progress, report=report, next_command=nxt))
    return finals


def step_status(cfg: StepConfig) -> tuple[str, str]:
    """(status, detail) of a step's folder: ``mismatching`` (its config.yaml differs from ``cfg``: run_step would
    refuse it; detail: the differing keys), ``done`` (final/done.json; detail: its steps), ``partial``
    (checkpoints/last.ckpt; detail: its step) or ``todo``."""
    out = Path(cfg.output_dir)
    diffs = saved_config_differences(cfg)
    if diffs:
        keys = [d.split(":", 1)[0] for d in diffs]
        return "mismatching", f"{len(keys)} key(s) differ from {out / 'config.yaml'}: {', '.join(keys[:4])}" + (
            " ..." if len(keys) > 4 else "")
    if (out / "final" / DONE_FILE).is_file():
        return "done", f"{_read_done(out / 'final').get('global_step', '?')} steps"
    last = out / "checkpoints" / "last.ckpt"
    if last.is_file():
        step = checkpoint_step(last)
        return "partial", f"checkpoint at step {step if step is not None else '?'}/{cfg.train.max_steps}"
    return "todo", ""


def plan_curriculum(path: str | Path, overrides: Sequence[str] = (), only: Optional[Sequence[str]] = None,
                    step_scale: float = 1.0) -> tuple[Any, list[dict[str, Any]]]:
    """What ``run_curriculum`` would do, without training: (spec, one dict per selected step with name,
    iterations (``train.max_steps``), global_batch, accumulate, samples (= iterations x global batch), output_dir,
    status and detail (``step_status``))."""
    spec, steps = load_curriculum(path, overrides, step_scale=step_scale)
    selected = _select_steps(spec, steps, path, only)
    rows = []
    for k, cfg in enumerate(steps):
        if cfg not in selected:
            continue
        status, detail = step_status(cfg)
        rows.append({"index": k, "name": cfg.name, "iterations": cfg.train.max_steps,
                     "global_batch": cfg.train.global_batch, "accumulate": cfg.train.accumulate,
                     "samples": cfg.train.max_steps * cfg.train.global_batch, "output_dir": cfg.output_dir,
                     "status": status, "detail": detail})
    return spec, rows


def format_plan(spec: Any, rows: list[dict[str, Any]], path: str | Path) -> str:
    """The dry-run table of ``plan_curriculum``: a header line, one line per step, then the totals."""
    head = ("#", "name", "iterations", "global batch", "accumulate", "samples", "status", "output")
    table = [head] + [(str(r["index"]), r["name"], str(r["iterations"]), str(r["global_batch"]), str(r["accumulate"]),
                       str(r["samples"]), r["status"] + (f" ({r['detail']})" if r["detail"] else ""), r["output_dir"])
                      for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head) - 1)]
    right = {0, 2, 3, 4, 5}
    lines = [f"curriculum '{spec.name}' ({path}), dry run: nothing is trained"]
    for row in table:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  " + "  ".join(cells + [row[-1]]))
    todo = [r for r in rows if r["status"] != "done"]
    lines.append(f"{len(rows)} step(s), {sum(r['iterations'] for r in rows)} iterations, "
                 f"{sum(r['samples'] for r in rows)} samples; to train: {len(todo)} step(s)"
                 + (f"; mismatching: {', '.join(r['name'] for r in rows if r['status'] == 'mismatching')} "
                    f"(would be refused)" if any(r["status"] == "mismatching" for r in rows) else ""))
    return "\n".join(lines)
