"""The ceiling study: the demo's missed targets, each measured on a model that trains every weight on that task alone.

    python -m benchmarks.demo_ceiling                                    # ground, inpaint, subject at 800 / 2400 steps
    python -m benchmarks.demo_ceiling --tasks inpaint --steps 800 2400 7200

For each task and step budget it trains the demo's model (`experiments/demo/ceiling.yaml`: the tiny preset, every
base weight trainable, the task's own sources, no adapters or curriculum) from the committed base, evaluates it on
the same held-out Shapes-5 scenes as the demo (``shapes5`` protocol) and writes ``ceiling.md`` (the learning
curves, a verdict per target), ``ceiling.json`` and ``ceiling.png`` into ``--out``. Each point is its own run in
``runs/<task>-<steps>``; a rerun skips finished points (``points/<task>-<steps>.json``), so two processes with
different ``--tasks`` can share one folder.

What it answers: the staged experts (rank-8 source-K/V LoRA on a frozen base) can at most reach what the whole model
reaches on one task with the same or more steps. A ceiling that moves with steps says the target is compute-bound at
this size (the report extrapolates, log-linearly through the last two points, how many steps would reach it, and
says that this is an extrapolation); a ceiling that does not move (the paired difference over the same held-out
images has a 95 % interval that includes zero), or moves so slowly that the target lies beyond 100x the largest
budget, says capacity-bound at this size and recipe.

The inpaint target also gets a no-learning reference: each hole filled with its nearest unmasked source pixel.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from lit_cologen.data import shapes
from lit_cologen.utils.atomic import atomic_write_json, atomic_write_text

from .demo_report import TARGETS
from .stats import excludes_zero, paired_difference

REPO = Path(__file__).resolve().parents[1]
CEILING_CONFIG = REPO / "experiments" / "demo" / "ceiling.yaml"
DEFAULT_TASKS = ("ground", "inpaint", "subject")  # the tasks of the targets the staged demo model misses
DEFAULT_STEPS = (800, 2400)  # about the demo's co-training budget (750 steps x 16), and three times it
RESOLUTION = 32
MAX_EXTRAPOLATION = 100  # a target further than this many times the largest budget is not called compute-bound


def task_targets(task: str) -> dict[str, tuple[str, float]]:
    """The demo targets of ``task``: metric -> (comparison, value)."""
    return {k: (op, v) for k, (op, v, _) in TARGETS.items() if k.startswith(f"{task}/")}


def point_name(task: str, steps: int) -> str:
    return f"{task}-{int(steps)}"


def point_overrides(out: Path, shards: Path, base: Path, task: str, steps: int) -> list[str]:
    """The overrides of `experiments/demo/ceiling.yaml` for one point (its run folder, data, base, task, steps)."""
    return [f"output_dir={out / 'runs' / point_name(task, steps)}", f"data.train_shards=[{shards}]",
            f"model.pretrained_path={base}", f"data.tasks=[{task}]", f"train.max_steps={int(steps)}"]


# ------------------------------------------------------------------------------------------- the no-learning reference


def nearest_fill(source: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Every masked pixel takes the colour of its nearest unmasked pixel (squared distance, first in raster order on
    ties). source: uint8 (H, W, 3); mask: bool (H, W), True = hole. Returns uint8 (H, W, 3)."""
    out = source.copy()
    ky, kx = np.nonzero(~mask)
    hy, hx = np.nonzero(mask)
    if ky.size == 0 or hy.size == 0:
        return out
    d = (hy[:, None] - ky[None, :]) ** 2 + (hx[:, None] - kx[None, :]) ** 2  # (holes, kept)
    k = d.argmin(axis=1)
    out[hy, hx] = source[ky[k], kx[k]]
    return out


def nearest_fill_reference(per_task: int, resolution: int = RESOLUTION) -> dict[str, float]:
    """Mean ``inpaint/masked_l1`` and ``masked_psnr`` of :func:`nearest_fill` on the first ``per_task`` held-out
    inpaint scenes (the ones the evaluation uses), scored by the ``shapes5`` suite's own ``score_sample``."""
    from benchmarks.suites.shapes5 import score_sample

    l1, psnr = [], []
    for index in range(per_task):
        s = shapes.make_sample("inpaint", index, "eval", resolution, 0)
        src, tgt = np.asarray(s.source.convert("RGB")), np.asarray(s.target.convert("RGB"))
        mask = np.asarray(s.mask.convert("L"))
        m = score_sample("inpaint", nearest_fill(src, mask > 127), src, tgt, s.meta, mask=mask)
        l1.append(m["masked_l1"])
        psnr.append(m["masked_psnr"])
    return {"inpaint/masked_l1": float(np.mean(l1)), "inpaint/masked_psnr": float(np.mean(psnr)), "images": per_task}


# ------------------------------------------------------------------------------------------------ training + scoring


def run_point(out: Path, shards: Path, base: Path, task: str, steps: int, per_task: int, sample_steps: int,
              progress=None) -> dict[str, Any]:
    """Train (or resume) and evaluate one point; returns and writes ``points/<task>-<steps>.json``."""
    from benchmarks.demo import evaluate_shapes5, run_steps

    name = point_name(task, steps)
    path = out / "points" / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    final = run_steps(CEILING_CONFIG, point_overrides(out, shards, base, task, steps), progress, name)[0]
    seconds = time.perf_counter() - t0
    res = evaluate_shapes5(out, {name: {"base": str(final), "guidance": 1.0}}, per_task, RESOLUTION, sample_steps,
                           progress, tasks=[task])[name]
    per_image = {}
    for line in (out / "eval" / name / "results_per_image.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["id"].startswith(f"eval_{task}_"):
            per_image[row["id"]] = {k: row.get(k) for k in task_targets(task)}
    point = {"task": task, "steps": int(steps), "train_seconds": round(seconds, 1),
             "metrics": {k: v for k, v in res["metrics"].items() if k.startswith(f"{task}/")}, "per_image": per_image}
    atomic_write_json(path, point)
    return point


def verdict(points: Sequence[dict[str, Any]], metric: str, op: str, target: float) -> dict[str, Any]:
    """The learning curve of ``metric`` (points sorted by steps) read against its target.

    Returns ``{"kind": met | compute-bound | capacity-bound | one point, "text": ..., "difference": ...}``; the
    difference is the last point minus the one before, per held-out image (paired), signed so that > 0 moves
    toward the target, with its 95 % t-interval.
    """
    pts = sorted(points, key=lambda p: p["steps"])
    last = pts[-1]
    value = last["metrics"].get(metric)
    if value is not None and (value >= target if op == ">=" else value <= target):
        return {"kind": "met", "text": f"met at {last['steps']} steps ({value:.3f})", "difference": None}
    if len(pts) < 2:
        return {"kind": "one point", "text": "one budget only: no learning curve", "difference": None}
    prev = pts[-2]
    sign = 1.0 if op == ">=" else -1.0
    a = {k: (None if v.get(metric) is None else sign * v[metric]) for k, v in last["per_image"].items()}
    b = {k: (None if v.get(metric) is None else sign * v[metric]) for k, v in prev["per_image"].items()}
    diff = paired_difference(a, b)
    span = f"{prev['steps']} -> {last['steps']} steps"
    if diff["mean"] is None or not (excludes_zero(diff["ci95"]) and diff["mean"] > 0):
        ci = "" if diff["ci95"] is None else f" [{diff['ci95'][0]:+.3f}, {diff['ci95'][1]:+.3f}]"
        return {"kind": "capacity-bound", "difference": diff,
                "text": f"no detectable gain {span} ({diff['mean'] or 0:+.3f}{ci} toward the target, paired over "
                        f"{diff['n']} images): capacity-bound at this size and recipe"}
    per_doubling = diff["mean"] / math.log2(last["steps"] / prev["steps"])
    gap = sign * (target - value)  # > 0: still this far from the target, in the improving direction
    doublings = gap / per_doubling
    gain = f"gains {diff['mean']:+.3f} [{diff['ci95'][0]:+.3f}, {diff['ci95'][1]:+.3f}] {span} ({per_doubling:+.3f} per doubling)"
    if doublings > math.log2(MAX_EXTRAPOLATION):
        return {"kind": "capacity-bound", "difference": diff, "steps_needed": None,
                "text": f"{gain}: at that rate {op} {target} needs more than {MAX_EXTRAPOLATION}x the largest budget "
                        f"measured ({doublings:.0f} more doublings): capacity-bound at this size in practice"}
    needed = last["steps"] * 2 ** doublings
    return {"kind": "compute-bound", "difference": diff, "steps_needed": needed,
            "text": f"{gain}: compute-bound; log-linear extrapolation (not measured): about {needed:,.0f} steps x "
                    f"batch 16 of the whole model reach {op} {target}"}


def curve_plot(points: Sequence[dict[str, Any]], path: Path) -> Optional[Path]:
    """One panel per target metric: value vs training steps (log x), with the target as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [(t, k, op, v) for t in sorted({p["task"] for p in points}) for k, (op, v) in task_targets(t).items()]
    metrics = [m for m in metrics if "preservation" not in m[1]]
    if not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.2), squeeze=False)
    for ax, (task, key, op, target) in zip(axes[0], metrics):
        pts = sorted((p for p in points if p["task"] == task), key=lambda p: p["steps"])
        xs = [p["steps"] for p in pts]
        ax.plot(xs, [p["metrics"].get(key) for p in pts], "o-")
        ax.axhline(target, color="grey", ls="--", lw=1, label=f"target {op} {target}")
        ax.set(xscale="log", title=key, xlabel="steps (every weight, one task)")
        ax.minorticks_off()
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(out: Path, points: Sequence[dict[str, Any]], reference: dict[str, float]) -> Path:
    """``ceiling.md`` + ``ceiling.json`` (+ ``ceiling.png``) from every finished point in ``out``."""
    lines = ["# The ceiling study: every weight of the demo model trains on one task", "",
             "Each point: the tiny preset from the committed base, every base weight trainable on that task alone "
             "(`experiments/demo/ceiling.yaml`), held-out Shapes-5 scenes, the demo's protocol. The staged experts "
             "train fewer weights for fewer steps, so these values bound what they can reach at this size.", "",
             "| task | metric | target | " + " | ".join(["steps", "value", "train s"]) + " |", "|---|---|---|---|---|---|"]
    verdicts = {}
    for task in sorted({p["task"] for p in points}):
        pts = sorted((p for p in points if p["task"] == task), key=lambda p: p["steps"])
        for key, (op, target) in task_targets(task).items():
            for p in pts:
                v = p["metrics"].get(key)
                lines.append(f"| {task} | {key} | {op} {target} | {p['steps']} | "
                             f"{'n/a' if v is None else f'{v:.3f}'} | {p['train_seconds']:.0f} |")
            verdicts[key] = verdict(pts, key, op, target)
    lines += ["", "## Verdicts", ""] + [f"- **{k}**: {v['text']}" for k, v in verdicts.items()]
    if reference:
        lines += ["", f"No-learning reference for inpaint: each hole filled with its nearest unmasked source pixel gives "
                      f"masked L1 {reference['inpaint/masked_l1']:.3f} on the first {reference['images']} held-out "
                      f"scenes (target <= {TARGETS['inpaint/masked_l1'][1]})."]
    plot = curve_plot(points, out / "ceiling.png")
    if plot is not None:
        lines += ["", f"![learning curves]({plot.name})"]
    report = out / "ceiling.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    atomic_write_json(out / "ceiling.json", {"points": [{k: v for k, v in p.items() if k != "per_image"} for p in points],
                                             "verdicts": verdicts, "nearest_fill_reference": reference})
    return report


def run_ceiling(out: str | Path = "outputs/demo-ceiling", tasks: Sequence[str] = DEFAULT_TASKS,
                steps: Sequence[int] = DEFAULT_STEPS, eval_per_task: int = 48, sample_steps: int = 8,
                base: Optional[Path] = None, shards_per_task: int = 2000, progress: bool = True) -> Path:
    """The whole study in ``out`` (resumable); returns the report's path."""
    from benchmarks.demo import DemoProgress, build_shards, plan_steps, quiet_console
    from benchmarks.demo_base import COMMITTED_BASE
    from lit_cologen.errors import UserError

    bad = [t for t in tasks if not task_targets(t)]
    if bad:
        raise UserError(f"demo_ceiling: --tasks {bad} have no demo target (tasks with one: "
                        f"{sorted({k.split('/')[0] for k in TARGETS})})")
    if not steps or any(int(s) < 1 for s in steps):
        raise UserError(f"demo_ceiling: --steps must be positive integers, got {list(steps)}")
    if int(eval_per_task) < 2:  # the verdict's paired interval needs two images
        raise UserError(f"demo_ceiling: --eval-per-task must be >= 2 (a paired interval over images), got {eval_per_task}")
    base = Path(base) if base is not None else COMMITTED_BASE
    if not (base / "transformer" / "config.json").is_file():
        raise UserError(f"demo_ceiling: no base transformer in {base}/transformer (run python -m benchmarks.demo_base)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    quiet_console()
    prog = DemoProgress(enabled=progress)
    shards_dir = out / "shards" / "train"
    todo = [(t, int(s)) for t in tasks for s in sorted(set(int(s) for s in steps))
            if not (out / "points" / f"{point_name(t, s)}.json").is_file()]
    for task, n in todo:
        plan_steps(CEILING_CONFIG, point_overrides(out, shards_dir, base, task, n), prog, point_name(task, n))
        prog.add(f"eval:{point_name(task, n)}", f"eval {point_name(task, n)} image", eval_per_task, 0.004 * sample_steps)
    shards = build_shards(out, shards_per_task, RESOLUTION)
    for task, n in todo:
        run_point(out, shards, base, task, n, eval_per_task, sample_steps, prog)
    prog.close()
    points = [json.loads(p.read_text()) for p in sorted((out / "points").glob("*.json"))]
    reference = nearest_fill_reference(eval_per_task) if any(p["task"] == "inpaint" for p in points) else {}
    report = write_report(out, points, reference)
    print(f"[ceiling] report: {report}", flush=True)
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.demo_ceiling", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/demo-ceiling", help="output folder (a rerun resumes there)")
    p.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), help="tasks with a demo target")
    p.add_argument("--steps", nargs="+", type=int, default=list(DEFAULT_STEPS), help="step budgets, one run each")
    p.add_argument("--eval-per-task", type=int, default=48, help="held-out scenes per task (the demo's 48)")
    p.add_argument("--sample-steps", type=int, default=8, help="Euler steps per image (the demo's 8)")
    p.add_argument("--base", default=None, help="base folder (default: the committed experiments/demo/base)")
    p.add_argument("--no-progress", action="store_true", help="no progress line")
    a = p.parse_args(argv)
    from lit_cologen.errors import UserError

    try:
        run_ceiling(a.out, a.tasks, a.steps, a.eval_per_task, a.sample_steps, a.base, progress=not a.no_progress)
    except UserError as err:  # one line, no traceback, like every cologen command
        print(f"demo_ceiling: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
