"""CoLoGen as a harness `Generator`: `cologen bench generate SUITE --generator benchmarks.cologen_generator:make`.

Requests are grouped by (task, cond_type, size) and run through `CoLoGenPipeline` in batches, each image with its
request's seed, with the source K/V cache on (the source branch runs once per image, not once per step).

    cologen bench generate shapes5 --out runs/eval --generator benchmarks.cologen_generator:make \\
        --generator-arg run=runs/cologen-tiny --generator-arg steps=16
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

from PIL import Image

from benchmarks.harness import GenerationRequest
from lit_cologen.models.adapter_io import EMA_ADAPTER_FILE
from lit_cologen.training.run_folder import resolve_run
from lit_cologen.utils.dtypes import dtype_from_name


class CoLoGenGenerator:
    """Wraps a CoLoGenPipeline; honours each request's seed, size, mask and cond_type."""

    def __init__(self, pipeline, steps: int = 28, guidance: Optional[float] = None, batch_size: int = 8,
                 use_source_cache: bool = True, label: str = "CoLoGen"):
        # None: the preset's sampling guidance (flux-dev 3.5, tiny 1.0); the value used is what describe() records
        self.pipe, self.steps = pipeline, int(steps)
        self.guidance = float(pipeline.default_guidance if guidance is None else guidance)
        self.batch_size, self.use_source_cache, self.label = int(batch_size), bool(use_source_cache), label
        self.run_root: Optional[str] = None

    def describe(self) -> dict[str, Any]:
        info = {"label": self.label, "steps": self.steps, "guidance": self.guidance,
                "use_source_cache": self.use_source_cache, "num_experts": self.pipe.transformer.num_experts}
        loaded = self.pipe.transformer.adapters_file
        if loaded is not None and Path(loaded).name == EMA_ADAPTER_FILE:  # absent: the raw adapters (or none)
            info["adapter_weights"] = "ema"
        return info

    def generate(self, requests: list[GenerationRequest]) -> list[Image.Image]:
        out: dict[str, Image.Image] = {}
        groups: dict[tuple, list[GenerationRequest]] = defaultdict(list)
        for r in requests:
            groups[(r.task, r.cond_type, r.width, r.height)].append(r)
        for (task, cond_type, width, height), reqs in groups.items():
            for i in range(0, len(reqs), self.batch_size):
                chunk = reqs[i: i + self.batch_size]
                sources = [r.load_sources(self.run_root)[0] for r in chunk]
                masks = [r.load_mask(self.run_root) for r in chunk] if task == "inpaint" else None
                result = self.pipe(
                    task, sources, [r.prompt for r in chunk], mask=masks, cond_type=cond_type,
                    height=height, width=width, num_inference_steps=self.steps, guidance_scale=self.guidance,
                    seed=[int(r.seed) for r in chunk], use_source_cache=self.use_source_cache, show_progress=False,
                )
                for r, image in zip(chunk, result.images):
                    out[r.id] = image
        return [out[r.id] for r in requests]


def make(run: Optional[str] = None, preset: str = "tiny", base: Optional[str] = None, adapters: Optional[str] = None,
         steps: int = 28, guidance: Optional[float] = None, batch_size: int = 8, device: Optional[str] = None,
         dtype: Optional[str] = None, use_source_cache: bool = True, seed: int = 0,
         use_ema: bool = True) -> CoLoGenGenerator:
    """Factory for `--generator benchmarks.cologen_generator:make` (`--generator-arg key=value`).

    run: a curriculum output folder or a step's final/ folder (sets base + adapters); else `base` (a FLUX folder or
    an exported transformer) and `adapters` (a folder with adapters.safetensors); neither: random init (`seed`).
    use_ema: load a folder's adapters_ema.safetensors (``train.ema``) when it has one; the results record it.
    """
    from lit_cologen.pipeline import CoLoGenPipeline

    if run is not None:
        run_base, run_adapters = resolve_run(run)
        base, adapters = base or run_base, adapters or run_adapters
    torch_dtype = dtype_from_name(dtype)
    pipe = CoLoGenPipeline.from_preset(preset, pretrained_path=base, adapters=adapters, torch_dtype=torch_dtype,
                                       device=device, seed=int(seed), use_ema=bool(use_ema))
    label = f"CoLoGen ({Path(run).name if run else 'random init'})"
    return CoLoGenGenerator(pipe, steps=steps, guidance=guidance, batch_size=batch_size,
                            use_source_cache=use_source_cache, label=label)
