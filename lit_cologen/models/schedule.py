"""The flow-matching schedule of FLUX.1: its scheduler and its resolution-dependent time shift.

One record of the shift constants (base / max shift over 256 .. 4096 image tokens), used by the training loss (to draw
t as the sampler will see it) and by sampling (the scheduler's dynamic shift).

Convention: t in [0, 1], t = 1 is pure noise; the shift maps t -> e^mu / (e^mu + 1/t - 1) with mu linear in the
number of image tokens.
"""

from __future__ import annotations

import math

from diffusers import FlowMatchEulerDiscreteScheduler
from torch import Tensor

#: FLUX.1's scheduler settings (its ``scheduler/scheduler_config.json``)
NUM_TRAIN_TIMESTEPS = 1000
BASE_SEQ_LEN, MAX_SEQ_LEN = 256, 4096
BASE_SHIFT, MAX_SHIFT = 0.5, 1.15


def flux_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """FLUX.1's scheduler configuration (dynamic, resolution-dependent shift)."""
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=3.0, use_dynamic_shifting=True, base_shift=BASE_SHIFT,
        max_shift=MAX_SHIFT, base_image_seq_len=BASE_SEQ_LEN, max_image_seq_len=MAX_SEQ_LEN,
    )


def flux_shift_mu(image_seq_len: int, base_seq_len: int = BASE_SEQ_LEN, max_seq_len: int = MAX_SEQ_LEN,
                  base_shift: float = BASE_SHIFT, max_shift: float = MAX_SHIFT) -> float:
    """FLUX's resolution-dependent shift mu: linear in the number of image tokens (diffusers' `calculate_shift`)."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return image_seq_len * m + (base_shift - m * base_seq_len)


def shift_timesteps(t: Tensor, mu: float) -> Tensor:
    """Time shift of FLUX's scheduler (exponential): t' = e^mu / (e^mu + 1/t - 1). Monotone, keeps 0 and 1.
    t: any shape, values in [0, 1]."""
    return math.exp(mu) / (math.exp(mu) + (1.0 / t.clamp_min(1e-6) - 1.0))
