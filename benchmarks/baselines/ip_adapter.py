"""IP-Adapter baselines on DreamBench (Table 4 / 7): FLUX.1 + XLabs IP-Adapter, and SDXL + IP-Adapter-Plus (ViT-H).

Both run through diffusers' own loaders, from local folders only:

* FLUX (:class:`FluxIPAdapterBaseline`, factory :func:`make_flux`): ``FluxPipeline.from_pretrained(base)`` (the
  ``black-forest-labs/FLUX.1-dev`` diffusers layout), then ``load_ip_adapter(adapter, weight_name=
  "ip_adapter.safetensors", image_encoder_pretrained_model_name_or_path=image_encoder)`` with the XLabs
  ``flux-ip-adapter`` file (keys ``ip_adapter_proj_model.*`` and ``double_blocks.<i>.processor.
  ip_adapter_double_stream_{k,v}_proj.*``) and the CLIP ViT-L/14 image encoder (``openai/clip-vit-large-patch14``
  folder). True CFG as the diffusers docs use it: ``true_cfg_scale=4.0`` with a negative prompt (default ``""``);
  FLUX's distilled ``guidance_scale`` 3.5; 28 steps; IP scale 1.0. The negative branch gets a black reference
  image (diffusers' default ``negative_ip_adapter_image``).
* SDXL (:class:`SDXLIPAdapterBaseline`, factory :func:`make_sdxl`): ``StableDiffusionXLPipeline.from_pretrained
  (base)``, then ``load_ip_adapter(adapter, subfolder="sdxl_models", weight_name="ip-adapter-plus_sdxl_vit-h.
  safetensors", image_encoder_folder="models/image_encoder")`` (the ``h94/IP-Adapter`` layout: the ViT-H encoder
  lives in ``models/image_encoder``); standard CFG ``guidance_scale`` 5.0 with a negative prompt; 50 steps; IP
  scale 0.6 (the diffusers IP-Adapter guide's SDXL examples).

``scale`` moves CLIP-I up and CLIP-T down (anchors.md section 3), so it is recorded with every other setting in
``run.json`` / ``results.json``. ``render_size`` generates at another size (e.g. SDXL's native 1024) and resizes
to the protocol's size. Requests with the same reference image and size share one pipeline call (one CPU generator
per request, so each image depends on its own seed only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Hashable

from PIL import Image

from ..harness import GenerationRequest
from .common import (
    BaselineWeightsError,
    DiffusersBaseline,
    WeightsMismatchError,
    check_model_folder,
    expand_path,
    read_json,
    request_generators,
)
from .config import generator_kwargs

__all__ = [
    "FLUX_PIPELINE_LAYOUT",
    "SDXL_PIPELINE_LAYOUT",
    "IMAGE_ENCODER_LAYOUT",
    "check_flux_ip_adapter",
    "check_sdxl_ip_adapter",
    "FluxIPAdapterBaseline",
    "SDXLIPAdapterBaseline",
    "make_flux",
    "make_sdxl",
]

_MODEL = ("config.json", "*.safetensors|*.bin")
FLUX_PIPELINE_LAYOUT: dict[str, tuple[str, ...]] = {
    "": ("model_index.json",),
    "transformer": _MODEL,
    "vae": _MODEL,
    "scheduler": ("scheduler_config.json",),
    "text_encoder": _MODEL,
    "tokenizer": ("tokenizer.json|vocab.json",),
    "text_encoder_2": _MODEL,
    "tokenizer_2": ("tokenizer.json|spiece.model",),
}
SDXL_PIPELINE_LAYOUT: dict[str, tuple[str, ...]] = {
    "": ("model_index.json",),
    "unet": _MODEL,
    "vae": _MODEL,
    "scheduler": ("scheduler_config.json",),
    "text_encoder": _MODEL,
    "text_encoder_2": _MODEL,
    "tokenizer": ("tokenizer.json|vocab.json",),
    "tokenizer_2": ("tokenizer.json|vocab.json",),
}
IMAGE_ENCODER_LAYOUT: dict[str, tuple[str, ...]] = {"": ("config.json", "*.safetensors|*.bin")}

_FLUX_HINT = "Expected a local copy of black-forest-labs/FLUX.1-dev (diffusers layout)."
_XLABS_HINT = "Expected the XLabs-AI/flux-ip-adapter layout (ip_adapter.safetensors)."
_CLIP_HINT = "Expected a CLIP vision model folder such as openai/clip-vit-large-patch14 (config.json + weights)."
_SDXL_HINT = "Expected a local copy of stabilityai/stable-diffusion-xl-base-1.0 (diffusers layout)."
_H94_HINT = ("Expected the h94/IP-Adapter layout (sdxl_models/ip-adapter-plus_sdxl_vit-h.safetensors, "
             "models/image_encoder/).")


def _tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def _clip_dims(folder: Path) -> dict[str, int]:
    """``projection_dim`` and vision ``hidden_size`` of a CLIP (vision) model folder's config.json."""
    cfg = read_json(folder / "config.json")
    vision = cfg.get("vision_config") or cfg
    return {"projection_dim": int(cfg.get("projection_dim") or vision.get("projection_dim") or 0),
            "hidden_size": int(vision.get("hidden_size") or 0)}


def _adapter_file(path: str | Path | None, weight_name: str, subfolder: str, what: str, hint: str) -> Path:
    p = expand_path(path, what)
    if p.is_file():
        return p
    if not p.is_dir():
        raise BaselineWeightsError(f"{what}: {p} does not exist. {hint}")
    f = p / subfolder / weight_name if subfolder else p / weight_name
    if not f.is_file():
        have = sorted(x.relative_to(p).as_posix() for x in p.rglob("*.safetensors"))[:8]
        raise BaselineWeightsError(f"{what}: folder {p} lacks {f.relative_to(p).as_posix()} "
                                   f"(it holds {have or 'no *.safetensors'}). {hint}")
    if f.suffix != ".safetensors":
        raise BaselineWeightsError(f"{what}: {f} must be a .safetensors file")
    return f


def check_flux_ip_adapter(base: str | Path | None, adapter: str | Path | None, image_encoder: str | Path | None,
                          weight_name: str = "ip_adapter.safetensors") -> tuple[Path, Path, Path]:
    """Check a FLUX base folder, an XLabs IP-Adapter file / folder and a CLIP image encoder folder, and that their
    shapes agree (adapter keys vs the transformer's double blocks and joint attention width, image projection vs
    the encoder's ``projection_dim``), reading configs and tensor headers only. Returns (base, adapter file,
    encoder)."""
    root = check_model_folder(base, "FLUX base weights", FLUX_PIPELINE_LAYOUT, pipeline_class="FluxPipeline",
                              hint=_FLUX_HINT)
    f = _adapter_file(adapter, weight_name, "", "FLUX IP-Adapter", _XLABS_HINT)
    enc = check_model_folder(image_encoder, "IP-Adapter image encoder", IMAGE_ENCODER_LAYOUT, hint=_CLIP_HINT)

    shapes = _tensor_shapes(f)
    proj = next((k for k in ("ip_adapter_proj_model.proj.weight", "image_proj.proj.weight") if k in shapes), None)
    blocks = sorted({int(k.split(".")[1]) for k in shapes
                     if k.startswith(("double_blocks.", "ip_adapter.")) and k.split(".")[1].isdigit()})
    if proj is None or not blocks:
        missing = ([] if proj else ["ip_adapter_proj_model.proj.weight"]) + \
                  ([] if blocks else ["double_blocks.<i>.processor.ip_adapter_double_stream_k_proj.weight"])
        raise WeightsMismatchError(f"FLUX IP-Adapter: {f} is not in the XLabs key layout: no {', '.join(missing)} "
                                   f"(first keys: {sorted(shapes)[:4]}). {_XLABS_HINT}")
    tcfg = read_json(root / "transformer" / "config.json")
    n_layers = int(tcfg.get("num_layers", 19))
    joint = int(tcfg.get("joint_attention_dim", 4096))
    inner = int(tcfg.get("num_attention_heads", 24)) * int(tcfg.get("attention_head_dim", 128))
    problems = []
    if blocks != list(range(n_layers)):
        problems.append(f"adapter has IP layers for {len(blocks)} double blocks, the transformer has {n_layers}")
    out_dim, in_dim = shapes[proj]
    tokens = 16 if out_dim == 65536 else 4
    if out_dim != tokens * joint:
        problems.append(f"image projection gives {out_dim // tokens}-wide tokens, the transformer's "
                        f"joint_attention_dim is {joint}")
    clip = _clip_dims(enc)
    if clip["projection_dim"] and in_dim != clip["projection_dim"]:
        problems.append(f"image projection takes {in_dim}-dim CLIP embeddings, the image encoder {enc} has "
                        f"projection_dim {clip['projection_dim']}")
    k0 = next((s for k, s in shapes.items() if k.endswith("ip_adapter_double_stream_k_proj.weight")), None)
    if k0 is not None and tuple(k0) != (inner, joint):
        problems.append(f"IP key projections are {tuple(k0)}, the transformer needs {(inner, joint)}")
    if problems:
        raise WeightsMismatchError(f"FLUX IP-Adapter {f} does not match base {root} / encoder {enc}: "
                                   + "; ".join(problems))
    return root, f, enc


def check_sdxl_ip_adapter(base: str | Path | None, adapter: str | Path | None,
                          weight_name: str = "ip-adapter-plus_sdxl_vit-h.safetensors", subfolder: str = "sdxl_models",
                          image_encoder_folder: str = "models/image_encoder") -> tuple[Path, Path, Path]:
    """Check an SDXL base folder and an IP-Adapter in the ``h94/IP-Adapter`` layout (adapter file under
    ``subfolder``, image encoder under ``image_encoder_folder``, both relative to the adapter folder), and that the
    shapes agree. Returns (base, adapter file, image encoder folder)."""
    root = check_model_folder(base, "SDXL base weights", SDXL_PIPELINE_LAYOUT,
                              pipeline_class="StableDiffusionXLPipeline", hint=_SDXL_HINT)
    f = _adapter_file(adapter, weight_name, subfolder, "SDXL IP-Adapter", _H94_HINT)
    adapter_root = expand_path(adapter, "SDXL IP-Adapter")
    if not adapter_root.is_dir():  # the adapter given as a file: paths are relative to its folder
        adapter_root, subfolder = f.parent, ""
    # diffusers: a bare name is looked up inside `subfolder`, a path with "/" from the adapter folder
    enc_path = adapter_root / image_encoder_folder if "/" in image_encoder_folder else \
        (adapter_root / subfolder if subfolder else adapter_root) / image_encoder_folder
    enc = check_model_folder(enc_path, "IP-Adapter image encoder", IMAGE_ENCODER_LAYOUT, hint=_H94_HINT)

    shapes = _tensor_shapes(f)
    if not any(k.startswith("image_proj.") for k in shapes) or not any(k.startswith("ip_adapter.") for k in shapes):
        raise WeightsMismatchError(f"SDXL IP-Adapter: {f} lacks 'image_proj.*' / 'ip_adapter.*' keys "
                                   f"(first keys: {sorted(shapes)[:4]}). {_H94_HINT}")
    ucfg = read_json(root / "unet" / "config.json")
    cross = int(ucfg.get("cross_attention_dim", 2048))
    clip = _clip_dims(enc)
    problems = []
    k_ip = [s for k, s in shapes.items() if k.endswith(".to_k_ip.weight")]
    if any(s[1] != cross for s in k_ip):
        problems.append(f"IP key projections take {k_ip[0][1]}-wide tokens, the UNet's cross_attention_dim is {cross}")
    if "image_proj.latents" in shapes:  # Plus: Resampler over the encoder's penultimate hidden states
        if shapes["image_proj.proj_in.weight"][1] != clip["hidden_size"]:
            problems.append(f"resampler takes {shapes['image_proj.proj_in.weight'][1]}-dim features, the image "
                            f"encoder's hidden_size is {clip['hidden_size']}")
    elif "image_proj.proj.weight" in shapes and clip["projection_dim"]:
        if shapes["image_proj.proj.weight"][1] != clip["projection_dim"]:
            problems.append(f"image projection takes {shapes['image_proj.proj.weight'][1]}-dim embeddings, the "
                            f"image encoder's projection_dim is {clip['projection_dim']}")
    if problems:
        raise WeightsMismatchError(f"SDXL IP-Adapter {f} does not match base {root} / encoder {enc}: "
                                   + "; ".join(problems))
    return root, f, enc


class _IPAdapterBaseline(DiffusersBaseline):
    """Shared part: DreamBench-style subject requests, reference = ``sources[0]``, one call per reference."""

    def __init__(self, *, scale: float, num_inference_steps: int, guidance_scale: float, negative_prompt: str | None,
                 render_size: int | None = None, **kwargs: Any):
        self.scale = float(scale)
        self.num_inference_steps = int(num_inference_steps)
        self.guidance_scale = float(guidance_scale)
        self.negative_prompt = negative_prompt
        self.render_size = int(render_size) if render_size else None
        super().__init__(**kwargs)

    def group_key(self, request: GenerationRequest) -> Hashable:
        if request.task not in ("subject",):
            raise ValueError(f"{self.name}: task {request.task!r} of request {request.id} is not supported "
                             "(IP-Adapter baselines run subject-driven generation, e.g. DreamBench)")
        if not request.sources:
            raise ValueError(f"{self.name}: request {request.id} has no reference image")
        return (request.sources[0], request.width, request.height)

    def _size(self, request: GenerationRequest) -> tuple[int, int]:
        if self.render_size:
            return self.render_size, self.render_size
        return request.width, request.height

    def weights(self) -> dict[str, str]:  # check() sets root / adapter_file / encoder
        return {"base": str(self.root), "ip_adapter": str(self.adapter_file), "image_encoder": str(self.encoder)}

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["weights"]["ip_adapter"] = _hashed(self.adapter_file)
        return d

    def _common_settings(self) -> dict[str, Any]:
        return {"scale": self.scale, "num_inference_steps": self.num_inference_steps,
                "guidance_scale": self.guidance_scale, "negative_prompt": self.negative_prompt,
                "render_size": self.render_size, "reference": "sources[0]", "prompt": "request.prompt (as is)"}


class FluxIPAdapterBaseline(_IPAdapterBaseline):
    """FLUX.1 + XLabs IP-Adapter (diffusers ``FluxIPAdapterMixin``); see the module docstring.

    Args:
        weights: FLUX.1 base folder (diffusers layout).
        adapter: the XLabs ``flux-ip-adapter`` folder (holding ``weight_name``) or the file itself.
        image_encoder: CLIP ViT-L/14 folder (``openai/clip-vit-large-patch14``).
        scale: IP-Adapter scale (1.0). true_cfg_scale: 4.0 (true CFG on when > 1 and a negative prompt is set).
        negative_prompt: ``""``. guidance_scale: FLUX's distilled guidance (3.5). num_inference_steps: 28.
        max_sequence_length: T5 tokens (512, FLUX.1-dev). render_size: generate at this size, resize to the request.
    """

    name = "ip-adapter-flux"

    def __init__(self, weights: str | Path | None, adapter: str | Path | None, image_encoder: str | Path | None, *,
                 weight_name: str = "ip_adapter.safetensors", scale: float = 1.0, true_cfg_scale: float = 4.0,
                 negative_prompt: str | None = "", guidance_scale: float = 3.5, num_inference_steps: int = 28,
                 max_sequence_length: int = 512, render_size: int | None = None, **kwargs: Any):
        self.weights_path, self.adapter_path, self.encoder_path = weights, adapter, image_encoder
        self.weight_name = weight_name
        self.true_cfg_scale = float(true_cfg_scale)
        self.max_sequence_length = int(max_sequence_length)
        if self.true_cfg_scale > 1 and negative_prompt is None:
            raise ValueError("true_cfg_scale > 1 needs a negative_prompt (e.g. \"\")")
        super().__init__(scale=scale, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                         negative_prompt=negative_prompt, render_size=render_size, **kwargs)

    def check(self) -> None:
        self.root, self.adapter_file, self.encoder = check_flux_ip_adapter(
            self.weights_path, self.adapter_path, self.encoder_path, self.weight_name)

    def settings(self) -> dict[str, Any]:
        return {"pipeline": "diffusers.FluxPipeline + load_ip_adapter (XLabs)", **self._common_settings(),
                "true_cfg_scale": self.true_cfg_scale, "max_sequence_length": self.max_sequence_length,
                "negative_ip_adapter_image": "black image (diffusers default)"}

    def load(self):
        from diffusers import FluxPipeline

        pipe = FluxPipeline.from_pretrained(str(self.root), dtype=self.dtype, local_files_only=True)
        try:
            pipe.load_ip_adapter(str(self.adapter_file.parent), weight_name=self.adapter_file.name,
                                 image_encoder_pretrained_model_name_or_path=str(self.encoder),
                                 image_encoder_dtype=self.dtype, local_files_only=True)
        except (KeyError, RuntimeError, ValueError) as err:
            raise WeightsMismatchError(f"FLUX IP-Adapter {self.adapter_file} does not load into {self.root}: {err}") from err
        pipe.set_ip_adapter_scale(self.scale)
        return pipe

    def generate_group(self, requests: list[GenerationRequest]) -> list[Image.Image]:
        ref = self.sources(requests[0])[0]
        width, height = self._size(requests[0])
        kwargs: dict[str, Any] = {}
        if self.true_cfg_scale > 1:
            kwargs.update(negative_prompt=[self.negative_prompt] * len(requests), true_cfg_scale=self.true_cfg_scale)
        out = self.pipe(prompt=[r.prompt for r in requests], ip_adapter_image=ref, height=height, width=width,
                        num_inference_steps=self.num_inference_steps, guidance_scale=self.guidance_scale,
                        max_sequence_length=self.max_sequence_length, generator=request_generators(requests),
                        **kwargs)
        return list(out.images)


class SDXLIPAdapterBaseline(_IPAdapterBaseline):
    """SDXL + IP-Adapter (Plus, ViT-H by default) through ``StableDiffusionXLPipeline.load_ip_adapter``.

    Args:
        weights: SDXL base folder (diffusers layout).
        adapter: the ``h94/IP-Adapter`` folder (or a file; then ``image_encoder_folder`` is relative to its folder).
        subfolder, weight_name, image_encoder_folder: the adapter file and the encoder inside ``adapter``
            (``sdxl_models``, ``ip-adapter-plus_sdxl_vit-h.safetensors``, ``models/image_encoder``).
        scale: 0.6. guidance_scale: CFG (5.0) with ``negative_prompt`` (``""``). num_inference_steps: 50.
        render_size: generate at this size (e.g. 1024, SDXL's native size) and resize to the request.
    """

    name = "ip-adapter-sdxl"

    def __init__(self, weights: str | Path | None, adapter: str | Path | None, *, subfolder: str = "sdxl_models",
                 weight_name: str = "ip-adapter-plus_sdxl_vit-h.safetensors",
                 image_encoder_folder: str = "models/image_encoder", scale: float = 0.6, guidance_scale: float = 5.0,
                 negative_prompt: str | None = "", num_inference_steps: int = 50, render_size: int | None = None,
                 **kwargs: Any):
        self.weights_path, self.adapter_path = weights, adapter
        self.subfolder, self.weight_name, self.image_encoder_folder = subfolder, weight_name, image_encoder_folder
        super().__init__(scale=scale, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                         negative_prompt=negative_prompt, render_size=render_size, **kwargs)

    def check(self) -> None:
        self.root, self.adapter_file, self.encoder = check_sdxl_ip_adapter(
            self.weights_path, self.adapter_path, self.weight_name, self.subfolder, self.image_encoder_folder)

    def settings(self) -> dict[str, Any]:
        return {"pipeline": "diffusers.StableDiffusionXLPipeline + load_ip_adapter", **self._common_settings(),
                "weight_name": self.weight_name, "image_encoder_folder": self.image_encoder_folder}

    def load(self):
        from diffusers import StableDiffusionXLPipeline

        pipe = StableDiffusionXLPipeline.from_pretrained(str(self.root), dtype=self.dtype, local_files_only=True)
        adapter_root = expand_path(self.adapter_path, "SDXL IP-Adapter")
        if not adapter_root.is_dir():
            adapter_root = self.adapter_file.parent
        subfolder = self.adapter_file.parent.relative_to(adapter_root).as_posix()
        try:
            pipe.load_ip_adapter(str(adapter_root), subfolder="" if subfolder == "." else subfolder,
                                 weight_name=self.adapter_file.name, image_encoder_folder=self.image_encoder_folder,
                                 local_files_only=True)
        except (KeyError, RuntimeError, ValueError) as err:
            raise WeightsMismatchError(f"SDXL IP-Adapter {self.adapter_file} does not load into {self.root}: {err}") from err
        pipe.set_ip_adapter_scale(self.scale)
        return pipe

    def generate_group(self, requests: list[GenerationRequest]) -> list[Image.Image]:
        ref = self.sources(requests[0])[0]
        width, height = self._size(requests[0])
        neg = None if self.negative_prompt is None else [self.negative_prompt] * len(requests)
        out = self.pipe(prompt=[r.prompt for r in requests], negative_prompt=neg, ip_adapter_image=ref,
                        height=height, width=width, num_inference_steps=self.num_inference_steps,
                        guidance_scale=self.guidance_scale, generator=request_generators(requests))
        return list(out.images)


def _hashed(path: Path) -> dict[str, Any]:
    from ..metrics.weights import sha256_file

    return {"path": str(path.resolve()), "size": path.stat().st_size, "sha256": sha256_file(path)}


def make_flux(weights: str | None = None, config: str | None = None, **kwargs: Any) -> FluxIPAdapterBaseline:
    """Factory for ``--generator benchmarks.baselines.ip_adapter:make_flux`` (config ``generator`` section, then
    keyword overrides; needs ``weights``, ``adapter``, ``image_encoder``)."""
    args = generator_kwargs(config, {**kwargs, **({"weights": weights} if weights is not None else {})},
                            factory="make_flux")
    for key in ("weights", "adapter", "image_encoder"):
        if key not in args:
            raise BaselineWeightsError(f"FLUX IP-Adapter: '{key}' (a local folder) is not configured")
    return FluxIPAdapterBaseline(**args)


def make_sdxl(weights: str | None = None, config: str | None = None, **kwargs: Any) -> SDXLIPAdapterBaseline:
    """Factory for ``--generator benchmarks.baselines.ip_adapter:make_sdxl`` (needs ``weights`` and ``adapter``)."""
    args = generator_kwargs(config, {**kwargs, **({"weights": weights} if weights is not None else {})},
                            factory="make_sdxl")
    for key in ("weights", "adapter"):
        if key not in args:
            raise BaselineWeightsError(f"SDXL IP-Adapter: '{key}' (a local folder) is not configured")
    return SDXLIPAdapterBaseline(**args)


if __name__ == "__main__":
    from .config import main

    raise SystemExit(main())
