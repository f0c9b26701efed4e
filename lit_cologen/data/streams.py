"""Per-task sample streams over shards: shard plans per task, resampled raw samples, buffer shuffle, decoding with
skip reports, the weighted task mixture and batching.

Training over shards: each task gets its own stream of *resampled* shards (drawn with replacement from the shards
whose ``index.json`` entry lists that task; all shards when there is no index), filtered to that task, shuffled in a
buffer of raw (undecoded) samples, decoded; the streams are mixed by drawing the task of every sample with the
configured weights (:func:`mixed`) and collated into batches (:func:`batched`; with ``data.buckets``,
:func:`~lit_cologen.data.buckets.bucketed`: one bucket per batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..config import check
from .buckets import nearest_bucket
from .config import DataConfig
from .decode import READ_MEMBERS, SkipSample, decode_raw, encoded_example, read_task
from .encoded import manifest_folder, read_manifest
from .examples import collate, example_from_sample
from .schema import TASKS
from .shards import RawSample, SkipLog, iter_shard

MAX_CONSECUTIVE_SKIPS = 10_000


def shuffled(items: Iterable[Any], bufsize: int, rng: np.random.Generator) -> Iterator[Any]:
    """Buffer shuffle: starts yielding once the buffer holds bufsize // 8 items, fills up to bufsize."""
    if bufsize <= 1:
        yield from items
        return
    buf: list[Any] = []
    start = max(1, bufsize // 8)
    for item in items:
        buf.append(item)
        if len(buf) >= bufsize or (len(buf) >= start and rng.random() < 0.5):
            j = int(rng.integers(len(buf)))
            buf[j], buf[-1] = buf[-1], buf[j]
            yield buf.pop()
    while buf:
        j = int(rng.integers(len(buf)))
        buf[j], buf[-1] = buf[-1], buf[j]
        yield buf.pop()


@dataclass
class TaskShards:
    """The shard URLs one task stream draws from, and which of them this stream reports shard problems for."""

    task: str
    urls: list[str]
    owned: set[str]


def plan_task_shards(urls: Sequence[str], counts: Mapping[str, dict[str, int] | None],
                     tasks: Sequence[str]) -> dict[str, TaskShards]:
    """Task -> TaskShards. A shard goes to every task its index entry lists (all tasks when unindexed); its
    problems are reported by exactly one stream (the first task listing it), so nothing is counted twice."""
    plan = {t: TaskShards(t, [], set()) for t in tasks}
    for u in urls:
        listed = [t for t in tasks if counts.get(u) is None or counts[u].get(t, 0) > 0]
        for t in listed:
            plan[t].urls.append(u)
        if listed:
            plan[listed[0]].owned.add(u)
    return plan


def task_samples(plan: TaskShards, skips: SkipLog, rng: np.random.Generator, consumers: int = 1,
                 me: int = 0) -> Iterator[RawSample]:
    """Raw samples of ``plan.task`` from its shards, resampled with replacement, forever.

    With ``consumers`` > 1 (fewer shards than consumers) every consumer reads every shard and keeps the task's
    samples at positions ``me, me + consumers, ...`` of each shard: disjoint across consumers, none left empty
    while a shard holds at least ``consumers`` samples of the task.

    Samples of other tasks are passed over silently (they belong to another stream); samples whose task cannot be
    read are reported once, by the stream that owns the shard. Raises RuntimeError when 20 * shards + 20 shards in
    a row give no sample of the task (every shard empty, unreadable or without the task).
    """
    n = len(plan.urls)
    fruitless = 0
    while True:
        url = plan.urls[int(rng.integers(n))]
        owner = url in plan.owned
        found = False
        position = 0
        for raw in iter_shard(url, skips, select=READ_MEMBERS.__contains__, report=owner):
            task = read_task(raw)
            if task == plan.task:
                mine = position % consumers == me
                position += 1
                if mine:
                    found = True
                    yield raw
            elif (task is None or task not in TASKS) and owner:
                yield raw  # decode_raw reports it (missing / undecodable / unknown task)
        fruitless = 0 if found else fruitless + 1
        if fruitless > 20 * n + 20:
            raise RuntimeError(
                f"task {plan.task!r}: {fruitless} shards in a row gave no usable sample (shards: {plan.urls[:5]}"
                f"{' ...' if n > 5 else ''}); skipped so far: {skips.counts()}"
            )


def encoded_latent_shapes(cfg: DataConfig) -> frozenset[tuple[int, int]] | None:
    """The latent shapes (h, w) promised by the manifest of ``cfg.train_shards`` (None without a local manifest):
    {(side, side)} for square shards, one per bucket for bucketed ones (``cologen data encode --buckets``).

    Raises ConfigError when the manifest was written for another ``data.resolution`` or other ``data.buckets``.
    """
    folder = manifest_folder(list(cfg.train_shards))
    if folder is None:
        return None
    manifest = read_manifest(folder)
    check(int(manifest["resolution"]) == cfg.resolution, "data.resolution",
          f"{cfg.resolution} differs from the encoded shards' resolution {manifest['resolution']} "
          f"({folder}/encoded.json): set data.resolution={manifest['resolution']} or re-encode")  # fmt: skip
    saved = manifest.get("buckets")
    saved = None if saved is None else [tuple(b) for b in saved]
    wanted = cfg.bucket_list()

    def said(buckets: list | None) -> str:
        return "square" if buckets is None else f"{len(buckets)} buckets {buckets[:3]}{' ...' if len(buckets) > 3 else ''}"

    check(saved == wanted, "data.buckets",
          f"gives {said(wanted)}, the encoded shards hold {said(saved)} ({folder}/encoded.json): set data.buckets "
          f"as `cologen data encode --buckets` was given (and data.bucket_step), or re-encode")  # fmt: skip
    if saved is None:
        return frozenset({(int(manifest["latent_side"]),) * 2})
    f = int(manifest["codec_factor"])
    return frozenset((h // f, w // f) for h, w in saved)


def decoded(
    raws: Iterable[RawSample], skips: SkipLog, cfg: DataConfig, crop: str, rng: np.random.Generator, task: str | None,
    latent_shapes: Collection[tuple[int, int]] | None = None,
) -> Iterator[dict[str, Any]]:
    """Decode raw samples into examples; every failure is reported to ``skips`` with shard and key.

    Images are fitted to ``data.resolution`` (square) or, with ``data.buckets``, to the bucket nearest the target's
    aspect ratio (source, mask and subject reference to the same bucket). ``latent_shapes``: with ``cfg.encoded``,
    the latent shapes the manifest promises (:func:`encoded_latent_shapes`).
    Raises RuntimeError after MAX_CONSECUTIVE_SKIPS failures in a row (a stream with nothing usable in it).
    """
    failures = 0
    buckets = cfg.bucket_list()
    for raw in raws:
        try:
            if cfg.encoded:
                example = encoded_example(raw, latent_shapes)
                if task is not None and example["task"] != task:
                    continue
            else:
                sample = decode_raw(raw, cfg.max_image_pixels)
                if task is not None and sample.task != task:  # an owned sample of another task: not ours to yield
                    continue
                size = cfg.resolution if buckets is None else nearest_bucket(buckets, *sample.target.size)
                example = example_from_sample(sample, size, crop, rng)
        except SkipSample as exn:
            skips.record(exn.kind, raw.shard, raw.key, str(exn))
            failures += 1
            if failures >= MAX_CONSECUTIVE_SKIPS:
                raise RuntimeError(f"{failures} samples in a row were skipped ({skips.counts()})") from None
            continue
        failures = 0
        yield example


def mixed(streams: Mapping[str, Iterator[dict[str, Any]]], probs: Mapping[str, float],
          rng: np.random.Generator) -> Iterator[dict[str, Any]]:
    """Draw the task of every example with ``probs``, then take the next example of that task's stream."""
    tasks = list(streams)
    cum = np.cumsum([probs[t] for t in tasks])
    cum /= cum[-1]
    while True:
        i = min(int(np.searchsorted(cum, rng.random(), side="right")), len(tasks) - 1)
        yield next(streams[tasks[i]])


def batched(examples: Iterable[dict[str, Any]], batch_size: int, n_batches: int | None = None) -> Iterator[dict[str, Any]]:
    """Collate consecutive examples into batches; the last partial batch is kept when the stream ends."""
    buf: list[dict[str, Any]] = []
    done = 0
    for e in examples:
        buf.append(e)
        if len(buf) == batch_size:
            yield collate(buf)
            buf = []
            done += 1
            if n_batches is not None and done >= n_batches:
                return
    if buf:
        yield collate(buf)
