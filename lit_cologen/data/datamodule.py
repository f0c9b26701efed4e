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

Training over shards (``source: shards``): each task gets its own stream of *resampled* shards (drawn with
replacement from the shards whose ``index.json`` entry lists that task; all shards when there is no index), filtered
to that task, shuffled in a buffer of raw (undecoded) samples, decoded; the streams are mixed by drawing the task
of every sample with the configured weights. Consumers (rank x DataLoader worker) see disjoint data: each takes
every C-th shard of a task when there are at least C shards, else every consumer reads all shards and keeps every
C-th sample of each (so it works with fewer shards than workers). Every consumer draws its own shard
sequence from ``seed``, the epoch, its rank and its worker id, and an epoch (``samples_per_epoch`` samples,
default: the indexed total of the active tasks) is reproducible. Rank and world size come from torch.distributed when it is initialised (else the attached trainer,
else 0 / 1), read in the main process when the loader is built (webdataset's ``single_node_only`` would refuse
multi-node, and its env-based lookup can disagree with the process group).

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

import ctypes
import io
import json
import logging
import itertools
import math
import multiprocessing as mp
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset

from ..config import check
from .schema import COND_TYPES, TASKS, Sample
from .shards import (
    RawSample,
    SkipLog,
    expand_shards,
    find_indexes,
    iter_shard,
    shard_task_counts,
)
from .encoded import LATENTS_MEMBER, load_latents, manifest_folder, read_manifest
from .tasks import format_prompt, source_layout

logger = logging.getLogger(__name__)

REQUIRED_MEMBERS: tuple[str, ...] = ("task.txt", "prompt.txt", "target.png", "source.png", "meta.json")
KNOWN_MEMBERS: frozenset[str] = frozenset(REQUIRED_MEMBERS + ("mask.png", "cond_type.txt"))
ENCODED_REQUIRED_MEMBERS: tuple[str, ...] = ("task.txt", "prompt.txt", "meta.json", LATENTS_MEMBER)
ENCODED_MEMBERS: frozenset[str] = frozenset(ENCODED_REQUIRED_MEMBERS + ("cond_type.txt",))
READ_MEMBERS: frozenset[str] = KNOWN_MEMBERS | ENCODED_MEMBERS  # what the loaders read into memory
#: members that can hold pickles (or arbitrary code): a sample carrying one is refused, its bytes never read
FORBIDDEN_EXTENSIONS: frozenset[str] = frozenset(
    {"pyd", "pickle", "pkl", "pth", "pt", "ckpt", "bin", "npy", "npz", "joblib", "dill", "mp", "msgpack", "torch"}
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MIN_IMAGE_SIDE = 8
MAX_CONSECUTIVE_SKIPS = 10_000


# ============================================================================================================= config


@dataclass
class DataConfig:
    """``data:`` section. Procedural Shapes-5 by default (no files needed)."""

    source: str = "shapes5"  # "shapes5" (procedural, no shards) or "shards"
    train_shards: list[str] = field(default_factory=list)  # folders, globs, brace patterns, pipe:/http(s)/s3 URLs
    val_shards: list[str] = field(default_factory=list)  # held-out shards; empty = no validation (shards mode)
    train_index: str | None = None  # index.json (path or URL); default: index.json of each local folder named
    tasks: list[str] = field(default_factory=lambda: list(TASKS))  # active tasks (lists replace on merge)
    task_weights: dict[str, float] = field(default_factory=dict)  # per active task; missing = 1.0
    resolution: int = 64  # output side (resize shorter side + crop)
    crop: str = "center"  # training crop: "center" or "random" (validation always center)
    batch_size: int = 8  # per device
    val_batch_size: int | None = None  # default: batch_size
    num_workers: int = 0
    shuffle_buffer: int = 256  # raw samples per task stream per worker; 0 = no shuffling
    samples_per_epoch: int | None = None  # default: indexed total of the active tasks (shards), 10000 (shapes5)
    val_samples: int = 100  # shapes5 mode: held-out samples per validation run
    val_split: str = "eval"  # shapes5 mode: the held-out split name
    seed: int = 0
    pin_memory: bool = False
    persistent_workers: bool = False
    max_image_pixels: int = 64_000_000  # larger images are refused (decompression bombs)
    max_reports: int = 64  # skip reports kept per worker (counts are always complete)
    encoded: bool = False  # shards hold VAE latents (`cologen data encode`), not images: see data/encoded.py

    def __post_init__(self) -> None:
        check(self.source in ("shapes5", "shards"), "data.source", f"must be 'shapes5' or 'shards', got {self.source!r}")
        if self.source == "shards":
            check(len(self.train_shards) > 0, "data.train_shards", "must list at least one shard spec when data.source=shards")
        check(self.source == "shards" or not (self.train_shards or self.val_shards), "data.source",
              f"is {self.source!r} (procedural) but data.train_shards / data.val_shards list shards; set "
              "data.source=shards to train on them, or remove the shard lists")
        check(len(self.tasks) > 0, "data.tasks", "must name at least one task")
        for t in self.tasks:
            check(t in TASKS, "data.tasks", f"unknown task {t!r} (expected some of {TASKS})")
        check(len(set(self.tasks)) == len(self.tasks), "data.tasks", f"lists a task twice: {self.tasks}")
        for t, w in self.task_weights.items():
            check(t in self.tasks, f"data.task_weights.{t}", f"task not in data.tasks {self.tasks}")
            check(float(w) >= 0, f"data.task_weights.{t}", f"must be >= 0, got {w}")
        check(sum(self.weights().values()) > 0, "data.task_weights", "the active tasks' weights must have a positive sum")
        check(self.resolution >= 16 and self.resolution % 8 == 0, "data.resolution",
              f"must be a multiple of 8 and >= 16, got {self.resolution}")  # fmt: skip
        check(self.crop in ("center", "random"), "data.crop", f"must be 'center' or 'random', got {self.crop!r}")
        check(self.batch_size >= 1, "data.batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.val_batch_size is None or self.val_batch_size >= 1, "data.val_batch_size", f"must be >= 1, got {self.val_batch_size}")
        check(self.num_workers >= 0, "data.num_workers", f"must be >= 0, got {self.num_workers}")
        check(self.shuffle_buffer >= 0, "data.shuffle_buffer", f"must be >= 0, got {self.shuffle_buffer}")
        check(self.samples_per_epoch is None or self.samples_per_epoch >= 1, "data.samples_per_epoch",
              f"must be >= 1, got {self.samples_per_epoch}")  # fmt: skip
        check(self.val_samples >= 0, "data.val_samples", f"must be >= 0, got {self.val_samples}")
        check(self.val_split != "train", "data.val_split", "must name a held-out split, not 'train'")
        check(self.max_image_pixels >= 64, "data.max_image_pixels", f"must be >= 64, got {self.max_image_pixels}")
        check(self.max_reports >= 0, "data.max_reports", f"must be >= 0, got {self.max_reports}")
        check(not (self.persistent_workers and self.num_workers == 0), "data.persistent_workers",
              "needs data.num_workers > 0")  # fmt: skip
        check(not self.encoded or self.source == "shards", "data.encoded",
              "pre-encoded latents come from shards: set data.source=shards (Shapes-5 is generated on the fly)")
        check(not (self.encoded and self.crop == "random"), "data.crop",
              "encoded shards hold centre crops (fixed at encoding time): use data.crop=center with data.encoded=true")

    def weights(self) -> dict[str, float]:
        """Active task -> weight (missing weights are 1.0), in TASKS order, weight-0 tasks dropped."""
        w = {t: float(self.task_weights.get(t, 1.0)) for t in TASKS if t in self.tasks}
        return {t: v for t, v in w.items() if v > 0}

    def probs(self) -> dict[str, float]:
        w = self.weights()
        total = sum(w.values())
        return {t: v / total for t, v in w.items()}


# ============================================================================================================ decoding


class SkipSample(Exception):
    """A sample that cannot be used: ``kind`` is one of shards.SKIP_KINDS."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _text(raw: RawSample, name: str) -> str:
    data = raw.members.get(name)
    if data is None:
        raise SkipSample("missing_member", f"no {name} member")
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError as exn:
        raise SkipSample("bad_text", f"{name} is not UTF-8: {exn}") from None


def read_task(raw: RawSample) -> str | None:
    """The sample's task text, or None when task.txt is missing or not UTF-8 (cheap: no image is decoded)."""
    try:
        return _text(raw, "task.txt")
    except SkipSample:
        return None


def _png(raw: RawSample, name: str, mode: str, max_pixels: int) -> Image.Image:
    data = raw.members.get(name)
    if data is None:
        raise SkipSample("missing_member", f"no {name} member")
    if not data.startswith(PNG_MAGIC):
        raise SkipSample("bad_image", f"{name} is not a PNG")
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            if im.width * im.height > max_pixels:
                raise SkipSample("bad_image", f"{name} is {im.width}x{im.height}, above {max_pixels} pixels")
            im.load()  # a full decode: truncated / corrupt data fails here
            return im if im.mode == mode else im.convert(mode)
    except SkipSample:
        raise
    except Exception as exn:  # noqa: BLE001 - PIL raises many types for corrupt data
        raise SkipSample("bad_image", f"{name} does not decode: {exn!r}") from None


def _check_text_members(raw: RawSample, required: Sequence[str]) -> tuple[str, str, str | None, dict]:
    """(task, prompt, cond_type, meta) of a raw sample, after the member checks shared by image and encoded shards."""
    bad = sorted({n for n in raw.names if n.rsplit(".", 1)[-1] in FORBIDDEN_EXTENSIONS})
    if bad:
        raise SkipSample("forbidden_member", f"refusing possibly-pickled member(s) {bad}")
    if raw.problem is not None:
        raise SkipSample(*raw.problem)
    missing = [m for m in required if m not in raw.members]
    if missing:
        raise SkipSample("missing_member", f"missing member(s) {missing}")
    task = _text(raw, "task.txt")
    if task not in TASKS:
        raise SkipSample("unknown_task", f"unknown task {task[:40]!r}")
    cond_type = _text(raw, "cond_type.txt") if "cond_type.txt" in raw.members else None
    if task == "control" and cond_type not in COND_TYPES:
        raise SkipSample("bad_cond_type" if cond_type is not None else "missing_member",
                         f"control sample needs cond_type in {COND_TYPES}, got {cond_type!r}")  # fmt: skip
    if task != "control" and cond_type is not None:
        raise SkipSample("bad_cond_type", f"cond_type {cond_type!r} on a {task} sample")
    prompt = _text(raw, "prompt.txt")
    try:
        meta = json.loads(raw.members["meta.json"].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exn:
        raise SkipSample("bad_meta", f"meta.json does not parse: {exn}") from None
    if not isinstance(meta, dict):
        raise SkipSample("bad_meta", f"meta.json must hold an object, got {type(meta).__name__}")
    return task, prompt, cond_type, meta


def encoded_example(raw: RawSample, latent_side: int | None = None) -> dict[str, Any]:
    """One raw sample of an encoded shard -> one example: ``target_latent`` / ``source_latent`` (C, h, w) plus the
    prompts and meta of :func:`example_from_sample` (no pixels, no mask). Raises SkipSample.

    ``latent_side``: the expected h = w (the manifest's resolution / codec factor); None skips that check.
    """
    task, prompt, cond_type, meta = _check_text_members(raw, ENCODED_REQUIRED_MEMBERS)
    try:
        latents = load_latents(raw.members[LATENTS_MEMBER])
    except ValueError as exn:
        raise SkipSample("bad_latents", str(exn)) from None
    target, source = latents["target"], latents["source"]
    if target.shape != source.shape:
        raise SkipSample("bad_size", f"target latents {tuple(target.shape)} and source latents {tuple(source.shape)} differ")
    if latent_side is not None and tuple(target.shape[1:]) != (latent_side, latent_side):
        raise SkipSample("bad_size", f"latents are {tuple(target.shape[1:])}, expected {latent_side}x{latent_side} "
                                     f"(data.resolution / codec factor): re-encode or fix data.resolution")  # fmt: skip
    return {
        "key": raw.key.rsplit("/", 1)[-1],
        "task": task,
        "prompt": format_prompt(task, prompt, cond_type),
        "raw_prompt": prompt,
        "cond_type": cond_type or "",
        "target_latent": target,
        "source_latent": source,
        "meta": meta,
    }


def decode_raw(raw: RawSample, max_pixels: int = 64_000_000) -> Sample:
    """Check and decode one raw shard sample into a schema Sample (PIL images); raises SkipSample.

    Only the known members are decoded (PNG / UTF-8 / JSON); a sample with a FORBIDDEN_EXTENSIONS member is refused.
    """
    task, prompt, cond_type, meta = _check_text_members(raw, REQUIRED_MEMBERS)
    target = _png(raw, "target.png", "RGB", max_pixels)
    source = _png(raw, "source.png", "RGB", max_pixels)
    mask = _png(raw, "mask.png", "L", max_pixels) if "mask.png" in raw.members else None
    for name, im in (("target", target), ("source", source)):
        if min(im.size) < MIN_IMAGE_SIDE:
            raise SkipSample("bad_size", f"{name} is {im.size[0]}x{im.size[1]}, below {MIN_IMAGE_SIDE} px")
    if source_layout(task) == "aligned" and target.size != source.size:
        raise SkipSample("bad_size", f"target {target.size} and source {source.size} differ on an aligned task")
    if mask is not None and mask.size != source.size:
        raise SkipSample("bad_size", f"mask {mask.size} does not match source {source.size}")
    return Sample(raw.key.rsplit("/", 1)[-1], task, prompt, target, source, mask, cond_type, meta)


def _crop_box(size: tuple[int, int], res: int, crop: str, rng: np.random.Generator | None) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """(resized (w, h), crop box) mapping an image of ``size`` onto res x res (shorter side -> res)."""
    w, h = size
    scale = res / min(w, h)
    rw, rh = max(res, round(w * scale)), max(res, round(h * scale))
    if crop == "random" and rng is not None:
        x0, y0 = int(rng.integers(0, rw - res + 1)), int(rng.integers(0, rh - res + 1))
    else:
        x0, y0 = (rw - res) // 2, (rh - res) // 2
    return (rw, rh), (x0, y0, x0 + res, y0 + res)


def _fit(im: Image.Image, resized: tuple[int, int], box: tuple[int, int, int, int], resample: int) -> Image.Image:
    if im.size != resized:
        im = im.resize(resized, resample, reducing_gap=None if resample == Image.NEAREST else 2.0)
    if (0, 0) + im.size != box:
        im = im.crop(box)
    return im


def _image_tensor(im: Image.Image) -> torch.Tensor:
    """PIL RGB -> uint8 (3, H, W) (a read-only view of one copy of the pixels; collate copies it again)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.asarray(im, dtype=np.uint8)).permute(2, 0, 1)


def example_from_sample(
    sample: Sample, resolution: int, crop: str = "center", rng: np.random.Generator | None = None
) -> dict[str, Any]:
    """One Sample -> one example: target / source uint8 (3, R, R), mask uint8 (1, R, R) in {0, 1}, prompts, meta.

    Aligned sources (and the mask) get the target's resize + crop; a subject reference is centre-cropped on its own.
    Examples stay uint8 (4x less to shuffle and copy); :func:`collate` converts whole batches to float.
    """
    resized, box = _crop_box(sample.target.size, resolution, crop, rng)
    target = _fit(sample.target, resized, box, Image.BICUBIC)
    if source_layout(sample.task) == "aligned":
        source = _fit(sample.source, resized, box, Image.BICUBIC)
        mask_geom = (resized, box)
    else:
        mask_geom = _crop_box(sample.source.size, resolution, "center", None)
        source = _fit(sample.source, *mask_geom, Image.BICUBIC)
    if sample.mask is not None:
        m = _fit(sample.mask, *mask_geom, Image.NEAREST)
        mask = torch.from_numpy((np.asarray(m, dtype=np.uint8) >= 128).view(np.uint8))[None]
    else:
        mask = torch.zeros(1, resolution, resolution, dtype=torch.uint8)
    return {
        "key": sample.key,
        "task": sample.task,
        "prompt": format_prompt(sample.task, sample.prompt, sample.cond_type),
        "raw_prompt": sample.prompt,
        "cond_type": sample.cond_type or "",
        "target": _image_tensor(target),
        "source": _image_tensor(source),
        "mask": mask,
        "meta": sample.meta,
    }


def collate(examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Examples -> the batch dict: target / source float32 (B, 3, R, R) in [-1, 1] (x / 127.5 - 1), mask float32
    (B, 1, R, R) in {0, 1}, everything else as lists. Encoded examples give ``target_latent`` / ``source_latent``
    (B, C, h, w) instead of target / source / mask."""
    batch: dict[str, Any] = {}
    for k in ("key", "task", "prompt", "raw_prompt", "cond_type", "meta"):
        batch[k] = [e[k] for e in examples]
    if "target_latent" in examples[0]:  # encoded shards: latents (B, C, h, w) in their stored dtype, no pixels
        for k in ("target_latent", "source_latent"):
            batch[k] = torch.stack([e[k] for e in examples])
        return batch
    for k in ("target", "source"):
        out = torch.empty((len(examples),) + tuple(examples[0][k].shape), dtype=torch.float32)
        for i, e in enumerate(examples):
            out[i].copy_(e[k])  # uint8 (3, H, W) view -> float32 in one pass
        batch[k] = out.div_(127.5).sub_(1.0)
    batch["mask"] = torch.stack([e["mask"] for e in examples]).float()
    return batch


def _identity(batch: Any) -> Any:
    return batch


# ============================================================================================================ streams


def dist_info(trainer: Any = None) -> tuple[int, int]:
    """(rank, world size): torch.distributed when initialised, else the Lightning trainer's, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    if trainer is not None:
        return int(getattr(trainer, "global_rank", 0)), int(getattr(trainer, "world_size", 1))
    return 0, 1


def worker_info() -> tuple[int, int]:
    """(worker id, number of workers) of the current DataLoader worker; (0, 1) in the main process."""
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (int(info.id), int(info.num_workers))


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


def plan_task_shards(urls: Sequence[str], counts: Mapping[str, dict[str, int] | None], tasks: Sequence[str]) -> dict[str, TaskShards]:
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


def encoded_latent_side(cfg: DataConfig) -> int | None:
    """The latent side h = w promised by the manifest of ``cfg.train_shards`` (None without a local manifest).

    Raises ConfigError when the manifest was written for another ``data.resolution``.
    """
    folder = manifest_folder(list(cfg.train_shards))
    if folder is None:
        return None
    manifest = read_manifest(folder)
    check(int(manifest["resolution"]) == cfg.resolution, "data.resolution",
          f"{cfg.resolution} differs from the encoded shards' resolution {manifest['resolution']} "
          f"({folder}/encoded.json): set data.resolution={manifest['resolution']} or re-encode")  # fmt: skip
    return int(manifest["latent_side"])


def decoded(
    raws: Iterable[RawSample], skips: SkipLog, cfg: DataConfig, crop: str, rng: np.random.Generator, task: str | None,
    latent_side: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Decode raw samples into examples; every failure is reported to ``skips`` with shard and key.

    ``latent_side``: with ``cfg.encoded``, the latent side the manifest promises (:func:`encoded_latent_side`).
    Raises RuntimeError after MAX_CONSECUTIVE_SKIPS failures in a row (a stream with nothing usable in it).
    """
    failures = 0
    for raw in raws:
        try:
            if cfg.encoded:
                example = encoded_example(raw, latent_side)
                if task is not None and example["task"] != task:
                    continue
            else:
                sample = decode_raw(raw, cfg.max_image_pixels)
                if task is not None and sample.task != task:  # an owned sample of another task: not ours to yield
                    continue
                example = example_from_sample(sample, cfg.resolution, crop, rng)
        except SkipSample as exn:
            skips.record(exn.kind, raw.shard, raw.key, str(exn))
            failures += 1
            if failures >= MAX_CONSECUTIVE_SKIPS:
                raise RuntimeError(f"{failures} samples in a row were skipped ({skips.counts()})") from None
            continue
        failures = 0
        yield example


def mixed(streams: Mapping[str, Iterator[dict[str, Any]]], probs: Mapping[str, float], rng: np.random.Generator) -> Iterator[dict[str, Any]]:
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


def _epoch_value(epoch: int = 0):
    return mp.RawValue(ctypes.c_int64, epoch)


# ============================================================================================================ datasets


class _BatchDataset(IterableDataset):
    """Base: an IterableDataset yielding ready batches, with a shared epoch counter and a SkipLog."""

    def __init__(self, cfg: DataConfig, rank: int, world: int, skips: SkipLog, batch_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.rank, self.world = rank, world
        self.skips = skips
        self.batch_size = batch_size
        self.epoch = _epoch_value(0)
        self.num_workers = max(1, cfg.num_workers)
        self.latent_side = encoded_latent_side(cfg) if cfg.encoded else None  # read once, not per stream

    def set_epoch(self, epoch: int) -> None:
        self.epoch.value = int(epoch)

    def _worker(self) -> tuple[int, int]:
        """(worker id, workers) as this dataset's streams are keyed; train datasets rotate it on resume."""
        return worker_info()

    def _seed(self, *extra: int) -> np.random.Generator:
        w, _ = self._worker()
        return np.random.default_rng([self.cfg.seed, int(self.epoch.value), self.rank, w, *extra])


class _TrainDataset(_BatchDataset):
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


class ShardTrainDataset(_TrainDataset):
    """Weighted mixture of per-task resampled shard streams (see the module docstring)."""

    def __init__(self, cfg: DataConfig, plan: Mapping[str, TaskShards], rank: int, world: int, skips: SkipLog, samples_per_epoch: int) -> None:
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
            streams[task] = decoded(raws, self.skips, self.cfg, self.cfg.crop, rng, task, self.latent_side)
        skip = self._skip_batches()
        examples = itertools.islice(mixed(streams, self.probs, self._seed(0)), skip * self.batch_size, None)
        yield from batched(examples, self.batch_size, self.batches_per_worker - skip)


class ShardEvalDataset(_BatchDataset):
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
        examples = (e for e in decoded(self._raws(), self.skips, self.cfg, "center", None, None, self.latent_side) if e["task"] in self.tasks)
        yield from batched(examples, self.batch_size)


class Shapes5TrainDataset(_TrainDataset):
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
                yield example_from_sample(sample, self.cfg.resolution)

        yield from batched(examples(), self.batch_size, self.batches_per_worker - skip)


class Shapes5EvalDataset(_BatchDataset):
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
                sample = make_sample(tasks[p % len(tasks)], p // len(tasks), self.cfg.val_split, self.cfg.resolution, self.cfg.seed)
                yield example_from_sample(sample, self.cfg.resolution)

        yield from batched(examples(), self.batch_size)

    def __len__(self) -> int:
        consumers = self.world * self.num_workers
        positions = [range(self.rank * self.num_workers + w, self.cfg.val_samples, consumers) for w in range(self.num_workers)]
        return sum(math.ceil(len(p) / self.batch_size) for p in positions)


# ========================================================================================================= DataLoader


class EpochDataLoader(DataLoader):
    """A DataLoader over a batch-yielding dataset that tells the dataset its epoch before each pass.

    The epoch is ``epoch_fn()`` when given (the datamodule passes the trainer's current epoch), else a counter of
    passes starting at ``set_epoch``'s value. Workers read it from shared memory when their iterator starts, so
    it works with and without persistent workers.
    """

    def __init__(self, dataset: _BatchDataset, epoch_fn=None, **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=None, collate_fn=_identity, **kwargs)
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


# ========================================================================================================= DataModule


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
            encoded_latent_side(self.cfg)  # a manifest for another resolution fails here, before any tar is opened
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
            check(len(plan.urls) > 0, "data.tasks", f"task {task!r} is active but no shard index lists it ({self.cfg.train_shards})")
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
            ds: _BatchDataset = ShardTrainDataset(self.cfg, self._train_plan, rank, world, skips, self.samples_per_epoch())
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
            ds: _BatchDataset = ShardEvalDataset(self.cfg, self._val_urls, rank, world, skips)
        else:
            if self.cfg.val_samples == 0:
                return []
            ds = Shapes5EvalDataset(self.cfg, rank, world, skips)
        return DataLoader(ds, batch_size=None, collate_fn=_identity, **self._loader_kwargs())

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


__all__ = [
    "CoLoGenDataModule",
    "DataConfig",
    "EpochDataLoader",
    "ShardEvalDataset",
    "ShardTrainDataset",
    "Shapes5EvalDataset",
    "Shapes5TrainDataset",
    "SkipSample",
    "collate",
    "decode_raw",
    "dist_info",
    "example_from_sample",
]
