"""EMA of the trainable adapters (PRW experts + routers), kept by ``torch.optim.swa_utils.AveragedModel``.

``train.ema: {decay, start_step, every}`` turns it on. After optimizer step s (1-based) with s >= start_step and
(s - start_step) % every == 0, the average is updated by ``AveragedModel.update_parameters`` with
``get_ema_multi_avg_fn(decay)``: the first update copies the weights, every later one computes
ema <- decay * ema + (1 - decay) * w. Only the adapters are averaged, not the frozen base, so the average costs
one copy of the adapters (about 1.8 GB in fp32 for five rank-128 experts on flux-dev) and never a second base.
Lightning's own ``WeightAveraging`` callback would copy the whole LightningModule, base included.

The average is part of the callback's state in every checkpoint (resume reproduces it exactly), and the export
writes it as ``final/adapters_ema.safetensors`` beside the raw ``adapters.safetensors`` (the same format). The
pipeline and the bench generator load the EMA file when present (``use_ema``, default on); the next curriculum step
continues from the raw weights.
"""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def adapter_modules(transformer: nn.Module) -> nn.ModuleDict:
    """The transformer's adapters under the names they have in its state dict (``double_adapters``, ...)."""
    return nn.ModuleDict({"double_adapters": transformer.double_adapters, "single_adapters": transformer.single_adapters})


class AdapterEMA(L.Callback):
    """The EMA of ``pl_module.transformer``'s adapters (see the module docstring)."""

    def __init__(self, decay: float, start_step: int = 0, every: int = 1) -> None:
        self.decay, self.start_step, self.every = float(decay), int(start_step), int(every)
        self.average: Optional[AveragedModel] = None
        self._latest_update_step = 0
        self._pending_state: Optional[dict[str, Any]] = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Build the average on the training device (the model is there now), from a resumed state when there is one."""
        if self.average is None:
            self.average = AveragedModel(adapter_modules(pl_module.transformer), device=pl_module.device,
                                         use_buffers=False, multi_avg_fn=get_ema_multi_avg_fn(self.decay))
        if self._pending_state is not None:  # read from a checkpoint before the average existed
            self.average.load_state_dict(self._pending_state)
            self._pending_state = None

    def should_update(self, step: int) -> bool:
        """Whether optimizer step ``step`` (1-based) updates the average."""
        return step >= max(self.start_step, 1) and (step - max(self.start_step, 1)) % self.every == 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step  # optimizer steps so far; micro-batches of one step share it
        if step > self._latest_update_step and self.should_update(step):
            self.average.update_parameters(adapter_modules(pl_module.transformer))
            self._latest_update_step = step

    @property
    def last_update_step(self) -> int:
        """The optimizer step of the latest update (0: none yet)."""
        return self._latest_update_step

    @property
    def updates(self) -> int:
        return 0 if self.average is None else int(self.average.n_averaged)

    def adapter_state_dict(self) -> dict[str, Tensor]:
        """The averaged adapters, keyed as ``CoLoGenTransformer.adapter_state_dict`` (empty before any update)."""
        if self.average is None or not self.updates:
            return {}
        return {k[len("module."):]: v.detach() for k, v in self.average.state_dict().items() if k.startswith("module.")}

    def state_dict(self) -> dict[str, Any]:
        return {"latest_update_step": self._latest_update_step,
                "average": None if self.average is None else self.average.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._latest_update_step = int(state_dict["latest_update_step"])
        average = state_dict.get("average")
        if average is not None:
            if self.average is None:
                self._pending_state = average
            else:
                self.average.load_state_dict(average)


def ema_metadata(metadata: dict[str, Any], ema: AdapterEMA) -> dict[str, Any]:
    """Adapter-file metadata of the EMA export: the raw file's, plus what was averaged how."""
    return {**metadata, "ema": {"decay": ema.decay, "start_step": ema.start_step, "every": ema.every,
                                "updates": ema.updates, "last_update_step": ema.last_update_step}}


__all__ = ["AdapterEMA", "adapter_modules", "ema_metadata"]
