"""Raw shard samples -> checked samples: member checks and our own PNG / UTF-8 / JSON decoding.

Nothing in a shard can crash the loader: forbidden members (``.pyd``, ``.pickle``, ``.pth`` ...: never read, the
sample is refused), missing members, unknown tasks, bad cond types, non-UTF-8 text, bad JSON, undecodable PNGs and
wrong image sizes raise :class:`SkipSample` (its ``kind`` is one of ``shards.SKIP_KINDS``), which the streams count
and report with shard and key. PIL is restricted to PNG; no pickle decoder is ever used.

:func:`decode_raw` gives a schema :class:`~lit_cologen.data.schema.Sample` (PIL images) of an image shard;
:func:`encoded_example` gives a ready example (latents (C, h, w), prompts, meta) of an encoded shard.
"""

from __future__ import annotations

import io
import json
from typing import Any, Collection, Sequence

from PIL import Image

from .encoded import LATENTS_MEMBER, load_latents
from .schema import COND_TYPES, TASKS, Sample
from .shards import RawSample
from .tasks import format_prompt, source_layout

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


def encoded_example(raw: RawSample, latent_shapes: Collection[tuple[int, int]] | None = None) -> dict[str, Any]:
    """One raw sample of an encoded shard -> one example: ``target_latent`` / ``source_latent`` (C, h, w) plus the
    prompts and meta of :func:`example_from_sample` (no pixels, no mask). Raises SkipSample.

    ``latent_shapes``: the allowed (h, w) (the manifest's resolution / codec factor, or one per bucket); None skips
    that check.
    """
    task, prompt, cond_type, meta = _check_text_members(raw, ENCODED_REQUIRED_MEMBERS)
    try:
        latents = load_latents(raw.members[LATENTS_MEMBER])
    except ValueError as exn:
        raise SkipSample("bad_latents", str(exn)) from None
    target, source = latents["target"], latents["source"]
    if target.shape != source.shape:
        raise SkipSample("bad_size", f"target latents {tuple(target.shape)} and source latents {tuple(source.shape)} differ")
    if latent_shapes is not None and tuple(target.shape[1:]) not in latent_shapes:
        shapes = sorted(latent_shapes)
        expected = " or ".join(f"{h}x{w}" for h, w in shapes[:4]) + (" ..." if len(shapes) > 4 else "")
        raise SkipSample("bad_size", f"latents are {tuple(target.shape[1:])}, expected {expected} (data.resolution "
                                     f"or data.buckets / codec factor): re-encode or fix the config")  # fmt: skip
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
