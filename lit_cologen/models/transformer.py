"""CoLoGenTransformer: diffusers' FluxTransformer2DModel (frozen) + source tokens + PRW adapters.

The wrapped `base` is a stock `FluxTransformer2DModel` (built from a preset or loaded with `from_pretrained` from
a local folder / the HF cache). Our forward walks its blocks with the multi-branch functions of `attention.py`,
so no diffusers file is copied or patched. Only the adapters (PRW experts + routers, or the single-LoRA baseline)
are trainable and saved; the base is never written by us.

Shapes: noisy tokens (B, Lx, C_in), text (B, Ly, joint_attention_dim), pooled (B, pooled_projection_dim),
timestep (B,) in [0, 1], source tokens (B, Lh, C_in), ids (L, 3). Output: velocity (B, Lx, C_out).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import torch
from diffusers import FluxTransformer2DModel
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from lit_cologen.config import PRWConfig
from lit_cologen.models.attention import SourceKV, double_block_forward, single_block_forward
from lit_cologen.models.presets import get_preset
from lit_cologen.models.prw import PRWAdapter, RoutingDecision

ADAPTER_FILE = "adapters.safetensors"


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


def build_base_transformer(preset: str, pretrained_path: Optional[str] = None, torch_dtype: torch.dtype = torch.float32,
                           seed: int = 0, device: str | torch.device | None = None) -> FluxTransformer2DModel:
    """A stock FluxTransformer2DModel: random init from `preset` (seeded) or loaded from a local folder/HF cache.

    A folder in the FLUX.1 layout (with a `transformer/` subfolder) or a transformer folder itself is accepted.
    Random init happens directly on `device` in `torch_dtype` (a 12 B-parameter flux-dev never exists in fp32).
    """
    if pretrained_path:
        path = Path(pretrained_path)
        if path.exists():
            sub = "transformer" if (path / "transformer" / "config.json").is_file() else None
            if sub is None and not (path / "config.json").is_file():
                raise FileNotFoundError(
                    f"no transformer weights in {path}: expected {path / 'transformer' / 'config.json'} "
                    f"or {path / 'config.json'}"
                )
            folder = path / sub if sub else path
            try:  # safetensors only: a pickled diffusion_pytorch_model.bin is never unpickled
                model = FluxTransformer2DModel.from_pretrained(str(path), subfolder=sub, torch_dtype=torch_dtype,
                                                               use_safetensors=True)
            except OSError as err:
                pickled = sorted(p.name for p in folder.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
                hint = (f" ({', '.join(pickled)} not loaded: pickled weights are refused, convert them to "
                        f"safetensors)") if pickled else ""
                first = (str(err).splitlines() or [repr(err)])[0]
                raise OSError(f"cannot load the transformer weights in {folder}: {first}{hint}") from err
            return _check_preset_shape(model, preset, folder)
        text = str(pretrained_path)
        if text.count("/") != 1 or text.startswith((".", "/", "~")):  # a path, not an "org/name" Hub id
            raise FileNotFoundError(f"pretrained folder {text} does not exist")
        try:  # a Hugging Face id resolved from the local cache (HF_HUB_OFFLINE=1)
            model = FluxTransformer2DModel.from_pretrained(pretrained_path, subfolder="transformer",
                                                           torch_dtype=torch_dtype, use_safetensors=True)
        except Exception as err:  # noqa: BLE001 - re-raised with the path named
            raise FileNotFoundError(f"cannot load a FLUX transformer from {pretrained_path!r}: {err}") from err
        return _check_preset_shape(model, preset, pretrained_path)
    device = torch.device(device or "cpu")
    previous_dtype = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        try:
            torch.set_default_dtype(torch_dtype)
            with device:
                model = FluxTransformer2DModel(**get_preset(preset).transformer)
        finally:
            torch.set_default_dtype(previous_dtype)
    return model


def _check_preset_shape(model: FluxTransformer2DModel, preset: str, where) -> FluxTransformer2DModel:
    """A loaded transformer must fit the preset: the built-in tiny/small presets fix the whole shape; the FLUX
    presets fix the latent channels (the VAE's 16 x 2 x 2 packed tokens); smaller FLUX-layout folders are allowed."""
    p = get_preset(preset)
    keys = (("in_channels", "patch_size", "num_layers", "num_single_layers", "attention_head_dim",
             "num_attention_heads", "joint_attention_dim", "pooled_projection_dim", "guidance_embeds")
            if p.builtin_components else ("in_channels", "patch_size"))
    for key in keys:
        want, got = p.transformer[key], model.config.get(key)
        if got != want:
            raise ValueError(f"transformer in {where} has {key}={got}, but preset '{preset}' needs {key}={want} "
                             f"(wrong model.preset, or weights of another architecture)")
    return model


class CoLoGenTransformer(nn.Module):
    """The CoLoGen denoiser: a frozen FLUX MMDiT whose source tokens get PRW K/V experts in every selected block."""

    def __init__(self, base: FluxTransformer2DModel, prw: Optional[PRWConfig] = None, gate_scale: str = "softmax"):
        super().__init__()
        self.base = base
        self.base.requires_grad_(False)
        self.prw_config = prw or PRWConfig()
        self.gradient_checkpointing = False
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

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_preset(cls, preset: str, prw: Optional[PRWConfig] = None, pretrained_path: Optional[str] = None,
                    torch_dtype: torch.dtype = torch.float32, seed: int = 0, **kwargs) -> "CoLoGenTransformer":
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

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        self.gradient_checkpointing = enabled

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
        prw = adapters[index]

        def routed(attn: nn.Module, nh: Tensor):
            dk, dv, decision = prw(nh)
            return None, dk, dv, decision

        return routed

    def _run(self, fn, *args):
        if self.gradient_checkpointing and torch.is_grad_enabled():
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
        for kind, blocks, fn in (("double", base.transformer_blocks, double_block_forward),
                                 ("single", base.single_transformer_blocks, single_block_forward)):
            for i, block in enumerate(blocks):
                cached = None if source_cache is None else getattr(source_cache, kind)[i]
                x, y, h, kv, decision = self._run(
                    _BlockCall(fn, block, self._source_adapter(kind, i)), x, y, temb, rope_xy, h, temb_h, rope_h, cached
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
        for kind, blocks, fn in (("double", self.base.transformer_blocks, double_block_forward),
                                 ("single", self.base.single_transformer_blocks, single_block_forward)):
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
            "format": "lit-cologen-adapters/1",
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
        """Write `adapters.safetensors` (weights + JSON metadata) atomically; returns the file path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / ADAPTER_FILE
        tmp = path.with_suffix(".tmp")
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.adapter_state_dict().items()}
        save_file(tensors, str(tmp), metadata={"lit_cologen": json.dumps(self.adapter_metadata())})
        tmp.replace(path)
        return path

    def load_adapters(self, path: str | Path) -> None:
        """Load adapters written by `save_adapters` (a file or its folder); adds experts to match the file, each at
        its rank / LoRA alpha from the metadata (files without per-expert metadata: the configured rank / alpha)."""
        from safetensors import safe_open

        path = Path(path)
        if path.is_dir():
            path = path / ADAPTER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"adapter file not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {}).get("lit_cologen", "{}"))
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"{path} is not a readable safetensors adapter file: {err}") from err
        if meta.get("format") != "lit-cologen-adapters/1":
            raise ValueError(f"{path}: not a lit-cologen adapter file (metadata format {meta.get('format')!r})")
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
