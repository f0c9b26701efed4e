"""Training (issue: LightningModule per step, veteran supervision, curriculum, checkpoints, resume)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from tiny_run import LossRecorder, tiny_overrides

from lit_cologen.config import ConfigError
from lit_cologen.models.prw import RoutingDecision
from lit_cologen.models.schedule import flux_shift_mu, shift_timesteps
from lit_cologen.training.config import load_curriculum, load_step_config
from lit_cologen.training.losses import noisy_latents, sample_timesteps, veteran_loss
from lit_cologen.training.run import run_curriculum, run_step

REPO = Path(__file__).resolve().parents[1]


class Interrupt(L.Callback):
    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at_step:
            raise RuntimeError("simulated crash")


# ---------------------------------------------------------------------------------------------- losses


def test_flow_matching_interpolation_and_target_by_hand():
    x0, eps, t = torch.tensor([[[2.0]]]), torch.tensor([[[-1.0]]]), torch.tensor([0.25])
    xt, v = noisy_latents(x0, eps, t)
    assert xt.item() == pytest.approx(0.75 * 2.0 + 0.25 * -1.0)
    assert v.item() == pytest.approx(-1.0 - 2.0)


def test_flux_shift_matches_diffusers_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                            base_image_seq_len=256, max_image_seq_len=4096)
    mu = flux_shift_mu(1024)
    assert mu == pytest.approx(0.5 + (1.15 - 0.5) * (1024 - 256) / (4096 - 256))
    sigmas = torch.tensor([0.9, 0.5, 0.1])
    assert torch.allclose(shift_timesteps(sigmas, mu), sched.time_shift(mu, 1.0, sigmas).float(), atol=1e-6)


def test_timestep_sampling_is_seeded_and_in_range():
    a = sample_timesteps(64, 256, generator=torch.Generator().manual_seed(0))
    b = sample_timesteps(64, 256, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.min() > 0 and a.max() < 1
    u = sample_timesteps(4000, 256, "uniform", shift=False, generator=torch.Generator().manual_seed(1))
    assert abs(u.mean().item() - 0.5) < 0.03
    with pytest.raises(ValueError, match="scheme"):
        sample_timesteps(4, 256, "cubic")


def test_veteran_loss_value_and_straight_through_gradient():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]], requires_grad=True)  # sample 0 -> expert 0, sample 1 -> expert 1
    probs = logits.softmax(-1)
    decisions = [RoutingDecision(probs=probs, index=probs.argmax(-1))]
    loss, hard, soft = veteran_loss(decisions, newest=1, alpha=0.5, rho=0.8)
    assert hard.item() == pytest.approx(0.5)
    assert soft.item() == pytest.approx(probs[:, 1].mean().item())
    assert loss.item() == pytest.approx(0.5 * abs(0.5 - 0.8))
    loss.backward()
    # U < rho: the loss pushes the newest expert's probability up, i.e. d loss / d logit_new < 0
    assert (logits.grad[:, 1] < 0).all() and (logits.grad[:, 0] > 0).all()
    soft_loss, _, _ = veteran_loss([RoutingDecision(probs=probs.detach(), index=probs.argmax(-1))], 1, 0.5, 0.8, "soft")
    assert soft_loss.item() == pytest.approx(0.5 * abs(soft.item() - 0.8))


# ---------------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("override, key", [
    ("veteran.rho=1.5", "veteran.rho"),
    ("veteran.alpha=-0.1", "veteran.alpha"),
    ("model.prw.rank=0", "model.prw.rank"),
    ("optim.lr=-1", "optim.lr"),
    ("optim.lr=inf", "optim.lr"),
    ("optim.lr=nan", "optim.lr"),
    ("train.global_batch=7", "train.global_batch"),
    ("model.prw.ranks=4", "model.prw.ranks"),
    ("train.max_steps=many", "train.max_steps"),
    ("model.preset=flux-pro", "model.preset"),
])
def test_bad_config_names_the_key_before_compute(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_step_config(None, ["data.batch_size=2", override])


def test_paper_curriculum_values_are_exact():
    _, steps = load_curriculum(REPO / "experiments/cologen/curriculum.yaml")
    assert [s.name for s in steps] == ["inpaint", "ground", "control", "subject", "edit"]
    assert [s.train.max_steps for s in steps] == [200_000, 200_000, 400_000, 50_000, 200_000]
    assert [s.train.global_batch for s in steps] == [256, 256, 128, 128, 128]
    assert [s.veteran.rho for s in steps] == [1.0, 0.8, 0.8, 0.8, 0.8]
    assert [s.veteran.alpha for s in steps] == [0.0, 0.5, 0.5, 0.5, 0.5]
    assert [s.model.prw.num_experts for s in steps] == [1, 2, 3, 4, 5]
    assert all(s.optim.lr == 1e-4 and s.model.prw.rank == 128 and s.model.prw.alpha == 256 for s in steps)
    assert [s.data.tasks for s in steps] == [["inpaint"], ["ground"], ["control"], ["subject"], ["edit"]]
    assert steps[0].init_from is None and steps[1].init_from.endswith("0_inpaint/final") and steps[1].add_expert
    for s in steps:  # global batch = per device x devices x nodes x accumulate
        assert s.data.batch_size * s.train.devices * s.train.num_nodes * s.train.accumulate == s.train.global_batch
    _, co = load_curriculum(REPO / "experiments/cologen/cotraining.yaml")
    budget = sum(s.train.max_steps * s.train.global_batch for s in steps)
    assert co[0].train.max_steps * co[0].train.global_batch == budget
    assert sorted(co[0].data.tasks) == sorted(["inpaint", "ground", "control", "subject", "edit"])


# ---------------------------------------------------------------------------------------------- running


def test_checkpoint_is_adapters_only_and_loads_weights_only(tmp_path):
    cfg = load_step_config(None, tiny_overrides(tmp_path / "run", steps=2))
    final = run_step(cfg, enable_progress=False)
    ckpt = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)
    keys = list(ckpt["state_dict"])
    assert keys and all(k.startswith("transformer.") and not k.startswith("transformer.base.") for k in keys)
    assert ckpt["global_step"] == 2 and ckpt["optimizer_states"] and ckpt["lr_schedulers"]
    assert (final / "adapters.safetensors").is_file() and (final / "done.json").is_file()
    assert run_step(cfg, enable_progress=False) == final  # finished: skipped


def test_resume_after_crash_reproduces_the_uninterrupted_loss_sequence(tmp_path):
    full = LossRecorder()
    cfg_a = load_step_config(None, tiny_overrides(tmp_path / "a", steps=6))
    run_step(cfg_a, extra_callbacks=[full], enable_progress=False)

    cfg_b = load_step_config(None, tiny_overrides(tmp_path / "b", steps=6))
    first = LossRecorder()
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_step(cfg_b, extra_callbacks=[first, Interrupt(at_step=3)], enable_progress=False)
    assert not (tmp_path / "b/final").exists()
    second = LossRecorder()
    run_step(cfg_b, extra_callbacks=[second], enable_progress=False)
    assert min(second.losses) == 3  # resumed after the step-2 checkpoint
    resumed = {**{k: v for k, v in first.losses.items() if k <= 2}, **second.losses}
    assert sorted(resumed) == sorted(full.losses) == list(range(1, 7))
    for step in full.losses:
        assert resumed[step] == pytest.approx(full.losses[step], rel=1e-6, abs=1e-7), step


def test_resume_with_two_experts_is_exact(tmp_path):
    """With several experts the router's argmax can sit near a tie: a resumed run must see bit-identical text
    embeddings (its cold text cache encodes the prompts in other batch compositions than the uninterrupted run)."""
    extra = {"model.prw.num_experts": 2}
    full = LossRecorder()
    run_step(load_step_config(None, tiny_overrides(tmp_path / "a", steps=4, **extra)), extra_callbacks=[full],
             enable_progress=False)
    cfg_b = load_step_config(None, tiny_overrides(tmp_path / "b", steps=4, **extra))
    first = LossRecorder()
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_step(cfg_b, extra_callbacks=[first, Interrupt(at_step=2)], enable_progress=False)
    second = LossRecorder()
    run_step(cfg_b, extra_callbacks=[second], enable_progress=False)
    resumed = {**{k: v for k, v in first.losses.items() if k <= 2}, **second.losses}
    assert sorted(resumed) == sorted(full.losses) == [1, 2, 3, 4]
    for step in full.losses:
        assert resumed[step] == full.losses[step], (step, resumed[step], full.losses[step])


def test_curriculum_hands_off_experts_and_freezes_veterans(tmp_path):
    from safetensors.torch import load_file

    overrides = [f"output_dir={tmp_path / 'cur'}", "train.max_steps=2", "train.checkpoint_every=2",
                 "train.val_every=0", "data.batch_size=2", "train.global_batch=2"]
    finals = run_curriculum(REPO / "experiments/cologen/curriculum_tiny.yaml", overrides, enable_progress=False,
                            only=["base", "inpaint", "ground"])
    assert (finals[0] / "transformer" / "config.json").is_file()  # base pre-training exports the base
    step1 = load_file(finals[1] / "adapters.safetensors")
    step2 = load_file(finals[2] / "adapters.safetensors")
    assert "double_adapters.0.experts.lora_A.0" in step1 and "double_adapters.0.experts.lora_A.1" not in step1
    assert "double_adapters.0.experts.lora_A.1" in step2
    for key, value in step1.items():  # the veteran (expert 0) is unchanged by step 2; the router did train
        if ".experts." in key:
            assert torch.equal(step2[key], value), key
    assert any(not torch.equal(step2[k], step1[k]) for k in step1 if ".router." in k and step2[k].shape == step1[k].shape
               ) or any(step2[k].shape != step1[k].shape for k in step1 if ".router." in k)
    # a finished step is not re-run
    again = run_curriculum(REPO / "experiments/cologen/curriculum_tiny.yaml", overrides, enable_progress=False,
                           only=["base", "inpaint"])
    assert again[1] == finals[1]


@pytest.mark.parametrize("path", sorted(str(p.relative_to(REPO)) for p in (REPO / "experiments").glob("*/*.yaml")
                                        if p.parent.name in ("cologen", "presets", "demo")))
def test_every_shipped_config_validates(path):
    from omegaconf import OmegaConf

    raw = OmegaConf.load(REPO / path)
    if "steps" in raw:
        _, steps = load_curriculum(REPO / path)
        assert steps
    else:
        cfg = load_step_config(REPO / path)
        assert cfg.train.max_steps > 0


class GradNormProbe(L.Callback):
    """Global gradient norm as the optimizer saw it: Lightning zeroes the gradients at the start of the next step,
    after clipping and the optimizer step of the previous one."""

    def __init__(self):
        self.norms = []

    def on_before_zero_grad(self, trainer, pl_module, optimizer):
        grads = [p.grad for p in pl_module.trainable_parameters() if p.grad is not None]
        if grads:
            self.norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))


def test_gradient_clipping_is_applied_by_the_module(tmp_path):
    clipped, free = GradNormProbe(), GradNormProbe()
    run_step(load_step_config(None, tiny_overrides(tmp_path / "a", steps=3, **{"optim.grad_clip": 1e-4})),
             extra_callbacks=[clipped], enable_progress=False)
    run_step(load_step_config(None, tiny_overrides(tmp_path / "b", steps=3, **{"optim.grad_clip": 0.0})),
             extra_callbacks=[free], enable_progress=False)
    assert len(clipped.norms) == 2 and all(n <= 1e-4 * (1 + 1e-4) for n in clipped.norms)
    assert all(n > 1e-3 for n in free.norms)  # unclipped gradients are far larger (~1e-2): the bound above is the clip


def test_fsdp_wrap_policy_leaves_no_parameter_in_the_root_unit():
    from lit_cologen.training.module import CoLoGenModule
    from lit_cologen.training.trainer import fsdp_wrap_policy

    module = CoLoGenModule(load_step_config(REPO / "experiments/presets/tiny.yaml", ["model.preset=small"]))
    policy = fsdp_wrap_policy(module)
    units = [m for m in module.modules() if policy(module=m, recurse=False, nonwrapped_numel=0)]
    covered = {id(p) for u in units for p in u.parameters()}
    assert len(units) == 17  # 3 + 3 blocks, 6 adapters, 5 top-level base modules
    missing = [n for n, p in module.named_parameters() if id(p) not in covered]
    assert missing == []
