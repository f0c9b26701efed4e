"""Aspect-ratio buckets (``data.buckets``): the bucket list, the bucket of an image, and one-bucket-at-a-time batching.

A bucket is a training size (h, w) in pixels with both sides multiples of ``step`` (``data.bucket_step``, default
16 = FLUX's codec factor 8 x its 2 x 2 token packing) and at most the token budget of ``resolution x resolution``
pixels (the square setting's), so every bucket costs about the same per sample.

* :func:`auto_buckets` enumerates them the way kohya / SimpleTuner do: for every side that is a multiple of
  ``step``, the largest other side within the budget, aspect ratios within [1 / max_ratio, max_ratio], dominated
  sizes (another bucket at least as tall and as wide) dropped.
* :func:`resolve_buckets` turns the config value (None | "auto" | [[h, w], ...]) into the checked list.
* :func:`nearest_bucket`: the bucket nearest an image's aspect ratio (log scale); ties go to the earlier bucket.
* :func:`bucketed`: examples -> batches of one bucket each (a per-bucket accumulator; a batch leaves when its bucket
  holds ``batch_size`` examples). It is a pure function of the example order, so an exact resume replays it: the
  partial buckets at batch k are what the first k batches' examples left behind (:mod:`lit_cologen.data.datasets`).

Imports nothing heavy (no torch at module level): the config checks use it.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Iterator, Sequence

from ..config import check

Bucket = tuple[int, int]  # (height, width) in pixels
DEFAULT_STEP = 16  # FLUX: codec factor 8 x 2 x 2 packing = 16 pixels per token side
DEFAULT_MAX_RATIO = 4.0


def auto_buckets(resolution: int, step: int = DEFAULT_STEP, max_ratio: float = DEFAULT_MAX_RATIO) -> list[Bucket]:
    """Buckets (h, w) with h, w multiples of ``step``, h * w <= resolution ** 2, max(h, w) / min(h, w) <= max_ratio,
    none dominated by another; sorted by aspect ratio w / h (tall first). Square ``resolution`` is one of them when
    ``resolution`` is a multiple of ``step``."""
    budget = resolution * resolution
    cands: set[Bucket] = set()
    side = step
    while side * step <= budget:
        other = (budget // side) // step * step
        for h, w in ((side, other), (other, side)):
            if max(h, w) <= max_ratio * min(h, w):
                cands.add((h, w))
        side += step
    frontier = [b for b in cands if not any(o != b and o[0] >= b[0] and o[1] >= b[1] for o in cands)]
    return sorted(frontier, key=lambda b: (b[1] / b[0], b[0]))


def resolve_buckets(spec: Any, resolution: int, step: int = DEFAULT_STEP,
                    max_ratio: float = DEFAULT_MAX_RATIO) -> list[Bucket] | None:
    """The config value ``data.buckets`` -> the bucket list (None: square ``resolution``, no bucketing).

    ``spec``: None | "auto" | [[h, w], ...]. Explicit entries must be two positive ints, multiples of ``step``, with
    h * w <= resolution ** 2; raises ConfigError naming ``data.buckets[i]`` (or ``data.buckets``).
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        check(spec == "auto", "data.buckets", f"must be null, 'auto' or a list of [height, width], got {spec!r}")
        buckets = auto_buckets(resolution, step, max_ratio)
        check(len(buckets) > 0, "data.buckets", f"'auto' finds no bucket of multiples of {step} within "
                                                f"{resolution}x{resolution} pixels: lower data.bucket_step")
        return buckets
    check(isinstance(spec, (list, tuple)) and len(spec) > 0, "data.buckets",
          f"must be null, 'auto' or a non-empty list of [height, width], got {spec!r}")
    out: list[Bucket] = []
    for i, entry in enumerate(spec):
        key = f"data.buckets[{i}]"
        ok = (isinstance(entry, (list, tuple)) and len(entry) == 2
              and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in entry))
        check(ok, key, f"must be [height, width] (two positive ints), got {entry!r}")
        h, w = int(entry[0]), int(entry[1])
        check(h % step == 0 and w % step == 0, key,
              f"{h}x{w}: both sides must be multiples of data.bucket_step={step} (codec factor x 2 x 2 packing)")
        check(h * w <= resolution * resolution, key,
              f"{h}x{w} = {h * w} pixels exceeds the budget of data.resolution^2 = {resolution * resolution}")
        check((h, w) not in out, key, f"{h}x{w} is listed twice")
        out.append((h, w))
    return out


def parse_buckets(text: str | None) -> Any:
    """A command-line value -> a ``data.buckets`` spec: None / "" -> None, "auto", or "HxW,HxW,..." -> [[h, w], ...].

    Raises ValueError for anything else."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    if text == "auto":
        return "auto"
    try:
        return [[int(v) for v in part.lower().split("x")] for part in text.split(",")]
    except ValueError:
        raise ValueError(f"buckets {text!r}: expected 'auto' or HEIGHTxWIDTH[,HEIGHTxWIDTH...] (e.g. 512x768,768x512)") from None


def nearest_bucket(buckets: Sequence[Bucket], width: int, height: int) -> Bucket:
    """The bucket whose aspect ratio is nearest (in log ratio) that of a ``width`` x ``height`` image (PIL order)."""
    ratio = math.log(width / height)
    return min(buckets, key=lambda b: abs(math.log(b[1] / b[0]) - ratio))


def example_bucket(example: dict[str, Any]) -> Bucket:
    """The (h, w) an example was made at: of ``target`` (3, h, w), or of ``target_latent`` (C, h, w) (encoded)."""
    t = example["target_latent"] if "target_latent" in example else example["target"]
    return int(t.shape[-2]), int(t.shape[-1])


def bucketed(examples: Iterable[dict[str, Any]], batch_size: int, n_batches: int | None = None, skip: int = 0,
             flush: bool = True) -> Iterator[dict[str, Any]]:
    """Collate examples into batches of one bucket each: a batch of bucket b leaves when b holds ``batch_size``.

    ``skip``: the first ``skip`` batches are formed but not collated nor yielded (a resumed epoch replays them, so
    the partial buckets are exactly those of the uninterrupted run). ``n_batches``: stop after that many yielded
    batches (the partial buckets are dropped). ``flush``: when the stream ends, the partial buckets are yielded
    too, in the order their buckets first appeared (a finite held-out stream keeps every sample).

    Yields:
        collated batches (:func:`~lit_cologen.data.examples.collate`): every tensor (B, *, h, w) of one bucket.
    """
    from .examples import collate

    pending: dict[Bucket, list[dict[str, Any]]] = {}
    formed = done = 0
    if n_batches is not None and n_batches <= 0:
        return
    for e in examples:
        buf = pending.setdefault(example_bucket(e), [])
        buf.append(e)
        if len(buf) < batch_size:
            continue
        ready = buf[:]
        buf.clear()
        formed += 1
        if formed <= skip:
            continue
        yield collate(ready)
        done += 1
        if n_batches is not None and done >= n_batches:
            return
    if flush:
        for buf in pending.values():
            if buf:
                yield collate(buf)
