"""FrozenComponent: the base of every frozen, non-trainable part of a pipeline (codecs, text conditioners).

Frozen components stay in eval mode even when a parent module calls ``.train()`` (``train`` is overridden), and
hold no trainable parameter, so Lightning's optimiser / parameter counts never see them. To keep a component off
the training device (e.g. T5-XXL on CPU while embeddings are cached), do not register it as a submodule of the
LightningModule (Lightning would move it); keep it as a plain attribute and pass ``text_device`` /
``codec_device`` to :func:`lit_cologen.models.factory.build_components`.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)

DeviceLike = torch.device | str | int | None


class FrozenComponent(nn.Module):
    """Base for frozen components: no trainable parameter, always in eval mode.

    A non-persistent 0-d buffer (``_anchor``) follows ``.to(device / dtype)``, so ``device`` and ``dtype`` are
    defined even for a component without weights (:class:`PixelShuffleCodec`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def freeze(self) -> "FrozenComponent":
        """``requires_grad_(False)`` on every parameter and eval mode; returns ``self``."""
        self.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "FrozenComponent":  # noqa: D102 - documented in the class
        # Frozen: a parent's .train() must not switch dropout etc. back on.
        return super().train(False)

    @property
    def device(self) -> torch.device:
        """Device of the component's weights (of its anchor buffer when it has none)."""
        return self._anchor.device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype the component computes in."""
        return self._anchor.dtype
