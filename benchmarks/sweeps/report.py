"""`cologen report RUN_DIR`: PNG figures + a markdown report (written atomically) for a sweep, a folder of sweeps,
or a curriculum run.

* Figure-4 plots: each swept metric vs the axis value, the chosen setting in orange (as in the paper's figure); with
  several sweeps in RUN_DIR, one panel per sweep axis.
* The Table 5 layout: rows w/o R_c & R_l, w R_l, w R_c, co-training, CoLoGen; columns: the suite's metrics (for
  Shapes-5 the concept / localization split per task), the best bold, plus each row's training budget; then every
  row against the chosen one (CoLoGen), staged vs co-training first.

Uncertainty (:func:`metric_summary`, :func:`paired_summary`, the math in :mod:`benchmarks.stats`): with several
training seeds a value is the mean over seeds +- the half-width of its 95 % t-interval across seeds
(t_{0.975, n-1} s / sqrt(n)), and a comparison is paired by seed (d_s = a_s - b_s, its mean and t-interval). With
one seed a value is +- its standard error over the evaluated images, and a comparison is the unpaired difference
+- 1.96 s.e. over images: the text says so, and that training-seed variation is not covered. A difference is called
real (better / worse) only when its interval excludes zero; otherwise "no detectable difference at this budget".
* Routing usage: the newest expert's share per PRW block (U_t per block), read from the `routing/block_XX`
  histograms TensorBoard holds for every step (`tensorboard.backend.event_processing.event_accumulator`): a matrix
  (steps or points x blocks) at the end of each step, and over training for one step.
* Training curves: train/loss_task, train/U_t against rho, val/loss_<task> over the concatenated steps.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from benchmarks.sweeps.summaries import (
    basis_text,
    direction,
    err_label,
    metric_summary,
    n_seeds,
    pair_text,
    paired_summary,
    seed_runs,
    verdict,
)
from lit_cologen.utils.atomic import atomic_path, atomic_write_text

log = logging.getLogger("lit_cologen.report")
RESULTS_FILE = "sweep_results.json"
ORANGE, BLUE, GREY = "#ff7f0e", "#1f77b4", "#7f7f7f"
TABLE5_ORDER = ("wo_rc_rl", "w_rl", "w_rc", "cotraining", "cologen")

__all__ = ["render_report", "read_scalars", "read_block_usage", "table5_rows", "table5_markdown", "table5_findings",
           "figure4_panels"]


# ---------------------------------------------------------------------------------------------------- I/O helpers


def _save_fig(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fmt(v: Optional[float], d: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}f}"


# ---------------------------------------------------------------------------------------------------- TensorBoard


def _accumulator(tb_dir: Path):
    from tensorboard.backend.event_processing import event_accumulator as ea

    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # "No path found after ..." per event file

    acc = ea.EventAccumulator(str(tb_dir), size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.IMAGES: 1,
                                                          ea.TENSORS: 1, ea.COMPRESSED_HISTOGRAMS: 1, ea.AUDIO: 1})
    acc.Reload()
    return acc


def _tb_dir(step_dir: str | Path) -> Optional[Path]:
    tb = Path(step_dir) / "tb"
    return tb if tb.is_dir() and any(tb.rglob("events.out.tfevents*")) else None


def read_scalars(step_dir: str | Path, tags: Optional[Sequence[str]] = None) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] sorted by step (a resumed run's repeated steps: the last write wins)."""
    tb = _tb_dir(step_dir)
    if tb is None:
        return {}
    acc = _accumulator(tb)
    out = {}
    for tag in acc.Tags().get("scalars", []):
        if tags is not None and tag not in tags and not any(tag.startswith(t.rstrip("*")) for t in tags if t.endswith("*")):
            continue
        by_step = {e.step: e.value for e in acc.Scalars(tag)}
        out[tag] = sorted(by_step.items())
    return out


def read_block_usage(step_dir: str | Path, num_experts: int) -> tuple[list[int], np.ndarray]:
    """(logged steps, usage[step, block]): the share of routing decisions that chose the newest expert
    (index num_experts - 1) in each PRW block, from the `routing/block_XX` histograms (bins centred on integers)."""
    tb = _tb_dir(step_dir)
    if tb is None:
        return [], np.zeros((0, 0))
    acc = _accumulator(tb)
    tags = sorted(t for t in acc.Tags().get("histograms", []) if t.startswith("routing/block_"))
    if not tags:
        return [], np.zeros((0, 0))
    per_block: list[dict[int, float]] = []
    for tag in tags:
        series: dict[int, float] = {}
        for e in acc.Histograms(tag):
            h = e.histogram_value
            total = float(h.num) or float(sum(h.bucket))
            newest = sum(c for lim, c in zip(h.bucket_limit, h.bucket) if round(lim - 0.5) == num_experts - 1)
            series[e.step] = newest / total if total else float("nan")
        per_block.append(series)
    steps = sorted(set().union(*[s.keys() for s in per_block]))
    usage = np.array([[b.get(s, np.nan) for b in per_block] for s in steps], dtype=float)
    return steps, usage


def final_block_usage(step_dir: str | Path, num_experts: int, last: int = 3) -> Optional[np.ndarray]:
    """Per-block newest-expert share averaged over the last `last` logged steps (None without routing logs)."""
    steps, usage = read_block_usage(step_dir, num_experts)
    if not steps:
        return None
    return np.nanmean(usage[-last:], axis=0)


# ---------------------------------------------------------------------------------------------------- Figure 4


def figure4_panels(datas: Sequence[dict[str, Any]], metrics: Optional[Sequence[str]] = None) -> list[dict[str, Any]]:
    """One panel per (sweep axis, metric): x values, means, standard errors, which x is chosen."""
    panels = []
    for data in datas:
        axes = data.get("axes") or []
        mets = list(metrics or (data.get("report") or {}).get("metrics") or ["concept", "localization"])
        for axis in axes[:1]:  # figure-4 sweeps are one-dimensional; further axes become separate lines
            others = axes[1:]
            for metric in mets:
                lines: dict[str, dict[str, list]] = {}
                direction = None
                for p in data["points"]:
                    key = ", ".join(f"{a['name']}={p['axes'].get(a['name'])}" for a in others) or data["sweep"]
                    sm = metric_summary(p, metric)
                    if sm["mean"] is not None and direction is None:
                        direction = sm["direction"]
                    line = lines.setdefault(key, {"x": [], "y": [], "err": [], "seed_values": [], "chosen": [],
                                                  "names": []})
                    line["x"].append(p["axes"].get(axis["name"]))
                    line["y"].append(sm["mean"])
                    line["err"].append(sm["err"])
                    line["seed_values"].append(list(sm["values"].values()) if sm["kind"] == "seeds" else [])
                    line["chosen"].append(bool(p.get("chosen")))
                    line["names"].append(p["name"])
                panels.append({"sweep": data["sweep"], "axis": axis["name"], "keys": axis["keys"], "metric": metric,
                               "direction": direction or direction(metric), "lines": lines, "seeds": n_seeds(data)})
    return panels


def plot_figure4(panels: Sequence[dict[str, Any]], path: Path, title: str = "") -> Optional[Path]:
    if not panels:
        return None
    plt = _plt()
    axes_names = list(dict.fromkeys((p["sweep"], p["axis"]) for p in panels))
    metrics = list(dict.fromkeys(p["metric"] for p in panels))
    one = len(axes_names) == 1  # one sweep: the metrics side by side; several: a column per sweep axis
    nrows, ncols = (1, len(metrics)) if one else (len(metrics), len(axes_names))
    fig, grid = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.9 * nrows), squeeze=False)
    for panel in panels:
        i, j = metrics.index(panel["metric"]), axes_names.index((panel["sweep"], panel["axis"]))
        ax = grid[0][i] if one else grid[i][j]
        for li, (label, line) in enumerate(panel["lines"].items()):
            xs = list(range(len(line["x"])))
            ys = [np.nan if y is None else y for y in line["y"]]
            es = [0.0 if e is None else e for e in line["err"]]
            ax.errorbar(xs, ys, yerr=es, color=BLUE if li == 0 else None, marker="o", ms=4, capsize=3, lw=1.2,
                        label=label if len(panel["lines"]) > 1 else None)
            for x, seed_vals in zip(xs, line.get("seed_values") or []):  # each training seed's value
                if seed_vals:
                    ax.scatter([x + 0.08] * len(seed_vals), seed_vals, s=9, color=GREY, zorder=4)
            for x, y, e, c in zip(xs, ys, es, line["chosen"]):
                if c and not np.isnan(y):
                    ax.errorbar([x], [y], yerr=[e], color=ORANGE, marker="o", ms=9, capsize=4, lw=2, zorder=5)
                    ax.annotate(f"{y:.3f}", (x, y), textcoords="offset points", xytext=(6, 6), color=ORANGE, fontsize=8)
            ax.set_xticks(xs)
            ax.set_xticklabels([str(v) for v in line["x"]])
        arrow = "↑" if panel["direction"] == "higher" else "↓"
        ax.set_title(f"{panel['metric']} {arrow}" + ("" if one else f"  [{panel['sweep']}]"), fontsize=9)
        ax.set_xlabel(panel["axis"] + (" (LoRA alpha = 2 x rank)" if panel["axis"] == "rank" else ""), fontsize=9)
        ax.grid(alpha=0.3)
        if len(panel["lines"]) > 1:
            ax.legend(fontsize=7)
    seeds = max((p.get("seeds", 1) for p in panels), default=1)
    what = (f"mean over {seeds} training seeds ± 95 % t-interval, grey: each seed" if seeds > 1
            else "mean ± s.e. over images, one training seed")
    fig.suptitle((title + f" ({what})") if title else f"metric vs swept value ({what}; chosen setting in orange)",
                 fontsize=10)
    fig.tight_layout()
    return _save_fig(fig, path)


# ---------------------------------------------------------------------------------------------------- Table 5


def _default_groups(data: dict[str, Any]) -> list[dict[str, Any]]:
    groups = []
    for ev in data.get("eval") or []:
        name = ev["name"]
        subsets: list[str] = []
        sample = next((p["results"].get(name) for p in data["points"] if p["results"].get(name)), None)
        if sample is None:
            continue
        tasks = ev.get("tasks") or [s for s in sample.get("subsets", {}) if "/" not in s]
        for t in tasks:
            if t in sample.get("subsets", {}):
                subsets.append(t)
        if not subsets:
            groups.append({"title": name, "eval": name, "subset": None, "metrics": list(sample.get("metrics", {}))})
        for t in subsets:
            keys = list(sample["subsets"][t])
            ordered = ([k for k in ("concept", "localization") if k in keys]
                       + [k for k in keys if k not in ("concept", "localization")])
            groups.append({"title": f"{name} {t}", "eval": name, "subset": t, "metrics": ordered})
    return groups


def table5_rows(data: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(groups, rows): rows in Table 5 order (the known point names first, then the sweep's order)."""
    cfg = (data.get("report") or {}).get("table5") or {}
    groups = cfg.get("groups") or _default_groups(data)
    points = list(data["points"])
    order = {n: i for i, n in enumerate(cfg.get("order") or TABLE5_ORDER)}
    points.sort(key=lambda p: (order.get(p["name"], len(order)), p["index"]))
    rows = []
    for p in points:
        cells = []
        for g in groups:
            for m in g["metrics"]:
                sm = metric_summary(p, m, g.get("eval"), g.get("subset"))
                cells.append({"group": g["title"], "metric": m, "eval": g.get("eval"), "subset": g.get("subset"),
                              "mean": sm["mean"], "err": sm["err"], "kind": sm["kind"], "n": sm["n"],
                              "direction": sm["direction"]})
        rows.append({"name": p["name"], "label": p["label"], "chosen": p.get("chosen", False), "status": p["status"],
                     "samples": p["budget"].get("samples"), "cells": cells, "point": p})
    return groups, rows


def table5_markdown(data: dict[str, Any]) -> str:
    """The Table 5 layout: one block of rows per benchmark group, metric columns with +- s.e., best in bold."""
    groups, rows = table5_rows(data)
    if not groups or not rows:
        return "_no evaluated points yet_\n"
    out = []
    for g in groups:
        labels = g.get("labels") or g["metrics"]
        head = ["Benchmark", "Method"] + [f"{lab} {'↑' if _cell_dir(rows, g, m) == 'higher' else '↓'}"
                                          for lab, m in zip(labels, g["metrics"])] + ["samples", "status"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join(["---"] * len(head)) + "|")
        best = {}
        for m in g["metrics"]:
            vals = [(c["mean"], c["direction"]) for r in rows for c in r["cells"]
                    if c["group"] == g["title"] and c["metric"] == m and c["mean"] is not None]
            if vals and len({v for v, _ in vals}) > 1:  # all equal: nothing to highlight
                best[m] = (max if vals[0][1] == "higher" else min)(v for v, _ in vals)
        for r in rows:
            cells = []
            for c in r["cells"]:
                if c["group"] != g["title"]:
                    continue
                text = _fmt(c["mean"]) + (f" ± {_fmt(c['err'])}" if c["err"] is not None else "")
                if c["mean"] is not None and best.get(c["metric"]) == c["mean"]:
                    text = f"**{text}**"
                cells.append(text)
            label = f"**{r['label']}**" if r["chosen"] else r["label"]
            out.append("| " + " | ".join([g["title"], label] + cells + [str(r["samples"]), r["status"]]) + " |")
        out.append("")
    kinds = {(c["kind"], c["n"]) for r in rows for c in r["cells"] if c["kind"] != "none"}
    if kinds:
        out += ["± : " + "; ".join(sorted({err_label(k, n) for k, n in kinds})) + ".", ""]
    return "\n".join(out)


def _cell_dir(rows, g, m) -> str:
    for r in rows:
        for c in r["cells"]:
            if c["group"] == g["title"] and c["metric"] == m and c["mean"] is not None:
                return c["direction"]
    return direction(m)


def table5_findings(data: dict[str, Any]) -> list[str]:
    """Plain statements: every row vs the chosen one (CoLoGen), co-training (staged vs co-training) and the baseline
    first; a metric counts as better / worse only when the interval of the difference excludes zero."""
    groups, rows = table5_rows(data)
    cfg = (data.get("report") or {}).get("table5") or {}
    chosen = next((r for r in rows if r["chosen"]), None)
    if chosen is None:
        return []
    baseline = cfg.get("baseline", "wo_rc_rl")
    first = {"cotraining": 0, baseline: 1}
    others = sorted((r for r in rows if r is not chosen), key=lambda r: first.get(r["name"], 2))
    out = []
    for other in others:
        what = {"cotraining": "co-training", baseline: "the baseline (w/o R_c & R_l)"}.get(other["name"], other["label"])
        wins, losses, ties, pairs = [], [], [], []
        for a, b in zip(chosen["cells"], other["cells"]):
            pair = paired_summary(chosen["point"], other["point"], a["metric"], a.get("eval"), a.get("subset"))
            if pair is None:
                continue
            pairs.append(pair)
            item = f"{a['group']} {a['metric']} ({pair_text(pair)})"
            {"better": wins, "worse": losses, "none": ties}[verdict(pair)].append(item)
        if not pairs:
            continue
        out.append(f"**{chosen['label']} vs {what}** ({basis_text(pairs)}): better on {len(wins)}, worse on "
                   f"{len(losses)} metrics; no detectable difference at this budget on {len(ties)} (the interval "
                   f"includes zero)."
                   + (f" Better: {'; '.join(wins)}." if wins else "")
                   + (f" Worse: {'; '.join(losses)}." if losses else ""))
    return out


def plot_table5(data: dict[str, Any], path: Path) -> Optional[Path]:
    """Bars per group: concept / localization (or the group's first two metrics) per row, CoLoGen in orange."""
    groups, rows = table5_rows(data)
    if not groups or not rows:
        return None
    plt = _plt()
    panels = [(g, m) for g in groups for m in g["metrics"][:2]]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), squeeze=False)
    for ax, (g, m) in zip(axes[0], panels):
        vals, errs, colors = [], [], []
        for r in rows:
            c = next(c for c in r["cells"] if c["group"] == g["title"] and c["metric"] == m)
            vals.append(np.nan if c["mean"] is None else c["mean"])
            errs.append(c["err"] or 0.0)
            colors.append(ORANGE if r["chosen"] else BLUE if r["name"] != "cotraining" else GREY)
        ax.bar(range(len(rows)), vals, yerr=errs, color=colors, capsize=3)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([r["label"].replace(" (", "\n(") for r in rows], rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{g['title']}\n{m}", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save_fig(fig, path)


# ---------------------------------------------------------------------------------------------------- routing / curves


def plot_usage_matrix(labels: Sequence[str], matrix: Sequence[Optional[np.ndarray]], path: Path, title: str,
                      rhos: Optional[Sequence[Optional[float]]] = None) -> Optional[Path]:
    """Rows (steps or points) x PRW blocks: the newest expert's share at the end of the step."""
    rows = [(lab, m, (rhos or [None] * len(labels))[i]) for i, (lab, m) in enumerate(zip(labels, matrix)) if m is not None]
    if not rows:
        return None
    plt = _plt()
    width = max(len(m) for _, m, _ in rows)
    data = np.full((len(rows), width), np.nan)
    for i, (_, m, _) in enumerate(rows):
        data[i, : len(m)] = m
    fig, ax = plt.subplots(figsize=(4.5 + 0.55 * width, 1.2 + 0.45 * len(rows)))
    im = ax.imshow(data, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            if not np.isnan(data[i, j]):
                ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if data[i, j] < 0.5 else "black")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{lab}" + (f" (rho {rho})" if rho is not None else "") + f"  mean {np.nanmean(m):.2f}"
                        for lab, m, rho in rows], fontsize=8)
    ax.set_xticks(range(width))
    ax.set_xticklabels([str(j) for j in range(width)], fontsize=7)
    ax.set_xlabel("PRW block (double blocks first, then single)", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03, label="newest-expert share")
    fig.tight_layout()
    return _save_fig(fig, path)


def plot_usage_over_time(step_dir: str | Path, num_experts: int, rho: Optional[float], path: Path,
                         title: str) -> Optional[Path]:
    """Blocks x logged training steps heatmap of the newest expert's share, and U_t (mean) against rho."""
    steps, usage = read_block_usage(step_dir, num_experts)
    if not steps:
        return None
    plt = _plt()
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(9, 2.8), gridspec_kw={"width_ratios": [2, 1]})
    im = a0.imshow(usage.T, vmin=0, vmax=1, cmap="viridis", aspect="auto", interpolation="nearest",
                   extent=(steps[0], steps[-1], usage.shape[1] - 0.5, -0.5))
    a0.set_xlabel("training step", fontsize=8)
    a0.set_ylabel("block", fontsize=8)
    fig.colorbar(im, ax=a0, fraction=0.04, label="newest-expert share")
    scal = read_scalars(step_dir, ["train/U_t", "train/U_soft"])
    for tag, color in (("train/U_t", BLUE), ("train/U_soft", GREY)):
        if scal.get(tag):
            x, y = zip(*scal[tag])
            a1.plot(x, y, color=color, lw=1, label=tag.split("/")[1])
    if rho is not None:
        a1.axhline(rho, color=ORANGE, ls="--", lw=1, label=f"rho {rho}")
    a1.set_ylim(-0.02, 1.02)
    a1.legend(fontsize=7)
    a1.set_xlabel("training step", fontsize=8)
    a1.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save_fig(fig, path)


def _ema(y: Sequence[float], k: float = 0.3) -> list[float]:
    out, m = [], None
    for v in y:
        m = v if m is None else (1 - k) * m + k * v
        out.append(m)
    return out


def plot_curves(series: Sequence[dict[str, Any]], path: Path, title: str) -> Optional[Path]:
    """series: [{label, chosen, steps: [{name, dir, rho}]}]: train loss (EMA), U_t vs rho, val loss over the
    concatenated steps (x = iterations since the first listed step)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    anything, has_val = False, False
    cmap = plt.get_cmap("tab10")
    palette = [cmap(i) for i in (0, 2, 3, 4, 5, 6, 7, 8, 9)]  # orange is kept for the chosen setting
    for i, s in enumerate(series):
        color = ORANGE if s.get("chosen") else palette[i % len(palette)] if len(series) > 1 else BLUE
        offset = 0
        for j, st in enumerate(s["steps"]):
            scal = read_scalars(st["dir"], ["train/loss_task", "train/U_t", "val/loss"])
            length = st.get("max_steps") or 0
            lab = s["label"] if j == 0 else None
            if scal.get("train/loss_task"):
                x, y = zip(*scal["train/loss_task"])
                axes[0].plot([offset + v for v in x], _ema(y), color=color, lw=1, label=lab)
                anything = True
            if scal.get("train/U_t"):
                x, y = zip(*scal["train/U_t"])
                axes[1].plot([offset + v for v in x], y, color=color, lw=1, label=lab)
                if st.get("rho") is not None:
                    axes[1].hlines(st["rho"], offset, offset + length, color=color, ls="--", lw=0.8)
            if scal.get("val/loss"):
                x, y = zip(*scal["val/loss"])
                axes[2].plot([offset + v for v in x], y, color=color, marker=".", lw=1, label=lab)
                has_val = True
            if len(s["steps"]) > 1:
                for ax in axes:
                    ax.axvline(offset, color=GREY, lw=0.5, alpha=0.5)
            offset += length
    if not anything:
        plt.close(fig)
        return None
    for ax, t in zip(axes, ("train/loss_task (EMA)", "train/U_t (dashed: rho)", "val/loss (each step: its own tasks)")):
        ax.set_title(t, fontsize=9)
        ax.set_xlabel("iteration (steps concatenated)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if not has_val:
        axes[2].text(0.5, 0.5, "no validation logged\n(train.val_every = 0)", ha="center", va="center",
                     transform=axes[2].transAxes, color=GREY)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save_fig(fig, path)


# ---------------------------------------------------------------------------------------------------- sections


def _rel(path: Optional[Path], base: Path) -> str:
    return os.path.relpath(path, base) if path else ""


def _img(path: Optional[Path], base: Path, alt: str) -> str:
    return f"![{alt}]({_rel(path, base)})\n" if path else f"_{alt}: no data yet_\n"


def _budget_table(data: dict[str, Any]) -> str:
    lines = ["| point | status | steps after the prefix (iterations x batch) | samples | factor | train s |",
             "|---|---|---|---|---|---|"]
    for p in data["points"]:
        own = [s for s in p["steps"] if not s["shared"]]
        desc = ", ".join(f"{s['name']} {s['max_steps']}x{s['global_batch']}" for s in own)
        name = f"**{p['name']}**" if p.get("chosen") else p["name"]
        secs = p["train_seconds"] if any(s["seconds"] for s in own) else "-"
        lines.append(f"| {name} | {p['status']} | {desc} | {p['budget'].get('samples')} | {p['budget'].get('factor')} "
                     f"| {secs} |")
    return "\n".join(lines) + "\n"


def unavailable_notes(data: dict[str, Any]) -> list[str]:
    """``point / eval: metric: reason`` for every metric a point's results could not compute (shown as n/a)."""
    return [f"`{p['name']}` / {name}: {metric}: {why}" for p in data["points"]
            for name, r in (p.get("results") or {}).items() for metric, why in (r.get("unavailable") or {}).items()]


def _metrics_table(data: dict[str, Any], metrics: Sequence[str]) -> str:
    head = ["point"] + list(metrics)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    kinds = set()
    for p in data["points"]:
        cells = []
        for m in metrics:
            sm = metric_summary(p, m)
            if sm["mean"] is None and any(m in (r.get("unavailable") or {}) for r in (p.get("results") or {}).values()):
                cells.append("n/a")  # the reason: "Metrics not computed" below the table
                continue
            if sm["kind"] != "none":
                kinds.add((sm["kind"], sm["n"]))
            cells.append(_fmt(sm["mean"]) + (f" ± {_fmt(sm['err'])}" if sm["err"] is not None else ""))
        name = f"**{p['name']}**" if p.get("chosen") else p["name"]
        lines.append("| " + " | ".join([name] + cells) + " |")
    if kinds:
        lines += ["", "± : " + "; ".join(sorted({err_label(k, n) for k, n in kinds})) + "."]
    return "\n".join(lines) + "\n"


def _figure4_findings(data: dict[str, Any], metrics: Sequence[str]) -> list[str]:
    """Per metric: the best point, and every point vs the chosen one (better / worse only when the interval of the
    difference excludes zero)."""
    out = []
    chosen = [p for p in data["points"] if p.get("chosen")]
    if not chosen or not data.get("axes"):
        return out
    c = chosen[0]
    for m in metrics:
        cm = metric_summary(c, m)
        vals = [(p, metric_summary(p, m)) for p in data["points"]]
        vals = [(p, sm) for p, sm in vals if sm["mean"] is not None]
        if len(vals) < 2 or cm["mean"] is None:
            continue
        direction = cm["direction"]
        best = (max if direction == "higher" else min)(vals, key=lambda v: v[1]["mean"])
        buckets: dict[str, list[str]] = {"better": [], "worse": [], "none": []}
        pairs = []
        for p, _sm in vals:
            if p["name"] == c["name"]:
                continue
            pair = paired_summary(p, c, m)
            if pair is None:
                continue
            pairs.append(pair)
            buckets[verdict(pair)].append(f"{p['name']} ({pair_text(pair)})")
        head = (f"the chosen setting ({c['name']}, {cm['mean']:.3f}) is the best point or tied with it"
                if best[0]["name"] == c["name"] or abs(best[1]["mean"] - cm["mean"]) < 1e-12
                else f"best is {best[0]['name']} ({best[1]['mean']:.3f}) vs chosen {c['name']} ({cm['mean']:.3f})")
        parts = [f"better than the chosen setting: {'; '.join(buckets['better'])}" if buckets["better"] else "",
                 f"worse: {'; '.join(buckets['worse'])}" if buckets["worse"] else "",
                 f"no detectable difference at this budget: {'; '.join(buckets['none'])}" if buckets["none"] else ""]
        out.append(f"`{m}`: {head}; each point - chosen ({basis_text(pairs)}): "
                   + "; ".join(x for x in parts if x) + ".")
    return out


def _seed_table(data: dict[str, Any], specs: Sequence[tuple[str, str, Optional[str], Optional[str]]]) -> str:
    """Per point and metric: each training seed's value and the mean [95 % t-interval] (one seed: no interval)."""
    seeds = list(dict.fromkeys(r.get("seed") for p in data["points"] for r in seed_runs(p)))
    head = ["point", "metric"] + [f"seed {s}" for s in seeds] + ["mean [95 % CI across seeds]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for p in data["points"]:
        for title, m, ev, sub in specs:
            sm = metric_summary(p, m, ev, sub)
            if sm["kind"] == "none":
                continue
            per = [_fmt(sm["values"].get(s)) for s in seeds]
            agg = (f"{sm['mean']:.3f} [{sm['ci'][0]:.3f}, {sm['ci'][1]:.3f}]" if sm["kind"] == "seeds"
                   else f"{_fmt(sm['mean'])} (one seed: no interval)")
            name = f"**{p['name']}**" if p.get("chosen") else p["name"]
            lines.append("| " + " | ".join([name, title] + per + [agg]) + " |")
    return "\n".join(lines) + "\n"


def _sweep_section(data: dict[str, Any], run_dir: Path, out: Path, md_dir: Path,
                   metrics: Optional[Sequence[str]]) -> list[str]:
    """The markdown of one sweep: header and seeds, budgets, the results layout, routing, curves, problems."""
    tag = data["sweep"].replace("/", "-")
    md = _sweep_header(data) + ["### Points and budgets", "", _budget_table(data)]
    md += _sweep_results(data, out, md_dir, tag, metrics)
    md += _sweep_routing(data, out, md_dir, tag) + _sweep_curves(data, out, md_dir, tag)
    missing = unavailable_notes(data)
    if missing:
        md += ["### Metrics not computed", ""] + [f"- {m}" for m in missing] + [""]
    failed = [p for p in data["points"] if p["status"] == "failed"]
    if failed:
        md += ["### Failed points", ""] + [f"- `{p['name']}`: `{(p.get('error') or '').strip().splitlines()[-1:]}`"
                                           for p in failed] + [""]
    return md


def _sweep_header(data: dict[str, Any]) -> list[str]:
    """Title, description, config / prefix / budget line and what the training seeds mean for the intervals."""
    md = [f"## Sweep `{data['sweep']}` ({data['kind']})", ""]
    if data.get("description"):
        md += [data["description"], ""]
    md += [f"Config `{data['config']}`; prefix `{data['prefix']['dir']}` "
           f"({', '.join(s['name'] + ' [' + s['state'] + ']' for s in data['prefix']['steps']) or 'none'}); "
           f"budget matching: `{data['budget'].get('match')}`"
           + (f" (reference `{data['budget'].get('reference')}`)" if data['budget'].get('reference') else "")
           + f"; training overrides: `{' '.join(data.get('train_overrides') or []) or 'none'}`.", ""]
    seeds = data.get("seeds") or [None]
    if n_seeds(data) > 1:
        md += [f"Training seeds: {seeds} (train.seed of every step, the shared prefix included; each point trained "
               f"and evaluated once per seed on the same images). Values are means over seeds ± the half-width of "
               f"the 95 % t-interval across seeds (t_0.975,n-1 · s / sqrt(n)); comparisons are paired by seed. "
               f"Routing and training curves show the first seed ({seeds[0]}).", ""]
    else:
        md += [f"Training seed: {seeds[0] if seeds[0] is not None else 'one (not recorded)'}. "
               f"**One training seed**: every ± and every interval below is over the evaluated images only "
               f"(per-image standard error); training-seed variation is not covered (`--seeds 0,1,2` trains each "
               f"point once per seed).", ""]
    return md


def _sweep_results(data: dict[str, Any], out: Path, md_dir: Path, tag: str,
                   metrics: Optional[Sequence[str]]) -> list[str]:
    """The Table 5 or Figure 4 layout (or a plain metrics table), its findings, and the per-seed table."""
    md: list[str] = []
    mets = list(metrics or (data.get("report") or {}).get("metrics") or [])
    specs: list[tuple[str, str, Optional[str], Optional[str]]] = []
    if data["kind"] == "table5":
        md += ["### Table 5 layout", "", table5_markdown(data)]
        md += [f"- {f}" for f in table5_findings(data)] + [""]
        md.append(_img(plot_table5(data, out / f"{tag}_table5.png"), md_dir, "Table 5 bars"))
        specs = [(f"{g['title']} {m}", m, g.get("eval"), g.get("subset")) for g in table5_rows(data)[0]
                 for m in g["metrics"]]
    elif data.get("axes"):
        panels = figure4_panels([data], mets or None)
        png = plot_figure4(panels, out / f"{tag}_figure4.png",
                           f"{data['sweep']}: metric vs {data['axes'][0]['name']}")
        md += ["### Figure 4 layout", "", _img(png, md_dir, "Figure 4")]
        mets = mets or list(dict.fromkeys(p["metric"] for p in panels))
        md += [_metrics_table(data, mets)]
        md += [f"- {f}" for f in _figure4_findings(data, mets)] + [""]
        specs = [(m, m, None, None) for m in mets]
    else:
        mets = mets or ["concept", "localization"]
        md += [_metrics_table(data, mets)]
        specs = [(m, m, None, None) for m in mets]
    if n_seeds(data) > 1 and specs:
        md += ["### Per training seed", "", _seed_table(data, specs)]
    return md


def _sweep_routing(data: dict[str, Any], out: Path, md_dir: Path, tag: str) -> list[str]:
    """Routing usage: the swept step(s) of every point (every step of each point for table5), and the chosen point's
    usage over training."""
    seeds = data.get("seeds") or [None]
    md = ["### Routing usage (newest expert's share per PRW block, end of step)"
          + (f" -- training seed {seeds[0]}" if n_seeds(data) > 1 else ""), ""]
    if data["kind"] == "table5":
        for p in data["points"]:
            labels = [s["name"] for s in p["steps"] if s["experts"] > 1 or not s["shared"]]
            mats = [final_block_usage(s["dir"], s["experts"]) for s in p["steps"] if s["experts"] > 1 or not s["shared"]]
            rhos = [s["rho"] for s in p["steps"] if s["experts"] > 1 or not s["shared"]]
            png = plot_usage_matrix(labels, mats, out / f"{tag}_routing_{p['name']}.png", f"{p['label']}: U per block",
                                    rhos)
            md.append(_img(png, md_dir, f"routing {p['name']}"))
    else:
        labels, mats, rhos = [], [], []
        for p in data["points"]:
            last = p["steps"][-1]
            labels.append(p["name"])
            mats.append(final_block_usage(last["dir"], last["experts"]))
            rhos.append(last["rho"])
        md.append(_img(plot_usage_matrix(labels, mats, out / f"{tag}_routing.png",
                                         f"{data['sweep']}: last step, U per block", rhos), md_dir, "routing per point"))
    chosen = next((p for p in data["points"] if p.get("chosen")), data["points"][0] if data["points"] else None)
    if chosen:
        last = chosen["steps"][-1]
        md.append(_img(plot_usage_over_time(last["dir"], last["experts"], last["rho"],
                                            out / f"{tag}_routing_time_{chosen['name']}.png",
                                            f"{chosen['name']} / {last['name']}: U per block over training"),
                       md_dir, "routing over training"))
    return md


def _sweep_curves(data: dict[str, Any], out: Path, md_dir: Path, tag: str) -> list[str]:
    """Training curves of the steps after the shared prefix, and of the prefix itself."""
    name = data["sweep"]
    md = ["### Training curves", ""]
    series = [{"label": p["name"], "chosen": p.get("chosen"),
               "steps": [s for s in p["steps"] if not s["shared"]]} for p in data["points"]]
    md.append(_img(plot_curves(series, out / f"{tag}_curves.png", f"{name}: steps after the shared prefix"),
                   md_dir, "training curves"))
    prefix_steps = [{"name": s["name"], "dir": s["dir"], "max_steps": s.get("max_steps"), "rho": None}
                    for s in (data["points"][0]["steps"] if data["points"] else []) if s["shared"]]
    if prefix_steps:
        md.append(_img(plot_curves([{"label": "shared prefix", "steps": prefix_steps}],
                                   out / f"{tag}_prefix_curves.png", f"{name}: shared prefix steps"),
                       md_dir, "prefix curves"))
    return md


def _curriculum_section(run_dir: Path, out: Path, md_dir: Path) -> list[str]:
    steps = sorted((d for d in run_dir.iterdir() if d.is_dir() and (d / "config.yaml").is_file()),
                   key=lambda d: (int(d.name.split("_", 1)[0]) if d.name.split("_", 1)[0].isdigit() else 1 << 30, d.name))
    if not steps:
        return []
    from omegaconf import OmegaConf

    infos = []
    for d in steps:
        cfg = OmegaConf.load(d / "config.yaml")
        infos.append({"name": d.name, "dir": str(d), "experts": int(OmegaConf.select(cfg, "model.prw.num_experts", default=1)),
                      "rho": OmegaConf.select(cfg, "veteran.rho"), "max_steps": OmegaConf.select(cfg, "train.max_steps"),
                      "blocks": OmegaConf.select(cfg, "model.prw.blocks"),
                      "done": (json.loads((d / "final" / "done.json").read_text())
                               if (d / "final" / "done.json").is_file() else None)})
    md = [f"## Curriculum run `{run_dir}`", "", "| step | experts | iterations | rho | state | seconds |",
          "|---|---|---|---|---|---|"]
    for i in infos:
        md.append(f"| {i['name']} | {i['experts']} | {i['max_steps']} | {i['rho']} | "
                  f"{'done' if i['done'] else 'unfinished'} | {(i['done'] or {}).get('seconds', '-')} |")
    md.append("")
    routed = [i for i in infos if i["blocks"] != "none"]
    mats = [final_block_usage(i["dir"], i["experts"]) for i in routed]
    tag = run_dir.name
    md += ["### Routing usage", "", _img(plot_usage_matrix([i["name"] for i in routed], mats,
                                                           out / f"{tag}_routing.png", "U per block, end of each step",
                                                           [i["rho"] for i in routed]), md_dir, "routing")]
    for i in routed:
        if i["experts"] > 1:
            md.append(_img(plot_usage_over_time(i["dir"], i["experts"], i["rho"], out / f"{tag}_routing_time_{i['name']}.png",
                                                f"{i['name']}: U per block over training"), md_dir, f"routing {i['name']}"))
    md += ["### Training curves", "", _img(plot_curves([{"label": tag, "steps": infos}], out / f"{tag}_curves.png",
                                                       f"{tag}: all steps"), md_dir, "curves")]
    return md


def _load(path: Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def render_report(run_dir: str | Path, out_dir: Optional[str | Path] = None,
                  metrics: Optional[Sequence[str]] = None) -> Path:
    """Write `<out_dir>/report.md` (default RUN_DIR/report) and its PNGs; returns the markdown path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: not a folder")
    out = Path(out_dir) if out_dir else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    sweeps = []
    if (run_dir / RESULTS_FILE).is_file():
        sweeps = [run_dir / RESULTS_FILE]
    else:
        sweeps = sorted(run_dir.glob(f"*/{RESULTS_FILE}"))
    datas = [d for d in (_load(p) for p in sweeps) if d is not None]
    md = [f"# Report: `{run_dir}`", ""]
    if len(datas) > 1:
        fig4 = [d for d in datas if d["kind"] == "figure4" and d.get("axes")]
        if fig4:
            panels = figure4_panels(fig4, metrics)
            md += ["## Figure 4 (all sweeps)", "", _img(plot_figure4(panels, out / "figure4.png",
                                                                      "Figure 4 layout: metric vs alpha / rank / rho"),
                                                         out, "Figure 4"), ""]
    for d in datas:
        md += _sweep_section(d, run_dir, out, out, metrics)
    if not datas:
        section = _curriculum_section(run_dir, out, out)
        if not section:
            raise FileNotFoundError(f"{run_dir}: no {RESULTS_FILE}, no */{RESULTS_FILE} and no step folders "
                                    f"(*/config.yaml) to report on")
        md += section
    if any(n_seeds(d) > 1 for d in datas):
        md += ["", "_Sweeps with several training seeds: means over seeds ± the half-width of the 95 % t-interval "
               "across seeds (t_0.975,n-1 from the NIST/SEMATECH table, `benchmarks/stats.py`); differences are "
               "paired by seed and called real only when their interval excludes zero._"]
    if any(n_seeds(d) == 1 for d in datas):
        md += ["", "_Sweeps with one training seed: means ± standard error over the evaluated images; differences "
               "are unpaired ± 1.96 s.e. over images (the points share prompts and seeds, so the s.e. is "
               "conservative) and do not cover training-seed variation._"]
    md += ["", "_Routing shares come from the TensorBoard `routing/block_XX` histograms (one training batch per "
           "logged step, averaged over the last 3 logs)._", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(md))
    return path
