"""The CI-sized variant of `make demo`: every stage of the embedded default on a few training steps."""

from __future__ import annotations

import json

import pytest

from benchmarks.demo import DemoProgress, run_demo
from benchmarks.demo_report import TARGETS, TASK_METRICS


@pytest.mark.slow
def test_demo_runs_end_to_end_and_writes_the_report(tmp_path):
    report = run_demo(tmp_path / "demo", scale=0.01, eval_per_task=2, sample_steps=2, shards_per_task=64)
    text = report.read_text()
    for section in ("Staged (CoLoGen) vs co-training vs untrained", "Concept vs localization", "DreamBench",
                    "Samples (held-out)", "Time"):
        assert section in text
    summary = json.loads((report.parent / "summary.json").read_text())
    assert set(summary["results"]) == {"untrained", "base only", "staged", "co-training"}
    for metrics in summary["results"].values():
        assert {"concept", "localization"} <= set(metrics)
        assert all(TASK_METRICS[t][0] in metrics for t in TASK_METRICS)
    assert summary["dreambench"] is not None and {"clip_i", "clip_t", "dino"} <= set(summary["dreambench"])
    assert (report.parent / "samples.png").is_file()
    assert set(summary["targets"]) == set(TARGETS)
    assert "Routing at inference (staged)" in text
    assert summary["routing"]["experts"] == ["inpaint", "ground", "control", "subject", "edit"]
    assert set(summary["routing"]["own_expert_share"]) == set(TASK_METRICS)
    # the curriculum really ran five expert steps on the committed base, and co-training one
    staged = sorted(p.name for p in (tmp_path / "demo/runs/staged").iterdir())
    assert staged == ["0_inpaint", "1_ground", "2_control", "3_subject", "4_edit"]
    done = json.loads((tmp_path / "demo/runs/staged/4_edit/final/done.json").read_text())
    assert done["num_experts"] == 5
    assert not (tmp_path / "demo/runs/base").exists()  # the committed base, not a retrained one
    # resumable: a second call redoes nothing and returns the same report
    assert run_demo(tmp_path / "demo", scale=0.01, eval_per_task=2, sample_steps=2, shards_per_task=64) == report


def test_paired_margin_by_hand():
    from benchmarks.demo_report import paired_margin

    a = {"x": {"m": 0.5}, "y": {"m": 0.3}, "z": {"m": float("nan")}, "only_a": {"m": 9.0}}
    b = {"x": {"m": 0.4}, "y": {"m": 0.1}, "z": {"m": 0.2}}
    mean, se, n = paired_margin(a, b, "m", higher=False)  # improvements 0.1 and 0.2 (z: NaN, only_a: unpaired)
    assert n == 2 and mean == pytest.approx(0.15) and se == pytest.approx(0.05)
    mean, _, _ = paired_margin(a, b, "m", higher=True)
    assert mean == pytest.approx(-0.15)
    assert paired_margin(a, {}, "m", higher=True) == (None, None, 0)


def test_reading_notes_say_when_no_box_is_drawn_and_point_to_the_ceiling_study():
    from benchmarks.demo_report import reading_notes, target_rows

    missed = target_rows({k: (0.0 if op == ">=" else 1.0) for k, (op, _, _) in TARGETS.items()})
    met = target_rows({k: (1.0 if op == ">=" else 0.0) for k, (op, _, _) in TARGETS.items()})
    notes = "\n".join(reading_notes({"ground/color_ok": 0.04}, missed))
    assert "Only 0.04 of the ground outputs" in notes and "no box is drawn" in notes
    assert "benchmarks.demo_ceiling" in notes
    assert reading_notes({"ground/color_ok": 0.9}, met) == []
    assert reading_notes({"ground/color_ok": None}, met) == []


def test_progress_line_without_a_terminal():
    import io

    stream = io.StringIO()
    progress = DemoProgress(stream=stream, every_s=0.0)
    progress.add("a", "staged edit step", 10, 1.0)
    progress.add("b", "eval staged image", 10, 1.0)
    progress.start("a")
    progress.update("a", 5)
    progress.message("[demo] section")
    progress.finish("a")
    assert progress.eta_seconds() is not None and progress.eta_seconds() >= 0
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()  # plain lines, not a redrawn bar
    assert any("1/2 staged edit step 5/10" in line and "5/20 it" in line and "ETA" in line for line in lines)
    assert "[demo] section" in lines
    progress.skip("b")
    assert list(progress.stages) == ["a"]
