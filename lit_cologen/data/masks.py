"""Inpainting masks (paper 4.2, step 0), for any image size: Shapes-5 and the real-data builders share them.

Three kinds, drawn with the paper's ratio ``random : object : irregular = 20 % : 40 % : 40 %``:

* ``random``    LaMa-style free-form masks: 1-4 thick polyline strokes plus 0-2 boxes, sizes relative to the
                short image side. A candidate whose IoU with *any* object mask is above 0.3 is discarded and
                redrawn (the paper: "greater emphasis on scene-level concept learning").
* ``object``    one object's own mask, dilated by 0..``max_dilation`` pixels half of the time.
* ``irregular`` a closed Bezier curve fitted through the object's bounding box (8 anchors on rays from the box
                centre, each at 55-100 % of the way to the box border, joined by C1 cubic segments whose control
                points are clamped into the box), 20 points sampled uniformly in arc length along it, joined in
                order into a polygon and filled. The paper's "Bessel curve" is read as Bezier.

Every mask is ``uint8`` (H, W) with values {0, 255}; 255 marks the region to regenerate (the schema's ``mask.png``).
All randomness comes from the ``numpy.random.Generator`` passed in, so a seeded generator gives identical masks.
Pixel conventions: pixel (y, x) covers [x, x+1) x [y, y+1); geometry is tested at its centre (x + 0.5, y + 0.5);
boxes are ``(x0, y0, x1, y1)`` with exclusive ends.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

MASK_KINDS: tuple[str, ...] = ("random", "object", "irregular")
MASK_RATIOS: tuple[float, ...] = (0.2, 0.4, 0.4)
MAX_RANDOM_IOU = 0.3
IRREGULAR_POINTS = 20
IRREGULAR_ANCHORS = 8
MAX_RANDOM_TRIES = 100

Box = tuple[int, int, int, int]


class DrawnMask(NamedTuple):
    """One drawn inpainting mask.

    mask: uint8 (H, W) in {0, 255}; kind: one of MASK_KINDS; object_index: the object it was built from (None for
    random masks); attempts: random candidates drawn (rejections + 1; 0 for other kinds); polygon: the (20, 2) x/y
    vertices of an irregular mask (else None).
    """

    mask: np.ndarray
    kind: str
    object_index: int | None = None
    attempts: int = 0
    polygon: np.ndarray | None = None


# ----------------------------------------------------------------------------------------------- geometry helpers


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two masks (any dtype, nonzero = inside); 0.0 when both are empty."""
    a = np.asarray(a) > 0
    b = np.asarray(b) > 0
    union = int(np.count_nonzero(a | b))
    if union == 0:
        return 0.0
    return int(np.count_nonzero(a & b)) / union


def mask_box(mask: np.ndarray) -> Box | None:
    """Tight pixel box ``(x0, y0, x1, y1)`` (exclusive ends) of the nonzero pixels of an (H, W) mask; None if empty."""
    m = np.asarray(mask) > 0
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(m.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def fill_polygon(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Fill a closed polygon (even-odd rule) on an (H, W) pixel grid; returns bool (H, W).

    points: (N, 2) float vertices as (x, y) in pixel units, joined in order and closed. A pixel is inside when its
    centre is; edges are half-open in y so a shared vertex is counted once.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    out = np.zeros((height, width), dtype=bool)
    if len(pts) < 3:
        return out
    r0 = max(0, int(np.floor(pts[:, 1].min() - 0.5)))
    r1 = min(height, int(np.ceil(pts[:, 1].max() + 0.5)))
    c0 = max(0, int(np.floor(pts[:, 0].min() - 0.5)))
    c1 = min(width, int(np.ceil(pts[:, 0].max() + 0.5)))
    if r0 >= r1 or c0 >= c1:
        return out
    ys = np.arange(r0, r1) + 0.5
    xs = np.arange(c0, c1) + 0.5
    win = out[r0:r1, c0:c1]
    a, b = pts, np.roll(pts, -1, axis=0)
    keep = a[:, 1] != b[:, 1]  # horizontal edges never cross a row centre
    a, b = a[keep], b[keep]
    lo, hi = np.minimum(a[:, 1], b[:, 1])[:, None], np.maximum(a[:, 1], b[:, 1])[:, None]
    spans = (ys[None, :] >= lo) & (ys[None, :] < hi)  # (E, R): edge e crosses row r
    x_cross = a[:, :1] + (ys[None, :] - a[:, 1:]) * ((b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1]))[:, None]
    x_cross = np.where(spans, x_cross, -np.inf)  # (E, R)
    if x_cross.size * len(xs) <= 8_000_000:
        crossings = (xs[None, None, :] < x_cross[:, :, None]).sum(axis=0)  # (R, C) crossings right of each pixel
        win[:] = crossings % 2 == 1
    else:  # very large polygons: one edge at a time
        for e in range(len(x_cross)):
            win ^= xs[None, :] < x_cross[e][:, None]
    return out


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of an (H, W) mask by a (2r+1) x (2r+1) square; returns bool (H, W)."""
    m = np.asarray(mask) > 0
    if radius <= 0:
        return m.copy()
    horiz = m.copy()
    for s in range(1, radius + 1):
        horiz[:, s:] |= m[:, :-s]
        horiz[:, :-s] |= m[:, s:]
    out = horiz.copy()
    for s in range(1, radius + 1):
        out[s:, :] |= horiz[:-s, :]
        out[:-s, :] |= horiz[s:, :]
    return out


def draw_capsule(mask: np.ndarray, p0: Sequence[float], p1: Sequence[float], width: float) -> None:
    """Set to True (in place) the pixels of bool (H, W) ``mask`` whose centre lies within width/2 of segment p0-p1."""
    h, w = mask.shape
    r = width / 2.0
    (xa, ya), (xb, yb) = p0, p1
    c0 = max(0, int(np.floor(min(xa, xb) - r)))
    c1 = min(w, int(np.ceil(max(xa, xb) + r)) + 1)
    r0 = max(0, int(np.floor(min(ya, yb) - r)))
    r1 = min(h, int(np.ceil(max(ya, yb) + r)) + 1)
    if c0 >= c1 or r0 >= r1:
        return
    px = (np.arange(c0, c1) + 0.5)[None, :]
    py = (np.arange(r0, r1) + 0.5)[:, None]
    dx, dy = xb - xa, yb - ya
    seg2 = dx * dx + dy * dy
    if seg2 == 0:
        t = 0.0
    else:
        t = np.clip(((px - xa) * dx + (py - ya) * dy) / seg2, 0.0, 1.0)
    d2 = (px - (xa + t * dx)) ** 2 + (py - (ya + t * dy)) ** 2
    mask[r0:r1, c0:c1] |= d2 <= r * r


# ----------------------------------------------------------------------------------------------------- random masks


def random_mask_candidate(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """One LaMa-style free-form mask (strokes + boxes), without the IoU rule; bool (H, W), never empty."""
    short = float(min(height, width))
    out = np.zeros((height, width), dtype=bool)
    n_strokes = int(rng.integers(1, 5))
    n_boxes = int(rng.integers(0, 3))
    for _ in range(n_strokes):
        start = rng.uniform((0.0, 0.0), (width, height))
        stroke_w = max(1.5, float(rng.uniform(0.04, 0.12)) * short)
        for _ in range(int(rng.integers(1, 5))):
            angle = float(rng.uniform(0.0, 2.0 * np.pi))
            length = float(rng.uniform(0.08, 0.3)) * short
            end = start + length * np.array([np.cos(angle), np.sin(angle)])
            end = np.clip(end, (0.0, 0.0), (width, height))
            draw_capsule(out, start, end, stroke_w)
            start = end
    for _ in range(n_boxes):
        bw = max(1, int(round(float(rng.uniform(0.1, 0.35)) * short)))
        bh = max(1, int(round(float(rng.uniform(0.1, 0.35)) * short)))
        x0 = int(rng.integers(0, max(1, width - bw + 1)))
        y0 = int(rng.integers(0, max(1, height - bh + 1)))
        out[y0 : y0 + bh, x0 : x0 + bw] = True
    if not out.any():  # a stroke clipped to nothing on a tiny image: fall back to one central pixel
        out[height // 2, width // 2] = True
    return out


def random_mask(
    rng: np.random.Generator,
    height: int,
    width: int,
    object_masks: Sequence[np.ndarray] = (),
    max_iou: float = MAX_RANDOM_IOU,
    max_tries: int = MAX_RANDOM_TRIES,
) -> tuple[np.ndarray | None, int]:
    """A random mask whose IoU with every object mask is <= ``max_iou``: (bool (H, W) or None, candidates drawn).

    Candidates above the threshold are discarded and redrawn; None after ``max_tries`` rejections.
    """
    objects = [np.asarray(m) > 0 for m in object_masks]
    for attempt in range(1, max_tries + 1):
        cand = random_mask_candidate(rng, height, width)
        if all(mask_iou(cand, m) <= max_iou for m in objects):
            return cand, attempt
    return None, max_tries


# ----------------------------------------------------------------------------------------------------- object masks


def object_shaped_mask(rng: np.random.Generator, object_mask: np.ndarray, max_dilation: int) -> np.ndarray:
    """The object's own mask, dilated by a random 1..max_dilation pixels with probability 1/2; bool (H, W)."""
    m = np.asarray(object_mask) > 0
    if max_dilation > 0 and rng.random() < 0.5:
        return dilate(m, int(rng.integers(1, max_dilation + 1)))
    return m.copy()


def closed_bezier(anchors: np.ndarray, box: Box, samples_per_segment: int = 24) -> np.ndarray:
    """Dense points (M, 2) of a closed C1 piecewise-cubic Bezier curve through ``anchors`` (K, 2), inside ``box``.

    Segment i runs anchor i -> i+1 with Catmull-Rom handles (P[i+1]-P[i-1])/6; handles are clamped into the box, so
    by the convex-hull property the whole curve stays in the box.
    """
    x0, y0, x1, y1 = box
    lo, hi = np.array([x0, y0], dtype=np.float64), np.array([x1, y1], dtype=np.float64)
    p = np.asarray(anchors, dtype=np.float64)
    prev, nxt, nxt2 = np.roll(p, 1, axis=0), np.roll(p, -1, axis=0), np.roll(p, -2, axis=0)
    c1 = np.clip(p + (nxt - prev) / 6.0, lo, hi)
    c2 = np.clip(nxt - (nxt2 - p) / 6.0, lo, hi)
    t = np.linspace(0.0, 1.0, samples_per_segment, endpoint=False)[None, :, None]
    a, b, c, d = p[:, None], c1[:, None], c2[:, None], nxt[:, None]
    curve = (1 - t) ** 3 * a + 3 * (1 - t) ** 2 * t * b + 3 * (1 - t) * t**2 * c + t**3 * d
    return curve.reshape(-1, 2)


def resample_closed(curve: np.ndarray, n: int) -> np.ndarray:
    """``n`` points (n, 2) spaced uniformly in arc length along the closed polyline ``curve`` (M, 2)."""
    pts = np.concatenate([curve, curve[:1]], axis=0)
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    if cum[-1] == 0:
        return np.repeat(curve[:1], n, axis=0)
    targets = np.arange(n) * (cum[-1] / n)
    xs = np.interp(targets, cum, pts[:, 0])
    ys = np.interp(targets, cum, pts[:, 1])
    return np.stack([xs, ys], axis=1)


def irregular_polygon(rng: np.random.Generator, box: Box, n_points: int = IRREGULAR_POINTS) -> np.ndarray:
    """The 20-vertex polygon (n_points, 2) of an irregular mask: Bezier through the box, sampled uniformly."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    hw, hh = max((x1 - x0) / 2.0, 1e-6), max((y1 - y0) / 2.0, 1e-6)
    k = IRREGULAR_ANCHORS
    angles = 2 * np.pi * (np.arange(k) + rng.uniform(-0.3, 0.3, size=k)) / k
    cos, sin = np.cos(angles), np.sin(angles)
    # distance from the centre to the box border along each ray, then 55-100 % of it
    reach = np.minimum(hw / np.maximum(np.abs(cos), 1e-9), hh / np.maximum(np.abs(sin), 1e-9))
    reach = reach * rng.uniform(0.55, 1.0, size=k)
    anchors = np.stack([cx + reach * cos, cy + reach * sin], axis=1)
    anchors = np.clip(anchors, (x0, y0), (x1, y1))
    return resample_closed(closed_bezier(anchors, box), n_points)


def irregular_mask(rng: np.random.Generator, box: Box, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """An irregular object-shaped mask in ``box``: (bool (H, W) mask, (20, 2) polygon)."""
    poly = irregular_polygon(rng, box)
    m = fill_polygon(poly, height, width)
    if not m.any():  # a box thinner than a pixel centre: keep the box itself
        x0, y0, x1, y1 = box
        m[y0:y1, x0:x1] = True
    return m, poly


# ----------------------------------------------------------------------------------------------------- the mixture


def default_max_dilation(height: int, width: int) -> int:
    """Largest object-mask dilation: 3 % of the short side, at least 1 pixel."""
    return max(1, int(round(0.03 * min(height, width))))


def sample_mask(
    rng: np.random.Generator,
    height: int,
    width: int,
    object_masks: Sequence[np.ndarray] = (),
    ratios: Sequence[float] = MASK_RATIOS,
    max_iou: float = MAX_RANDOM_IOU,
    max_dilation: int | None = None,
) -> DrawnMask:
    """Draw one inpainting mask of a kind chosen with ``ratios`` (random, object, irregular).

    object_masks: the image's object masks, each (H, W), nonzero = object (empty ones are ignored). Without any
    object, the kind is always ``random``. When 100 random candidates all break the IoU rule, an object mask is
    returned instead (kind ``object``), so the rule is never broken.
    Returns a DrawnMask whose ``mask`` is uint8 (H, W) in {0, 255}.
    """
    p = np.asarray(ratios, dtype=np.float64)
    if p.shape != (3,) or (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"ratios must be 3 non-negative numbers (random, object, irregular), got {ratios!r}")
    objects = [np.asarray(m) > 0 for m in object_masks]
    for m in objects:
        if m.shape != (height, width):
            raise ValueError(f"object mask shape {m.shape} does not match image (H, W) {(height, width)}")
    candidates = [i for i, m in enumerate(objects) if m.any()]
    kind = MASK_KINDS[int(rng.choice(3, p=p / p.sum()))] if candidates else "random"
    attempts = 0
    if kind == "random":
        mask, attempts = random_mask(rng, height, width, objects, max_iou=max_iou)
        if mask is not None:
            return DrawnMask(_to_u8(mask), "random", None, attempts)
        kind = "object"  # every candidate overlapped an object too much
    index = candidates[int(rng.integers(len(candidates)))]
    if kind == "object":
        dil = default_max_dilation(height, width) if max_dilation is None else max_dilation
        return DrawnMask(_to_u8(object_shaped_mask(rng, objects[index], dil)), "object", index, attempts)
    box = mask_box(objects[index])
    assert box is not None
    mask, poly = irregular_mask(rng, box, height, width)
    return DrawnMask(_to_u8(mask), "irregular", index, attempts, poly)


def sample_inpaint_mask(
    rng: np.random.Generator, object_masks: Sequence[np.ndarray], height: int, width: int
) -> tuple[np.ndarray, str]:
    """Builder-facing form of :func:`sample_mask`: (uint8 (H, W) mask in {0, 255}, kind)."""
    drawn = sample_mask(rng, height, width, object_masks)
    return drawn.mask, drawn.kind


def _to_u8(mask: np.ndarray) -> np.ndarray:
    return np.where(mask, np.uint8(255), np.uint8(0))


__all__ = [
    "DrawnMask",
    "IRREGULAR_POINTS",
    "MASK_KINDS",
    "MASK_RATIOS",
    "MAX_RANDOM_IOU",
    "closed_bezier",
    "dilate",
    "draw_capsule",
    "fill_polygon",
    "irregular_mask",
    "irregular_polygon",
    "mask_box",
    "mask_iou",
    "object_shaped_mask",
    "random_mask",
    "random_mask_candidate",
    "resample_closed",
    "sample_inpaint_mask",
    "sample_mask",
]
