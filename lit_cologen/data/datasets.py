"""The batch-yielding datasets (shards and procedural Shapes-5, train and held-out) and the epoch-aware DataLoader.

Consumers (rank x DataLoader worker) see disjoint data: for training, each takes every C-th shard of a task when
there are at least C shards, else every consumer reads all shards and keeps every C-th sample of each (so it works
with fewer shards than workers). Every consumer draws its own shard sequence from ``seed``, the epoch, its rank and
its worker id, and an epoch (``samples_per_epoch`` samples) is reproducible; a resumed epoch skips the batches it
already consumed (by replaying the epoch's example stream from its start without collating the consumed batches:
with ``data.buckets`` the replay also rebuilds the partially filled buckets exactly). Held-out shards: fixed order,
no resampling, finite, split by node and then by worker (``rank * workers + worker``, round-robin) when there are
at least as many shards as consumers, else every consumer reads all shards and keeps every C-th sample.
"""

from __future__ import annotations

import ctypes
import itertools
import math
import multiprocessing as mp
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from torch.utils.data import DataLoader, IterableDataset

from lit_cologen.utils.dist import worker_info

from .buckets import bucketed, nearest_bucket
from .config import DataConfig
from .decode import READ_MEMBERS, read_task
from .examples import example_from_sample
from .schema import TASKS
from .shards import RawSample, SkipLog, iter_shard
from .streams import TaskShards, batched, decoded, encoded_latent_shapes, mixed, shuffled, task_samples


def keep_batch(batch: Any) -> Any:
    """The DataLoader ``collate_fn`` of the datasets here: they yield ready batches, kept as they are."""
    return batch


def _epoch_value(epoch: int = 0):
    """An int64 in shared memory: the epoch, set in the main process, read by the workers when their pass starts."""
    return mp.RawValue(ctypes.c_int64, epoch)


class BatchDataset(IterableDataset):
    """Base: an IterableDataset yielding ready batches, with a shared epoch counter and a SkipLog."""

    def __init__(self, cfg: DataConfig, rank: int, world: int, skips: SkipLog, batch_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.rank, self.world = rank, world
        self.skips = skips
        self.batch_size = batch_size
        self.epoch = _epoch_value(0)
        self.num_workers = max(1, cfg.num_workers)
        self.latent_shapes = encoded_latent_shapes(cfg) if cfg.encoded else None  # read once, not per stream
        self.buckets = cfg.bucket_list()
        # Shapes-5 samples are square: with buckets they all go to the bucket nearest 1:1
        self.square_size = cfg.resolution if self.buckets is None else nearest_bucket(self.buckets, 1, 1)

    def set_epoch(self, epoch: int) -> None:
        self.epoch.value = int(epoch)

    def _worker(self) -> tuple[int, int]:
        """(worker id, workers) as this dataset's streams are keyed; train datasets rotate it on resume."""
        return worker_info()

    def _seed(self, *extra: int) -> np.random.Generator:
        w, _ = self._worker()
        return np.random.default_rng([self.cfg.seed, int(self.epoch.value), self.rank, w, *extra])


class TrainDataset(BatchDataset):
    """Fixed-length epochs: each (rank, worker) yields ``batches_per_worker`` batches."""

    def __init__(self, cfg: DataConfig, rank: int, world: int, skips: SkipLog, samples_per_epoch: int) -> None:
        super().__init__(cfg, rank, world, skips, cfg.batch_size)
        self.samples_per_epoch = samples_per_epoch
        per_rank = math.ceil(samples_per_epoch / (cfg.batch_size * world))
        self.batches_per_worker = max(1, math.ceil(per_rank / self.num_workers))
        self.resume_epoch, self.resume_batches = -1, 0

    def __len__(self) -> int:
        return self.batches_per_worker * self.num_workers

    def resume_at(self, epoch: int, batches: int) -> None:
        """Start epoch `epoch` after its first `batches` batches (of this rank), as an uninterrupted run would."""
        self.resume_epoch, self.resume_batches = int(epoch), max(0, int(batches))

    def _resuming(self) -> bool:
        return int(self.epoch.value) == self.resume_epoch and self.resume_batches > 0

    def _worker(self) -> tuple[int, int]:
        """The loader takes batch i of an epoch from worker i % num_workers and always starts at worker 0, so a
        loader resumed after k batches lets its worker w play the role of worker (w + k) % num_workers."""
        w, nw = worker_info()
        return ((w + self.resume_batches) % nw, nw) if self._resuming() else (w, nw)

    def _skip_batches(self) -> int:
        """Batches this worker skips when resuming: those of its role among the first `resume_batches`."""
        if not self._resuming():
            return 0
        w, nw = self._worker()
        return max(0, math.ceil((self.resume_batches - w) / nw))


class ShardTrainDataset(TrainDataset):
    """Weighted mixture of per-task resampled shard streams (see :mod:`lit_cologen.data.streams` and this module's docstring)."""

    def __init__(self, cfg: DataConfig, plan: Mapping[str, TaskShards], rank: int, world: int, skips: SkipLog,
                 samples_per_epoch: int) -> None:
        super().__init__(cfg, rank, world, skips, samples_per_epoch)
        self.plan = dict(plan)
        self.probs = cfg.probs()

    def consumer_plan(self, plan: TaskShards, consumers: int, me: int) -> tuple[TaskShards, bool]:
        """This consumer's share of a task's shards, so that ranks and workers see disjoint data: every C-th shard
        when there are at least C shards, else all shards with a split by sample position (returns True then)."""
        if consumers <= 1:
            return plan, False
        if len(plan.urls) >= consumers:
            urls = plan.urls[me::consumers]
            return TaskShards(plan.task, urls, plan.owned & set(urls)), False
        return plan, True

    def __iter__(self) -> Iterator[dict[str, Any]]:
        streams = {}
        w, nw = self._worker()
        consumers, me = self.world * nw, self.rank * nw + w
        for ti, task in enumerate(TASKS):
            if task not in self.probs:
                continue
            rng = self._seed(1 + ti)
            plan, by_sample = self.consumer_plan(self.plan[task], consumers, me)
            raws = task_samples(plan, self.skips, rng, *((consumers, me) if by_sample else (1, 0)))
            raws = shuffled(raws, self.cfg.shuffle_buffer, rng)
            streams[task] = decoded(raws, self.skips, self.cfg, self.cfg.crop, rng, task, self.latent_shapes)
        skip = self._skip_batches()
        examples = mixed(streams, self.probs, self._seed(0))
        if self.buckets is not None:  # one bucket per batch; the replay of the skipped batches refills the buckets
            yield from bucketed(examples, self.batch_size, self.batches_per_worker - skip, skip=skip, flush=False)
            return
        examples = itertools.islice(examples, skip * self.batch_size, None)
        yield from batched(examples, self.batch_size, self.batches_per_worker - skip)


class ShardEvalDataset(BatchDataset):
    """Held-out shards in fixed order, finite, center crops; split by shard (or by sample when shards are few)."""

    def __init__(self, cfg: DataConfig, urls: Sequence[str], rank: int, world: int, skips: SkipLog) -> None:
        super().__init__(cfg, rank, world, skips, cfg.val_batch_size or cfg.batch_size)
        self.urls = list(urls)
        self.tasks = set(cfg.weights())

    def _raws(self) -> Iterator[RawSample]:
        w, nw = worker_info()
        consumers, me = self.world * nw, self.rank * nw + w
        by_shard = len(self.urls) >= consumers
        urls = self.urls[me::consumers] if by_shard else self.urls
        position = 0
        for url in urls:
            for raw in iter_shard(url, self.skips, select=READ_MEMBERS.__contains__, report=by_shard or me == 0):
                mine = by_shard or position % consumers == me
                position += 1
                task = read_task(raw)
                if mine and (task in self.tasks or task not in TASKS):
                    yield raw

    def __iter__(self) -> Iterator[dict[str, Any]]:
        examples = (e for e in decoded(self._raws(), self.skips, self.cfg, "center", None, None, self.latent_shapes)
                    if e["task"] in self.tasks)
        if self.buckets is not None:  # one bucket per batch; the partial buckets are flushed at the end
            yield from bucketed(examples, self.batch_size)
            return
        yield from batched(examples, self.batch_size)


class Shapes5TrainDataset(TrainDataset):
    """Procedural training stream: Shapes-5 ``train`` samples generated on the fly, a new set every epoch.

    Consumer c of C (= rank * workers + worker) takes, for each task, indices epoch * N * C + j * C + c
    (j = 0, 1, ...), N = batches_per_worker * batch_size (its most samples per epoch): disjoint across consumers
    and epochs.
    """

    def __iter__(self) -> Iterator[dict[str, Any]]:
        w, nw = self._worker()
        consumers, me = self.world * nw, self.rank * nw + w
        per_consumer = self.batches_per_worker * self.batch_size  # most samples one consumer draws in an epoch
        base = int(self.epoch.value) * per_consumer * consumers
        probs = self.cfg.probs()
        tasks = list(probs)
        cum = np.cumsum([probs[t] for t in tasks])
        cum /= cum[-1]
        rng = self._seed(0)
        counters = dict.fromkeys(tasks, 0)
        skip = self._skip_batches()

        def examples() -> Iterator[dict[str, Any]]:
            from .shapes import make_sample

            to_skip = skip * self.batch_size  # resumed mid-epoch: draw the same tasks and indices, render nothing
            while True:
                task = tasks[min(int(np.searchsorted(cum, rng.random(), side="right")), len(tasks) - 1)]
                index = base + counters[task] * consumers + me
                counters[task] += 1
                if to_skip:
                    to_skip -= 1
                    continue
                sample = make_sample(task, index, "train", self.cfg.resolution, self.cfg.seed)
                yield example_from_sample(sample, self.square_size)  # one size: skipping examples is exact

        yield from batched(examples(), self.batch_size, self.batches_per_worker - skip)


class Shapes5EvalDataset(BatchDataset):
    """Procedural held-out set: positions 0 .. val_samples - 1 of split ``val_split``; position p is task
    active[p % T], index p // T (equal counts per task, fixed order); consumers take every C-th position."""

    def __init__(self, cfg: DataConfig, rank: int, world: int, skips: SkipLog) -> None:
        super().__init__(cfg, rank, world, skips, cfg.val_batch_size or cfg.batch_size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from .shapes import make_sample

        w, nw = worker_info()
        consumers, me = self.world * nw, self.rank * nw + w
        tasks = list(self.cfg.weights())

        def examples() -> Iterator[dict[str, Any]]:
            for p in range(me, self.cfg.val_samples, consumers):
                sample = make_sample(tasks[p % len(tasks)], p // len(tasks), self.cfg.val_split, self.cfg.resolution,
                                     self.cfg.seed)
                yield example_from_sample(sample, self.square_size)

        yield from batched(examples(), self.batch_size)

    def __len__(self) -> int:
        consumers = self.world * self.num_workers
        positions = [range(self.rank * self.num_workers + w, self.cfg.val_samples, consumers) for w in range(self.num_workers)]
        return sum(math.ceil(len(p) / self.batch_size) for p in positions)



class EpochDataLoader(DataLoader):
    """A DataLoader over a batch-yielding dataset that tells the dataset its epoch before each pass.

    The epoch is ``epoch_fn()`` when given (the datamodule passes the trainer's current epoch), else a counter of
    passes starting at ``set_epoch``'s value. Workers read it from shared memory when their iterator starts, so
    it works with and without persistent workers.
    """

    def __init__(self, dataset: BatchDataset, epoch_fn=None, **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=None, collate_fn=keep_batch, **kwargs)
        self._epoch_fn = epoch_fn
        self._next_epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self._next_epoch = int(epoch)

    def __iter__(self):
        epoch = self._epoch_fn() if self._epoch_fn is not None else None
        if epoch is None:
            epoch = self._next_epoch
        self.dataset.set_epoch(epoch)
        self._next_epoch = epoch + 1
        return super().__iter__()
