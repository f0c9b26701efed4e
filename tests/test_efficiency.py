"""The efficiency switches change speed and memory, never the math: checkpointing policies (and, below, compiled
blocks) give the same losses as the default on the tiny preset; the training step keeps its device work free of
host syncs outside logging steps."""

from __future__ import annotations

import pytest
import torch

from lit_cologen.config import ConfigError
from lit_cologen.models.config import PRWConfig
from lit_cologen.models.factory import build_base_transformer
from lit_cologen.models.transformer import CoLoGenTransformer
from lit_cologen.training.config import load_step_config
from lit_cologen.training.run import run_step
from tests.tiny_run import LossRecorder, tiny_overrides


def test_selective_checkpointing_spreads_the_ratio_over_the_blocks():
    model = CoLoGenTransformer(build_base_transformer("tiny"), PRWConfig(rank=4))
    assert model.num_blocks == 4  # 2 double + 2 single
    assert model.set_checkpointing("full") == [0, 1, 2, 3]
    assert model.set_checkpointing("none") == [] and not model.gradient_checkpointing
    assert model.set_checkpointing("selective", 0.5) == [1, 3]
    assert model.set_checkpointing("selective", 0.25) == [3]
    assert model.set_checkpointing("selective", 1.0) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="checkpointing policy"):
        model.set_checkpointing("some")


def _losses(tmp_path, name: str, **extra) -> tuple[dict[int, float], dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    rec = LossRecorder()
    cfg = load_step_config(None, tiny_overrides(tmp_path / name, steps=3, **{"model.prw.num_experts": 2,
                                                                              "data.tasks": "[inpaint,edit]", **extra}))
    final = run_step(cfg, extra_callbacks=[rec], enable_progress=False)
    return rec.losses, load_file(str(final / "adapters.safetensors"))


def test_checkpointing_policies_train_identically(tmp_path):
    """Router noise on, two tasks: the recomputed forward replays the same random draws (RNG state restored)."""
    ref_losses, ref_weights = _losses(tmp_path, "none", **{"train.checkpointing": "none"})
    for policy, ratio in (("full", 0.5), ("selective", 0.5)):
        losses, weights = _losses(tmp_path, policy, **{"train.checkpointing": policy, "train.checkpoint_ratio": ratio})
        assert losses.keys() == ref_losses.keys() and len(losses) == 3
        for step in losses:
            assert losses[step] == pytest.approx(ref_losses[step], rel=1e-6, abs=1e-7)
        for key in ref_weights:
            torch.testing.assert_close(weights[key], ref_weights[key], rtol=1e-5, atol=1e-7)


def test_old_checkpointing_key_still_loads_and_conflicts_are_refused():
    assert load_step_config(None, ["model.gradient_checkpointing=true"]).train.checkpointing == "full"
    assert load_step_config(None, ["model.gradient_checkpointing=false"]).train.checkpointing == "none"
    with pytest.raises(ConfigError, match="train.checkpointing"):
        load_step_config(None, ["model.gradient_checkpointing=true", "train.checkpointing=none"])
    with pytest.raises(ConfigError, match="train.checkpoint_ratio"):
        load_step_config(None, ["train.checkpoint_ratio=0"])
