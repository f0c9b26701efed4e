"""Shapes-5 samples: scene sampling per split and the per-task sample makers (inpaint, ground, control, subject,
edit), plus the stateless task mixture (:func:`mixture_task`, :func:`iter_shapes5`).

Every sample comes from ``numpy.random.default_rng([seed, crc32(split), task id, index])``, so the same arguments
give byte-identical samples in any process; meta records ``GENERATOR_VERSION``.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from typing import Any, Iterator, Mapping

import numpy as np
from PIL import Image

from ..masks import sample_mask
from ..schema import COND_TYPES, TASKS, Sample
from .world import (  # fmt: skip
    BACKGROUNDS,
    BG_COLORS,
    COLORS,
    EDIT_OPS,
    GENERATOR_VERSION,
    GROUND_MODES,
    INPAINT_FILL,
    MASK_ALPHA,
    MAX_OBJECTS,
    NUM_CANONICAL_SUBJECTS,
    PALETTE,
    POSITIONS,
    SHAPES,
    SIZES,
    Background,
    Obj,
    Rendered,
    Scene,
    background_noun,
    background_phrase,
    box_outline,
    box_thickness,
    caption,
    control_map,
    is_heldout,
    object_phrase,
    overlay_mask,
    refer,
    render,
    render_subject_reference,
    split_is_heldout,
    subject_spec,
    visibility_ok,
)

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
        options = [Background(k, c) for k in BACKGROUNDS for c in BG_COLORS
                   if c not in used and Background(k, c) != scene.background]
        bg = _pick(rng, options)
        instr = f"change the background to {background_noun(bg)}"
        edit = {"op": op, "from": Scene(scene.background, ()).to_json()["background"],
                "to": Scene(bg, ()).to_json()["background"]}
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
