"""The frozen base in less memory (model.base_quantization: int8 / nf4) and FP8 (train.fp8): CPU, tiny / small presets.

Tolerances, from measurement on the tiny preset (fp32, 2 samples, trained-looking experts): the quantized model's
velocity differs from the unquantized one by a relative L2 error (||y_q - y|| / ||y||) of 0.0006 (int8) / 0.015 (nf4)
/ 0.005 (FP8 training conversion); asserted < 0.005 / < 0.06 / < 0.03 (input gradients: twice the first two).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import sys

import pytest
import torch
from torch import nn

from lit_cologen.config import ConfigError
from lit_cologen.errors import UserError
from lit_cologen.models import quantize as qz
from lit_cologen.models.config import PRWConfig
from lit_cologen.models.factory import build_base_transformer
from lit_cologen.models.latents import latent_ids, source_ids, text_ids
from lit_cologen.models.prw import newest_expert_usage
from lit_cologen.models.quantize import (
    QuantizationUnavailable,
    apply_fp8,
    block_linears,
    quantize_base,
    weight_bytes,
)
from lit_cologen.models.transformer import CoLoGenTransformer

B, TOK_H, TOK_W, LY = 2, 4, 4, 5
MODES = ("int8", "nf4")
REL_TOL = {"int8": 0.005, "nf4": 0.06}
# block-linear bytes: measured 3.64x (int8) / 6.04x (nf4) on tiny fp32, 1.93x / 3.63x on small bf16 (scales, biases
# and bitsandbytes' code tables cost more at 64 / 128 wide than at FLUX's 3072: 1.997x / 3.874x there)
MIN_FACTOR = {("tiny", torch.float32, "int8"): 3.4, ("tiny", torch.float32, "nf4"): 5.6,
              ("small", torch.bfloat16, "int8"): 1.85, ("small", torch.bfloat16, "nf4"): 3.4}


def make_inputs(model: CoLoGenTransformer, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    cfg = model.base.config
    return dict(
        hidden_states=torch.randn(B, TOK_H * TOK_W, cfg.in_channels, generator=g),
        encoder_hidden_states=torch.randn(B, LY, cfg.joint_attention_dim, generator=g),
        pooled_projections=torch.randn(B, cfg.pooled_projection_dim, generator=g),
        timestep=torch.rand(B, generator=g),
        img_ids=latent_ids(TOK_H, TOK_W),
        txt_ids=text_ids(LY),
        guidance=torch.full((B,), 3.5) if cfg.guidance_embeds else None,
        source_hidden_states=torch.randn(B, TOK_H * TOK_W, cfg.in_channels, generator=g),
        source_ids=source_ids(TOK_H, TOK_W, "aligned"),
    )


def make_model(seed: int = 0) -> CoLoGenTransformer:
    """Tiny CoLoGen with trained-looking experts (non-zero B) and routers that pick both experts somewhere."""
    torch.manual_seed(seed)
    model = CoLoGenTransformer(build_base_transformer("tiny"), PRWConfig(num_experts=2, rank=4))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for adapter in model.adapters():
            for p in (*adapter.experts.lora_B_k, *adapter.experts.lora_B_v):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            adapter.router.w_route.copy_(torch.randn(adapter.router.w_route.shape, generator=g))
            adapter.router.noise = False
    return model


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def newest_params(model: CoLoGenTransformer) -> list[nn.Parameter]:
    return [p for a in model.adapters() for p in (a.experts.lora_A[-1], a.experts.lora_B_k[-1], a.experts.lora_B_v[-1])]


def block_bytes(base: nn.Module) -> int:
    return sum(weight_bytes(lin) for *_, lin in block_linears(base))


# ---------------------------------------------------------------------------------------------------- the modes
@pytest.mark.parametrize("mode", MODES)
def test_quantized_model_forward_close_and_gradients_reach_the_newest_expert_only(mode, caplog):
    ref = make_model()
    model = copy.deepcopy(ref)
    with caplog.at_level(logging.INFO, logger="lit_cologen.models.quantize"):
        assert quantize_base(model.base, mode) is model.base
    assert "40 block linears" in caplog.text and "->" in caplog.text  # what was converted, bytes before / after
    converted = [lin for *_, lin in block_linears(model.base)]
    assert len(converted) == 40 and all(type(lin) is not nn.Linear for lin in converted)
    assert all(isinstance(lin, nn.Linear) for lin in converted)  # still callable as the block's own submodule
    assert type(model.base.proj_out) is nn.Linear and type(model.base.norm_out.linear) is nn.Linear
    assert type(model.base.x_embedder) is nn.Linear and type(model.base.context_embedder) is nn.Linear

    inputs = make_inputs(ref)
    with torch.no_grad():
        y_ref = ref(**inputs).sample
    model.train()
    out = model(**inputs)
    assert rel_err(out.sample, y_ref) < REL_TOL[mode]
    assert any(bool((d.index == 1).any()) for d in out.routing)  # the newest expert is chosen somewhere
    (out.sample.square().mean() + newest_expert_usage(out.routing, newest=1)[1]).backward()

    grads = [p.grad for p in newest_params(model)]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0
    chosen = [bool((d.index == 1).any()) for d in out.routing]  # one decision per adapter, in adapters() order
    assert [g.abs().sum().item() > 0 for g in grads[1::3]] == chosen  # newest B^K: a gradient where it was chosen
    veterans = [p for a in model.adapters() for p in (a.experts.lora_A[0], a.experts.lora_B_k[0])]
    assert all(p.grad is None for p in veterans)
    assert all(p.grad is None and not p.requires_grad for p in model.base.parameters())


@pytest.mark.parametrize("mode", MODES)
def test_input_gradients_through_the_quantized_base_match_the_unquantized_ones(mode):
    """The gradient that reaches the source tokens (through every quantized linear) is the unquantized one, up to
    the quantization error."""
    ref = build_base_transformer("tiny").requires_grad_(False)
    base = quantize_base(copy.deepcopy(ref), mode)
    inputs = make_inputs(CoLoGenTransformer(ref, PRWConfig(blocks="none")))
    kwargs = {k: v for k, v in inputs.items() if not k.startswith("source")}

    def grad_of(m):
        x = kwargs["hidden_states"].clone().requires_grad_(True)
        m(**{**kwargs, "hidden_states": x}).sample.square().mean().backward()
        return x.grad

    g_ref, g_q = grad_of(ref), grad_of(base)
    assert torch.isfinite(g_q).all() and rel_err(g_q, g_ref) < 2 * REL_TOL[mode]


@pytest.mark.parametrize("mode", MODES)
def test_backward_saves_no_dequantized_weight(mode):
    """A stock torchao int8 linear keeps a dequantized copy of its weight for backward; ours keep none (nor does
    bitsandbytes): no saved float tensor of a block weight's shape that is not a parameter."""
    def dequantized_copies(model: CoLoGenTransformer) -> int:
        shapes = {tuple(lin.weight.shape) for *_, lin in block_linears(model.base) if lin.weight.dim() == 2}
        shapes |= {(lin.out_features, lin.in_features) for *_, lin in block_linears(model.base)}
        params = {p.untyped_storage().data_ptr() for p in model.parameters() if type(p) is nn.Parameter}
        found = []

        def pack(t):
            if (type(t) in (torch.Tensor, nn.Parameter) and t.is_floating_point() and tuple(t.shape) in shapes
                    and t.untyped_storage().data_ptr() not in params):
                found.append(tuple(t.shape))
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(**make_inputs(model)).sample.sum()
        return len(found)

    ref = make_model()
    model = copy.deepcopy(ref)
    quantize_base(model.base, mode)
    assert dequantized_copies(model) == dequantized_copies(ref)
    if mode == "int8":  # the check sees what it looks for: stock torchao int8 saves a copy per projection
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        stock = copy.deepcopy(ref)
        quantize_(stock.base, Int8WeightOnlyConfig(set_inductor_config=False),
                  filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and fqn.split(".")[0] in qz.BLOCK_GROUPS)
        assert dequantized_copies(stock) > dequantized_copies(ref)


def test_nf4_sampling_then_training_alternate():
    """bitsandbytes repacks a Linear4bit for its CPU inference kernel on an eval-mode no-grad call (AVX512-BF16
    CPUs), after which a call that needs gradients fails; quantize_base switches that off."""
    model = make_model()
    quantize_base(model.base, "nf4")
    inputs = make_inputs(model)
    model.eval()
    with torch.no_grad():
        y0 = model(**inputs).sample
    model.train()
    out = model(**inputs)
    out.sample.square().mean().backward()
    assert torch.allclose(out.sample, y0, atol=1e-5)
    assert all(p.grad is not None for p in newest_params(model))


@pytest.mark.parametrize("preset,dtype", [("tiny", torch.float32), ("small", torch.bfloat16)])
@pytest.mark.parametrize("mode", MODES)
def test_weight_bytes_shrink_by_the_expected_factor(preset, dtype, mode):
    base = build_base_transformer(preset, torch_dtype=dtype)
    before, before_all = block_bytes(base), weight_bytes(base)
    assert before == sum(lin.weight.numel() + lin.out_features for *_, lin in block_linears(base)) * dtype.itemsize
    quantize_base(base, mode)
    factor = before / block_bytes(base)
    assert factor >= MIN_FACTOR[(preset, dtype, mode)], factor
    assert factor < dtype.itemsize * 8 / (8 if mode == "int8" else 4)  # never better than the bits alone
    assert before_all - weight_bytes(base) == before - block_bytes(base)  # nothing outside the blocks changed
    assert base.state_dict()  # a checkpoint can still read the module (Lightning filters the base out afterwards)


def test_none_is_the_same_object_unchanged():
    base = build_base_transformer("tiny")
    state = {k: v.clone() for k, v in base.state_dict().items()}
    types = [type(m) for m in base.modules()]
    assert quantize_base(base, "none") is base
    assert [type(m) for m in base.modules()] == types
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in state.items())


def test_quantize_onto_a_device_moves_the_whole_base():
    base = quantize_base(build_base_transformer("tiny"), "int8", device="cpu")
    assert {p.device.type for p in base.parameters()} == {"cpu"}


# ---------------------------------------------------------------------------------------------------- refusals
def _one_line_user_error(excinfo, key: str) -> str:
    msg = str(excinfo.value)
    assert isinstance(excinfo.value, UserError) and "\n" not in msg and key in msg, msg
    return msg


def test_unknown_mode_refused():
    with pytest.raises(ConfigError) as excinfo:
        quantize_base(build_base_transformer("tiny"), "int4")
    assert "int4" in _one_line_user_error(excinfo, "model.base_quantization")


def test_cuda_only_backend_refused_on_cpu(monkeypatch):
    """The chosen backends run on CPU (bitsandbytes 0.50 included); a backend that runs on CUDA only refuses a CPU
    base with one line naming the key and what to do."""
    monkeypatch.setitem(qz.BACKENDS, "nf4", dataclasses.replace(qz.BACKENDS["nf4"], devices=("cuda",)))
    base = build_base_transformer("tiny")
    with pytest.raises(QuantizationUnavailable) as excinfo:
        quantize_base(base, "nf4")
    msg = _one_line_user_error(excinfo, "model.base_quantization")
    assert "cuda" in msg and "not on cpu" in msg and "model.base_quantization: none" in msg
    assert all(type(lin) is nn.Linear for *_, lin in block_linears(base))  # refused before touching anything


def test_meta_base_refused():
    with pytest.raises(QuantizationUnavailable) as excinfo:
        quantize_base(build_base_transformer("tiny", device="meta"), "int8")
    assert "not on meta" in _one_line_user_error(excinfo, "model.base_quantization")


def test_missing_package_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as if not installed
    with pytest.raises(QuantizationUnavailable) as excinfo:
        quantize_base(build_base_transformer("tiny"), "nf4")
    assert "pip install bitsandbytes==0.50.2" in _one_line_user_error(excinfo, "model.base_quantization")


def test_quantizing_twice_refused():
    base = quantize_base(build_base_transformer("tiny"), "int8")
    with pytest.raises(ValueError, match="already quantized"):
        quantize_base(base, "nf4")


@pytest.mark.parametrize("training", [True, False])
def test_fp8_refused_on_cpu(training):
    base = build_base_transformer("tiny")
    with pytest.raises(QuantizationUnavailable) as excinfo:
        apply_fp8(base, torch.device("cpu"), training=training)
    msg = _one_line_user_error(excinfo, "train.fp8")
    assert "8.9" in msg and "train.fp8: false" in msg
    assert all(type(lin) is nn.Linear for *_, lin in block_linears(base))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine may have an FP8 GPU")
def test_fp8_refused_without_cuda():
    with pytest.raises(QuantizationUnavailable) as excinfo:
        apply_fp8(build_base_transformer("tiny"), "cuda")
    _one_line_user_error(excinfo, "train.fp8")


def test_fp8_refused_on_a_quantized_base():
    base = quantize_base(build_base_transformer("tiny"), "nf4")
    with pytest.raises(QuantizationUnavailable) as excinfo:
        qz._convert_fp8(base)
    _one_line_user_error(excinfo, "train.fp8")


# ---------------------------------------------------------------------------------------------------- fp8, on CPU
def test_fp8_training_conversion_selects_block_linears_and_keeps_input_gradients(caplog):
    """The conversion behind apply_fp8 (its device check skipped: torch has a CPU _scaled_mm): only the blocks'
    non-modulation linears become Float8Linear, experts / routers / norms / outside-block layers do not; the model
    still gives expert gradients and no base gradients."""
    from torchao.float8.float8_linear import Float8Linear

    ref = make_model()
    model = copy.deepcopy(ref)
    with caplog.at_level(logging.INFO, logger="lit_cologen.models.quantize"):
        qz._convert_fp8(model.base, training=True)
    assert "34 of 40 block linears" in caplog.text
    for fqn, _, _, lin in block_linears(model.base):
        assert isinstance(lin, Float8Linear) != fqn.endswith(qz.MODULATION_SUFFIXES), fqn
    assert not any(isinstance(m, Float8Linear) for m in model.adapters().__iter__().__next__().modules())
    outside = [m for n, m in model.base.named_modules() if n.split(".")[0] not in qz.BLOCK_GROUPS]
    assert not any(isinstance(m, Float8Linear) for m in outside)

    inputs = make_inputs(ref)
    with torch.no_grad():
        y_ref = ref(**inputs).sample
    model.train()
    out = model(**inputs)
    assert rel_err(out.sample, y_ref) < 0.03
    out.sample.square().mean().backward()
    grads = [p.grad for p in newest_params(model)]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in model.base.parameters())
