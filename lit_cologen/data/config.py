"""The ``data:`` config section (:class:`DataConfig`): where samples come from, tasks and weights, resolution,
batching, workers, and the limits of the robust shard reader. Checked on construction (``ConfigError`` naming the
key); imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import check
from .buckets import Bucket, resolve_buckets
from .schema import TASKS


@dataclass
class DataConfig:
    """``data:`` section. Procedural Shapes-5 by default (no files needed)."""

    source: str = "shapes5"  # "shapes5" (procedural, no shards) or "shards"
    train_shards: list[str] = field(default_factory=list)  # folders, globs, brace patterns, pipe:/http(s)/s3 URLs
    val_shards: list[str] = field(default_factory=list)  # held-out shards; empty = no validation (shards mode)
    train_index: str | None = None  # index.json (path or URL); default: index.json of each local folder named
    tasks: list[str] = field(default_factory=lambda: list(TASKS))  # active tasks (lists replace on merge)
    task_weights: dict[str, float] = field(default_factory=dict)  # per active task; missing = 1.0
    resolution: int = 64  # output side (resize shorter side + crop); with buckets: the pixel budget resolution^2
    buckets: Any = None  # None: square resolution; "auto" | [[h, w], ...]: aspect-ratio buckets (data/buckets.py)
    bucket_step: int = 16  # bucket sides are multiples of this (FLUX: codec factor 8 x 2x2 packing; tiny: 4)
    bucket_max_ratio: float = 4.0  # "auto": long side / short side at most this
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
        check(self.bucket_step >= 2 and self.bucket_step % 2 == 0, "data.bucket_step",
              f"must be an even int >= 2, got {self.bucket_step}")
        check(self.bucket_max_ratio >= 1, "data.bucket_max_ratio", f"must be >= 1, got {self.bucket_max_ratio}")
        self.bucket_list()  # ConfigError naming data.buckets / data.buckets[i]
        check(self.crop in ("center", "random"), "data.crop", f"must be 'center' or 'random', got {self.crop!r}")
        check(self.batch_size >= 1, "data.batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.val_batch_size is None or self.val_batch_size >= 1, "data.val_batch_size",
              f"must be >= 1, got {self.val_batch_size}")
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

    def bucket_list(self) -> list[Bucket] | None:
        """The aspect-ratio buckets (h, w) in pixels, or None for the square ``resolution`` (data/buckets.py)."""
        return resolve_buckets(self.buckets, self.resolution, self.bucket_step, self.bucket_max_ratio)

    def weights(self) -> dict[str, float]:
        """Active task -> weight (missing weights are 1.0), in TASKS order, weight-0 tasks dropped."""
        w = {t: float(self.task_weights.get(t, 1.0)) for t in TASKS if t in self.tasks}
        return {t: v for t, v in w.items() if v > 0}

    def probs(self) -> dict[str, float]:
        w = self.weights()
        total = sum(w.values())
        return {t: v / total for t, v in w.items()}
