"""Sweep numbers with their uncertainty: a point's metric value, its summary over training seeds (mean +- 95 %
t-interval across seeds) or over images (one seed: +- s.e.), the paired difference of two points, and the words a
report uses for them ("better" / "worse" only when the interval excludes zero; otherwise "no detectable difference
at this budget"). The interval math is :mod:`benchmarks.stats`; the report (:mod:`benchmarks.sweeps.report`) lays
these out.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

from benchmarks.stats import excludes_zero, mean_interval, paired_difference

Z_975 = 1.96  # one seed: the normal 95 % interval over images
ONE_SEED_NOTE = ("one training seed: intervals over the evaluated images only (per-image s.e.); training-seed "
                 "variation is not covered")


def metric_value(point: dict[str, Any], metric: str, eval_name: Optional[str] = None,
                 subset: Optional[str] = None) -> tuple[Optional[float], Optional[float], str]:
    """(mean, standard error, direction) of `metric` in a collected point's results.

    `metric`: a results key (`concept`, `edit/l1`), or `<subset>/<name>` for a per-subset mean (`edit/concept`);
    `subset` given: the metric within that subset. `eval:metric` picks an evaluation by name."""
    if ":" in metric and eval_name is None:
        eval_name, metric = metric.split(":", 1)
    evals = point.get("results", {})
    names = [eval_name] if eval_name else list(evals)
    for name in names:
        r = evals.get(name)
        if not r:
            continue
        se_all = (r.get("stderr") or {}).get("all", {})
        se_sub = (r.get("stderr") or {}).get("subsets", {})
        dirs = r.get("metric_directions", {})
        candidates = []
        if subset is not None:
            candidates.append((subset, metric))
        elif metric in r.get("metrics", {}):
            return r["metrics"][metric], se_all.get(metric), dirs.get(metric, "higher")
        elif "/" in metric:
            candidates.append(tuple(metric.split("/", 1)))
        for sub, name_ in candidates:
            val = r.get("subsets", {}).get(sub, {}).get(name_)
            if val is not None:
                direction = dirs.get(name_, dirs.get(f"{sub}/{name_}", "higher"))
                return val, se_sub.get(sub, {}).get(name_), direction
    return None, None, "higher"


def direction(metric: str) -> str:
    low = ("l1", "fid", "rmse", "masked_l1", "lpips")
    return "lower" if metric.split("/")[-1] in low else "higher"


def seed_runs(point: dict[str, Any]) -> list[dict[str, Any]]:
    """A collected point's per-seed runs (a results file from before seeds: the point itself, one run)."""
    return point.get("seeds") or [point]


def n_seeds(data: dict[str, Any]) -> int:
    """The most training seeds any point of a collected sweep has."""
    return max((len(seed_runs(p)) for p in data.get("points") or []), default=1)


def seed_values(point: dict[str, Any], metric: str, eval_name: Optional[str] = None,
                subset: Optional[str] = None) -> dict[Any, tuple[Optional[float], Optional[float], str]]:
    """seed -> :func:`metric_value` of that seed's run (mean, per-image s.e., direction)."""
    return {r.get("seed"): metric_value(r, metric, eval_name, subset) for r in seed_runs(point)}


def metric_summary(point: dict[str, Any], metric: str, eval_name: Optional[str] = None,
                   subset: Optional[str] = None) -> dict[str, Any]:
    """``{mean, err, ci, kind, n, values, direction}``: over the seeds that have the metric. ``kind`` "seeds" (two or
    more): mean over seeds, ``err`` the 95 % t-interval half-width, ``ci`` the interval; "images" (one seed): that
    seed's mean, ``err`` its per-image s.e., ``ci`` None (one seed: no interval across seeds); "none": no value."""
    per = seed_values(point, metric, eval_name, subset)
    vals = {s: v[0] for s, v in per.items() if v[0] is not None}
    direction = next((v[2] for v in per.values() if v[0] is not None), "higher")
    out = {"mean": None, "err": None, "ci": None, "kind": "none", "n": len(vals), "values": vals,
           "direction": direction}
    if len(vals) >= 2:
        st = mean_interval(list(vals.values()))
        out.update(mean=st["mean"], err=st["half_width"], ci=st["ci95"], kind="seeds")
    elif vals:
        seed, v = next(iter(vals.items()))
        out.update(mean=v, err=per[seed][1], kind="images")
    return out


def paired_summary(a: dict[str, Any], b: dict[str, Any], metric: str, eval_name: Optional[str] = None,
                   subset: Optional[str] = None) -> Optional[dict[str, Any]]:
    """a - b for one metric: ``{diff, ci, kind, n, seeds, differences, z, direction}`` or None (no common value).

    Two or more seeds with a value on both sides: the per-seed differences d_s = a_s - b_s, their mean and 95 %
    t-interval (kind "seeds"). One common seed: the difference +- 1.96 sqrt(se_a^2 + se_b^2) with the per-image
    standard errors (kind "images": over images only, unpaired; ``ci`` None without standard errors)."""
    pa, pb = seed_values(a, metric, eval_name, subset), seed_values(b, metric, eval_name, subset)
    d = paired_difference({s: v[0] for s, v in pa.items()}, {s: v[0] for s, v in pb.items()})
    if d["n"] == 0:
        return None
    direction = pa[d["seeds"][0]][2]
    out = {"diff": d["mean"], "ci": d["ci95"], "kind": "seeds", "n": d["n"], "seeds": d["seeds"],
           "differences": d["differences"], "z": None, "direction": direction}
    if d["n"] == 1:
        seed = d["seeds"][0]
        ses = [pa[seed][1], pb[seed][1]]
        se = math.sqrt(sum(x ** 2 for x in ses if x is not None)) if any(x is not None for x in ses) else None
        ci = [d["mean"] - Z_975 * se, d["mean"] + Z_975 * se] if se else None
        out.update(kind="images", ci=ci, z=abs(d["mean"]) / se if se else None)
    return out


def verdict(pair: Optional[dict[str, Any]]) -> str:
    """better | worse (for `a`, by the metric's direction) when the interval excludes zero, else none."""
    if pair is None or not excludes_zero(pair["ci"]):
        return "none"
    return "better" if (pair["diff"] > 0) == (pair["direction"] == "higher") else "worse"


def pair_text(pair: dict[str, Any]) -> str:
    """``+0.012, 95 % CI [-0.020, +0.044], 3 seeds`` (several seeds) or ``+0.012, 2.2 s.e.`` (one seed)."""
    if pair["kind"] == "seeds":
        lo, hi = pair["ci"]
        return f"{pair['diff']:+.3f}, 95 % CI [{lo:+.3f}, {hi:+.3f}], {pair['n']} seeds"
    return f"{pair['diff']:+.3f}, " + (f"{pair['z']:.1f} s.e." if pair["z"] is not None else "no interval")


def basis_text(pairs: Sequence[Optional[dict[str, Any]]]) -> str:
    """What the intervals of `pairs` are over, for the text."""
    ns = sorted({p["n"] for p in pairs if p is not None and p["kind"] == "seeds"})
    if ns and all(p is None or p["kind"] == "seeds" for p in pairs):
        count = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
        return (f"paired over {count} training seeds: the mean per-seed difference and its 95 % t-interval "
                f"across seeds")
    if ns:
        return ("paired over training seeds where both have several (95 % t-interval across seeds); where they "
                "share one seed, " + ONE_SEED_NOTE)
    return ONE_SEED_NOTE + "; a difference is +- 1.96 s.e. (unpaired)"


def err_label(kind: str, n: int) -> str:
    return {"seeds": f"95 % t-interval half-width across {n} training seeds",
            "images": "s.e. over the evaluated images (one training seed)"}.get(kind, "")
