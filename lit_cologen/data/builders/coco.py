"""COCO-format annotations: RLE (compressed and uncompressed) and polygon masks, and an index over a JSON file.

Used by the inpainting builder (COCO, COCO-Stuff) and the grounding builders (RefCOCO family, LVIS). Our own RLE
codec follows the pycocotools definition (``maskApi.c``: ``rleFrString`` / ``rleToString``), so pycocotools is not a
dependency:

* a mask ``M`` of shape ``(h, w)`` is flattened in column-major (Fortran) order;
* ``counts`` alternates run lengths of 0s and 1s, starting with 0s (a mask starting with 1 has ``counts[0] == 0``);
* uncompressed RLE stores ``counts`` as a list of ints (COCO ``iscrowd=1`` annotations);
* compressed RLE stores them as an ASCII string: each count (from the 4th on, as the difference to the count two
  places back) is cut into 5-bit groups, least significant first; each group becomes ``chr(48 + g)`` with bit 0x20 set
  on every group but the last, and the last group's bit 0x10 carries the sign.

Polygons (``[[x1, y1, x2, y2, ...], ...]`` in pixel coordinates) are rasterised with PIL (pixels whose centre-ish
area is covered; boundary pixels may differ by one from pycocotools' 5x-upsampled rasteriser).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ._common import DataSourceError, clean_class_name, load_json

# ------------------------------------------------------------------------------------------------------------ RLE


def rle_string_to_counts(s: str | bytes) -> list[int]:
    """Decode a compressed COCO RLE ``counts`` string to the list of run lengths."""
    if isinstance(s, (bytes, bytearray)):
        s = s.decode("ascii")
    counts: list[int] = []
    p = 0
    n = len(s)
    while p < n:
        x = 0
        k = 0
        more = True
        while more:
            if p >= n:
                raise DataSourceError(f"truncated compressed RLE string {s[:40]!r}...")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise DataSourceError(f"invalid character {s[p]!r} in compressed RLE string")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_counts_to_string(counts: Sequence[int]) -> str:
    """Encode run lengths as a compressed COCO RLE string (inverse of ``rle_string_to_counts``)."""
    out: list[str] = []
    for i, c in enumerate(counts):
        x = int(c)
        if i > 2:
            x -= int(counts[i - 2])
        more = True
        while more:
            g = x & 0x1F
            x >>= 5  # arithmetic shift: -1 stays -1
            more = (x != -1) if (g & 0x10) else (x != 0)
            if more:
                g |= 0x20
            out.append(chr(g + 48))
    return "".join(out)


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """Decode a COCO RLE dict ``{"size": [h, w], "counts": str | list[int]}`` to a bool mask of shape (h, w)."""
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataSourceError(f"RLE must have 'size' [h, w] and 'counts', got keys {list(rle)}") from exc
    if isinstance(counts, (str, bytes, bytearray)):
        counts = rle_string_to_counts(counts)
    runs = np.asarray(counts, dtype=np.int64)
    if (runs < 0).any():
        raise DataSourceError("RLE has negative run lengths")
    total = int(runs.sum())
    if total != h * w:
        raise DataSourceError(f"RLE run lengths sum to {total}, expected h*w = {h}*{w} = {h * w}")
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, runs)
    return flat.reshape((w, h)).T.copy()  # column-major -> (h, w)


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """Encode a bool/0-1 mask (h, w) as a compressed COCO RLE dict (``counts`` as str, like pycocotools)."""
    m = np.asarray(mask).astype(bool)
    if m.ndim != 2:
        raise DataSourceError(f"rle_encode expects a 2-D mask, got shape {m.shape}")
    h, w = m.shape
    flat = m.T.reshape(-1)  # column-major
    # run boundaries
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0] + runs
    return {"size": [h, w], "counts": rle_counts_to_string(runs)}


# ------------------------------------------------------------------------------------------------------- polygons


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons (a list of flat ``[x1, y1, x2, y2, ...]`` lists) to a bool mask (height, width)."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        pts = [float(v) for v in poly]
        if len(pts) < 6 or len(pts) % 2:
            continue  # degenerate polygon (fewer than 3 points)
        draw.polygon(list(zip(pts[0::2], pts[1::2])), fill=1, outline=1)
    return np.asarray(canvas, dtype=np.uint8).astype(bool)


def decode_segmentation(seg: Any, height: int, width: int, *, where: str = "") -> np.ndarray:
    """Decode any COCO ``segmentation`` (polygons, uncompressed RLE, compressed RLE) to a bool mask (height, width)."""
    if isinstance(seg, dict):
        try:
            m = rle_decode(seg)
        except DataSourceError as exc:
            raise DataSourceError(f"{where}: {exc}") from exc
        if m.shape != (height, width):
            raise DataSourceError(f"{where}: RLE size {list(m.shape)} does not match the image size {[height, width]}")
        return m
    if isinstance(seg, (list, tuple)):
        if seg and isinstance(seg[0], (int, float)):
            seg = [seg]  # a single flat polygon (the lmms-lab RefCOCO export)
        return polygons_to_mask(seg, height, width)
    raise DataSourceError(f"{where}: unsupported segmentation type {type(seg).__name__}")


def bbox_of_mask(mask: np.ndarray) -> list[float] | None:
    """COCO box ``[x, y, w, h]`` (pixels, float) enclosing a bool mask, or None for an empty mask."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


# ---------------------------------------------------------------------------------------------------------- index


@dataclass
class CocoIndex:
    """A COCO-format JSON file (``images``, ``annotations``, ``categories``) indexed by image id.

    Several files with the same image ids (e.g. ``instances_train2017.json`` + ``stuff_train2017.json``) can be
    merged with ``CocoIndex.load([a, b])``.
    """

    images: dict[Any, dict[str, Any]] = field(default_factory=dict)
    anns_by_image: dict[Any, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    categories: dict[Any, dict[str, Any]] = field(default_factory=dict)
    sources: list[Path] = field(default_factory=list)

    @classmethod
    def load(cls, paths: Path | Sequence[Path]) -> "CocoIndex":
        if isinstance(paths, (str, Path)):
            paths = [Path(paths)]
        idx = cls()
        for p in paths:
            data = load_json(Path(p))
            if not isinstance(data, dict):
                raise DataSourceError(f"{p}: expected a COCO-format JSON object")
            for key in ("images", "annotations"):
                if key not in data:
                    raise DataSourceError(f"{p}: COCO-format JSON lacks the '{key}' list (has {sorted(data)})")
            if any(isinstance(a, dict) and "segments_info" in a for a in data["annotations"][:1]):
                raise DataSourceError(
                    f"{p} is a COCO panoptic JSON (its annotations carry 'segments_info' and no 'segmentation', so "
                    "every sample would lack its mask); pass the instances / stuff JSON (instances_*.json, "
                    "stuff_*.json) instead"
                )
            idx.add(data, Path(p))
        return idx

    def add(self, data: dict[str, Any], source: Path) -> None:
        self.sources.append(source)
        for im in data["images"]:
            if "id" not in im:
                raise DataSourceError(f"{source}: an image entry lacks 'id': {str(im)[:120]}")
            self.images.setdefault(im["id"], im)
        for cat in data.get("categories", []):
            self.categories.setdefault(cat["id"], cat)
        for ann in data["annotations"]:
            if "image_id" not in ann:
                raise DataSourceError(f"{source}: annotation {ann.get('id')} lacks 'image_id'")
            self.anns_by_image[ann["image_id"]].append(ann)

    def class_name(self, category_id: Any) -> str:
        cat = self.categories.get(category_id)
        if cat is None:
            return "object"
        return clean_class_name(str(cat.get("name", "object")))

    def image_size(self, image: dict[str, Any], fallback: tuple[int, int] | None = None) -> tuple[int, int]:
        """(height, width) of an image entry (from the JSON, else the decoded image size ``fallback`` (w, h))."""
        if "height" in image and "width" in image:
            return int(image["height"]), int(image["width"])
        if fallback is None:
            raise DataSourceError(f"image {image.get('id')} has no height/width in {self.sources}")
        return fallback[1], fallback[0]


def image_file_candidates(image: dict[str, Any]) -> list[str]:
    """Relative file names to try for a COCO/LVIS image entry (LVIS v1 has only ``coco_url``)."""
    names: list[str] = []
    if image.get("file_name"):
        names.append(str(image["file_name"]))
    url = image.get("coco_url") or image.get("flickr_url") or ""
    if url:
        parts = url.rstrip("/").split("/")
        if len(parts) >= 2:
            names.append(f"{parts[-2]}/{parts[-1]}")  # e.g. train2017/000000391895.jpg
        names.append(parts[-1])
    if names:
        base = Path(names[0]).name
        if base not in names:
            names.append(base)
    return names


def resolve_image_file(image: dict[str, Any], image_dirs: Sequence[Path]) -> Path:
    """Find an image entry's file under any of ``image_dirs``; the error lists every path tried."""
    tried: list[str] = []
    for d in image_dirs:
        for name in image_file_candidates(image):
            p = d / name
            tried.append(str(p))
            if p.is_file():
                return p
    raise DataSourceError(
        f"image {image.get('id')} ({image.get('file_name') or image.get('coco_url')}): file not found; tried {tried[:6]}"
        + (" ..." if len(tried) > 6 else "")
    )
