"""Mask-inpainting samples (paper 4.2, step 0) from images with instance masks: COCO / COCO-Stuff and ADE20K.

Per image: decode every instance mask, draw one inpainting mask with ``lit_cologen.data.masks.sample_inpaint_mask``
(random 20 % / object 40 % / irregular Bezier 40 %, random masks rejected when IoU > 0.3 with any object), and emit

* ``target`` = the image (RGB, H x W),
* ``mask``   = the mask ('L', H x W, 255 = region to regenerate),
* ``source`` = the image with the masked pixels replaced by the fill colour: ``fill="grey"`` (default, RGB
  128/128/128, i.e. 0 in the model's [-1, 1] pixel range) or ``fill="black"`` (zeros),
* ``prompt`` = the image's caption (COCO captions JSON, or a sidecar / captions file), else a template from the
  class names of its instances ("a photo of a person, a dog and a frisbee").

Accepted layouts (see data/BUILDERS.md):

COCO / COCO-Stuff (``build_coco_inpaint``)::

    ROOT/annotations/instances_{split}.json   polygons + iscrowd RLE (and/or stuff_{split}.json: compressed RLE)
    ROOT/annotations/captions_{split}.json    optional captions
    ROOT/{split}/*.jpg                        images

ADE20K full release, e.g. ADE20K_2021_17_01 (``build_ade20k_inpaint``)::

    ROOT/images/ADE/{training,validation}/<scene folders>/ADE_train_00000001.jpg
                                                          ADE_train_00000001_seg.png  R/10*256+G = class, B = instance
                                                          ADE_train_00000001.json     optional object names
                                                          ADE_train_00000001.txt      optional caption
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..schema import Sample
from ._common import (
    DataSourceError,
    ErrorPolicy,
    caption_from_classes,
    check_training_split,
    clean_class_name,
    image_folders,
    is_eval_split,
    limit_size,
    load_json,
    load_json_records,
    open_image,
    part_items,
    refuse_eval_splits,
    require_path,
    safe_key,
    sample_rng,
    take,
)
from .coco import CocoIndex, decode_segmentation, polygons_to_mask, resolve_image_file

MaskFn = Callable[[np.random.Generator, list[np.ndarray], int, int], tuple[np.ndarray, str]]

FILL_COLOURS: dict[str, tuple[int, int, int]] = {"grey": (128, 128, 128), "gray": (128, 128, 128), "black": (0, 0, 0)}


def default_mask_fn() -> MaskFn:
    """``lit_cologen.data.masks.sample_inpaint_mask`` (imported lazily so this module loads without it)."""
    try:
        from ..masks import sample_inpaint_mask
    except ImportError as exc:  # pragma: no cover - depends on the other module being present
        raise DataSourceError(
            "inpainting builders need lit_cologen.data.masks.sample_inpaint_mask (paper 4.2 masks); "
            f"it could not be imported: {exc}"
        ) from exc
    return sample_inpaint_mask


def masked_source(image: Image.Image, mask: np.ndarray, fill: str = "grey") -> Image.Image:
    """The inpainting source: ``image`` (RGB, H x W) with pixels where ``mask`` (H x W, >0) replaced by the fill."""
    if fill not in FILL_COLOURS:
        raise DataSourceError(f"fill must be one of {sorted(FILL_COLOURS)}, got {fill!r}")
    arr = np.array(image.convert("RGB"), dtype=np.uint8)
    m = np.asarray(mask) > 0
    if m.shape != arr.shape[:2]:
        raise DataSourceError(f"mask shape {m.shape} does not match image (H, W) {arr.shape[:2]}")
    arr[m] = np.array(FILL_COLOURS[fill], dtype=np.uint8)
    return Image.fromarray(arr, mode="RGB")


def make_inpaint_sample(
    key: str,
    image: Image.Image,
    object_masks: list[np.ndarray],
    class_names: Sequence[str],
    captions: Sequence[str],
    *,
    rng: np.random.Generator,
    mask_fn: MaskFn,
    fill: str,
    meta: dict[str, Any],
) -> Sample:
    """One inpainting Sample from an image (RGB, H x W), its object masks (each bool H x W) and captions."""
    w, h = image.size
    mask, mask_type = mask_fn(rng, object_masks, h, w)
    mask = np.asarray(mask)
    if mask.shape != (h, w):
        raise DataSourceError(f"sample {key}: mask function returned shape {mask.shape}, expected {(h, w)}")
    mask_u8 = np.where(mask > 0, 255, 0).astype(np.uint8)
    if captions:
        prompt = str(captions[int(rng.integers(len(captions)))]).strip()
        prompt_source = "caption"
    else:
        prompt = caption_from_classes(class_names)
        prompt_source = "class_template"
    meta = dict(meta, mask_type=str(mask_type), prompt_source=prompt_source, fill=fill)
    return Sample(
        key=key,
        task="inpaint",
        prompt=prompt,
        target=image.convert("RGB"),
        source=masked_source(image, mask_u8, fill),
        mask=Image.fromarray(mask_u8, mode="L"),
        meta=meta,
    ).validate()


def _inpaint_sample(
    key: str,
    image: Image.Image,
    object_masks: list[np.ndarray],
    class_names: Sequence[str],
    captions: Sequence[str],
    *,
    max_side: int | None,
    seed: int,
    mask_fn: MaskFn,
    fill: str,
    meta: dict[str, Any],
) -> Sample:
    """``make_inpaint_sample`` after downscaling the image (and its object masks) to ``max_side``, with the draws
    of ``sample_rng(seed, key)``."""
    img2 = limit_size(image, max_side)
    masks = _resize_masks(object_masks, img2.size)
    return make_inpaint_sample(
        key, img2, masks, class_names, captions, rng=sample_rng(seed, key), mask_fn=mask_fn, fill=fill, meta=meta
    )


def _resize_masks(masks: list[np.ndarray], size: tuple[int, int]) -> list[np.ndarray]:
    out = []
    for m in masks:
        if m.shape[::-1] == size:
            out.append(m)
        else:
            im = Image.fromarray(m.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)
            out.append(np.asarray(im) > 127)
    return out


# ----------------------------------------------------------------------------------------------------------- COCO


def _find_coco_files(root: Path, split: str, annotations: Any, images: Any, captions: Any):
    ann_dir = root / "annotations"
    if annotations is None:
        cands = [ann_dir / f"instances_{split}.json", ann_dir / f"stuff_{split}.json"]
        found = [p for p in cands if p.is_file()]
        if not found:
            raise DataSourceError(
                f"COCO: no annotation file found (looked for {[str(c) for c in cands]}); set option `annotations`"
            )
        ann_files = found
    else:
        items = [annotations] if isinstance(annotations, (str, Path)) else list(annotations)
        ann_files = [require_path(a, "COCO annotations", option="annotations", kind="file") for a in items]
    image_dirs = image_folders(images, (root / split, root / "images" / split), what="COCO images")
    if not image_dirs:
        raise DataSourceError(
            f"COCO: image folder {root / split} (or {root / 'images' / split}) not found; set option `images`"
        )
    if captions is None:
        c = ann_dir / f"captions_{split}.json"
        cap_file = c if c.is_file() else None
    elif captions is False:
        cap_file = None
    else:
        cap_file = require_path(captions, "COCO captions", option="captions", kind="file")
    return ann_files, image_dirs, cap_file


def _coco_captions(path: Path | None) -> dict[Any, list[str]]:
    if path is None:
        return {}
    data = load_json(path)
    if not isinstance(data, dict) or "annotations" not in data:
        raise DataSourceError(f"{path}: expected a COCO captions JSON with an 'annotations' list")
    out: dict[Any, list[str]] = {}
    for a in data["annotations"]:
        if "image_id" in a and a.get("caption"):
            out.setdefault(a["image_id"], []).append(str(a["caption"]).strip())
    return out


def build_coco_inpaint(
    root: str | Path,
    *,
    split: str = "train2017",
    annotations: str | Path | Sequence[str | Path] | None = None,
    images: str | Path | None = None,
    captions: str | Path | bool | None = None,
    fill: str = "grey",
    min_object_frac: float = 0.01,
    skip_categories: Sequence[str] = ("other",),
    max_side: int | None = None,
    seed: int = 0,
    max_samples: int | None = None,
    part: int = 0,
    num_parts: int = 1,
    on_error: str = "raise",
    mask_fn: MaskFn | None = None,
    allow_eval_split: bool = False,
) -> Iterator[Sample]:
    """Inpainting samples from a COCO-format dataset (COCO instances, COCO-Stuff; polygons or RLE).

    Args:
        root: dataset folder (``annotations/`` + ``{split}/`` images).
        split: ``train2017`` / ``val2017`` (picks ``annotations/instances_{split}.json`` and/or ``stuff_{split}.json``).
        annotations: explicit annotation JSON file(s) (merged by image id); default: found under ``root``.
        images: explicit image folder; default ``root/{split}``.
        captions: COCO captions JSON; default ``annotations/captions_{split}.json`` if present; False disables.
        fill: ``grey`` (128) or ``black`` (0) for the masked pixels of the source.
        min_object_frac: instances smaller than this fraction of the image are not object-mask candidates.
        skip_categories: category names never used as objects (COCO-Stuff's catch-all ``other``).
        max_side: downscale images (and masks) so that the long side is at most this.
        seed: base seed; each sample's draws depend only on (seed, key).
        max_samples / part / num_parts: take at most N samples / the round-robin part of the images.
        on_error: ``raise`` (default) or ``skip`` unreadable images / annotations (logged).
        allow_eval_split: let an evaluation split (``dev``, ``validation``, ``test``, ``val2017``...) into training
            samples; off by default, so the eval sets of the paper's tables never leak into training shards.
        mask_fn: mask sampler with the ``sample_inpaint_mask`` signature (default: ``lit_cologen.data.masks``).

    Yields:
        ``Sample(task="inpaint")`` per image that has annotations.
    """
    root = require_path(root, "COCO root", option="root", kind="dir")
    check_training_split(split, dataset="COCO", allow_eval_split=allow_eval_split)
    ann_files, image_dirs, cap_file = _find_coco_files(root, split, annotations, images, captions)
    for f in ann_files:
        check_training_split(None, dataset="COCO", allow_eval_split=allow_eval_split, source=f)
    index = CocoIndex.load(ann_files)
    caps = _coco_captions(cap_file)
    mask_fn = mask_fn or default_mask_fn()
    policy = ErrorPolicy(on_error, "coco-inpaint")
    skip = {clean_class_name(s) for s in skip_categories}
    dataset = "coco-stuff" if any("stuff" in p.name for p in ann_files) else "coco"
    make = partial(_inpaint_sample, max_side=max_side, seed=seed, mask_fn=mask_fn, fill=fill)

    def jobs() -> Iterator[tuple[Callable[[], Sample], str]]:
        for _, image_id in part_items(sorted(index.images, key=str), part, num_parts):
            anns = index.anns_by_image.get(image_id, [])
            if not anns:
                continue
            entry = index.images[image_id]
            where = f"image {image_id} ({entry.get('file_name', '')})"
            meta = {"dataset": dataset, "split": split, "image_id": image_id, "file": entry.get("file_name")}
            key = safe_key(dataset, split, image_id)
            yield partial(
                _coco_inpaint_sample, make, key, index, entry, anns, image_dirs, caps.get(image_id, []),
                skip=skip, min_object_frac=min_object_frac, where=where, meta=meta,
            ), where

    return take(policy.results(jobs()), max_samples)


def _coco_inpaint_sample(
    make: Callable[..., Sample], key: str, index: CocoIndex, entry: dict[str, Any], anns: list[dict[str, Any]],
    image_dirs: list[Path], captions: list[str], *, skip: set[str], min_object_frac: float, where: str,
    meta: dict[str, Any],
) -> Sample:
    """The inpainting sample of one COCO image (``make``: ``_inpaint_sample`` with the build's options); its
    decoded size must match the JSON's."""
    path = resolve_image_file(entry, image_dirs)
    img = open_image(path)
    h, w = index.image_size(entry, img.size)
    if img.size != (w, h):
        raise DataSourceError(f"{path}: decoded size {img.size} != JSON size {(w, h)}")
    masks, names = _coco_objects(index, anns, h, w, skip=skip, min_object_frac=min_object_frac, where=where)
    return make(key, img, masks, names, captions, meta=meta)


def _coco_objects(
    index: CocoIndex, anns: list[dict[str, Any]], h: int, w: int, *, skip: set[str], min_object_frac: float,
    where: str,
) -> tuple[list[np.ndarray], list[str]]:
    """The object-mask candidates (bool H x W) of an image's annotations and the class names that describe it.

    Classes in ``skip`` are left out; crowd regions name the scene but are no candidates, nor are objects smaller
    than ``min_object_frac`` of the image (their names are left out too).
    """
    masks, names = [], []
    for a in anns:
        name = index.class_name(a.get("category_id"))
        if name in skip:
            continue
        if a.get("iscrowd", 0):
            names.append(name)  # crowd regions name the scene but are no object-mask candidates
            continue
        seg = a.get("segmentation")
        if seg is None:
            continue
        m = decode_segmentation(seg, h, w, where=f"{where}, annotation {a.get('id')}")
        if m.sum() < min_object_frac * h * w:
            continue
        masks.append(m)
        names.append(name)
    return masks, names


# --------------------------------------------------------------------------------------------------------- ADE20K


def decode_ade20k_seg(seg_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode an ADE20K ``*_seg.png`` (H x W x 3 uint8) as the ADE20K toolkit does (``utils_ade20k.loadAde20K``).

    Returns:
        class_map: int32 (H, W), ``class = R / 10 * 256 + G`` (0 = unlabelled),
        instance_map: int32 (H, W), the rank of the B value among the image's B values (``np.unique`` inverse, as in
            the toolkit); each distinct B value is one instance.

    Object names come from the image's ``.json`` (``annotation.object[*].name`` of whole objects), matched to the
    instances by polygon overlap, so no assumption about how JSON ids map to B values is needed.
    """
    if seg_rgb.ndim != 3 or seg_rgb.shape[2] < 3:
        raise DataSourceError(f"ADE20K seg map must be H x W x 3, got shape {seg_rgb.shape}")
    r = seg_rgb[:, :, 0].astype(np.int32)
    g = seg_rgb[:, :, 1].astype(np.int32)
    b = seg_rgb[:, :, 2]
    class_map = (r // 10) * 256 + g
    instance_map = np.unique(b, return_inverse=True)[1].reshape(b.shape).astype(np.int32)
    return class_map, instance_map


def _ade_objects(json_path: Path, height: int, width: int) -> list[tuple[str, np.ndarray]]:
    """Whole objects (part_level 0) of an ADE20K per-image JSON as ``(name, polygon mask (H, W) bool)``."""
    if not json_path.is_file():
        return []
    try:
        data = load_json(json_path)
    except DataSourceError:
        import json as _json

        data = _json.loads(json_path.read_bytes().decode("cp1252"))  # some ADE20K JSONs are cp1252
    objs = (data.get("annotation") or {}).get("object") or []
    out: list[tuple[str, np.ndarray]] = []
    for o in objs:
        level = int((o.get("parts") or {}).get("part_level", 0) or 0)
        poly = o.get("polygon") or {}
        xs, ys = poly.get("x") or [], poly.get("y") or []
        if level != 0 or len(xs) < 3 or len(xs) != len(ys):
            continue
        name = clean_class_name(str(o.get("name") or o.get("raw_name") or "object").split(",")[0])
        flat = [v for xy in zip(xs, ys) for v in xy]
        out.append((name, polygons_to_mask([flat], height, width)))
    return out


def _match_name(instance: np.ndarray, objects: list[tuple[str, np.ndarray]]) -> str | None:
    """Name of the JSON object whose polygon covers most of ``instance`` (at least half of it), if any."""
    area = int(instance.sum())
    best, best_cov = None, 0.5
    for name, poly in objects:
        cov = int(np.logical_and(instance, poly).sum()) / max(area, 1)
        if cov > best_cov:
            best, best_cov = name, cov
    return best


def _load_caption_map(path: Path | None) -> dict[str, str]:
    """Captions keyed by image stem, from a JSON object ``{stem_or_file: caption}`` or JSON lines / list of
    ``{"image"|"file_name": ..., "caption"|"text"|"prompt": ...}``."""
    if path is None:
        return {}
    if path.suffix == ".json":
        data = load_json(path)
        if isinstance(data, dict):
            return {Path(k).stem: str(v) for k, v in data.items()}
    recs = load_json_records(path)
    out = {}
    for i, r in enumerate(recs):
        name = r.get("image") or r.get("file_name") or r.get("file")
        text = r.get("caption") or r.get("text") or r.get("prompt")
        if not name or text is None:
            raise DataSourceError(f"{path}, record {i}: needs 'image'/'file_name' and 'caption'/'text'/'prompt'")
        out[Path(str(name)).stem] = str(text)
    return out


def build_ade20k_inpaint(
    root: str | Path,
    *,
    split: str | None = "training",
    captions: str | Path | None = None,
    class_names: str | Path | None = None,
    fill: str = "grey",
    min_object_frac: float = 0.01,
    max_side: int | None = None,
    seed: int = 0,
    max_samples: int | None = None,
    part: int = 0,
    num_parts: int = 1,
    on_error: str = "raise",
    mask_fn: MaskFn | None = None,
    allow_eval_split: bool = False,
) -> Iterator[Sample]:
    """Inpainting samples from the full ADE20K release (``*_seg.png`` with class in R/G, instance in B).

    Args:
        root: the ADE20K folder (searched recursively for ``*_seg.png``; the image is the sibling ``.jpg``).
        split: keep files under a folder of that name (``training`` / ``validation``); None keeps all.
        captions: optional captions file (JSON ``{stem: caption}`` or JSON lines with image + caption); a sidecar
            ``<image stem>.txt`` next to the image is used otherwise; without either, a class-name template.
        class_names: optional JSON ``{"<class index>": "name"}`` used when the per-image ``.json`` is missing.
        Other options as in ``build_coco_inpaint``.

    Yields:
        ``Sample(task="inpaint")`` per image.
    """
    root = require_path(root, "ADE20K root", option="root", kind="dir")
    segs = _ade_seg_files(root, split, allow_eval_split)
    cap_map = _load_caption_map(require_path(captions, "captions", option="captions", kind="file") if captions else None)
    cls_map = _ade_class_names(class_names)
    mask_fn = mask_fn or default_mask_fn()
    policy = ErrorPolicy(on_error, "ade20k-inpaint")
    make = partial(_inpaint_sample, max_side=max_side, seed=seed, mask_fn=mask_fn, fill=fill)

    def jobs() -> Iterator[tuple[Callable[[], Sample], str]]:
        for _, seg_path in part_items(segs, part, num_parts):
            stem = seg_path.name[: -len("_seg.png")]
            where = f"ADE20K image {stem} ({seg_path.parent})"
            yield partial(_ade_inpaint_sample, make, root, seg_path, stem, cap_map, cls_map, min_object_frac), where

    return take(policy.results(jobs()), max_samples)


def _ade_seg_files(root: Path, split: str | None, allow_eval_split: bool) -> list[Path]:
    """The ``*_seg.png`` files under ``root``, those under a folder named ``split`` when it is given; an evaluation
    split is refused (unless ``allow_eval_split``), and so is ``split=None`` over evaluation folders."""
    check_training_split(split, dataset="ADE20K", allow_eval_split=allow_eval_split)
    segs = sorted(p for p in root.rglob("*_seg.png") if split is None or split in p.relative_to(root).parts)
    if not segs:
        raise DataSourceError(
            f"ADE20K: no '*_seg.png' files under {root}" + (f" in a folder named {split!r}" if split else "")
        )
    if split is None and not allow_eval_split:
        evals = sorted({d for s in segs for d in s.relative_to(root).parts[:-1] if is_eval_split(d)})
        refuse_eval_splits(evals, dataset="ADE20K", holder=root, kind="folder(s)", example="training")
    return segs


def _ade_class_names(class_names: str | Path | None) -> dict[int, str]:
    """The optional ``{"<class index>": "name"}`` JSON as ``{index: clean name}`` (empty without the option)."""
    if not class_names:
        return {}
    data = load_json(require_path(class_names, "class names", option="class_names", kind="file"))
    if not isinstance(data, dict):
        raise DataSourceError(f"{class_names}: expected a JSON object {{class index: name}}")
    return {int(k): clean_class_name(str(v)) for k, v in data.items()}


def _ade_inpaint_sample(
    make: Callable[..., Sample], root: Path, seg_path: Path, stem: str, cap_map: dict[str, str],
    cls_map: dict[int, str], min_object_frac: float,
) -> Sample:
    """The inpainting sample of one ADE20K image (``make``: ``_inpaint_sample`` with the build's options): the
    ``.jpg`` / ``.png`` next to ``seg_path``, its instances, and its caption (``cap_map``, else a sidecar ``.txt``)."""
    img_path = next(
        (seg_path.parent / f"{stem}{e}" for e in (".jpg", ".png", ".jpeg") if (seg_path.parent / f"{stem}{e}").is_file()),
        None,
    )
    if img_path is None:
        raise DataSourceError(f"{seg_path}: no image {stem}.jpg next to it")
    img = open_image(img_path)
    seg = np.asarray(open_image(seg_path, "RGB"))
    if seg.shape[:2] != (img.size[1], img.size[0]):
        raise DataSourceError(f"{seg_path}: size {seg.shape[1::-1]} != image size {img.size}")
    class_map, inst_map = decode_ade20k_seg(seg)
    h, w = class_map.shape
    objects = _ade_objects(seg_path.parent / f"{stem}.json", h, w)
    masks, names = _ade_instances(class_map, inst_map, objects, cls_map, min_object_frac)
    sidecar = img_path.with_suffix(".txt")
    caps = [cap_map[stem]] if stem in cap_map else (
        [sidecar.read_text(encoding="utf-8").strip()] if sidecar.is_file() else []
    )
    return make(safe_key("ade20k", stem), img, masks, names, caps,
                meta={"dataset": "ade20k", "file": str(img_path.relative_to(root))})


def _ade_instances(
    class_map: np.ndarray, inst_map: np.ndarray, objects: list[tuple[str, np.ndarray]], cls_map: dict[int, str],
    min_object_frac: float,
) -> tuple[list[np.ndarray], list[str]]:
    """The labelled instances of an ADE20K image: the object-mask candidates (at least ``min_object_frac`` of the
    image) and the names of all of them (the JSON object covering it, else ``cls_map``, else ``object``)."""
    h, w = class_map.shape
    masks, names = [], []
    for inst in np.unique(inst_map):
        m = inst_map == inst
        cls_vals = class_map[m]
        cls = int(np.bincount(cls_vals).argmax())
        if cls == 0:
            continue  # unlabelled
        name = _match_name(m, objects) or cls_map.get(cls) or "object"
        names.append(name)
        if m.sum() >= min_object_frac * h * w:
            masks.append(m)
    return masks, names
