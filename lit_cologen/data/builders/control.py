"""Controllable-generation samples (paper 4.4, step 2): condition map -> image, five condition types.

Per (image, condition type): ``source`` = the condition map (RGB, same W x H as the image), ``target`` = the image,
``prompt`` = its caption, ``cond_type`` in ``COND_TYPES``.

Where each condition comes from (options ``canny_from``, ``hed_from``, ``lineart_from``):

* ``canny``: ``image`` (default) computes kornia Canny on the image (``canny_low`` / ``canny_high``, default
  0.1 / 0.2 like ControlNet++'s evaluation), ``file`` reads MultiGen's ``control_canny`` map;
* ``depth``, ``seg``: read from files / columns (MultiGen ``control_depth`` / ``control_seg``);
* ``hed``, ``lineart``: ``detector`` (default) runs a user-provided local model (``hed_detector`` /
  ``lineart_detector``; see ``detectors.py``) at build time; ``online`` defers extraction to the data loader (the
  sample's source is a black placeholder and ``meta["condition"] == "online"``; the loader must call
  ``apply_online_condition``); ``file`` reads ``control_hed`` / ``control_lineart``. Without a detector file in
  ``detector`` mode the builder raises an error naming the missing option; it never falls back silently.

Accepted layouts (see data/BUILDERS.md):

* ``multigen`` (UniControl's MultiGen-20M)::

      ROOT/json_files/aesthetics_plus_all_group_{canny,depth,hed,seg,segbase,...}_all.json
          JSON lines (or one JSON list) of {"source": "<rel image>", "prompt": "...", "control_<task>": "<rel map>"}
      ROOT/images/<source>              ROOT/conditions/<control_task>

* ``folder``: ``ROOT/images/NAME.jpg`` + caption ``ROOT/images/NAME.txt`` (or ``ROOT/prompts.jsonl`` with
  ``{"image": "NAME.jpg", "text": ...}``) + maps ``ROOT/<cond_type>/NAME.png``.
* ``parquet`` (Hugging Face exports, e.g. ``limingcv/MultiGen-20M_depth``, ``limingcv/Captioned_ADE20K``): columns
  ``image``, ``text`` or ``prompt``, ``control_<cond_type>``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image

from ..schema import COND_TYPES, Sample
from ._common import (
    IMAGE_EXTS,
    DataSourceError,
    ErrorPolicy,
    image_cell,
    iter_table_rows,
    limit_size,
    load_json_records,
    open_image,
    part_items,
    require_path,
    safe_key,
    sample_rng,
    table_columns,
    take,
    training_files,
)
from .detectors import EdgeDetector, canny_edges, load_edge_detector

#: MultiGen-20M json task names for each of our condition types (``seg`` also ships as ``segbase``).
MULTIGEN_TASKS: dict[str, tuple[str, ...]] = {
    "canny": ("canny",),
    "depth": ("depth",),
    "hed": ("hed",),
    "lineart": ("lineart",),
    "seg": ("seg", "segbase"),
}

_JSON_FALLBACK: dict[str, tuple[str, ...]] = {"canny": ("hed",), "hed": ("canny",), "lineart": ("hed", "canny")}

_FROM_CHOICES = {
    "canny": ("image", "file"),
    "depth": ("file",),
    "seg": ("file",),
    "hed": ("detector", "online", "file"),
    "lineart": ("detector", "online", "file"),
}

ImageLoader = Callable[[], Image.Image]


class _Record:
    """One image of a controllable dataset: key, prompt, image loader, condition loaders by cond type, and the cond
    types it is listed for (MultiGen: the json files naming it; other layouts: all)."""

    def __init__(
        self,
        key: str,
        prompt: str,
        image: ImageLoader,
        conds: dict[str, ImageLoader],
        meta: dict[str, Any],
        listed: set[str] | None = None,
    ):
        self.key, self.prompt, self.image, self.conds, self.meta = key, prompt, image, conds, meta
        self.listed = set(COND_TYPES) if listed is None else listed


# -------------------------------------------------------------------------------------------------------- layouts


def _detect_layout(root: Path) -> str:
    if root.is_file() and root.suffix == ".parquet":
        return "parquet"
    if (root / "json_files").is_dir():
        return "multigen"
    if (root / "images").is_dir():
        return "folder"
    if any(root.rglob("*.parquet")):
        return "parquet"
    raise DataSourceError(
        f"controllable data: cannot tell the layout of {root}: expected json_files/ (MultiGen-20M), images/ (folder) "
        "or *.parquet; set option `layout`"
    )


def _task_of_json(path: Path) -> str | None:
    """Our cond type for a MultiGen json file name ``aesthetics_plus_all_group_<task>_all.json`` (None if unknown)."""
    name = path.name
    for cond, tasks in MULTIGEN_TASKS.items():
        if any(f"_group_{t}_all" in name for t in tasks):
            return cond
    return None


def _multigen_records(root: Path, json_files: Any, cond_types: Sequence[str]) -> list[_Record]:
    """Merge MultiGen json files by image; ``rec.listed`` = the cond types whose json lists the image.

    A cond type reads the json of its own MultiGen task; the image-derived ones fall back to another task's json to
    choose their images when theirs is absent (``lineart`` is no MultiGen task): hed -> canny, lineart -> hed ->
    canny, canny -> hed.
    """
    files: dict[str, list[Path]] = {}
    if json_files:
        items = json_files.items() if isinstance(json_files, dict) else [(None, p) for p in json_files]
        for cond, p in items:
            path = require_path(p, "MultiGen json file", option="json_files", kind="file")
            cond = cond or _task_of_json(path)
            if cond is None:
                raise DataSourceError(
                    f"{path}: cannot tell its condition type from the name; pass json_files as {{cond_type: path}}"
                )
            files.setdefault(cond, []).append(path)
    else:
        for cond in cond_types:
            for task in MULTIGEN_TASKS[cond] + _JSON_FALLBACK.get(cond, ()):
                p = root / "json_files" / f"aesthetics_plus_all_group_{task}_all.json"
                if p.is_file():
                    files.setdefault(cond, []).append(p)
                    break
    if not files:
        raise DataSourceError(
            f"MultiGen-20M: no json_files/aesthetics_plus_all_group_<task>_all.json under {root} for {list(cond_types)}; "
            "set option `json_files`"
        )
    cache: dict[Path, list[dict[str, Any]]] = {}
    by_source: dict[str, _Record] = {}
    for cond, paths in files.items():
        for path in paths:
            if path not in cache:
                cache[path] = load_json_records(path)
            for i, rec in enumerate(cache[path]):
                where = f"{path.name} line {i + 1}"
                src = rec.get("source")
                if not src or rec.get("prompt") is None:
                    raise DataSourceError(f"{where}: needs 'source' and 'prompt' (has {sorted(rec)})")
                src = src[2:] if src.startswith("./") else src
                r = by_source.get(src)
                if r is None:
                    img_path = root / "images" / src
                    r = _Record(
                        safe_key("multigen", src), str(rec["prompt"]),
                        (lambda p=img_path: open_image(p)), {}, {"image": f"images/{src}"}, set(),
                    )
                    by_source[src] = r
                r.listed.add(cond)
                for key, val in rec.items():
                    if key.startswith("control_") and val:
                        c = key[len("control_"):]
                        c = "seg" if c == "segbase" else c
                        cpath = root / "conditions" / str(val)
                        r.conds.setdefault(c, (lambda p=cpath: open_image(p)))
                        r.meta.setdefault(f"file_{c}", f"conditions/{val}")
    return [by_source[k] for k in sorted(by_source)]


def _folder_records(root: Path) -> list[_Record]:
    img_dir = root / "images"
    prompts: dict[str, str] = {}
    for name in ("prompts.jsonl", "prompts.json", "captions.jsonl", "captions.json"):
        p = root / name
        if p.is_file():
            for i, rec in enumerate(load_json_records(p)):
                im = rec.get("image") or rec.get("file_name") or rec.get("source")
                text = rec.get("text") if rec.get("text") is not None else rec.get("prompt", rec.get("caption"))
                if not im or text is None:
                    raise DataSourceError(f"{p}, record {i + 1}: needs 'image' and 'text' (has {sorted(rec)})")
                prompts[Path(str(im)).stem] = str(text)
            break
    recs = []
    for img in sorted(q for q in img_dir.iterdir() if q.suffix.lower() in IMAGE_EXTS):
        stem = img.stem
        sidecar = img.with_suffix(".txt")
        if stem in prompts:
            prompt = prompts[stem]
        elif sidecar.is_file():
            prompt = sidecar.read_text(encoding="utf-8").strip()
        else:
            raise DataSourceError(f"{img}: no caption ({sidecar.name} or an entry in prompts.jsonl)")
        conds: dict[str, ImageLoader] = {}
        meta: dict[str, Any] = {"image": f"images/{img.name}"}
        for c in COND_TYPES:
            for ext in IMAGE_EXTS:
                cp = root / c / f"{stem}{ext}"
                if cp.is_file():
                    conds[c] = lambda p=cp: open_image(p)
                    meta[f"file_{c}"] = f"{c}/{cp.name}"
                    break
        recs.append(_Record(safe_key("folder", stem), prompt, (lambda p=img: open_image(p)), conds, meta))
    if not recs:
        raise DataSourceError(f"no images in {img_dir}")
    return recs


def _parquet_records(
    root: Path, split: str | None, prompt_column: str | None, allow_eval_split: bool
) -> Iterator[_Record]:
    files = training_files(root, split, dataset="controllable parquet", allow_eval_split=allow_eval_split)
    for f in files:
        cols = table_columns(f)
        pc = prompt_column or next((c for c in ("text", "prompt", "caption") if c in cols), None)
        missing = [c for c in ("image",) if c not in cols] + ([] if pc and pc in cols else [prompt_column or "text|prompt"])
        if missing:
            raise DataSourceError(f"controllable parquet {f} lacks column(s) {missing} (it has {cols})")
    for f, i, row in iter_table_rows(files):
        where = f"{f.name} row {i}"
        pc = prompt_column or next(c for c in ("text", "prompt", "caption") if c in row)
        conds = {}
        for key, val in row.items():
            if key.startswith("control_") and val is not None:
                c = key[len("control_"):]
                conds[c] = lambda v=val, k=key: image_cell(v, base_dir=f.parent, where=f"{where}, column {k!r}")
        yield _Record(
            safe_key(f.stem, i), str(row[pc]),
            (lambda v=row["image"]: image_cell(v, base_dir=f.parent, where=f"{where}, column 'image'")),
            conds, {"file": f.name, "row": i},
        )


# ---------------------------------------------------------------------------------------------------- conditions


def _fit(cond: Image.Image, size: tuple[int, int], cond_type: str) -> tuple[Image.Image, bool]:
    if cond.size == size:
        return cond, False
    resample = Image.Resampling.NEAREST if cond_type == "seg" else Image.Resampling.BILINEAR
    return cond.resize(size, resample), True


def online_placeholder(size: tuple[int, int]) -> Image.Image:
    """The source of an ``online`` sample: black RGB (a loader that forgets to extract sees no copy of the target)."""
    return Image.new("RGB", size, (0, 0, 0))


def apply_online_condition(sample: Sample, detectors: dict[str, EdgeDetector]) -> Sample:
    """Replace the placeholder source of an ``online`` control sample by ``detectors[cond_type](target)``.

    Samples that are not online are returned unchanged. Raises naming the condition when no detector is given.
    """
    if sample.task != "control" or sample.meta.get("condition") != "online":
        return sample
    det = detectors.get(sample.cond_type or "")
    if det is None:
        raise DataSourceError(
            f"sample {sample.key}: {sample.cond_type!r} is extracted online but no detector was given for it "
            f"(configure the {sample.cond_type} detector file)"
        )
    cond = det(sample.target)
    cond, _ = _fit(cond.convert("RGB"), sample.target.size, sample.cond_type or "")
    sample.source = cond
    sample.meta = dict(sample.meta, condition=f"online:{getattr(det, 'name', sample.cond_type)}")
    return sample


def build_multigen(
    root: str | Path,
    *,
    layout: str = "auto",
    cond_types: Sequence[str] = COND_TYPES,
    json_files: Sequence[str | Path] | dict[str, str | Path] | None = None,
    split: str | None = "train",
    prompt_column: str | None = None,
    canny_from: str = "image",
    canny_low: float = 0.1,
    canny_high: float = 0.2,
    hed_from: str = "detector",
    hed_detector: str | Path | None = None,
    hed_module: str | None = None,
    lineart_from: str = "detector",
    lineart_detector: str | Path | None = None,
    lineart_module: str | None = None,
    lineart_invert: bool = True,
    detectors: dict[str, EdgeDetector] | None = None,
    per_image: str = "all",
    max_side: int | None = None,
    seed: int = 0,
    max_samples: int | None = None,
    part: int = 0,
    num_parts: int = 1,
    on_error: str = "raise",
    allow_eval_split: bool = False,
) -> Iterator[Sample]:
    """Controllable samples from MultiGen-20M (UniControl json layout), a plain folder, or a parquet export.

    Args:
        root: dataset folder (or one parquet file).
        layout: ``multigen`` | ``folder`` | ``parquet`` | ``auto``.
        cond_types: condition types to emit (subset of ``COND_TYPES``).
        json_files: explicit MultiGen json files (a list, or ``{cond_type: path}``).
        split / prompt_column: parquet layout: the split to read (default ``train``; ``None`` reads every file,
            refused when one is an evaluation split) and the caption column (default ``text`` then ``prompt``).
        canny_from, hed_from, lineart_from: where each condition comes from (module docstring).
        canny_low / canny_high: kornia Canny thresholds.
        hed_detector / hed_module, lineart_detector / lineart_module: local model files (+ module for safetensors).
        lineart_invert: invert the lineart model output (ControlNet++ convention, black lines on white).
        detectors: ready ``EdgeDetector`` objects by cond type (take precedence over the file options).
        per_image: ``all`` (one sample per available condition) or ``one`` (a random available condition).
        allow_eval_split: let an evaluation split (``dev``, ``validation``, ``test``, ``val2017``...) into training
            samples; off by default, so the eval sets of the paper's tables never leak into training shards.
        max_side, seed, max_samples, part, num_parts, on_error: as in the other builders.

    Yields:
        ``Sample(task="control", cond_type=...)``.
    """
    froms = _check_control_options(cond_types, canny_from, hed_from, lineart_from, per_image)
    dets = _edge_detectors(
        cond_types, froms, detectors, canny_low, canny_high,
        (("hed", hed_detector, hed_module, False), ("lineart", lineart_detector, lineart_module, lineart_invert)),
    )
    root = require_path(root, "controllable dataset root", option="root")
    layout = _detect_layout(root) if layout == "auto" else layout
    records = _layout_records(root, layout, json_files, cond_types, split, prompt_column, allow_eval_split)
    policy = ErrorPolicy(on_error, f"multigen[{layout}]")

    def jobs() -> Iterator[tuple[Callable[[], Sample | None], str]]:
        for _, rec in part_items(records, part, num_parts):
            conds = _available(rec, cond_types, froms)
            if not conds:
                continue
            if per_image == "one":
                conds = [conds[int(sample_rng(seed, rec.key).integers(len(conds)))]]
            img = policy.guard(lambda: limit_size(rec.image(), max_side), f"{rec.key} image")
            if img is None:
                continue
            for c in conds:
                yield partial(_control_sample, rec, img, c, froms[c], dets.get(c), layout), f"{rec.key} condition {c}"

    return take(policy.results(jobs()), max_samples)


def _check_control_options(
    cond_types: Sequence[str], canny_from: str, hed_from: str, lineart_from: str, per_image: str
) -> dict[str, str]:
    """Check ``cond_types`` and the ``*_from`` / ``per_image`` options; return where each cond type comes from."""
    bad = [c for c in cond_types if c not in COND_TYPES]
    if bad or not cond_types:
        raise DataSourceError(f"cond_types must be a non-empty subset of {COND_TYPES}, got {tuple(cond_types)}")
    froms = {"canny": canny_from, "hed": hed_from, "lineart": lineart_from, "depth": "file", "seg": "file"}
    for c, v in froms.items():
        if v not in _FROM_CHOICES[c]:
            raise DataSourceError(f"option `{c}_from` must be one of {_FROM_CHOICES[c]}, got {v!r}")
    if per_image not in ("all", "one"):
        raise DataSourceError(f"option `per_image` must be 'all' or 'one', got {per_image!r}")
    return froms


def _edge_detectors(
    cond_types: Sequence[str],
    froms: dict[str, str],
    detectors: dict[str, EdgeDetector] | None,
    canny_low: float,
    canny_high: float,
    model_options: Sequence[tuple[str, str | Path | None, str | None, bool]],
) -> dict[str, EdgeDetector]:
    """The build-time detectors by cond type: the given ``detectors``, kornia Canny for ``canny_from="image"``, and
    the local model of each ``(cond type, detector file, module, invert)`` in ``model_options`` in ``detector``
    mode (``load_edge_detector`` raises naming the option when its file is not set)."""
    dets: dict[str, EdgeDetector] = dict(detectors or {})
    if "canny" in cond_types and froms["canny"] == "image":
        from .detectors import CannyDetector

        dets.setdefault("canny", CannyDetector(canny_low, canny_high))
    for c, path, module, invert in model_options:
        if c in cond_types and froms[c] == "detector" and c not in dets:
            dets[c] = load_edge_detector(path, name=c, option=f"{c}_detector", module=module, invert=invert)
    return dets


def _layout_records(
    root: Path, layout: str, json_files: Any, cond_types: Sequence[str], split: str | None,
    prompt_column: str | None, allow_eval_split: bool,
) -> Any:
    """The records of a controllable dataset in ``layout`` (a list, or an iterator for parquet)."""
    if layout == "multigen":
        return _multigen_records(root, json_files, cond_types)
    if layout == "folder":
        return _folder_records(root)
    if layout == "parquet":
        return _parquet_records(root, split, prompt_column, allow_eval_split)
    raise DataSourceError(f"unknown controllable layout {layout!r} (multigen | folder | parquet | auto)")


def _available(rec: _Record, cond_types: Sequence[str], froms: dict[str, str]) -> list[str]:
    """The requested cond types a record can give: listed for it, and computed from the image or read from a file
    the record has."""
    out = []
    for c in cond_types:
        if c not in rec.listed:
            continue
        if froms[c] in ("image", "detector", "online") or c in rec.conds:
            out.append(c)
    return out


def _control_sample(
    rec: _Record, img: Image.Image, c: str, src: str, det: EdgeDetector | None, layout: str
) -> Sample:
    """One control Sample of cond type ``c`` for ``img``: the condition comes from ``src`` (``online`` placeholder,
    ``image`` / ``detector`` run ``det``, else the record's file), fitted to the image size."""
    resized = False
    if src == "online":
        cond = online_placeholder(img.size)
        how = "online"
    elif src in ("image", "detector"):
        cond = det(img)
        cond, resized = _fit(cond.convert("RGB"), img.size, c)
        how = getattr(det, "name", c)
    else:
        cond, resized = _fit(rec.conds[c]().convert("RGB"), img.size, c)
        how = rec.meta.get(f"file_{c}", "file")
    meta = {k: v for k, v in rec.meta.items() if not k.startswith("file_")}
    meta.update(dataset=f"multigen-{layout}", condition=how, cond_resized=resized)
    return Sample(
        key=safe_key(rec.key, c), task="control", prompt=rec.prompt, target=img, source=cond, cond_type=c, meta=meta
    ).validate()


__all__ = [
    "MULTIGEN_TASKS",
    "apply_online_condition",
    "build_multigen",
    "canny_edges",
    "online_placeholder",
]
