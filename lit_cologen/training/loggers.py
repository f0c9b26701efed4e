"""The experiment loggers of a step (``train.loggers``) and how a histogram, an image or the run's config reaches each.

``build_loggers`` turns ``train.loggers`` (any of tensorboard, csv, wandb, mlflow) into Lightning's own loggers, all
writing under the step's folder by default and none touching the network unless told to:

* tensorboard: ``<output_dir>/tb/`` (the folder of the runs before ``train.loggers``); never the network.
* csv: ``<output_dir>/csv/version_N/`` (``metrics.csv``, ``hparams.yaml``); a new ``version_N`` per start or
  resume (Lightning's CSVLogger deletes the ``metrics.csv`` of a folder it reopens); never the network.
* wandb: ``<output_dir>/wandb/offline-run-*/``; the network only with ``train.wandb.mode=online``.
* mlflow: ``train.mlflow.tracking_uri``, by default MLflow's local file store ``file:<output_dir>/mlruns``; the
  network only with an http(s) tracking URI.

Scalars (losses, learning rate, throughput, routing shares) go to every logger through Lightning. The helpers here
send what Lightning has no common call for, each through the library's own API:

* ``log_histograms`` (the routing histograms): TensorBoard ``add_histogram``; W&B ``wandb.Histogram``; MLflow and CSV
  have no histogram type, so they get the share of the values in each bin as scalars (``<name>/<bin label>``; in
  MLflow spelled as ``mlflow_key`` says).
* ``log_image`` (the sample grids): TensorBoard ``add_image``; W&B ``WandbLogger.log_image``; MLflow
  ``MlflowClient.log_image`` (an artifact under ``images/``, by key and step); CSV cannot hold an image and gets
  none (the grid is always saved as ``<output_dir>/samples/step_*.png`` too).
* ``log_config`` (``ConfigToLoggers``): the resolved step config as one flat ``{dotted key: value}`` dict, the
  spelling of a command-line override, to every logger's ``log_hyperparams``.

A W&B run is finished when the fit ends (``FinishLoggers``): Lightning's WandbLogger would otherwise keep logging
the next curriculum step into the same, still open, run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import lightning as L
import numpy as np
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from omegaconf import OmegaConf
from PIL import Image

__all__ = ["ConfigToLoggers", "FinishLoggers", "build_loggers", "flat_config", "log_config", "log_histograms",
           "log_image", "mlflow_key", "mlflow_tracking_uri"]


def mlflow_tracking_uri(cfg: Any) -> str:
    """``train.mlflow.tracking_uri``, or MLflow's local file store ``file:<output_dir>/mlruns`` when unset."""
    uri = cfg.train.mlflow.tracking_uri
    return str(uri) if uri else f"file:{Path(cfg.output_dir).resolve() / 'mlruns'}"


def mlflow_key(key: str) -> str:
    """A metric name MLflow accepts (letters, digits, ``_ / . -`` and spaces): ``<`` / ``>`` / ``=`` spelled ``lt`` /
    ``gt`` / ``eq`` (the timestep bucket ``routing_t/t<0.33`` is ``routing_t/tlt0.33``), anything else dropped, as
    Lightning's MLFlowLogger would drop it (with a warning per key and step)."""
    for char, word in (("<", "lt"), (">", "gt"), ("=", "eq")):
        key = key.replace(char, word)
    return re.sub(r"[^a-zA-Z0-9_/. -]+", "", key)


def build_loggers(cfg: Any, out: str | Path) -> list[Logger]:
    """Lightning loggers for ``cfg.train.loggers``, in that order (the first is ``trainer.logger``).

    MLflow keeps its file store only behind ``MLFLOW_ALLOW_FILE_STORE=true`` (maintenance mode since MLflow 3.x):
    for a ``file:`` tracking URI it is set in this process unless the environment already sets it.
    """
    out = Path(out)
    loggers: list[Logger] = []
    for name in cfg.train.loggers:
        if name == "tensorboard":
            loggers.append(TensorBoardLogger(str(out), name="tb", version="", default_hp_metric=False))
        elif name == "csv":
            loggers.append(CSVLogger(str(out), name="csv"))
        elif name == "wandb":
            w = cfg.train.wandb
            logger = WandbLogger(name=cfg.name, save_dir=str(out), project=w.project, entity=w.entity, mode=w.mode)
            if logger._wandb_init.get("anonymous", "") is None:  # Lightning passes None; wandb warns it is unused
                del logger._wandb_init["anonymous"]
            loggers.append(logger)
        elif name == "mlflow":
            uri = mlflow_tracking_uri(cfg)
            if uri.startswith("file:"):
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            loggers.append(MLFlowLogger(experiment_name=cfg.train.mlflow.experiment, run_name=cfg.name,
                                        tracking_uri=uri))
        else:  # TrainConfig refuses unknown names; this is for a config built around its checks
            raise ValueError(f"unknown logger {name!r}")
    return loggers


def flat_config(cfg: Any) -> dict[str, Any]:
    """A step config (dataclass or dict) as a flat ``{dotted key: value}`` dict (lists and None kept as values)."""
    data = cfg if isinstance(cfg, dict) else OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            flat[prefix[:-1]] = node

    walk(data, "")
    return flat


def log_config(loggers: Sequence[Logger], cfg: Any) -> None:
    """The run's resolved config (``flat_config``) as hyperparameters of every logger."""
    params = flat_config(cfg)
    for logger in loggers:
        logger.log_hyperparams(params)


def log_histograms(loggers: Sequence[Logger], histograms: Mapping[str, Any], step: int, edges: Sequence[float],
                   labels: Optional[Sequence[str]] = None, shares_everywhere: bool = False) -> None:
    """Histograms ``{name: values}`` over the bins ``edges`` (len(edges) - 1 bins), at ``step``.

    TensorBoard and W&B get a histogram per name. Every other logger gets, instead, the share of the values in each
    bin as scalars ``<name>/<label>`` (``labels``, default ``bin_<k>``), all names in one ``log_metrics`` call (one
    CSV row); with ``shares_everywhere`` the histogram loggers get those scalars as well.
    """
    edges = np.asarray(edges, dtype=np.float64)
    labels = list(labels) if labels is not None else [f"bin_{k}" for k in range(len(edges) - 1)]
    arrays = {name: np.asarray(v, dtype=np.float64).reshape(-1) for name, v in histograms.items()}
    counts = {name: np.histogram(v, bins=edges)[0] for name, v in arrays.items()}
    shares = {f"{name}/{label}": float(c) / max(len(arrays[name]), 1)
              for name, cs in counts.items() for label, c in zip(labels, cs)}
    for logger in loggers:
        native = True
        if isinstance(logger, TensorBoardLogger):
            for name, values in arrays.items():
                logger.experiment.add_histogram(name, values, step, bins=edges)
        elif isinstance(logger, WandbLogger):
            import wandb

            logger.log_metrics({name: wandb.Histogram(np_histogram=(cs, edges)) for name, cs in counts.items()},
                               step=step)
        else:
            native = False
        if shares and (shares_everywhere or not native):
            logger.log_metrics({mlflow_key(k): v for k, v in shares.items()} if isinstance(logger, MLFlowLogger)
                               else shares, step=step)


def log_image(loggers: Sequence[Logger], name: str, image: Image.Image, step: int) -> None:
    """An RGB image at ``step`` to every logger that can hold one (not CSV: see the module docstring)."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(name, np.asarray(image.convert("RGB")).transpose(2, 0, 1), step)
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=name, images=[image], step=step)
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_image(logger.run_id, image, key=name, step=step)


class ConfigToLoggers(L.Callback):
    """At fit start, on global rank zero: the step's resolved config to every logger (``log_config``)."""

    def on_fit_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and trainer.loggers:
            log_config(trainer.loggers, pl_module.cfg)


class FinishLoggers(L.Callback):
    """When the fit ends (or fails), on global rank zero: finish the W&B run, so that the next step of a curriculum
    (the same process) starts its own run; a failed fit finishes it with exit code 1."""

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._finish(trainer, 0)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._finish(trainer, 1)

    @staticmethod
    def _finish(trainer, exit_code: int) -> None:
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            run = getattr(logger, "_experiment", None)
            if isinstance(logger, WandbLogger) and run is not None and hasattr(run, "finish"):
                run.finish(exit_code=exit_code)
