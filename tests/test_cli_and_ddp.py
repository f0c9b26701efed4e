"""The `cologen` command end to end, and two-process DDP (gloo) training on Shapes-5 shards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def cologen(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lit_cologen.cli", *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def test_data_build_cli_writes_shards_and_index(tmp_path):
    raw = tmp_path / "pairs"
    raw.mkdir()
    for i in range(3):
        Image.new("RGB", (16, 16), (10 * i, 0, 0)).save(raw / f"p{i}_source.png")
        Image.new("RGB", (16, 16), (0, 10 * i, 0)).save(raw / f"p{i}_target.png")
        (raw / f"p{i}.txt").write_text(f"make it green {i}")
    res = cologen("data", "build", "edit-folder", "--root", str(raw), "--out", str(tmp_path / "shards"))
    assert res.returncode == 0, res.stderr
    index = json.loads((tmp_path / "shards" / "index.json").read_text())
    assert index["totals"]["tasks"] == {"edit": 3} and index["totals"]["samples"] == 3


def test_train_cli_rejects_a_bad_key_before_compute(tmp_path):
    res = cologen("train", str(REPO / "experiments/cologen/curriculum_tiny.yaml"), timeout=120)
    assert res.returncode != 0  # a curriculum file is not a step file: unknown keys are named
    assert "config key" in res.stderr
    res = cologen("curriculum", str(REPO / "experiments/cologen/curriculum_tiny.yaml"), "veteran.rho=2",
                  f"output_dir={tmp_path}", timeout=120)
    assert res.returncode != 0 and "veteran.rho" in res.stderr
    assert not any(tmp_path.iterdir())  # nothing was started


@pytest.mark.slow
def test_ddp_two_processes_disjoint_data_identical_weights(tmp_path):
    shards = tmp_path / "shards"
    res = cologen("data", "shapes5", "--out", str(shards), "--n-per-task", "16", "--resolution", "32",
                  "--tasks", "inpaint", "--maxcount", "4")
    assert res.returncode == 0, res.stderr
    keys_dir = tmp_path / "keys"
    out = tmp_path / "run"
    script = tmp_path / "ddp_run.py"
    script.write_text(f"""
import json, os, sys
import lightning as L
from lit_cologen.training.config import load_step_config
from lit_cologen.training.run import run_step

class KeyLog(L.Callback):
    def __init__(self):
        self.keys = []
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.keys.extend(batch["key"])
    def on_train_end(self, trainer, pl_module):
        os.makedirs({str(keys_dir)!r}, exist_ok=True)
        with open(os.path.join({str(keys_dir)!r}, f"rank{{trainer.global_rank}}.json"), "w") as f:
            json.dump(self.keys, f)
        from safetensors.torch import save_file
        state = {{k: v.detach().contiguous() for k, v in pl_module.transformer.adapter_state_dict().items()}}
        save_file(state, os.path.join({str(keys_dir)!r}, f"rank{{trainer.global_rank}}.safetensors"))

cfg = load_step_config(None, [
    "name=ddp", "output_dir={out}", "model.preset=tiny", "model.prw.rank=4",
    "data.source=shards", "data.train_shards=[{shards}]", "data.resolution=32", "data.batch_size=2",
    "data.tasks=[inpaint]", "data.shuffle_buffer=0", "data.samples_per_epoch=16",
    "train.max_steps=3", "train.devices=2", "train.global_batch=4", "train.strategy=ddp", "train.accelerator=cpu",
    "train.precision=32-true", "train.checkpoint_every=3", "train.log_every=1", "optim.warmup_steps=1"])
run_step(cfg, extra_callbacks=[KeyLog()], enable_progress=False)
""")
    proc = subprocess.run([sys.executable, str(script)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    k0 = json.loads((keys_dir / "rank0.json").read_text())
    k1 = json.loads((keys_dir / "rank1.json").read_text())
    assert len(k0) == len(k1) == 6
    assert not set(k0) & set(k1), "ranks saw the same samples"
    w0, w1 = load_file(keys_dir / "rank0.safetensors"), load_file(keys_dir / "rank1.safetensors")
    assert w0.keys() == w1.keys() and w0
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key
    assert any(v.abs().sum() > 0 for k, v in w0.items() if "lora_B" in k)  # they did train
    final = load_file(out / "final" / "adapters.safetensors")
    assert all(torch.equal(final[k], w0[k]) for k in final)
