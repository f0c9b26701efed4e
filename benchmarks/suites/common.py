"""Helpers shared by the suites' scorers: per-metric, per-subset accumulation into a ScoreOutput."""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch
from torch import Tensor

from ..harness import GenerationRequest, ScoreOutput
from ..metrics.similarity import SubsetMean

__all__ = ["MetricTable", "eval_set_of", "subsets_of"]


def eval_set_of(count: Any, found: int | None = None, selected: bool = False) -> dict[str, Any]:
    """The ``RequestList.eval_set`` of a loaded evaluation set: ``count`` is the loader's
    ``lit_cologen.data.evalsets.EvalCount``; ``found`` overrides its count after a selection (``--limit-items``,
    ``--subjects``...), and ``selected`` marks such a selection as a subset."""
    out = count.as_dict()
    if found is not None:
        out["found"] = int(found)
    out["subset"] = bool(out["subset"] or selected)
    return out


def subsets_of(request: GenerationRequest) -> list[str]:
    """The subsets a request belongs to: ``fields["subsets"]`` (list) and / or ``fields["subset"]`` (str)."""
    out = list(request.fields.get("subsets", []))
    if request.fields.get("subset"):
        out.insert(0, str(request.fields["subset"]))
    return out


class MetricTable:
    """Accumulates per-sample metric values into overall / per-subset means (torchmetrics, DDP-safe) and keeps the
    per-image values.

    ``subsets``: every subset name that can occur (fixed up front). ``add(metric, keys, values, subsets)``:
    ``keys`` identify the samples (request ids, or prompt ids for per-prompt metrics), ``values`` ``[N]``.
    """

    def __init__(self, metrics: Sequence[str], subsets: Sequence[str]):
        self.subset_names = list(dict.fromkeys(subsets))
        self._index = {s: i for i, s in enumerate(self.subset_names)}
        self.means = {m: SubsetMean(self.subset_names) for m in metrics}
        self.per_key: dict[str, dict[str, Any]] = {}

    def add(self, metric: str, keys: Sequence[str], values: Tensor | Sequence[float], subsets: Sequence[Sequence[str]]) -> None:
        values = torch.as_tensor(values, dtype=torch.float64).reshape(-1).cpu()
        if not (len(keys) == values.numel() == len(subsets)):
            raise ValueError(f"{metric}: {len(keys)} keys, {values.numel()} values, {len(subsets)} subset lists")
        if metric not in self.means:
            self.means[metric] = SubsetMean(self.subset_names)
        self.means[metric].update(values, [[self._index[s] for s in ss if s in self._index] for ss in subsets])
        for k, v in zip(keys, values.tolist()):
            self.per_key.setdefault(k, {"id": k})[metric] = v

    def output(self, extra: dict[str, Any] | None = None, metrics: dict[str, float] | None = None,
               unavailable: dict[str, str] | None = None) -> ScoreOutput:
        """Means of every metric (plus ``metrics`` given directly, e.g. dataset-level FID / mIoU). A metric of the
        table that got no value is listed in ``unavailable`` with ``unavailable[metric]`` as the reason (default:
        no request had what it needs)."""
        reasons = dict(unavailable or {})
        out = ScoreOutput(metrics={}, extra=dict(extra or {}))
        for name, m in self.means.items():
            with warnings.catch_warnings():  # a metric nothing fed (on this rank) is expected: it becomes unavailable
                warnings.filterwarnings("ignore", message=r"The ``compute`` method of metric .* before the ``update``")
                res = m.compute()  # on every rank, also when this rank saw no sample (DDP sync)
            if res["all"]["n"] == 0:
                if name not in (metrics or {}):
                    out.unavailable[name] = reasons.get(name, "no request had the inputs this metric needs")
                continue
            out.metrics[name] = res["all"]["mean"]
            out.counts[name] = res["all"]["n"]
            for s in self.subset_names:
                if res[s]["n"] > 0:
                    out.subsets.setdefault(s, {})[name] = res[s]["mean"]
                    out.counts[f"{s}/{name}"] = res[s]["n"]
        out.metrics.update(metrics or {})
        out.unavailable.update({k: v for k, v in reasons.items() if k not in out.metrics})
        out.per_image = list(self.per_key.values())
        return out
