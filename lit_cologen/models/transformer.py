"""CoLoGenTransformer: diffusers' FluxTransformer2DModel (frozen) + source tokens + PRW adapters.

The wrapped `base` is a stock `FluxTransformer2DModel` (built from a preset or loaded with `from_pretrained` from
a local folder / the HF cache). Our forward walks its blocks with the multi-branch functions of `attention.py`,
so no diffusers file is copied or patched. Only the adapters (PRW experts + routers, or the single-LoRA baseline)
are trainable and saved; the base is never written by us.

Shapes: noisy tokens (B, Lx, C_in), text (B, Ly, joint_attention_dim), pooled (B, pooled_projection_dim),
timestep (B,) in [0, 1], source tokens (B, Lh, C_in), ids (L, 3). Output: velocity (B, Lx, C_out).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import torch
from diffusers import FluxTransformer2DModel
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from lit_cologen.models.adapter_io import ADAPTER_FORMAT, adapter_file, read_adapter_metadata, write_adapters
from lit_cologen.models.attention import SourceKV, double_block_forward, single_block_forward
from lit_cologen.models.config import PRWConfig
from lit_cologen.models.prw import PRWAdapter, RoutingDecision


@dataclass
class SourceCache:
    """Per-block source K/V for reuse across sampling steps (D3), and the routing that produced them."""

    double: list[SourceKV]
    single: list[SourceKV]
    routing: list[RoutingDecision] = field(default_factory=list)


@dataclass
class CoLoGenOutput:
    sample: Tensor  # (B, Lx, C_out) velocity for the noisy tokens
    routing: list[RoutingDecision]  # one per routed block, in block order (double then single)
    source_cache: Optional[SourceCache] = None  # filled when forward(..., return_source_cache=True)


class CoLoGenTransformer(nn.Module):
    """The CoLoGen denoiser: a frozen FLUX MMDiT whose source tokens get PRW K/V experts in every selected block."""

    def __init__(self, base: FluxTransformer2DModel, prw: Optional[PRWConfig] = None, gate_scale: str = "softmax"):
        super().__init__()
        self.base = base
        self.base.requires_grad_(False)
        self.prw_config = prw or PRWConfig()
        self.checkpointed: frozenset[int] = frozenset()  # block ordinals (double blocks first) recomputed in backward
        # the block forwards of attention.py, or their torch.compile'd versions (compile_blocks)
        self.block_fns = {"double": double_block_forward, "single": single_block_forward}
        cfg = base.config
        dim = cfg.num_attention_heads * cfg.attention_head_dim
        blocks = self.prw_config.blocks  # "none": no adapters (the plain in-context model)
        make = lambda: PRWAdapter(  # noqa: E731
            dim, dim, self.prw_config.num_experts, self.prw_config.rank, self.prw_config.alpha,
            self.prw_config.routing, self.prw_config.router_noise, gate_scale,
        )
        self.double_adapters = nn.ModuleList([make() for _ in base.transformer_blocks] if blocks in ("all", "double") else [])
        self.single_adapters = nn.ModuleList(
            [make() for _ in base.single_transformer_blocks] if blocks in ("all", "single") else []
        )
        self.peft_source_lora = False  # set by `enable_single_lora_baseline`
        self.adapters_file: Optional[str] = None  # the adapters file loaded by the pipeline, if any

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_preset(cls, preset: str, prw: Optional[PRWConfig] = None, pretrained_path: Optional[str] = None,
                    torch_dtype: torch.dtype = torch.float32, seed: int = 0, **kwargs) -> "CoLoGenTransformer":
        """The preset's base (seeded random init, or ``pretrained_path``'s weights) wrapped with PRW adapters."""
        from lit_cologen.models.factory import build_base_transformer

        return cls(build_base_transformer(preset, pretrained_path, torch_dtype, seed), prw, **kwargs)

    def enable_single_lora_baseline(self, rank: int, alpha: Optional[float] = None) -> None:
        """Replace PRW by one peft LoRA on the image-stream Q/K/V, applied to the source tokens only (OminiControl)."""
        from peft import LoraConfig

        self.double_adapters, self.single_adapters = nn.ModuleList(), nn.ModuleList()
        self.base.add_adapter(LoraConfig(r=rank, lora_alpha=alpha or 2 * rank, init_lora_weights=True,
                                         target_modules=["to_q", "to_k", "to_v"]))
        self.peft_source_lora = True

    @property
    def num_experts(self) -> int:
        adapters = self.adapters()
        return adapters[0].num_experts if adapters else 0

    def adapters(self) -> list[PRWAdapter]:
        return list(self.double_adapters) + list(self.single_adapters)

    def add_expert(self, warm_start: Optional[bool] = None, rank: Optional[int] = None,
                   alpha: Optional[float] = None) -> None:
        """Add one expert (and router column) in every PRW block; earlier experts are frozen.

        rank / alpha: the new expert's LoRA rank and alpha (default: `prw.rank` and its alpha; with only `rank`
        given, alpha = 2 x rank). Veterans keep their own rank and scaling.
        """
        ws = self.prw_config.warm_start if warm_start is None else warm_start
        for adapter in self.adapters():
            adapter.add_expert(warm_start=ws, rank=rank, alpha=alpha)
        self.prw_config.num_experts = self.num_experts

    def expert_ranks(self) -> list[tuple[int, float]]:
        """(LoRA rank, LoRA alpha) of every expert (the same in every block)."""
        adapters = self.adapters()
        if not adapters:
            return []
        bank = adapters[0].experts
        return list(zip(bank.ranks, bank.alphas))

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Experts (the trainable, i.e. newest, ones) + routers; or the baseline's peft LoRA weights."""
        if self.peft_source_lora:
            return (p for n, p in self.base.named_parameters() if "lora_" in n and p.requires_grad)
        return (p for a in self.adapters() for p in a.parameters() if p.requires_grad)

    @property
    def num_blocks(self) -> int:
        return len(self.base.transformer_blocks) + len(self.base.single_transformer_blocks)

    def set_checkpointing(self, policy: str = "full", ratio: float = 0.5) -> list[int]:
        """Activation-memory policy of the forward under autograd; returns the checkpointed block ordinals.

        ``full``: every block's activations are recomputed in backward (least memory); ``none``: all are kept
        (fastest); ``selective``: a ``ratio`` share of the blocks, spread evenly over the double-then-single order
        (block i is checkpointed iff floor((i + 1) r) > floor(i r)), so memory falls linearly with r while the
        recomputed forward costs r of a full one. Gradients are the same under every policy (the RNG state of the
        router noise is restored for the recomputation).
        """
        n = self.num_blocks
        if policy == "full":
            chosen = range(n)
        elif policy == "none":
            chosen = range(0)
        elif policy == "selective":
            if not 0 < ratio <= 1:
                raise ValueError(f"checkpoint ratio must be in (0, 1], got {ratio}")
            chosen = [i for i in range(n) if int((i + 1) * ratio) > int(i * ratio)]
        else:
            raise ValueError(f"unknown checkpointing policy {policy!r} (full | selective | none)")
        self.checkpointed = frozenset(chosen)
        return sorted(self.checkpointed)

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """``set_checkpointing("full")`` or ``("none")``."""
        self.set_checkpointing("full" if enabled else "none")

    def compile_blocks(self, backend: str = "inductor", **compile_kwargs) -> None:
        """Regional compilation: ``torch.compile`` of the double- and single-block forwards (not the whole model).

        Every block of a kind runs the same compiled code: the block and its PRW adapter enter as arguments (the
        adapter as a bound module method), so their weights are graph inputs and one graph serves all 19 / 38 blocks,
        as diffusers' ``compile_repeated_blocks`` does. The batch dimension is marked dynamic, so a step whose task
        mix changes the group sizes does not recompile (a group of one sample compiles once more: torch specialises
        size 1). There is no graph break in the block path (``torch._dynamo`` counters; tests/test_efficiency.py).
        """
        self.block_fns = {kind: torch.compile(fn, backend=backend, **compile_kwargs)
                          for kind, fn in (("double", double_block_forward), ("single", single_block_forward))}

    @property
    def compiled(self) -> bool:
        return self.block_fns["double"] is not double_block_forward

    @property
    def gradient_checkpointing(self) -> bool:
        """Whether any block is checkpointed."""
        return bool(self.checkpointed)

    # ------------------------------------------------------------------ forward
    def _embed(self, timestep: Tensor, guidance: Optional[Tensor], pooled: Tensor, dtype: torch.dtype) -> Tensor:
        t = timestep.to(dtype) * 1000
        if self.base.config.guidance_embeds:
            if guidance is None:
                raise ValueError("this transformer has a guidance embedding (flux-dev): pass `guidance` (B,)")
            return self.base.time_text_embed(t, guidance.to(dtype) * 1000, pooled)
        return self.base.time_text_embed(t, pooled)

    def _source_adapter(self, kind: str, index: int):
        if self.peft_source_lora:
            return _peft_source_deltas
        adapters = self.double_adapters if kind == "double" else self.single_adapters
        if not len(adapters):
            return None
        return adapters[index].source_deltas

    def _run(self, ordinal: int, fn, *args):
        if ordinal in self.checkpointed and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def forward(
        self,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor,
        pooled_projections: Tensor,
        timestep: Tensor,
        img_ids: Tensor,
        txt_ids: Tensor,
        guidance: Optional[Tensor] = None,
        source_hidden_states: Optional[Tensor] = None,
        source_ids: Optional[Tensor] = None,
        source_cache: Optional[SourceCache] = None,
        return_source_cache: bool = False,
    ) -> CoLoGenOutput:
        """Velocity for the noisy tokens; the source enters as tokens (B, Lh, C_in) or as a `SourceCache`.

        With `return_source_cache` (and source tokens), `output.source_cache` holds every block's source K/V.
        """
        if source_hidden_states is not None and source_cache is not None:
            raise ValueError("pass either source_hidden_states or source_cache, not both")
        base = self.base
        x = base.x_embedder(hidden_states)
        temb = self._embed(timestep, guidance, pooled_projections, x.dtype)
        y = base.context_embedder(encoder_hidden_states)
        rope_xy = base.pos_embed(torch.cat([txt_ids, img_ids], dim=0))
        h = temb_h = rope_h = None
        if source_hidden_states is not None:
            if source_ids is None:
                raise ValueError("source_hidden_states needs source_ids (Lh, 3)")
            h, temb_h, rope_h = self._source_inputs(source_hidden_states, source_ids, pooled_projections, guidance, x.dtype)

        routing: list[RoutingDecision] = []
        collected = SourceCache(double=[], single=[]) if return_source_cache and h is not None else None
        offset = {"double": 0, "single": len(base.transformer_blocks)}
        if self.compiled:
            _mark_batch_dynamic(x, y, temb, h, temb_h)
        for kind, blocks in (("double", base.transformer_blocks), ("single", base.single_transformer_blocks)):
            fn = self.block_fns[kind]
            for i, block in enumerate(blocks):
                cached = None if source_cache is None else getattr(source_cache, kind)[i]
                x, y, h, kv, decision = self._run(
                    offset[kind] + i, _BlockCall(fn, block, self._source_adapter(kind, i)),
                    x, y, temb, rope_xy, h, temb_h, rope_h, cached,
                )
                if decision is not None:
                    routing.append(decision)
                if collected is not None:
                    getattr(collected, kind).append(kv)
        if source_cache is not None:
            routing = list(source_cache.routing)
        x = base.norm_out(x, temb)
        if collected is not None:
            collected.routing = list(routing)
        return CoLoGenOutput(sample=base.proj_out(x), routing=routing, source_cache=collected)

    def _source_inputs(self, source_hidden_states, source_ids, pooled, guidance, dtype):
        h = self.base.x_embedder(source_hidden_states)
        t0 = torch.zeros(h.shape[0], device=h.device, dtype=dtype)  # D3: the clean-image (t = 0) embedding
        return h, self._embed(t0, guidance, pooled, dtype), self.base.pos_embed(source_ids)

    @torch.no_grad()
    def compute_source_cache(self, source_hidden_states: Tensor, source_ids: Tensor, pooled_projections: Tensor,
                             guidance: Optional[Tensor] = None) -> SourceCache:
        """Run only the source branch once; its per-block K/V serve every later sampling step (D3)."""
        h, temb_h, rope_h = self._source_inputs(source_hidden_states, source_ids, pooled_projections, guidance,
                                                self.base.x_embedder.weight.dtype)
        cache = SourceCache(double=[], single=[])
        if self.compiled:
            _mark_batch_dynamic(h, temb_h)
        for kind, blocks in (("double", self.base.transformer_blocks), ("single", self.base.single_transformer_blocks)):
            fn = self.block_fns[kind]
            for i, block in enumerate(blocks):
                _, _, h, kv, decision = fn(block, None, None, None, None, h, temb_h, rope_h, None,
                                           self._source_adapter(kind, i))
                getattr(cache, kind).append(kv)
                if decision is not None:
                    cache.routing.append(decision)
        return cache

    # ------------------------------------------------------------------ adapters on disk
    def adapter_metadata(self) -> dict:
        cfg = self.base.config
        return {
            "format": ADAPTER_FORMAT,
            "num_experts": self.num_experts,
            "experts": [{"rank": r, "lora_alpha": a} for r, a in self.expert_ranks()],  # per expert (mixed ranks)
            "prw": {k: getattr(self.prw_config, k) for k in ("rank", "lora_alpha", "routing", "blocks", "router_noise")},
            "base": {k: cfg[k] for k in ("num_layers", "num_single_layers", "attention_head_dim", "num_attention_heads",
                                          "in_channels", "joint_attention_dim")},
        }

    def adapter_state_dict(self) -> dict[str, Tensor]:
        """Adapter weights only (never the frozen base)."""
        if self.peft_source_lora:
            return {k: v for k, v in self.base.state_dict().items() if "lora_" in k}
        return {k: v for k, v in self.state_dict().items() if not k.startswith("base.")}

    def save_adapters(self, directory: str | Path) -> Path:
        """Write ``adapters.safetensors`` (weights + JSON metadata) atomically; returns the file path."""
        return write_adapters(directory, self.adapter_state_dict(), self.adapter_metadata())

    def load_adapters(self, path: str | Path) -> None:
        """Load adapters written by `save_adapters` (a file or its folder); adds experts to match the file, each at
        its rank / LoRA alpha from the metadata (files without per-expert metadata: the configured rank / alpha)."""
        path = adapter_file(path)
        meta = read_adapter_metadata(path)
        mine = self.adapter_metadata()
        for key, value in meta["base"].items():
            if mine["base"][key] != value:
                raise ValueError(f"{path}: adapters were trained for base {key}={value}, this model has {mine['base'][key]}")
        for key in ("rank", "routing", "blocks"):
            if meta["prw"][key] != mine["prw"][key]:
                raise ValueError(f"{path}: adapter prw.{key}={meta['prw'][key]!r} but model has {mine['prw'][key]!r}")
        n = meta["num_experts"]
        if self.num_experts > n:
            raise ValueError(f"{path}: file has {n} experts, model already has {self.num_experts}")
        # per-expert (rank, alpha); a file written before per-expert ranks has them all at the configured rank
        specs = meta.get("experts") or [{"rank": self.prw_config.rank, "lora_alpha": self.prw_config.alpha}] * n
        if len(specs) != n:
            raise ValueError(f"{path}: metadata lists {len(specs)} expert ranks for {n} experts")
        for k, (rank, _alpha) in enumerate(self.expert_ranks()):
            if int(specs[k]["rank"]) != rank:
                raise ValueError(f"{path}: expert {k} has LoRA rank {specs[k]['rank']} in the file, {rank} in this model")
        while self.num_experts < n:
            spec = specs[self.num_experts]
            self.add_expert(warm_start=False, rank=int(spec["rank"]), alpha=float(spec["lora_alpha"]))
        for adapter in self.adapters():  # the file's scaling is the one the experts were trained with
            adapter.experts.alphas = [float(spec["lora_alpha"]) for spec in specs]
        state = load_file(str(path))
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("base.")]
        if missing or unexpected:
            raise ValueError(f"{path}: adapter keys do not match (missing {missing[:3]}, unexpected {unexpected[:3]})")

    def export_expert_as_flux_lora(self, expert: int) -> dict[str, Tensor]:
        """Expert `expert` as a standard FLUX LoRA state dict (peft key format, at the expert's own rank, its
        alpha / rank folded into B), loadable with diffusers' `load_lora_weights` / `load_lora_adapter`. Note: a
        standard LoRA applies to all image tokens."""
        out: dict[str, Tensor] = {}
        for prefix, adapters in (("transformer_blocks", self.double_adapters),
                                 ("single_transformer_blocks", self.single_adapters)):
            for i, adapter in enumerate(adapters):
                bank = adapter.experts
                scaling = bank.scalings[expert]  # the expert's own alpha / rank
                a_k, a_v = bank.lora_A[expert].detach().split(bank.ranks[expert], dim=0)
                for proj, a, b in (("to_k", a_k, bank.lora_B_k[expert]), ("to_v", a_v, bank.lora_B_v[expert])):
                    out[f"{prefix}.{i}.attn.{proj}.lora_A.weight"] = a.contiguous().clone()
                    out[f"{prefix}.{i}.attn.{proj}.lora_B.weight"] = (b.detach() * scaling).contiguous().clone()
        return out


def _mark_batch_dynamic(*tensors: Optional[Tensor]) -> None:
    """Tell the compiler that dim 0 (the batch) of these tensors varies between calls."""
    for t in tensors:
        if t is not None:
            torch._dynamo.maybe_mark_dynamic(t, 0)


class _BlockCall:
    """A picklable-free callable binding a block and its adapter, so checkpointing recomputes the same thing."""

    def __init__(self, fn, block, adapter):
        self.fn, self.block, self.adapter = fn, block, adapter

    def __call__(self, x, y, temb, rope_xy, h, temb_h, rope_h, cached):
        return self.fn(self.block, x, y, temb, rope_xy, h, temb_h, rope_h, cached, self.adapter)


def _peft_source_deltas(attn: nn.Module, nh: Tensor):
    """LoRA deltas of a peft-wrapped attention (to_q/to_k/to_v) for the source tokens only."""
    def delta(layer: nn.Module) -> Optional[Tensor]:
        if not hasattr(layer, "lora_A"):
            return None
        out = None
        for name in layer.active_adapters:
            if name not in layer.lora_A:
                continue
            d = layer.lora_B[name](layer.lora_A[name](layer.lora_dropout[name](nh))) * layer.scaling[name]
            out = d if out is None else out + d
        return out

    return delta(attn.to_q), delta(attn.to_k), delta(attn.to_v), None
