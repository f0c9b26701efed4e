"""The app's page: one ``gr.Blocks`` with a tab per task, each a form, a run button and its results.

Every tab has the task's inputs, the shared sampling settings (seed, steps, guidance, output size) and a run
button; its results are the output image, the text the model saw and the routing table of that image (block ->
the PRW expert it chose, with the gate weight). While a run samples, Gradio's progress bar follows the denoising
steps (``gr.Progress`` fed by the pipeline's step callback).

======== ============================================================== ==================================
tab      inputs                                                         API name (``gradio_client``)
======== ============================================================== ==================================
Inpaint  image editor: upload, then paint the region to regenerate;      ``/inpaint``
         caption; keep the unmasked pixels
Ground   image; instruction ("draw a yellow box around the blue star")  ``/ground``
Control  image (a photo, or the condition map itself); condition type;   ``/control``
         for canny, "compute canny from the photo" (and the computed     (``/canny_preview``: the map)
         map shown); caption
Subject  reference image of the subject; caption of the new scene       ``/subject``
Edit     image; instruction ("make the circle green")                   ``/edit``
======== ============================================================== ==================================

Each run API takes the tab's inputs in the order above, then ``seed, steps, guidance, size`` (all with defaults),
and returns ``(image, routing table, text the model saw)``. ``/inpaint``'s first input is the editor's value,
``{"background": image, "layers": [RGBA images, painted (alpha > 0) where to regenerate], "composite": None}``.
Errors in the input are shown as a one-line error
(``gr.Error``; a client gets it as ``AppError``). Elements have ``elem_id`` ``{task}-image``, ``{task}-text``,
``{task}-run``, ``{task}-output``, for the browser test and for styling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import gradio as gr

from lit_cologen.app.runner import MAX_STEPS, RunResult, TaskRunner
from lit_cologen.app.uploads import editor_image_and_mask, open_upload
from lit_cologen.data.schema import COND_TYPES
from lit_cologen.errors import UserError
from lit_cologen.pipeline.routing import ROUTING_HEADERS

__all__ = ["CSS", "TASK_TABS", "build_ui"]

#: (task, tab label) in tab order; the task is also the tab's id and its run event's API name
TASK_TABS: tuple[tuple[str, str], ...] = (
    ("inpaint", "Inpaint"), ("ground", "Ground"), ("control", "Control"), ("subject", "Subject"), ("edit", "Edit"),
)
_PLACEHOLDERS = {"inpaint": "a red circle at the center", "ground": "draw a yellow box around the blue star",
                 "control": "a red circle and a blue star", "subject": "the subject at the bottom right",
                 "edit": "make the circle green"}
#: every run event shares this concurrency group (size 1): one sampling request at a time
_SAMPLER = "sampler"
#: display height of the image boxes in px (a tiny preset's 32 px output is shown scaled up, pixels kept sharp)
_IMAGE_HEIGHT = 320
#: the page's own style: small images scaled up without blurring
CSS = ".cologen-image img { image-rendering: pixelated; object-fit: contain; width: 100%; height: 100%; }"


class _Settings:
    """The sampling settings of one tab: seed, steps, guidance, output size (long side, px)."""

    def __init__(self, runner: TaskRunner, task: str):
        with gr.Accordion("settings", open=True):
            with gr.Row():
                self.seed = gr.Number(value=0, precision=0, label="seed", elem_id=f"{task}-seed")
                self.steps = gr.Slider(1, MAX_STEPS, value=28, step=1, label="steps", elem_id=f"{task}-steps")
            with gr.Row():
                self.guidance = gr.Slider(0.0, 10.0, value=runner.pipe.default_guidance, step=0.1,
                                          label="guidance", elem_id=f"{task}-guidance")
                self.size = gr.Slider(runner.multiple, runner.max_side, value=runner.resolution, step=runner.multiple,
                                      label=f"output size: long side in px (trained at {runner.resolution})",
                                      elem_id=f"{task}-size")

    def components(self) -> list[gr.components.Component]:
        return [self.seed, self.steps, self.guidance, self.size]


class _Results:
    """The results column of one tab: output image, routing table, the text the model saw."""

    def __init__(self, runner: TaskRunner, task: str):
        self.image = gr.Image(label="output", type="pil", format="png", interactive=False, height=_IMAGE_HEIGHT,
                              elem_id=f"{task}-output", elem_classes="cologen-image")
        note = (f"{runner.num_experts} experts in {len(runner.block_names)} blocks" if runner.block_names
                else "this model has no PRW adapters")
        self.routing = gr.Dataframe(headers=list(ROUTING_HEADERS), datatype=["str", "number", "number"],
                                    label=f"routing of this image: the expert each block chose ({note})",
                                    interactive=False, elem_id=f"{task}-routing")
        self.prompt = gr.Textbox(label="text the model saw", interactive=False, elem_id=f"{task}-prompt")

    def components(self) -> list[gr.components.Component]:
        return [self.image, self.routing, self.prompt]


def _sample(runner: TaskRunner, task: str, read: Callable[[], tuple[Any, dict[str, Any]]], text: Optional[str],
            seed: Any, steps: Any, guidance: Any, size: Any, progress: gr.Progress) -> tuple[Any, list, str]:
    """Read the inputs (``read`` -> (image, extra keyword arguments of ``TaskRunner.run``)), run the task with the
    progress bar fed by the steps, and return the tab's results; a UserError becomes a ``gr.Error``."""
    try:
        image, extra = read()
        progress(0, desc="encoding the source")

        def on_step(step: int, total: int) -> None:
            progress((step, total), desc="denoising", unit="steps")

        result: RunResult = runner.run(
            task, image, text, seed=0 if seed is None else seed, steps=steps, guidance=guidance, long_side=size,
            progress=on_step, **extra)
    except UserError as err:
        raise gr.Error(str(err), print_exception=False) from err
    return result.image, result.routing, result.prompt


def _inpaint_tab(runner: TaskRunner) -> None:
    with gr.Row():
        with gr.Column():
            editor = gr.ImageEditor(
                type="filepath", format="png", image_mode="RGBA", sources=("upload", "clipboard"), layers=False,
                brush=gr.Brush(default_size=12, colors=["#ff00ff"], color_mode="fixed"),
                label="image: upload it, then paint the region to regenerate", height=_IMAGE_HEIGHT + 120,
                elem_id="inpaint-image")
            text = gr.Textbox(label="caption of the filled image", placeholder=_PLACEHOLDERS["inpaint"],
                              elem_id="inpaint-text")
            keep = gr.Checkbox(value=False, label="keep the unmasked pixels of the input", elem_id="inpaint-keep")
            settings = _Settings(runner, "inpaint")
            button = gr.Button("Run inpaint", variant="primary", elem_id="inpaint-run")
        with gr.Column():
            results = _Results(runner, "inpaint")

    def inpaint(value, caption, keep_unmasked, seed, steps, guidance, size, progress=gr.Progress()):
        def read():
            image, mask = editor_image_and_mask(value, runner.limits)
            return image, {"mask": mask, "keep_unmasked": keep_unmasked}

        return _sample(runner, "inpaint", read, caption, seed, steps, guidance, size, progress)

    button.click(inpaint, [editor, text, keep, *settings.components()], results.components(), api_name="inpaint",
                 concurrency_limit=1, concurrency_id=_SAMPLER)


def _control_tab(runner: TaskRunner) -> None:
    with gr.Row():
        with gr.Column():
            image = gr.Image(type="filepath", image_mode=None, sources=("upload", "clipboard"),
                             label="image: a photo (canny is computed from it) or the condition map",
                             height=_IMAGE_HEIGHT, elem_id="control-image", elem_classes="cologen-image")
            cond = gr.Dropdown(list(COND_TYPES), value="canny", label="condition type", elem_id="control-cond")
            compute = gr.Checkbox(value=True, label="the image is a photo: compute its canny edges",
                                  elem_id="control-compute")
            preview = gr.Image(label="canny map the model sees (computed from the photo)", type="pil", format="png",
                               interactive=False, height=_IMAGE_HEIGHT, elem_id="control-canny",
                               elem_classes="cologen-image")
            text = gr.Textbox(label="caption", placeholder=_PLACEHOLDERS["control"], elem_id="control-text")
            settings = _Settings(runner, "control")
            button = gr.Button("Run control", variant="primary", elem_id="control-run")
        with gr.Column():
            results = _Results(runner, "control")

    def canny_preview(path, cond_type, compute_canny, size):
        if not path or cond_type != "canny" or not compute_canny:
            return None
        try:
            return runner.canny_preview(open_upload(path, runner.limits, "control image"), size)
        except UserError as err:
            raise gr.Error(str(err), print_exception=False) from err

    def control(path, cond_type, compute_canny, caption, seed, steps, guidance, size, progress=gr.Progress()):
        def read():
            photo = open_upload(path, runner.limits, "control image")
            return photo, {"cond_type": cond_type, "compute_canny": compute_canny}

        return _sample(runner, "control", read, caption, seed, steps, guidance, size, progress)

    image.change(canny_preview, [image, cond, compute, settings.size], preview, api_name="canny_preview",
                 show_progress="minimal")
    for trigger in (cond.change, compute.change, settings.size.release):
        trigger(canny_preview, [image, cond, compute, settings.size], preview, api_visibility="private",
                show_progress="minimal")
    cond.change(lambda c: gr.Checkbox(visible=c == "canny"), cond, compute, api_visibility="private",
                show_progress="hidden")
    button.click(control, [image, cond, compute, text, *settings.components()], results.components(),
                 api_name="control", concurrency_limit=1, concurrency_id=_SAMPLER)


def _image_tab(runner: TaskRunner, task: str, image_label: str, text_label: str) -> None:
    """A tab whose task takes one image and a text: ground, subject, edit."""
    with gr.Row():
        with gr.Column():
            image = gr.Image(type="filepath", image_mode=None, sources=("upload", "clipboard"), label=image_label,
                             height=_IMAGE_HEIGHT, elem_id=f"{task}-image", elem_classes="cologen-image")
            text = gr.Textbox(label=text_label, placeholder=_PLACEHOLDERS[task], elem_id=f"{task}-text")
            settings = _Settings(runner, task)
            button = gr.Button(f"Run {task}", variant="primary", elem_id=f"{task}-run")
        with gr.Column():
            results = _Results(runner, task)

    def run(path, prompt, seed, steps, guidance, size, progress=gr.Progress()):
        return _sample(runner, task, lambda: (open_upload(path, runner.limits, f"{task} image"), {}), prompt, seed,
                       steps, guidance, size, progress)

    run.__name__ = task  # the endpoint's function name in the API page
    button.click(run, [image, text, *settings.components()], results.components(), api_name=task,
                 concurrency_limit=1, concurrency_id=_SAMPLER)


def build_ui(runner: TaskRunner) -> gr.Blocks:
    """The page for ``runner``'s pipeline (the module docstring lists the tabs and their API names)."""
    pipe = runner.pipe
    routed = f"{runner.num_experts} PRW experts in {len(runner.block_names)} blocks" if runner.block_names \
        else "no PRW adapters"
    with gr.Blocks(title="CoLoGen", analytics_enabled=False) as demo:
        gr.Markdown(f"# CoLoGen\n`{pipe.preset}` preset, {routed}, sampling on `{pipe.device}`. "
                    f"Pick a task, give it an image and a text, run it; the table shows which expert each block "
                    f"chose for the image.")
        with gr.Tabs():
            for task, label in TASK_TABS:
                with gr.Tab(label, id=task, elem_id=f"tab-{task}"):
                    if task == "inpaint":
                        _inpaint_tab(runner)
                    elif task == "control":
                        _control_tab(runner)
                    elif task == "ground":
                        _image_tab(runner, task, "image", "instruction")
                    elif task == "subject":
                        _image_tab(runner, task, "reference image of the subject", "caption of the new scene")
                    else:
                        _image_tab(runner, task, "image to edit", "instruction")
    return demo
