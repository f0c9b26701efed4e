"""train.ema: the exported EMA equals a hand-computed average of the adapters after each optimizer step, resume
reproduces it exactly, and the pipeline / bench generator load it by default (and say so)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

from lit_cologen.config import ConfigError
from lit_cologen.models.adapter_io import ADAPTER_FILE, EMA_ADAPTER_FILE, read_adapter_metadata
from lit_cologen.training.config import load_step_config
from lit_cologen.training.run import run_step
from tests.tiny_run import tiny_overrides

EMA = {"model.prw.num_experts": 2, "train.ema.decay": 0.5, "train.ema.start_step": 2}


class AdapterRecorder(L.Callback):
    """The adapter weights after every optimizer step (global step -> state dict copy)."""

    def __init__(self):
        self.after: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        state = pl_module.transformer.adapter_state_dict()
        self.after[trainer.global_step] = {k: v.detach().clone() for k, v in state.items()}


def test_exported_ema_is_the_hand_computed_average(tmp_path):
    rec = AdapterRecorder()
    final = run_step(load_step_config(None, tiny_overrides(tmp_path / "run", steps=4, **EMA)),
                     extra_callbacks=[rec], enable_progress=False)
    ema = load_file(str(final / EMA_ADAPTER_FILE))
    raw = load_file(str(final / ADAPTER_FILE))
    # updates after steps 2, 3, 4 (start_step 2): the first copies, then ema = 0.5 ema + 0.5 w
    expected = {k: rec.after[2][k].clone() for k in rec.after[2]}
    for step in (3, 4):
        expected = {k: 0.5 * expected[k] + 0.5 * rec.after[step][k] for k in expected}
    assert ema.keys() == raw.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(ema[k], expected[k], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(raw[k], rec.after[4][k])
    changed = [k for k in expected if "lora_B" in k and not torch.equal(ema[k], raw[k])]
    assert changed, "the average should differ from the last weights"
    meta = read_adapter_metadata(final / EMA_ADAPTER_FILE)
    assert meta["ema"]["updates"] == 3 and meta["ema"]["decay"] == 0.5


class CrashAfterCheckpoint(L.Callback):
    """Fails during step 3, after the step-2 checkpoint (``train.checkpoint_every`` = 2) was written."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 2:
            raise RuntimeError("simulated crash")


def test_resume_reproduces_the_ema(tmp_path):
    """One expert: the configuration whose raw resume is bit-exact today (with two experts the resumed raw weights
    differ by ~1e-3 even without EMA: a known defect, reported separately), so the EMA must be bit-exact too."""
    one = {**EMA, "model.prw.num_experts": 1}
    straight = run_step(load_step_config(None, tiny_overrides(tmp_path / "a", steps=4, **one)), enable_progress=False)
    cfg = load_step_config(None, tiny_overrides(tmp_path / "b", steps=4, **one))
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_step(cfg, extra_callbacks=[CrashAfterCheckpoint()], enable_progress=False)
    resumed = run_step(cfg, enable_progress=False)  # from checkpoints/last.ckpt at step 2
    for name in (ADAPTER_FILE, EMA_ADAPTER_FILE):
        a, b = load_file(str(straight / name)), load_file(str(resumed / name))
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_the_pipeline_and_generator_use_the_ema_by_default(tmp_path):
    from benchmarks.cologen_generator import make
    from lit_cologen.pipeline import CoLoGenPipeline

    final = run_step(load_step_config(None, tiny_overrides(tmp_path / "run", steps=3, **EMA)), enable_progress=False)
    assert CoLoGenPipeline.from_preset("tiny", adapters=final).transformer.adapters_file.endswith(EMA_ADAPTER_FILE)
    raw = CoLoGenPipeline.from_preset("tiny", adapters=final, use_ema=False)
    assert raw.transformer.adapters_file.endswith(ADAPTER_FILE)
    assert make(adapters=str(final), steps=2).describe()["adapter_weights"] == "ema"
    assert "adapter_weights" not in make(adapters=str(final), steps=2, use_ema=False).describe()


def test_ema_settings_are_checked():
    with pytest.raises(ConfigError, match="train.ema.decay"):
        load_step_config(None, ["train.ema.decay=1.5"])
    with pytest.raises(ConfigError, match="train.ema"):
        load_step_config(None, ["train.ema.decay=0.9", "model.prw.blocks=none"])
