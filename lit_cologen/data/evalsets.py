"""Evaluation sets of the paper's tables, read from local files (nothing is downloaded).

* DreamBench (Table 4, 7): ``load_dreambench`` -> 750 ``DreamBenchPrompt`` (30 subjects x 25 prompts).
* Emu Edit test split (Table 2): ``load_emu_edit`` / ``iter_emu_edit`` -> ``EditEvalRecord`` (no ground truth).
* MagicBrush test split (Table 2, 5): ``load_magicbrush_test`` -> ``EditEvalRecord`` with the ground-truth target.
* MultiGen-20M eval in the ControlNet++ layout (Table 3, 6): ``load_multigen_eval`` / ``iter_multigen_eval`` ->
  ``ControlEvalRecord`` (image, prompt, condition, label).

Image-bearing records keep the *encoded* bytes (or the file path) and decode on demand (``record.source()``...), so a
3,589-row split does not sit decoded in memory. Every loader raises ``DataSourceError`` naming the missing path or
column. Where to get each set: data/BUILDERS.md, section "Evaluation sets".

Sizes: every ``load_*`` function checks what it loaded against the published size of that split
(``PUBLISHED_COUNTS``, in ``eval_sizes.py``) and raises when they differ, unless ``subset=True`` says a smaller set is
intended; it returns an ``EvalRecords`` list whose ``count`` (``EvalCount.as_dict()``) records expected vs found for
results files.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .builders._common import (
    DataSourceError,
    check_columns,
    dataset_files,
    decode_image_bytes,
    image_cell_bytes,
    iter_table_rows,
    load_json,
    open_image,
    require_path,
    table_columns,
)
from .eval_sizes import PUBLISHED_COUNTS, EvalCount, EvalRecords, PublishedSize, check_size, take_records

log = logging.getLogger("lit_cologen.data.evalsets")

# ------------------------------------------------------------------------------------------------------ DreamBench

DREAMBENCH_ENV = "COLOGEN_DREAMBENCH"
DREAMBENCH_HELP = (
    "DreamBench is the `dataset/` folder of the public repository github.com/google/dreambooth "
    "(git clone https://github.com/google/dreambooth; use dreambooth/dataset). Pass its path or set "
    f"the environment variable {DREAMBENCH_ENV}."
)
#: DreamBooth's live subjects are its dogs and cats (9 of 30); they get the live-subject prompt list.
LIVE_CLASSES: tuple[str, ...] = ("dog", "cat")


@dataclass(frozen=True)
class DreamBenchPrompt:
    """One DreamBench prompt for one subject.

    ``template`` is DreamBooth's string with ``{0}`` (unique token) and ``{1}`` (class noun); ``prompt`` is it
    formatted with ``(unique_token, class_noun)``; ``prompt_class`` with the class noun only (``{0}`` dropped): the
    text CLIP-T is scored against and what zero-shot models are prompted with. ``references`` are the subject's
    reference images (``00.jpg`` or all, sorted).
    """

    subject: str
    class_noun: str
    live: bool
    prompt_index: int
    template: str
    prompt: str
    prompt_class: str
    references: tuple[Path, ...]

    @property
    def key(self) -> str:
        return f"{self.subject}-{self.prompt_index:02d}"


# the downscaled copy shipped in the repository (``data/dreambench``: short side 512 px, CC-BY 4.0, see its README)
BUNDLED_DREAMBENCH = Path(__file__).resolve().parents[2] / "data" / "dreambench"


def default_dreambench_path() -> Path | None:
    """``$COLOGEN_DREAMBENCH``, else the repository's copy (``data/dreambench``) when it exists, else None."""
    env = os.environ.get(DREAMBENCH_ENV)
    if env:
        return Path(env)
    return BUNDLED_DREAMBENCH if (BUNDLED_DREAMBENCH / "prompts_and_classes.txt").is_file() else None


def dreambench_root(path: str | Path | None = None) -> Path:
    """The DreamBench folder: ``path``, else ``$COLOGEN_DREAMBENCH``, else the repository's copy; a repo root
    with ``dataset/`` is accepted."""
    raw = path if path is not None else default_dreambench_path()
    if not raw:
        raise DataSourceError(f"DreamBench path not given. {DREAMBENCH_HELP}")
    p = Path(raw).expanduser()
    if not (p / "prompts_and_classes.txt").is_file() and (p / "dataset" / "prompts_and_classes.txt").is_file():
        p = p / "dataset"
    if not (p / "prompts_and_classes.txt").is_file():
        raise DataSourceError(f"DreamBench: {p / 'prompts_and_classes.txt'} not found. {DREAMBENCH_HELP}")
    return p


_PROMPT_RE = re.compile(r"""(['"])(.*?)\1\s*\.format\(\s*unique_token\s*,\s*class_token\s*\)""")


def parse_dreambench_prompts(path: str | Path) -> tuple[dict[str, str], list[str], list[str]]:
    """Parse DreamBooth's ``prompts_and_classes.txt``.

    Returns:
        (``{subject: class noun}`` in file order, the 25 object prompt templates, the 25 live-subject templates).
    """
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    classes: dict[str, str] = {}
    head, sep, rest = text.partition("subject_name,class")
    if not sep:
        raise DataSourceError(f"{p}: no 'subject_name,class' header")
    for line in rest.splitlines():
        line = line.strip()
        if not line:
            if classes:
                break
            continue
        if "," not in line:
            break
        subject, cls = (s.strip() for s in line.split(",", 1))
        classes[subject] = cls
    obj_i = text.find("Object Prompts")
    live_i = text.find("Live Subject Prompts")
    if obj_i < 0 or live_i < 0:
        raise DataSourceError(f"{p}: missing the 'Object Prompts' or 'Live Subject Prompts' section")
    first, second = sorted([(obj_i, "object"), (live_i, "live")])
    sections = {first[1]: text[first[0]: second[0]], second[1]: text[second[0]:]}
    obj = [m.group(2) for m in _PROMPT_RE.finditer(sections["object"])]
    live = [m.group(2) for m in _PROMPT_RE.finditer(sections["live"])]
    for name, lst in (("object", obj), ("live subject", live)):
        if len(lst) != 25:
            raise DataSourceError(f"{p}: expected 25 {name} prompts, parsed {len(lst)}")
    if not classes:
        raise DataSourceError(f"{p}: no subject,class lines after the header")
    return classes, obj, live


def load_dreambench(
    path: str | Path | None = None,
    *,
    references: str = "first",
    unique_token: str = "sks",
    live_classes: Sequence[str] = LIVE_CLASSES,
    subset: bool = False,
) -> EvalRecords:
    """All DreamBench prompts: one record per (subject, prompt), subjects in file order, prompts in list order.

    Args:
        path: the DreamBench folder (default ``$COLOGEN_DREAMBENCH``).
        references: ``first`` (the subject's ``00.jpg``, the OmniGen / Kosmos-G protocol) or ``all`` (every image).
        unique_token: the ``{0}`` of DreamBooth's templates (``sks`` in DreamBooth).
        live_classes: class nouns that use the live-subject prompt list.
        subset: a folder with fewer subjects than the published 30 (750 prompts) is intended.
    """
    if references not in ("first", "all"):
        raise DataSourceError(f"references must be 'first' or 'all', got {references!r}")
    root = dreambench_root(path)
    classes, obj, live = parse_dreambench_prompts(root / "prompts_and_classes.txt")
    out: list[DreamBenchPrompt] = []
    for subject, cls in classes.items():
        folder = root / subject
        if not folder.is_dir():
            raise DataSourceError(f"DreamBench: subject folder {folder} not found")
        imgs = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if references == "first":
            first = next((p for p in imgs if p.stem == "00"), None)
            if first is None:
                raise DataSourceError(f"DreamBench: {folder} has no 00.jpg reference image")
            refs: tuple[Path, ...] = (first,)
        else:
            if not imgs:
                raise DataSourceError(f"DreamBench: {folder} has no images")
            refs = tuple(imgs)
        is_live = cls in live_classes
        for i, tpl in enumerate(live if is_live else obj):
            out.append(
                DreamBenchPrompt(
                    subject=subject,
                    class_noun=cls,
                    live=is_live,
                    prompt_index=i,
                    template=tpl,
                    prompt=" ".join(tpl.format(unique_token, cls).split()),
                    prompt_class=" ".join(tpl.format("", cls).split()),
                    references=refs,
                )
            )
    count = check_size("dreambench", len(out), subset=subset, where=root,
                       notes=[f"{len(classes)} subjects in prompts_and_classes.txt"])
    return EvalRecords(out, count)


# --------------------------------------------------------------------------------------------------------- editing


def _decode_ref(ref: bytes | Path | None, where: str, mode: str = "RGB") -> Image.Image | None:
    if ref is None:
        return None
    if isinstance(ref, Path):
        return open_image(ref, mode)
    return decode_image_bytes(ref, mode, where=where)


@dataclass
class EditEvalRecord:
    """One editing-benchmark item. Images decode on demand: ``source()``, ``target()`` (None without ground truth),
    ``mask()`` (MagicBrush only, when requested)."""

    key: str
    dataset: str
    instruction: str
    source_ref: bytes | Path
    target_ref: bytes | Path | None = None
    mask_ref: bytes | Path | None = None
    input_caption: str | None = None
    output_caption: str | None = None
    task: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    extra_refs: dict[str, bytes | Path] = field(default_factory=dict)

    def source(self) -> Image.Image:
        return _decode_ref(self.source_ref, f"{self.key} source")  # type: ignore[return-value]

    def target(self) -> Image.Image | None:
        return _decode_ref(self.target_ref, f"{self.key} target")

    def mask(self) -> Image.Image | None:
        return _decode_ref(self.mask_ref, f"{self.key} mask", "L")

    def extra(self, name: str) -> Image.Image:
        """Another image of the item, e.g. ``emu_edit_output`` (Emu Edit's own result in the generations repo)."""
        if name not in self.extra_refs:
            raise DataSourceError(f"{self.key}: no extra image {name!r} (has {sorted(self.extra_refs)})")
        return _decode_ref(self.extra_refs[name], f"{self.key} {name}")  # type: ignore[return-value]


EMU_EDIT_COLUMNS: tuple[str, ...] = ("instruction", "image", "task", "idx", "input_caption", "output_caption")


def iter_emu_edit(
    path: str | Path, *, split: str = "test", drop_identical_captions: bool = False,
    stats: dict[str, int] | None = None,
) -> Iterator[EditEvalRecord]:
    """Stream the Emu Edit benchmark from local parquet files (HF ``facebook/emu_edit_test_set``).

    Columns: ``instruction``, ``image`` (the input), ``task``, ``split``, ``idx``, ``hash``, ``input_caption``,
    ``output_caption`` (``image_url`` in older revisions). There are no ground-truth outputs; an ``edited_image``
    column (``facebook/emu_edit_test_set_generations``: Emu Edit's own outputs, not a ground truth) is kept as
    ``record.extra("emu_edit_output")``.

    ``split`` picks the files of that split (``data/test-*.parquet``). Rows are de-duplicated by ``idx`` (a past
    revision of the dataset duplicated the test shards); rows whose ``split`` column contradicts the file's split are
    skipped (the generations repo is known to swap the two split names). Both are counted in ``stats``
    (``duplicates``, ``split_mismatch``) and logged as a warning.

    Args:
        drop_identical_captions: skip rows whose input and output captions are equal (a known defect of some rows,
            removed by some papers; off by default to keep the full split).
        stats: a dict that receives the counts above (for the caller's report).
    """
    files = dataset_files(path, split, option="path")
    for f in files:
        check_columns(f, EMU_EDIT_COLUMNS, dataset="Emu Edit")
    stats = {} if stats is None else stats
    stats.update(duplicates=0, split_mismatch=0)
    seen: set[Any] = set()
    for f, i, row in iter_table_rows(files):
        if row.get("split") is not None and row["split"] != split:
            stats["split_mismatch"] += 1
            continue
        if row["idx"] in seen:
            stats["duplicates"] += 1
            continue
        seen.add(row["idx"])
        if drop_identical_captions and (row["input_caption"] or "").strip() == (row["output_caption"] or "").strip():
            continue
        where = f"{f.name} row {i}"
        meta: dict[str, Any] = {"file": f.name, "row": i, "idx": row["idx"], "hash": row.get("hash")}
        extra: dict[str, bytes | Path] = {}
        if row.get("edited_image") is not None:
            extra["emu_edit_output"] = image_cell_bytes(
                row["edited_image"], base_dir=f.parent, where=f"{where}, column 'edited_image'"
            )
        yield EditEvalRecord(
            key=f"emu-{row['idx']}",
            dataset="emu_edit",
            instruction=str(row["instruction"]),
            source_ref=image_cell_bytes(row["image"], base_dir=f.parent, where=f"{where}, column 'image'"),
            input_caption=row["input_caption"],
            output_caption=row["output_caption"],
            task=row["task"],
            meta=meta,
            extra_refs=extra,
        )
    for what, n in (("duplicates", "rows repeating an earlier idx were dropped"),
                    ("split_mismatch", f"rows in {split!r} files carry another 'split' value and were skipped")):
        if stats[what]:
            log.warning("Emu Edit (%s): %d %s", path, stats[what], n)


def emu_edit_notes(stats: dict[str, int], split: str) -> list[str]:
    """The report lines of ``iter_emu_edit``'s ``stats`` (empty when nothing was dropped)."""
    notes = []
    if stats.get("duplicates"):
        notes.append(f"{stats['duplicates']} rows repeating an earlier idx dropped")
    if stats.get("split_mismatch"):
        notes.append(f"{stats['split_mismatch']} rows in {split!r} files carry another 'split' value (skipped)")
    return notes


def load_emu_edit(
    path: str | Path, *, split: str = "test", drop_identical_captions: bool = False, subset: bool = False,
    limit: int | None = None,
) -> EvalRecords:
    """``iter_emu_edit(...)`` as a list, checked against the split's published size (``subset``: a smaller set is
    intended; ``drop_identical_captions`` and ``limit``, the first N rows only, make it one)."""
    stats: dict[str, int] = {}
    out = take_records(iter_emu_edit(path, split=split, drop_identical_captions=drop_identical_captions, stats=stats),
                       limit)
    notes = emu_edit_notes(stats, split)
    if not out:
        raise DataSourceError(f"Emu Edit: no rows for split {split!r} under {path}" + (f" ({'; '.join(notes)})" if notes else ""))
    count = check_size(f"emu_edit/{split}", len(out), subset=subset or drop_identical_captions or limit is not None,
                       where=path, notes=notes, dataset="Emu Edit", split=split)
    return EvalRecords(out, count)


MAGICBRUSH_COLUMNS: tuple[str, ...] = ("img_id", "turn_index", "source_img", "instruction", "target_img")


def _select_turns(records: list[EditEvalRecord], turns: str) -> list[EditEvalRecord]:
    if turns == "all":
        return records
    by_img: dict[str, list[EditEvalRecord]] = {}
    for r in records:
        by_img.setdefault(r.meta["img_id"], []).append(r)
    out = []
    for img_id in sorted(by_img):
        lst = sorted(by_img[img_id], key=lambda r: r.meta["turn_index"])
        out.append(lst[0] if turns == "first" else lst[-1])
    return out


def load_magicbrush_test(
    path: str | Path,
    *,
    split: str | None = "test",
    turns: str = "all",
    include_mask: bool = False,
    captions: str | Path | None = "global",
    subset: bool = False,
    limit: int | None = None,
) -> EvalRecords:
    """The MagicBrush test split with ground-truth targets, from parquet or from the official test zip.

    Layouts:
        * parquet (the HF schema: ``img_id``, ``turn_index``, ``source_img``, ``mask_img``, ``instruction``,
          ``target_img``), e.g. your own export of the test split; ``split`` picks the ``{split}-*`` files;
        * the official ``test.zip`` unpacked (password in the MagicBrush README): ``edit_sessions.json``
          (``{img_id: [{input, output, mask, instruction}, ...]}``), ``images/<img_id>/<files>`` and optional
          ``global_descriptions.json`` / ``local_descriptions.json`` (``{img_id: {file name: caption}}``).

    Args:
        turns: ``all`` (every turn, edited from its ground-truth input: the single-turn protocol), ``first`` (turn 1
            only) or ``last`` (each session's final turn).
        include_mask: keep the free-form mask (``record.mask()``).
        captions: folder layout only: ``global`` / ``local`` description file, a path, or None; fills
            ``input_caption`` / ``output_caption`` (needed for Emu-Edit-style CLIP-out on MagicBrush).
        subset: fewer than the published 535 sessions / 1,053 turns are intended.
        limit: keep the first N records after the turn selection (a subset).
    """
    if turns not in ("all", "first", "last"):
        raise DataSourceError(f"turns must be all | first | last, got {turns!r}")
    p = require_path(path, "MagicBrush test set", option="path")
    sessions = None
    if p.is_dir():
        sessions = p / "edit_sessions.json"
        if not sessions.is_file():
            nested = p / "test" / "edit_sessions.json"
            sessions = nested if nested.is_file() else None
    if sessions is not None:
        records = _magicbrush_folder(sessions, include_mask, captions)
    else:
        records = []
        try:
            files = dataset_files(p, split, option="path")
        except DataSourceError as exc:
            raise DataSourceError(
                f"MagicBrush: {exc}. The Hub parquet (osunlp/MagicBrush) has train and dev only: the test set is the "
                "official test.zip from the MagicBrush README (unpack it and pass its folder)"
            ) from exc
        for f in files:
            check_columns(f, MAGICBRUSH_COLUMNS + (("mask_img",) if include_mask else ()), dataset="MagicBrush")
        for f, i, row in iter_table_rows(files, list(MAGICBRUSH_COLUMNS) + ["mask_img"]):
            where = f"{f.name} row {i}"
            records.append(
                EditEvalRecord(
                    key=f"magicbrush-{row['img_id']}-{int(row['turn_index'])}",
                    dataset="magicbrush",
                    instruction=str(row["instruction"]),
                    source_ref=image_cell_bytes(row["source_img"], base_dir=f.parent, where=f"{where}, column 'source_img'"),
                    target_ref=image_cell_bytes(row["target_img"], base_dir=f.parent, where=f"{where}, column 'target_img'"),
                    mask_ref=image_cell_bytes(row["mask_img"], base_dir=f.parent, where=f"{where}, column 'mask_img'")
                    if include_mask else None,
                    meta={"img_id": str(row["img_id"]), "turn_index": int(row["turn_index"]), "file": f.name, "row": i},
                )
            )
    if not records:
        raise DataSourceError(f"MagicBrush: no records under {p}")
    chosen = _select_turns(records, turns)
    sessions = len({r.meta["img_id"] for r in records})
    key = "magicbrush/turns" if turns == "all" else "magicbrush/sessions"
    notes = [f"{sessions} sessions, {len(records)} turns on disk (turns={turns!r})"]
    count = check_size(key, len(chosen), subset=subset, where=p, notes=notes)  # the set on disk is complete
    if limit is not None:
        chosen = chosen[:limit]
        count = check_size(key, len(chosen), subset=True, where=p, notes=notes)
    return EvalRecords(chosen, count)


def _magicbrush_folder(sessions: Path, include_mask: bool, captions: str | Path | None) -> list[EditEvalRecord]:
    root = sessions.parent
    data = load_json(sessions)
    if not isinstance(data, dict):
        raise DataSourceError(f"{sessions}: expected {{img_id: [turns]}}")
    cap: dict[str, Any] = {}
    if captions is not None:
        cpath = root / f"{captions}_descriptions.json" if captions in ("global", "local") else Path(captions)
        if cpath.is_file():
            cap = load_json(cpath)
        elif captions not in ("global", "local"):
            raise DataSourceError(f"MagicBrush captions file not found: {cpath}")
    img_dir = root / "images"
    if not img_dir.is_dir():
        raise DataSourceError(f"MagicBrush: images folder {img_dir} not found (next to {sessions.name})")
    out = []
    for img_id in sorted(data, key=str):
        turns = data[img_id]
        for t, turn in enumerate(turns, 1):
            where = f"{sessions.name} session {img_id} turn {t}"
            for k in ("input", "output", "instruction"):
                if k not in turn:
                    raise DataSourceError(f"{where}: missing field '{k}' (has {sorted(turn)})")

            def file(name: str, where: str = where) -> Path:
                fp = img_dir / str(name).split("-")[0] / name
                if not fp.is_file():
                    raise DataSourceError(f"{where}: image {fp} not found")
                return fp

            c = cap.get(str(img_id), {}) if isinstance(cap, dict) else {}
            out.append(
                EditEvalRecord(
                    key=f"magicbrush-{img_id}-{t}",
                    dataset="magicbrush",
                    instruction=str(turn["instruction"]),
                    source_ref=file(turn["input"]),
                    target_ref=file(turn["output"]),
                    mask_ref=file(turn["mask"]) if include_mask and turn.get("mask") else None,
                    input_caption=c.get(turn["input"]),
                    output_caption=c.get(turn["output"]),
                    meta={"img_id": str(img_id), "turn_index": t},
                )
            )
    return out


# ------------------------------------------------------------------------------------------------------- MultiGen

CONTROL_EVAL_DATASETS: dict[str, str] = {
    "canny": "limingcv/MultiGen-20M_canny_eval",
    "hed": "limingcv/MultiGen-20M_canny_eval",
    "lineart": "limingcv/MultiGen-20M_canny_eval",
    "depth": "limingcv/MultiGen-20M_depth_eval",
    "seg": "limingcv/Captioned_ADE20K or limingcv/Captioned_COCOStuff",
}


@dataclass
class ControlEvalRecord:
    """One controllable-generation benchmark item (ControlNet++ protocol).

    ``image()``: the ground-truth image, RGB, resized to ``resolution`` x ``resolution`` (bicubic) when set.
    ``condition()``: the control map at the same size: canny = kornia Canny of ``image()``; hed / lineart = the
    detector on ``image()``; depth / seg = the condition column resized (bicubic, as ControlNet++ does).
    ``label()``: what the metric compares against: the condition itself (canny / hed / lineart), the depth column
    (depth), the segmentation label column (seg), or None; labels are resized with nearest (as ControlNet++ saves
    its annotations), except depth labels, returned at their stored size (the reference min-max normalises them
    there, then resizes: the control benchmark suite). ``label_ref`` is encoded image bytes, or a (H, W) uint8 array of
    class ids (the seg sets publish ``seg_map`` / ``panoptic_seg_map`` as ``list<list<uint8>>`` cells, not images).
    """

    key: str
    index: int
    cond_type: str
    prompt: str
    image_ref: bytes
    condition_ref: bytes | None = None
    label_ref: bytes | np.ndarray | None = None
    resolution: int | None = 512
    canny_low: float = 0.1
    canny_high: float = 0.2
    detector: Any = None
    meta: dict[str, Any] = field(default_factory=dict)

    def _size(self, im: Image.Image, resample: int) -> Image.Image:
        if self.resolution is None:
            return im
        return im.resize((self.resolution, self.resolution), resample)

    def image(self) -> Image.Image:
        return self._size(decode_image_bytes(self.image_ref, "RGB", where=f"{self.key} image"), Image.Resampling.BICUBIC)

    def condition(self) -> Image.Image:
        if self.cond_type == "canny":
            from .builders.detectors import canny_edges

            return canny_edges(self.image(), self.canny_low, self.canny_high)
        if self.cond_type in ("hed", "lineart"):
            return self.detector(self.image()).convert("RGB")
        assert self.condition_ref is not None
        im = decode_image_bytes(self.condition_ref, "RGB", where=f"{self.key} condition")
        return self._size(im, Image.Resampling.BICUBIC)

    def label(self) -> Image.Image | None:
        if self.cond_type in ("canny", "hed", "lineart"):
            return self.condition()
        if self.label_ref is None:
            return None
        if isinstance(self.label_ref, np.ndarray):
            im = Image.fromarray(self.label_ref, mode="L")
        else:
            im = decode_image_bytes(self.label_ref, None, where=f"{self.key} label")
        if self.cond_type == "depth":
            return im  # at its stored size: ControlNet++ normalises the depth label before any resize
        return self._size(im, Image.Resampling.NEAREST)


def _label_cell(value: Any, *, base_dir: Path, where: str) -> bytes | np.ndarray:
    """A label cell: an image cell (bytes / struct / path) or a ``list<list<uint8>>`` class-id map -> (H, W) uint8."""
    if isinstance(value, (list, tuple)):
        try:
            arr = np.asarray(value, dtype=np.int64)
        except ValueError as exc:  # ragged rows
            raise DataSourceError(f"{where}: label rows have different lengths ({exc})") from exc
        if arr.ndim != 2 or arr.size == 0:
            raise DataSourceError(f"{where}: expected a 2-D list of class ids, got shape {arr.shape}")
        if arr.min() < 0 or arr.max() > 255:
            raise DataSourceError(f"{where}: class ids outside 0..255 (min {arr.min()}, max {arr.max()})")
        return arr.astype(np.uint8)
    return image_cell_bytes(value, base_dir=base_dir, where=where)


def iter_multigen_eval(
    path: str | Path,
    cond_type: str,
    *,
    split: str | None = "validation",
    image_column: str = "image",
    prompt_column: str | None = None,
    condition_column: str | None = None,
    label_column: str | None = None,
    resolution: int | None = 512,
    canny_low: float = 0.1,
    canny_high: float = 0.2,
    detector: Any = None,
) -> Iterator[ControlEvalRecord]:
    """Stream a ControlNet++ evaluation set exported to parquet (``CONTROL_EVAL_DATASETS`` names the HF datasets).

    Column defaults follow ControlNet++'s ``eval/eval.py`` invocations: image ``image``; prompt ``text`` (MultiGen)
    or ``prompt`` (Captioned ADE20K / COCO-Stuff); canny / hed / lineart conditions are extracted from the image;
    depth uses ``control_depth`` as condition and label; seg uses ``control_seg`` as condition and ``seg_map``
    (ADE20K) or ``panoptic_seg_map`` (COCO-Stuff) as label. Record ``index`` is the row position in the split
    (ControlNet++'s file uid).

    Args:
        detector: an ``EdgeDetector`` (required for hed / lineart; ControlNet++ used ``ControlNetHED.pth`` and the
            ``Image-to-Line-Drawings`` model; for lineart pass one with ``invert=True``).
    """
    from .schema import COND_TYPES

    if cond_type not in COND_TYPES:
        raise DataSourceError(f"cond_type must be one of {COND_TYPES}, got {cond_type!r}")
    if cond_type in ("hed", "lineart") and detector is None:
        raise DataSourceError(
            f"MultiGen eval {cond_type!r}: the condition is extracted from the image; pass `detector` "
            "(an EdgeDetector, e.g. lit_cologen.data.builders.TorchEdgeDetector(<local model file>))"
        )
    files = dataset_files(path, split, option="path")
    cols = table_columns(files[0])
    pc = prompt_column or next((c for c in ("text", "prompt", "caption") if c in cols), None)
    if pc is None:
        raise DataSourceError(f"MultiGen eval: {files[0]} has no prompt column (text / prompt / caption; it has {cols})")
    cc = condition_column
    lc = label_column
    if cond_type == "depth":
        cc = cc or "control_depth"
        lc = lc or cc
    elif cond_type == "seg":
        cc = cc or "control_seg"
        lc = lc or next((c for c in ("seg_map", "panoptic_seg_map") if c in cols), None)
    required = [image_column, pc] + [c for c in (cc, lc) if c]
    for f in files:
        check_columns(f, required, dataset=f"MultiGen eval ({cond_type})")
    n = 0
    for f, i, row in iter_table_rows(files, required):
        where = f"{f.name} row {i}"
        yield ControlEvalRecord(
            key=f"{cond_type}-{n}",
            index=n,
            cond_type=cond_type,
            prompt=str(row[pc]),
            image_ref=image_cell_bytes(row[image_column], base_dir=f.parent, where=f"{where}, column {image_column!r}"),
            condition_ref=image_cell_bytes(row[cc], base_dir=f.parent, where=f"{where}, column {cc!r}") if cc else None,
            label_ref=_label_cell(row[lc], base_dir=f.parent, where=f"{where}, column {lc!r}") if lc else None,
            resolution=resolution,
            canny_low=canny_low,
            canny_high=canny_high,
            detector=detector,
            meta={"file": f.name, "row": i, "label_column": lc},
        )
        n += 1


def control_eval_key(cond_type: str, label_column: str | None) -> str:
    """The ``PUBLISHED_COUNTS`` key of a ControlNet++ eval set: canny / hed / lineart share the canny eval set; seg
    is ADE20K (label ``seg_map``) or COCO-Stuff (``panoptic_seg_map``)."""
    if cond_type == "seg":
        return "control/cocostuff" if label_column == "panoptic_seg_map" else "control/ade20k"
    return "control/multigen_depth" if cond_type == "depth" else "control/multigen_canny"


def load_multigen_eval(
    path: str | Path, cond_type: str, *, subset: bool = False, limit: int | None = None, **kwargs: Any
) -> EvalRecords:
    """``iter_multigen_eval(...)`` as a list, checked against the eval split's published size (``subset``: a smaller
    set is intended; ``limit``, the first N rows only, makes it one); raises if empty."""
    out = take_records(iter_multigen_eval(path, cond_type, **kwargs), limit)
    if not out:
        raise DataSourceError(f"MultiGen eval: no rows under {path}")
    split = kwargs.get("split", "validation")
    key = control_eval_key(cond_type, out[0].meta.get("label_column"))
    key = key if split == "validation" else f"{key}/{split}"  # only the validation splits have a published size
    count = check_size(key, len(out), subset=subset or limit is not None, where=path, dataset=key, split=str(split))
    return EvalRecords(out, count)


# ----------------------------------------------------------------------------------------------------- GEdit-Bench

GEDIT_COLUMNS: tuple[str, ...] = ("key", "task_type", "instruction", "instruction_language", "input_image")


def iter_gedit_bench(path: str | Path, *, language: str = "en") -> Iterator[EditEvalRecord]:
    """Stream GEdit-Bench (HF ``stepfun-ai/GEdit-Bench``) rows of one instruction language.

    The Hub repo publishes the ``datasets`` library's Arrow files (``save_to_disk`` layout:
    ``train/data-0000x-of-0000n.arrow`` + ``dataset_info.json`` / ``state.json``); parquet exports read the same.
    Columns: ``key``, ``task_type``, ``instruction``, ``instruction_language`` (``en`` / ``cn``), ``input_image``,
    optional ``Intersection_exist``. The record's ``task`` is the task type; ``meta`` has ``language``,
    ``intersection``, ``key``, ``file``, ``row``.
    """
    files = dataset_files(path, None, option="path")
    for f in files:
        check_columns(f, GEDIT_COLUMNS, dataset="GEdit-Bench")
    for f, i, row in iter_table_rows(files, list(GEDIT_COLUMNS) + ["Intersection_exist"]):
        if str(row["instruction_language"]).lower() != language.lower():
            continue
        where = f"{f.name} row {i}"
        yield EditEvalRecord(
            key=re.sub(r"[^A-Za-z0-9_.-]", "-", f"gedit-{language}-{row['key']}"),
            dataset="gedit",
            instruction=str(row["instruction"]),
            source_ref=image_cell_bytes(row["input_image"], base_dir=f.parent, where=f"{where}, column 'input_image'"),
            task=str(row["task_type"]),
            meta={"language": language, "intersection": bool(row.get("Intersection_exist") or False),
                  "key": str(row["key"]), "file": f.name, "row": i},
        )


def load_gedit_bench(
    path: str | Path, *, language: str = "en", subset: bool = False, limit: int | None = None
) -> EvalRecords:
    """``iter_gedit_bench(...)`` as a list, checked against the published 606 rows per language (``subset`` /
    ``limit`` as in ``load_emu_edit``)."""
    out = take_records(iter_gedit_bench(path, language=language), limit)
    if not out:
        raise DataSourceError(f"GEdit-Bench: no rows of language {language!r} under {path}")
    count = check_size(f"gedit/{language.lower()}", len(out), subset=subset or limit is not None, where=path,
                       dataset="GEdit-Bench", split=language)
    return EvalRecords(out, count)


__all__ = [
    "CONTROL_EVAL_DATASETS",
    "ControlEvalRecord",
    "DREAMBENCH_ENV",
    "DreamBenchPrompt",
    "EditEvalRecord",
    "EvalCount",
    "EvalRecords",
    "PUBLISHED_COUNTS",
    "PublishedSize",
    "check_size",
    "control_eval_key",
    "dreambench_root",
    "iter_emu_edit",
    "iter_gedit_bench",
    "iter_multigen_eval",
    "load_dreambench",
    "load_emu_edit",
    "load_gedit_bench",
    "load_magicbrush_test",
    "load_multigen_eval",
    "parse_dreambench_prompts",
]
