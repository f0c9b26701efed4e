"""The frozen FLUX base in less memory (``model.base_quantization``, the "24 GB mode") and FP8 matmuls (``train.fp8``).

* :func:`quantize_base` -- weight-only quantization of the nn.Linear layers inside ``transformer_blocks`` and
  ``single_transformer_blocks``: ``none`` (unchanged, the same object) | ``int8`` | ``nf4``.
* :func:`apply_fp8` -- FP8 matmuls (torchao float8) for the same block linears; CUDA with compute capability >= 8.9.
* :func:`weight_bytes` / :func:`block_linears` -- what the two measure and convert.

What is converted (FLUX.1-dev, 11.90 B parameters): the block linears hold 11.84 B of them -- attention Q/K/V/out
and the text-stream projections, the MLPs, the single blocks' ``proj_mlp`` / ``proj_out`` (8.61 B) and the AdaLayerNorm
modulation linears ``norm1.linear`` / ``norm1_context.linear`` / ``norm.linear`` (3.23 B, 27 % of the model). The
modulation linears are included by the weight-only modes: without them the base would be 15.2 GB (int8) / 11.0 GB
(nf4) instead of 12.0 / 6.2 GB, their matmuls have one row per sample (no compute to save or lose) and their
quantization error is in the measured error below. Embedders (``x_embedder``, ``context_embedder``,
``time_text_embed``), norms, ``norm_out`` and the top-level ``proj_out`` (0.06 B together) keep the base dtype. FP8
skips the modulation linears (a 1-row GEMM gains nothing from FP8 and pays the scaling) and any linear whose in / out
features are not multiples of 16 (``torch._scaled_mm``); none of FLUX's are.

Gradients: the PRW experts sit on the source tokens' K/V, so their gradients flow back through the frozen base.
Every converted linear gives input gradients and never weight gradients, and none saves a dequantized weight for
backward (the weight is dequantized again in backward; tested).

Backends, measured on CPU (torch 2.14.1; ``small`` preset in bf16, 60 block linears, 5.05 MB of block weights;
B = 2, 16 image + 5 text tokens; error of the output vs the fp32 model, for scale the bf16 model itself has max abs
0.0135 / rel 0.0063; "saved" = extra bytes autograd keeps for backward beyond the unquantized model's)::

    backend                          block bytes    max abs  rel     input grads (rel err)   saved     CPU fwd
    torchao Int8WeightOnlyConfig     2.62 MB 1.93x  0.0167   0.0063  yes (0.010)             3.46 MB   32 ms
      + the lean backward here       2.62 MB 1.93x  0.0167   0.0063  yes (0.010)             0         -
    bitsandbytes Linear8bitLt        2.54 MB 1.99x  0.0137   0.0062  yes (0.011)             0         49 ms
    optimum-quanto qint8             2.57 MB 1.96x  0.0167   0.0062  backward fails (view)   -         22 ms
    bitsandbytes Linear4bit nf4      1.39 MB 3.63x  0.0240   0.0123  yes (0.021)             0         35 ms
    torchao NF4Tensor (to_nf4)       1.33 MB 3.80x  0.0265   0.0125  yes (0.021)             0         82 ms
    optimum-quanto qint4             1.36 MB 3.70x  0.0208   0.0099  backward fails (view)   -         56 s (JIT)
    torchao Int4WeightOnlyConfig     needs the mslk package (not installable here)

(bytes as :func:`weight_bytes` counts them: quantized data, scales, bitsandbytes' quant state with its code
tables, biases; the tiny preset's 64-wide layers make those overheads larger.) At the real FLUX shapes (one double +
one single block in bf16, 481 M parameters): int8 1.997x, nf4 3.874x smaller, so the FLUX.1-dev base (11.84 B of its
11.90 B parameters in block linears) goes from 23.8 GB to about 12.0 GB (int8) / 6.2 GB (nf4). Quantizing those two
blocks on 2 CPU cores took 3.9 s (int8) / 11.8 s (nf4).

Chosen:

* ``int8`` -- torchao's per-output-channel symmetric int8 weights (``Int8WeightOnlyConfig``: a tensor subclass whose
  matmul is plain torch ops, so CPU and CUDA compute the same thing), in :class:`Int8WeightOnlyLinear`, an
  nn.Linear subclass whose autograd function dequantizes the weight again in backward. Stock torchao computes
  ``x @ W_int8.to(bf16)`` under autograd, which saves the dequantized bf16 weight of every linear for backward
  (3.46 MB of 5.05 MB above: a second bf16 base without checkpointing). bitsandbytes int8 is, by its source,
  LLM.int8 on CUDA (activations quantized too: not weight-only, and not what its CPU path computes); quanto has no
  backward here.
* ``nf4`` -- bitsandbytes ``Linear4bit`` (``quant_type="nf4"``, double-quantized block scales; an nn.Linear
  subclass; its autograd saves only the packed weight). The same error as torchao's NF4Tensor and about the same
  bytes (the gap above is bitsandbytes' 1 KB code table per linear, nothing at FLUX sizes), 2.3x faster on CPU, and
  on CUDA one dequantize kernel where torchao's NF4 runs several eager ops; bitsandbytes 0.50 runs on CPU too.
  On a CPU with AVX512-BF16, bitsandbytes repacks a Linear4bit's weight for its inference kernel on the first
  eval-mode call without gradients, after which a call that needs input gradients fails (checked); the repacking is
  switched off on the converted layers, so sampling and training can alternate.

Device: both run on CPU (tested) and CUDA (the libraries' main platform; not run in this repository's tests, which
have no GPU); another device type (or a ``meta`` base) is refused with :class:`QuantizationUnavailable` naming
``model.base_quantization``, as is a missing package.

FP8 (``apply_fp8``): ``training=True`` swaps the block linears for torchao ``Float8Linear``
(``convert_to_float8_training``, tensorwise dynamic scaling; the weights stay in the base dtype and are cast per
call). Its backward also computes the (discarded) weight gradient and saves each linear's input: a frozen base pays
one FP8 GEMM per linear in backward that it does not need. ``training=False`` (sampling) uses torchao's inference
API ``Float8DynamicActivationFloat8WeightConfig`` (FP8 weights stored once: half the bf16 bytes; our choice of
scales: row-wise on compute capability >= 9.0, tensor-wise on 8.9); for no-grad use. Both refuse (:class:`QuantizationUnavailable`
naming ``train.fp8``) unless the device is CUDA with compute capability >= (8, 9), and refuse a base whose block
linears are already quantized. On CPU the training conversion itself runs (torch has a CPU ``_scaled_mm``), which
is how the tests check what it converts; speed and accuracy on a GPU are not measured here.

Order: quantize the base after it has its dtype (bf16 for FLUX) and before any peft wrapping; a later
``.to(dtype)`` casts only what is not quantized (checked: int8 / nf4 weights keep their storage and scales; no
forward is checked after such a cast), so move it with ``.to(device)`` only. ``quantize_base(..., device="cuda")``
moves each linear to the GPU just before quantizing it, so a FLUX base built on CPU never exists on the GPU in bf16.
``torch.compile`` of the quantized blocks is not checked here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_cologen.config import check
from lit_cologen.errors import UserError
from lit_cologen.models.config import BASE_QUANTIZATIONS

logger = logging.getLogger(__name__)

DeviceLike = torch.device | str | int
BLOCK_GROUPS = ("transformer_blocks", "single_transformer_blocks")
# the AdaLayerNorm(Zero / ZeroSingle) modulation linears: emb (B, d) -> 6 d (double blocks) / 3 d (single blocks)
MODULATION_SUFFIXES = ("norm1.linear", "norm1_context.linear", "norm.linear")
FP8_MIN_CAPABILITY = (8, 9)


class QuantizationUnavailable(UserError, RuntimeError):
    """A quantization or FP8 setting this machine or environment cannot run; the message names the config key."""


# ---------------------------------------------------------------------------------------------------- measuring
def _tensor_bytes(t: Tensor) -> int:
    """Storage bytes of a tensor; a tensor subclass (torchao) counts its inner tensors."""
    if hasattr(t, "__tensor_flatten__") and type(t) not in (Tensor, nn.Parameter):
        names, _ = t.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def weight_bytes(module: nn.Module) -> int:
    """Bytes of the parameters and buffers of `module`: quantized data, scales and bitsandbytes' quant state."""
    total, seen = 0, set()
    for t in (*module.parameters(), *module.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += _tensor_bytes(t)
            state = getattr(t, "quant_state", None)  # bitsandbytes Params4bit: block scales (+ nested) and the code
            if state is not None:
                total += sum(_tensor_bytes(v) for v in state.as_dict().values() if torch.is_tensor(v))
    return total


def _is_modulation(fqn: str) -> bool:
    return fqn.endswith(MODULATION_SUFFIXES)


def block_linears(base: nn.Module) -> Iterator[tuple[str, nn.Module, str, nn.Module]]:
    """(fqn, parent, attribute, linear) of every nn.Linear (or subclass) inside the base's blocks.

    fqn is relative to `base` (``transformer_blocks.0.attn.to_q``). peft LoRA weights (``lora_A`` / ``lora_B``
    under a wrapped projection) are never listed; a wrapped projection's ``base_layer`` is.
    """
    for group in BLOCK_GROUPS:
        for name, parent in getattr(base, group).named_modules():
            for attr, child in parent.named_children():
                if isinstance(child, nn.Linear) and "lora_" not in f"{name}.{attr}":
                    fqn = ".".join(p for p in (group, name, attr) if p)
                    yield fqn, parent, attr, child


def _is_quantized(linear: nn.Module) -> bool:
    return type(linear) is not nn.Linear or type(linear.weight) is not nn.Parameter


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


# ---------------------------------------------------------------------------------------------------- int8
class _FrozenWeightLinear(torch.autograd.Function):
    """y = linear(x, W_q, b) with a frozen quantized W_q; backward: dx = dy @ dequantize(W_q). Nothing but the
    (already resident) quantized weight is saved, and no weight / bias gradient is computed."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        ctx.save_for_backward(weight)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (weight,) = ctx.saved_tensors
        grad_x = grad @ weight.dequantize(grad.dtype) if ctx.needs_input_grad[0] else None
        return grad_x, None, None


class Int8WeightOnlyLinear(nn.Linear):
    """A frozen nn.Linear with torchao int8 weights: ``weight`` is an ``Int8Tensor`` (out, in) of int8 values and
    one scale per output channel; ``bias`` stays in the base dtype. x (..., in) -> (..., out) in x's dtype.

    Input gradients flow (the weight is dequantized again in backward, never saved in bf16); weights never train.
    """

    def __init__(self, linear: nn.Linear):
        nn.Module.__init__(self)
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        self.in_features, self.out_features = linear.in_features, linear.out_features
        holder = nn.Linear(linear.in_features, linear.out_features, bias=False, device="meta")
        holder.weight = nn.Parameter(linear.weight.detach(), requires_grad=False)
        quantize_(holder, Int8WeightOnlyConfig(set_inductor_config=False))  # no global inductor settings changed
        self.weight = holder.weight  # a frozen Parameter holding the Int8Tensor
        if linear.bias is None:
            self.register_parameter("bias", None)
        else:
            self.bias = nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.weight.requires_grad or (self.bias is not None and self.bias.requires_grad):
            raise RuntimeError("Int8WeightOnlyLinear: the quantized base's weights are frozen (requires_grad=True "
                               "was set on them); train the base unquantized (model.base_quantization: none)")
        return _FrozenWeightLinear.apply(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, int8"


def _to_int8(linear: nn.Linear) -> nn.Module:
    return Int8WeightOnlyLinear(linear)


# ---------------------------------------------------------------------------------------------------- nf4
def _to_nf4(linear: nn.Linear) -> nn.Module:
    import bitsandbytes as bnb

    w = linear.weight.detach()
    q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                          compute_dtype=w.dtype, quant_type="nf4", device="meta")
    q.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type="nf4", module=q)
    if linear.bias is not None:
        q.bias = nn.Parameter(linear.bias.detach(), requires_grad=False)
    q = q.to(w.device)  # Params4bit quantizes when it is moved to its device
    # no CPU-inference repacking: after it, a call that needs input gradients fails (see the module docstring)
    q.support_avx512bf16_for_cpu = False
    return q


# ---------------------------------------------------------------------------------------------------- quantize_base
@dataclass(frozen=True)
class Backend:
    """How one ``model.base_quantization`` mode is done: the library (and its pin), the devices it runs on, and the
    conversion of one nn.Linear (already on its device) into its quantized module."""

    library: str
    package: str  # pip requirement, for the message when it is missing
    devices: tuple[str, ...]
    convert: Callable[[nn.Linear], nn.Module]
    describe: str


BACKENDS: dict[str, Backend] = {
    "int8": Backend("torchao", "torchao==0.18.0", ("cpu", "cuda"), _to_int8,
                    "torchao int8 weight-only (per-channel scales), lean backward"),
    "nf4": Backend("bitsandbytes", "bitsandbytes==0.50.2", ("cpu", "cuda"), _to_nf4,
                   "bitsandbytes Linear4bit nf4 (double-quantized block scales)"),
}


def _require(library: str, package: str, key: str, what: str) -> None:
    try:
        __import__(library)
    except ImportError as err:
        raise QuantizationUnavailable(
            f"config key '{key}': {what} needs the {library} package, which cannot be imported ({err}): "
            f"pip install {package} (requirements.txt), or set {key} to its default") from None


def quantize_base(base: nn.Module, mode: str, *, device: Optional[DeviceLike] = None) -> nn.Module:
    """Weight-only quantization of the frozen base's block linears (``model.base_quantization``), in place.

    mode: ``none`` returns `base` itself, unchanged; ``int8`` / ``nf4`` replace every nn.Linear inside
    ``transformer_blocks`` and ``single_transformer_blocks`` (see the module docstring for which and why) by a frozen
    quantized nn.Linear subclass that gives input gradients and no weight gradients. device: where to quantize;
    each linear is moved there just before it is converted, the rest of the base afterwards (default: where the
    weights are). Returns `base` (now on `device`, every parameter frozen).

    Raises:
        ConfigError: an unknown mode. QuantizationUnavailable: the backend's package is missing, or it does not run
        on the device. ValueError: the base's block linears are already quantized.
    """
    check(mode in BASE_QUANTIZATIONS, "model.base_quantization",
          f"must be one of {list(BASE_QUANTIZATIONS)}, got {mode!r}")
    if mode == "none":
        return base
    backend = BACKENDS[mode]
    targets = list(block_linears(base))
    if not targets:
        raise ValueError("quantize_base: the base has no nn.Linear layers in its blocks")
    if any(_is_quantized(lin) for _, _, _, lin in targets):
        raise ValueError("quantize_base: the base's block linears are already quantized or converted "
                         "(quantize a base once, before apply_fp8 or peft wrapping)")
    dev = torch.device(device) if device is not None else targets[0][3].weight.device
    if dev.type not in backend.devices:
        raise QuantizationUnavailable(
            f"config key 'model.base_quantization': {mode} ({backend.library}) runs on "
            f"{' / '.join(backend.devices)}, not on {dev.type}: put the base on "
            f"{' or '.join(backend.devices)} or set model.base_quantization: none")
    _require(backend.library, backend.package, "model.base_quantization", mode)

    base.requires_grad_(False)
    before_all, before = weight_bytes(base), 0
    after = 0
    for _, parent, attr, linear in targets:
        before += weight_bytes(linear)
        q = backend.convert(linear.to(dev))
        q.requires_grad_(False)
        setattr(parent, attr, q)
        after += weight_bytes(q)
    if device is not None:
        base.to(dev)
    logger.info("model.base_quantization=%s: %d block linears with %s: %s -> %s (%.2fx); the whole base %s -> %s",
                mode, len(targets), backend.describe, _mb(before), _mb(after), before / max(after, 1),
                _mb(before_all), _mb(weight_bytes(base)))
    return base


# ---------------------------------------------------------------------------------------------------- fp8
def _fp8_filter(module: nn.Module, fqn: str) -> bool:
    """The block linears FP8 converts: plain nn.Linear in the blocks, no modulation, in / out features % 16 == 0."""
    return (isinstance(module, nn.Linear) and type(module) is nn.Linear and fqn.split(".")[0] in BLOCK_GROUPS
            and "lora_" not in fqn and not _is_modulation(fqn)
            and module.in_features % 16 == 0 and module.out_features % 16 == 0)


def check_fp8_device(device: DeviceLike) -> tuple[int, int]:
    """The CUDA compute capability of `device`; QuantizationUnavailable (naming ``train.fp8``) unless >= (8, 9)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        raise QuantizationUnavailable(
            f"config key 'train.fp8': FP8 matmuls need a CUDA GPU with compute capability >= 8.9 (Ada, Hopper, "
            f"Blackwell), this run is on {dev.type}: set train.fp8: false")
    if not torch.cuda.is_available():
        raise QuantizationUnavailable("config key 'train.fp8': FP8 matmuls need a CUDA GPU, and CUDA is not "
                                      "available here: set train.fp8: false")
    cap = tuple(torch.cuda.get_device_capability(dev))
    if cap < FP8_MIN_CAPABILITY:
        raise QuantizationUnavailable(
            f"config key 'train.fp8': FP8 matmuls need compute capability >= 8.9 (Ada, Hopper, Blackwell), "
            f"{torch.cuda.get_device_name(dev)} has {cap[0]}.{cap[1]}: set train.fp8: false")
    return cap


def _convert_fp8(base: nn.Module, training: bool = True, capability: tuple[int, int] = (9, 0)) -> nn.Module:
    """The conversion of :func:`apply_fp8`, without the device check (the tests run the training one on CPU)."""
    linears = list(block_linears(base))
    if any(_is_quantized(lin) for _, _, _, lin in linears):
        raise QuantizationUnavailable(
            "config key 'train.fp8': the base's block linears are already quantized or converted "
            "(model.base_quantization, or apply_fp8 twice); FP8 applies to a base in its own dtype: set "
            "train.fp8: false or model.base_quantization: none")
    selected = [fqn for fqn, _, _, lin in linears if _fp8_filter(lin, fqn)]
    if not selected:
        raise ValueError("apply_fp8: no block linear of the base has in / out features divisible by 16")
    _require("torchao", "torchao==0.18.0", "train.fp8", "FP8")
    before = weight_bytes(base)
    if training:
        from torchao.float8 import convert_to_float8_training

        convert_to_float8_training(base, module_filter_fn=_fp8_filter)
        how = "torchao Float8Linear (training, tensorwise dynamic scaling)"
    else:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, PerTensor, quantize_

        granularity = PerRow() if capability >= (9, 0) else PerTensor()
        quantize_(base, Float8DynamicActivationFloat8WeightConfig(granularity=granularity, set_inductor_config=False),
                  filter_fn=_fp8_filter)
        how = f"torchao Float8DynamicActivationFloat8Weight (inference, {type(granularity).__name__})"
    base.requires_grad_(False)
    logger.info("train.fp8: %d of %d block linears to %s; the base's weights %s -> %s", len(selected), len(linears),
                how, _mb(before), _mb(weight_bytes(base)))
    return base


def apply_fp8(base: nn.Module, device: DeviceLike, training: bool = True) -> nn.Module:
    """FP8 matmuls for the frozen base's block linears (``train.fp8``), in place; returns `base`.

    Converted: plain nn.Linear layers inside the blocks whose in / out features are multiples of 16, except the
    AdaLayerNorm modulation linears; experts, routers, norms, embedders and everything outside the blocks are
    untouched. training=True: torchao ``convert_to_float8_training`` (input gradients flow, weights frozen);
    training=False: torchao ``Float8DynamicActivationFloat8WeightConfig`` (FP8 weights, for no-grad sampling).

    Raises:
        QuantizationUnavailable: `device` is not CUDA with compute capability >= (8, 9); the base is already
        quantized; torchao is missing. ValueError: no block linear qualifies.
    """
    capability = check_fp8_device(device)
    return _convert_fp8(base, training=training, capability=capability)


__all__ = ["BACKENDS", "BLOCK_GROUPS", "Backend", "Int8WeightOnlyLinear", "MODULATION_SUFFIXES",
           "QuantizationUnavailable", "apply_fp8", "block_linears", "check_fp8_device", "quantize_base",
           "weight_bytes"]
