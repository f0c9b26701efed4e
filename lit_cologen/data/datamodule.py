"""The data loader: a LightningDataModule over WebDataset shards, or over the procedural Shapes-5 world.

Batch format (every loader, every mode)::

    key        list[str]
    task       list[str]                    one of TASKS
    prompt     list[str]                    templated for the model (tasks.format_prompt)
    raw_prompt list[str]                    caption / instruction as stored
    cond_type  list[str]                    "" unless task == "control"
    target     float32 (B, 3, H, W)         in [-1, 1]
    source     float32 (B, 3, H, W)         in [-1, 1]
    mask       float32 (B, 1, H, W)         in {0, 1}; zeros when the sample has no mask
    meta       list[dict]

H = W = ``data.resolution`` by default. With ``data.buckets`` (``auto`` or [[h, w], ...], see ``buckets.py``) every
sample is fitted to the bucket nearest its target's aspect ratio (source, mask and subject reference to the same
bucket) and every batch holds one bucket: (H, W) varies from batch to batch, never inside one. Encoded shards give
``target_latent`` / ``source_latent`` (B, C, h, w) instead of target / source / mask.

Training over shards (``source: shards``): each task gets its own stream of *resampled* shards (drawn with
replacement from the shards whose ``index.json`` entry lists that task; all shards when there is no index), filtered
to that task, shuffled in a buffer of raw (undecoded) samples, decoded; the streams are mixed by drawing the task
of every sample with the configured weights. Consumers (rank x DataLoader worker) see disjoint data: each takes
every C-th shard of a task when there are at least C shards, else every consumer reads all shards and keeps every
C-th sample of each (so it works with fewer shards than workers). Every consumer draws its own shard
sequence from ``seed``, the epoch, its rank and its worker id, and an epoch (``samples_per_epoch`` samples,
default: the indexed total of the active tasks) is reproducible. Rank and world size come from torch.distributed when it
is initialised (else the attached trainer, else 0 / 1), read in the main process when the loader is built (webdataset's
``single_node_only`` would refuse multi-node, and its env-based lookup can disagree with the process group).

Validation over held-out shards: fixed order, no resampling, finite. Shards are split by node and then by worker
(``rank * workers + worker``, round-robin) when there are at least as many shards as consumers; otherwise every
consumer reads all shards and keeps every C-th sample, so no consumer is left without data.

Robustness: nothing in a shard can crash the loader. Unreadable / truncated / empty shards, forbidden members
(``.pyd``, ``.pickle``, ``.pth`` ...: never read, the sample is refused), missing members, unknown tasks, bad
cond types, non-UTF-8 text, bad JSON, undecodable PNGs and wrong image sizes are skipped, counted and reported
with shard and key (``datamodule.skipped``; see ``shards.SkipLog``). Only the known members are decoded, with our
own PNG / JSON / UTF-8 decoding (PIL restricted to PNG); no pickle decoder is ever used.

The procedural mode (``source: shapes5``) streams Shapes-5 samples generated on the fly at ``data.resolution``:
training uses the ``train`` pool (a new set every epoch), validation ``val_samples`` fixed held-out samples.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from lit_cologen.utils.dist import dist_info

from ..config import check
from .config import DataConfig
from .datasets import (
    BatchDataset,
    EpochDataLoader,
    Shapes5EvalDataset,
    Shapes5TrainDataset,
    ShardEvalDataset,
    ShardTrainDataset,
    keep_batch,
)
from .shards import SkipLog, expand_shards, find_indexes, shard_task_counts
from .streams import TaskShards, encoded_latent_shapes, plan_task_shards

logger = logging.getLogger(__name__)


class CoLoGenDataModule(L.LightningDataModule):
    """Train / validation loaders for all five tasks, from shards or procedural Shapes-5 (see module docstring).

    ``skipped``: what the loaders refused so far ({"total", "by_kind", "reports": [{stage, kind, shard, key,
    message}]}). ``state_dict`` keeps the epoch counter for runs without a trainer.
    """

    def __init__(self, cfg: DataConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or DataConfig()
        self.skip_logs = {
            "train": SkipLog(max(1, self.cfg.num_workers), self.cfg.max_reports),
            "val": SkipLog(max(1, self.cfg.num_workers), self.cfg.max_reports),
        }
        self._train_plan: dict[str, TaskShards] | None = None
        self._train_counts: dict[str, dict[str, int] | None] = {}
        self._val_urls: list[str] = []
        self._train_loader: EpochDataLoader | None = None
        self._resume_epoch = 0

    # -------------------------------------------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        """Resolve shard lists and indexes (shards mode); cheap, no tar is opened."""
        if self.cfg.source != "shards" or self._train_plan is not None:
            return
        urls = expand_shards(self.cfg.train_shards)
        check(len(urls) > 0, "data.train_shards", f"no shards found for {self.cfg.train_shards}")
        if self.cfg.encoded:
            encoded_latent_shapes(self.cfg)  # a manifest for another resolution / buckets fails here, before any tar
        indexes = find_indexes(self.cfg.train_shards, self.cfg.train_index)
        self._train_counts = shard_task_counts(urls, indexes)
        unindexed = [u for u, c in self._train_counts.items() if c is None]
        if indexes and unindexed:
            logger.warning("%d shard(s) not in any index.json (e.g. %s): read by every task stream", len(unindexed), unindexed[0])
        if not indexes:
            logger.warning("no index.json for %s: every task stream reads every shard (build one: "
                           "`cologen data index DIR`)", self.cfg.train_shards)  # fmt: skip
        self._train_plan = plan_task_shards(urls, self._train_counts, list(self.cfg.weights()))
        for task, plan in self._train_plan.items():
            check(len(plan.urls) > 0, "data.tasks",
                  f"task {task!r} is active but no shard index lists it ({self.cfg.train_shards})")
        self._val_urls = expand_shards(self.cfg.val_shards) if self.cfg.val_shards else []

    def samples_per_epoch(self) -> int:
        """``data.samples_per_epoch``, else the indexed samples of the active tasks (shards), else 10000."""
        if self.cfg.samples_per_epoch is not None:
            return self.cfg.samples_per_epoch
        if self.cfg.source == "shards":
            self.setup()
            active = set(self.cfg.weights())
            total = sum(n for c in self._train_counts.values() if c for t, n in c.items() if t in active)
            if total > 0:
                return total
        return 10_000

    # ------------------------------------------------------------------------------------------------ loaders
    def _loader_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"num_workers": self.cfg.num_workers, "pin_memory": self.cfg.pin_memory}
        if self.cfg.num_workers > 0:
            kw["persistent_workers"] = self.cfg.persistent_workers
        return kw

    def train_dataloader(self) -> EpochDataLoader:
        self.setup("fit")
        rank, world = dist_info(self._trainer_or_none())
        skips = self.skip_logs["train"]
        if self.cfg.source == "shards":
            assert self._train_plan is not None
            ds: BatchDataset = ShardTrainDataset(self.cfg, self._train_plan, rank, world, skips, self.samples_per_epoch())
        else:
            ds = Shapes5TrainDataset(self.cfg, rank, world, skips, self.samples_per_epoch())
        trainer = self._trainer_or_none()
        if trainer is not None and trainer.global_step > 0:
            # resumed: this epoch's first batches were consumed before the checkpoint (fixed-length epochs)
            consumed = trainer.global_step * trainer.accumulate_grad_batches - trainer.current_epoch * len(ds)
            ds.resume_at(trainer.current_epoch, consumed)
        epoch_fn = (lambda: int(trainer.current_epoch)) if trainer is not None else None
        loader = EpochDataLoader(ds, epoch_fn=epoch_fn, **self._loader_kwargs())
        loader.set_epoch(self._train_loader._next_epoch if self._train_loader is not None else self._resume_epoch)
        self._train_loader = loader
        return loader

    def val_dataloader(self) -> DataLoader | list:
        self.setup("validate")
        rank, world = dist_info(self._trainer_or_none())
        skips = self.skip_logs["val"]
        if self.cfg.source == "shards":
            if not self._val_urls:
                return []
            ds: BatchDataset = ShardEvalDataset(self.cfg, self._val_urls, rank, world, skips)
        else:
            if self.cfg.val_samples == 0:
                return []
            ds = Shapes5EvalDataset(self.cfg, rank, world, skips)
        return DataLoader(ds, batch_size=None, collate_fn=keep_batch, **self._loader_kwargs())

    def test_dataloader(self) -> DataLoader | list:
        return self.val_dataloader()

    def _trainer_or_none(self) -> Any:
        try:
            return self.trainer
        except RuntimeError:
            return None

    # ---------------------------------------------------------------------------------------------- reporting
    @property
    def skipped(self) -> dict[str, Any]:
        """Everything the loaders skipped: {"total", "by_kind", "reports"} over train and val."""
        by_kind: dict[str, int] = {}
        reports = []
        for stage, log in self.skip_logs.items():
            s = log.summary()
            for k, v in s["by_kind"].items():
                by_kind[k] = by_kind.get(k, 0) + v
            reports.extend({"stage": stage, **r} for r in s["reports"])
        return {"total": sum(by_kind.values()), "by_kind": by_kind, "reports": reports}

    def state_dict(self) -> dict[str, Any]:
        return {"next_epoch": self._train_loader._next_epoch if self._train_loader is not None else 0}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._train_loader is not None:
            self._train_loader.set_epoch(int(state_dict.get("next_epoch", 0)))
        self._resume_epoch = int(state_dict.get("next_epoch", 0))
