"""Interval math for results over training seeds: a mean with its 95 % t-interval, and paired differences.

No scipy here: the two-sided 95 % critical values t_{0.975, df} for df = 1..30 are the table of the NIST/SEMATECH
e-Handbook of Statistical Methods, section 1.3.6.7.2 "Critical Values of the Student's t Distribution"
(https://www.itl.nist.gov/div898/handbook/eda/section3/eda3672.htm, column 0.975), to its 3 decimals. Beyond
df = 30 the quantile is computed (bisection on the t CDF, written with the regularized incomplete beta function,
evaluated by its continued fraction); the tests check the computation against the table for every df <= 30.

* :func:`t_critical` -- t_{0.975, df}
* :func:`mean_interval` -- mean, sample standard deviation (n - 1), and mean +- t_{0.975, n-1} s / sqrt(n); one value:
  no interval (``None``)
* :func:`paired_difference` -- per-seed differences d_s = a_s - b_s over the seeds both sides have, and their interval
* :func:`excludes_zero` -- whether an interval lies entirely on one side of zero
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

__all__ = ["T_975", "t_critical", "t_cdf", "t_quantile", "mean_interval", "paired_difference",
           "excludes_zero"]

#: t_{0.975, df}, df = 1..30 (NIST/SEMATECH e-Handbook, 1.3.6.7.2)
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086,
         21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042}


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes' betacf)."""
    tiny, eps = 1e-300, 3e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(x: float, df: float) -> float:
    """P(T <= x) for Student's t with `df` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + x * x))
    return 1.0 - tail if x >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t (0.5 < p < 1), by bisection on :func:`t_cdf`."""
    if not 0.5 < p < 1.0:
        raise ValueError(f"t_quantile: p must be in (0.5, 1), got {p}")
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)


def t_critical(df: int) -> float:
    """t_{0.975, df}: the table for df <= 30, computed beyond."""
    if int(df) != df or df < 1:
        raise ValueError(f"t_critical: df must be a positive integer, got {df!r}")
    return T_975[int(df)] if df in T_975 else t_quantile(0.975, float(df))


def mean_interval(values: Sequence[float]) -> dict[str, Any]:
    """``{n, mean, sd, se, t, half_width, ci95}`` of `values` (None / NaN dropped). ``ci95`` = [mean - h, mean + h]
    with h = t_{0.975, n-1} sd / sqrt(n), sd the sample standard deviation (n - 1); with fewer than two values
    ``sd``, ``se``, ``t``, ``half_width`` and ``ci95`` are None (one value: no interval)."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(xs)
    out: dict[str, Any] = {"n": n, "mean": sum(xs) / n if n else None, "sd": None, "se": None, "t": None,
                           "half_width": None, "ci95": None}
    if n < 2:
        return out
    mean = out["mean"]
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    t = t_critical(n - 1)
    half = t * sd / math.sqrt(n)
    out.update(sd=sd, se=sd / math.sqrt(n), t=t, half_width=half, ci95=[mean - half, mean + half])
    return out


def paired_difference(a: Mapping[Any, Optional[float]], b: Mapping[Any, Optional[float]]) -> dict[str, Any]:
    """The per-seed differences d_s = a[s] - b[s] over the seeds with a value on both sides (in `a`'s order), and
    :func:`mean_interval` of them; ``seeds`` and ``differences`` list them."""
    seeds = [s for s in a if s in b and a[s] is not None and b[s] is not None
             and not math.isnan(float(a[s])) and not math.isnan(float(b[s]))]
    diffs = [float(a[s]) - float(b[s]) for s in seeds]
    return {"seeds": list(seeds), "differences": diffs, **mean_interval(diffs)}


def excludes_zero(ci: Optional[Sequence[float]]) -> bool:
    """True when the interval [lo, hi] lies strictly on one side of zero (None: no interval, False)."""
    return ci is not None and (ci[0] > 0 or ci[1] < 0)
