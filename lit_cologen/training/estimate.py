"""The cost of a curriculum up front: `cologen curriculum CONFIG --estimate [--gpus N] (--step-ms MS | --measure)`.

Per step (loaded as ``--dry-run`` loads them: ``run.selected_steps``, with the same overrides and ``--only``):
iterations (``train.max_steps``), global batch, per-device batch (``data.batch_size``), accumulation recomputed for
N GPUs (global / (batch x N); a step where it does not divide is refused, naming the step), samples (iterations x
global batch), the step time used (ms of one micro-batch at ``data.batch_size`` on one GPU) and

    GPU-hours        = iterations x accumulation x step_ms x N / 3.6e6
    wall-clock hours = iterations x accumulation x step_ms / 3.6e6

then the totals. The step time is given (``--step-ms``: the same for every step) or measured (``--measure``: a few
optimizer steps of each distinct step shape on this machine's device, through ``step_timer.time_training_step``).
Not in the estimate: the DDP gradient all-reduce, data loading stalls, validation, sample grids and checkpoints.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from lit_cologen.config import ConfigError

MS_PER_HOUR = 3.6e6


@dataclass
class StepEstimate:
    index: int
    name: str
    iterations: int
    global_batch: int
    batch: int  # per device (data.batch_size)
    gpus: int
    accumulate: int
    samples: int
    step_ms: float  # one micro-batch on one GPU
    gpu_hours: float
    wall_hours: float


def gpu_count(cfg: Any) -> int:
    """The GPUs a step is configured for: ``train.devices x train.num_nodes``."""
    return cfg.train.devices * cfg.train.num_nodes


def accumulation(cfg: Any, gpus: int) -> int:
    """global batch / (data.batch_size x gpus); a ConfigError naming the step when it does not divide."""
    world = cfg.data.batch_size * gpus
    if cfg.train.global_batch % world:
        raise ConfigError(f"--gpus {gpus}: step '{cfg.name}': train.global_batch {cfg.train.global_batch} is not a "
                          f"multiple of data.batch_size {cfg.data.batch_size} x {gpus} GPU(s) = {world}; choose a GPU "
                          f"count that divides it (or change data.batch_size)")
    return cfg.train.global_batch // world


def estimate_step(index: int, cfg: Any, gpus: int, step_ms: float) -> StepEstimate:
    acc = accumulation(cfg, gpus)
    iters = cfg.train.max_steps
    wall = iters * acc * step_ms / MS_PER_HOUR
    return StepEstimate(index=index, name=cfg.name, iterations=iters, global_batch=cfg.train.global_batch,
                        batch=cfg.data.batch_size, gpus=gpus, accumulate=acc, samples=iters * cfg.train.global_batch,
                        step_ms=float(step_ms), gpu_hours=wall * gpus, wall_hours=wall)


def shape_key(cfg: Any) -> str:
    """What decides the time of one micro-batch: the model section, batch, resolution, source layouts, the loss
    terms and the runtime keys (not the step's name, folders, data paths, iterations or learning rate)."""
    from omegaconf import OmegaConf

    from lit_cologen.data.tasks import source_layout

    t = cfg.train
    parts = {"model": OmegaConf.to_container(OmegaConf.structured(cfg.model)), "batch": cfg.data.batch_size,
             "resolution": cfg.data.resolution, "layouts": sorted({source_layout(k) for k in cfg.data.tasks}),
             "veteran": cfg.veteran.alpha > 0, "init_from": cfg.init_from is not None,
             "train": [t.use_source, t.train_base, t.precision, t.base_dtype, t.strategy == "fsdp", t.checkpointing,
                       t.checkpoint_ratio, t.compile, t.compile_backend, t.fp8, t.accelerator]}
    parts["model"].pop("pretrained_path", None)
    return repr(parts)


def measure_step_ms(steps: Sequence[Any], measure_steps: int = 3, device: Any = None,
                    report: Optional[Callable[[str], None]] = None) -> tuple[list[float], list[str]]:
    """The median step time (ms) of each of ``steps``, timing each distinct shape (``shape_key``) once; and one note
    per shape timed (device, steps, ms, samples/s, peak memory)."""
    from lit_cologen.training.step_timer import time_training_step

    timed: dict[str, tuple[float, str]] = {}
    out, notes = [], []
    for cfg in steps:
        key = shape_key(cfg)
        if key not in timed:
            if report:
                report(f"measuring step '{cfg.name}' ({cfg.model.preset}, {cfg.model.prw.num_experts} expert(s), "
                       f"batch {cfg.data.batch_size}, {cfg.data.resolution} px): {measure_steps} timed step(s)")
            t = time_training_step(cfg, steps=measure_steps, warmup=2 if cfg.train.compile else 1, device=device)
            timed[key] = (t.step_ms_median, cfg.name)
            peak = f", peak {t.peak_gib} GiB" if t.peak_gib is not None else ""
            notes.append(f"measured '{cfg.name}' on {t.device_name} ({t.precision}, checkpointing {t.checkpointing}): "
                         f"{t.step_ms_median} ms median of {measure_steps}, {t.samples_per_s} samples/s{peak}")
        else:
            notes.append(f"'{cfg.name}' has the shape of '{timed[key][1]}': its time is used")
        out.append(timed[key][0])
    return out, notes


def plan_estimate(path: str | Path, overrides: Sequence[str] = (), only: Optional[Sequence[str]] = None,
                  gpus: Optional[int] = None, step_ms: Optional[float] = None, measure: bool = False,
                  measure_steps: int = 3, device: Any = None,
                  report: Optional[Callable[[str], None]] = None) -> tuple[Any, list[StepEstimate], list[str]]:
    """(spec, one StepEstimate per selected step, notes). ``gpus`` default: each step's devices x num_nodes. Exactly
    one of ``step_ms`` / ``measure`` is needed (a ConfigError otherwise)."""
    if (step_ms is None) == (not measure):
        raise ConfigError("--estimate needs the time of one training step: give --step-ms MS (one micro-batch at "
                          "data.batch_size on one GPU, e.g. from `python -m benchmarks.train_step`) or --measure "
                          "(time a few steps on this machine)" if step_ms is None else
                          "--estimate: give --step-ms or --measure, not both")
    if step_ms is not None and not step_ms > 0:
        raise ConfigError(f"--step-ms must be > 0, got {step_ms}")
    if gpus is not None and gpus < 1:
        raise ConfigError(f"--gpus must be >= 1, got {gpus}")
    if measure_steps < 1:
        raise ConfigError(f"--measure-steps must be >= 1, got {measure_steps}")
    from lit_cologen.training.run import selected_steps

    spec, steps, selected = selected_steps(path, overrides, only, 1.0)
    cfgs = [steps[k] for k in selected]
    counts = [gpus if gpus is not None else gpu_count(cfg) for cfg in cfgs]
    for cfg, n in zip(cfgs, counts):  # refuse a non-dividing GPU count before measuring anything
        accumulation(cfg, n)
    if measure:
        times, notes = measure_step_ms(cfgs, measure_steps, device, report)
    else:
        times, notes = [float(step_ms)] * len(cfgs), []
    rows = [estimate_step(k, cfg, n, ms) for k, cfg, n, ms in zip(selected, cfgs, counts, times)]
    return spec, rows, notes


def _num(x: float) -> str:
    """One decimal with thousands separators; three significant digits below 1 (a CPU-sized curriculum)."""
    return f"{x:,.1f}" if x >= 1 or x == 0 else f"{x:.3g}"


def format_estimate(spec: Any, rows: list[StepEstimate], path: str | Path, source: str,
                    notes: Sequence[str] = ()) -> str:
    """The estimate table: a header line, one line per step, the totals, then where the step time came from."""
    uniform = len({r.gpus for r in rows}) == 1
    head = ("#", "name", "iterations", "global batch", "per-device batch") + (() if uniform else ("GPUs",)) + (
        "accumulate", "samples", "step ms", "GPU-hours", "wall-clock h")
    table = [head] + [(str(r.index), r.name, f"{r.iterations:,}", str(r.global_batch), str(r.batch))
                      + (() if uniform else (str(r.gpus),))
                      + (str(r.accumulate), f"{r.samples:,}", _num(r.step_ms), _num(r.gpu_hours), _num(r.wall_hours))
                      for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    on = f"{rows[0].gpus} GPU(s)" if uniform else "each step's configured GPUs"
    lines = [f"curriculum '{spec.name}' ({path}), cost estimate on {on}: nothing is trained"]
    for row in table:
        lines.append("  " + "  ".join(c.ljust(w) if i == 1 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    samples, gpu_h, wall_h = sum(r.samples for r in rows), sum(r.gpu_hours for r in rows), sum(r.wall_hours for r in rows)
    rate = samples / (gpu_h * 3600) if gpu_h else 0.0
    lines.append(f"total: {len(rows)} step(s), {sum(r.iterations for r in rows):,} iterations, {samples:,} samples: "
                 f"{_num(gpu_h)} GPU-hours, {_num(wall_h)} wall-clock hours ({wall_h / 24:,.1f} days), "
                 f"{rate:.2f} samples/s/GPU")
    lines.append(f"step time: {source}; ms of one micro-batch (data.batch_size) on one GPU")
    lines.append("not counted: DDP all-reduce, data-loading stalls, validation, sample grids, checkpoints")
    lines += [f"  {n}" for n in notes]
    return "\n".join(lines)


def run_estimate(args: Any) -> int:
    """The ``cologen curriculum --estimate`` command (``args``: the curriculum parser's namespace)."""
    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    spec, rows, notes = plan_estimate(args.config, args.overrides, only=args.only, gpus=args.gpus,
                                      step_ms=args.step_ms, measure=args.measure,
                                      measure_steps=args.measure_steps or 3, report=progress)
    source = (f"--step-ms {args.step_ms:g} (given) for every step" if args.step_ms is not None else
              f"measured on this machine (--measure, {args.measure_steps or 3} timed step(s) per shape)")
    print(format_estimate(spec, rows, args.config, source, notes))
    return 0


__all__ = ["StepEstimate", "accumulation", "estimate_step", "format_estimate", "measure_step_ms", "plan_estimate",
           "run_estimate"]
