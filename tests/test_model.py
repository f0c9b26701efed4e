"""Model core (issue: PRW experts + two-step attention): CPU, tiny preset, fp32, against stock diffusers."""

from __future__ import annotations

import pytest
import torch

from lit_cologen.models.config import PRWConfig
from lit_cologen.models.factory import build_base_transformer
from lit_cologen.models.latents import latent_ids, pack_latents, source_ids, text_ids, unpack_latents
from lit_cologen.models.prw import KVExpertBank, PRWAdapter, RoutingDecision, newest_expert_usage
from lit_cologen.models.transformer import CoLoGenTransformer

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


# ---------------------------------------------------------------------------------------------- per-expert ranks


def _mixed_bank(seed: int = 0) -> KVExpertBank:
    """Experts of ranks 4, 8, 2 with scalings 8/4, 5/8, 3/2, all weights random (as after training)."""
    torch.manual_seed(seed)
    bank = KVExpertBank(dim=8, kv_dim=6, rank=4, alpha=8.0, num_experts=1)
    bank.add_expert(rank=8, alpha=5.0)
    bank.add_expert(rank=2, alpha=3.0)
    with torch.no_grad():
        for p in list(bank.lora_A) + list(bank.lora_B_k) + list(bank.lora_B_v):
            p.normal_()
    return bank


def _hand_delta(bank: KVExpertBank, k: int, h):
    """x A_k^T B_k^T * alpha_k / r_k, from the parameters alone (A_k = [A^K; A^V], r_k rows each)."""
    r, s = bank.lora_B_k[k].shape[1], {0: 8.0 / 4, 1: 5.0 / 8, 2: 3.0 / 2}[k]
    a = bank.lora_A[k]
    return (h @ a[:r].t() @ bank.lora_B_k[k].t()) * s, (h @ a[r:].t() @ bank.lora_B_v[k].t()) * s


def test_mixed_rank_bank_shapes_and_defaults():
    bank = _mixed_bank()
    assert bank.ranks == [4, 8, 2] and bank.alphas == [8.0, 5.0, 3.0]
    assert [tuple(a.shape) for a in bank.lora_A] == [(8, 8), (16, 8), (4, 8)]  # exactly 2 r_k rows each
    assert [tuple(b.shape) for b in bank.lora_B_v] == [(6, 4), (6, 8), (6, 2)]
    bank.add_expert(rank=16)  # alpha defaults to 2 x rank (the paper's convention)
    bank.add_expert()  # the bank's configured rank / alpha
    assert bank.ranks[3:] == [16, 4] and bank.alphas[3:] == [32.0, 8.0]
    with pytest.raises(ValueError, match="rank"):
        bank.add_expert(rank=0)


def test_mixed_rank_sample_and_token_routing_match_hand_computed_loop():
    bank = _mixed_bank()
    h = torch.randn(4, 5, 8)
    index, gate = torch.tensor([2, 0, 1, 1]), torch.tensor([0.5, 0.9, 0.3, 1.0])
    dk, dv = bank.forward_sample(h, index, gate)
    for b in range(4):
        ek, ev = _hand_delta(bank, int(index[b]), h[b])
        torch.testing.assert_close(dk[b], ek * gate[b]), torch.testing.assert_close(dv[b], ev * gate[b])
        torch.testing.assert_close(bank.expert_delta(int(index[b]), h[b])[0], ek)
    tok_index = torch.tensor([[0, 1, 2, 1, 0], [2, 2, 1, 0, 1], [1, 0, 0, 2, 2], [0, 0, 1, 1, 2]])
    tok_gate = torch.rand(4, 5)
    dk, dv = bank.forward_token(h, tok_index, tok_gate)
    for b in range(4):
        for t in range(5):
            ek, ev = _hand_delta(bank, int(tok_index[b, t]), h[b, t])
            torch.testing.assert_close(dk[b, t], ek * tok_gate[b, t])
            torch.testing.assert_close(dv[b, t], ev * tok_gate[b, t])
    # gradients through the padded, fused path equal the hand-computed ones (newest expert, rank 2)
    bank.zero_grad()
    fused = sum(x.square().sum() for x in bank.forward_token(h, tok_index, tok_gate))
    fused.backward()
    grads = [p.grad.clone() for p in (bank.lora_A[2], bank.lora_B_k[2], bank.lora_B_v[2])]
    assert all(p.grad is None for p in (bank.lora_A[0], bank.lora_B_k[1]))  # veterans frozen
    bank.zero_grad()
    hand = sum((torch.stack([torch.stack(_hand_delta(bank, int(tok_index[b, t]), h[b, t])) * tok_gate[b, t]
                             for t in range(5)])).square().sum() for b in range(4))
    hand.backward()
    for g, p in zip(grads, (bank.lora_A[2], bank.lora_B_k[2], bank.lora_B_v[2])):
        torch.testing.assert_close(g, p.grad)


def test_add_expert_of_another_rank_keeps_output_and_freezes_veterans():
    bank = _mixed_bank()
    h = torch.randn(3, 5, 8)
    index, gate = torch.tensor([1, 0, 2]), torch.tensor([0.7, 0.2, 1.0])
    tok_index, tok_gate = torch.randint(0, 3, (3, 5)), torch.rand(3, 5)
    before = bank.forward_sample(h, index, gate), bank.forward_token(h, tok_index, tok_gate)
    bank.add_expert(rank=16, alpha=32.0)  # larger than every veteran: the veterans are zero-padded to 16
    assert bank.ranks == [4, 8, 2, 16] and bank.lora_A[3].shape == (32, 8)
    assert [p.requires_grad for p in bank.lora_A] == [False, False, False, True]
    assert [p.requires_grad for p in bank.lora_B_k] == [False, False, False, True]
    after = bank.forward_sample(h, index, gate), bank.forward_token(h, tok_index, tok_gate)
    for x, y in zip(before, after):
        for a, b in zip(x, y):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    new_k, new_v = bank.forward_sample(h, torch.full((3,), 3), gate)  # the zero-init B of the new expert
    assert new_k.abs().max() == 0 and new_v.abs().max() == 0
    tok_new = torch.where(torch.rand(3, 5) < 0.5, tok_index, torch.full_like(tok_index, 3))
    (sum(x.square().sum() for x in bank.forward_token(h, tok_new, tok_gate)) + new_k.sum()).backward()
    assert all(bank.lora_A[k].grad is None and bank.lora_B_k[k].grad is None for k in range(3))
    assert bank.lora_A[3].grad is not None and bank.lora_B_k[3].grad.abs().sum() > 0


def test_warm_start_needs_the_same_rank_and_compensates_alpha():
    bank = _mixed_bank()
    with pytest.raises(ValueError, match="warm_start.*rank 2.*rank=4"):
        bank.add_expert(warm_start=True, rank=4)
    assert bank.num_experts == 3  # refused before anything changed
    bank.add_expert(warm_start=True, rank=2, alpha=12.0)  # same rank, another alpha: B rescaled, same function
    h = torch.randn(7, 8)
    for got, want in zip(bank.expert_delta(3, h), bank.expert_delta(2, h)):
        torch.testing.assert_close(got, want)
    assert bank.alphas[3] == 12.0 and bank.lora_A[3].requires_grad and not bank.lora_A[2].requires_grad


def test_model_add_expert_of_another_rank_keeps_output():
    model = CoLoGenTransformer.from_preset("tiny", PRWConfig(num_experts=2, rank=4),
                                           gate_scale="straight_through").eval()
    perturb_experts(model)
    with torch.no_grad():
        for adapter in model.adapters():
            adapter.router.w_route.zero_()  # ties: expert 0 (trained) is chosen, before and after the new column
    inputs, src = make_inputs(model), make_source(model)
    before = model(**inputs, **src).sample
    plain = CoLoGenTransformer(model.base, PRWConfig(blocks="none")).eval()
    assert (before - plain(**inputs, **src).sample).abs().max() > 1e-4  # the trained veteran is in use
    model.add_expert(rank=16, alpha=32.0)
    assert model.num_experts == 3 and model.expert_ranks() == [(4, 8.0), (4, 8.0), (16, 32.0)]
    torch.testing.assert_close(model(**inputs, **src).sample, before, rtol=1e-6, atol=1e-6)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n in trainable if ".experts." in n} == {
        n for n, _ in model.named_parameters() if ".experts." in n and n.endswith(".2")}


def _mixed_rank_model() -> CoLoGenTransformer:
    model = CoLoGenTransformer.from_preset("tiny", PRWConfig(num_experts=2, rank=4)).eval()
    perturb_experts(model)
    model.add_expert(rank=8, alpha=3.0)
    perturb_experts(model, seed=9, only_newest=True)
    model.add_expert(rank=2)
    perturb_experts(model, seed=11, only_newest=True)
    return model


def test_mixed_rank_adapters_round_trip(tmp_path):
    from safetensors.torch import load_file

    model = _mixed_rank_model()
    inputs, src = make_inputs(model), make_source(model)
    out = model(**inputs, **src)
    path = model.save_adapters(tmp_path / "run")
    state = load_file(path)
    assert state["double_adapters.0.experts.lora_A.2"].shape == (16, model.adapters()[0].experts.dim)
    assert state["single_adapters.1.experts.lora_B_v.3"].shape[1] == 2
    # a fresh model (configured lora_alpha differs: the file's per-expert alpha is the one trained with)
    for cfg in (PRWConfig(num_experts=1, rank=4), PRWConfig(num_experts=1, rank=4, lora_alpha=1.0)):
        fresh = CoLoGenTransformer.from_preset("tiny", cfg).eval()
        fresh.load_adapters(tmp_path / "run")
        assert fresh.expert_ranks() == [(4, 8.0), (4, 8.0), (8, 3.0), (2, 4.0)]
        for adapter in fresh.adapters():
            assert [tuple(b.shape) for b in adapter.experts.lora_B_k][2:] == [(adapter.experts.kv_dim, 8),
                                                                             (adapter.experts.kv_dim, 2)]
        assert torch.equal(fresh(**inputs, **src).sample, out.sample)
    # the per-expert scaling matters: the same weights at the configured alpha give another output
    wrong = CoLoGenTransformer.from_preset("tiny", PRWConfig(num_experts=1, rank=4)).eval()
    wrong.load_adapters(path)
    for adapter in wrong.adapters():
        adapter.experts.alphas = [8.0] * 4
    assert (wrong(**inputs, **src).sample - out.sample).abs().max() > 1e-6
    # a model that already has expert 2 at another rank is refused, naming it
    with pytest.raises(ValueError, match="expert 2 has LoRA rank 8"):
        CoLoGenTransformer.from_preset("tiny", PRWConfig(num_experts=3, rank=4)).load_adapters(path)


def test_adapter_file_without_per_expert_metadata_loads(tmp_path):
    """Files written before per-expert ranks (no metadata 'experts'): every expert at the configured rank."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    model = CoLoGenTransformer.from_preset("tiny", PRWConfig(num_experts=2, rank=4)).eval()
    perturb_experts(model)
    model.add_expert()
    perturb_experts(model, seed=5, only_newest=True)
    path = model.save_adapters(tmp_path / "new")
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["lit_cologen"])
    assert meta["experts"] == [{"rank": 4, "lora_alpha": 8.0}] * 3
    del meta["experts"]
    old = tmp_path / "old" / "adapters.safetensors"
    old.parent.mkdir()
    save_file(load_file(path), str(old), metadata={"lit_cologen": json.dumps(meta)})
    inputs, src = make_inputs(model), make_source(model)
    fresh = CoLoGenTransformer.from_preset("tiny", PRWConfig(num_experts=1, rank=4)).eval()
    fresh.load_adapters(old.parent)
    assert fresh.expert_ranks() == [(4, 8.0)] * 3
    assert torch.equal(fresh(**inputs, **src).sample, model(**inputs, **src).sample)


def test_mixed_rank_expert_exports_at_its_own_rank():
    model = _mixed_rank_model()
    h = torch.randn(3, model.adapters()[0].experts.dim)
    for k, rank in ((2, 8), (3, 2)):
        state = model.export_expert_as_flux_lora(k)
        for i, adapter in enumerate(model.double_adapters):
            a = state[f"transformer_blocks.{i}.attn.to_v.lora_A.weight"]
            b = state[f"transformer_blocks.{i}.attn.to_v.lora_B.weight"]
            assert a.shape == (rank, h.shape[1]) and b.shape == (adapter.experts.kv_dim, rank)
            torch.testing.assert_close(h @ a.t() @ b.t(), adapter.experts.expert_delta(k, h)[1])
