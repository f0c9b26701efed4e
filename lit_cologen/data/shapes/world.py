"""The Shapes-5 world: scene graphs, their captions and referring phrases, subjects, rendering and control maps.

A scene is a background (solid, stripes, checker, gradient; one named colour) and 1-3 objects (circle, square,
triangle, star, ring, cross, or a textured "subject" glyph), each with a palette colour, a size (small / medium /
large) and a position on a 3x3 grid, drawn in z-order (later = in front). The graph is resolution-free; it renders
at any square resolution with numpy (vectorised masks on the pixel grid, no anti-aliasing), so every pixel, mask,
box and control map is known exactly (:func:`render` -> :class:`Rendered`; :func:`control_map`). Held-out scenes:
``crc32(canonical graph) % HOLDOUT_MODULUS == 0`` (:func:`is_heldout`). Nothing here draws random numbers: the
per-task sample makers (samples.py) do.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping

import numpy as np

from ..masks import dilate, fill_polygon, mask_box
from ..schema import COND_TYPES

GENERATOR_VERSION = 1

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "cross")
SIZES: tuple[str, ...] = ("small", "medium", "large")
#: half-extent of an object in units of a grid cell (res / 3); large objects reach into neighbouring cells
SIZE_HALF_EXTENT: dict[str, float] = {"small": 0.27, "medium": 0.38, "large": 0.58}
POSITIONS: tuple[str, ...] = (
    "top left", "top center", "top right",
    "middle left", "center", "middle right",
    "bottom left", "bottom center", "bottom right",
)  # fmt: skip
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 38, 38),
    "orange": (245, 130, 20),
    "yellow": (245, 215, 35),
    "green": (40, 165, 70),
    "cyan": (30, 200, 215),
    "blue": (35, 75, 215),
    "purple": (135, 60, 190),
    "pink": (245, 125, 185),
    "brown": (125, 80, 40),
}
COLORS: tuple[str, ...] = tuple(PALETTE)
BG_PALETTE: dict[str, tuple[int, int, int]] = {**PALETTE, "white": (255, 255, 255)}
BG_COLORS: tuple[str, ...] = tuple(BG_PALETTE)
BACKGROUNDS: tuple[str, ...] = ("solid", "stripes", "checker", "gradient")
#: inpainting fill of the masked region (the real-data builders' default "grey"; not a palette colour)
INPAINT_FILL: tuple[int, int, int] = (128, 128, 128)
MAX_OBJECTS = 3
MIN_VISIBLE_FRACTION = 0.5
HOLDOUT_MODULUS = 10
NUM_CANONICAL_SUBJECTS = 30
SUBJECT_PATTERNS: tuple[str, ...] = ("stripes", "checker", "dots", "rings", "waves")
SUBJECT_SEED = 5_0305
#: the reference image shows the subject centred with this half-extent (fraction of the image side)
SUBJECT_REFERENCE_HALF_EXTENT = 0.42
GROUND_MODES: tuple[str, ...] = ("box", "mask", "instance")
MASK_ALPHA = 0.5  # grounding colour masks: out = (object + colour + 1) // 2
EDIT_OPS: tuple[str, ...] = ("recolor", "remove", "add", "move", "background")
# control maps (uint8 RGB; edge maps are white lines on black)
CANNY_THRESHOLD = 24  # max |channel difference| between 4-neighbours that counts as an edge
DEPTH_BACKGROUND = 30
DEPTH_LEVELS: tuple[int, ...] = (110, 170, 230)  # z = 0, 1, 2 (nearer = brighter, as DPT/MiDaS)
HED_LEVELS: tuple[int, ...] = (255, 150, 70)  # boundary, 1 px away, 2 px away
SEG_COLORS: dict[str, tuple[int, int, int]] = {  # one class colour per shape class (ADE20K-like palette)
    "background": (120, 120, 120),
    "circle": (180, 120, 120),
    "square": (6, 230, 230),
    "triangle": (80, 50, 50),
    "star": (4, 200, 3),
    "ring": (120, 120, 80),
    "cross": (140, 140, 140),
    "subject": (204, 5, 255),
}

# --------------------------------------------------------------------------------------------------- scene graph


@dataclass(frozen=True)
class Background:
    """kind: one of BACKGROUNDS; color: one of BG_COLORS."""

    kind: str
    color: str


@dataclass(frozen=True)
class Obj:
    """One object. shape: SHAPES or "subject" (then ``subject_id`` says which glyph; ``color`` is "")."""

    shape: str
    color: str
    size: str
    position: str
    subject_id: int | None = None


@dataclass(frozen=True)
class Scene:
    """A background and 1-3 objects in z-order (index 0 drawn first)."""

    background: Background
    objects: tuple[Obj, ...]

    def canonical(self) -> str:
        """Stable string identity of the graph (used for the held-out split)."""
        bg = self.background
        objs = ";".join(f"{o.shape},{o.color},{o.size},{o.position},{o.subject_id}" for o in self.objects)
        return f"{bg.kind},{bg.color}|{objs}"

    def to_json(self) -> dict[str, Any]:
        objs = []
        for o in self.objects:
            d: dict[str, Any] = {"shape": o.shape, "color": o.color, "size": o.size, "position": o.position}
            if o.subject_id is not None:
                d["subject_id"] = int(o.subject_id)
            objs.append(d)
        return {"background": {"kind": self.background.kind, "color": self.background.color}, "objects": objs}

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "Scene":
        bg = d["background"]
        objs = tuple(
            Obj(o["shape"], o.get("color", ""), o["size"], o["position"], o.get("subject_id")) for o in d["objects"]
        )
        return Scene(Background(bg["kind"], bg["color"]), objs)

    def caption(self) -> str:
        return caption(self)


def is_heldout(scene: Scene) -> bool:
    """Whether a scene graph belongs to the held-out pool (about 1 in HOLDOUT_MODULUS graphs)."""
    return zlib.crc32(scene.canonical().encode()) % HOLDOUT_MODULUS == 0


def split_is_heldout(split: str) -> bool:
    """"train" is the training pool; every other split name draws from the held-out pool."""
    return split != "train"


# ------------------------------------------------------------------------------------------------------- captions


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def object_phrase(obj: Obj) -> str:
    """"a large red circle at the top left" / "the subject at the center"."""
    if obj.shape == "subject":
        return f"a {obj.size} subject at the {obj.position}"
    return f"a {obj.size} {obj.color} {obj.shape} at the {obj.position}"


_BG_ADJ = {"solid": "plain {c}", "stripes": "{c} striped", "checker": "{c} checkered", "gradient": "{c} gradient"}
_BG_NOUN = {"solid": "plain {c}", "stripes": "{c} stripes", "checker": "a {c} checkerboard", "gradient": "a {c} gradient"}


def background_phrase(bg: Background) -> str:
    """"a green striped background" / "a plain white background" / "an orange checkered background"."""
    adj = _BG_ADJ[bg.kind].format(c=bg.color)
    return f"{article(adj)} {adj} background"


def background_noun(bg: Background) -> str:
    """Edit target wording: "plain blue", "blue stripes", "a blue checkerboard", "an orange gradient"."""
    text = _BG_NOUN[bg.kind].format(c=bg.color)
    return text.replace("a orange", "an orange")


def join_phrases(parts: list[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def caption(scene: Scene) -> str:
    """Full caption naming every object (z-order) and the background."""
    if not scene.objects:
        return f"nothing but {background_phrase(scene.background)}"
    return f"{join_phrases([object_phrase(o) for o in scene.objects])}, on {background_phrase(scene.background)}"


def refer(scene: Scene, k: int) -> str:
    """Shortest unambiguous reference to object k: "the star", "the blue star", "the blue star at the center"."""
    obj = scene.objects[k]
    if obj.shape == "subject":
        return "the subject"
    same_shape = [o for o in scene.objects if o.shape == obj.shape]
    if len(same_shape) == 1:
        return f"the {obj.shape}"
    if sum(o.color == obj.color for o in same_shape) == 1:
        return f"the {obj.color} {obj.shape}"
    return f"the {obj.color} {obj.shape} at the {obj.position}"


# --------------------------------------------------------------------------------------------------------- subjects


@dataclass(frozen=True)
class SubjectSpec:
    """A textured glyph subject: silhouette ``shape``, two-colour ``pattern`` at ``frequency`` (cycles per
    half-extent) and ``angle`` (radians), in glyph-local coordinates so it scales with the subject."""

    subject_id: int
    shape: str
    pattern: str
    color_a: str
    color_b: str
    frequency: float
    angle: float

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("subject_id", "shape", "pattern", "color_a", "color_b", "frequency", "angle")}


@lru_cache(maxsize=4096)
def subject_spec(subject_id: int) -> SubjectSpec:
    """The glyph of subject ``subject_id`` (any id >= 0), deterministic from the id.

    Ids 0-29 are the canonical benchmark subjects: shape = SHAPES[id % 6], pattern = SUBJECT_PATTERNS[id // 6]
    (all 30 combinations once). Ids >= 30 are procedural training subjects, never equal to a canonical one in
    (shape, pattern, colour_a, colour_b).
    """
    if subject_id < 0:
        raise ValueError(f"subject_id must be >= 0, got {subject_id}")
    rng = np.random.default_rng([SUBJECT_SEED, subject_id])
    while True:
        if subject_id < NUM_CANONICAL_SUBJECTS:
            shape, pattern = SHAPES[subject_id % len(SHAPES)], SUBJECT_PATTERNS[subject_id // len(SHAPES)]
        else:
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            pattern = SUBJECT_PATTERNS[int(rng.integers(len(SUBJECT_PATTERNS)))]
        a, b = rng.choice(len(COLORS), size=2, replace=False)
        spec = SubjectSpec(
            subject_id=int(subject_id),
            shape=shape,
            pattern=pattern,
            color_a=COLORS[int(a)],
            color_b=COLORS[int(b)],
            frequency=float(np.round(rng.uniform(1.5, 3.0), 3)),
            angle=float(np.round(rng.uniform(0.0, np.pi), 3)),
        )
        if subject_id < NUM_CANONICAL_SUBJECTS or not _is_canonical_look(spec):
            return spec


def _is_canonical_look(spec: SubjectSpec) -> bool:
    for i in range(NUM_CANONICAL_SUBJECTS):
        c = subject_spec(i)
        if (c.shape, c.pattern, c.color_a, c.color_b) == (spec.shape, spec.pattern, spec.color_a, spec.color_b):
            return True
    return False


def _texture(spec: SubjectSpec, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """bool pattern (True = colour A) at glyph-local coordinates u, v (broadcastable, units of the half-extent)."""
    f = spec.frequency
    ca, sa = np.cos(spec.angle), np.sin(spec.angle)
    ur, vr = u * ca + v * sa, -u * sa + v * ca
    if spec.pattern == "stripes":
        return np.mod(ur * f, 1.0) < 0.5
    if spec.pattern == "checker":
        return (np.floor(ur * f) + np.floor(vr * f)) % 2 == 0
    if spec.pattern == "dots":
        fu, fv = np.mod(ur * f, 1.0) - 0.5, np.mod(vr * f, 1.0) - 0.5
        return fu * fu + fv * fv < 0.09
    if spec.pattern == "rings":
        return np.floor(np.sqrt(u * u + v * v) * f * 1.5) % 2 == 0
    if spec.pattern == "waves":
        return np.mod((vr + 0.25 * np.sin(ur * np.pi * f)) * f, 1.0) < 0.5
    raise ValueError(f"unknown subject pattern {spec.pattern!r}")


# ------------------------------------------------------------------------------------------------------- rendering


def object_geometry(position: str, size: str, resolution: int) -> tuple[float, float, float]:
    """(cx, cy, half_extent) in pixels of an object on the 3x3 grid."""
    i = POSITIONS.index(position)
    cell = resolution / 3.0
    row, col = divmod(i, 3)
    return (col + 0.5) * cell, (row + 0.5) * cell, SIZE_HALF_EXTENT[size] * cell


def _window(cx: float, cy: float, s: float, resolution: int) -> tuple[int, int, int, int]:
    x0 = max(0, int(np.floor(cx - s)) - 1)
    x1 = min(resolution, int(np.ceil(cx + s)) + 1)
    y0 = max(0, int(np.floor(cy - s)) - 1)
    y1 = min(resolution, int(np.ceil(cy + s)) + 1)
    return y0, y1, x0, x1


def _star_points(n: int = 5, inner: float = 0.42) -> np.ndarray:
    ang = -np.pi / 2 + np.arange(2 * n) * np.pi / n
    rad = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
    return np.stack([rad * np.cos(ang), rad * np.sin(ang)], axis=1)


_TRIANGLE = np.array([[0.0, -1.0], [0.95, 0.8], [-0.95, 0.8]])
_STAR = _star_points()


def shape_window(
    shape: str, cx: float, cy: float, s: float, resolution: int
) -> tuple[int, int, int, int, np.ndarray, np.ndarray, np.ndarray]:
    """Pixel mask of a shape centred at (cx, cy) with half-extent s: (y0, y1, x0, x1, bool window, u, v).

    The window covers rows y0:y1 and columns x0:x1; u (1, w) and v (h, 1) are the pixel centres' glyph-local
    coordinates ((x + 0.5 - cx) / s, ...).
    """
    y0, y1, x0, x1 = _window(cx, cy, s, resolution)
    u = ((np.arange(x0, x1) + 0.5 - cx) / s)[None, :]
    v = ((np.arange(y0, y1) + 0.5 - cy) / s)[:, None]
    if shape == "circle":
        m = u * u + v * v <= 1.0
    elif shape == "ring":
        r2 = u * u + v * v
        m = (r2 <= 1.0) & (r2 >= 0.55**2)
    elif shape == "square":
        m = (np.abs(u) <= 0.85) & (np.abs(v) <= 0.85)
    elif shape == "cross":
        au, av = np.abs(u), np.abs(v)
        m = ((au <= 0.32) & (av <= 0.95)) | ((av <= 0.32) & (au <= 0.95))
    elif shape in ("triangle", "star"):
        unit = _TRIANGLE if shape == "triangle" else _STAR
        pts = unit * s + np.array([cx - x0, cy - y0])
        m = fill_polygon(pts, y1 - y0, x1 - x0)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return y0, y1, x0, x1, np.broadcast_to(m, (y1 - y0, x1 - x0)), u, v


def _object_layer(obj: Obj, resolution: int) -> tuple[int, int, int, int, np.ndarray, Any]:
    """(y0, y1, x0, x1, bool mask (h, w), colour) of one object: the colour is an RGB triple, or uint8 (n, 3)
    texture colours of the mask's pixels for a subject. Cached per geometry (read-only arrays)."""
    if obj.shape == "subject":
        return _subject_layer(int(obj.subject_id), obj.size, obj.position, resolution)
    return (*_shape_mask(obj.shape, obj.size, obj.position, resolution), PALETTE[obj.color])


@lru_cache(maxsize=4096)
def _shape_mask(shape: str, size: str, position: str, resolution: int) -> tuple[int, int, int, int, np.ndarray]:
    cx, cy, s = object_geometry(position, size, resolution)
    y0, y1, x0, x1, m, _, _ = shape_window(shape, cx, cy, s, resolution)
    m = np.ascontiguousarray(m)
    m.flags.writeable = False
    return y0, y1, x0, x1, m


@lru_cache(maxsize=1024)
def _subject_layer(subject_id: int, size: str, position: str, resolution: int):
    cx, cy, s = object_geometry(position, size, resolution)
    return _glyph(subject_id, cx, cy, s, resolution)


def _glyph(subject_id: int, cx: float, cy: float, s: float, resolution: int):
    spec = subject_spec(subject_id)
    y0, y1, x0, x1, m, u, v = shape_window(spec.shape, cx, cy, s, resolution)
    m = np.ascontiguousarray(m)
    tex = np.broadcast_to(_texture(spec, u, v), m.shape)[m]
    rgb = np.where(tex[:, None], np.array(PALETTE[spec.color_a], np.uint8), np.array(PALETTE[spec.color_b], np.uint8))
    m.flags.writeable = False
    rgb.flags.writeable = False
    return y0, y1, x0, x1, m, rgb


def secondary_color(color: str) -> tuple[int, int, int]:
    """The second colour of patterned backgrounds: halfway to white (white -> light grey)."""
    if color == "white":
        return (200, 200, 200)
    r, g, b = BG_PALETTE[color]
    return ((r + 255) // 2, (g + 255) // 2, (b + 255) // 2)


@lru_cache(maxsize=256)
def background_image(bg: Background, resolution: int) -> np.ndarray:
    """Read-only uint8 (H, W, 3) background. stripes: 16 vertical bands (primary first); checker: 8x8 cells
    (primary at top left); gradient: secondary (top row) -> primary (bottom row), linear, rounded."""
    res = resolution
    c1 = np.array(BG_PALETTE[bg.color], np.float64)
    c2 = np.array(secondary_color(bg.color), np.float64)
    idx = np.arange(res)
    if bg.kind == "solid":
        img = np.broadcast_to(c1, (res, res, 3))
    elif bg.kind == "stripes":
        band = (idx * 16 // res) % 2 == 1
        img = np.broadcast_to(np.where(band[None, :, None], c2, c1), (res, res, 3))
    elif bg.kind == "checker":
        cell = idx * 8 // res
        odd = (cell[:, None] + cell[None, :]) % 2 == 1
        img = np.where(odd[..., None], c2, c1)
    elif bg.kind == "gradient":
        t = (idx / max(1, res - 1))[:, None, None]
        img = np.broadcast_to(np.round(c2 * (1 - t) + c1 * t), (res, res, 3))
    else:
        raise ValueError(f"unknown background kind {bg.kind!r}")
    out = np.ascontiguousarray(img, dtype=np.uint8)
    out.flags.writeable = False
    return out


@dataclass
class Rendered:
    """A rendered scene. image: uint8 (H, W, 3); ids: int8 (H, W), the visible object index per pixel (-1 = bg)."""

    scene: Scene
    resolution: int
    image: np.ndarray
    ids: np.ndarray
    full_areas: list[int]
    _areas: list[int] | None = None

    def visible_mask(self, k: int) -> np.ndarray:
        """bool (H, W): pixels where object k is visible (not covered by later objects)."""
        return self.ids == k

    def full_mask(self, k: int) -> np.ndarray:
        """bool (H, W): all pixels of object k, including the parts covered by later objects."""
        y0, y1, x0, x1, m, _ = _object_layer(self.scene.objects[k], self.resolution)
        out = np.zeros((self.resolution, self.resolution), dtype=bool)
        out[y0:y1, x0:x1] = m
        return out

    def box(self, k: int) -> tuple[int, int, int, int] | None:
        """Visible pixel box (x0, y0, x1, y1), exclusive ends."""
        return mask_box(self.visible_mask(k))

    def visible_areas(self) -> list[int]:
        """Visible pixel count per object (computed once)."""
        if self._areas is None:
            counts = np.bincount(self.ids.ravel().astype(np.int64) + 1, minlength=len(self.scene.objects) + 1)
            self._areas = [int(c) for c in counts[1:]]
        return self._areas

    def graph_json(self) -> dict[str, Any]:
        """The scene graph plus per-object z, visible box / area, full area, the caption and the resolution."""
        d = self.scene.to_json()
        areas = self.visible_areas()
        for k, o in enumerate(d["objects"]):
            box = self.box(k)
            o.update(z=k, box=list(box) if box else None, area=areas[k], full_area=self.full_areas[k])
        d["caption"] = caption(self.scene)
        d["resolution"] = self.resolution
        return d


def render(scene: Scene, resolution: int = 64) -> Rendered:
    """Render a scene graph at ``resolution`` x ``resolution`` (objects in z-order, no anti-aliasing)."""
    if resolution < 8:
        raise ValueError(f"resolution must be >= 8, got {resolution}")
    image = background_image(scene.background, resolution).copy()
    ids = np.full((resolution, resolution), -1, dtype=np.int8)
    full = []
    for k, obj in enumerate(scene.objects):
        y0, y1, x0, x1, m, rgb = _object_layer(obj, resolution)
        image[y0:y1, x0:x1][m] = rgb
        ids[y0:y1, x0:x1][m] = k
        full.append(int(np.count_nonzero(m)))
    return Rendered(scene, resolution, image, ids, full)


def render_subject_reference(subject_id: int, resolution: int = 64) -> np.ndarray:
    """uint8 (H, W, 3): the subject centred on a plain white background (the subject task's source image)."""
    image = np.full((resolution, resolution, 3), 255, dtype=np.uint8)
    c = resolution / 2.0
    y0, y1, x0, x1, m, rgb = _glyph(int(subject_id), c, c, SUBJECT_REFERENCE_HALF_EXTENT * resolution, resolution)
    image[y0:y1, x0:x1][m] = rgb
    return image


def visibility_ok(r: Rendered) -> bool:
    """Every object keeps at least MIN_VISIBLE_FRACTION of its pixels visible."""
    return all(v >= MIN_VISIBLE_FRACTION * f and v > 0 for v, f in zip(r.visible_areas(), r.full_areas))


# ---------------------------------------------------------------------------------------------------- control maps


def _id_boundary(ids: np.ndarray, objects_only: bool) -> np.ndarray:
    """bool (H, W): pixels with a 4-neighbour of a different id (objects_only: only object pixels)."""
    diff_x = ids[:, 1:] != ids[:, :-1]
    diff_y = ids[1:, :] != ids[:-1, :]
    b = np.zeros(ids.shape, dtype=bool)
    b[:, :-1] |= diff_x
    b[:, 1:] |= diff_x
    b[:-1, :] |= diff_y
    b[1:, :] |= diff_y
    if objects_only:
        b &= ids >= 0
    return b


def control_map(r: Rendered, cond_type: str) -> np.ndarray:
    """uint8 (H, W, 3) condition map computed exactly from the rendered scene graph.

    canny:   255 where the RGB image changes by more than CANNY_THRESHOLD to the right or below (top/left pixel).
    depth:   DEPTH_BACKGROUND on the background, DEPTH_LEVELS[z] on object z (nearer = brighter), grey RGB.
    hed:     soft object boundaries: HED_LEVELS on the boundary (both sides) and 1 and 2 px away.
    lineart: 255 on the inner boundary pixels of every object (outer contour and holes), 0 elsewhere.
    seg:     SEG_COLORS per class (shape class, "subject", "background").
    """
    ids = r.ids
    res = r.resolution
    if cond_type == "canny":
        img = r.image.astype(np.int16)
        dx = np.abs(img[:, 1:] - img[:, :-1]).max(axis=2) > CANNY_THRESHOLD
        dy = np.abs(img[1:, :] - img[:-1, :]).max(axis=2) > CANNY_THRESHOLD
        e = np.zeros((res, res), dtype=bool)
        e[:, :-1] |= dx
        e[:-1, :] |= dy
        gray = np.where(e, np.uint8(255), np.uint8(0))
    elif cond_type == "depth":
        lut = np.array([DEPTH_BACKGROUND] + list(DEPTH_LEVELS) + [DEPTH_LEVELS[-1]] * 8, dtype=np.uint8)
        gray = lut[ids.astype(np.int64) + 1]
    elif cond_type == "hed":
        b0 = _id_boundary(ids, objects_only=False)
        b1 = dilate(b0, 1)
        b2 = dilate(b1, 1)
        gray = np.zeros((res, res), dtype=np.uint8)
        gray[b2] = HED_LEVELS[2]
        gray[b1] = HED_LEVELS[1]
        gray[b0] = HED_LEVELS[0]
    elif cond_type == "lineart":
        gray = np.where(_id_boundary(ids, objects_only=True), np.uint8(255), np.uint8(0))
    elif cond_type == "seg":
        lut = np.array([SEG_COLORS["background"]] + [SEG_COLORS[o.shape] for o in r.scene.objects], dtype=np.uint8)
        return lut[ids.astype(np.int64) + 1]
    else:
        raise ValueError(f"unknown cond_type {cond_type!r} (expected one of {COND_TYPES})")
    return np.repeat(gray[..., None], 3, axis=2)


# -------------------------------------------------------------------------------------------------------- grounding


def box_thickness(resolution: int) -> int:
    """Grounding box outline width in pixels: max(2, round(res / 64))."""
    return max(2, int(round(resolution / 64)))


def box_outline(box: tuple[int, int, int, int], thickness: int, resolution: int) -> np.ndarray:
    """bool (H, W): the outline drawn *around* ``box`` (x0, y0, x1, y1): the band of width ``thickness`` just
    outside it, clipped to the image; the box's own pixels are untouched."""
    x0, y0, x1, y1 = box
    out = np.zeros((resolution, resolution), dtype=bool)
    out[max(0, y0 - thickness) : y1 + thickness, max(0, x0 - thickness) : x1 + thickness] = True
    out[y0:y1, x0:x1] = False
    return out


def overlay_mask(image: np.ndarray, mask: np.ndarray, color: str) -> np.ndarray:
    """``image`` (H, W, 3) with ``mask`` pixels blended 50 % with the palette colour: (pixel + colour + 1) // 2."""
    out = image.copy()
    c = np.array(PALETTE[color], np.uint16)
    out[mask] = ((out[mask].astype(np.uint16) + c + 1) // 2).astype(np.uint8)
    return out
