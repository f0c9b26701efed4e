"""OmniGen v1 (diffusers ``OmniGenPipeline``) as a harness Generator: editing, control and DreamBench.

Weights: a local folder in the ``Shitao/OmniGen-v1-diffusers`` layout (``model_index.json``, ``transformer/``,
``vae/``, ``scheduler/``, ``tokenizer/``). The original ``Shitao/OmniGen-v1`` layout (one ``model.safetensors``)
is not loadable by diffusers and is rejected with that hint.

Prompts follow OmniGen's own conventions (README, ``docs/inference.md``, the diffusers OmniGen guide); an input
image is the placeholder ``<img><|image_1|></img>``:

=========  ===============================================================================================  =====
task       default template                                                                                 cfg
=========  ===============================================================================================  =====
edit       ``{image} {prompt}`` with ``use_input_image_size_as_output=True`` (output = source size)          2.0
control    ``Generate a new photo using the following picture and text as conditions: {image}\\n {prompt}``  2.0
subject    ``{prompt}. The {class_noun} is {image}.`` (README: "... The woman is <img><|image_1|></img>.")   2.5
t2i        ``{prompt}``                                                                                     2.5
=========  ===============================================================================================  =====

``img_guidance_scale`` 1.6 and 50 steps everywhere (the pipeline's defaults); ``max_input_image_size`` 1024.
Every template / scale is overridable (``prompt_templates={"control/depth": "..."}``, ``guidance_scale=...``) and
recorded in ``run.json``. OmniGen has no inpainting / grounding mode here; such requests raise.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Hashable, Mapping

from PIL import Image

from ..harness import GenerationRequest
from .common import (
    BaselineWeightsError,
    DiffusersBaseline,
    WeightsMismatchError,
    check_model_folder,
    expand_path,
    request_generators,
)
from .config import generator_kwargs

__all__ = [
    "OMNIGEN_LAYOUT",
    "IMAGE_PLACEHOLDER",
    "DEFAULT_TEMPLATES",
    "TASK_DEFAULTS",
    "check_omnigen_folder",
    "omnigen_prompt",
    "OmniGenBaseline",
    "make",
]

#: ``Shitao/OmniGen-v1-diffusers`` layout: subfolder -> required files ("a|b": one of them).
OMNIGEN_LAYOUT: dict[str, tuple[str, ...]] = {
    "": ("model_index.json",),
    "transformer": ("config.json", "*.safetensors|*.bin"),
    "vae": ("config.json", "*.safetensors|*.bin"),
    "scheduler": ("scheduler_config.json",),
    "tokenizer": ("tokenizer.json|tokenizer.model", "tokenizer_config.json"),
}
_HINT = ("Expected a local copy of Shitao/OmniGen-v1-diffusers (model_index.json, transformer/, vae/, scheduler/, "
         "tokenizer/); nothing is downloaded.")

IMAGE_PLACEHOLDER = "<img><|image_{k}|></img>"

DEFAULT_TEMPLATES: dict[str, str] = {
    "edit": "{image} {prompt}",
    "control": "Generate a new photo using the following picture and text as conditions: {image}\n {prompt}",
    "subject": "{prompt}. The {class_noun} is {image}.",
    "subject/no_class": "{prompt}. {image}",
    "t2i": "{prompt}",
}

#: OmniGen's documented settings per task (diffusers OmniGen guide / README examples).
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "edit": {"guidance_scale": 2.0, "img_guidance_scale": 1.6, "use_input_image_size_as_output": True},
    "control": {"guidance_scale": 2.0, "img_guidance_scale": 1.6, "use_input_image_size_as_output": False},
    "subject": {"guidance_scale": 2.5, "img_guidance_scale": 1.6, "use_input_image_size_as_output": False},
    "t2i": {"guidance_scale": 2.5, "img_guidance_scale": 1.6, "use_input_image_size_as_output": False},
}

_PLACEHOLDER_RE = re.compile(r"<\|image_(\d+)\|>")


def check_omnigen_folder(path: str | Path | None) -> Path:
    """Check an OmniGen (diffusers layout) folder; returns it. Errors name the folder and what is missing."""
    root = expand_path(path, "OmniGen weights")
    if root.is_dir() and not (root / "model_index.json").is_file() and (root / "model.safetensors").is_file():
        raise WeightsMismatchError(
            f"OmniGen weights: {root} looks like the original Shitao/OmniGen-v1 layout (model.safetensors + "
            f"config.json), which diffusers' OmniGenPipeline cannot load. {_HINT}"
        )
    return check_model_folder(root, "OmniGen weights", OMNIGEN_LAYOUT, pipeline_class="OmniGenPipeline", hint=_HINT)


def _template_for(request: GenerationRequest, templates: Mapping[str, str]) -> str:
    task = request.task
    if task == "control" and request.cond_type and f"control/{request.cond_type}" in templates:
        return templates[f"control/{request.cond_type}"]
    if task == "subject" and not request.fields.get("class_noun"):
        return templates["subject/no_class"]
    if task not in templates:
        raise ValueError(f"OmniGen baseline: task {task!r} of request {request.id} is not supported "
                         f"(supported: {sorted(k for k in templates if '/' not in k)})")
    return templates[task]


def omnigen_prompt(request: GenerationRequest, templates: Mapping[str, str] | None = None) -> str:
    """The OmniGen prompt of a request (``{prompt}``, ``{image}`` = first input image, ``{images}`` = all of them,
    ``{class_noun}``, ``{cond_type}``; a subject prompt loses its trailing full stop before ``". The ..."``)."""
    tpl = _template_for(request, {**DEFAULT_TEMPLATES, **(templates or {})})
    prompt = request.prompt.strip()
    if request.task == "subject":
        prompt = prompt.rstrip(". ")
    images = " ".join(IMAGE_PLACEHOLDER.format(k=k + 1) for k in range(max(len(request.sources), 1)))
    return tpl.format(prompt=prompt, image=IMAGE_PLACEHOLDER.format(k=1), images=images,
                      class_noun=request.fields.get("class_noun", ""), cond_type=request.cond_type or "")


def _num_images(prompt: str) -> int:
    ids = {int(m) for m in _PLACEHOLDER_RE.findall(prompt)}
    return max(ids) if ids else 0


def _crop_size(size: tuple[int, int], max_size: int) -> tuple[int, int]:
    """The size OmniGen's processor (``crop_image``) gives an input image: halve, fit ``max_size``, crop to x16."""
    w, h = size
    while min(w, h) >= 2 * max_size:
        w, h = w // 2, h // 2
    if max(w, h) > max_size:
        s = max_size / max(w, h)
        w, h = round(w * s), round(h * s)
    if min(w, h) < 16:
        s = 16 / min(w, h)
        w, h = round(w * s), round(h * s)
    return w - w % 16, h - h % 16


class OmniGenBaseline(DiffusersBaseline):
    """OmniGen v1 through diffusers' ``OmniGenPipeline`` (see the module docstring for prompts and defaults).

    Args:
        weights: the ``Shitao/OmniGen-v1-diffusers`` folder.
        num_inference_steps: 50 (OmniGen's default).
        guidance_scale, img_guidance_scale: one value for every task, a ``{task: value}`` mapping, or None for
            the task defaults (:data:`TASK_DEFAULTS`).
        max_input_image_size: input images are shrunk / cropped to this (OmniGen's processor; 1024).
        use_input_image_size_as_output: None = per task (True for edit); a bool or a ``{task: bool}`` mapping.
        prompt_templates: overrides of :data:`DEFAULT_TEMPLATES` (keys ``edit``, ``control``, ``control/<cond>``,
            ``subject``, ``subject/no_class``, ``t2i``).
        device, dtype, max_group, resize_to_request, offload, progress, hash_weights: see
            :class:`benchmarks.baselines.DiffusersBaseline`.
    """

    name = "omnigen"

    def __init__(self, weights: str | Path | None, *, num_inference_steps: int = 50,
                 guidance_scale: float | Mapping[str, float] | None = None,
                 img_guidance_scale: float | Mapping[str, float] | None = None, max_input_image_size: int = 1024,
                 use_input_image_size_as_output: bool | Mapping[str, bool] | None = None,
                 prompt_templates: Mapping[str, str] | None = None, **kwargs: Any):
        self.weights_path = weights
        self.num_inference_steps = int(num_inference_steps)
        self.guidance_scale = guidance_scale
        self.img_guidance_scale = img_guidance_scale
        self.max_input_image_size = int(max_input_image_size)
        self.use_input_image_size_as_output = use_input_image_size_as_output
        self.templates = {**DEFAULT_TEMPLATES, **dict(prompt_templates or {})}
        for key, tpl in self.templates.items():
            if key not in ("t2i",) and "{image" not in tpl:
                raise ValueError(f"prompt template {key!r} has no {{image}} placeholder: {tpl!r}")
        super().__init__(**kwargs)

    def check(self) -> None:
        self.root = check_omnigen_folder(self.weights_path)

    def weights(self) -> dict[str, str]:
        return {"omnigen": str(self.root)}

    def load(self):
        from diffusers import OmniGenPipeline

        try:
            return OmniGenPipeline.from_pretrained(str(self.root), dtype=self.dtype, local_files_only=True)
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            raise WeightsMismatchError(f"OmniGen weights: loading {self.root} failed: {err}") from err

    # -- per task settings
    def task_settings(self, task: str) -> dict[str, Any]:
        """Settings of one task: :data:`TASK_DEFAULTS`, overridden by the constructor's values (a single value, or
        a ``{task: value}`` mapping)."""
        base = dict(TASK_DEFAULTS.get(task, TASK_DEFAULTS["t2i"]))
        for key, cast in (("guidance_scale", float), ("img_guidance_scale", float),
                          ("use_input_image_size_as_output", bool)):
            value = getattr(self, key)
            if isinstance(value, Mapping):
                value = value.get(task)
            if value is not None:
                base[key] = cast(value)
        return base

    def settings(self) -> dict[str, Any]:
        return {
            "pipeline": "diffusers.OmniGenPipeline",
            "num_inference_steps": self.num_inference_steps,
            "max_input_image_size": self.max_input_image_size,
            "tasks": {t: self.task_settings(t) for t in TASK_DEFAULTS},
            "prompt_templates": dict(self.templates),
        }

    def prompt(self, request: GenerationRequest) -> str:
        return omnigen_prompt(request, self.templates)

    def _output_size(self, request: GenerationRequest) -> tuple[int, int]:
        if self.task_settings(request.task)["use_input_image_size_as_output"]:
            if not request.sources:
                raise ValueError(f"request {request.id}: use_input_image_size_as_output needs a source image")
            with Image.open(request.resolve(request.sources[0], self.run_root)) as im:
                return _crop_size(im.size, self.max_input_image_size)
        return max(16, request.width - request.width % 16), max(16, request.height - request.height % 16)

    def group_key(self, request: GenerationRequest) -> Hashable:
        return (request.task, self._output_size(request), len(request.sources))

    def generate_group(self, requests: list[GenerationRequest]) -> list[Image.Image]:
        task = requests[0].task
        st = self.task_settings(task)
        prompts = [self.prompt(r) for r in requests]
        n = _num_images(prompts[0])
        inputs = None
        if n:
            inputs = []
            for r, p in zip(requests, prompts):
                srcs = self.sources(r)
                if len(srcs) < _num_images(p):
                    raise ValueError(f"request {r.id}: prompt names {_num_images(p)} images, request has {len(srcs)}")
                inputs.append(srcs[: _num_images(p)])
        width, height = self._output_size(requests[0])
        pipe = self.pipe
        if inputs:  # seeded VAE posterior samples of the input images (instead of the global RNG)
            pipe.encode_input_images = self._seeded_encoder(pipe, requests, [len(x) for x in inputs])
        try:
            out = self._call(pipe, prompts, inputs, width, height, st, requests)
        finally:
            pipe.__dict__.pop("encode_input_images", None)
        return list(out.images)

    @staticmethod
    def _seeded_encoder(pipe, requests: list[GenerationRequest], counts: list[int]):
        """``encode_input_images`` drawing each input image's VAE posterior sample from a generator seeded by its
        request's seed, branch (prompt / image-CFG) and image index, so an image does not depend on the grouping.

        OmniGen's processor lists the input images per request for the prompt branch, then again for the
        image-guidance branch; any other count falls back to the pipeline's own (global RNG) sampling.
        """
        import torch

        seeds = [((int(r.seed) * 2 + branch) * 64 + k) % (2**63)
                 for branch in (0, 1) for r, n in zip(requests, counts) for k in range(n)]
        original = type(pipe).encode_input_images.__get__(pipe)

        def encode_input_images(input_pixel_values, device=None, dtype=None):
            if len(input_pixel_values) != len(seeds):
                return original(input_pixel_values, device=device, dtype=dtype)
            device = device or pipe._execution_device
            dtype = dtype or pipe.vae.dtype
            out = []
            for img, seed in zip(input_pixel_values, seeds):
                dist = pipe.vae.encode(img.to(device, dtype)).latent_dist
                out.append(dist.sample(generator=torch.Generator(device="cpu").manual_seed(seed))
                           .mul_(pipe.vae.config.scaling_factor))
            return out

        return encode_input_images

    def _call(self, pipe, prompts, inputs, width, height, st, requests):
        return pipe(
            prompt=prompts,
            input_images=inputs,
            height=height,
            width=width,
            num_inference_steps=self.num_inference_steps,
            max_input_image_size=self.max_input_image_size,
            guidance_scale=st["guidance_scale"],
            img_guidance_scale=st["img_guidance_scale"],
            use_input_image_size_as_output=bool(st["use_input_image_size_as_output"] and inputs),
            generator=request_generators(requests),
        )


def make(weights: str | None = None, config: str | None = None, **kwargs: Any) -> OmniGenBaseline:
    """Factory for ``--generator benchmarks.baselines.omnigen:make``: settings from ``config``'s ``generator``
    section (an ``experiments/baselines/omnigen_*.yaml``), overridden by keyword arguments (``--generator-arg``)."""
    args = generator_kwargs(config, {**kwargs, **({"weights": weights} if weights is not None else {})},
                            factory="make")
    if "weights" not in args:
        raise BaselineWeightsError("OmniGen weights: no weights folder configured (pass weights=DIR). " + _HINT)
    return OmniGenBaseline(**args)


if __name__ == "__main__":
    from .config import main

    raise SystemExit(main())
