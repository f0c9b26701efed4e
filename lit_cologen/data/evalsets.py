"""Evaluation sets of the paper's tables, read from local files (nothing is downloaded).

* DreamBench (Table 4, 7): ``load_dreambench`` -> 750 ``DreamBenchPrompt`` (30 subjects x 25 prompts).
* Emu Edit test split (Table 2): ``load_emu_edit`` / ``iter_emu_edit`` -> ``EditEvalRecord`` (no ground truth).
* MagicBrush test split (Table 2, 5): ``load_magicbrush_test`` -> ``EditEvalRecord`` with the ground-truth target.
* MultiGen-20M eval in the ControlNet++ layout (Table 3, 6): ``load_multigen_eval`` / ``iter_multigen_eval`` ->
  ``ControlEvalRecord`` (image, prompt, condition, label).

Image-bearing records keep the *encoded* bytes (or the file path) and decode on demand (``record.source()``...), so a
3,589-row split does not sit decoded in memory. Every loader raises ``DataSourceError`` naming the missing path or
column. Where to get each set: data/BUILDERS.md, section "Evaluation sets".
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from .builders._common import (
    DataSourceError,
    check_columns,
    decode_image_bytes,
    image_cell_bytes,
    iter_parquet_rows,
    load_json,
    open_image,
    parquet_columns,
    parquet_files,
    require_path,
)

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


# the downscaled copy that sits next to a checkout of this project (``<repo>/../shared/datasets/dreambench``)
BUNDLED_DREAMBENCH = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "dreambench"


def default_dreambench_path() -> Path | None:
    """``$COLOGEN_DREAMBENCH``, else the copy next to the checkout when it exists, else None."""
    env = os.environ.get(DREAMBENCH_ENV)
    if env:
        return Path(env)
    return BUNDLED_DREAMBENCH if (BUNDLED_DREAMBENCH / "prompts_and_classes.txt").is_file() else None


def dreambench_root(path: str | Path | None = None) -> Path:
    """The DreamBench folder: ``path``, else ``$COLOGEN_DREAMBENCH``, else the copy next to the checkout; a repo root
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
) -> list[DreamBenchPrompt]:
    """All DreamBench prompts: one record per (subject, prompt), subjects in file order, prompts in list order.

    Args:
        path: the DreamBench folder (default ``$COLOGEN_DREAMBENCH``).
        references: ``first`` (the subject's ``00.jpg``, the OmniGen / Kosmos-G protocol) or ``all`` (every image).
        unique_token: the ``{0}`` of DreamBooth's templates (``sks`` in DreamBooth).
        live_classes: class nouns that use the live-subject prompt list.
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
    return out


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
    path: str | Path, *, split: str = "test", drop_identical_captions: bool = False
) -> Iterator[EditEvalRecord]:
    """Stream the Emu Edit benchmark from local parquet files (HF ``facebook/emu_edit_test_set``).

    Columns: ``instruction``, ``image`` (the input), ``task``, ``split``, ``idx``, ``hash``, ``input_caption``,
    ``output_caption`` (``image_url`` in older revisions). There are no ground-truth outputs; an ``edited_image``
    column (``facebook/emu_edit_test_set_generations``: Emu Edit's own outputs, not a ground truth) is kept as
    ``record.extra("emu_edit_output")``.

    ``split`` keeps the files named ``{split}-*.parquet`` and, when a ``split`` column exists, the rows whose
    ``split`` equals it. The official test split has 3,589 rows (validation 2,022); the generations repo is known
    to swap the two split names, hence the row-level check.

    Args:
        drop_identical_captions: skip rows whose input and output captions are equal (a known defect of some rows,
            removed by some papers; off by default to keep the full split).
    """
    files = parquet_files(path, split, option="path")
    for f in files:
        check_columns(f, EMU_EDIT_COLUMNS, dataset="Emu Edit")
    for f, i, row in iter_parquet_rows(files):
        if "split" in row and row["split"] is not None and split and row["split"] != split:
            continue
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


def load_emu_edit(path: str | Path, **kwargs: Any) -> list[EditEvalRecord]:
    """``list(iter_emu_edit(...))``; raises if the split is empty."""
    out = list(iter_emu_edit(path, **kwargs))
    if not out:
        raise DataSourceError(f"Emu Edit: no rows for split {kwargs.get('split', 'test')!r} under {path}")
    return out


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
) -> list[EditEvalRecord]:
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
        files = parquet_files(p, split, option="path")
        for f in files:
            check_columns(f, MAGICBRUSH_COLUMNS + (("mask_img",) if include_mask else ()), dataset="MagicBrush")
        for f, i, row in iter_parquet_rows(files, list(MAGICBRUSH_COLUMNS) + ["mask_img"]):
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
    return _select_turns(records, turns)


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
    its annotations).
    """

    key: str
    index: int
    cond_type: str
    prompt: str
    image_ref: bytes
    condition_ref: bytes | None = None
    label_ref: bytes | None = None
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
        im = decode_image_bytes(self.label_ref, None, where=f"{self.key} label")
        return self._size(im, Image.Resampling.NEAREST)


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
    files = parquet_files(path, split, option="path")
    cols = parquet_columns(files[0])
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
    for f, i, row in iter_parquet_rows(files, required):
        where = f"{f.name} row {i}"
        yield ControlEvalRecord(
            key=f"{cond_type}-{n}",
            index=n,
            cond_type=cond_type,
            prompt=str(row[pc]),
            image_ref=image_cell_bytes(row[image_column], base_dir=f.parent, where=f"{where}, column {image_column!r}"),
            condition_ref=image_cell_bytes(row[cc], base_dir=f.parent, where=f"{where}, column {cc!r}") if cc else None,
            label_ref=image_cell_bytes(row[lc], base_dir=f.parent, where=f"{where}, column {lc!r}") if lc else None,
            resolution=resolution,
            canny_low=canny_low,
            canny_high=canny_high,
            detector=detector,
            meta={"file": f.name, "row": i},
        )
        n += 1


def load_multigen_eval(path: str | Path, cond_type: str, **kwargs: Any) -> list[ControlEvalRecord]:
    """``list(iter_multigen_eval(...))``; raises if empty."""
    out = list(iter_multigen_eval(path, cond_type, **kwargs))
    if not out:
        raise DataSourceError(f"MultiGen eval: no rows under {path}")
    return out


__all__ = [
    "CONTROL_EVAL_DATASETS",
    "ControlEvalRecord",
    "DREAMBENCH_ENV",
    "DreamBenchPrompt",
    "EditEvalRecord",
    "dreambench_root",
    "iter_emu_edit",
    "iter_multigen_eval",
    "load_dreambench",
    "load_emu_edit",
    "load_magicbrush_test",
    "load_multigen_eval",
    "parse_dreambench_prompts",
]
