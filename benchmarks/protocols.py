"""Named evaluation protocols. Every results file records the protocol name and its settings.

Two numbers are comparable only when their protocols (and backbone hashes) match. The settings below are the ones
DESIGN.md section 3 fixes; where the paper is silent they follow the public scripts it points to (paper section
8.1), and ``settings["inferred"]`` lists what is our inference.

========================================  ======  ===================================================================
protocol                                  table   what
========================================  ======  ===================================================================
``dreambench/omnigen``                    4, 5,7  30 subjects x 25 prompts, one reference (00.jpg), 4 images / prompt
                                                  (seeds 0-3); CLIP-T, CLIP-I (ViT-B/32), DINO (ViT-S/16) vs reference
``dreambench/omnigen-allrefs``            --      same images; CLIP-I / DINO averaged over all reference photos
``editing/emu``                           2       Emu Edit test: CLIP_i, L1, DINO (source vs output), CLIP_out
``editing/magicbrush``                    2, 5    MagicBrush test, single turn, Emu Edit definitions (as above)
``editing/magicbrush-gt``                 --      MagicBrush's own script: L1, L2, CLIP-I, DINO vs the ground truth,
                                                  CLIP-T vs caption
``control/controlnetpp``                  3, 6    ControlNet++ eval: 512 px, 4 images / prompt, seed 42 (+group);
                                                  Canny CLIP-S (B/16, x100) + F1, depth RMSE, line-art / HED
                                                  (MS-)SSIM, seg mIoU, FID mean over the 4 groups
``control/controlnetpp-keep-eot``         --      same runs; CLIP-S prompts over 77 tokens keep the EOT token
``control/controlnetpp-lineart-invert``   --      same runs; line art inverted as 255 - pred (the reference's
                                                  uint8 ``1 - pred`` wraps mod 256)
``shapes5``                               --      exact metrics on the procedural Shapes-5 world, concept vs
                                                  localization split
``gedit/full``                            8       GEdit-Bench full set, VLM judge (needs a local judge model)
========================================  ======  ===================================================================
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable

__all__ = ["MetricSpec", "EvalProtocol", "PROTOCOLS", "get_protocol", "list_protocols"]


@dataclass(frozen=True)
class MetricSpec:
    """A reported metric: its label, direction (``higher`` / ``lower``) and what it is."""

    label: str
    direction: str
    description: str = ""


@dataclass(frozen=True)
class EvalProtocol:
    """A named evaluation protocol.

    ``seeds``: the seed of image k of a prompt is ``seeds[k]``; ``images_per_prompt`` = ``len(seeds)``.
    ``scorer_path``: ``"module:function"`` taking a :class:`benchmarks.harness.ScoreContext` and returning a
    :class:`benchmarks.harness.ScoreOutput`. ``variant_of``: a protocol whose generated runs this one can score.
    """

    name: str
    description: str
    task: str
    tables: tuple[str, ...]
    seeds: tuple[int, ...]
    resolution: int | None
    backbones: tuple[str, ...]
    metrics: dict[str, MetricSpec]
    scorer_path: str
    variant_of: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_prompt(self) -> int:
        return len(self.seeds)

    def scorer(self) -> Callable:
        module, func = self.scorer_path.split(":")
        return getattr(importlib.import_module(module), func)

    def scores_runs_of(self) -> set[str]:
        return {self.name} | ({self.variant_of} if self.variant_of else set())

    def can_score(self, generated_under: str) -> bool:
        return generated_under in self.scores_runs_of()

    def direction(self, metric: str) -> str:
        """``higher`` / ``lower`` for a metric key (sub-keys such as ``canny/f1`` match on their last part)."""
        if metric in self.metrics:
            return self.metrics[metric].direction
        tail = metric.rsplit("/", 1)[-1]
        return self.metrics[tail].direction if tail in self.metrics else "higher"

    def crop_offset(self, encoder: str) -> str:
        """Centre-crop offset rule (``floor`` / ``round``) of the reference's ``encoder`` (``clip`` / ``dino``)
        preprocessing: ``settings["<encoder>_crop_offset"]``; see :mod:`benchmarks.metrics.encoders`."""
        rule = self.settings.get(f"{encoder}_crop_offset")
        if rule is None:
            raise KeyError(f"protocol {self.name!r} does not say its {encoder} crop rule ({encoder}_crop_offset)")
        return rule

    def settings_dict(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "task": self.task,
            "seeds": list(self.seeds),
            "images_per_prompt": self.images_per_prompt,
            "resolution": self.resolution,
            "backbones": list(self.backbones),
            "variant_of": self.variant_of,
            **self.settings,
        }


_H, _L = "higher", "lower"

_DREAMBENCH_METRICS = {
    "clip_t": MetricSpec("CLIP-T", _H, "cos(CLIP image(output), CLIP text(prompt with the class noun)), ViT-B/32"),
    "clip_i": MetricSpec("CLIP-I", _H, "cos(CLIP image(output), CLIP image(reference)), ViT-B/32"),
    "dino": MetricSpec("DINO", _H, "cos(DINO ViT-S/16 CLS(output), DINO CLS(reference))"),
}

_EMU_METRICS = {
    "clip_i": MetricSpec("CLIP_i", _H, "cos(CLIP(source), CLIP(output)), ViT-B/32"),
    "clip_out": MetricSpec("CLIP_out", _H, "cos(CLIP(output), CLIP text(target caption)), ViT-B/32"),
    "l1": MetricSpec("L1", _L, "mean |source - output| on [0, 1] pixels (output resized to the source)"),
    "dino": MetricSpec("DINO", _H, "cos(DINO(source), DINO(output)), ViT-S/16"),
    "clip_dir": MetricSpec("CLIP_dir", _H, "cos(CLIP(output) - CLIP(source), CLIP(target cap.) - CLIP(input cap.))"),
}

#: centre-crop offset rules of the references' preprocessing (benchmarks.metrics.encoders.center_crop_offset)
_KOSMOS_G_CROPS = {"clip_crop_offset": "floor", "dino_crop_offset": "round"}  # HF CLIPProcessor; torchvision DINO
_MAGICBRUSH_CROPS = {"clip_crop_offset": "round", "dino_crop_offset": "round"}  # clip.load and torchvision
_TORCHMETRICS_CROPS = {"clip_crop_offset": "floor"}  # CLIPScore -> HF CLIPProcessor



def _canny_kornia() -> dict[str, Any]:
    """The kornia Canny runs with here vs the one ControlNet++ pins, and the measured effect on its F1."""
    from importlib.metadata import version

    return {
        "reference": "0.7.0 (ControlNet++ requirements.txt)",
        "used": version("kornia"),
        "measured_f1_difference": CANNY_F1_DIFFERENCE,
        "how": "python -m benchmarks.metrics.canny_versions (ControlNet++ demo grids cut into 512 px tiles, 4 noisy "
        "copies per tile as a prompt's 4 images)",
    }


#: |F1(kornia 0.7.0, batched as eval.py) - F1(canny_edges, installed kornia)| over 512 px tiles, see canny_versions
CANNY_F1_DIFFERENCE = {
    "tiles": 214,
    "max_abs": 0.0157,
    "mean_abs": 6.8e-4,
    "by_source": {
        "canny demo grids (photos, generated photos, edge maps), 36 tiles": {"max_abs": 2.3e-5, "mean_abs": 6.5e-7,
                                                                               "tiles_differing": 1},
        "depth / seg / hed / lineart demo grids (half are 8-bit depth, segmentation and line maps with flat "
        "plateaus, where magnitude ties are common), 178 tiles": {"max_abs": 0.0157, "mean_abs": 8.2e-4,
                                                                   "tiles_differing": 42},
    },
}

PROTOCOLS: dict[str, EvalProtocol] = {}


def _register(p: EvalProtocol) -> EvalProtocol:
    PROTOCOLS[p.name] = p
    return p


_register(
    EvalProtocol(
        name="dreambench/omnigen",
        description="DreamBench, OmniGen's protocol: 30 subjects x 25 prompts = 750 prompts, one reference image "
        "per subject (00.jpg), 4 images per prompt; prompts are the DreamBooth templates with the class noun and no "
        "rare token",
        task="subject",
        tables=("table4", "table5", "table7"),
        seeds=(0, 1, 2, 3),
        resolution=512,
        backbones=("clip_b32", "dino_vits16"),
        metrics=_DREAMBENCH_METRICS,
        scorer_path="benchmarks.suites.dreambench:score",
        settings={
            "reference": "single",
            "reference_image": "00.jpg",
            "reference_script": "Kosmos-G eval/clip_score.py, eval/dino_score.py (microsoft/unilm @ 7b4b9f03)",
            "clip_preprocess": "Resize 224 bicubic, centre crop 224 at floor((W - 224) / 2) (HF CLIPProcessor)",
            "dino_preprocess": "Resize 256 bicubic, CenterCrop 224 (torchvision, round)",
            **_KOSMOS_G_CROPS,
            "inferred": ["images per prompt (4)", "seeds 0-3", "CLIP ViT-B/32", "DINO ViT-S/16", "512 px"],
        },
    )
)
_register(
    EvalProtocol(
        name="dreambench/omnigen-allrefs",
        description="DreamBench as dreambench/omnigen, but CLIP-I and DINO averaged over all reference photos of "
        "the subject (DreamBooth's original protocol)",
        task="subject",
        tables=(),
        seeds=(0, 1, 2, 3),
        resolution=512,
        backbones=("clip_b32", "dino_vits16"),
        metrics=_DREAMBENCH_METRICS,
        scorer_path="benchmarks.suites.dreambench:score_all_references",
        variant_of="dreambench/omnigen",
        settings={"reference": "all", **_KOSMOS_G_CROPS},
    )
)
_register(
    EvalProtocol(
        name="editing/emu",
        description="Emu Edit test split, Emu Edit metric definitions (output vs source; CLIP_out vs the output "
        "caption)",
        task="edit",
        tables=("table2",),
        seeds=(0,),
        resolution=None,
        backbones=("clip_b32", "dino_vits16"),
        metrics=_EMU_METRICS,
        scorer_path="benchmarks.suites.editing:score_emu",
        settings={"split": "test", "reference": "source", **_MAGICBRUSH_CROPS,
                  "inferred": ["CLIP ViT-B/32", "DINO ViT-S/16", "seed 0", "MagicBrush image_eval.py preprocessing"]},
    )
)
_register(
    EvalProtocol(
        name="editing/magicbrush",
        description="MagicBrush test split, single turn, scored with the Emu Edit definitions (output vs source; "
        "CLIP_out vs the target caption)",
        task="edit",
        tables=("table2", "table5"),
        seeds=(0,),
        resolution=None,
        backbones=("clip_b32", "dino_vits16"),
        metrics=_EMU_METRICS,
        scorer_path="benchmarks.suites.editing:score_emu",
        settings={"split": "test", "turns": "single", "reference": "source", **_MAGICBRUSH_CROPS,
                  "inferred": ["single turn", "seed 0"]},
    )
)
_register(
    EvalProtocol(
        name="editing/magicbrush-gt",
        description="MagicBrush's own image_eval.py: output vs the ground-truth target (L1, L2, CLIP-I, DINO) and "
        "CLIP-T vs the caption; generated images resized to the ground-truth size",
        task="edit",
        tables=(),
        seeds=(0,),
        resolution=None,
        backbones=("clip_b32", "dino_vits16"),
        metrics={
            "l1": MetricSpec("L1", _L, "mean |target - output|"),
            "l2": MetricSpec("L2", _L, "mean (target - output)^2"),
            "clip_i": MetricSpec("CLIP-I", _H, "cos(CLIP(target), CLIP(output))"),
            "dino": MetricSpec("DINO", _H, "cos(DINO(target), DINO(output))"),
            "clip_t": MetricSpec("CLIP-T", _H, "cos(CLIP(output), CLIP text(caption))"),
        },
        scorer_path="benchmarks.suites.editing:score_ground_truth",
        variant_of="editing/magicbrush",
        settings={"reference": "ground truth target", "turns": "single", **_MAGICBRUSH_CROPS,
                  "reference_script": "MagicBrush evaluation/image_eval.py (OSU-NLP-Group/MagicBrush @ 44745b5b)"},
    )
)
_register(
    EvalProtocol(
        name="control/controlnetpp",
        description="ControlNet++ eval data and script: MultiGen-20M (canny, depth, hed, lineart), ADE20K and "
        "COCO-Stuff (seg); 512 px, 4 images per prompt (groups 0-3)",
        task="control",
        tables=("table3", "table6"),
        seeds=(42, 43, 44, 45),
        resolution=512,
        backbones=("clip_b16", "dpt_large", "hed", "lineart", "seg_ade20k", "seg_cocostuff", "inception"),
        metrics={
            "clip_score": MetricSpec("CLIP-S", _H, "max(mean of 100 cos(CLIP ViT-B/16 image, text), 0), torchmetrics "
                                     "CLIPScore.compute()"),
            "f1": MetricSpec("F1", _H, "binary F1 of kornia Canny (0.1 / 0.2) of the output vs the condition, per prompt"),
            "rmse": MetricSpec("RMSE", _L, "DPT-large depth of the output (/max, 8 bit) vs the condition (min-max, 8 bit)"),
            "ssim": MetricSpec("SSIM", _H, "SSIM of the re-extracted map vs the condition"),
            "ms_ssim": MetricSpec("MS-SSIM", _H, "MS-SSIM of the re-extracted map vs the condition (ControlNet++'s 'SSIM')"),
            "miou": MetricSpec("mIoU", _H, "dataset-level mIoU of the segmented output vs the label map"),
            "fid": MetricSpec("FID", _L, "FID of each group vs the real images, mean over the 4 groups"),
        },
        scorer_path="benchmarks.suites.control:score",
        settings={
            "seed_rule": "seed = 42 + group (ControlNet++ samples 4 images in one batch from seed 42)",
            "canny_thresholds": [0.1, 0.2],
            "depth_pred_norm": "max",
            "fid_resize": "bilinear to 299 (ControlNet++ used clean-fid's PIL bicubic)",
            "seg_num_classes": {"ade20k": 150, "cocostuff": 171},
            **_TORCHMETRICS_CROPS,
            "reference_script": "ControlNet++ eval/eval.py, eval_edge.py, eval_depth.py (@ ecccfe20), eval_clip.py "
            "(@ bbdc3c06), liming-ai/ControlNet_Plus_Plus",
            "clip_score_clamp": "mean (torchmetrics CLIPScore: per-image 100 cos, max(mean, 0))",
            "clip_text_truncation": "drop_eot",
            "canny_kornia": _canny_kornia(),
            "lineart_invert": "uint8_one_minus",
            "inferred": ["FLUX sampler settings", "CLIP-S for canny (paper Table 3) instead of F1 (ControlNet++)"],
        },
    )
)


def _control_variant(name: str, description: str, **settings: Any) -> EvalProtocol:
    """A corrected variant of ``control/controlnetpp`` (scores its runs; in no paper table)."""
    base = PROTOCOLS["control/controlnetpp"]
    return replace(base, name=name, description=f"{base.description}; {description}", tables=(),
                   variant_of=base.name, settings={**base.settings, **settings})


_register(
    _control_variant(
        "control/controlnetpp-keep-eot",
        "corrected CLIP-S text truncation: a prompt over 77 tokens keeps its end-of-text token (clip.tokenize("
        "truncate=True)) instead of torchmetrics' cut at 77, which drops it",
        clip_text_truncation="keep_eot",
    )
)
_register(
    _control_variant(
        "control/controlnetpp-lineart-invert",
        "corrected line-art inversion: 255 - pred on the 8-bit map instead of eval_edge.py's uint8 1 - pred "
        "(mod 256: every level shifted by 2, pure-black lines read as 1 / 255)",
        lineart_invert="255_minus",
    )
)
_register(
    EvalProtocol(
        name="shapes5",
        description="Shapes-5 procedural world: exact metrics from the scene graph, split into a concept part "
        "(right colour / shape / identity) and a localization part (right place / extent)",
        task="all",
        tables=(),
        seeds=(0,),
        resolution=None,
        backbones=(),
        metrics={
            "concept": MetricSpec("concept", _H, "right colour / shape / identity, place ignored (0-1)"),
            "localization": MetricSpec("localization", _H, "right place / extent (0-1)"),
            "l1": MetricSpec("L1", _L, "mean |target - output| (edit, subject, control)"),
            "masked_l1": MetricSpec("masked L1", _L, "L1 inside the inpainting mask"),
            "masked_psnr": MetricSpec("masked PSNR", _H, "PSNR inside the inpainting mask (dB)"),
            "preservation": MetricSpec("preservation", _H, "fraction of pixels outside the edit kept (edit, ground)"),
            "iou": MetricSpec("IoU", _H, "IoU of the drawn box / mask vs truth (ground)"),
            "color_ok": MetricSpec("colour", _H, "drawn annotation has the asked colour (ground)"),
            "edge_f1": MetricSpec("edge F1", _H, "Canny F1 of the output vs the target's edges (control)"),
            "ssim": MetricSpec("SSIM", _H, "SSIM of the output vs the target (control)"),
            "seg_miou": MetricSpec("seg mIoU", _H, "palette mIoU of the output vs the target's object layout (control)"),
            "success": MetricSpec("success", _H, "concept and localization both right (edit, subject)"),
        },
        scorer_path="benchmarks.suites.shapes5:score",
        settings={"color_tolerance": 48, "success_threshold": 0.5},
    )
)
_register(
    EvalProtocol(
        name="gedit/full",
        description="GEdit-Bench full set, VIEScore-style VLM judging (semantic consistency G_SC, perceptual "
        "quality G_PQ, overall G_O = sqrt(SC * PQ)) on a 0-10 scale; needs a local judge model",
        task="edit",
        tables=("table8",),
        seeds=(0,),
        resolution=None,
        backbones=("judge",),
        metrics={
            "G_SC": MetricSpec("G_SC", _H, "semantic consistency (0-10)"),
            "G_PQ": MetricSpec("G_PQ", _H, "perceptual quality (0-10)"),
            "G_O": MetricSpec("G_O", _H, "overall, sqrt(SC * PQ) per image, averaged"),
        },
        scorer_path="benchmarks.suites.gedit:score",
        settings={"language": "en", "subset": "full", "inferred": ["judge model (paper: not stated)", "language EN"]},
    )
)


def get_protocol(name: str) -> EvalProtocol:
    """The protocol called ``name``; a KeyError lists the known names."""
    if name not in PROTOCOLS:
        raise KeyError(f"unknown protocol {name!r}; known: {sorted(PROTOCOLS)}")
    return PROTOCOLS[name]


def list_protocols() -> list[str]:
    return sorted(PROTOCOLS)
