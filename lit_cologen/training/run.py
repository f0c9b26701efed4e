"""Running one step and the curriculum: trainer construction, resume, export, skip-if-finished.

A step's folder::

    <output_dir>/config.yaml            the resolved StepConfig
    <output_dir>/checkpoints/last.ckpt  adapters + optimizer + scheduler + loop state (atomic; never the base)
    <output_dir>/tb/                    TensorBoard logs (train.loggers; also csv/, wandb/, mlruns/ when chosen)
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
import shlex
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import OmegaConf

from lit_cologen.config import ConfigError
from lit_cologen.training.callbacks import ProgressReport
from lit_cologen.training.checkpoints import (
    LastGoodCheckpoint,
    checkpoint_step,
    remove_stale_checkpoint_tmp,
)
from lit_cologen.training.config import StepConfig, load_curriculum
from lit_cologen.training.ema import AdapterEMA
from lit_cologen.training.interrupt import InterruptCheckpoint, TrainingInterrupted
from lit_cologen.training.module import CoLoGenModule
from lit_cologen.training.run_folder import (
    DONE_FILE,
    check_run_folder,
    saved_config_differences,
)
from lit_cologen.training.summary import format_finished, format_summary, sample_command
from lit_cologen.training.trainer import build_datamodule, build_trainer
from lit_cologen.utils.atomic import atomic_write_json
from lit_cologen.utils.hub import looks_like_hub_id

log = logging.getLogger("lit_cologen.train")


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
    _check_inputs_exist(cfg)
    last = out / "checkpoints" / "last.ckpt"
    if extending and not last.is_file():
        raise ConfigError(f"--extend: {last} not found, so there is nothing to train further from; use a new "
                          "output_dir")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    module = CoLoGenModule(cfg)
    datamodule = datamodule if datamodule is not None else build_datamodule(cfg)
    sample_batch = next(iter(_first_val_loader(datamodule))) if cfg.train.sample_every else None
    trainer = build_trainer(cfg, extra_callbacks, enable_progress, sample_batch, module=module)
    started = time.time()
    _fit(cfg, trainer, module, datamodule, last)
    if trainer.is_global_zero:
        done = _export(cfg, trainer, module, final, seconds=time.time() - started)
        _emit(report, format_summary(done, final, next_command or sample_command(cfg, final)))
    return final


def _check_inputs_exist(cfg: StepConfig) -> None:
    """``init_from`` and ``model.pretrained_path`` must exist (a Hub id in the local cache is allowed for the
    latter) before anything is written."""
    for key, path in (("init_from", cfg.init_from), ("model.pretrained_path", cfg.model.pretrained_path)):
        hub_id = key == "model.pretrained_path" and looks_like_hub_id(path)
        if path and not Path(path).exists() and not hub_id:
            raise ConfigError(f"config key '{key}': {path} does not exist"
                              + (" (the previous step's final/ folder: train that step first, or set init_from=null)"
                                 if key == "init_from" else ""))


def _fit(cfg: StepConfig, trainer: L.Trainer, module: CoLoGenModule, datamodule, last: Path) -> None:
    """``trainer.fit`` from ``last`` when it exists; a non-finite loss, a signal or an early stop become errors
    that say where the last good state is and how to resume."""
    remove_stale_checkpoint_tmp(last.parent)
    ckpt_path = str(last) if last.is_file() else None
    if ckpt_path:
        log.info("step '%s': resuming from %s", cfg.name, ckpt_path)
    stop = next(c for c in trainer.callbacks if isinstance(c, InterruptCheckpoint))
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


def _export(cfg: StepConfig, trainer: L.Trainer, module: CoLoGenModule, final: Path, seconds: float) -> dict:
    """Write ``final/`` (the module's export + done.json + README.md, the model card) through a temporary folder;
    returns done.json's dict."""
    progress = next(c for c in trainer.callbacks if isinstance(c, ProgressReport))
    tmp = final.parent / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    module.export(tmp, ema=next((c for c in trainer.callbacks if isinstance(c, AdapterEMA)), None))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    skipped = getattr(trainer.datamodule, "skipped", None)
    done = {"step": cfg.name, "global_step": trainer.global_step, "max_steps": cfg.train.max_steps,
            "num_experts": module.transformer.num_experts, "seconds": round(seconds, 1),
            "metrics": metrics, "global_batch": cfg.train.global_batch,
            "steps_this_run": progress.steps_this_run, "train_seconds": round(progress.seconds, 2),
            "samples_per_s": progress.samples_per_s, "train_loss": progress.train_loss,
            "train_loss_steps": progress.loss_steps, "val_loss": metrics.get("val/loss"),
            "skipped": ({"total": int(skipped["total"]), "by_kind": dict(skipped["by_kind"])}
                        if isinstance(skipped, dict) else None)}
    atomic_write_json(tmp / DONE_FILE, done, sort_keys=True)
    from lit_cologen.training.model_card import write_export_card

    write_export_card(tmp, cfg, done)  # README.md: the model card (`cologen card` adds evaluation results later)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return done


def _interrupted(cfg: StepConfig, stop: InterruptCheckpoint, last: Path) -> TrainingInterrupted:
    resume = stop.saved_step if stop.saved_step is not None else (checkpoint_step(last) if last.is_file() else None)
    return TrainingInterrupted(cfg.name, int(stop.signum or signal.SIGINT), last, stop.saved_step, resume,
                               cfg.train.max_steps)


def _first_val_loader(datamodule):
    datamodule.setup("validate")
    return datamodule.val_dataloader()


def selected_steps(path: str | Path, overrides: Sequence[str], only: Optional[Sequence[str]],
                    step_scale: float) -> tuple[Any, list[StepConfig], list[int]]:
    """(spec, every step, the indices of the steps to run: all, or those named in ``only``). An unknown name in
    ``only`` is an error listing the curriculum's steps."""
    spec, steps = load_curriculum(path, overrides, step_scale=step_scale)
    names = [cfg.name for cfg in steps]
    unknown = [n for n in (only or []) if n not in names]
    if unknown:
        raise ConfigError(f"--only: no step named {unknown} in curriculum '{spec.name}' ({path}); its steps are "
                          f"{names}")
    return spec, steps, [k for k, cfg in enumerate(steps) if not only or cfg.name in only]


def run_curriculum(path: str | Path, overrides: Sequence[str] = (), enable_progress: bool = True,
                   only: Optional[Sequence[str]] = None, step_scale: float = 1.0,
                   report: Optional[Callable[[str], None]] = None) -> list[Path]:
    """Run the curriculum's steps in order (``only``: these step names); finished steps are skipped, an
    interrupted one resumes. Returns the ``final/`` folders of the steps run. An unknown name in ``only`` is an error
    listing the curriculum's steps. Each step ends with its summary (``run_step``'s ``report``), whose next command is
    the next step (starting now, or the `cologen curriculum ... --only NAME` that runs it) or, after the last step,
    the `cologen sample` command of its export."""
    spec, steps, selected = selected_steps(path, overrides, only, step_scale)
    finals = []
    for k in selected:
        cfg = steps[k]
        later_selected = [j for j in selected if j > k]
        if later_selected:
            nxt = f"step '{steps[later_selected[0]].name}' (starting now)"
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
    spec, steps, selected = selected_steps(path, overrides, only, step_scale)
    rows = []
    for k in selected:
        cfg = steps[k]
        status, detail = step_status(cfg)
        rows.append({"index": k, "name": cfg.name, "iterations": cfg.train.max_steps,
                     "global_batch": cfg.train.global_batch, "accumulate": cfg.train.accumulate,
                     "samples": cfg.train.max_steps * cfg.train.global_batch, "output_dir": cfg.output_dir,
                     "status": status, "detail": detail})
    return spec, rows
