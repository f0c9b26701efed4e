"""Subject-customisation samples (paper 4.5, step 3) from Subjects200K (HF ``Yuanshi/Subjects200K``, parquet).

Each row holds one side-by-side composite of the same subject in two scenes. Columns used:

* ``image``: struct ``{bytes, path}`` (HF ``Image`` feature), the composite, W x H with W = 2 H (1056 x 528 for the
  512 px collections);
* ``description``: struct ``{item, description_0, description_1, category, description_valid}``;
* ``quality_assessment``: struct ``{compositeStructure, objectConsistency, imageQuality}`` (scores 0-5), may be null;
* ``collection``: ``collection_1`` / ``collection_2`` / ...

Splitting (``split_composite``) follows the dataset authors' own loader (OminiControl, ``src/train/data.py``,
``Subject200KDateset.__getitem__``, with ``padding=8`` and ``image_size=512`` for the 512 px collections): the panels
are squares of side S = H - 2b; the left one is the box ``(b, b, S + b, S + b)``, the right one
``(S + 2b, b, 2S + 2b, S + b)``. For a 1056 x 528 composite that is x = 8..520 and x = 528..1040 (not a cut at W / 2
with a symmetric border, which would read x = 536..1048: 8 px of the right panel lost, 8 px of padding taken in).
Set ``border=0`` for unpadded composites.

Each row yields up to two samples (``directions="both"``): reference (source) = one panel, target = the other
panel, prompt = the target panel's description (``description_0`` for the left, ``description_1`` for the right).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image

from ..schema import Sample
from ._common import (
    DataSourceError,
    ErrorPolicy,
    checked_training_files,
    image_cell,
    iter_table_rows,
    limit_size,
    part_items,
    safe_key,
    take,
)

QUALITY_KEYS: tuple[str, ...] = ("compositeStructure", "objectConsistency", "imageQuality")


def split_composite(image: Image.Image, border: int = 8) -> tuple[Image.Image, Image.Image]:
    """Split a side-by-side composite (W x H) into its (left, right) square panels of side S = H - 2b.

    The left panel is the box ``(b, b, S + b, S + b)``, the right one ``(S + 2b, b, 2S + 2b, S + b)``: the dataset
    authors' loader (module docstring). Raises when W < 2S + 2b (the composite cannot hold two panels).
    """
    w, h = image.size
    side = h - 2 * border
    if border < 0 or side <= 0 or w < 2 * side + 2 * border:
        raise DataSourceError(f"composite {w}x{h} is too small for two square panels with border {border}")
    left = image.crop((border, border, side + border, side + border))
    right = image.crop((side + 2 * border, border, 2 * side + 2 * border, side + border))
    return left, right


def passes_quality(qa: dict[str, Any] | None, min_quality: int | None, keys: Sequence[str] = QUALITY_KEYS) -> bool:
    """The dataset card's filter: every score in ``keys`` >= ``min_quality`` (rows without scores fail)."""
    if min_quality is None:
        return True
    if not qa:
        return False
    return all((qa.get(k) if qa.get(k) is not None else -1) >= min_quality for k in keys)


def build_subject200k(
    root: str | Path,
    *,
    split: str | None = "train",
    border: int = 8,
    directions: str = "both",
    min_quality: int | None = None,
    collections: Sequence[str] | None = None,
    require_valid_description: bool = True,
    max_side: int | None = None,
    seed: int = 0,
    max_samples: int | None = None,
    part: int = 0,
    num_parts: int = 1,
    on_error: str = "raise",
    allow_eval_split: bool = False,
) -> Iterator[Sample]:
    """Subject samples from the Subjects200K parquet files.

    Args:
        root: a parquet file or the dataset folder (``data/train-*.parquet``).
        split: file prefix to keep (``train``).
        border: padding around each panel, px (see ``split_composite``).
        directions: ``both`` (left->right and right->left), ``left_to_right`` (reference = left panel) or
            ``right_to_left``.
        min_quality: keep rows whose three quality scores are all >= this (the card suggests 5); None keeps all.
        collections: keep only these ``collection`` values (e.g. ``["collection_2"]``); None keeps all.
        require_valid_description: drop rows whose ``description.description_valid`` is False.
        allow_eval_split: let an evaluation split (``dev``, ``validation``, ``test``, ``val2017``...) into training
            samples; off by default, so the eval sets of the paper's tables never leak into training shards.
        max_side, seed, max_samples, part, num_parts, on_error: as in the other builders (``seed`` is unused:
            no random choice is made).

    Yields:
        ``Sample(task="subject")``: source = reference panel, target = other panel (RGB, same size).
    """
    if directions not in ("both", "left_to_right", "right_to_left"):
        raise DataSourceError(f"option `directions` must be both | left_to_right | right_to_left, got {directions!r}")
    files = checked_training_files(
        root, split, ("image", "description"), dataset="Subjects200K", allow_eval_split=allow_eval_split
    )
    policy = ErrorPolicy(on_error, "subject200k")
    wanted = set(collections) if collections else None

    def gen() -> Iterator[Sample]:
        rows = iter_table_rows(files, ["image", "description", "quality_assessment", "collection"])
        for _, (f, i, row) in part_items(rows, part, num_parts):
            where = f"{f.name} row {i}"
            desc = _kept_description(row, policy, where, wanted, min_quality, require_valid_description)
            if desc is None:
                continue
            got = policy.guard(partial(_panels, row, f, where, border), where)
            if got is None:
                continue
            left, right = (limit_size(p, max_side) for p in got)
            base_meta = {
                "dataset": "subject200k",
                "file": f.name,
                "row": i,
                "item": desc.get("item"),
                "category": desc.get("category"),
                "collection": row.get("collection"),
                "quality": row.get("quality_assessment"),
            }
            for tag, ref, tgt, field in _directed_pairs(left, right, directions):
                prompt = desc.get(field)
                if not prompt:
                    policy.handle(DataSourceError(f"description.{field} is empty"), where)
                    continue
                yield Sample(
                    key=safe_key("subject200k", f.stem, i, tag), task="subject", prompt=str(prompt).strip(),
                    target=tgt, source=ref, meta=dict(base_meta, direction=tag, border=border),
                ).validate()

    return take(gen(), max_samples)


def _kept_description(
    row: dict[str, Any], policy: ErrorPolicy, where: str, wanted: set[str] | None, min_quality: int | None,
    require_valid: bool,
) -> dict[str, Any] | None:
    """The ``description`` struct of a row that passes the filters (``collection`` in ``wanted``, ``passes_quality``,
    ``description_valid`` not False when ``require_valid``), else None; a description that is no struct is an item
    error for ``policy``."""
    if wanted is not None and row.get("collection") not in wanted:
        return None
    if not passes_quality(row.get("quality_assessment"), min_quality):
        return None
    desc = row.get("description") or {}
    if not isinstance(desc, dict):
        policy.handle(DataSourceError(f"column 'description' is {type(desc).__name__}, expected a struct"), where)
        return None
    if require_valid and desc.get("description_valid") is False:
        return None
    return desc


def _panels(row: dict[str, Any], f: Path, where: str, border: int) -> tuple[Image.Image, Image.Image]:
    """The (left, right) panels of a row's composite ``image`` cell (``split_composite``)."""
    img = image_cell(row["image"], base_dir=f.parent, where=f"{where}, column 'image'")
    return split_composite(img, border)


def _directed_pairs(
    left: Image.Image, right: Image.Image, directions: str
) -> list[tuple[str, Image.Image, Image.Image, str]]:
    """``(tag, reference, target, description field of the target)`` for each of the ``directions``."""
    pairs = []
    if directions in ("both", "left_to_right"):
        pairs.append(("l2r", left, right, "description_1"))
    if directions in ("both", "right_to_left"):
        pairs.append(("r2l", right, left, "description_0"))
    return pairs
