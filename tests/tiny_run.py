"""Shared helpers of the training tests: the tiny CPU step's overrides and a per-step loss recorder."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch


def tiny_overrides(out: Path, steps: int = 4, **extra: object) -> list[str]:
    """Dotlist overrides of a tiny CPU step on procedural Shapes-5 (32 px, batch 2, checkpoint every 2 steps)."""
    base = {
        "name": "t", "output_dir": str(out), "model.preset": "tiny", "model.prw.rank": 4,
        "data.source": "shapes5", "data.resolution": 32, "data.batch_size": 2, "data.tasks": "[inpaint]",
        "data.val_samples": 4, "train.max_steps": steps, "train.global_batch": 2, "train.precision": "32-true",
        "train.accelerator": "cpu", "train.checkpoint_every": 2, "train.log_every": 1, "optim.warmup_steps": 1,
        "optim.lr": 1e-3,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


class LossRecorder(L.Callback):
    """Records the training loss of every global step."""

    def __init__(self):
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = float(outputs["loss"])


def write_two_expert_adapters(out: Path) -> Path:
    """A training-run-like adapter export in ``out``: the tiny preset with 2 experts (rank 4), non-zero expert weights
    and random routers (seeded), so that routing and expert outputs differ between inputs. Returns ``out``."""
    from lit_cologen.models.config import PRWConfig
    from lit_cologen.models.transformer import CoLoGenTransformer

    torch.manual_seed(0)
    model = CoLoGenTransformer.from_preset("tiny", PRWConfig(num_experts=1, rank=4))
    model.add_expert()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for adapter in model.adapters():
            bank = adapter.experts
            for k in range(bank.num_experts):
                for p in (bank.lora_B_k[k], bank.lora_B_v[k]):
                    p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            adapter.router.w_route.copy_(torch.randn(adapter.router.w_route.shape, generator=g))
    model.save_adapters(out)
    return out
