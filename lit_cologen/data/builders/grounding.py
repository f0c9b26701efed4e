"""Generative image-grounding samples (paper 4.3, step 1): the output is the input image with the answer drawn on it.

Three tasks (``meta["ground_task"]``):

* ``box``      box detection referring: ``draw a <colour> box around <expression>``; target = image with the
  referred object's box outline drawn in that colour;
* ``mask``     mask segmentation referring: ``cover <expression> with a <colour> mask``; target = image with the
  object's mask alpha-blended in that colour;
* ``instance`` instance detection referring: ``draw a <colour> box around a <class>``; target = image with the box
  of one randomly chosen instance of that class.

Source = the clean image. Rendering is exact and documented: ``draw_box`` and ``blend_mask``.

Accepted layouts (see data/BUILDERS.md) for ``build_refcoco`` (RefCOCO, RefCOCO+, RefCOCOg):

* ``refer``:  ``refs.json`` (a JSON list / JSON lines conversion of ``refs(unc).p``, one object per ref with
  ``ref_id, ann_id, image_id, sentences[{sent}], category_id, split``) + ``instances.json`` (COCO format) + COCO
  train2014 images. We never unpickle ``refs(*).p``: convert it once yourself (instructions in BUILDERS.md).
* ``mdetr``:  MDETR's ``final_refcoco_train.json`` (COCO format; each ``images`` entry is one expression with
  ``caption`` and ``file_name``; its ``annotations`` are the referred object).
* ``parquet``: the Hugging Face ``lmms-lab/RefCOCO`` export (columns ``image, answer, bbox, segmentation,
  question_id, file_name``).

``build_lvis``: any COCO-format instances JSON (LVIS v1 ``lvis_v1_train.json``, COCO ``instances_train2017.json``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..schema import Sample
from ._common import (
    DataSourceError,
    ErrorPolicy,
    article,
    check_training_split,
    checked_training_files,
    eval_split_in_name,
    image_cell,
    image_folders,
    is_eval_split,
    iter_table_rows,
    limit_size,
    load_json_records,
    open_image,
    part_items,
    refuse_eval_splits,
    require_path,
    safe_key,
    sample_rng,
    take,
)
from .coco import CocoIndex, bbox_of_mask, decode_segmentation, resolve_image_file

#: Named colours used in grounding instructions (RGB).
GROUNDING_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "orange": (255, 128, 0),
    "purple": (128, 0, 255),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
}

GROUND_TASKS: tuple[str, ...] = ("box", "mask", "instance")

BOX_TEMPLATE = "draw a {colour} box around {expr}"
MASK_TEMPLATE = "cover {expr} with a {colour} mask"
INSTANCE_TEMPLATE = "draw a {colour} box around {article} {cls}"


# ------------------------------------------------------------------------------------------------------ rendering


def box_pixels(box_xywh: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """Inclusive pixel rectangle ``(x0, y0, x1, y1)`` of a COCO box ``[x, y, w, h]`` (float pixels).

    The box is rounded outward to whole pixels: ``x0 = floor(x)``, ``x1 = ceil(x + w) - 1`` (same for y), then
    clipped to the image. An integer box ``[10, 20, 30, 40]`` covers columns 10..39 and rows 20..59.
    """
    x, y, w, h = (float(v) for v in box_xywh)
    x0 = int(np.floor(x))
    y0 = int(np.floor(y))
    x1 = int(np.ceil(x + w)) - 1
    y1 = int(np.ceil(y + h)) - 1
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(width - 1, max(x1, x0)), min(height - 1, max(y1, y0))
    return x0, y0, x1, y1


def auto_line_width(width: int, height: int) -> int:
    """Default outline width: ``max(2, round(0.006 * max(W, H)))`` px (4 px at 640 px)."""
    return max(2, round(0.006 * max(width, height)))


def draw_box(
    image: Image.Image, box_xywh: Sequence[float], colour: tuple[int, int, int], line_width: int | None = None
) -> Image.Image:
    """Return a copy of ``image`` (RGB, H x W) with the outline of ``box_xywh`` drawn in ``colour``.

    The outline's outer edge is exactly ``box_pixels(box)``; the line is ``line_width`` px wide and grows inward.
    """
    out = image.convert("RGB").copy()
    w, h = out.size
    lw = line_width or auto_line_width(w, h)
    x0, y0, x1, y1 = box_pixels(box_xywh, w, h)
    ImageDraw.Draw(out).rectangle([x0, y0, x1, y1], outline=tuple(colour), width=lw)
    return out


def blend_mask(image: Image.Image, mask: np.ndarray, colour: tuple[int, int, int], alpha: float = 0.5) -> Image.Image:
    """Return ``image`` (RGB, H x W) with ``colour`` alpha-blended where ``mask`` (bool H x W) is set.

    ``out = round((1 - alpha) * image + alpha * colour)`` inside the mask, unchanged outside.
    """
    arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    m = np.asarray(mask).astype(bool)
    if m.shape != arr.shape[:2]:
        raise DataSourceError(f"mask shape {m.shape} does not match image (H, W) {arr.shape[:2]}")
    col = np.asarray(colour, dtype=np.float32)
    arr[m] = (1.0 - alpha) * arr[m] + alpha * col
    return Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), mode="RGB")


# ---------------------------------------------------------------------------------------------- sample assembly


class _Target:
    """One referred object: a box (COCO xywh, pixels) and optionally its mask (bool H x W)."""

    def __init__(self, box: Sequence[float] | None, mask: np.ndarray | None):
        if box is None and mask is not None:
            box = bbox_of_mask(mask)
        if box is None:
            raise DataSourceError("object has neither a box nor a non-empty mask")
        self.box = [float(v) for v in box]
        self.mask = mask


def _scale(image: Image.Image, targets: list[_Target], max_side: int | None) -> tuple[Image.Image, list[_Target]]:
    """Downscale the image and its objects (boxes scaled, masks nearest-resized) to ``max_side``."""
    img2 = limit_size(image, max_side)
    if img2.size == image.size:
        return image, targets
    sx = img2.size[0] / image.size[0]
    sy = img2.size[1] / image.size[1]
    out = []
    for t in targets:
        box = [t.box[0] * sx, t.box[1] * sy, t.box[2] * sx, t.box[3] * sy]
        mask = None
        if t.mask is not None:
            mask = np.asarray(Image.fromarray(t.mask.astype(np.uint8) * 255).resize(img2.size, Image.Resampling.NEAREST)) > 127
        out.append(_Target(box, mask))
    return img2, out


def render_grounding(
    key: str,
    image: Image.Image,
    task: str,
    targets: list[_Target],
    *,
    expression: str | None = None,
    class_name: str | None = None,
    colour: str,
    line_width: int | None,
    alpha: float,
    meta: dict[str, Any],
) -> Sample:
    """Assemble one grounding Sample: prompt from the task template, target drawn on ``image`` (RGB, H x W)."""
    rgb = GROUNDING_COLOURS[colour]
    w, h = image.size
    lw = line_width or auto_line_width(w, h)
    if task == "box":
        prompt = BOX_TEMPLATE.format(colour=colour, expr=expression)
        out = image
        for t in targets:
            out = draw_box(out, t.box, rgb, lw)
    elif task == "mask":
        prompt = MASK_TEMPLATE.format(colour=colour, expr=expression)
        union = np.zeros((h, w), dtype=bool)
        for t in targets:
            if t.mask is None:
                raise DataSourceError(f"sample {key}: mask task needs a segmentation")
            union |= t.mask
        out = blend_mask(image, union, rgb, alpha)
    elif task == "instance":
        prompt = INSTANCE_TEMPLATE.format(colour=colour, article=article(class_name or "object"), cls=class_name)
        out = draw_box(image, targets[0].box, rgb, lw)
    else:
        raise DataSourceError(f"unknown grounding task {task!r} (expected one of {GROUND_TASKS})")
    meta = dict(
        meta,
        ground_task=task,
        colour=colour,
        colour_rgb=list(rgb),
        boxes_xywh=[[round(v, 2) for v in t.box] for t in targets],
        line_width=lw if task != "mask" else None,
        alpha=alpha if task == "mask" else None,
    )
    if expression is not None:
        meta["expression"] = expression
    if class_name is not None:
        meta["class"] = class_name
    return Sample(key=key, task="ground", prompt=prompt, target=out, source=image.convert("RGB"), meta=meta).validate()


def _pick(rng: np.random.Generator, options: Sequence[str], weights: dict[str, float] | None) -> str:
    if len(options) == 1:
        return options[0]
    p = np.array([float((weights or {}).get(o, 1.0)) for o in options])
    if p.sum() <= 0:
        raise DataSourceError(f"task weights {weights} give zero total weight to {list(options)}")
    return str(options[int(rng.choice(len(options), p=p / p.sum()))])


def _check_tasks(tasks: Sequence[str], allowed: Sequence[str]) -> tuple[str, ...]:
    bad = [t for t in tasks if t not in allowed]
    if bad or not tasks:
        raise DataSourceError(f"tasks must be a non-empty subset of {tuple(allowed)}, got {tuple(tasks)}")
    return tuple(tasks)


def _colour(rng: np.random.Generator, colours: Sequence[str]) -> str:
    bad = [c for c in colours if c not in GROUNDING_COLOURS]
    if bad:
        raise DataSourceError(f"unknown colour(s) {bad}; known: {sorted(GROUNDING_COLOURS)}")
    return str(colours[int(rng.integers(len(colours)))])


def _clean_expr(text: str) -> str:
    return " ".join(str(text).strip().split())


@dataclass(frozen=True)
class _Style:
    """The options every grounding sample of a build shares: the tasks to draw from (with ``task_weights``), the
    colours, the outline width, the mask alpha and the size limit."""

    tasks: tuple[str, ...]
    task_weights: dict[str, float] | None
    colours: Sequence[str]
    line_width: int | None
    alpha: float
    max_side: int | None

    def render(
        self, key: str, image: Image.Image, task: str, targets: list[_Target], rng: np.random.Generator, **kw: Any
    ) -> Sample:
        """``render_grounding`` with a colour drawn from ``rng`` (``kw``: expression, class_name, meta)."""
        return render_grounding(
            key, image, task, targets, colour=_colour(rng, self.colours), line_width=self.line_width,
            alpha=self.alpha, **kw,
        )


# -------------------------------------------------------------------------------------------------------- RefCOCO


def _refcoco_layout(root: Path, layout: str) -> str:
    if layout != "auto":
        return layout
    if root.is_file():
        return "parquet" if root.suffix == ".parquet" else "mdetr"
    if any(root.glob("refs*.json")) or any(root.glob("refs*.jsonl")):
        return "refer"
    if any(root.glob("final_*.json")):
        return "mdetr"
    if any(root.rglob("*.parquet")):
        return "parquet"
    raise DataSourceError(
        f"RefCOCO: cannot tell the layout of {root}: expected refs.json + instances.json, a final_*.json (MDETR) or "
        f"*.parquet files (lmms-lab export); set option `layout`"
    )


def _default_coco_image_dirs(root: Path, images: str | Path | None) -> list[Path]:
    return image_folders(images, [
        root / "images" / "mscoco" / "images" / "train2014",
        root / "images" / "train2014",
        root / "train2014",
        root.parent / "images" / "mscoco" / "images" / "train2014",
        root.parent / "train2014",
        root / "images",
        root,
    ], what="images")


#: The partition REFER's refs file of each dataset is split by, by default: RefCOCO and RefCOCO+ ``unc``; RefCOCOg
#: ``umd`` (the usual RefCOCOg split, with val / test; ``google`` has val only).
DEFAULT_SPLIT_BY: dict[str, str] = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}


def _refs_file(root: Path, refs: Any, split_by: str | None, dataset: str) -> Path:
    """The refs file: ``refs`` if given, else the only ``refs*.json(l)`` under ``root``, else ``refs({split_by}).json``
    (``split_by`` default by dataset: ``DEFAULT_SPLIT_BY``); several files and no match is an error listing them."""
    if refs:
        return require_path(refs, "RefCOCO refs", option="refs", kind="file")
    found = sorted(root.glob("refs*.json")) + sorted(root.glob("refs*.jsonl"))
    if not found:
        raise DataSourceError(f"RefCOCO (refer layout): no refs*.json under {root}; set option `refs`")
    if len(found) == 1:
        return found[0]
    by = split_by or DEFAULT_SPLIT_BY.get(dataset.lower())
    match = [p for p in found if p.stem == f"refs({by})"]
    if not by or not match:
        raise DataSourceError(
            f"RefCOCO (refer layout): {root} holds several refs files {[p.name for p in found]} and option "
            f"`split_by` ({by!r}) names none of them; set `split_by` (e.g. umd, google, unc) or `refs`"
        )
    return match[0]


def _iter_refer(
    root: Path, refs: Any, instances: Any, images: Any, split: str | None, split_by: str | None, dataset: str,
    allow_eval_split: bool,
):
    refs_path = _refs_file(root, refs, split_by, dataset)
    records = load_json_records(refs_path)
    if split is None and not allow_eval_split:
        evals = sorted({str(r["split"]) for r in records if r.get("split") and is_eval_split(str(r["split"]))})
        refuse_eval_splits(evals, dataset=dataset, holder=refs_path.name, example="train")
    inst_path = require_path(instances or root / "instances.json", "RefCOCO instances", option="instances", kind="file")
    index = CocoIndex.load(inst_path)
    anns = {a["id"]: a for lst in index.anns_by_image.values() for a in lst}
    image_dirs = _default_coco_image_dirs(root, images)
    for i, ref in enumerate(records):
        where = f"{refs_path.name} ref {ref.get('ref_id', i)}"
        for k in ("ann_id", "image_id", "sentences"):
            if k not in ref:
                raise DataSourceError(f"{where}: missing field '{k}' (has {sorted(ref)})")
        if split and ref.get("split") not in (split, None):
            continue
        ann = anns.get(ref["ann_id"])
        if ann is None:
            raise DataSourceError(f"{where}: ann_id {ref['ann_id']} not in {inst_path}")
        entry = index.images.get(ref["image_id"])
        if entry is None:
            raise DataSourceError(f"{where}: image_id {ref['image_id']} not in {inst_path}")
        sents = [s.get("sent") or s.get("raw") for s in ref["sentences"] if isinstance(s, dict)]
        sents = [_clean_expr(s) for s in sents if s]

        def load(entry=entry, ann=ann, where=where):
            img = open_image(resolve_image_file(entry, image_dirs))
            h, w = index.image_size(entry, img.size)
            seg = ann.get("segmentation")
            mask = decode_segmentation(seg, h, w, where=where) if seg else None
            return img, [_Target(ann.get("bbox"), mask)]

        yield f"ref{ref.get('ref_id', i)}", sents, load, {"ref_id": ref.get("ref_id"), "image_id": ref["image_id"],
                                                         "ann_id": ref["ann_id"],
                                                         "category": index.class_name(ann.get("category_id"))}


def _iter_mdetr(root: Path, annotations: Any, images: Any, dataset: str, allow_eval_split: bool):
    if annotations:
        path = require_path(annotations, "MDETR annotations", option="annotations", kind="file")
    elif root.is_file():
        path = root
    else:
        found = sorted(root.glob("final_*.json"))
        train = [p for p in found if not eval_split_in_name(p)]
        path = (train or found or [None])[0]
    if path is None:
        raise DataSourceError(f"RefCOCO (mdetr layout): no final_*.json under {root}; set option `annotations`")
    check_training_split(None, dataset=dataset, allow_eval_split=allow_eval_split, source=path)
    index = CocoIndex.load(path)
    image_dirs = _default_coco_image_dirs(root if root.is_dir() else root.parent, images)
    for image_id in sorted(index.images, key=str):
        entry = index.images[image_id]
        where = f"{path.name} image entry {image_id}"
        caption = entry.get("caption")
        if not caption:
            raise DataSourceError(f"{where}: MDETR entries need a 'caption' (the referring expression)")
        anns = index.anns_by_image.get(image_id, [])
        if not anns:
            continue

        def load(entry=entry, anns=anns, where=where):
            img = open_image(resolve_image_file(entry, image_dirs))
            h, w = index.image_size(entry, img.size)
            targets = []
            for a in anns:
                seg = a.get("segmentation")
                mask = decode_segmentation(seg, h, w, where=f"{where}, annotation {a.get('id')}") if seg else None
                targets.append(_Target(a.get("bbox"), mask))
            return img, targets

        yield f"mdetr{image_id}", [_clean_expr(caption)], load, {
            "image_id": entry.get("original_id", image_id),
            "file": entry.get("file_name"),
        }


def _iter_lmms_parquet(root: Path, split: str | None, allow_eval_split: bool):
    files = checked_training_files(
        root, split, ("image", "answer", "bbox"), dataset="RefCOCO (parquet)", allow_eval_split=allow_eval_split,
        columns_dataset="RefCOCO (lmms-lab parquet)",
    )
    for f, i, row in iter_table_rows(files, ["question_id", "image", "answer", "bbox", "segmentation", "file_name"]):
        where = f"{f.name} row {i}"
        answers = row.get("answer")
        if isinstance(answers, str):
            answers = [answers]
        sents = [_clean_expr(a) for a in (answers or []) if a]

        def load(row=row, where=where, f=f):
            img = image_cell(row["image"], base_dir=f.parent, where=f"{where}, column 'image'")
            w, h = img.size
            seg = row.get("segmentation")
            mask = decode_segmentation(list(seg), h, w, where=where) if seg else None
            if row.get("bbox") is None:
                raise DataSourceError(f"{where}: column 'bbox' is null")
            return img, [_Target(row["bbox"], mask)]

        qid = row.get("question_id") or f"{f.stem}-{i}"
        yield f"q{qid}", sents, load, {"question_id": row.get("question_id"), "file": row.get("file_name")}


def build_refcoco(
    root: str | Path,
    *,
    layout: str = "auto",
    dataset: str = "refcoco",
    split: str | None = "train",
    refs: str | Path | None = None,
    split_by: str | None = None,
    instances: str | Path | None = None,
    annotations: str | Path | None = None,
    images: str | Path | None = None,
    tasks: Sequence[str] = ("box", "mask"),
    task_weights: dict[str, float] | None = None,
    per_expression: bool = True,
    colours: Sequence[str] = tuple(GROUNDING_COLOURS),
    line_width: int | None = None,
    alpha: float = 0.5,
    max_side: int | None = None,
    seed: int = 0,
    max_samples: int | None = None,
    part: int = 0,
    num_parts: int = 1,
    on_error: str = "raise",
    allow_eval_split: bool = False,
) -> Iterator[Sample]:
    """Box / mask referring samples from RefCOCO, RefCOCO+ or RefCOCOg (JSON or parquet conversions).

    Args:
        root: folder with the annotation files (or the MDETR JSON / a parquet file itself).
        layout: ``refer`` | ``mdetr`` | ``parquet`` | ``auto`` (by the files present).
        dataset: a label for keys and meta (``refcoco``, ``refcoco+``, ``refcocog``).
        split: ``refer``: keep refs with this ``split`` field; ``parquet``: the file prefix (``val``, ``testA``...);
            ignored by ``mdetr`` (one file per split).
        refs / instances: explicit files for the ``refer`` layout (default ``root/refs*.json``, ``root/instances.json``).
        split_by: ``refer`` layout with several refs files: which partition's file to read, ``refs({split_by}).json``
            (default ``DEFAULT_SPLIT_BY``: ``umd`` for RefCOCOg, ``unc`` for RefCOCO / RefCOCO+).
        annotations: explicit MDETR JSON.
        images: folder with the COCO train2014 images (default: searched under / next to ``root``).
        tasks: subset of ``("box", "mask")``; each sample draws one (weights ``task_weights``); ``mask`` is only
            drawn for objects with a segmentation.
        per_expression: one sample per referring expression (True) or one per object with a random expression.
        colours / line_width / alpha: rendering (``line_width`` None = ``auto_line_width``).
        allow_eval_split: let an evaluation split (``dev``, ``validation``, ``test``, ``val2017``...) into training
            samples; off by default, so the eval sets of the paper's tables never leak into training shards.
        max_side, seed, max_samples, part, num_parts, on_error: as in the other builders.

    Yields:
        ``Sample(task="ground")``.
    """
    style = _Style(_check_tasks(tasks, ("box", "mask")), task_weights, colours, line_width, alpha, max_side)
    root = require_path(root, "RefCOCO root", option="root")
    layout = _refcoco_layout(root, layout)
    items = _refcoco_items(
        root, layout, dataset, split, refs, split_by, instances, annotations, images, allow_eval_split
    )
    policy = ErrorPolicy(on_error, dataset)
    jobs = _refcoco_jobs(items, policy, style, dataset=dataset, layout=layout, per_expression=per_expression,
                         seed=seed, part=part, num_parts=num_parts)
    return take(policy.results(jobs), max_samples)


def _refcoco_items(
    root: Path, layout: str, dataset: str, split: str | None, refs: Any, split_by: str | None, instances: Any,
    annotations: Any, images: Any, allow_eval_split: bool,
) -> Iterator[tuple[str, list[str], Callable[[], tuple[Image.Image, list[_Target]]], dict[str, Any]]]:
    """The ``(item key, expressions, load, meta)`` items of a RefCOCO ``layout`` (read lazily; the ``refer``
    layout's split is checked at once)."""
    if layout == "refer":
        check_training_split(split, dataset=dataset, allow_eval_split=allow_eval_split)
        return _iter_refer(root, refs, instances, images, split, split_by, dataset, allow_eval_split)
    if layout == "mdetr":
        return _iter_mdetr(root, annotations, images, dataset, allow_eval_split)
    if layout == "parquet":
        return _iter_lmms_parquet(root, split, allow_eval_split)
    raise DataSourceError(f"RefCOCO: unknown layout {layout!r} (refer | mdetr | parquet | auto)")


def _refcoco_jobs(
    items: Iterator[Any], policy: ErrorPolicy, style: _Style, *, dataset: str, layout: str, per_expression: bool,
    seed: int, part: int, num_parts: int,
) -> Iterator[tuple[Callable[[], Sample], str]]:
    """The render jobs of the RefCOCO items of ``part``: load each item (under ``policy``), then one job per chosen
    expression (all, or one drawn by ``seed``), its task drawn among those its objects allow."""
    for _, (item_key, sents, load, meta) in part_items(items, part, num_parts):
        if not sents:
            continue
        base = safe_key(dataset, item_key)
        loaded = policy.guard(load, f"{dataset} {item_key}")
        if loaded is None:
            continue
        img, targets = loaded
        img, targets = _scale(img, targets, style.max_side)
        rng0 = sample_rng(seed, base)
        chosen = range(len(sents)) if per_expression else [int(rng0.integers(len(sents)))]
        for j in chosen:
            key = safe_key(base, j)
            rng = sample_rng(seed, key)
            has_mask = all(t.mask is not None and t.mask.any() for t in targets)
            options = [t for t in style.tasks if t != "mask" or has_mask]
            if not options:
                continue
            task = _pick(rng, options, style.task_weights)
            meta_j = dict(meta, dataset=dataset, layout=layout, expression_index=j)
            yield partial(style.render, key, img, task, targets, rng, expression=sents[j], meta=meta_j), (
                f"{dataset} sample {key}"
            )


# ----------------------------------------------------------------------------------------------------------- LVIS


def build_lvis(
    root: str | Path,
    *,
    split: str = "train",
    annotations: str | Path | None = None,
    images: str | Path | None = None,
    dataset: str = "lvis",
    tasks: Sequence[str] = ("instance", "box", "mask"),
    task_weights: dict[str, float] | None = None,
    min_box_frac: float = 0.001,
    colours: Sequence[str] = tuple(GROUNDING_COLOURS),
    line_width: int | None = None,
    alpha: float = 0.5,
    max_side: int | None = None,
    seed: int = 0,
    max_samples: int | None = None,
    part: int = 0,
    num_parts: int = 1,
    on_error: str = "raise",
    allow_eval_split: bool = False,
) -> Iterator[Sample]:
    """Grounding samples from a COCO-format instances JSON (LVIS v1, COCO): one sample per (image, class).

    For every class present in an image: if the class has exactly one (non-crowd) instance, the task is drawn from
    ``tasks`` (box / mask referring with the expression ``the <class>``, or instance detection); if it has several,
    the task is ``instance`` (a random instance of the class gets the box; instance detection referring).

    Args:
        root: folder with ``annotations`` (default ``lvis_v1_{split}.json`` under ``root`` or ``root/annotations``)
            and the COCO 2017 images (LVIS v1 entries carry only ``coco_url``: the file is looked up as
            ``<images>/<train2017|val2017>/<name>`` and ``<images>/<name>``).
        min_box_frac: instances whose box area is below this fraction of the image are ignored.
        allow_eval_split: let an evaluation split (``dev``, ``validation``, ``test``, ``val2017``...) into training
            samples; off by default, so the eval sets of the paper's tables never leak into training shards.
        Other options as in ``build_refcoco``.
    """
    style = _Style(_check_tasks(tasks, GROUND_TASKS), task_weights, colours, line_width, alpha, max_side)
    root = require_path(root, "LVIS root", option="root", kind="dir")
    ann_path = _lvis_annotation_file(root, annotations, split)
    check_training_split(split, dataset=dataset, allow_eval_split=allow_eval_split, source=ann_path)
    index = CocoIndex.load(ann_path)
    image_dirs = image_folders(images, (root, root / "images", root / "coco", root.parent), what="LVIS images")
    policy = ErrorPolicy(on_error, dataset)
    jobs = _lvis_jobs(index, image_dirs, policy, style, dataset=dataset, min_box_frac=min_box_frac, seed=seed,
                      part=part, num_parts=num_parts)
    return take(policy.results(jobs), max_samples)


def _lvis_annotation_file(root: Path, annotations: Any, split: str) -> Path:
    """``annotations`` if given, else the first of ``lvis_v1_{split}.json`` (under ``root`` or
    ``root/annotations``) and ``annotations/instances_{split}2017.json`` that exists."""
    if annotations:
        return require_path(annotations, "LVIS annotations", option="annotations", kind="file")
    cands = [root / f"lvis_v1_{split}.json", root / "annotations" / f"lvis_v1_{split}.json",
             root / "annotations" / f"instances_{split}2017.json"]
    ann_path = next((c for c in cands if c.is_file()), None)
    if ann_path is None:
        raise DataSourceError(f"LVIS: no annotation file (tried {[str(c) for c in cands]}); set option `annotations`")
    return ann_path


def _lvis_jobs(
    index: CocoIndex, image_dirs: list[Path], policy: ErrorPolicy, style: _Style, *, dataset: str,
    min_box_frac: float, seed: int, part: int, num_parts: int,
) -> Iterator[tuple[Callable[[], Sample | None], str]]:
    """One job per (image, class) of the images of ``part``: the image's non-crowd instances grouped by class,
    those whose box is below ``min_box_frac`` of the image left out."""
    for _, image_id in part_items(sorted(index.images, key=str), part, num_parts):
        anns = [a for a in index.anns_by_image.get(image_id, []) if not a.get("iscrowd", 0)]
        if not anns:
            continue
        entry = index.images[image_id]
        where = f"{dataset} image {image_id}"
        img = policy.guard(lambda: open_image(resolve_image_file(entry, image_dirs)), where)
        if img is None:
            continue
        h, w = index.image_size(entry, img.size)
        by_cat: dict[Any, list[dict[str, Any]]] = {}
        for a in anns:
            box = a.get("bbox")
            if box is None or box[2] * box[3] < min_box_frac * h * w:
                continue
            by_cat.setdefault(a.get("category_id"), []).append(a)
        for cat_id in sorted(by_cat, key=str):
            cls = index.class_name(cat_id)
            key = safe_key(dataset, image_id, cat_id)
            one = partial(
                _lvis_sample, style, key, img, (h, w), by_cat[cat_id], cls, sample_rng(seed, key),
                where=where, meta={"dataset": dataset, "image_id": image_id, "category_id": cat_id},
            )
            yield one, f"{where}, category {cat_id}"


def _lvis_sample(
    style: _Style, key: str, img: Image.Image, hw: tuple[int, int], insts: list[dict[str, Any]], cls: str,
    rng: np.random.Generator, *, where: str, meta: dict[str, Any],
) -> Sample | None:
    """The sample of one class of an image: with one instance, a task drawn from ``style.tasks`` (box / mask
    referring ``the <class>``, or instance detection); with several, instance detection of a random one. None when
    no task fits."""
    if len(insts) == 1:
        a = insts[0]
        seg = a.get("segmentation")
        options = [t for t in style.tasks if t != "mask" or seg]
    else:
        a = insts[int(rng.integers(len(insts)))]
        seg = a.get("segmentation")
        options = ["instance"] if "instance" in style.tasks else []
    if not options:
        return None
    task = _pick(rng, options, style.task_weights)
    h, w = hw
    mask = decode_segmentation(seg, h, w, where=f"{where}, annotation {a.get('id')}") if (
        seg and task == "mask") else None
    img2, targets = _scale(img, [_Target(a["bbox"], mask)], style.max_side)
    return style.render(
        key, img2, task, targets, rng,
        expression=f"the {cls}" if task != "instance" else None,
        class_name=cls, meta=dict(meta, ann_id=a.get("id"), num_instances=len(insts)),
    )


__all__ = [
    "GROUNDING_COLOURS",
    "GROUND_TASKS",
    "auto_line_width",
    "blend_mask",
    "box_pixels",
    "build_lvis",
    "build_refcoco",
    "draw_box",
    "render_grounding",
]
