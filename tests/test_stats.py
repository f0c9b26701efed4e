"""benchmarks.stats: the t table, the computed t quantile, mean intervals and paired differences across seeds."""

from __future__ import annotations

import math

import pytest

from benchmarks.stats import T_975, excludes_zero, mean_interval, paired_difference, t_cdf, t_critical, t_quantile


@pytest.mark.parametrize("df, value", [(1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228), (30, 2.042)])
def test_known_t_critical_values(df, value):
    assert t_critical(df) == value


def test_computed_quantile_matches_the_table_and_tends_to_the_normal():
    assert sorted(T_975) == list(range(1, 31))
    for df, value in T_975.items():  # the table's 3 decimals: within half a unit of the last place
        assert abs(t_quantile(0.975, df) - value) <= 5e-4 + 1e-12, df
    beyond = [t_critical(df) for df in (31, 40, 60, 120, 1000)]
    assert all(a > b for a, b in zip([T_975[30]] + beyond, beyond))  # decreasing in df
    assert beyond[1] == pytest.approx(2.021, abs=5e-4) and beyond[3] == pytest.approx(1.980, abs=5e-4)
    assert 1.9599 < beyond[-1] < 1.963
    assert t_cdf(0.0, 3) == pytest.approx(0.5) and t_cdf(-12.706, 1) == pytest.approx(0.025, abs=1e-5)
    with pytest.raises(ValueError):
        t_critical(0)


def test_mean_interval_by_hand():
    st = mean_interval([0.30, 0.40])
    sd = math.sqrt(((0.30 - 0.35) ** 2 + (0.40 - 0.35) ** 2) / 1)
    half = 12.706 * sd / math.sqrt(2)
    assert st["n"] == 2 and st["mean"] == pytest.approx(0.35) and st["sd"] == pytest.approx(sd)
    assert st["t"] == 12.706 and st["half_width"] == pytest.approx(half)
    assert st["ci95"] == pytest.approx([0.35 - half, 0.35 + half])
    three = mean_interval([1.0, 2.0, 4.0, None, float("nan")])  # None / NaN dropped
    assert three["n"] == 3 and three["half_width"] == pytest.approx(4.303 * math.sqrt(7 / 3) / math.sqrt(3))
    one = mean_interval([0.5])
    assert one["mean"] == 0.5 and one["ci95"] is None and one["half_width"] is None and one["sd"] is None
    assert mean_interval([])["mean"] is None


def test_paired_difference_by_hand():
    a = {0: 0.50, 1: 0.46, 2: 0.55, 3: None}
    b = {0: 0.40, 1: 0.41, 2: 0.42, 3: 0.30, 4: 0.9}
    d = paired_difference(a, b)
    diffs = [0.10, 0.05, 0.13]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / 2)
    half = 4.303 * sd / math.sqrt(3)
    assert d["seeds"] == [0, 1, 2] and d["differences"] == pytest.approx(diffs)
    assert d["mean"] == pytest.approx(mean) and d["ci95"] == pytest.approx([mean - half, mean + half])
    # 0.093 +- 0.100: every seed's difference is positive, yet three seeds cannot tell it from zero
    assert mean - half < 0 and not excludes_zero(d["ci95"])
    assert not excludes_zero([-0.1, 0.2]) and excludes_zero([-0.3, -0.1]) and not excludes_zero(None)
    assert paired_difference({0: 1.0}, {1: 2.0})["n"] == 0
