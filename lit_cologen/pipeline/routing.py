"""Which PRW expert each block chose for an image, read from the transformer's own outputs.

The pipeline does not return routing; every forward of :class:`~lit_cologen.models.transformer.CoLoGenTransformer`
does (``CoLoGenOutput.routing``: one :class:`~lit_cologen.models.prw.RoutingDecision` per routed block, double
blocks then single blocks). :class:`RoutingCapture` keeps the routing of the last forward of one pipeline call
through a PyTorch forward hook (``register_forward_hook``, removed when the ``with`` block ends), so nothing in the
model changes. With the source K/V cache (D3) every step reuses the routing of the source branch; without it the
last step's routing is kept.

:func:`routing_rows` turns it into one row per block for image ``i`` of the batch (default: the last)::

    sample routing:  [block, k*, softmax(w)_k*]          the expert the block chose and its gate (Eq. 3-4)
    token routing:   [block, k, share of tokens with k]  the expert chosen by most source tokens

Block names are the base's module names (``transformer_blocks.3``, ``single_transformer_blocks.0``).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from lit_cologen.models.prw import RoutingDecision
from lit_cologen.models.transformer import CoLoGenTransformer

__all__ = ["ROUTING_HEADERS", "RoutingCapture", "block_names", "routing_rows"]

#: the columns of :func:`routing_rows`
ROUTING_HEADERS: tuple[str, str, str] = ("block", "expert", "weight")


def block_names(transformer: CoLoGenTransformer) -> list[str]:
    """The names of the routed blocks, in the order of ``CoLoGenOutput.routing`` (double blocks, then single)."""
    return ([f"transformer_blocks.{i}" for i in range(len(transformer.double_adapters))]
            + [f"single_transformer_blocks.{i}" for i in range(len(transformer.single_adapters))])


class RoutingCapture:
    """``with RoutingCapture(pipe.transformer) as cap: pipe(...)``; then ``cap.decisions`` is the routing of the
    call's last transformer forward (empty for a model without PRW adapters)."""

    def __init__(self, transformer: nn.Module):
        self.transformer = transformer
        self.decisions: list[RoutingDecision] = []
        self._handle: Optional[torch.utils.hooks.RemovableHandle] = None

    def _keep(self, _module: nn.Module, _args: Any, output: Any) -> None:
        self.decisions = list(getattr(output, "routing", None) or [])

    def __enter__(self) -> "RoutingCapture":
        self.decisions = []
        self._handle = self.transformer.register_forward_hook(self._keep)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def routing_rows(decisions: list[RoutingDecision], names: list[str], image: int = -1) -> list[list[Any]]:
    """One ``[block, expert, weight]`` row per routed block for image ``image`` of the batch (see the module
    docstring); names that do not match the decisions' count fall back to ``block 0``, ``block 1``, ..."""
    if len(names) != len(decisions):
        names = [f"block {k}" for k in range(len(decisions))]
    rows = []
    for name, decision in zip(names, decisions):
        index = decision.index[image].cpu()
        if index.ndim == 0:  # sample routing: one expert for the image
            expert, weight = int(index), float(decision.weight[image])
        else:  # token routing: the expert most tokens chose, and their share
            counts = torch.bincount(index.flatten(), minlength=decision.probs.shape[-1])
            expert, weight = int(counts.argmax()), float(counts.max()) / max(1, index.numel())
        rows.append([name, expert, round(weight, 4)])
    return rows
