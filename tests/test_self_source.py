"""`train.self_source`: the base pre-training's in-context share (a sample's own clean target as its aligned source)."""

from __future__ import annotations

import pytest
import torch
from tiny_run import tiny_overrides

from lit_cologen.config import ConfigError
from lit_cologen.models.latents import pack_latents, source_ids
from lit_cologen.training.config import load_step_config

BASE = {"train.train_base": "true", "train.use_source": "false", "model.prw.blocks": "none"}


def _module(tmp_path, share: float):
    from lit_cologen.training.module import CoLoGenModule

    return CoLoGenModule(load_step_config(None, tiny_overrides(tmp_path, **BASE, **{"train.self_source": share})))


def _batch(b: int = 4) -> dict:
    gen = torch.Generator().manual_seed(3)
    return {"task": ["inpaint"] * b, "prompt": [f"a red circle {i}" for i in range(b)], "key": [str(i) for i in range(b)],
            "target": torch.rand(b, 3, 32, 32, generator=gen) * 2 - 1,
            "source": torch.rand(b, 3, 32, 32, generator=gen) * 2 - 1}


@pytest.mark.parametrize("extra", [{"train.train_base": "false", "model.prw.blocks": "all"},
                                   {"train.use_source": "true"}, {"train.self_source": 1.5}])
def test_self_source_is_refused_outside_the_base_pretraining(tmp_path, extra):
    overrides = {**BASE, "train.self_source": 0.5, **extra}
    with pytest.raises(ConfigError, match="train.self_source"):
        load_step_config(None, tiny_overrides(tmp_path, **overrides))


def test_self_source_feeds_the_clean_target_as_aligned_source_tokens(tmp_path):
    module = _module(tmp_path, 1.0)
    batch = _batch()
    seen = []
    module.transformer.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(kwargs), with_kwargs=True)
    t = torch.full((4,), 0.5)
    plan = module.plan_step(batch, t, torch.Generator().manual_seed(0), batch["prompt"])
    assert set(plan.groups) == {"self"}
    losses, _ = module.device_losses(batch, plan)
    assert losses.shape == (4,) and torch.isfinite(losses).all()
    target_tokens = pack_latents(module.codec.encode(batch["target"]))
    assert len(seen) == 1
    torch.testing.assert_close(seen[0]["source_hidden_states"], target_tokens)  # the target, not batch["source"]
    torch.testing.assert_close(seen[0]["source_ids"], source_ids(8, 8, "aligned"))


def test_self_source_share_splits_the_batch_and_zero_keeps_text_to_image(tmp_path):
    batch = _batch(64)
    t = torch.full((64,), 0.5)
    half = _module(tmp_path / "half", 0.5).plan_step(batch, t, torch.Generator().manual_seed(0), batch["prompt"])
    assert set(half.groups) == {"self", "none"}
    assert 16 <= len(half.groups["self"]) <= 48  # a Bernoulli(0.5) draw per sample
    assert sorted(torch.cat(list(half.groups.values())).tolist()) == list(range(64))
    off = _module(tmp_path / "off", 0.0).plan_step(batch, t, torch.Generator().manual_seed(0), batch["prompt"])
    assert set(off.groups) == {"none"}
    # the noise is drawn before the share's draw, so adding a share leaves a step's noise as it was
    torch.testing.assert_close(off.noise, half.noise)
