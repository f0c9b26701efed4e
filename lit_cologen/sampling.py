"""Flow-match Euler sampling of a CoLoGenTransformer (FLUX's scheduler, shift and embedded guidance).

Shared by the inference pipeline and the training-time sample grids. The source branch runs once per
conditioning through the source K/V cache (D3) unless `use_source_cache=False`.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from torch import Tensor

from lit_cologen.models.schedule import flux_scheduler, flux_shift_mu
from lit_cologen.models.transformer import CoLoGenTransformer


@torch.no_grad()
def denoise(
    transformer: CoLoGenTransformer,
    noise: Tensor,
    prompt_embeds: Tensor,
    pooled: Tensor,
    img_ids: Tensor,
    txt_ids: Tensor,
    num_steps: int = 28,
    guidance: Optional[float] = 3.5,
    source_tokens: Optional[Tensor] = None,
    source_ids: Optional[Tensor] = None,
    use_source_cache: bool = True,
    true_cfg_scale: float = 1.0,
    negative_embeds: Optional[Tensor] = None,
    negative_pooled: Optional[Tensor] = None,
    scheduler: Optional[FlowMatchEulerDiscreteScheduler] = None,
    callback: Optional[Callable[[int, int], None]] = None,
) -> Tensor:
    """Integrate the flow from noise (t = 1) to data (t = 0).

    noise (B, Lx, C) packed latent tokens; prompt_embeds (B, Ly, D); pooled (B, P); ids (L, 3); source_tokens
    (B, Lh, C). With `true_cfg_scale` > 1 a second pass uses the negative prompt. Returns (B, Lx, C) tokens.
    """
    scheduler = scheduler or flux_scheduler()
    sigmas = np.linspace(1.0, 1.0 / num_steps, num_steps)
    scheduler.set_timesteps(num_steps, sigmas=sigmas, mu=flux_shift_mu(noise.shape[1]), device=noise.device)
    dtype = noise.dtype
    b = noise.shape[0]
    g = None
    if transformer.base.config.guidance_embeds:
        g = torch.full((b,), float(guidance if guidance is not None else 1.0), device=noise.device, dtype=dtype)
    conds = [(prompt_embeds, pooled)]
    if true_cfg_scale > 1.0:
        if negative_embeds is None or negative_pooled is None:
            raise ValueError("true_cfg_scale > 1 needs negative_embeds and negative_pooled")
        conds.append((negative_embeds, negative_pooled))
    source_kwargs = []
    for _, pool in conds:
        if source_tokens is None:
            source_kwargs.append({})
        elif use_source_cache:
            source_kwargs.append({"source_cache": transformer.compute_source_cache(source_tokens, source_ids, pool, g)})
        else:
            source_kwargs.append({"source_hidden_states": source_tokens, "source_ids": source_ids})

    latents = noise
    timesteps = scheduler.timesteps
    for i, t in enumerate(timesteps):
        tt = t.expand(b).to(dtype) / 1000.0
        preds = [
            transformer(latents, emb, pool, tt, img_ids, txt_ids, guidance=g, **kw).sample
            for (emb, pool), kw in zip(conds, source_kwargs)
        ]
        v = preds[0] if len(preds) == 1 else preds[1] + true_cfg_scale * (preds[0] - preds[1])
        latents = scheduler.step(v, t, latents, return_dict=False)[0]
        if callback is not None:
            callback(i + 1, len(timesteps))
    return latents
