"""Instruction-editing samples (paper 4.5, step 4): MagicBrush, OmniEdit and in-house folders.

``source`` = the image to edit, ``target`` = the edited image, ``prompt`` = the instruction. A source / target size
mismatch is resolved by resizing the target to the source (Lanczos) and recording ``meta["target_resized"]``.

Accepted layouts (see data/BUILDERS.md):

* MagicBrush (HF ``osunlp/MagicBrush`` parquet, ``data/{train,dev}-*.parquet``): columns ``img_id``,
  ``turn_index``, ``source_img``, ``mask_img``, ``instruction``, ``target_img`` (images as ``{bytes, path}``
  structs). Each row is one turn; multi-turn sessions give one sample per turn (its own input image).
  ``include_mask=True`` adds the free-form mask (white = edited region) as the sample mask.
* OmniEdit (HF ``TIGER-Lab/OmniEdit-Filtered-1.2M`` parquet): columns ``omni_edit_id``, ``task``, ``src_img``,
  ``edited_img``, ``edited_prompt_list`` (several phrasings of the instruction; one is drawn per sample) and the
  scores ``sc_score_1``, ``sc_score_2``, ``pq_score``, ``o_score`` (optional filters). A plain ``instruction``
  string column is accepted instead of ``edited_prompt_list``.
* Folder (in-house pairs): ``NAME_source.<ext>`` + ``NAME_target.<ext>`` + ``NAME.txt`` (the instruction), or one
  ``pairs.jsonl`` with ``{"source": path, "target": path, "instruction": text}`` (+ optional ``"mask"``, ``"id"``);
  paths relative to the folder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..schema import Sample
from ._common import (
    IMAGE_EXTS,
    DataSourceError,
    ErrorPolicy,
    check_columns,
    checked_training_files,
    image_cell,
    iter_table_rows,
    limit_size,
    load_json_records,
    open_image,
    part_items,
    require_path,
    safe_key,
    sample_rng,
    take,
    training_files,
)


def edit_sample(
    key: str,
    source: Image.Image,
    target: Image.Image,
    instruction: str,
    *,
    mask: Image.Image | None = None,
    max_side: int | None = None,
    meta: dict[str, Any],
) -> Sample:
    """Assemble an edit Sample; the target (and mask) are fitted to the source size (W x H)."""
    if not instruction or not str(instruction).strip():
        raise DataSourceError(f"sample {key}: empty instruction")
    src = limit_size(source.convert("RGB"), max_side)
    tgt = target.convert("RGB")
    resized = tgt.size != src.size
    if resized:
        tgt = tgt.resize(src.size, Image.Resampling.LANCZOS)
    m = None
    if mask is not None:
        g = mask.convert("L")
        if g.size != src.size:
            g = g.resize(src.size, Image.Resampling.NEAREST)
        m = Image.fromarray(np.where(np.asarray(g) > 127, 255, 0).astype(np.uint8), mode="L")
    return Sample(
        key=key, task="edit", prompt=" ".join(str(instruction).split()), target=tgt, source=src, mask=m,
        meta=dict(meta, target_resized=resized),
    ).validate()


# ---------------------------------------------------------------------------------------------------- MagicBrush

MAGICBRUSH_COLUMNS: tuple[str, ...] = ("img_id", "turn_index", "source_img", "instruction", "target_img")


def build_magicbrush(
    root: str | Path,
    *,
    split: str | None = "train",
    include_mask: bool = False,
    max_side: int | None = None,
    seed: int = 0,
    max_samples: int | None = None,
    part: int = 0,
    num_parts: int = 1,
    on_error: str = "raise",
    allow_eval_split: bool = False,
) -> Iterator[Sample]:
    """Edit samples from MagicBrush parquet files (one per turn).

    Args:
        root: a parquet file or the dataset folder; ``split`` picks ``{split}-*.parquet`` (``train`` / ``dev``).
        include_mask: attach ``mask_img`` (white = region edited) as the sample mask ('L', 255 = edit).
        allow_eval_split: let an evaluation split (``dev``, ``validation``, ``test``, ``val2017``...) into training
            samples; off by default, so the eval sets of the paper's tables never leak into training shards.
        max_side, seed, max_samples, part, num_parts, on_error: as in the other builders.
    """
    files = checked_training_files(
        root, split, MAGICBRUSH_COLUMNS + (("mask_img",) if include_mask else ()), dataset="MagicBrush",
        allow_eval_split=allow_eval_split,
    )
    policy = ErrorPolicy(on_error, "magicbrush")

    def jobs() -> Iterator[tuple[Callable[[], Sample], str]]:
        rows = iter_table_rows(files, list(MAGICBRUSH_COLUMNS) + ["mask_img"])
        for _, (f, i, row) in part_items(rows, part, num_parts):
            where = f"{f.name} row {i} (img_id {row.get('img_id')}, turn {row.get('turn_index')})"

            def one(row=row, where=where, f=f) -> Sample:
                src = image_cell(row["source_img"], base_dir=f.parent, where=f"{where}, column 'source_img'")
                tgt = image_cell(row["target_img"], base_dir=f.parent, where=f"{where}, column 'target_img'")
                mask = None
                if include_mask:
                    mask = image_cell(row["mask_img"], base_dir=f.parent, where=f"{where}, column 'mask_img'", mode="L")
                key = safe_key("magicbrush", split or f.stem, row["img_id"], row["turn_index"])
                return edit_sample(
                    key, src, tgt, row["instruction"], mask=mask, max_side=max_side,
                    meta={"dataset": "magicbrush", "img_id": str(row["img_id"]), "turn_index": int(row["turn_index"]),
                          "file": f.name, "row": i},
                )

            yield one, where

    return take(policy.results(jobs()), max_samples)


# ------------------------------------------------------------------------------------------------------ OmniEdit


def _score_ok(row: dict[str, Any], column: str, minimum: float | None) -> bool:
    if minimum is None:
        return True
    v = row.get(column)
    return v is not None and float(v) >= minimum


def build_omniedit(
    root: str | Path,
    *,
    split: str | None = "train",
    tasks: Sequence[str] | None = None,
    min_o_score: float | None = None,
    min_sc_score: float | None = None,
    min_pq_score: float | None = None,
    max_side: int | None = None,
    seed: int = 0,
    max_samples: int | None = None,
    part: int = 0,
    num_parts: int = 1,
    on_error: str = "raise",
    allow_eval_split: bool = False,
) -> Iterator[Sample]:
    """Edit samples from OmniEdit parquet files.

    Args:
        root: a parquet file or the dataset folder (``data/train-*.parquet``, ``data/dev-*.parquet``).
        tasks: keep only these OmniEdit ``task`` values (e.g. ``["addition", "removal"]``); None keeps all.
        min_o_score / min_sc_score / min_pq_score: keep rows whose ``o_score`` / both ``sc_score_1`` and
            ``sc_score_2`` / ``pq_score`` reach the value (rows lacking a filtered score are dropped).
        allow_eval_split: let an evaluation split (``dev``, ``validation``, ``test``, ``val2017``...) into training
            samples; off by default, so the eval sets of the paper's tables never leak into training shards.
        max_side, seed, max_samples, part, num_parts, on_error: as in the other builders; ``seed`` drives the
            choice among ``edited_prompt_list`` phrasings.
    """
    files = training_files(root, split, dataset="OmniEdit", allow_eval_split=allow_eval_split)
    for f in files:
        cols = check_columns(f, ("src_img", "edited_img"), dataset="OmniEdit")
        if "edited_prompt_list" not in cols and "instruction" not in cols:
            raise DataSourceError(f"OmniEdit: parquet file {f} has neither 'edited_prompt_list' nor 'instruction' ({cols})")
        for col, lim in (("o_score", min_o_score), ("sc_score_1", min_sc_score), ("pq_score", min_pq_score)):
            if lim is not None and col not in cols:
                raise DataSourceError(f"OmniEdit: filter on {col!r} requested but {f} lacks that column ({cols})")
    policy = ErrorPolicy(on_error, "omniedit")
    keep_tasks = set(tasks) if tasks else None

    def jobs() -> Iterator[tuple[Callable[[], Sample], str]]:
        for _, (f, i, row) in part_items(iter_table_rows(files), part, num_parts):
            if keep_tasks is not None and row.get("task") not in keep_tasks:
                continue
            if not (
                _score_ok(row, "o_score", min_o_score)
                and _score_ok(row, "sc_score_1", min_sc_score)
                and _score_ok(row, "sc_score_2", min_sc_score)
                and _score_ok(row, "pq_score", min_pq_score)
            ):
                continue
            rid = row.get("omni_edit_id") or f"{f.stem}-{i}"
            where = f"{f.name} row {i} (omni_edit_id {rid})"

            def one(row=row, where=where, f=f, rid=rid) -> Sample:
                key = safe_key("omniedit", rid)
                prompts = row.get("edited_prompt_list")
                if prompts is None:
                    prompts = [row.get("instruction")]
                if isinstance(prompts, str):
                    prompts = [prompts]
                prompts = [p for p in prompts if p and str(p).strip()]
                if not prompts:
                    raise DataSourceError(f"{where}: no instruction (column 'edited_prompt_list' / 'instruction')")
                k = int(sample_rng(seed, key).integers(len(prompts)))
                src = image_cell(row["src_img"], base_dir=f.parent, where=f"{where}, column 'src_img'")
                tgt = image_cell(row["edited_img"], base_dir=f.parent, where=f"{where}, column 'edited_img'")
                meta = {"dataset": "omniedit", "id": str(rid), "edit_task": row.get("task"), "prompt_index": k,
                        "file": f.name, "row": i}
                for sc in ("sc_score_1", "sc_score_2", "pq_score", "o_score"):
                    if row.get(sc) is not None:
                        meta[sc] = row[sc]
                return edit_sample(key, src, tgt, prompts[k], max_side=max_side, meta=meta)

            yield one, where

    return take(policy.results(jobs()), max_samples)


# -------------------------------------------------------------------------------------------------------- folder


def _find_with_ext(folder: Path, stem: str) -> Path | None:
    for ext in IMAGE_EXTS:
        p = folder / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


def build_edit_folder(
    root: str | Path,
    *,
    dataset: str = "inhouse",
    max_side: int | None = None,
    seed: int = 0,
    max_samples: int | None = None,
    part: int = 0,
    num_parts: int = 1,
    on_error: str = "raise",
) -> Iterator[Sample]:
    """Edit samples from a folder of pairs (``NAME_source``/``NAME_target`` + ``NAME.txt``, or ``pairs.jsonl``).

    Args:
        root: the folder.
        dataset: label for keys and meta.
        max_side, seed, max_samples, part, num_parts, on_error: as in the other builders.
    """
    root = require_path(root, "editing folder", option="root", kind="dir")
    items: list[tuple[str, Path, Path, str | None, Path | None, str]] = []  # id, src, tgt, instruction, mask, where
    manifest = root / "pairs.jsonl"
    if manifest.is_file():
        for ln, rec in enumerate(load_json_records(manifest), 1):
            where = f"{manifest} line {ln}"
            for k in ("source", "target", "instruction"):
                if not rec.get(k):
                    raise DataSourceError(f"{where}: missing field '{k}' (has {sorted(rec)})")
            rid = str(rec.get("id") or Path(str(rec["source"])).stem)
            mask = root / rec["mask"] if rec.get("mask") else None
            items.append((rid, root / rec["source"], root / rec["target"], str(rec["instruction"]), mask, where))
    else:
        for p in sorted(root.iterdir()):
            if p.suffix.lower() not in IMAGE_EXTS or not p.stem.endswith("_source"):
                continue
            stem = p.stem[: -len("_source")]
            tgt = _find_with_ext(root, f"{stem}_target")
            if tgt is None:
                raise DataSourceError(f"{p}: no matching {stem}_target.<png|jpg|...> in {root}")
            txt = root / f"{stem}.txt"
            if not txt.is_file():
                raise DataSourceError(f"{p}: no instruction file {txt.name} in {root}")
            mask = _find_with_ext(root, f"{stem}_mask")
            items.append((stem, p, tgt, txt.read_text(encoding="utf-8").strip(), mask, str(p)))
        if not items:
            raise DataSourceError(f"editing folder {root}: no pairs.jsonl and no NAME_source.<ext> files")
    policy = ErrorPolicy(on_error, dataset)

    def jobs() -> Iterator[tuple[Callable[[], Sample], str]]:
        for _, (rid, src, tgt, instr, mask, where) in part_items(items, part, num_parts):

            def one(rid=rid, src=src, tgt=tgt, instr=instr, mask=mask) -> Sample:
                m = open_image(mask, "L") if mask is not None else None
                return edit_sample(
                    safe_key(dataset, rid), open_image(src), open_image(tgt), instr or "", mask=m, max_side=max_side,
                    meta={"dataset": dataset, "id": rid, "source_file": src.name, "target_file": tgt.name},
                )

            yield one, where

    return take(policy.results(jobs()), max_samples)

