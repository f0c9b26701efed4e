"""The ceiling study (`python -m benchmarks.demo_ceiling`): the nearest-fill reference, the verdicts checked by hand,
a real two-budget run with resume, refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks.demo_ceiling import main, nearest_fill, nearest_fill_reference, run_ceiling, verdict


def test_nearest_fill_takes_the_nearest_unmasked_pixel():
    src = np.zeros((3, 4, 3), np.uint8)
    src[:, 0] = (255, 0, 0)  # column 0 red
    src[:, 3] = (0, 0, 255)  # column 3 blue
    hole = np.zeros((3, 4), bool)
    hole[:, 1:3] = True  # columns 1, 2: column 1 is nearer the red column, column 2 the blue one
    out = nearest_fill(src, hole)
    assert (out[:, 1] == (255, 0, 0)).all() and (out[:, 2] == (0, 0, 255)).all()
    assert (out[~hole] == src[~hole]).all()
    assert (nearest_fill(src, np.zeros((3, 4), bool)) == src).all()  # no hole: unchanged


def test_nearest_fill_reference_beats_the_grey_hole_it_replaces():
    """On held-out scenes the fill is scored by the suite's own masked L1 and must beat leaving the grey hole."""
    from benchmarks.suites.shapes5 import score_sample
    from lit_cologen.data import shapes

    ref = nearest_fill_reference(6)
    grey = []
    for i in range(6):
        s = shapes.make_sample("inpaint", i, "eval", 32, 0)
        src, tgt, mask = (np.asarray(s.source.convert("RGB")), np.asarray(s.target.convert("RGB")),
                          np.asarray(s.mask.convert("L")))
        grey.append(score_sample("inpaint", src, src, tgt, s.meta, mask=mask)["masked_l1"])
    assert ref["images"] == 6 and 0.0 < ref["inpaint/masked_l1"] < float(np.mean(grey))


def _point(steps, values, metric="inpaint/masked_l1", task="inpaint"):
    return {"task": task, "steps": steps, "train_seconds": 1.0, "metrics": {metric: float(np.mean(values))},
            "per_image": {f"eval_{task}_{i}": {metric: v} for i, v in enumerate(values)}}


def test_verdict_compute_bound_extrapolates_log_linearly_by_hand():
    # masked L1 falls by 0.02 on every image from 800 to 1600 steps (one doubling); 0.28 is 0.08 above the target,
    # so four more doublings: 1600 * 2**4 = 25600 steps
    a = _point(800, [0.30, 0.31, 0.29, 0.30])
    b = _point(1600, [0.28, 0.29, 0.27, 0.28])
    v = verdict([b, a], "inpaint/masked_l1", "<=", 0.2)  # any order: sorted by steps
    assert v["kind"] == "compute-bound"
    assert v["steps_needed"] == pytest.approx(25600)
    assert v["difference"]["differences"] == pytest.approx([0.02] * 4)


def test_verdict_capacity_bound_when_the_gain_is_too_slow():
    # +0.01 per doubling with 0.26 to go: 26 doublings, far beyond 100x the largest budget
    a = _point(800, [0.10, 0.12, 0.14], "ground/iou", "ground")
    b = _point(1600, [0.11, 0.13, 0.15], "ground/iou", "ground")
    v = verdict([a, b], "ground/iou", ">=", 0.4)
    assert v["kind"] == "capacity-bound" and v["steps_needed"] is None and "more than 100x" in v["text"]


def test_verdict_capacity_bound_when_the_interval_includes_zero():
    a = _point(800, [0.30, 0.20, 0.25, 0.27], "ground/iou", "ground")
    b = _point(2400, [0.28, 0.24, 0.22, 0.29], "ground/iou", "ground")  # differences -0.02, +0.04, -0.03, +0.02
    v = verdict([a, b], "ground/iou", ">=", 0.4)
    assert v["kind"] == "capacity-bound" and "no detectable gain 800 -> 2400 steps" in v["text"]
    d = v["difference"]
    sd = float(np.std([-0.02, 0.04, -0.03, 0.02], ddof=1))
    assert d["half_width"] == pytest.approx(3.182 * sd / math.sqrt(4), rel=1e-3)  # t_{0.975, 3} = 3.182


def test_verdict_met_and_one_point():
    assert verdict([_point(800, [0.1, 0.15])], "inpaint/masked_l1", "<=", 0.2)["kind"] == "met"
    assert verdict([_point(800, [0.3, 0.35])], "inpaint/masked_l1", "<=", 0.2)["kind"] == "one point"


def test_ceiling_study_runs_two_budgets_and_resumes(tmp_path):
    out = tmp_path / "ceiling"
    report = run_ceiling(out, tasks=["inpaint"], steps=[2, 4], eval_per_task=2, sample_steps=1,
                         shards_per_task=16, progress=False)
    points = {p.stem: json.loads(p.read_text()) for p in (out / "points").glob("*.json")}
    assert sorted(points) == ["inpaint-2", "inpaint-4"]
    assert points["inpaint-4"]["steps"] == 4 and set(points["inpaint-4"]["per_image"]) == {
        "eval_inpaint_s0_00000000", "eval_inpaint_s0_00000001"}
    # only the point's own task is generated
    generated = sorted(p.stem for p in (out / "eval" / "inpaint-4" / "images").glob("*.png"))
    assert generated == ["eval_inpaint_s0_00000000", "eval_inpaint_s0_00000001"]
    # every weight trained: the exported base differs from the committed one it started from
    final = out / "runs" / "inpaint-4" / "0_ceiling" / "final" / "transformer" / "diffusion_pytorch_model.safetensors"
    from safetensors.torch import load_file

    from benchmarks.demo_base import COMMITTED_BASE

    trained = load_file(final)
    committed = load_file(COMMITTED_BASE / "transformer" / "diffusion_pytorch_model.safetensors")
    assert trained.keys() == committed.keys()
    assert not all((trained[k] == committed[k]).all() for k in trained)
    text = report.read_text()
    assert "| inpaint | inpaint/masked_l1 | <= 0.2 | 2 |" in text and "nearest unmasked source pixel" in text
    summary = json.loads((out / "ceiling.json").read_text())
    assert summary["verdicts"]["inpaint/masked_l1"]["kind"] in ("met", "compute-bound", "capacity-bound")
    stamp = (out / "points" / "inpaint-4.json").stat().st_mtime_ns
    run_ceiling(out, tasks=["inpaint"], steps=[4], eval_per_task=2, sample_steps=1, shards_per_task=16,
                progress=False)
    assert (out / "points" / "inpaint-4.json").stat().st_mtime_ns == stamp  # a finished point is not redone


def test_ceiling_refuses_tasks_without_a_target_and_bad_steps(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--tasks", "control"]) == 2
    assert "no demo target" in capsys.readouterr().err
    assert main(["--out", str(tmp_path), "--tasks", "inpaint", "--steps", "0"]) == 2
    assert "--steps must be positive" in capsys.readouterr().err
    assert main(["--out", str(tmp_path), "--tasks", "inpaint", "--eval-per-task", "1"]) == 2
    assert "--eval-per-task must be >= 2" in capsys.readouterr().err
