"""Shapes-5: a procedural world with an exact scene graph, for all five CoLoGen tasks (DESIGN.md section 5).

A scene is a background (solid, stripes, checker, gradient; one named colour) and 1-3 objects (circle, square,
triangle, star, ring, cross, or a textured "subject" glyph), each with a palette colour, a size (small / medium /
large) and a position on a 3x3 grid, drawn in z-order (later = in front). The graph is resolution-free; it renders
at any square resolution with numpy (vectorised masks on the pixel grid, no anti-aliasing), so every pixel, mask,
box and control map is known exactly. Captions name everything:
"a large red circle at the top left and a medium blue star at the center, on a green striped background".

Tasks (``make_sample``): inpaint (scene with a masked region, masks from ``masks.py``), ground (box / colour mask /
instance box drawn where the graph says), control (canny / depth / hed / lineart / seg computed from the graph),
subject (one of the textured glyph subjects: reference on plain white -> scene from one of 25 DreamBench-like
templates), edit (recolour / remove / add / move / background).

Determinism: every sample comes from ``numpy.random.default_rng([seed, crc32(split), task id, index])`` (no
``random`` module, no global state), so the same arguments give byte-identical samples in any process.
Splits: ``"train"`` draws from the training pool; any other split name (``"eval"``, ``"val"``, ``"test"``) draws from
the held-out pool, with its own seed stream. Pools are disjoint: a scene graph is held out iff
``crc32(canonical graph) % 10 == 0`` (about 10 % of scenes; train rejects them, held-out splits accept only them;
for edits the source scene decides), and the subject task uses the 30 canonical subjects (ids 0-29, the
DreamBench-like benchmark set) only in held-out splits and procedural subjects (ids >= 30, never identical in
shape + pattern + colours to a canonical one) in train.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Iterator, Mapping

import numpy as np
from PIL import Image

from .masks import dilate, fill_polygon, mask_box, sample_mask
from .schema import COND_TYPES, TASKS, Sample

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


# ----------------------------------------------------------------------------------------------- scene sampling


def _rng(seed: int, split: str, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(split.encode()), stream, int(index)])


def _pick(rng: np.random.Generator, items) -> Any:
    items = list(items)
    return items[int(rng.integers(len(items)))]


def random_object(rng: np.random.Generator, position: str, avoid_colors=()) -> Obj:
    colors = [c for c in COLORS if c not in avoid_colors]
    return Obj(_pick(rng, SHAPES), _pick(rng, colors), _pick(rng, SIZES), position)


def object_colors(obj: Obj) -> set[str]:
    if obj.shape == "subject":
        spec = subject_spec(int(obj.subject_id))
        return {spec.color_a, spec.color_b}
    return {obj.color}


def random_background(rng: np.random.Generator, objects=(), kinds=BACKGROUNDS) -> Background:
    used = set().union(*(object_colors(o) for o in objects)) if objects else set()
    return Background(_pick(rng, kinds), _pick(rng, [c for c in BG_COLORS if c not in used]))


def _accept(scene: Scene, split: str, resolution: int) -> Rendered | None:
    if is_heldout(scene) != split_is_heldout(split):
        return None
    r = render(scene, resolution)
    return r if visibility_ok(r) else None


def sample_scene(rng: np.random.Generator, split: str = "train", resolution: int = 64, max_tries: int = 2000):
    """A random scene of 1-3 objects in ``split``'s pool whose objects are all >= 50 % visible: (Scene, Rendered)."""
    for _ in range(max_tries):
        n = int(rng.integers(1, MAX_OBJECTS + 1))
        positions = rng.permutation(len(POSITIONS))[:n].tolist()
        attrs = rng.integers(0, (len(SHAPES), len(COLORS), len(SIZES)), size=(n, 3)).tolist()
        objects = tuple(Obj(SHAPES[a], COLORS[b], SIZES[c], POSITIONS[p]) for p, (a, b, c) in zip(positions, attrs))
        used = {o.color for o in objects}
        kind, color = rng.integers(0, (len(BACKGROUNDS), len(BG_COLORS) - len(used))).tolist()
        scene = Scene(Background(BACKGROUNDS[kind], [c for c in BG_COLORS if c not in used][color]), objects)
        r = _accept(scene, split, resolution)
        if r is not None:
            return scene, r
    raise RuntimeError(f"could not sample a valid {split} scene in {max_tries} tries")


# ------------------------------------------------------------------------------------------------------------ tasks


def _pil(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(arr), mode="RGB")


def _base_meta(task: str, split: str, index: int, seed: int, resolution: int, r: Rendered) -> dict[str, Any]:
    graph = r.graph_json()
    return {
        "generator": "shapes5",
        "version": GENERATOR_VERSION,
        "task": task,
        "split": split,
        "index": int(index),
        "seed": int(seed),
        "resolution": int(resolution),
        "scene": graph,
        "boxes": [o["box"] for o in graph["objects"]],
    }


def sample_key(task: str, index: int, split: str = "train", seed: int = 0) -> str:
    """The sample key: "<split>_<task>_s<seed>_<index:08d>" (no '.' or '/')."""
    return f"{split}_{task}_s{seed}_{int(index):08d}".replace(".", "-").replace("/", "-")


def _make_inpaint(rng, key, split, index, seed, res) -> Sample:
    scene, r = sample_scene(rng, split, res)
    objects = [r.visible_mask(k) for k in range(len(scene.objects))]
    drawn = sample_mask(rng, res, res, objects)
    source = r.image.copy()
    source[drawn.mask > 0] = INPAINT_FILL
    meta = _base_meta("inpaint", split, index, seed, res, r)
    meta.update(mask_type=drawn.kind, mask_object=drawn.object_index, mask_area=int(np.count_nonzero(drawn.mask)))
    return Sample(key, "inpaint", caption(scene), _pil(r.image), _pil(source), Image.fromarray(drawn.mask, mode="L"), None, meta)


def _make_ground(rng, key, split, index, seed, res) -> Sample:
    scene, r = sample_scene(rng, split, res)
    mode = _pick(rng, GROUND_MODES)
    if mode == "instance":
        shape = _pick(rng, sorted({o.shape for o in scene.objects}))
        k = _pick(rng, [i for i, o in enumerate(scene.objects) if o.shape == shape])
    else:
        k = int(rng.integers(len(scene.objects)))
    obj = scene.objects[k]
    color = _pick(rng, [c for c in COLORS if c != obj.color and c != scene.background.color])
    box = r.box(k)
    assert box is not None
    t = box_thickness(res)
    if mode == "mask":
        region = r.visible_mask(k)
        target = overlay_mask(r.image, region, color)
        prompt = f"cover {refer(scene, k)} with a {color} mask"
    else:
        region = box_outline(box, t, res)
        target = r.image.copy()
        target[region] = PALETTE[color]
        what = refer(scene, k) if mode == "box" else f"a {obj.shape}"
        prompt = f"draw a {color} box around {what}"
    meta = _base_meta("ground", split, index, seed, res, r)
    instances = [list(r.box(i)) for i, o in enumerate(scene.objects) if o.shape == obj.shape]
    meta["ground"] = {"mode": mode, "object": k, "color": color, "box": list(box), "thickness": t,
                      "alpha": MASK_ALPHA if mode == "mask" else 1.0, "instances": instances}  # fmt: skip
    return Sample(key, "ground", prompt, _pil(target), _pil(r.image), None, None, meta)


def _make_control(rng, key, split, index, seed, res) -> Sample:
    scene, r = sample_scene(rng, split, res)
    cond = _pick(rng, COND_TYPES)
    meta = _base_meta("control", split, index, seed, res, r)
    meta["cond_type"] = cond
    return Sample(key, "control", caption(scene), _pil(r.image), _pil(control_map(r, cond)), None, cond, meta)


#: 25 DreamBench-like prompt templates. Slots: {pos} subject position, {size} subject size (default "large"),
#: {bg} background noun phrase (default "a plain white background"), {obj} / {obj2} extra objects.
SUBJECT_TEMPLATES: tuple[str, ...] = (
    "the subject at the {pos}",
    "the subject at the {pos} on {bg}",
    "a {size} subject at the {pos}",
    "a {size} subject at the {pos} on {bg}",
    "the subject at the {pos}, next to {obj}",
    "the subject at the {pos} and {obj}, on {bg}",
    "a {size} subject at the {pos} with {obj}",
    "a {size} subject at the {pos} with {obj} and {obj2}",
    "the subject at the {pos} with {obj} and {obj2}, on {bg}",
    "a photo of the subject at the {pos}",
    "a photo of the subject at the {pos} on {bg}",
    "a picture of a {size} subject at the {pos} on {bg}",
    "the subject placed at the {pos} of {bg}",
    "the subject at the {pos} of the image, on {bg}",
    "on {bg}, the subject at the {pos}",
    "on {bg}, a {size} subject at the {pos} and {obj}",
    "{obj}, and the subject at the {pos}",
    "{obj} and {obj2}, and a {size} subject at the {pos}",
    "the subject at the {pos}, beside {obj}, on {bg}",
    "a {size} version of the subject at the {pos}",
    "a {size} version of the subject at the {pos} on {bg}",
    "the subject sitting at the {pos} on {bg}",
    "the subject at the {pos} together with {obj}",
    "the subject, {size}, at the {pos}, with {obj} on {bg}",
    "a {size} subject at the {pos} next to {obj}, on {bg}",
)
assert len(SUBJECT_TEMPLATES) == 25


def subject_id_for(rng: np.random.Generator, split: str) -> int:
    """Held-out splits use the 30 canonical subjects, train the procedural ones (ids >= 30)."""
    if split_is_heldout(split):
        return int(rng.integers(NUM_CANONICAL_SUBJECTS))
    return NUM_CANONICAL_SUBJECTS + int(rng.integers(1_000_000))


def _make_subject(rng, key, split, index, seed, res) -> Sample:
    template_id = int(rng.integers(len(SUBJECT_TEMPLATES)))
    template = SUBJECT_TEMPLATES[template_id]
    n_extra = 2 if "{obj2}" in template else 1 if "{obj}" in template else 0
    for _ in range(2000):
        sid = subject_id_for(rng, split)
        positions = [POSITIONS[int(p)] for p in rng.choice(len(POSITIONS), size=n_extra + 1, replace=False)]
        size = _pick(rng, SIZES) if "{size}" in template else "large"
        subject = Obj("subject", "", size, positions[0], sid)
        avoid = object_colors(subject)
        extras = tuple(random_object(rng, p, avoid) for p in positions[1:])
        if "{bg}" in template:
            bg = random_background(rng, (subject,) + extras)
        else:
            bg = Background("solid", "white")
        scene = Scene(bg, extras + (subject,))  # the subject is drawn in front
        r = _accept(scene, split, res)
        if r is None:
            continue
        prompt = template.format(
            pos=subject.position, size=size, bg=background_phrase(bg),
            obj=object_phrase(extras[0]) if n_extra > 0 else "", obj2=object_phrase(extras[1]) if n_extra > 1 else "",
        )  # fmt: skip
        meta = _base_meta("subject", split, index, seed, res, r)
        meta.update(subject_id=sid, subject=subject_spec(sid).to_json(), template=template_id, subject_object=len(extras))
        source = render_subject_reference(sid, res)
        return Sample(key, "subject", prompt, _pil(r.image), _pil(source), None, None, meta)
    raise RuntimeError(f"could not sample a {split} subject scene")


def _edit_op(rng, scene: Scene, op: str):
    """Apply edit ``op`` to ``scene``: (new scene, instruction, edit meta) or None when not applicable."""
    objs = list(scene.objects)
    n = len(objs)
    used_pos = {o.position for o in objs}
    free = [p for p in POSITIONS if p not in used_pos]
    if op == "recolor":
        k = int(rng.integers(n))
        new = _pick(rng, [c for c in COLORS if c != objs[k].color and c != scene.background.color])
        instr = f"make {refer(scene, k)} {new}"
        objs[k] = replace(objs[k], color=new)
        return Scene(scene.background, tuple(objs)), instr, {"op": op, "object": k, "color": new}
    if op == "remove":
        if n < 2:
            return None
        k = int(rng.integers(n))
        instr = f"remove {refer(scene, k)}"
        del objs[k]
        return Scene(scene.background, tuple(objs)), instr, {"op": op, "object": k}
    if op == "add":
        if n >= MAX_OBJECTS or not free:
            return None
        obj = random_object(rng, _pick(rng, free), avoid_colors={scene.background.color})
        instr = f"add {object_phrase(obj)}"
        added = Scene(scene.background, (obj,)).to_json()["objects"][0]
        return Scene(scene.background, tuple(objs) + (obj,)), instr, {"op": op, "object": n, "added": added}
    if op == "move":
        if not free:
            return None
        k = int(rng.integers(n))
        pos = _pick(rng, free)
        instr = f"move {refer(scene, k)} to the {pos}"
        objs[k] = replace(objs[k], position=pos)
        edit = {"op": op, "object": k, "from": scene.objects[k].position, "to": pos}
        return Scene(scene.background, tuple(objs)), instr, edit
    if op == "background":
        used = set().union(*(object_colors(o) for o in objs))
        options = [Background(k, c) for k in BACKGROUNDS for c in BG_COLORS if c not in used and Background(k, c) != scene.background]
        bg = _pick(rng, options)
        instr = f"change the background to {background_noun(bg)}"
        edit = {"op": op, "from": Scene(scene.background, ()).to_json()["background"], "to": Scene(bg, ()).to_json()["background"]}
        return Scene(bg, tuple(objs)), instr, edit
    raise ValueError(f"unknown edit op {op!r}")


def _make_edit(rng, key, split, index, seed, res) -> Sample:
    for _ in range(200):
        scene, r_src = sample_scene(rng, split, res)
        op = _pick(rng, EDIT_OPS)
        out = _edit_op(rng, scene, op)
        if out is None:
            continue
        new_scene, instr, edit_meta = out
        r_tgt = render(new_scene, res)
        if not visibility_ok(r_tgt):
            continue
        meta = _base_meta("edit", split, index, seed, res, r_tgt)
        meta.update(source_scene=r_src.graph_json(), edit=edit_meta)
        return Sample(key, "edit", instr, _pil(r_tgt.image), _pil(r_src.image), None, None, meta)
    raise RuntimeError(f"could not sample a {split} edit")


_BUILDERS = {
    "inpaint": _make_inpaint,
    "ground": _make_ground,
    "control": _make_control,
    "subject": _make_subject,
    "edit": _make_edit,
}


def make_sample(task: str, index: int, split: str = "train", resolution: int = 64, seed: int = 0) -> Sample:
    """Sample ``index`` of ``task`` in ``split``: a validated schema Sample (target/source PIL RGB, res x res).

    Deterministic in (task, index, split, resolution, seed). meta holds the JSON scene graph(s) with boxes
    (``scene``; for edits also ``source_scene``), ``boxes`` and the task details (``mask_type``, ``ground``,
    ``cond_type``, ``subject_id`` / ``template``, ``edit``).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r} (expected one of {TASKS})")
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    rng = _rng(seed, split, TASKS.index(task), index)
    return _BUILDERS[task](rng, sample_key(task, index, split, seed), split, index, seed, resolution).validate()


def normalize_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """Task weights -> probabilities over the tasks with weight > 0 (None = all five, equal)."""
    if weights is None:
        weights = {t: 1.0 for t in TASKS}
    bad = [t for t in weights if t not in TASKS]
    if bad:
        raise ValueError(f"unknown task(s) {bad} in weights (expected {TASKS})")
    if any(float(w) < 0 for w in weights.values()):
        raise ValueError(f"task weights must be >= 0, got {dict(weights)}")
    total = sum(float(w) for w in weights.values())
    if total <= 0:
        raise ValueError(f"task weights must have a positive sum, got {dict(weights)}")
    return {t: float(weights[t]) / total for t in TASKS if float(weights.get(t, 0.0)) > 0}


_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def position_uniform(i: int, split: str = "train", seed: int = 0) -> float:
    """A uniform [0, 1) number for mixture position ``i``: SplitMix64 of (seed, split, i), identical everywhere."""
    h = _splitmix64(_splitmix64(_splitmix64(int(seed) & _MASK64) ^ zlib.crc32(split.encode())) ^ (int(i) & _MASK64))
    return (h >> 11) / float(1 << 53)


def mixture_task(i: int, probs: Mapping[str, float], split: str = "train", seed: int = 0) -> str:
    """The task of mixture position ``i`` (stateless, so any position can be generated on its own)."""
    u = position_uniform(i, split, seed)
    total, acc = sum(probs.values()), 0.0
    for t, p in probs.items():
        acc += p / total
        if u < acc:
            return t
    return list(probs)[-1]


def iter_shapes5(
    weights: Mapping[str, float] | None = None,
    split: str = "train",
    resolution: int = 64,
    seed: int = 0,
    start: int = 0,
    stop: int | None = None,
    step: int = 1,
) -> Iterator[Sample]:
    """Samples of a task mixture: position i has task ``mixture_task(i)`` and is ``make_sample(task, i, ...)``.

    ``start`` / ``stop`` / ``step`` select positions (e.g. step = number of consumers for sharding a stream).
    """
    probs = normalize_weights(weights)
    i = start
    while stop is None or i < stop:
        yield make_sample(mixture_task(i, probs, split, seed), i, split, resolution, seed)
        i += step


__all__ = [
    "BACKGROUNDS", "BG_COLORS", "COLORS", "GROUND_MODES", "EDIT_OPS", "INPAINT_FILL", "PALETTE", "POSITIONS",
    "SEG_COLORS", "SHAPES", "SIZES", "SUBJECT_TEMPLATES", "Background", "Obj", "Rendered", "Scene", "SubjectSpec",
    "background_phrase", "box_outline", "box_thickness", "caption", "control_map", "is_heldout", "iter_shapes5",
    "make_sample", "mixture_task", "normalize_weights", "object_geometry", "overlay_mask", "refer", "render",
    "render_subject_reference", "sample_key", "sample_scene", "split_is_heldout", "subject_spec",
]  # fmt: skip
