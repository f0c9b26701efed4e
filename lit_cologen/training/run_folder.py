"""A step's output folder and the configuration it records: may this config train into this folder?

``<output_dir>/config.yaml`` records the resolved config of what the folder's checkpoints and ``final/`` hold. A
folder is reused (resumed, or skipped when finished) only by the same configuration, compared on the keys that
change what the step learns (``semantic_config``: the hardware layout and logging cadence are ignored). The sweep
runner and ``cologen train`` share this check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from lit_cologen.config import ConfigError
from lit_cologen.errors import UserError

#: written into ``<output_dir>/final/`` when a step finished (its numbers); a folder with it is not re-run
DONE_FILE = "done.json"

#: Keys that do not change what a step learns (hardware layout, logging cadence and loggers); ignored when comparing configs.
NON_SEMANTIC = ("name", "output_dir", "train.devices", "train.num_nodes", "train.accumulate", "train.strategy",
                "train.accelerator", "train.log_every", "train.checkpoint_every", "train.sample_every",
                "train.sample_steps", "train.val_every", "train.val_batches", "train.text_cache_dir",
                "data.num_workers", "model.gradient_checkpointing", "train.checkpointing", "train.checkpoint_ratio",
                "train.compile", "train.compile_backend", "train.loggers", "train.wandb", "train.mlflow")
#: Keys that name where weights come from, not what they are (ignored with ``ignore_paths``).
PATH_KEYS = ("init_from", "model.pretrained_path")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: d}


def semantic_config(cfg: Any) -> dict[str, Any]:
    """A step config (``StepConfig`` or its dict) as a flat {dotted key: value} dict without ``NON_SEMANTIC`` keys."""
    data = cfg if isinstance(cfg, dict) else OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    flat = _flatten(data)
    return {k: v for k, v in flat.items() if not any(k == n or k.startswith(n + ".") for n in NON_SEMANTIC)}


def config_differences(a: Any, b: Any, ignore_paths: bool = False) -> list[str]:
    """Dotted keys whose values differ, as ``key: a != b``, ``NON_SEMANTIC`` keys ignored."""
    fa, fb = semantic_config(a), semantic_config(b)
    skip = PATH_KEYS if ignore_paths else ()
    return [f"{k}: {fa.get(k)!r} != {fb.get(k)!r}" for k in sorted(set(fa) | set(fb))
            if k not in skip and fa.get(k) != fb.get(k)]


def saved_config(output_dir: str | Path) -> dict[str, Any] | None:
    """The config saved in a step folder as a dict (keys added to the schema since take their defaults), or None."""
    saved = Path(output_dir) / "config.yaml"
    if not saved.is_file():
        return None
    loaded = OmegaConf.load(saved)
    try:
        from lit_cologen.training.config import StepConfig

        return OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(StepConfig), loaded), resolve=False)
    except Exception:  # noqa: BLE001 - a key the schema no longer has: compare as saved
        return OmegaConf.to_container(loaded, resolve=False)


def holds_training(output_dir: str | Path) -> bool:
    """Whether a step folder holds anything trained: a checkpoint to resume from or a finished ``final/``."""
    out = Path(output_dir)
    return (out / "checkpoints" / "last.ckpt").is_file() or (out / "final" / "done.json").is_file()


def saved_config_differences(cfg: Any) -> list[str]:
    """How the config saved in ``cfg.output_dir`` differs from ``cfg`` ([] when none is saved, when they agree, or
    when the folder holds nothing trained: a run that failed before its first checkpoint blocks no corrected rerun)."""
    data = saved_config(cfg.output_dir) if holds_training(cfg.output_dir) else None
    return [] if data is None else config_differences(data, cfg, ignore_paths=True)


def check_run_folder(cfg: Any, extend: bool = False) -> bool:
    """Refuse a step folder written by another configuration; return True when ``extend`` trains it further.

    ``extend``: the only difference allowed is a larger ``train.max_steps`` (train a finished or interrupted step
    further from its last checkpoint). Raises ``ConfigError`` listing the differing keys otherwise.
    """
    diffs = saved_config_differences(cfg)
    if not diffs:
        return False
    keys = [d.split(":", 1)[0] for d in diffs]
    if extend and keys == ["train.max_steps"]:
        old = int(saved_config(cfg.output_dir)["train"]["max_steps"])  # type: ignore[index]
        if int(cfg.train.max_steps) <= old:
            raise ConfigError(f"--extend: train.max_steps={cfg.train.max_steps} is not larger than the "
                              f"{old} that {cfg.output_dir} was trained to")
        return True
    hint = ("; to train this step further, rerun with --extend and only train.max_steps changed"
            if "train.max_steps" in keys else "")
    raise ConfigError(
        f"{cfg.output_dir} holds a run of another configuration ({len(diffs)} key(s) differ, saved != given: "
        f"{'; '.join(diffs[:6])}{' ...' if len(diffs) > 6 else ''}); use another output_dir=..., or the saved "
        f"values (see {Path(cfg.output_dir) / 'config.yaml'}){hint}"
    )


class RunFolderError(UserError, FileNotFoundError):
    """A folder that holds no finished training step."""


def resolve_run(run: str | Path) -> tuple[Optional[str], Optional[str]]:
    """(base folder, adapters folder) of a curriculum output folder, a step's final/ folder, or None.

    A curriculum folder resolves to its last step with adapters and, for the tiny/small presets, the base
    pre-training step's exported transformer. A single step's final/ without a base of its own resolves to the
    ``model.pretrained_path`` of the step's saved config.yaml (before, it silently fell back to a random base).
    """
    run = Path(run)
    if (run / "adapters.safetensors").is_file() or (run / "transformer").is_dir():
        finals = [run]
    else:
        finals = sorted(p.parent for p in run.glob("*/final/done.json"))
        if not finals:
            raise RunFolderError(f"{run}: no finished step (expected */final/done.json or adapters.safetensors)")
    adapters = next((str(f) for f in reversed(finals) if (f / "adapters.safetensors").is_file()), None)
    base = next((str(f) for f in finals if (f / "transformer" / "config.json").is_file()), None)
    if base is None and adapters is not None:  # a single step: its base is the step's model.pretrained_path
        saved = Path(adapters).parent / "config.yaml"
        if saved.is_file():
            path = OmegaConf.select(OmegaConf.load(saved), "model.pretrained_path")
            base = str(path) if path else None
    return base, adapters



__all__ = ["NON_SEMANTIC", "RunFolderError", "check_run_folder", "config_differences", "resolve_run", "saved_config",
           "saved_config_differences", "semantic_config"]
