"""Two-step attention (paper Eq. 5-7) over the stock FLUX blocks' own submodules.

Three token streams enter every block: text y (B, Ly, d), noisy image x (B, Lx, d) and source image h (B, Lh, d).
The source tokens share every image-stream weight (norms, Q/K/V, out-projection, MLP; DESIGN.md D2) but are
modulated with their own (t = 0) embedding (D3), and their K/V projections receive the block's adapter deltas
(PRW experts, Eq. 4). Attention is two SDPA calls, no dense mask (D4)::

    source:         softmax(Q_h K_h^T) V_h                      (source reads only itself)
    text + noisy:   softmax([Q_y; Q_x] [K_y; K_x; K_h]^T) [V_y; V_x; V_h]

so the source stream never depends on x or y and its per-block (K_h, V_h) can be cached across sampling steps.

Every function runs in one of three modes: joint (x, y and h), noisy-only (x, y, optionally with cached source
K/V) and source-only (h; used to fill the cache). With no source tokens the math is exactly the stock block's
(tested against diffusers' `FluxTransformer2DModel`). Shared projections run once over the concatenated image
tokens [x; h] to keep kernel launches and GEMM efficiency the same as one longer sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import apply_rotary_emb
from torch import Tensor, nn

from lit_cologen.models.prw import RoutingDecision

Rope = tuple[Tensor, Tensor]
# adapter(attn, norm_h) -> (dQ | None, dK | None, dV | None, routing | None); deltas are (B, Lh, inner_dim)
SourceAdapterFn = Callable[[nn.Module, Tensor],
                           tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor], Optional[RoutingDecision]]]


@dataclass
class SourceKV:
    """Post-norm, post-RoPE source keys and values of one block: (B, Lh, H, D) each."""

    key: Tensor
    value: Tensor


def base_linear(layer: nn.Module) -> nn.Module:
    """The frozen base projection (unwraps a peft LoRA layer, whose delta is applied to source tokens only)."""
    return getattr(layer, "base_layer", layer)


def _shared(layer: nn.Module, parts: list[Tensor]) -> list[Tensor]:
    """Apply one linear layer to several token groups of the same batch in one call; returns them split again."""
    if len(parts) == 1:
        return [layer(parts[0])]
    sizes = [p.shape[1] for p in parts]
    return list(layer(torch.cat(parts, dim=1)).split(sizes, dim=1))


def _add(t: Tensor, delta: Optional[Tensor]) -> Tensor:
    return t if delta is None else t + delta


def _sdpa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """(B, Lq, H, D) x (B, Lk, H, D) -> (B, Lq, H*D)."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2).flatten(2)


def _qk(attn: nn.Module, q: Tensor, k: Tensor, v: Tensor, rope: Optional[Rope], added: bool = False):
    """Split heads, apply the block's QK-RMSNorm (image or text variant) and RoPE. (B, L, H*D) -> (B, L, H, D)."""
    hd = attn.head_dim
    q, k, v = q.unflatten(-1, (-1, hd)), k.unflatten(-1, (-1, hd)), v.unflatten(-1, (-1, hd))
    if added:
        q, k = attn.norm_added_q(q), attn.norm_added_k(k)
    else:
        q, k = attn.norm_q(q), attn.norm_k(k)
    if rope is not None:
        q, k = apply_rotary_emb(q, rope, sequence_dim=1), apply_rotary_emb(k, rope, sequence_dim=1)
    return q, k, v


def _source_qkv(attn: nn.Module, nh: Tensor, q: Tensor, k: Tensor, v: Tensor, adapter: Optional[SourceAdapterFn]):
    """Add the adapter's deltas to the source tokens' base projections (Eq. 4)."""
    if adapter is None:
        return q, k, v, None
    dq, dk, dv, routing = adapter(attn, nh)
    return _add(q, dq), _add(k, dk), _add(v, dv), routing


def _image_projections(attn: nn.Module, parts: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    return (_shared(base_linear(attn.to_q), parts), _shared(base_linear(attn.to_k), parts),
            _shared(base_linear(attn.to_v), parts))


def double_block_forward(
    block: nn.Module,
    x: Optional[Tensor],
    y: Optional[Tensor],
    temb: Optional[Tensor],
    rope_xy: Optional[Rope],
    h: Optional[Tensor] = None,
    temb_h: Optional[Tensor] = None,
    rope_h: Optional[Rope] = None,
    cached: Optional[SourceKV] = None,
    adapter: Optional[SourceAdapterFn] = None,
) -> tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor], Optional[SourceKV], Optional[RoutingDecision]]:
    """A `FluxTransformerBlock` over text y, noisy x and source h (or cached source K/V).

    Returns (x, y, h, source_kv, routing): the updated streams (None where absent), this block's source K/V
    (when h was given) and the adapter's routing decision (when it routes).
    """
    attn = block.attn
    has_x, has_h = x is not None, h is not None
    img_parts, mods_x, mods_h = [], None, None
    if has_x:
        nx, *mods_x = block.norm1(x, emb=temb)
        ny, *mods_y = block.norm1_context(y, emb=temb)
        img_parts.append(nx)
    if has_h:
        nh, *mods_h = block.norm1(h, emb=temb_h)
        img_parts.append(nh)

    qs, ks, vs = _image_projections(attn, img_parts)
    source_kv, routing, attn_h = None, None, None
    if has_h:
        q_h, k_h, v_h, routing = _source_qkv(attn, nh, qs[-1], ks[-1], vs[-1], adapter)
        q_h, k_h, v_h = _qk(attn, q_h, k_h, v_h, rope_h)
        source_kv = SourceKV(k_h, v_h)
        attn_h = _sdpa(q_h, k_h, v_h)
    kv = source_kv if has_h else cached

    attn_x = None
    if has_x:
        q_x, k_x, v_x = _qk(attn, qs[0], ks[0], vs[0], None)
        q_y, k_y, v_y = _qk(attn, attn.add_q_proj(ny), attn.add_k_proj(ny), attn.add_v_proj(ny), None, added=True)
        q = apply_rotary_emb(torch.cat([q_y, q_x], dim=1), rope_xy, sequence_dim=1)
        k = apply_rotary_emb(torch.cat([k_y, k_x], dim=1), rope_xy, sequence_dim=1)
        v = torch.cat([v_y, v_x], dim=1)
        if kv is not None:
            k, v = torch.cat([k, kv.key], dim=1), torch.cat([v, kv.value], dim=1)
        out = _sdpa(q, k, v)
        attn_y, attn_x = out.split([y.shape[1], x.shape[1]], dim=1)
        y = _text_stream_double(block, y, attn.to_add_out(attn_y.contiguous()), mods_y)

    outs = _shared(attn.to_out[0], [t for t in (attn_x, attn_h) if t is not None])
    streams, mods = [t for t in (x, h) if t is not None], [m for m in (mods_x, mods_h) if m is not None]
    updated = _image_streams_double(block, streams, [attn.to_out[1](o) for o in outs], mods)
    x_new = updated[0] if has_x else None
    h_new = updated[-1] if has_h else None
    return x_new, y, h_new, source_kv, routing


def _image_streams_double(block: nn.Module, streams: list[Tensor], attn_outs: list[Tensor], mods: list) -> list[Tensor]:
    """Gated attention residual, then modulated MLP (one shared FF call) for the image-weight streams."""
    normed, gated = [], []
    for s, o, (gate_msa, shift_mlp, scale_mlp, gate_mlp) in zip(streams, attn_outs, mods):
        s = s + gate_msa.unsqueeze(1) * o
        gated.append(s)
        normed.append(block.norm2(s) * (1 + scale_mlp[:, None]) + shift_mlp[:, None])
    ffs = _shared(block.ff, normed)
    return [s + m[3].unsqueeze(1) * f for s, f, m in zip(gated, ffs, mods)]


def _text_stream_double(block: nn.Module, y: Tensor, attn_y: Tensor, mods_y: list) -> Tensor:
    gate_msa, shift_mlp, scale_mlp, gate_mlp = mods_y
    y = y + gate_msa.unsqueeze(1) * attn_y
    ny = block.norm2_context(y) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
    y = y + gate_mlp.unsqueeze(1) * block.ff_context(ny)
    if y.dtype == torch.float16:
        y = y.clip(-65504, 65504)
    return y


def single_block_forward(
    block: nn.Module,
    x: Optional[Tensor],
    y: Optional[Tensor],
    temb: Optional[Tensor],
    rope_xy: Optional[Rope],
    h: Optional[Tensor] = None,
    temb_h: Optional[Tensor] = None,
    rope_h: Optional[Rope] = None,
    cached: Optional[SourceKV] = None,
    adapter: Optional[SourceAdapterFn] = None,
) -> tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor], Optional[SourceKV], Optional[RoutingDecision]]:
    """A `FluxSingleTransformerBlock` over the joint stream [y; x] and the source stream h (same contract)."""
    attn = block.attn
    has_x, has_h = x is not None, h is not None
    parts, residuals, gates = [], [], []
    if has_x:
        s = torch.cat([y, x], dim=1)
        ns, gate_s = block.norm(s, emb=temb)
        parts.append(ns), residuals.append(s), gates.append(gate_s)
    if has_h:
        nh, gate_h = block.norm(h, emb=temb_h)
        parts.append(nh), residuals.append(h), gates.append(gate_h)

    mlps = [block.act_mlp(m) for m in _shared(block.proj_mlp, parts)]
    qs, ks, vs = _image_projections(attn, parts)
    source_kv, routing, attn_outs = None, None, []
    if has_h:
        q_h, k_h, v_h, routing = _source_qkv(attn, nh, qs[-1], ks[-1], vs[-1], adapter)
        q_h, k_h, v_h = _qk(attn, q_h, k_h, v_h, rope_h)
        source_kv = SourceKV(k_h, v_h)
    kv = source_kv if has_h else cached
    if has_x:
        q_s, k_s, v_s = _qk(attn, qs[0], ks[0], vs[0], rope_xy)
        if kv is not None:
            k_s, v_s = torch.cat([k_s, kv.key], dim=1), torch.cat([v_s, kv.value], dim=1)
        attn_outs.append(_sdpa(q_s, k_s, v_s))
    if has_h:
        attn_outs.append(_sdpa(q_h, source_kv.key, source_kv.value))

    projected = _shared(block.proj_out, [torch.cat([a, m], dim=2) for a, m in zip(attn_outs, mlps)])
    updated = []
    for res, gate, p in zip(residuals, gates, projected):
        out = res + gate.unsqueeze(1) * p
        if out.dtype == torch.float16:
            out = out.clip(-65504, 65504)
        updated.append(out)
    x_new = y_new = None
    if has_x:
        ly = y.shape[1]
        y_new, x_new = updated[0][:, :ly], updated[0][:, ly:]
    h_new = updated[-1] if has_h else None
    return x_new, y_new, h_new, source_kv, routing
