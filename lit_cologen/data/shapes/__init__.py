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

Modules: world.py (the scene graph, captions, subjects, rendering, control maps, visibility) and samples.py (scene
sampling, the per-task sample makers, the task mixture). This package is their public API: import from
``lit_cologen.data.shapes``.
"""

from __future__ import annotations

from .samples import (
    SUBJECT_TEMPLATES,
    iter_shapes5,
    make_sample,
    mixture_task,
    normalize_weights,
    object_colors,
    position_uniform,
    random_background,
    random_object,
    sample_key,
    sample_scene,
    subject_id_for,
)
from .world import (
    BACKGROUNDS,
    BG_COLORS,
    BG_PALETTE,
    CANNY_THRESHOLD,
    COLORS,
    DEPTH_BACKGROUND,
    DEPTH_LEVELS,
    EDIT_OPS,
    GENERATOR_VERSION,
    GROUND_MODES,
    HED_LEVELS,
    HOLDOUT_MODULUS,
    INPAINT_FILL,
    MASK_ALPHA,
    MAX_OBJECTS,
    MIN_VISIBLE_FRACTION,
    NUM_CANONICAL_SUBJECTS,
    PALETTE,
    POSITIONS,
    SEG_COLORS,
    SHAPES,
    SIZE_HALF_EXTENT,
    SIZES,
    SUBJECT_PATTERNS,
    SUBJECT_REFERENCE_HALF_EXTENT,
    SUBJECT_SEED,
    Background,
    Obj,
    Rendered,
    Scene,
    SubjectSpec,
    article,
    background_image,
    background_noun,
    background_phrase,
    box_outline,
    box_thickness,
    caption,
    control_map,
    is_heldout,
    join_phrases,
    object_geometry,
    object_phrase,
    overlay_mask,
    refer,
    render,
    render_subject_reference,
    secondary_color,
    shape_window,
    split_is_heldout,
    subject_spec,
    visibility_ok,
)

__all__ = [
    "BACKGROUNDS",
    "BG_COLORS",
    "BG_PALETTE",
    "CANNY_THRESHOLD",
    "COLORS",
    "DEPTH_BACKGROUND",
    "DEPTH_LEVELS",
    "EDIT_OPS",
    "GENERATOR_VERSION",
    "GROUND_MODES",
    "HED_LEVELS",
    "HOLDOUT_MODULUS",
    "INPAINT_FILL",
    "MASK_ALPHA",
    "MAX_OBJECTS",
    "MIN_VISIBLE_FRACTION",
    "NUM_CANONICAL_SUBJECTS",
    "PALETTE",
    "POSITIONS",
    "SEG_COLORS",
    "SHAPES",
    "SIZES",
    "SIZE_HALF_EXTENT",
    "SUBJECT_PATTERNS",
    "SUBJECT_REFERENCE_HALF_EXTENT",
    "SUBJECT_SEED",
    "SUBJECT_TEMPLATES",
    "Background",
    "Obj",
    "Rendered",
    "Scene",
    "SubjectSpec",
    "article",
    "background_image",
    "background_noun",
    "background_phrase",
    "box_outline",
    "box_thickness",
    "caption",
    "control_map",
    "is_heldout",
    "iter_shapes5",
    "join_phrases",
    "make_sample",
    "mixture_task",
    "normalize_weights",
    "object_colors",
    "object_geometry",
    "object_phrase",
    "overlay_mask",
    "position_uniform",
    "random_background",
    "random_object",
    "refer",
    "render",
    "render_subject_reference",
    "sample_key",
    "sample_scene",
    "secondary_color",
    "shape_window",
    "split_is_heldout",
    "subject_id_for",
    "subject_spec",
    "visibility_ok",
]
