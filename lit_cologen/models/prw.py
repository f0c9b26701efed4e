"""Progressive Representation Weaving (paper Eq. 2-4): a noisy top-1 router over LoRA experts on the source K/V.

One `PRWAdapter` sits in every (selected) FLUX block. For the block's modulated source tokens h (B, L, d) it
returns low-rank deltas for the K and V projections of the source tokens::

    w      = h W_r^T + eps * softplus(h W_n^T)         (Eq. 2; eps ~ N(0, I) in training only)
    k*     = argmax softmax(w)                          (Eq. 3, top-1)
    dK, dV = softmax(w)_k* * E_k*(h)                    (Eq. 4; the base projection is added by the caller)
    E_k(h) = (h A_k^K^T) B_k^K^T * (alpha / r),  likewise for V  (separate low-rank pairs, A Kaiming, B zero)

Granularity (DESIGN.md D8): ``sample`` mean-pools h over tokens, so each sample picks one expert per block
(gathered weights + `bmm`, no loop over experts); ``token`` routes every token (one fused matmul over all experts,
masked to the chosen one).

`add_expert()` appends an expert and a router column and freezes every earlier ("veteran") expert. The router is
trainable in every step. The routing decisions are returned to the caller (not stored), so that the veteran loss
(Eq. 8-10) can be computed and gradient checkpointing stays correct.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class RoutingDecision:
    """The router's output in one block.

    probs:  (B, N) for sample routing, (B, L, N) for token routing; softmax of the (noisy) logits, float32.
    index:  (B,) or (B, L) long; the selected expert (top-1).
    """

    probs: Tensor
    index: Tensor

    @property
    def weight(self) -> Tensor:
        """Softmax weight of the selected expert: (B,) or (B, L)."""
        return self.probs.gather(-1, self.index.unsqueeze(-1)).squeeze(-1)


def _kaiming_(weight: Tensor) -> Tensor:
    # Same init as nn.Linear / peft LoRA A: kaiming_uniform with a = sqrt(5) on a (out, in) matrix.
    return nn.init.kaiming_uniform_(weight, a=math.sqrt(5))


class NoisyTop1Router(nn.Module):
    """w = h W_r^T + eps * softplus(h W_n^T), top-1 of softmax(w) (Eq. 2-3). Noise only in training.

    Weights are stored as (N, d) matrices; `grow()` appends a zero row (a new expert starts with logit 0).
    """

    def __init__(self, dim: int, num_experts: int, noise: bool = True):
        super().__init__()
        self.dim = dim
        self.noise = noise
        self.w_route = nn.Parameter(torch.zeros(num_experts, dim))
        self.w_noise = nn.Parameter(torch.zeros(num_experts, dim))

    @property
    def num_experts(self) -> int:
        return self.w_route.shape[0]

    def grow(self) -> None:
        """Append one router column (zeros) for a new expert; earlier columns are kept."""
        def grown(p: Tensor) -> nn.Parameter:
            return nn.Parameter(torch.cat([p.data, p.data.new_zeros(1, p.shape[1])]), requires_grad=p.requires_grad)

        self.w_route = grown(self.w_route)
        self.w_noise = grown(self.w_noise)

    def forward(self, h: Tensor) -> RoutingDecision:
        """h: (B, d) pooled or (B, L, d) per-token router input -> RoutingDecision."""
        h32 = h.float()
        logits = h32 @ self.w_route.float().t()
        if self.training and self.noise:
            noise_scale = F.softplus(h32 @ self.w_noise.float().t())
            logits = logits + torch.randn_like(logits) * noise_scale
        probs = logits.softmax(dim=-1)
        return RoutingDecision(probs=probs, index=probs.argmax(dim=-1))


class KVExpertBank(nn.Module):
    """N LoRA experts, each with separate low-rank pairs for K and V.

    Per expert k: ``lora_A[k]`` (2r, d) stacks A^K over A^V; ``lora_B_k[k]``, ``lora_B_v[k]`` are (d_kv, r).
    Only the newest expert is trainable after `add_expert()` (veterans are frozen, `requires_grad=False`, and so
    never reach an optimizer or weight decay).
    """

    def __init__(self, dim: int, kv_dim: int, rank: int, alpha: float, num_experts: int):
        super().__init__()
        self.dim, self.kv_dim, self.rank = dim, kv_dim, rank
        self.scaling = alpha / rank
        self.lora_A = nn.ParameterList()
        self.lora_B_k = nn.ParameterList()
        self.lora_B_v = nn.ParameterList()
        for _ in range(num_experts):
            self.add_expert()

    @property
    def num_experts(self) -> int:
        return len(self.lora_A)

    def add_expert(self, warm_start: bool = False) -> None:
        """Append an expert (zero B, Kaiming A; or a copy of the previous one) and freeze all earlier experts."""
        ref = self.lora_A[0] if len(self.lora_A) else None
        device = ref.device if ref is not None else None
        dtype = ref.dtype if ref is not None else torch.float32
        if warm_start and len(self.lora_A):
            a = self.lora_A[-1].detach().clone()
            bk = self.lora_B_k[-1].detach().clone()
            bv = self.lora_B_v[-1].detach().clone()
        else:
            a = _kaiming_(torch.empty(2 * self.rank, self.dim, device=device, dtype=dtype))
            bk = torch.zeros(self.kv_dim, self.rank, device=device, dtype=dtype)
            bv = torch.zeros(self.kv_dim, self.rank, device=device, dtype=dtype)
        for params in (self.lora_A, self.lora_B_k, self.lora_B_v):
            for p in params:
                p.requires_grad_(False)
        self.lora_A.append(nn.Parameter(a))
        self.lora_B_k.append(nn.Parameter(bk))
        self.lora_B_v.append(nn.Parameter(bv))

    def _stacked(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """(N, 2r, d), (N, d_kv, r), (N, d_kv, r) in `dtype` (one stack per call; no loop over experts later)."""
        return (
            torch.stack(tuple(self.lora_A)).to(dtype),
            torch.stack(tuple(self.lora_B_k)).to(dtype),
            torch.stack(tuple(self.lora_B_v)).to(dtype),
        )

    def forward_sample(self, h: Tensor, index: Tensor, gate: Tensor) -> tuple[Tensor, Tensor]:
        """One expert per sample. h (B, L, d), index (B,), gate (B,) -> dK, dV (B, L, d_kv)."""
        a, bk, bv = self._stacked(h.dtype)
        z = torch.bmm(h, a[index].transpose(1, 2))  # (B, L, 2r)
        z = z * (gate.to(h.dtype) * self.scaling)[:, None, None]
        zk, zv = z.split(self.rank, dim=-1)
        return torch.bmm(zk, bk[index].transpose(1, 2)), torch.bmm(zv, bv[index].transpose(1, 2))

    def forward_token(self, h: Tensor, index: Tensor, gate: Tensor) -> tuple[Tensor, Tensor]:
        """One expert per token, fused over experts. h (B, L, d), index (B, L), gate (B, L) -> dK, dV (B, L, d_kv)."""
        n, r = self.num_experts, self.rank
        a, bk, bv = self._stacked(h.dtype)
        z = (h @ a.reshape(n * 2 * r, self.dim).t()).unflatten(-1, (n, 2 * r))  # (B, L, N, 2r)
        select = F.one_hot(index, n).to(h.dtype) * (gate.to(h.dtype) * self.scaling).unsqueeze(-1)  # (B, L, N)
        z = z * select.unsqueeze(-1)
        zk, zv = z.split(r, dim=-1)  # (B, L, N, r) each
        bk_cat = bk.permute(1, 0, 2).reshape(self.kv_dim, n * r)  # (d_kv, N*r), expert-major like zk.flatten
        bv_cat = bv.permute(1, 0, 2).reshape(self.kv_dim, n * r)
        return zk.flatten(-2) @ bk_cat.t(), zv.flatten(-2) @ bv_cat.t()

    def expert_delta(self, k: int, h: Tensor) -> tuple[Tensor, Tensor]:
        """Ungated output of expert k (for export and tests): h (..., d) -> dK, dV (..., d_kv)."""
        a = self.lora_A[k].to(h.dtype)
        zk, zv = (h @ a.t()).split(self.rank, dim=-1)
        return (zk @ self.lora_B_k[k].to(h.dtype).t()) * self.scaling, (zv @ self.lora_B_v[k].to(h.dtype).t()) * self.scaling


class PRWAdapter(nn.Module):
    """Router + expert bank of one block. `forward(h)` -> (dK, dV, RoutingDecision)."""

    def __init__(
        self,
        dim: int,
        kv_dim: int,
        num_experts: int = 1,
        rank: int = 128,
        alpha: float | None = None,
        routing: str = "sample",
        router_noise: bool = True,
        gate_scale: str = "softmax",
    ):
        super().__init__()
        if routing not in ("sample", "token"):
            raise ValueError(f"routing must be 'sample' or 'token', got {routing!r}")
        if gate_scale not in ("softmax", "straight_through"):
            raise ValueError(f"gate_scale must be 'softmax' or 'straight_through', got {gate_scale!r}")
        self.routing = routing
        self.gate_scale = gate_scale
        self.router = NoisyTop1Router(dim, num_experts, noise=router_noise)
        self.experts = KVExpertBank(dim, kv_dim, rank, alpha if alpha is not None else 2.0 * rank, num_experts)

    @property
    def num_experts(self) -> int:
        return self.experts.num_experts

    def add_expert(self, warm_start: bool = False) -> None:
        self.experts.add_expert(warm_start=warm_start)
        self.router.grow()

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor, RoutingDecision]:
        """h: (B, L, d) modulated source tokens (the input of the K/V projections) -> dK, dV (B, L, d_kv), routing."""
        decision = self.router(h.mean(dim=1) if self.routing == "sample" else h)
        gate = decision.weight
        if self.gate_scale == "straight_through":
            gate = gate / gate.detach()  # value 1, gradient d log p: the expert passes at full strength
        if self.routing == "sample":
            dk, dv = self.experts.forward_sample(h, decision.index, gate)
        else:
            dk, dv = self.experts.forward_token(h, decision.index, gate)
        return dk, dv, decision


def newest_expert_usage(decisions: list[RoutingDecision], newest: int) -> tuple[Tensor, Tensor]:
    """Usage of the newest expert over blocks (and samples / tokens), Eq. 8.

    Returns (U_hard, U_soft): U_hard = mean of 1[index == newest] (no gradient), U_soft = mean softmax probability
    of the newest expert (differentiable). Both are scalars (float32).
    """
    if not decisions:
        raise ValueError("no routing decisions: the model has no PRW blocks or saw no source tokens")
    hard = torch.stack([(d.index == newest).float().mean() for d in decisions]).mean()
    soft = torch.stack([d.probs[..., newest].mean() for d in decisions]).mean()
    return hard, soft
