"""Ablation sweeps (issue: grid expansion, shared prefix, skip / resume, results collection, report, Table 5)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml

from benchmarks.sweeps.grid import config_differences, load_sweep, semantic_config
from benchmarks.sweeps.report import read_block_usage, render_report, table5_findings, table5_markdown, table5_rows
from benchmarks.sweeps.runner import RESULTS_FILE, commands_text, plan_text, run_sweep, step_state, summary_text
from lit_cologen.config import ConfigError

REPO = Path(__file__).resolve().parents[1]

COMMON = {
    "model": {"preset": "tiny", "prw": {"rank": 4, "routing": "sample", "blocks": "all"}},
    "data": {"source": "shapes5", "resolution": 32, "batch_size": 2, "num_workers": 0, "val_samples": 4},
    "optim": {"lr": 1.0e-3, "warmup_steps": 1},
    "train": {"precision": "32-true", "accelerator": "cpu", "global_batch": 2, "max_steps": 2, "log_every": 1,
              "checkpoint_every": 1, "val_every": 0},
}


def write_curricula(root: Path) -> tuple[Path, Path]:
    """A 3-step tiny curriculum (base, inpaint, edit) and its one-stage co-training twin."""
    cur = {"name": "t", "output_dir": str(root / "unused"), "common": COMMON, "steps": [
        {"name": "base", "data": {"tasks": ["inpaint", "edit"]}, "train": {"train_base": True, "use_source": False}},
        {"name": "inpaint", "data": {"tasks": ["inpaint"]}, "veteran": {"rho": 1.0, "alpha": 0.0}},
        {"name": "edit", "data": {"tasks": ["edit"]}, "veteran": {"rho": 0.8, "alpha": 0.5}},
    ]}
    cot = {"name": "c", "output_dir": str(root / "unused"), "common": COMMON, "steps": [
        cur["steps"][0], {"name": "cotrain", "data": {"tasks": ["inpaint", "edit"]}, "train": {"max_steps": 8}}]}
    (root / "cur.yaml").write_text(yaml.safe_dump(cur))
    (root / "cot.yaml").write_text(yaml.safe_dump(cot))
    return root / "cur.yaml", root / "cot.yaml"


def write_sweep(root: Path, **spec) -> Path:
    cur, _ = write_curricula(root)
    data = {"name": "s", "kind": "figure4", "base": str(cur), "output_dir": str(root / "sweep"),
            "prefix": {"steps": ["base", "inpaint"], "dir": str(root / "prefix")}, "apply_to": ["edit"],
            "grid": {"veteran.alpha": [0.0, 0.5]}, "chosen": {"alpha": 0.5},
            "eval": {"suite": "shapes5", "tasks": ["edit"], "per_task": 2, "resolution": 32, "batch_size": 4,
                     "generator_args": {"steps": 2}},
            "report": {"metrics": ["edit/concept", "edit/localization", "edit/l1"]}}
    data.update(spec)
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# ---------------------------------------------------------------------------------------------- grid expansion


def test_grid_is_a_cartesian_product_with_names_and_scoped_overrides(tmp_path):
    path = write_sweep(tmp_path, grid=[{"veteran.alpha": [0.0, 0.5]},
                                       {"name": "rho", "keys": ["veteran.rho"], "values": [0.5, 0.8, 1.0]}])
    sweep = load_sweep(path, ["train.max_steps=3", "eval.per_task=1"])
    assert [p.name for p in sweep.points] == [f"alpha-{a}_rho-{r}" for a in ("0.0", "0.5") for r in ("0.5", "0.8", "1.0")]
    assert [p.index for p in sweep.points] == list(range(6))
    assert sweep.evals[0].per_task == 1  # spec override
    for p in sweep.points:
        base, inpaint, edit = p.steps
        assert p.shared == [True, True, False]
        assert (edit.veteran.alpha, edit.veteran.rho) == (p.axes["alpha"], p.axes["rho"])
        assert (inpaint.veteran.alpha, inpaint.veteran.rho) == (0.0, 1.0)  # the prefix keeps the curriculum's values
        assert all(c.train.max_steps == 3 for c in p.steps)  # training overrides reach every step
        # shared prefix: one folder for all points; the own step starts from it
        assert Path(base.output_dir) == tmp_path / "prefix" / "0_base"
        assert edit.init_from == str(tmp_path / "prefix" / "1_inpaint" / "final")
        assert edit.model.pretrained_path == str(tmp_path / "prefix" / "0_base" / "final")
        assert Path(edit.output_dir) == tmp_path / "sweep" / "points" / p.name / "2_edit"
    assert sweep.chosen == ["alpha-0.5_rho-0.5", "alpha-0.5_rho-0.8", "alpha-0.5_rho-1.0"]
    assert "alpha-0.5_rho-0.8" in plan_text(sweep)
    cmds = commands_text(sweep, str(path))
    assert "--prefix-only" in cmds and "--point-index $SLURM_ARRAY_TASK_ID" in cmds and "--array=0-5" in cmds


def test_tied_keys_and_budget_matching_with_variants(tmp_path):
    _cur, cot = write_curricula(tmp_path)
    path = write_sweep(tmp_path, kind="table5", grid=None, apply_to=None, chosen="cologen",
                       prefix={"steps": ["base"], "dir": str(tmp_path / "prefix")},
                       steps={"inpaint": {"train": {"max_steps": 3}}, "edit": {"train": {"max_steps": 5}}},
                       points={"wo": {"label": "w/o R_c", "drop_steps": ["inpaint"]},
                               "cotraining": {"base": str(cot)}, "cologen": {}},
                       budget={"match": "total_samples", "reference": "cologen"})
    sweep = load_sweep(path)
    by = {p.name: p for p in sweep.points}
    assert [c.name for c in by["wo"].own_steps] == ["edit"] and by["wo"].dropped == ["inpaint"]
    assert by["wo"].own_steps[0].model.prw.num_experts == 1  # a dropped step drops its expert
    assert {p.samples for p in sweep.points} == {(3 + 5) * 2}  # every row trains on the reference's samples
    assert by["wo"].own_steps[0].train.max_steps == 8 and by["cotraining"].own_steps[0].train.max_steps == 8
    assert by["wo"].budget["factor"] == pytest.approx(8 / 5)
    per_task = load_sweep(path, ["budget.match=per_task"])
    assert {p.name: p.samples for p in per_task.points} == {"wo": 10, "cotraining": 16, "cologen": 16}

    rank = write_sweep(tmp_path, grid=[{"name": "rank", "keys": ["model.prw.rank", "model.prw.lora_alpha"],
                                        "values": [[2, 4.0], [8, 16.0]]}], chosen={"rank": 8}, apply_to=None,
                       prefix={"steps": ["base"], "dir": str(tmp_path / "prefix")})
    pts = load_sweep(rank).points
    assert [(c.model.prw.rank, c.model.prw.alpha) for c in pts[0].own_steps] == [(2, 4.0), (2, 4.0)]


def test_invalid_sweeps_fail_before_any_compute(tmp_path):
    with pytest.raises(ConfigError, match="new_expert_rank"):  # veterans loaded from the prefix have rank 4
        load_sweep(write_sweep(tmp_path, grid={"model.prw.rank": [2, 4]}, chosen=None))
    with pytest.raises(ConfigError, match="changes the shared prefix step 'inpaint'"):
        load_sweep(write_sweep(tmp_path, grid=None, chosen=None,
                               points={"a": {}, "b": {"steps": {"inpaint": {"optim": {"lr": 0.5}}}}}))
    with pytest.raises(ConfigError, match="unknown sweep key"):
        load_sweep(write_sweep(tmp_path, gird={"veteran.alpha": [1]}))
    with pytest.raises(ConfigError, match="veteran.rho"):  # the step schema still checks ranges
        load_sweep(write_sweep(tmp_path, grid={"veteran.rho": [2.0]}, chosen=None))
    with pytest.raises(ConfigError, match="no point"):
        load_sweep(write_sweep(tmp_path, chosen={"alpha": 0.25}))


@pytest.mark.parametrize("path", sorted((REPO / "experiments" / "ablations").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sweeps_expand(path, monkeypatch):
    monkeypatch.chdir(REPO)
    sweep = load_sweep(path)
    assert sweep.points and sweep.evals
    if sweep.kind == "table5":
        labels = [p.label for p in sweep.points]
        assert labels[0].startswith("w/o R_c") and labels[-1].endswith("(CoLoGen)") and len(labels) == 5
        assert sweep.budget["match"] == "total_samples"
        ref = sweep.point("cologen").samples
        assert all(abs(p.samples - ref) <= max(c.train.global_batch for c in p.own_steps) for p in sweep.points)
    else:
        assert len(sweep.axes) == 1 and len(sweep.chosen) == 1
        if sweep.axes[0].name == "rank":
            assert all(v[1] == 2 * v[0] for v in sweep.axes[0].values)  # LoRA alpha = 2 x rank


def _config_hash(cfg) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(semantic_config(cfg), sort_keys=True, default=str).encode()).hexdigest()


RANK_AXIS = {"name": "rank", "keys": ["model.prw.new_expert_rank", "model.prw.new_expert_alpha"]}


def test_rank_sweep_varies_only_the_last_experts_rank_over_one_prefix(tmp_path, capsys):
    from lit_cologen.cli import main

    path = write_sweep(tmp_path, grid=[{**RANK_AXIS, "values": [[2, 4.0], [8, 16.0]]}], chosen={"rank": 8})
    sweep = load_sweep(path)
    assert [p.name for p in sweep.points] == ["rank-2", "rank-8"] and sweep.chosen == ["rank-8"]
    a, b = sweep.points
    for p, rank in ((a, 2), (b, 8)):
        assert p.shared == [True, True, False]
        edit = p.steps[-1]
        assert (edit.model.prw.new_rank, edit.model.prw.new_alpha) == (rank, 2.0 * rank)
        assert edit.model.prw.rank == 4 and edit.add_expert  # the veterans' (configured) rank is untouched
        assert all(c.model.prw.new_expert_rank is None for c in p.steps[:2])
    # one shared prefix: the same folders, and configs that hash equal
    assert [c.output_dir for c in a.steps[:2]] == [c.output_dir for c in b.steps[:2]]
    assert [_config_hash(c) for c in a.steps[:2]] == [_config_hash(c) for c in b.steps[:2]]
    assert a.steps[-1].init_from == b.steps[-1].init_from == str(tmp_path / "prefix" / "1_inpaint" / "final")
    # the points differ only in the last step's expert rank / alpha
    assert config_differences(a.steps[-1], b.steps[-1], ignore_paths=True) == [
        "model.prw.new_expert_alpha: 4.0 != 16.0", "model.prw.new_expert_rank: 2 != 8"]
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "shared prefix" in out and "rank 2  [todo]" in out and "rank 8  [todo]" in out
    assert not (tmp_path / "sweep").exists()
    # a new-expert rank on a step that adds no expert is refused, naming the key
    with pytest.raises(ConfigError, match=r"model\.prw\.new_expert_rank.*adds none"):
        load_sweep(write_sweep(tmp_path, grid=[{**RANK_AXIS, "values": [[2, 4.0]]}], chosen=None, apply_to=None,
                               prefix={"steps": ["base"], "dir": str(tmp_path / "prefix")}))


def test_new_expert_rank_config_checks():
    from lit_cologen.training.config import load_step_config

    ok = load_step_config(None, ["data.batch_size=2", "init_from=runs/x/final", "add_expert=true",
                                 "model.prw.rank=8", "model.prw.new_expert_rank=2"])
    assert (ok.model.prw.new_rank, ok.model.prw.new_alpha, ok.model.prw.rank, ok.model.prw.alpha) == (2, 4.0, 8, 16.0)
    plain = load_step_config(None, ["data.batch_size=2", "model.prw.rank=8", "model.prw.lora_alpha=4"])
    assert (plain.model.prw.new_rank, plain.model.prw.new_alpha) == (8, 4.0)  # default: the configured rank / alpha
    for override, key in (("model.prw.new_expert_rank=0", "new_expert_rank"),
                          ("model.prw.new_expert_alpha=-1", "new_expert_alpha")):
        with pytest.raises(ConfigError, match=rf"model\.prw\.{key}.*must be > 0"):
            load_step_config(None, ["data.batch_size=2", "init_from=x", "add_expert=true", override])
    with pytest.raises(ConfigError, match=r"model\.prw\.new_expert_alpha.*adds none"):
        load_step_config(None, ["data.batch_size=2", "model.prw.new_expert_alpha=8"])


@pytest.mark.parametrize("name, rank, alpha_sweep", [("rank.yaml", 128, "alpha.yaml"),
                                                      ("rank_tiny.yaml", 8, "alpha_tiny.yaml")])
def test_shipped_rank_sweeps_share_the_step3_prefix(name, rank, alpha_sweep, monkeypatch):
    """Fig. 4(b) protocol: only the editing expert's rank varies (LoRA alpha = 2 x rank); steps 1-4 (and the tiny
    base) are one shared prefix at the paper rank, the same one the alpha sweep uses."""
    monkeypatch.chdir(REPO)
    sweep = load_sweep(REPO / "experiments" / "ablations" / name)
    other = load_sweep(REPO / "experiments" / "ablations" / alpha_sweep)
    assert sweep.prefix_dir == other.prefix_dir and sweep.prefix_steps == other.prefix_steps
    assert len(sweep.points) >= 3 and sweep.axes[0].keys == RANK_AXIS["keys"]
    prefix_hashes = {tuple(_config_hash(c) for c in p.steps if c.name in sweep.prefix_steps) for p in sweep.points}
    assert prefix_hashes == {tuple(_config_hash(c) for c in other.prefix_configs())}  # one prefix for all points
    chosen = sweep.point(sweep.chosen[0])
    for p in sweep.points:
        assert p.shared == [True] * (len(p.steps) - 1) + [False]  # every step but the last is shared
        last = p.steps[-1]
        assert last.name == "edit" and last.add_expert and last.model.prw.num_experts == 5
        assert last.model.prw.new_rank == p.axes["rank"] and last.model.prw.new_alpha == 2.0 * p.axes["rank"]
        assert all(c.model.prw.rank == rank and c.model.prw.alpha == 2.0 * rank for c in p.steps if c.name != "base")
        diff = config_differences(chosen.steps[-1], last, ignore_paths=True)
        assert all(d.startswith(("model.prw.new_expert_rank:", "model.prw.new_expert_alpha:")) for d in diff)
        assert bool(diff) == (p.name != chosen.name)
    assert chosen.steps[-1].model.prw.new_rank == rank  # the paper's setting is the highlighted point


# ---------------------------------------------------------------------------------------------- a real tiny sweep


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """Run a real 2-point sweep: shared base + inpaint (2 iterations each), then per point a 2-iteration edit step
    and a Shapes-5 evaluation (2 images). Returns (sweep YAML, collected results)."""
    L.seed_everything(0)
    root = tmp_path_factory.mktemp("sweep")
    path = write_sweep(root, grid={"veteran.alpha": [0.0, 0.5, 2.0]})
    sweep = load_sweep(path)
    data = run_sweep(sweep, names=["alpha-0.0", "alpha-0.5"], progress=False)
    return path, data


def test_sweep_runs_points_once_over_a_shared_prefix(tiny_sweep):
    path, data = tiny_sweep
    sweep = load_sweep(path)
    by = {p["name"]: p for p in data["points"]}
    assert by["alpha-0.0"]["status"] == by["alpha-0.5"]["status"] == "done"
    assert by["alpha-2.0"]["status"] == "pending"
    for c in sweep.prefix_configs():  # trained once: one event file, even though two points used it
        assert step_state(c) == "done"
        assert len(list((Path(c.output_dir) / "tb").glob("events.out.tfevents*"))) == 1
    # a rerun skips everything finished: no step and no evaluation is redone
    stamps = {p: p.stat().st_mtime_ns for p in Path(data["output_dir"]).parent.rglob("*")
              if p.name in ("done.json", "results.json", "sweep_eval.json")}
    again = run_sweep(load_sweep(path), names=["alpha-0.0", "alpha-0.5"], progress=False)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert [p["status"] for p in again["points"]] == ["done", "done", "pending"]
    # a finished shared folder trained with another configuration is refused, never silently reused
    other = load_sweep(path, ["optim.lr=0.5"])
    assert "CONFIG MISMATCH" in plan_text(other)
    with pytest.raises(ConfigError, match="another configuration"):
        run_sweep(other, names=["alpha-0.0"], progress=False)


def test_a_point_folder_of_another_configuration_is_refused(tiny_sweep):
    import copy

    from omegaconf import OmegaConf

    from benchmarks.sweeps.runner import saved_config_differences, train_step

    path, _ = tiny_sweep
    point = next(p for p in load_sweep(path).points if p.name == "alpha-0.0")
    own = point.steps[-1]  # the point's own (finished) edit step
    assert saved_config_differences(own) == []
    # a key added to the schema after the folder was written (absent from its config.yaml) is not a difference
    saved = Path(own.output_dir) / "config.yaml"
    text = saved.read_text()
    data = OmegaConf.load(saved)
    del data.data["encoded"]
    saved.write_text(OmegaConf.to_yaml(data))
    try:
        assert saved_config_differences(own) == []
        changed = copy.deepcopy(own)
        changed.optim.lr = 0.5
        with pytest.raises(ConfigError, match="point step folder .* another configuration"):
            train_step(changed, shared=False, progress=False)
    finally:
        saved.write_text(text)


def test_dry_run_marks_the_point_steps_the_run_refuses_and_stale_errors_clear(tiny_sweep):
    import os

    from benchmarks.sweeps.runner import collect

    path, _ = tiny_sweep
    point = next(p for p in load_sweep(path).points if p.name == "alpha-0.0")
    own = point.steps[-1]
    saved = Path(own.output_dir) / "config.yaml"
    text = saved.read_text()
    try:  # the point's own step folder now records another lr: the dry run says what the real run will refuse
        saved.write_text(text.replace("lr: ", "lr: 0.5 #", 1))
        plan = plan_text(load_sweep(path))
        line = next(ln for ln in plan.splitlines() if Path(own.output_dir).name in ln and "rho" in ln
                    and "alpha 0.0" in ln)
        assert "CONFIG MISMATCH, the run will refuse it: optim.lr" in line
        assert step_state(own) == "mismatching"
    finally:
        saved.write_text(text)
    # an error.txt older than the point's results (a good rerun by another path) no longer marks it failed
    err = Path(point.output_dir) / "error.txt"
    err.write_text("Traceback: an old failure")
    old = min(q.stat().st_mtime for q in Path(point.output_dir).rglob("done.json")) - 60
    os.utime(err, (old, old))
    by = {q["name"]: q for q in collect(load_sweep(path))["points"]}
    assert by["alpha-0.0"]["status"] == "done" and by["alpha-0.0"]["error"] is None and not err.exists()


def test_results_collection(tiny_sweep):
    path, data = tiny_sweep
    out = Path(data["output_dir"])
    on_disk = json.loads((out / RESULTS_FILE).read_text())
    assert on_disk["sweep"] == "s" and on_disk["chosen"] == ["alpha-0.5"]
    assert not list(out.glob(f".{RESULTS_FILE}*.tmp"))  # atomic write leaves no temp file
    p = {q["name"]: q for q in on_disk["points"]}["alpha-0.5"]
    r = p["results"]["shapes5"]
    assert r["image_count"] == 2 and r["protocol"] == "shapes5" and not r["stale"]
    assert {"concept", "localization", "edit/l1"} <= set(r["metrics"])
    assert set(r["subsets"]["edit"]) >= {"concept", "localization"}
    assert "concept" in r["stderr"]["all"]
    assert p["budget"]["samples"] == 4 and p["overrides"] == {"veteran.alpha": 0.5}
    edit = p["steps"][-1]
    assert edit["state"] == "done" and edit["alpha"] == 0.5 and not edit["shared"] and edit["seconds"] is not None
    assert (out / "sweep_plan.json").is_file()


def test_interrupted_point_resumes_and_failure_is_recorded(tiny_sweep, monkeypatch):
    import lit_cologen.training.run as run_mod

    path, _ = tiny_sweep
    sweep = load_sweep(path)
    point = sweep.point("alpha-2.0")

    class Crash(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 2:  # the step-1 checkpoint exists (checkpoint callbacks run after this one)
                raise RuntimeError("simulated crash")

    original = run_mod.run_step
    monkeypatch.setattr(run_mod, "run_step", lambda cfg, **kw: original(cfg, extra_callbacks=[Crash()], **kw))
    data = run_sweep(sweep, names=["alpha-2.0"], progress=False, evaluate=False)
    assert {p["name"]: p["status"] for p in data["points"]}["alpha-2.0"] == "failed"
    assert "simulated crash" in (Path(point.output_dir) / "error.txt").read_text()
    assert step_state(point.steps[-1]) == "partial"  # checkpoint at step 1 kept
    monkeypatch.setattr(run_mod, "run_step", original)
    data = run_sweep(load_sweep(path), names=["alpha-2.0"], progress=False, evaluate=False)
    p = {q["name"]: q for q in data["points"]}["alpha-2.0"]
    assert p["status"] == "trained" and not (Path(point.output_dir) / "error.txt").exists()
    done = json.loads((point.final / "done.json").read_text())
    assert done["global_step"] == 2


def test_report_from_a_real_sweep(tiny_sweep):
    path, data = tiny_sweep
    out = Path(data["output_dir"])
    steps, usage = read_block_usage(data["points"][1]["steps"][-1]["dir"], num_experts=2)
    assert steps and usage.shape[0] == len(steps) and np.all((usage >= 0) & (usage <= 1))
    md_path = render_report(out)
    md = md_path.read_text()
    assert "Figure 4" in md and "alpha-0.5" in md and "edit/concept" in md
    images = [line[line.index("(") + 1: -1] for line in md.splitlines() if line.startswith("![")]
    assert any("figure4" in i for i in images) and any("routing" in i for i in images) and any("curves" in i for i in images)
    for rel in images:
        assert (md_path.parent / rel).is_file() and (md_path.parent / rel).stat().st_size > 1000
    assert not list(md_path.parent.glob(".*.tmp")) and not list(md_path.parent.glob(".*.png"))
    # a curriculum-style folder (the shared prefix) renders too
    prefix_md = render_report(Path(data["prefix"]["dir"]), out_dir=out / "prefix-report").read_text()
    assert "1_inpaint" in prefix_md and "Training curves" in prefix_md


def test_rank_point_trains_a_new_expert_of_its_own_rank_over_the_shared_prefix(tiny_sweep):
    """Training hand-off: the edit step loads the prefix's rank-4 expert and adds a rank-2 one (alpha 4)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path, data = tiny_sweep
    spec = yaml.safe_load(path.read_text())
    spec.update(name="r", output_dir=str(path.parent / "rank-sweep"), chosen=None,
                grid=[{**RANK_AXIS, "values": [[2, 4.0], [8, 16.0]]}])
    rank_path = path.parent / "rank_sweep.yaml"
    rank_path.write_text(yaml.safe_dump(spec))
    sweep = load_sweep(rank_path)
    prefix_events = {c.output_dir: len(list((Path(c.output_dir) / "tb").glob("events.out.tfevents*")))
                     for c in sweep.prefix_configs()}
    out = run_sweep(sweep, names=["rank-2"], progress=False, evaluate=False)
    assert {p["name"]: p["status"] for p in out["points"]} == {"rank-2": "trained", "rank-8": "pending"}
    assert {c.output_dir: len(list((Path(c.output_dir) / "tb").glob("events.out.tfevents*")))
            for c in sweep.prefix_configs()} == prefix_events  # the prefix trained by the alpha sweep is reused
    final = sweep.point("rank-2").final / "adapters.safetensors"
    with safe_open(str(final), framework="pt") as f:
        meta = json.loads(f.metadata()["lit_cologen"])
    assert meta["experts"] == [{"rank": 4, "lora_alpha": 8.0}, {"rank": 2, "lora_alpha": 4.0}]
    edit = load_file(final)
    veteran = load_file(Path(sweep.prefix_configs()[-1].output_dir) / "final" / "adapters.safetensors")
    assert edit["double_adapters.0.experts.lora_A.1"].shape[0] == 4  # 2 x rank 2 rows
    assert edit["double_adapters.0.experts.lora_B_k.1"].shape[1] == 2
    for key, value in veteran.items():  # the rank-4 veteran is frozen
        if ".experts." in key:
            assert torch.equal(edit[key], value), key
    assert edit["double_adapters.0.experts.lora_B_k.1"].abs().sum() > 0  # the new expert trained
    assert [s["rank"] for s in {p["name"]: p for p in out["points"]}["rank-2"]["steps"]] == [4, 4, 2]


def test_cli_dry_run_and_commands(tmp_path, capsys):
    from lit_cologen.cli import main

    path = write_sweep(tmp_path)
    assert main(["sweep", str(path), "train.max_steps=1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "[0] alpha-0.0" in out and "[1] alpha-0.5 *chosen*" in out and "shared prefix" in out
    assert not (tmp_path / "sweep").exists()  # a dry run writes nothing
    assert "1 x 2" in out  # the override reached the steps
    assert main(["sweep", str(path), "--print-commands"]) == 0
    assert "--point-index 1" in capsys.readouterr().out
    assert main(["sweep", str(path), "--collect"]) == 0  # nothing trained: every point pending
    data = json.loads((tmp_path / "sweep" / RESULTS_FILE).read_text())
    assert [p["status"] for p in data["points"]] == ["pending", "pending"]


# ---------------------------------------------------------------------------------------------- Table 5 layout


def _fake_point(i, name, label, concept, loc, chosen=False):
    res = {"metrics": {"concept": concept, "localization": loc, "edit/l1": 0.3},
           "metric_directions": {"concept": "higher", "localization": "higher", "edit/l1": "lower"},
           "subsets": {"edit": {"concept": concept, "localization": loc, "edit/l1": 0.3 - i / 100}},
           "stderr": {"all": {}, "subsets": {"edit": {"concept": 0.01, "localization": 0.01, "edit/l1": 0.01}}}}
    return {"index": i, "name": name, "label": label, "chosen": chosen, "status": "done",
            "budget": {"samples": 2000}, "results": {"shapes5": res}}


def test_table5_layout_rows_columns_and_findings():
    names = [("cologen", "w R_c & R_l (CoLoGen)"), ("w_rc", "w R_c"), ("cotraining", "w R_c & R_l (Co-training)"),
             ("wo_rc_rl", "w/o R_c & w/o R_l"), ("w_rl", "w R_l")]
    values = {"cologen": (0.50, 0.40), "w_rc": (0.45, 0.30), "cotraining": (0.55, 0.41), "wo_rc_rl": (0.40, 0.30),
              "w_rl": (0.42, 0.35)}
    data = {"sweep": "t5", "kind": "table5", "eval": [{"name": "shapes5", "tasks": ["edit"]}],
            "report": {"table5": {"baseline": "wo_rc_rl"}},
            "points": [_fake_point(i, n, lab, *values[n], chosen=n == "cologen") for i, (n, lab) in enumerate(names)]}
    groups, rows = table5_rows(data)
    assert [r["name"] for r in rows] == ["wo_rc_rl", "w_rl", "w_rc", "cotraining", "cologen"]  # the paper's order
    assert groups[0]["metrics"][:2] == ["concept", "localization"]
    md = table5_markdown(data)
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert lines[0].startswith("| Benchmark | Method | concept ↑ | localization ↑ | edit/l1 ↓")
    assert "w/o R_c & w/o R_l" in lines[2] and "**w R_c & R_l (CoLoGen)**" in lines[-1]
    assert "**0.550 ± 0.010**" in md  # best concept: co-training, bold
    findings = " ".join(table5_findings(data))
    assert "vs co-training" in findings and "Worse: shapes5 edit concept (-0.050" in findings  # honest when it loses


def test_report_prints_a_metric_that_could_not_be_computed_as_na_with_its_reason():
    from benchmarks.sweeps.report import _metrics_table, unavailable_notes

    point = {"name": "p0", "chosen": False, "results": {"mb": {
        "metrics": {"clip_i": 0.9}, "stderr": {}, "metric_directions": {},
        "unavailable": {"clip_out": "5 of 5 requests have no target caption"}}}}
    data = {"points": [point]}
    table = _metrics_table(data, ["clip_i", "clip_out"])
    assert "| p0 | 0.900 | n/a |" in table
    assert unavailable_notes(data) == ["`p0` / mb: clip_out: 5 of 5 requests have no target caption"]


# ---------------------------------------------------------------------------------------------- training seeds


def test_seeds_plan_folders_and_overrides(tmp_path, capsys):
    from lit_cologen.cli import main

    plain = load_sweep(write_sweep(tmp_path))
    assert plain.seeds == [0] and plain.default_seed == 0  # no `seeds`: one seed, the steps' train.seed
    path = write_sweep(tmp_path, seeds=[0, 1])
    sweep = load_sweep(path)
    assert sweep.seeds == [0, 1]
    # the default seed keeps the folders of a sweep without seeds; seed 1 gets a seed-1/ level in both roots
    for a, b in zip(plain.points, sweep.runs(0)):
        assert [c.output_dir for c in a.steps] == [c.output_dir for c in b.steps] and a.output_dir == b.output_dir
        assert [_config_hash(c) for c in a.steps] == [_config_hash(c) for c in b.steps]
    for p in sweep.runs(1):
        assert p.seed == 1 and all(c.train.seed == 1 for c in p.steps)  # every step, the prefix included
        assert Path(p.output_dir) == tmp_path / "sweep" / "seed-1" / "points" / p.name
        assert [Path(c.output_dir) for c in p.steps[:2]] == [tmp_path / "prefix" / "seed-1" / n
                                                              for n in ("0_base", "1_inpaint")]
        assert p.steps[-1].init_from == str(tmp_path / "prefix" / "seed-1" / "1_inpaint" / "final")
        assert p.budget == sweep.run(p.name, 0).budget
        assert config_differences(sweep.run(p.name, 0).steps[-1], p.steps[-1], ignore_paths=True) == ["train.seed: 0 != 1"]
    plan = plan_text(sweep)
    assert "training seeds: [0, 1]" in plan and f"seed 1: {tmp_path / 'sweep' / 'seed-1' / 'points'}" in plan
    assert f"shared prefix, seed 1 ({tmp_path / 'prefix' / 'seed-1'})" in plan
    assert f"    seed 0: {tmp_path / 'sweep' / 'points' / 'alpha-0.5'}" in plan
    assert "training seed: 0 (one seed" in plan_text(plain)
    cmds = commands_text(sweep, str(path))
    assert "--seeds 0,1" in cmds and "--point-index 1 --seed-index 1" in cmds and "--array=0-3" in cmds
    # --seeds replaces the file's seeds; a seed other than the default gets its own folder even alone
    assert main(["sweep", str(path), "--seeds", "2,5", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "training seeds: [2, 5]" in out and "seed-2" in out and "seed-5" in out and "seed-1" not in out
    assert not (tmp_path / "sweep").exists()  # a dry run writes nothing
    alone = load_sweep(path, seeds=[3])
    assert alone.points[0].output_dir == str(tmp_path / "sweep" / "seed-3" / "points" / "alpha-0.0")
    assert load_sweep(path, ["seeds=[4]"]).seeds == [4]  # a sweep-key override on the command line


@pytest.mark.parametrize("value, words", [("0,a", "'a' is not a non-negative integer"), ("0,0", "listed twice"),
                                          ("", "expected comma-separated"), ("1,,2", "expected comma-separated"),
                                          ("1.5", "not a non-negative integer"), ("-1", "not a non-negative integer")])
def test_seeds_flag_refusals_are_one_line_naming_the_flag(tmp_path, capsys, value, words):
    from lit_cologen.cli import main

    path = write_sweep(tmp_path)
    assert main(["sweep", str(path), f"--seeds={value}", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--seeds" in err and words in err, err


def test_seeds_in_the_file_are_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"config key 'seeds' in .*listed twice"):
        load_sweep(write_sweep(tmp_path, seeds=[1, 1]))
    with pytest.raises(ConfigError, match="seeds"):
        load_sweep(write_sweep(tmp_path, seeds=["a"]))
    with pytest.raises(ConfigError, match="unknown sweep key"):
        load_sweep(write_sweep(tmp_path, seedz=[1]))
    with pytest.raises(ConfigError, match="different train.seed"):  # the default seed would be ambiguous
        load_sweep(write_sweep(tmp_path, seeds=[0, 1], steps={"edit": {"train": {"seed": 7}}}))


@pytest.fixture(scope="module")
def two_seed_sweep(tiny_sweep):
    """The tiny sweep's two run points with seeds [0, 1]: seed 0 is the finished single-seed run (reused), seed 1
    trains its own prefix and points. Returns (sweep, collected results, seed-0 stamps before)."""
    path, _ = tiny_sweep
    sweep = load_sweep(path, seeds=[0, 1])
    stamps = {q: q.stat().st_mtime_ns for p in sweep.runs(0)[:2] for q in Path(p.output_dir).rglob("done.json")}
    data = run_sweep(sweep, names=["alpha-0.0", "alpha-0.5"], progress=False)
    return sweep, data, stamps


def test_two_seed_sweep_keeps_every_seed_and_the_aggregate_is_the_hand_interval(two_seed_sweep):
    sweep, data, stamps = two_seed_sweep
    assert {q: q.stat().st_mtime_ns for q in stamps} == stamps  # seed 0: the earlier single-seed run, not retrained
    on_disk = json.loads((sweep.output_dir / RESULTS_FILE).read_text())
    assert on_disk["seeds"] == [0, 1] and on_disk["default_seed"] == 0
    assert on_disk["seed_dirs"]["1"]["prefix"]["dir"] == str(sweep.prefix_dir / "seed-1")
    assert all(s["state"] == "done" for s in on_disk["seed_dirs"]["1"]["prefix"]["steps"])
    by = {p["name"]: p for p in on_disk["points"]}
    for name in ("alpha-0.0", "alpha-0.5"):
        p = by[name]
        assert p["status"] == "done" and [r["seed"] for r in p["seeds"]] == [0, 1]
        assert p["results"] == p["seeds"][0]["results"]  # top level: the first seed's (as before seeds)
        r0, r1 = (r["results"]["shapes5"] for r in p["seeds"])
        assert r1["run_dir"] == str(sweep.output_dir / "seed-1" / "points" / name / "eval" / "shapes5")
        assert r0["image_count"] == r1["image_count"] == 2
        agg = p["aggregate"]["shapes5"]
        assert agg["seeds"] == [0, 1] and agg["n_seeds"] == 2
        for metric, (v0, v1) in (("concept", (r0["metrics"]["concept"], r1["metrics"]["concept"])),
                                 ("edit/l1", (r0["metrics"]["edit/l1"], r1["metrics"]["edit/l1"]))):
            st = agg["metrics"][metric]
            mean = (v0 + v1) / 2
            half = 12.706 * abs(v0 - v1) / math.sqrt(2) / math.sqrt(2)  # t_{0.975,1} s / sqrt(n), s = |v0 - v1| / sqrt 2
            assert st["values"] == [v0, v1] and st["n"] == 2 and st["t"] == 12.706
            assert st["mean"] == pytest.approx(mean) and st["half_width"] == pytest.approx(half)
            assert st["ci95"] == pytest.approx([mean - half, mean + half])
        sub = agg["subsets"]["edit"]["localization"]
        assert sub["values"] == [r0["subsets"]["edit"]["localization"], r1["subsets"]["edit"]["localization"]]
    # seed 1 really trained with train.seed=1: its edit adapters differ from seed 0's
    from safetensors.torch import load_file

    a, b = (load_file(sweep.run("alpha-0.5", s).final / "adapters.safetensors") for s in (0, 1))
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert "(n=2)" in summary_text(data)


def test_one_seed_aggregate_has_no_interval(tiny_sweep):
    _, data = tiny_sweep
    p = {q["name"]: q for q in data["points"]}["alpha-0.5"]
    st = p["aggregate"]["shapes5"]["metrics"]["concept"]
    assert st["n"] == 1 and st["ci95"] is None and st["note"] == "one seed: no interval"
    assert st["mean"] == p["results"]["shapes5"]["metrics"]["concept"]


def test_two_seed_report(two_seed_sweep):
    sweep, data, _ = two_seed_sweep
    md = render_report(sweep.output_dir, out_dir=sweep.output_dir / "report-seeds").read_text()
    assert "Training seeds: [0, 1]" in md and "### Per training seed" in md and "seed 0 | seed 1" in md
    assert "95 % t-interval half-width across 2 training seeds" in md
    assert "each point - chosen (paired over 2 training seeds" in md
    assert "no detectable difference at this budget" in md or "better than the chosen" in md or "worse:" in md
    never = {p["name"]: p for p in data["points"]}["alpha-2.0"]  # not run here (seed 0: maybe by an earlier test)
    assert [r["status"] for r in never["seeds"]][1] == "pending" and never["status"] in ("pending", "partial")


def _seeded_point(i, name, label, per_seed, chosen=False):
    """A collected point with one run per seed: per_seed = {seed: (concept, localization)}."""
    runs = []
    for seed, (concept, loc) in per_seed.items():
        run = _fake_point(i, name, label, concept, loc, chosen)
        runs.append({"seed": seed, "status": "done", "results": run["results"]})
    return {**_fake_point(i, name, label, *per_seed[next(iter(per_seed))], chosen), "seed": next(iter(per_seed)),
            "seeds": runs}


def test_paired_differences_over_seeds_by_hand():
    from benchmarks.sweeps.summaries import metric_summary, paired_summary

    staged = _seeded_point(0, "cologen", "CoLoGen", {0: (0.50, 0.40), 1: (0.56, 0.41), 2: (0.53, 0.47)}, chosen=True)
    cot = _seeded_point(1, "cotraining", "Co-training", {0: (0.40, 0.42), 1: (0.47, 0.40), 2: (0.45, 0.44)})
    d = [0.10, 0.09, 0.08]  # concept: staged - co-training per seed
    mean = sum(d) / 3
    half = 4.303 * math.sqrt(sum((x - mean) ** 2 for x in d) / 2) / math.sqrt(3)
    pair = paired_summary(staged, cot, "concept", "shapes5", "edit")
    assert pair["kind"] == "seeds" and pair["n"] == 3 and pair["seeds"] == [0, 1, 2]
    assert pair["diff"] == pytest.approx(mean) and pair["ci"] == pytest.approx([mean - half, mean + half])
    loc = paired_summary(staged, cot, "localization", "shapes5", "edit")  # -0.02, +0.01, +0.03: straddles zero
    assert loc["ci"][0] < 0 < loc["ci"][1]
    sm = metric_summary(staged, "concept", "shapes5", "edit")
    assert sm["kind"] == "seeds" and sm["mean"] == pytest.approx(0.53)
    assert sm["err"] == pytest.approx(4.303 * 0.03 / math.sqrt(3))  # s of 0.50, 0.56, 0.53 = 0.03
    data = {"sweep": "t5", "kind": "table5", "eval": [{"name": "shapes5", "tasks": ["edit"]}], "seeds": [0, 1, 2],
            "report": {"table5": {"baseline": "wo_rc_rl", "groups": [
                {"title": "edit", "eval": "shapes5", "subset": "edit", "metrics": ["concept", "localization"]}]}},
            "points": [staged, cot]}
    findings = " ".join(table5_findings(data))
    assert "CoLoGen vs co-training** (paired over 3 training seeds" in findings
    assert f"Better: edit concept (+{mean:.3f}, 95 % CI [+{mean - half:.3f}, +{mean + half:.3f}], 3 seeds)" in findings
    assert "better on 1, worse on 0 metrics; no detectable difference at this budget on 1" in findings
    md = table5_markdown(data)
    assert f"0.530 ± {4.303 * 0.03 / math.sqrt(3):.3f}" in md and "across 3 training seeds" in md
    # one seed: the interval is over images only, and the text says training-seed variation is not covered
    one = {**data, "points": [_fake_point(0, "cologen", "CoLoGen", 0.50, 0.40, True),
                              _fake_point(1, "cotraining", "Co-training", 0.40, 0.395)]}
    text = " ".join(table5_findings(one))
    assert "one training seed: intervals over the evaluated images only" in text
    assert "training-seed variation is not covered" in text
    assert "Better: edit concept (+0.100, 7.1 s.e.)" in text and "no detectable difference at this budget on 1" in text
