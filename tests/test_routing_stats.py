"""RoutingStatsCallback gets each step's routing from ``training_step``'s return value (no hidden module state).

Truth: the shares the callback logs per task are the fractions of the step's routing decisions that chose each
expert, so for every logged step they sum to 1 over the experts; the per-block histograms count one decision per
sample (per-sample routing) in every routed block.
"""

from __future__ import annotations

import math

import pytest
import torch

from lit_cologen.training.config import load_step_config
from lit_cologen.training.module import CoLoGenModule, RoutingRecord
from lit_cologen.training.run import run_step
from tests.tiny_run import tiny_overrides


@pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")
def test_training_step_returns_its_routing_on_the_device_and_keeps_no_copy():
    cfg = load_step_config(None, tiny_overrides("unused", **{"model.prw.num_experts": 2}))
    module = CoLoGenModule(cfg)
    batch = {"task": ["inpaint", "inpaint"], "prompt": ["a red circle", "a blue star"],
             "target": torch.rand(2, 3, 32, 32) * 2 - 1, "source": torch.rand(2, 3, 32, 32) * 2 - 1,
             "key": ["a", "b"]}
    out = module.training_step(batch, 0)
    assert set(out) == {"loss", "routing"} and out["loss"].requires_grad
    record = out["routing"]
    assert isinstance(record, RoutingRecord) and record.tasks == ["inpaint", "inpaint"]
    blocks = len(module.transformer.adapters())
    assert len(record.decisions) == blocks > 0
    for index, probs in record.decisions:
        assert index.shape == (2,) and probs.shape == (2, 2) and not index.requires_grad
        assert index.device == module.device
    assert not hasattr(module, "last_routing")


def test_routing_shares_logged_from_the_returned_record(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_step_config(None, tiny_overrides(tmp_path / "run", steps=3, **{"model.prw.num_experts": 2}))
    run_step(cfg, enable_progress=False)
    acc = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"histograms": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    shares = [acc.Scalars(f"routing_task/inpaint/expert_{k}") for k in range(2)]
    assert len(shares[0]) >= 2  # logged on several steps
    for a, b in zip(*shares):
        assert a.step == b.step and math.isclose(a.value + b.value, 1.0, abs_tol=1e-6)
    block_tags = sorted(t for t in tags["histograms"] if t.startswith("routing/block_"))
    assert len(block_tags) == 4  # tiny: 2 double + 2 single blocks, all routed
    for tag in block_tags:
        for event in acc.Histograms(tag):
            assert event.histogram_value.num == 2  # one decision per sample, batch 2
