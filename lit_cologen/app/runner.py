"""One pipeline call per app request: output size, the canny preview, progress and the routing of the image.

:class:`TaskRunner` wraps one :class:`~lit_cologen.pipeline.CoLoGenPipeline` for the app (the UI only maps its
components to these arguments):

* **Output size**: the source is sampled with its aspect ratio kept and its long side at ``long_side`` pixels
  (default: the preset's training resolution), each side rounded to a multiple of the pixels per token
  (``codec.factor * 2``). A model trained at 32 px knows nothing of 1000 px, and the cost grows with the token
  count squared, so ``long_side`` is capped at twice the training resolution.
* **Canny preview**: :meth:`TaskRunner.canny_preview` computes, from the uploaded photo, the edge map the control
  task will condition on: the same functions as the pipeline's ``compute_canny`` (resize to the output size, then
  kornia Canny, thresholds 0.1 / 0.2; :func:`lit_cologen.pipeline.images.canny`), so the user sees what the model
  gets.
* **Progress**: ``progress(step, total)`` after every denoising step (the pipeline's ``callback``).
* **Routing**: :class:`~lit_cologen.pipeline.routing.RoutingCapture` around the call; the result holds one row per
  block for the (single) image made.

Calls are serialized by a lock: one model, and on a CPU parallel calls only slow each other down. Bad input raises
:class:`~lit_cologen.errors.UserError` with a one-line message (the UI shows it as an error toast).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from PIL import Image

from lit_cologen.app.uploads import UploadLimits
from lit_cologen.data.schema import COND_TYPES
from lit_cologen.errors import UserError
from lit_cologen.models.presets import get_preset
from lit_cologen.pipeline import CoLoGenPipeline, to_image_tensor
from lit_cologen.pipeline.images import canny, resize, tensor_to_pil
from lit_cologen.pipeline.routing import RoutingCapture, block_names, routing_rows

__all__ = ["MAX_STEPS", "RunResult", "TaskRunner"]

#: the most denoising steps one request may ask for
MAX_STEPS = 100
#: tasks whose text is an instruction (required); the others take an optional caption
_INSTRUCTION_TASKS = ("ground", "edit")


@dataclass
class RunResult:
    """What one request made.

    image:   the output (PIL RGB, the output size).
    source:  the source image the model saw (masked image, condition map / computed canny, reference, ...).
    routing: one ``[block, expert, weight]`` row per routed block (:func:`~lit_cologen.pipeline.routing.routing_rows`).
    prompt:  the text the model saw (after the task's template).
    """

    image: Image.Image
    source: Image.Image
    routing: list[list[Any]]
    prompt: str


class TaskRunner:
    """The app's access to the pipeline (see the module docstring)."""

    def __init__(self, pipe: CoLoGenPipeline, limits: UploadLimits = UploadLimits()):
        self.pipe = pipe
        self.limits = limits
        self.resolution = get_preset(pipe.preset).resolution
        self.multiple = pipe.pixels_per_token
        self.max_side = max(2 * self.resolution, self.multiple)
        self.block_names = block_names(pipe.transformer)
        self.num_experts = pipe.transformer.num_experts
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ sizes
    def output_size(self, size: tuple[int, int], long_side: Optional[float] = None) -> tuple[int, int]:
        """``(height, width)`` for a source of ``size`` = (W, H): aspect kept, long side ``long_side`` (default the
        preset's resolution), each side a multiple of :attr:`multiple`.

        Raises:
            UserError: ``long_side`` not in [multiple, max_side].
        """
        side = self.resolution if long_side is None else int(long_side)
        if not self.multiple <= side <= self.max_side:
            raise UserError(f"output size {side} px is outside [{self.multiple}, {self.max_side}] for the "
                            f"{self.pipe.preset} preset (trained at {self.resolution} px)")
        w, h = size
        scale = side / max(w, h)
        m = self.multiple
        rounded = lambda s: max(m, int(s * scale / m + 0.5) * m)  # noqa: E731
        return rounded(h), rounded(w)

    # ------------------------------------------------------------------ control's canny map
    def canny_preview(self, photo: Image.Image, long_side: Optional[float] = None) -> Image.Image:
        """The canny map the control task computes from ``photo`` (at the output size; see the module docstring)."""
        height, width = self.output_size(photo.size, long_side)
        return tensor_to_pil(canny(resize(to_image_tensor(photo, "control image"), height, width)))

    # ------------------------------------------------------------------ one request
    def run(
        self,
        task: str,
        image: Image.Image,
        text: Optional[str] = "",
        *,
        mask: Optional[Image.Image] = None,
        cond_type: Optional[str] = None,
        compute_canny: bool = False,
        keep_unmasked: bool = False,
        seed: float = 0,
        steps: float = 28,
        guidance: Optional[float] = None,
        long_side: Optional[float] = None,
        progress: Optional[Callable[[int, int], None]] = None,
    ) -> RunResult:
        """Run ``task`` on ``image`` once (one image) and return it with its routing.

        ``text`` is the instruction (ground, edit: required) or caption (inpaint, control, subject: may be empty);
        ``mask`` (inpaint: white = regenerate), ``cond_type`` and ``compute_canny`` (control), ``keep_unmasked``
        (inpaint) are passed on; ``seed``, ``steps``, ``guidance`` as in ``cologen sample`` (guidance None: the
        preset's); ``long_side``: see
        :meth:`output_size`.

        Raises:
            UserError: a missing instruction, steps out of [1, MAX_STEPS], an unknown condition type, or anything
                the pipeline refuses (its message).
        """
        task = CoLoGenPipeline.check_task(task)
        text = (text or "").strip()
        if task in _INSTRUCTION_TASKS and not text:
            raise UserError(f"{task}: type an instruction first")
        if not 1 <= int(steps) <= MAX_STEPS:
            raise UserError(f"steps must be in [1, {MAX_STEPS}], got {steps}")
        if task == "control":
            if cond_type not in COND_TYPES:
                raise UserError(f"control: condition type must be one of {COND_TYPES}, got {cond_type!r}")
            compute_canny = bool(compute_canny) and cond_type == "canny"
        else:
            cond_type, compute_canny = None, False
        height, width = self.output_size(image.size, long_side)
        callback = (lambda step, total: progress(step, total)) if progress is not None else None
        try:
            with self._lock, RoutingCapture(self.pipe.transformer) as capture:
                out = self.pipe(
                    task, image, text, mask=mask if task == "inpaint" else None, cond_type=cond_type,
                    compute_canny=compute_canny, keep_unmasked=bool(keep_unmasked) and task == "inpaint",
                    height=height, width=width, num_inference_steps=int(steps),
                    guidance_scale=None if guidance is None else float(guidance),
                    seed=int(seed), output_type="pil", show_progress=False, callback=callback,
                )
        except (ValueError, TypeError) as err:  # the pipeline names the bad input
            raise UserError(f"{task}: {err}") from err
        return RunResult(image=out.images[-1], source=tensor_to_pil(out.sources[-1]),
                         routing=routing_rows(capture.decisions, self.block_names), prompt=out.prompts[-1])
