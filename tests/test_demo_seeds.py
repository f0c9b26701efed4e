"""`cologen demo --seeds K` and `--device cuda`: across-seed intervals checked by hand, the seed folders, refusals."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from benchmarks.demo_profiles import PROFILES, profile_for, seed_prefix
from benchmarks.demo_seeds import NO_DIFFERENCE, across_seeds, fmt_interval


def test_across_seed_interval_and_paired_difference_by_hand():
    per_seed = {0: {"staged": {"iou": 0.50, "l1": 0.20}, "co-training": {"iou": 0.40, "l1": 0.25}},
                1: {"staged": {"iou": 0.60, "l1": 0.22}, "co-training": {"iou": 0.45, "l1": 0.21}},
                2: {"staged": {"iou": 0.55, "l1": 0.18}, "co-training": {"iou": 0.42, "l1": 0.30}}}
    agg = across_seeds(per_seed, {"iou": True, "l1": False})
    # staged iou: mean 0.55, sd 0.05, t_{0.975,2} = 4.303 -> half-width 4.303 * 0.05 / sqrt(3)
    st = agg["models"]["staged"]["iou"]
    assert st["mean"] == pytest.approx(0.55) and st["sd"] == pytest.approx(0.05)
    assert st["half_width"] == pytest.approx(4.303 * 0.05 / math.sqrt(3), rel=1e-4)
    # paired staged - co-training on iou: 0.10, 0.15, 0.13 -> mean 0.12666.., sd 0.025166..
    d = agg["paired"]["iou"]
    assert d["differences"] == pytest.approx([0.10, 0.15, 0.13])
    sd = math.sqrt(((0.10 - 0.38 / 3) ** 2 + (0.15 - 0.38 / 3) ** 2 + (0.13 - 0.38 / 3) ** 2) / 2)
    assert d["ci95"][0] == pytest.approx(0.38 / 3 - 4.303 * sd / math.sqrt(3), rel=1e-4)
    assert d["verdict"] == "staged better"
    # l1 is lower-is-better: differences are signed so that > 0 means staged better: 0.05, -0.01, 0.12
    assert agg["paired"]["l1"]["differences"] == pytest.approx([0.05, -0.01, 0.12])
    assert agg["paired"]["l1"]["verdict"] == NO_DIFFERENCE  # the interval spans zero
    assert fmt_interval(st) == f"0.550 +- {4.303 * 0.05 / math.sqrt(3):.3f}"


def test_one_seed_says_there_is_no_interval():
    agg = across_seeds({0: {"staged": {"m": 0.5}, "co-training": {"m": 0.4}}}, {"m": True})
    assert agg["paired"]["m"]["ci95"] is None and "one training seed" in agg["paired"]["m"]["verdict"]
    assert fmt_interval(agg["models"]["staged"]["m"]) == "0.500"
    missing = across_seeds({0: {"staged": {}, "co-training": {"m": 0.4}}, 1: {"staged": {}, "co-training": {"m": 0.3}}},
                           {"m": True})
    assert missing["paired"]["m"]["n"] == 0 and "nothing to compare" in missing["paired"]["m"]["verdict"]
    assert fmt_interval(missing["models"]["staged"]["m"]) == "n/a"


def test_profiles_and_seed_folders():
    assert profile_for("cpu").preset == "tiny" and profile_for("cpu").seeds == 1
    cuda = profile_for("cuda")
    assert (cuda.preset, cuda.resolution, cuda.seeds) == ("small", 64, 3) and not cuda.committed_base
    assert "train.accelerator=gpu" in cuda.overrides and "model.preset=small" in cuda.overrides
    assert seed_prefix(0) == "" and seed_prefix(2) == "seed-2/"
    with pytest.raises(ValueError, match="--device"):
        profile_for("tpu")


def test_cuda_profile_configs_load(tmp_path):
    """The committed demo configs with the cuda profile's overrides are valid step configs of the small preset."""
    from benchmarks.demo import DEMO_CONFIGS, base_overrides, expert_overrides
    from benchmarks.demo_base import BASE_CONFIG
    from lit_cologen.training.run import selected_steps

    prof = PROFILES["cuda"]
    staged, co = expert_overrides(tmp_path, tmp_path / "shards", tmp_path / "base", seed=2, profile=prof)
    for path, over in ((BASE_CONFIG, base_overrides(tmp_path, tmp_path / "shards", prof)),
                       (DEMO_CONFIGS / "curriculum.yaml", staged), (DEMO_CONFIGS / "cotraining.yaml", co)):
        _, steps, selected = selected_steps(path, over, None, prof.scale)
        for k in selected:
            cfg = steps[k]
            assert (cfg.model.preset, cfg.data.resolution, cfg.train.accelerator) == ("small", 64, "gpu")
            assert cfg.train.precision == "bf16-mixed"
    assert "train.seed=2" in staged and "seed-2" in next(o for o in staged if o.startswith("output_dir="))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_demo_on_cuda_without_a_gpu_refuses(tmp_path, capsys):
    from lit_cologen.cli import main

    assert main(["demo", "--device", "cuda", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "--device cuda" in err and "no CUDA device" in err
    assert not (tmp_path / "d" / "shards").exists()  # refused before any work


@pytest.mark.slow
def test_two_seed_demo_writes_both_seeds_and_their_interval(tmp_path):
    """The study at the GPU profile's model size (small preset, 64 px), on the CPU, two seeds, a few steps."""
    from benchmarks.demo import run_demo

    prof = replace(PROFILES["cuda"], name="cpu", seeds=2, eval_batch=8,
                   overrides=("model.preset=small", "data.resolution=64"))
    report = run_demo(tmp_path / "d", scale=0.002, eval_per_task=1, sample_steps=2, shards_per_task=32,
                      dreambench=False, progress=False, profile=prof)
    summary = json.loads((report.parent / "summary.json").read_text())
    assert set(summary["per_seed"]) == {"0", "1"}
    assert set(summary["per_seed"]["1"]) == {"staged", "co-training"}
    assert (tmp_path / "d/seed-1/runs/staged/4_edit/final").is_dir()
    assert (tmp_path / "d/seed-1/eval/staged/results.json").is_file()
    cfg = (tmp_path / "d/seed-1/runs/staged/0_inpaint/config.yaml").read_text()
    assert "seed: 1" in cfg and "preset: small" in cfg
    metric = "ground/iou"
    values = [summary["per_seed"][s]["staged"][metric] for s in ("0", "1")]
    stat = summary["across_seeds"]["models"]["staged"][metric]
    assert stat["mean"] == pytest.approx(sum(values) / 2)
    assert stat["half_width"] == pytest.approx(12.706 * abs(values[0] - values[1]) / math.sqrt(2) / math.sqrt(2))
    text = report.read_text()
    assert "## Across training seeds" in text and "Training seeds [0, 1]" in text
