"""Dataset builders: convert the paper's real datasets (local files) into ``Sample`` streams.

Every builder is a function ``build_x(root, **options) -> Iterator[Sample]`` (a generator the shard writer can
consume) with the common options ``max_side``, ``seed``, ``max_samples``, ``part`` / ``num_parts`` (round-robin split
for parallel builds) and ``on_error`` (``raise`` | ``skip``). Nothing is downloaded. Layouts, options and defaults:
``data/BUILDERS.md``.

    from lit_cologen.data.builders import BUILDERS, build
    for sample in build("magicbrush", "/data/MagicBrush", split="train", max_samples=10):
        ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..schema import Sample
from ._common import DataSourceError
from .control import apply_online_condition, build_multigen
from .detectors import CannyDetector, EdgeDetector, TorchEdgeDetector, canny_edges, load_edge_detector
from .editing import build_edit_folder, build_magicbrush, build_omniedit
from .grounding import GROUNDING_COLOURS, blend_mask, box_pixels, build_lvis, build_refcoco, draw_box
from .inpaint import build_ade20k_inpaint, build_coco_inpaint, masked_source
from .subject200k import build_subject200k, split_composite

Builder = Callable[..., Iterator[Sample]]


def _refcoco_variant(name: str) -> Builder:
    def fn(root: str | Path, **options: Any) -> Iterator[Sample]:
        options.setdefault("dataset", name)
        return build_refcoco(root, **options)

    fn.__name__ = f"build_{name.replace('+', 'plus')}"
    fn.__wrapped__ = build_refcoco  # type: ignore[attr-defined]  # inspect.signature: build_refcoco's options
    fn.__doc__ = f"``build_refcoco`` with ``dataset={name!r}``.\n\n" + (build_refcoco.__doc__ or "")
    return fn


#: name -> builder; the lead wires ``cologen data build NAME --root DIR --out DIR`` to these.
BUILDERS: dict[str, Builder] = {
    # step 0: mask inpainting
    "coco-inpaint": build_coco_inpaint,
    "ade20k-inpaint": build_ade20k_inpaint,
    # step 1: image grounding
    "refcoco": _refcoco_variant("refcoco"),
    "refcoco+": _refcoco_variant("refcoco+"),
    "refcocog": _refcoco_variant("refcocog"),
    "lvis": build_lvis,
    # step 2: controllable generation
    "multigen": build_multigen,
    # step 3: subject customisation
    "subject200k": build_subject200k,
    # step 4: instruction editing
    "magicbrush": build_magicbrush,
    "omniedit": build_omniedit,
    "edit-folder": build_edit_folder,
}

#: the task each builder emits
BUILDER_TASKS: dict[str, str] = {
    "coco-inpaint": "inpaint",
    "ade20k-inpaint": "inpaint",
    "refcoco": "ground",
    "refcoco+": "ground",
    "refcocog": "ground",
    "lvis": "ground",
    "multigen": "control",
    "subject200k": "subject",
    "magicbrush": "edit",
    "omniedit": "edit",
    "edit-folder": "edit",
}


def _admits_plain_string(annotation: str) -> bool:
    """Whether a (string) annotation such as ``str | Path | Sequence[str] | None`` accepts a bare ``str``."""
    depth, parts, cur = 0, [], ""
    for ch in annotation:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "|" and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    return any(p in ("str", "Path", "Any") for p in parts)


def list_options(fn: Any, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with a bare string given to a list-typed parameter (``Sequence[str]``, ``list[...]``) made a
    one-element list: ``cond_types="seg"`` -> ``["seg"]``, never the characters ``('s', 'e', 'g')``."""
    import inspect

    params = inspect.signature(fn).parameters
    out = dict(options)
    for key, value in options.items():
        ann = params[key].annotation if key in params else None
        if isinstance(value, str) and isinstance(ann, str) and any(t in ann for t in ("Sequence[", "list[", "tuple[")) \
                and not _admits_plain_string(ann):
            out[key] = [value]
    return out


def build(name: str, root: str | Path, **options: Any) -> Iterator[Sample]:
    """Run builder ``name`` on ``root`` (``list_options`` applied); unknown names raise ``KeyError`` listing the
    known ones, unknown options a ``DataSourceError`` listing the builder's options."""
    try:
        fn = BUILDERS[name]
    except KeyError:
        raise KeyError(f"unknown builder {name!r}; known: {sorted(BUILDERS)}") from None
    import inspect

    known = [p for p in inspect.signature(fn).parameters if p != "root"]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise DataSourceError(f"builder {name!r} has no option(s) {unknown}; its options: {known}")
    return fn(root, **list_options(fn, options))


__all__ = [
    "BUILDERS",
    "BUILDER_TASKS",
    "CannyDetector",
    "DataSourceError",
    "EdgeDetector",
    "GROUNDING_COLOURS",
    "TorchEdgeDetector",
    "apply_online_condition",
    "blend_mask",
    "box_pixels",
    "build",
    "build_ade20k_inpaint",
    "build_coco_inpaint",
    "build_edit_folder",
    "build_lvis",
    "build_magicbrush",
    "build_multigen",
    "build_omniedit",
    "build_refcoco",
    "build_subject200k",
    "canny_edges",
    "draw_box",
    "load_edge_detector",
    "masked_source",
    "split_composite",
]
