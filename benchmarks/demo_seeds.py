"""Across-seed statistics of the demo (``cologen demo --seeds K``): every arm is trained once per training seed and
evaluated on the same held-out images; a metric is reported as its mean over the seeds with a 95 % t-interval
across them, and staged vs co-training as the paired per-seed difference with its own interval.

The interval is ``mean +- t_{0.975, K-1} * sd / sqrt(K)`` (sd over the K per-seed values, ``benchmarks/stats.py``):
it is about training-seed variation (each seed's value is itself a mean over the held-out images). A difference is
called real only when its interval excludes zero; otherwise the report says "no detectable difference at this
budget". With one seed there is no interval across seeds, and the report says so.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from benchmarks.stats import excludes_zero, mean_interval, paired_difference

NO_DIFFERENCE = "no detectable difference at this budget"


def across_seeds(per_seed: Mapping[int, Mapping[str, Mapping[str, Any]]], metrics: Mapping[str, bool],
                 a: str = "staged", b: str = "co-training") -> dict[str, Any]:
    """Aggregate ``per_seed[seed][model] = {metric: value}``.

    Args:
        per_seed: each training seed's metrics per model (the same model names in every seed).
        metrics: metric -> True when higher is better (the direction of the paired difference).
        a, b: the two arms compared seed by seed.

    Returns:
        ``{"seeds": [...], "models": {model: {metric: mean_interval}}, "paired": {metric: paired_difference of
        a - b, sign-adjusted so that > 0 means a is better, plus "verdict"}}``.
    """
    seeds = sorted(per_seed)
    models = sorted({m for s in seeds for m in per_seed[s]})
    out: dict[str, Any] = {"seeds": seeds, "models": {}, "paired": {}}
    for model in models:
        out["models"][model] = {m: mean_interval([_value(per_seed[s].get(model, {}), m) for s in seeds])
                                for m in metrics}
    for metric, higher in metrics.items():
        sign = 1.0 if higher else -1.0
        va = {s: _signed(_value(per_seed[s].get(a, {}), metric), sign) for s in seeds}
        vb = {s: _signed(_value(per_seed[s].get(b, {}), metric), sign) for s in seeds}
        diff = paired_difference(va, vb)
        diff["verdict"] = verdict(diff, a, b)
        out["paired"][metric] = diff
    return out


def verdict(diff: Mapping[str, Any], a: str = "staged", b: str = "co-training") -> str:
    """Words for a sign-adjusted paired difference (> 0: ``a`` better)."""
    n = diff.get("n", 0)
    if n < 2:
        return ("one training seed: no interval across seeds" if n == 1
                else "no seed has a value on both sides: nothing to compare")
    if not excludes_zero(diff.get("ci95")):
        return NO_DIFFERENCE
    return f"{a} better" if diff["mean"] > 0 else f"{b} better"


def fmt_interval(stat: Optional[Mapping[str, Any]]) -> str:
    """``0.812 +- 0.031`` (mean +- 95 % half-width), ``0.812`` with one value, ``n/a`` with none."""
    if not stat or stat.get("mean") is None:
        return "n/a"
    if stat.get("half_width") is None:
        return f"{stat['mean']:.3f}"
    return f"{stat['mean']:.3f} +- {stat['half_width']:.3f}"


def seed_lines(agg: Mapping[str, Any], metrics: Mapping[str, bool], models: list[str]) -> list[str]:
    """The report's across-seed section: per metric, each model's mean +- half-width, and staged vs co-training."""
    seeds = agg["seeds"]
    lines = ["## Across training seeds", "",
             f"Training seeds {seeds}: each arm trained once per seed, all evaluated on the same held-out images. "
             f"Values: mean over the {len(seeds)} seeds +- the half-width of a 95 % t-interval across seeds "
             f"(t_0.975 with {max(len(seeds) - 1, 0)} degrees of freedom, sample sd). Staged - co-training: the "
             "mean of the per-seed paired differences, signed so that > 0 means staged is better, with its 95 % "
             "t-interval; a difference is called real only when the interval excludes zero.", "",
             "| metric | " + " | ".join(models) + " | staged - co-training [95 % CI] | verdict |",
             "|---|" + "---|" * len(models) + "---|---|"]
    for metric in metrics:
        cells = [fmt_interval(agg["models"].get(m, {}).get(metric)) for m in models]
        d = agg["paired"][metric]
        ci = d.get("ci95")
        diff = "n/a" if d.get("mean") is None else f"{d['mean']:+.3f}" + (
            f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")
        lines.append(f"| {metric} | " + " | ".join(cells) + f" | {diff} | {d['verdict']} |")
    return lines + [""]


def _value(metrics: Mapping[str, Any], key: str) -> Optional[float]:
    v = metrics.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _signed(v: Optional[float], sign: float) -> Optional[float]:
    return None if v is None else sign * v
