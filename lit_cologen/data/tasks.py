"""Task prompt templates: the one place that turns (task, raw prompt, cond_type) into the text the model sees.

Training (the data loader's collate) and inference (the pipeline) both call :func:`format_prompt`, so the two can
never drift. The paper does not state its templates (paper section 9, item 12); ours are short task prefixes::

    inpaint   "fill in the masked region: <caption>"
    ground    "<instruction>"                              e.g. "draw a yellow box around the blue star"
    control   "<condition> map to image: <caption>"        e.g. "canny edge map to image: a red circle ..."
    subject   "generate the subject from the reference: <prompt>"
    edit      "<instruction>"                              e.g. "make the circle green"

Grounding and editing prompts are already instructions, so they pass through unchanged. Whitespace is collapsed
and an empty raw prompt gives just the prefix (text dropout for classifier-free guidance happens in the model, not
here).

:func:`source_layout` says whether a task's source image is pixel-aligned with the target (inpaint, ground,
control, edit) or a reference (subject); the model uses it for the source tokens' RoPE ids (DESIGN.md D5).
"""

from __future__ import annotations

from .schema import COND_TYPES, TASKS

COND_NAMES: dict[str, str] = {
    "canny": "canny edge",
    "depth": "depth",
    "hed": "hed edge",
    "lineart": "line art",
    "seg": "segmentation",
}
TEMPLATES: dict[str, str] = {
    "inpaint": "fill in the masked region: {prompt}",
    "ground": "{prompt}",
    "control": "{cond} map to image: {prompt}",
    "subject": "generate the subject from the reference: {prompt}",
    "edit": "{prompt}",
}
SOURCE_LAYOUTS: dict[str, str] = {
    "inpaint": "aligned",
    "ground": "aligned",
    "control": "aligned",
    "subject": "reference",
    "edit": "aligned",
}
assert set(TEMPLATES) == set(TASKS) == set(SOURCE_LAYOUTS) and set(COND_NAMES) == set(COND_TYPES)


def format_prompt(task: str, prompt: str, cond_type: str | None = None) -> str:
    """The model's text for ``task`` given the raw caption / instruction ``prompt`` (and ``cond_type`` for control).

    Raises ValueError for an unknown task, or a control task without a known cond_type.
    """
    if task not in TEMPLATES:
        raise ValueError(f"unknown task {task!r} (expected one of {TASKS})")
    raw = " ".join(str(prompt).split())
    if task == "control":
        if cond_type not in COND_NAMES:
            raise ValueError(f"control prompts need cond_type in {COND_TYPES}, got {cond_type!r}")
        text = TEMPLATES[task].format(cond=COND_NAMES[cond_type], prompt=raw)
    else:
        text = TEMPLATES[task].format(prompt=raw)
    return text.strip().rstrip(":").strip() if not raw else text


def source_layout(task: str) -> str:
    """"aligned" when the source is pixel-aligned with the target, "reference" for subject references."""
    if task not in SOURCE_LAYOUTS:
        raise ValueError(f"unknown task {task!r} (expected one of {TASKS})")
    return SOURCE_LAYOUTS[task]


__all__ = ["COND_NAMES", "SOURCE_LAYOUTS", "TEMPLATES", "format_prompt", "source_layout"]
