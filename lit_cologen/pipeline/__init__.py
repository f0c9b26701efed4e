"""The CoLoGen inference pipeline: :class:`CoLoGenPipeline` runs the five tasks with one model.

Parts:

* :mod:`~lit_cologen.pipeline.pipeline`: the :class:`CoLoGenPipeline` class (construction, placement, the steps
  of a call) and :class:`CoLoGenPipelineOutput`.
* :mod:`~lit_cologen.pipeline.images`: image I/O and conversions (inputs -> tensors, tensors -> PIL, resize, the
  inpainting fill, Canny).
* :mod:`~lit_cologen.pipeline.folder`: the ``save_pretrained`` / ``from_pretrained`` folder format, and which
  preset a weights folder is (:func:`infer_preset`).
* :mod:`~lit_cologen.pipeline.routing`: which PRW expert each block chose in a call (a forward hook), as rows.
* :mod:`~lit_cologen.pipeline.cli`: ``cologen sample``.

The public names below are resolved lazily (a module ``__getattr__``): importing this package, or its light
``cli`` submodule to build ``cologen --help``, imports no torch / diffusers; the first use of e.g.
``from lit_cologen.pipeline import CoLoGenPipeline`` imports the part that defines it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names come from __getattr__
    from lit_cologen.pipeline.folder import PIPELINE_FORMAT, infer_preset
    from lit_cologen.pipeline.images import INPAINT_FILL, to_image_tensor, to_mask_tensor
    from lit_cologen.pipeline.pipeline import OUTPUT_TYPES, TASK_ALIASES, CoLoGenPipeline, CoLoGenPipelineOutput

#: public name -> the submodule that defines it
_EXPORTS: dict[str, str] = {
    "CoLoGenPipeline": "pipeline",
    "CoLoGenPipelineOutput": "pipeline",
    "OUTPUT_TYPES": "pipeline",
    "TASK_ALIASES": "pipeline",
    "INPAINT_FILL": "images",
    "to_image_tensor": "images",
    "to_mask_tensor": "images",
    "PIPELINE_FORMAT": "folder",
    "infer_preset": "folder",
}

__all__ = [
    "CoLoGenPipeline",
    "CoLoGenPipelineOutput",
    "INPAINT_FILL",
    "OUTPUT_TYPES",
    "PIPELINE_FORMAT",
    "TASK_ALIASES",
    "infer_preset",
    "to_image_tensor",
    "to_mask_tensor",
]
assert sorted(__all__) == sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
