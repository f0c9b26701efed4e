"""Progressive Representation Weaving (paper Eq. 2-4): a noisy top-1 router over LoRA experts on the source K/V.

One `PRWAdapter` sits in every (selected) FLUX block. For the block's modulated source tokens h (B, L, d) it
returns low-rank deltas for the K and V projections of the source tokens::

    w      = h W_r^T + eps * softplus(h W_n^T)         (Eq. 2; eps ~ N(0, I) in training only)
    k*     = argmax softmax(w)                          (Eq. 3, top-1)
    dK, dV = softmax(w)_k* * E_k*(h)                    (Eq. 4; the base projection is added by the caller)
    E_k(h) = (h A_k^K^T) B_k^K^T * (alpha_k / r_k),  likewise for V  (separate low-rank pairs, A Kaiming, B zero;
                                                      each expert has its own rank r_k and LoRA alpha_k)

Granularity (DESIGN.md D8): ``sample`` mean-pools h over tokens, so each sample picks one expert per block
(gathered weights + `bmm`, no loop over experts); ``token`` routes every token (one fused matmul over all experts,
masked to the chosen one).

`add_expert(rank=..., alpha=...)` appends an expert (of any rank) and a router column and freezes every earlier
("veteran") expert. The router is trainable in every step. The routing decisions are returned to the caller (not
stored), so that the veteran loss (Eq. 8-10) can be computed and gradient checkpointing stays correct.
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
    """N LoRA experts, each with separate low-rank pairs for K and V, and each with its own rank r_k and LoRA alpha_k.

    Per expert k: ``lora_A[k]`` (2 r_k, d) stacks A^K over A^V; ``lora_B_k[k]``, ``lora_B_v[k]`` are (d_kv, r_k);
    its output is scaled by alpha_k / r_k. `rank` / `alpha` are the bank's configured values (the defaults of
    `add_expert`); `ranks` / `alphas` hold each expert's own. Only the newest expert is trainable after
    `add_expert()` (veterans are frozen, `requires_grad=False`, and so never reach an optimizer or weight decay).

    The fused paths stack the experts zero-padded to the largest rank R, with each expert's scaling folded into its
    B (padded rows of A and columns of B are zero, so they add nothing); the parameters keep their own shapes, so the
    state dict holds exactly r_k rows per expert.
    """

    def __init__(self, dim: int, kv_dim: int, rank: int, alpha: float, num_experts: int):
        super().__init__()
        if rank <= 0 or alpha <= 0:
            raise ValueError(f"LoRA rank and alpha must be > 0, got rank={rank}, alpha={alpha}")
        self.dim, self.kv_dim, self.rank, self.alpha = dim, kv_dim, int(rank), float(alpha)
        self.scaling = self.alpha / self.rank  # of an expert at the configured rank / alpha
        self.ranks: list[int] = []
        self.alphas: list[float] = []
        self.lora_A = nn.ParameterList()
        self.lora_B_k = nn.ParameterList()
        self.lora_B_v = nn.ParameterList()
        for _ in range(num_experts):
            self.add_expert()

    @property
    def num_experts(self) -> int:
        return len(self.lora_A)

    @property
    def scalings(self) -> list[float]:
        """alpha_k / r_k of every expert."""
        return [a / r for a, r in zip(self.alphas, self.ranks)]

    def add_expert(self, warm_start: bool = False, rank: int | None = None, alpha: float | None = None) -> None:
        """Append an expert (zero B, Kaiming A; or a copy of the previous one) and freeze all earlier experts.

        rank: the new expert's LoRA rank (default: the bank's configured rank). alpha: its LoRA alpha (default: the
        configured alpha when `rank` is not given, else 2 x rank, the paper's convention). A warm start copies the
        previous expert, so it needs the same rank (ValueError otherwise); a different alpha is compensated in B, so
        the copy computes the same function.
        """
        if alpha is None:
            alpha = self.alpha if rank is None else 2.0 * rank
        rank = self.rank if rank is None else int(rank)
        alpha = float(alpha)
        if rank <= 0 or alpha <= 0:
            raise ValueError(f"LoRA rank and alpha of a new expert must be > 0, got rank={rank}, alpha={alpha}")
        ref = self.lora_A[0] if len(self.lora_A) else None
        device = ref.device if ref is not None else None
        dtype = ref.dtype if ref is not None else torch.float32
        if warm_start and len(self.lora_A):
            if self.ranks[-1] != rank:
                raise ValueError(f"warm_start copies the previous expert (rank {self.ranks[-1]}), so the new expert "
                                 f"needs the same rank, got rank={rank}; add it without warm_start")
            a = self.lora_A[-1].detach().clone()
            ratio = self.scalings[-1] / (alpha / rank)  # same delta: (alpha/r) B' = (alpha_prev/r) B
            bk = self.lora_B_k[-1].detach().clone() * ratio
            bv = self.lora_B_v[-1].detach().clone() * ratio
        else:
            a = _kaiming_(torch.empty(2 * rank, self.dim, device=device, dtype=dtype))
            bk = torch.zeros(self.kv_dim, rank, device=device, dtype=dtype)
            bv = torch.zeros(self.kv_dim, rank, device=device, dtype=dtype)
        for params in (self.lora_A, self.lora_B_k, self.lora_B_v):
            for p in params:
                p.requires_grad_(False)
        self.lora_A.append(nn.Parameter(a))
        self.lora_B_k.append(nn.Parameter(bk))
        self.lora_B_v.append(nn.Parameter(bv))
        self.ranks.append(rank)
        self.alphas.append(alpha)

    @property
    def max_rank(self) -> int:
        return max(self.ranks)

    def _stacked(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """(N, 2R, d), (N, d_kv, R), (N, d_kv, R) in `dtype`, R = the largest rank: A^K in rows [0, r_k), A^V in
        rows [R, R + r_k), B in columns [0, r_k) and scaled by alpha_k / r_k; zeros elsewhere. Built once per call
        (no loop over experts in the matmuls that follow)."""
        big = self.max_rank
        a_list, bk_list, bv_list = [], [], []
        for a, bk, bv, r, s in zip(self.lora_A, self.lora_B_k, self.lora_B_v, self.ranks, self.scalings):
            if r != big:
                a = F.pad(a.unflatten(0, (2, r)), (0, 0, 0, big - r)).flatten(0, 1)
                bk, bv = F.pad(bk, (0, big - r)), F.pad(bv, (0, big - r))
            a_list.append(a)
            bk_list.append(bk * s)  # scaling folded in (in the weights' own dtype, fp32 for trained experts)
            bv_list.append(bv * s)
        return torch.stack(a_list).to(dtype), torch.stack(bk_list).to(dtype), torch.stack(bv_list).to(dtype)

    def forward_sample(self, h: Tensor, index: Tensor, gate: Tensor) -> tuple[Tensor, Tensor]:
        """One expert per sample. h (B, L, d), index (B,), gate (B,) -> dK, dV (B, L, d_kv)."""
        a, bk, bv = self._stacked(h.dtype)
        z = torch.bmm(h, a[index].transpose(1, 2))  # (B, L, 2R)
        z = z * gate.to(h.dtype)[:, None, None]
        zk, zv = z.split(a.shape[1] // 2, dim=-1)
        return torch.bmm(zk, bk[index].transpose(1, 2)), torch.bmm(zv, bv[index].transpose(1, 2))

    def forward_token(self, h: Tensor, index: Tensor, gate: Tensor) -> tuple[Tensor, Tensor]:
        """One expert per token, fused over experts. h (B, L, d), index (B, L), gate (B, L) -> dK, dV (B, L, d_kv)."""
        a, bk, bv = self._stacked(h.dtype)
        n, r = self.num_experts, a.shape[1] // 2
        z = (h @ a.reshape(n * 2 * r, self.dim).t()).unflatten(-1, (n, 2 * r))  # (B, L, N, 2R)
        select = F.one_hot(index, n).to(h.dtype) * gate.to(h.dtype).unsqueeze(-1)  # (B, L, N)
        z = z * select.unsqueeze(-1)
        zk, zv = z.split(r, dim=-1)  # (B, L, N, R) each
        bk_cat = bk.permute(1, 0, 2).reshape(self.kv_dim, n * r)  # (d_kv, N*R), expert-major like zk.flatten
        bv_cat = bv.permute(1, 0, 2).reshape(self.kv_dim, n * r)
        return zk.flatten(-2) @ bk_cat.t(), zv.flatten(-2) @ bv_cat.t()

    def expert_delta(self, k: int, h: Tensor) -> tuple[Tensor, Tensor]:
        """Ungated output of expert k (for export and tests): h (..., d) -> dK, dV (..., d_kv)."""
        a = self.lora_A[k].to(h.dtype)
        s = self.scalings[k]
        zk, zv = (h @ a.t()).split(self.ranks[k], dim=-1)
        return (zk @ self.lora_B_k[k].to(h.dtype).t()) * s, (zv @ self.lora_B_v[k].to(h.dtype).t()) * s


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

    def add_expert(self, warm_start: bool = False, rank: int | None = None, alpha: float | None = None) -> None:
        """A new expert (rank / alpha: see `KVExpertBank.add_expert`) and its router column."""
        self.experts.add_expert(warm_start=warm_start, rank=rank, alpha=alpha)
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

    def source_deltas(self, attn: nn.Module, h: Tensor) -> tuple[None, Tensor, Tensor, RoutingDecision]:
        """The block-adapter contract of ``attention.py``: (dQ = None, dK, dV, routing) for source tokens h (B, L, d).
        A bound method of the module (not a closure), so a compiled block reuses one graph for every block."""
        dk, dv, decision = self(h)
        return None, dk, dv, decision


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
