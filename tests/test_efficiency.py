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


class _HostSyncRecorder:
    """Records calls that make a CUDA device wait for the host to read a value (``.item()``, ``.tolist()``,
    ``.cpu()``, ``bool(t)``, ``nonzero`` / boolean-mask indexing, ...), through a ``TorchFunctionMode``; on the CPU
    nothing waits, so this is how the contract is checked without a GPU."""

    SYNCS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.__bool__,
             torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.nonzero, torch.nonzero, torch.masked_select,
             torch.Tensor.masked_select, torch.unique, torch.Tensor.unique, torch.Tensor.any, torch.Tensor.all}

    def __init__(self):
        from torch.overrides import TorchFunctionMode

        recorder = self
        self.calls: list[str] = []

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                if func in recorder.SYNCS:
                    recorder.calls.append(func.__name__)
                if func is torch.Tensor.__getitem__:
                    index = args[1] if isinstance(args[1], tuple) else (args[1],)
                    if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index):
                        recorder.calls.append("boolean-mask indexing")
                return func(*args, **(kwargs or {}))

        self.mode = Mode()


def test_the_device_side_of_a_training_step_makes_no_host_sync():
    from lit_cologen.training.module import CoLoGenModule

    cfg = load_step_config(None, tiny_overrides("unused", **{
        "model.prw.num_experts": 2, "data.tasks": "[inpaint,subject,edit]", "data.batch_size": 3,
        "train.global_batch": 3, "veteran.alpha": 0.5}))
    module = CoLoGenModule(cfg)
    batch = {"task": ["inpaint", "subject", "edit"], "prompt": ["a red circle", "a star", "make it blue"],
             "target": torch.rand(3, 3, 32, 32) * 2 - 1, "source": torch.rand(3, 3, 32, 32) * 2 - 1,
             "key": ["k0", "k1", "k2"]}
    gen = torch.Generator().manual_seed(0)
    plan = module.plan_step(batch, torch.rand(3, generator=gen), gen, batch["prompt"])
    recorder = _HostSyncRecorder()
    with recorder.mode:
        torch.zeros(2).tolist()  # the recorder sees a sync (self-check)
        assert recorder.calls == ["tolist"]
        recorder.calls.clear()
        torch.manual_seed(1)  # router noise
        loss, logs, routing = module.device_step(batch, plan)
        loss.backward()
    assert recorder.calls == [], recorder.calls
    assert set(logs) >= {"train/loss", "train/loss_veteran", "train/loss_inpaint", "train/loss_edit"} and routing
    # the per-task values are the means over that task's samples
    torch.manual_seed(1)
    per_sample, _ = module.device_losses(batch, plan)
    torch.testing.assert_close(logs["train/loss_edit"], per_sample[2].detach())


def test_quantization_libraries_import_without_their_known_log_noise():
    """torchao / bitsandbytes / diffusers' quantizer print lines at import time that say nothing to our users
    (lit_cologen/utils/library_noise.py): a fresh interpreter importing them through lit_cologen shows none."""
    import subprocess
    import sys

    from lit_cologen.utils.library_noise import KNOWN_IMPORT_NOISE

    code = "import lit_cologen.models.quantize, diffusers, peft, bitsandbytes, torchao"
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300).stderr
    for prefixes in KNOWN_IMPORT_NOISE.values():
        for prefix in prefixes:
            assert prefix.replace("%s ", "") not in err, err


@pytest.mark.parametrize("mode, tolerance", [("int8", 0.02), ("nf4", 0.05)])
def test_a_quantized_base_trains_the_experts_with_nearly_the_same_losses(tmp_path, mode, tolerance):
    """model.base_quantization through the training module on CPU: every step's loss within ``tolerance``
    (relative) of the unquantized base's on the same batches, and the experts still learn (weights move)."""
    ref, ref_weights = _losses(tmp_path, "fp", **{"train.checkpointing": "none"})
    losses, weights = _losses(tmp_path, mode, **{"train.checkpointing": "none", "model.base_quantization": mode})
    for step in ref:
        assert losses[step] == pytest.approx(ref[step], rel=tolerance)
    moved = [k for k in weights if "lora_B" in k and weights[k].abs().max() > 0]
    assert moved, "the newest expert did not train through the quantized base"
