"""`cologen curriculum CONFIG --estimate`: the cost of a curriculum up front (lit_cologen/training/estimate.py), and
the training-step timer it shares with benchmarks/train_step.py (lit_cologen/training/step_timer.py).

The expected numbers are computed here from the YAML's own values (yaml.safe_load), not through the code under test.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from lit_cologen.cli import main

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "experiments/cologen/curriculum.yaml"
TINY = REPO / "experiments/cologen/curriculum_tiny.yaml"

SMALL = """
name: est
output_dir: {out}
common:
  model: {{preset: tiny, prw: {{rank: 8}}}}
  data: {{source: shapes5, resolution: 32, batch_size: 2, num_workers: 0}}
  train: {{precision: 32-true, devices: 2, num_nodes: 2, accelerator: cpu, sample_every: 0}}
steps:
  - name: first
    train: {{max_steps: 1000, global_batch: 16}}
  - name: second
    train: {{max_steps: 500, global_batch: 24}}
"""


@pytest.fixture
def small(tmp_path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(SMALL.format(out=tmp_path / "runs"))
    return path


def _expected(path: Path, gpus: int | None, step_ms: float) -> list[dict]:
    """Per step from the YAML's numbers: accumulation, samples, GPU-hours, wall-clock hours."""
    doc = yaml.safe_load(path.read_text())
    common = doc["common"]
    out = []
    for step in doc["steps"]:
        train = {**common["train"], **step.get("train", {})}
        batch = {**common["data"], **step.get("data", {})}["batch_size"]
        n = gpus if gpus is not None else train.get("devices", 1) * train.get("num_nodes", 1)
        acc = train["global_batch"] // (batch * n)
        assert acc * batch * n == train["global_batch"]
        wall = train["max_steps"] * acc * step_ms / 1000 / 3600
        out.append({"name": step["name"], "acc": acc, "samples": train["max_steps"] * train["global_batch"],
                    "gpu_h": wall * n, "wall_h": wall, "batch": batch, "gpus": n})
    return out


def test_estimate_arithmetic_matches_the_yaml(small):
    from lit_cologen.training.estimate import plan_estimate

    for gpus in (None, 1, 2):  # None: devices 2 x num_nodes 2 = 4
        _, rows, notes = plan_estimate(small, gpus=gpus, step_ms=250.0)
        want = _expected(small, gpus, 250.0)
        assert notes == [] and [r.name for r in rows] == [w["name"] for w in want]
        for r, w in zip(rows, want):
            assert (r.accumulate, r.samples, r.batch, r.gpus) == (w["acc"], w["samples"], w["batch"], w["gpus"])
            assert r.gpu_hours == pytest.approx(w["gpu_h"]) and r.wall_hours == pytest.approx(w["wall_h"])
    # by hand, on 8 GPUs: first 16 / (2 x 8) = 1 -> 1000 x 1 x 250 ms x 8 = 0.5556 GPU-h; second 24 / 16 does not divide
    with pytest.raises(Exception, match="step 'second'"):
        plan_estimate(small, gpus=8, step_ms=250.0, only=["first", "second"])
    _, rows, _ = plan_estimate(small, gpus=8, step_ms=250.0, only=["first"])
    assert rows[0].gpu_hours == pytest.approx(1000 * 250 * 8 / 3.6e6)


def test_the_paper_curriculum_on_8_gpus_at_the_measured_h100_step(capsys):
    """The README's table: 185.6 M samples at 1,601 ms per batch-4 micro-batch (2.5 samples/s/GPU) on 8 GPUs."""
    assert main(["curriculum", str(PAPER), "--estimate", "--gpus", "8", "--step-ms", "1601"]) == 0
    out = capsys.readouterr().out
    want = _expected(PAPER, 8, 1601.0)
    for w in want:
        line = next(ln for ln in out.splitlines() if re.match(rf"\s+\d+\s+{w['name']}\s", ln))
        cells = line.split()
        assert cells[4:7] == [str(w["batch"]), str(w["acc"]), f"{w['samples']:,}"], line
        assert cells[8:10] == [f"{w['gpu_h']:,.1f}", f"{w['wall_h']:,.1f}"], line
    total_samples, total_gpu_h = sum(w["samples"] for w in want), sum(w["gpu_h"] for w in want)
    assert total_samples == 185_600_000
    assert round(total_gpu_h) == round(185_600_000 / 4 * 1.601 / 3600) == 20_635
    assert f"{total_samples:,} samples: {total_gpu_h:,.1f} GPU-hours" in out
    assert "2.50 samples/s/GPU" in out


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("cologen: error: "), err
    return err


def test_a_gpu_count_that_does_not_divide_is_refused_naming_the_step(capsys):
    err = _one_line_error(capsys, ["curriculum", str(PAPER), "--estimate", "--gpus", "3", "--step-ms", "1601"])
    assert "--gpus 3" in err and "step 'inpaint'" in err and "256" in err


def test_estimate_without_a_step_time_is_refused(capsys, small):
    err = _one_line_error(capsys, ["curriculum", str(small), "--estimate"])
    assert "--step-ms" in err and "--measure" in err
    with pytest.raises(SystemExit):  # argparse: not both
        main(["curriculum", str(small), "--estimate", "--step-ms", "5", "--measure"])
    capsys.readouterr()
    err = _one_line_error(capsys, ["curriculum", str(small), "--gpus", "4"])  # would otherwise start training
    assert "--gpus" in err and "--estimate" in err
    err = _one_line_error(capsys, ["curriculum", str(small), "--estimate", "--dry-run", "--step-ms", "5"])
    assert "--dry-run" in err
    assert not (small.parent / "runs").exists()


def test_measure_times_the_tiny_preset_on_the_cpu(capsys):
    assert main(["curriculum", str(TINY), "--estimate", "--measure", "--measure-steps", "1", "--only", "inpaint"]) == 0
    out = capsys.readouterr().out
    row = next(ln for ln in out.splitlines() if re.match(r"\s+1\s+inpaint\s", ln)).split()
    step_ms = float(row[7].replace(",", ""))
    assert step_ms > 0
    assert re.search(r"measured 'inpaint' on cpu \(32-true, checkpointing none\): [\d.]+ ms median of 1", out)
    # 100 iterations x accumulation 1 x step_ms on 1 device
    assert float(row[9]) == pytest.approx(100 * step_ms / 3.6e6, rel=0.01)


def test_step_timer_builds_no_frozen_component_and_leaves_the_config_alone():
    from lit_cologen.models.presets import get_preset
    from lit_cologen.training.config import load_curriculum
    from lit_cologen.training.step_timer import time_training_step, tokens_per_sample

    _, steps = load_curriculum(TINY)
    cfg = steps[2]  # 'ground': 2 experts, the newest trains
    before = repr(cfg)
    t = time_training_step(cfg, steps=1, warmup=0, device="cpu")
    assert repr(cfg) == before
    assert t.step_ms_median > 0 and len(t.steps_ms) == 1 and t.peak_gib is None and t.batch == cfg.data.batch_size
    assert t.frozen_components_built == {"codec": False, "text": False}
    preset = get_preset("tiny")  # noisy + aligned source tokens (one per pixels_per_token^2 pixels) + text tokens
    assert t.tokens_per_sample == tokens_per_sample(cfg) == (32 // preset.pixels_per_token) ** 2 * 2 + preset.text_max_length


def test_train_step_benchmark_compare(capsys):
    from benchmarks.train_step import main as bench

    assert bench(["--preset", "tiny", "--device", "cpu", "--batch", "2", "--experts", "2", "--steps", "1",
                  "--warmup", "0", "--checkpointing", "none", "--compare", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    d, c = res["default"], res["chosen"]
    assert d["checkpointing"] == "full" and c["checkpointing"] == "none"
    assert d["tokens_per_sample"] == c["tokens_per_sample"] and d["batch"] == c["batch"] == 2
    assert res["samples_per_s_ratio"] == pytest.approx(c["samples_per_s"] / d["samples_per_s"], rel=0.01)
