"""Losses: rectified-flow velocity MSE (D10) and the veteran gate routing supervision (Eq. 8-10, D9).

Flow matching (FLUX convention): x_t = (1 - t) x0 + t eps, target v = eps - x0, t in [0, 1] (t = 1 is pure noise).
t is drawn logit-normal(0, 1) (or uniform / mode, diffusers' `compute_density_for_timestep_sampling`) and then
shifted for the image's token count exactly as FLUX's sampler does, so training and sampling see the same t's.
"""

from __future__ import annotations

import torch
from diffusers.training_utils import compute_density_for_timestep_sampling
from torch import Tensor

from lit_cologen.models.prw import RoutingDecision, newest_expert_usage
from lit_cologen.models.schedule import flux_shift_mu, shift_timesteps

TIMESTEP_SCHEMES = ("logit_normal", "uniform", "mode")


def sample_timesteps(batch: int, image_seq_len: int, scheme: str = "logit_normal", shift: bool = True,
                     logit_mean: float = 0.0, logit_std: float = 1.0, mode_scale: float = 1.29,
                     generator: torch.Generator | None = None) -> Tensor:
    """t (batch,) in (0, 1) for the flow-matching loss."""
    if scheme not in TIMESTEP_SCHEMES:
        raise ValueError(f"unknown timestep scheme {scheme!r}; expected one of {TIMESTEP_SCHEMES}")
    t = compute_density_for_timestep_sampling(scheme, batch, logit_mean=logit_mean, logit_std=logit_std,
                                              mode_scale=mode_scale, generator=generator)
    t = t.clamp(1e-4, 1 - 1e-4)
    return shift_timesteps(t, flux_shift_mu(image_seq_len)) if shift else t


def noisy_latents(x0: Tensor, noise: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """x_t = (1 - t) x0 + t eps and the velocity target eps - x0. x0, noise: (B, L, C); t: (B,)."""
    tt = t.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return (1 - tt) * x0 + tt * noise, noise - x0


def flow_matching_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Per-sample MSE (B,) on the noisy tokens, computed in fp32."""
    return (pred.float() - target.float()).square().flatten(1).mean(dim=1)


def veteran_loss(decisions: list[RoutingDecision], newest: int, alpha: float, rho: float,
                 estimator: str = "straight_through") -> tuple[Tensor, Tensor, Tensor]:
    """L_vet = alpha * |U_t - rho| (Eq. 9). Returns (loss, U_hard, U_soft).

    U_hard (Eq. 8) is the share of blocks (x samples / tokens) routed to the newest expert. Gradient (D9):
    ``straight_through``: U = U_hard + U_soft - stopgrad(U_soft) (value U_hard, gradient of U_soft);
    ``soft``: U = U_soft (mean softmax probability of the newest expert).
    """
    hard, soft = newest_expert_usage(decisions, newest)
    if estimator == "straight_through":
        usage = hard + soft - soft.detach()
    elif estimator == "soft":
        usage = soft
    else:
        raise ValueError(f"unknown veteran estimator {estimator!r} (straight_through | soft)")
    return alpha * (usage - rho).abs(), hard.detach(), soft.detach()
