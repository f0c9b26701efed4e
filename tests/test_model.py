"""Model core (issue: PRW experts + two-step attention): CPU, tiny preset, fp32, against stock diffusers."""

from __future__ import annotations

import pytest
import torch

from lit_cologen.config import PRWConfig
from lit_cologen.models.latents import latent_ids, pack_latents, source_ids, text_ids, unpack_latents
from lit_cologen.models.prw import KVExpertBank, PRWAdapter, RoutingDecision, newest_expert_usage
from lit_cologen.models.transformer import CoLoGenTransformer, build_base_transformer

B, TOK_H, TOK_W, LY = 2, 4, 4, 5


def make_inputs(model: CoLoGenTransformer, seed: int = 0, t: float | None = None):
    g = torch.Generator().manual_seed(seed)
    cfg = model.base.config
    lx = TOK_H * TOK_W
    return dict(
        hidden_states=torch.randn(B, lx, cfg.in_channels, generator=g),
        encoder_hidden_states=torch.randn(B, LY, cfg.joint_attention_dim, generator=g),
        pooled_projections=torch.randn(B, cfg.pooled_projection_dim, generator=g),
        timestep=torch.full((B,), t) if t is not None else torch.rand(B, generator=g),
        img_ids=latent_ids(TOK_H, TOK_W),
        txt_ids=text_ids(LY),
        guidance=torch.full((B,), 3.5) if cfg.guidance_embeds else None,
    )


def make_source(model: CoLoGenTransformer, seed: int = 1, layout: str = "aligned"):
    g = torch.Generator().manual_seed(seed)
    return dict(source_hidden_states=torch.randn(B, TOK_H * TOK_W, model.base.config.in_channels, generator=g),
                source_ids=source_ids(TOK_H, TOK_W, layout))


def perturb_experts(model: CoLoGenTransformer, seed: int = 0, scale: float = 0.5, only_newest: bool = False) -> None:
    """Give experts (and routers) non-zero weights, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for adapter in model.adapters():
            bank = adapter.experts
            ids = [bank.num_experts - 1] if only_newest else range(bank.num_experts)
            for k in ids:
                for p in (bank.lora_B_k[k], bank.lora_B_v[k]):
                    p.copy_(torch.randn(p.shape, generator=g) * scale)
            adapter.router.w_route.copy_(torch.randn(adapter.router.w_route.shape, generator=g))


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return CoLoGenTransformer.from_preset("tiny", PRWConfig(num_experts=3, rank=4, router_noise=True)).eval()


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_parity_with_stock_diffusers_without_source(preset):
    model = CoLoGenTransformer.from_preset(preset, PRWConfig(num_experts=2, rank=4)).eval()
    perturb_experts(model)  # experts must not touch the noisy/text path
    assert sum(p.numel() for p in model.base.parameters()) < (1_000_000 if preset == "tiny" else 10_000_000)
    inputs = make_inputs(model)
    ours = model(**inputs).sample
    ref = model.base(**inputs).sample
    assert ours.shape == ref.shape == inputs["hidden_states"].shape[:2] + (model.base.config.in_channels,)
    assert (ours - ref).abs().max().item() <= 1e-5


def test_two_step_attention_equals_masked_joint_attention_in_stock_flux(tiny):
    """Independent truth: at t = 0 the source modulation equals the noisy one, so our two SDPA calls must equal the
    stock model run over [x; h] with a dense mask in which source queries see only source keys."""
    model = tiny
    inputs = make_inputs(model, t=0.0)
    src = make_source(model)
    ours = CoLoGenTransformer(model.base, PRWConfig(blocks="none")).eval()(**inputs, **src).sample
    lx, lh = inputs["hidden_states"].shape[1], src["source_hidden_states"].shape[1]
    total = LY + lx + lh
    mask = torch.ones(total, total, dtype=torch.bool)
    mask[LY + lx:, : LY + lx] = False  # source rows: only source keys
    ref = model.base(
        hidden_states=torch.cat([inputs["hidden_states"], src["source_hidden_states"]], dim=1),
        encoder_hidden_states=inputs["encoder_hidden_states"], pooled_projections=inputs["pooled_projections"],
        timestep=inputs["timestep"], img_ids=torch.cat([inputs["img_ids"], src["source_ids"]]), txt_ids=inputs["txt_ids"],
        guidance=inputs["guidance"], joint_attention_kwargs={"attention_mask": mask[None, None]},
    ).sample[:, :lx]
    assert (ours - ref).abs().max().item() <= 1e-5


def test_zero_init_experts_leave_output_unchanged(tiny):
    inputs, src = make_inputs(tiny), make_source(tiny)
    plain = CoLoGenTransformer(tiny.base, PRWConfig(blocks="none")).eval()
    expected = plain(**inputs, **src).sample
    assert (tiny(**inputs, **src).sample - expected).abs().max().item() == 0.0
    tiny.add_expert()
    assert tiny.num_experts == 4
    assert (tiny(**inputs, **src).sample - expected).abs().max().item() == 0.0
    # and the source changes the output at all (the test above would be vacuous otherwise)
    assert (plain(**inputs).sample - expected).abs().max().item() > 1e-4


def test_add_expert_keeps_output_with_trained_veterans():
    """With the straight-through gate and a warm-started new expert, adding an expert is a no-op for the model."""
    model = CoLoGenTransformer.from_preset("tiny", PRWConfig(num_experts=2, rank=4, warm_start=True),
                                           gate_scale="straight_through").eval()
    perturb_experts(model)
    inputs, src = make_inputs(model), make_source(model)
    before = model(**inputs, **src).sample
    model.add_expert()
    after = model(**inputs, **src).sample
    assert model.num_experts == 3
    assert (after - before).abs().max().item() <= 1e-6
    # the default (Eq. 4 literal: scaled by the softmax weight) rescales veterans when a column is added
    literal = CoLoGenTransformer.from_preset("tiny", PRWConfig(num_experts=2, rank=4)).eval()
    perturb_experts(literal)
    before = literal(**inputs, **src).sample
    literal.add_expert()
    assert (literal(**inputs, **src).sample - before).abs().max().item() > 0


def test_source_kv_independent_of_noisy_and_text_tokens(tiny):
    perturb_experts(tiny)
    src = make_source(tiny)
    a = tiny(**make_inputs(tiny, seed=0), **src, return_source_cache=True)
    inputs_b = make_inputs(tiny, seed=5)
    inputs_b["pooled_projections"] = make_inputs(tiny, seed=0)["pooled_projections"]  # same global text modulation
    b = tiny(**inputs_b, **src, return_source_cache=True)
    assert (a.sample - b.sample).abs().max() > 1e-3  # the outputs do differ
    kvs_a = a.source_cache.double + a.source_cache.single
    kvs_b = b.source_cache.double + b.source_cache.single
    assert len(kvs_a) == 4
    for ka, kb in zip(kvs_a, kvs_b):
        assert torch.equal(ka.key, kb.key) and torch.equal(ka.value, kb.value)


def test_source_cache_gives_same_velocity(tiny):
    perturb_experts(tiny)
    inputs, src = make_inputs(tiny), make_source(tiny, layout="subject")
    uncached = tiny(**inputs, **src)
    cache = tiny.compute_source_cache(src["source_hidden_states"], src["source_ids"], inputs["pooled_projections"],
                                      inputs["guidance"])
    for t in (0.9, 0.3):  # reused across sampling steps
        inputs["timestep"] = torch.full((B,), t)
        cached = tiny(**inputs, source_cache=cache).sample
        fresh = tiny(**inputs, **src).sample
        assert (cached - fresh).abs().max().item() <= 1e-5
    assert (uncached.sample - fresh).abs().max() > 0  # different timestep, different velocity
    assert [d.index.tolist() for d in cache.routing] == [d.index.tolist() for d in uncached.routing]


def test_eval_routing_is_deterministic_and_noise_free(tiny):
    perturb_experts(tiny)
    with torch.no_grad():
        for adapter in tiny.adapters():
            adapter.router.w_noise.fill_(5.0)  # huge noise scale: would randomise routing if it were used
    inputs, src = make_inputs(tiny), make_source(tiny)
    out1, out2 = tiny(**inputs, **src), tiny(**inputs, **src)
    assert torch.equal(out1.sample, out2.sample)
    for d1, d2 in zip(out1.routing, out2.routing):
        assert torch.equal(d1.probs, d2.probs)
    tiny.train()
    indices = {tuple(torch.cat([d.index for d in tiny(**inputs, **src).routing]).tolist()) for _ in range(6)}
    assert len(indices) > 1  # training-time routing is noisy


def test_eval_routing_matches_hand_computed_softmax():
    adapter = PRWAdapter(dim=8, kv_dim=8, num_experts=3, rank=2).eval()
    with torch.no_grad():
        adapter.router.w_route.copy_(torch.arange(24, dtype=torch.float32).view(3, 8) / 24)
    h = torch.linspace(-1, 1, 2 * 5 * 8).view(2, 5, 8)
    _, _, decision = adapter(h)
    pooled = h.mean(1)
    logits = pooled @ (torch.arange(24, dtype=torch.float32).view(3, 8) / 24).t()
    torch.testing.assert_close(decision.probs, logits.softmax(-1))
    assert decision.index.tolist() == logits.argmax(-1).tolist()


def test_veterans_frozen_newest_and_router_trained(tiny):
    perturb_experts(tiny)
    tiny.add_expert()
    perturb_experts(tiny, seed=3, only_newest=True)
    tiny.train()
    names = {n for n, p in tiny.named_parameters() if p.requires_grad}
    assert not any(n.startswith("base.") for n in names)
    assert all(".experts." not in n or n.endswith(".3") for n in names)
    out = tiny(**make_inputs(tiny), **make_source(tiny))
    _, u_soft = newest_expert_usage(out.routing, newest=3)
    (out.sample.square().mean() + u_soft).backward()
    for adapter in tiny.adapters():
        bank = adapter.experts
        for k in range(3):
            assert bank.lora_A[k].grad is None and bank.lora_B_k[k].grad is None and bank.lora_B_v[k].grad is None
        assert adapter.router.w_route.grad is not None and adapter.router.w_route.grad.abs().sum() > 0
    newest_grads = [a.experts.lora_B_k[3].grad for a in tiny.adapters()]
    assert any(g is not None and g.abs().sum() > 0 for g in newest_grads)
    assert all(p.grad is None for p in tiny.base.parameters())


def _per_sample_reference(bank: KVExpertBank, h, index, gate):
    out_k, out_v = [], []
    for b in range(h.shape[0]):
        dk, dv = bank.expert_delta(int(index[b]), h[b])
        out_k.append(dk * gate[b]), out_v.append(dv * gate[b])
    return torch.stack(out_k), torch.stack(out_v)


def test_sample_and_token_routing_match_explicit_expert_loop():
    torch.manual_seed(0)
    bank = KVExpertBank(dim=8, kv_dim=6, rank=3, alpha=6.0, num_experts=4)
    with torch.no_grad():
        for p in list(bank.lora_B_k) + list(bank.lora_B_v):
            p.normal_()
    h = torch.randn(3, 5, 8)
    index, gate = torch.tensor([2, 0, 3]), torch.tensor([0.5, 0.9, 0.3])
    dk, dv = bank.forward_sample(h, index, gate)
    rk, rv = _per_sample_reference(bank, h, index, gate)
    torch.testing.assert_close(dk, rk), torch.testing.assert_close(dv, rv)
    tok_index = torch.randint(0, 4, (3, 5))
    tok_gate = torch.rand(3, 5)
    dk, dv = bank.forward_token(h, tok_index, tok_gate)
    for b in range(3):
        for l in range(5):
            ek, ev = bank.expert_delta(int(tok_index[b, l]), h[b, l])
            torch.testing.assert_close(dk[b, l], ek * tok_gate[b, l])
            torch.testing.assert_close(dv[b, l], ev * tok_gate[b, l])


def test_token_routing_model_runs_and_caches():
    model = CoLoGenTransformer.from_preset("tiny", PRWConfig(num_experts=2, rank=4, routing="token")).eval()
    perturb_experts(model)
    inputs, src = make_inputs(model), make_source(model)
    out = model(**inputs, **src)
    assert out.routing[0].probs.shape == (B, TOK_H * TOK_W, 2)
    cache = model.compute_source_cache(src["source_hidden_states"], src["source_ids"], inputs["pooled_projections"],
                                       inputs["guidance"])
    assert (model(**inputs, source_cache=cache).sample - out.sample).abs().max() <= 1e-5


def test_newest_expert_usage_hand_computed():
    d1 = RoutingDecision(probs=torch.tensor([[0.2, 0.8], [0.6, 0.4]]), index=torch.tensor([1, 0]))
    d2 = RoutingDecision(probs=torch.tensor([[0.1, 0.9], [0.3, 0.7]]), index=torch.tensor([1, 1]))
    hard, soft = newest_expert_usage([d1, d2], newest=1)
    assert hard.item() == pytest.approx((0.5 + 1.0) / 2)
    assert soft.item() == pytest.approx(((0.8 + 0.4) / 2 + (0.9 + 0.7) / 2) / 2)


def test_adapter_save_load_round_trip(tmp_path):
    model = CoLoGenTransformer.from_preset("tiny", PRWConfig(num_experts=2, rank=4)).eval()
    perturb_experts(model)
    model.add_expert()
    perturb_experts(model, seed=9, only_newest=True)
    path = model.save_adapters(tmp_path / "run")
    assert path.stat().st_size < 200_000  # adapters only, never the base
    inputs, src = make_inputs(model), make_source(model)
    expected = model(**inputs, **src).sample
    fresh = CoLoGenTransformer.from_preset("tiny", PRWConfig(num_experts=1, rank=4)).eval()
    fresh.load_adapters(tmp_path / "run")
    assert fresh.num_experts == 3
    assert torch.equal(fresh(**inputs, **src).sample, expected)
    wrong = CoLoGenTransformer.from_preset("tiny", PRWConfig(num_experts=1, rank=8))
    with pytest.raises(ValueError, match="rank"):
        wrong.load_adapters(path)


def test_base_saved_with_save_pretrained_loads_from_folder(tmp_path):
    base = build_base_transformer("tiny", seed=7)
    base.save_pretrained(tmp_path / "flux" / "transformer")
    loaded = CoLoGenTransformer.from_preset("tiny", pretrained_path=str(tmp_path / "flux")).eval()
    fresh = CoLoGenTransformer(base).eval()
    inputs = make_inputs(fresh)
    assert torch.equal(loaded(**inputs).sample, fresh(**inputs).sample)
    with pytest.raises(FileNotFoundError, match="no transformer weights"):
        build_base_transformer("tiny", pretrained_path=str(tmp_path))


def test_expert_exports_as_standard_flux_lora(tmp_path):
    model = CoLoGenTransformer.from_preset("tiny", PRWConfig(num_experts=2, rank=4))
    perturb_experts(model)
    state = model.export_expert_as_flux_lora(1)
    from diffusers import FluxPipeline

    FluxPipeline.save_lora_weights(tmp_path, transformer_lora_layers=state)
    other = build_base_transformer("tiny")
    other.load_lora_adapter(str(tmp_path / "pytorch_lora_weights.safetensors"), prefix="transformer")
    h = torch.randn(3, model.base.config.num_attention_heads * model.base.config.attention_head_dim)
    attn = other.transformer_blocks[1].attn
    got = attn.to_k(h) - attn.to_k.base_layer(h)
    expected, _ = model.double_adapters[1].experts.expert_delta(1, h)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_single_lora_baseline_is_peft_and_source_only():
    model = CoLoGenTransformer.from_preset("tiny")
    model.enable_single_lora_baseline(rank=4)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert any("to_q" in n for n in names)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()
    model.eval()
    inputs, src = make_inputs(model), make_source(model)
    reference = build_base_transformer("tiny")  # same seed: identical base weights
    assert (model(**inputs).sample - reference(**inputs).sample).abs().max() <= 1e-5  # noisy path untouched
    plain = CoLoGenTransformer(reference, PRWConfig(blocks="none")).eval()
    assert (model(**inputs, **src).sample - plain(**inputs, **src).sample).abs().max() > 1e-4  # source path adapted


def test_gradient_checkpointing_matches_plain_backward(tiny):
    perturb_experts(tiny)
    tiny.train()
    for adapter in tiny.adapters():
        adapter.router.noise = False
    inputs, src = make_inputs(tiny), make_source(tiny)

    def grads(checkpointing: bool):
        tiny.zero_grad(set_to_none=True)
        tiny.enable_gradient_checkpointing(checkpointing)
        out = tiny(**inputs, **src)
        (out.sample.square().mean() + newest_expert_usage(out.routing, 2)[1]).backward()
        return {n: p.grad.clone() for n, p in tiny.named_parameters() if p.grad is not None}

    plain, ckpt = grads(False), grads(True)
    assert plain.keys() == ckpt.keys() and plain
    for n in plain:
        torch.testing.assert_close(plain[n], ckpt[n])


def test_pack_unpack_and_ids():
    lat = torch.randn(2, 12, 6, 8)
    tokens = pack_latents(lat)
    assert tokens.shape == (2, 12, 48)
    assert torch.equal(unpack_latents(tokens, 6, 8), lat)
    ids = source_ids(3, 4, "subject")
    assert ids[0].tolist() == [1, 0, 4] and ids[-1].tolist() == [1, 2, 7]
    assert latent_ids(3, 4)[5].tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="layout"):
        source_ids(3, 4, "sideways")


def test_missing_guidance_is_a_clear_error(tiny):
    inputs = make_inputs(tiny)
    inputs["guidance"] = None
    with pytest.raises(ValueError, match="guidance"):
        tiny(**inputs)
