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


def _losses(tmp_path, name: str, steps: int = 3, **extra) -> tuple[dict[int, float], dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    rec = LossRecorder()
    cfg = load_step_config(None, tiny_overrides(tmp_path / name, steps=steps, **{"model.prw.num_experts": 2,
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


def test_compiled_blocks_train_like_eager_without_graph_breaks_or_per_step_recompiles(tmp_path):
    """``train.compile`` through AOT autograd (``aot_eager``: the graphs inductor would get, without its C++ build,
    which takes minutes on a small CPU): same losses as eager; the task mix changes the per-layout group sizes from
    step to step, and after the first steps no new graph is compiled."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    mix = {"data.tasks": "[inpaint,subject,edit]", "data.batch_size": 3, "train.global_batch": 3}
    ref, _ = _losses(tmp_path, "eager", steps=6, **mix)
    torch._dynamo.reset()
    counters.clear()
    graphs_per_step: list[int] = []

    class CountGraphs(LossRecorder):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            graphs_per_step.append(int(counters["stats"]["unique_graphs"]))

    rec = CountGraphs()
    cfg = load_step_config(None, tiny_overrides(tmp_path / "compiled", steps=6, **{
        "model.prw.num_experts": 2, **mix, "train.compile": True, "train.compile_backend": "aot_eager"}))
    run_step(cfg, extra_callbacks=[rec], enable_progress=False)
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert graphs_per_step[0] > 0 and graphs_per_step[-1] == graphs_per_step[-3]  # nothing new in the last steps
    for step in ref:
        assert rec.losses[step] == pytest.approx(ref[step], rel=1e-5, abs=1e-6)


def test_compiled_pipeline_samples_the_same_image(tmp_path):
    """Sampling with compiled blocks (aot_eager, see above) through the source K/V cache and without it: the same
    image as eager; ``configure_runtime`` is what ``from_preset(compile=True)`` calls."""
    import numpy as np
    from PIL import Image

    from lit_cologen.models.runtime import configure_runtime
    from lit_cologen.pipeline import CoLoGenPipeline

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    pipe = CoLoGenPipeline.from_preset("tiny", prw=PRWConfig(num_experts=2, rank=4))
    pipe.set_progress_bar_config(disable=True)

    def sample(**kw):
        return pipe("edit", image, prompt="make it red", seed=3, num_inference_steps=3, output_type="pt", **kw).images

    eager, eager_uncached = sample(), sample(use_source_cache=False)
    configure_runtime(pipe.transformer, compile=True, compile_backend="aot_eager", training=False)
    assert pipe.transformer.compiled
    torch.testing.assert_close(sample(), eager, rtol=0, atol=1e-5)
    torch.testing.assert_close(sample(use_source_cache=False), eager_uncached, rtol=0, atol=1e-5)
