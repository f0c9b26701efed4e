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
``control/controlnetpp``                  3, 6    ControlNet++ eval: 512 px, 4 images / prompt, seeds 42 + group;
                                                  Canny CLIP-S (B/16, x100) + F1, depth RMSE, line-art / HED
                                                  (MS-)SSIM, seg mIoU, FID mean over the 4 groups
``control/controlnetpp-keep-eot``         --      same runs; CLIP-S prompts over 77 tokens keep the EOT token
``control/controlnetpp-lineart-invert``   --      same runs; line art inverted as 255 - pred (the reference's
                                                  uint8 ``1 - pred`` wraps mod 256)
``shapes5``                               --      exact metrics on the procedural Shapes-5 world, concept vs
                                                  localization split
``gedit/full``                            8       GEdit-Bench full set, VLM judge (needs a local judge model)
========================================  ======  ===================================================================

Seeds: every request has its own seed, fixed by the protocol's ``seed_rule`` (recorded in ``results.json`` under
``protocol_settings``, and each request's seed in ``manifest.jsonl``), never one seed for every image:

========================================  ===================  ====================================================
protocol                                  ``seed_rule``        seed of a request
========================================  ===================  ====================================================
``dreambench/omnigen`` (+ ``-allrefs``)   ``per_image_index``  image k of a prompt: k (0-3)
``control/controlnetpp`` (+ variants)     ``per_image_index``  image k (group k) of a prompt: 42 + k
``editing/emu``, ``editing/magicbrush``   ``from_request_id``  one image per request: from sha256(request id)
(+ ``-gt``), ``gedit/full``, ``shapes5``
========================================  ===================  ====================================================

``per_image_index``: image k of every prompt gets ``seeds[k]`` (distinct within a prompt; prompt p and prompt q share
their k-th seed, as DreamBench / ControlNet++ runs do). ``from_request_id``: the first 8 bytes of sha256(request id)
plus ``seeds[0]``, mod 2**31 (:func:`seed_from_request_id`); two requests of one run never share a seed: the later of
two colliding ids takes the next attempt (``sha256(id + "#1")``, ...; :meth:`EvalProtocol.request_seeds`). Each
protocol's ``settings["seed_reference"]`` says what its reference does and why the rule is what it is.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

__all__ = ["MetricSpec", "EvalProtocol", "PROTOCOLS", "SEED_RULES", "SEED_MODULUS", "get_protocol", "list_protocols",
           "seed_from_request_id"]

#: how a protocol gives each request its seed (``EvalProtocol.seed_rule``)
SEED_RULES = {
    "per_image_index": "image k of a prompt gets seeds[k] (distinct within a prompt; the same k-th seed for every "
    "prompt)",
    "from_request_id": "one image per request; seed = (seeds[0] + first 8 bytes of sha256(request id)) mod 2**31; of "
    "two requests of a run with equal seeds, the later takes sha256(id + '#1'), '#2', ... until its seed is unused",
}

#: seeds derived from request ids lie in [0, 2**31): a non-negative int32, accepted by every RNG the generators use
SEED_MODULUS = 2**31


def seed_from_request_id(request_id: str, base: int = 0, attempt: int = 0) -> int:
    """The ``from_request_id`` seed of ``request_id``: ``(base + int(sha256(id)[:8])) % 2**31`` (``attempt`` > 0
    hashes ``f"{id}#{attempt}"``, used only when an earlier request of the run already has the seed). Stable across
    processes and Python versions (no ``hash()``)."""
    text = request_id if attempt == 0 else f"{request_id}#{attempt}"
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return (int(base) + int.from_bytes(digest[:8], "big")) % SEED_MODULUS


@dataclass(frozen=True)
class MetricSpec:
    """A reported metric: its label, direction (``higher`` / ``lower``) and what it is."""

    label: str
    direction: str
    description: str = ""


@dataclass(frozen=True)
class EvalProtocol:
    """A named evaluation protocol.

    ``seeds``: the seed of image k of a prompt is ``seeds[k]``; ``images_per_prompt`` = ``len(seeds)``. How a
    request gets its seed is ``seed_rule`` (a :data:`SEED_RULES` key): ``per_image_index`` (``seeds[k]`` for image
    k, :meth:`image_seeds`) or ``from_request_id`` (one image per request, a seed derived from its id with
    ``seeds[0]`` as the base, :meth:`request_seeds`).
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
    seed_rule: str = ""

    def __post_init__(self) -> None:
        if self.seed_rule not in SEED_RULES:
            raise ValueError(f"protocol {self.name!r}: seed_rule must be one of {sorted(SEED_RULES)}, "
                             f"got {self.seed_rule!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"protocol {self.name!r}: seeds {self.seeds} must be non-empty and distinct")
        if "seed_rule" in self.settings:
            raise ValueError(f"protocol {self.name!r}: the seed rule is the seed_rule field, not a setting")
        if self.seed_rule == "from_request_id" and len(self.seeds) != 1:
            raise ValueError(f"protocol {self.name!r}: from_request_id means one image per request (seeds = (base,))")

    def image_seeds(self, images_per_prompt: int | None = None) -> tuple[int, ...]:
        """``per_image_index``: the seeds of images 0..n-1 of every prompt (``seeds[:n]``, all by default)."""
        if self.seed_rule != "per_image_index":
            raise ValueError(f"protocol {self.name!r} seeds each request from its id (seed_rule {self.seed_rule!r}); "
                             "use request_seeds")
        n = images_per_prompt or self.images_per_prompt
        if not 1 <= n <= self.images_per_prompt:
            raise ValueError(f"protocol {self.name!r} has {self.images_per_prompt} images per prompt, asked for {n}")
        return tuple(int(s) for s in self.seeds[:n])

    def request_seeds(self, request_ids: Sequence[str], base: int | None = None) -> list[int]:
        """``from_request_id``: one seed per request id (in order), distinct within the list.

        ``base`` (default ``seeds[0]``) is added to each id's hash. A seed an earlier id already has is re-derived
        with attempt 1, 2, ... (see :func:`seed_from_request_id`), so the seeds of a prefix of the list (a
        ``--limit`` run) are those of the whole list. Ids must be unique."""
        if self.seed_rule != "from_request_id":
            raise ValueError(f"protocol {self.name!r} seeds image k of a prompt with seeds[k] (seed_rule "
                             f"{self.seed_rule!r}); use image_seeds")
        base = int(self.seeds[0] if base is None else base)
        ids = list(request_ids)
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})[:3]
            raise ValueError(f"protocol {self.name!r}: request ids repeat ({dup}); each request needs its own id")
        used: set[int] = set()
        out = []
        for rid in ids:
            attempt = 0
            seed = seed_from_request_id(rid, base)
            while seed in used:
                attempt += 1
                seed = seed_from_request_id(rid, base, attempt)
            used.add(seed)
            out.append(seed)
        return out

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
            "seed_rule": self.seed_rule,
            "seed_rule_text": SEED_RULES[self.seed_rule],
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

# What each reference does with seeds (settings["seed_reference"]); the rules above follow from these.
#: DreamBench: neither OmniGen (paper / repo) nor the Kosmos-G scorer it uses publishes generation seeds; 4 images
#: per prompt with seeds 0-3 (image k -> seed k) is the OmniGen-style convention we infer (settings["inferred"]).
_DREAMBENCH_SEEDS = ("no published seeds (OmniGen: 4 images per prompt; Kosmos-G eval scripts score given images); "
                     "image k of a prompt -> seed k (0-3), inferred")
#: ControlNet++ eval/eval.py @ ecccfe20 (liming-ai/ControlNet_Plus_Plus): ``seed_torch(args.seed)`` once per process
#: (``--seed`` default 42), then each prompt's ``--batch_size`` 4 images (group_0 .. group_3) in one pipeline call
#: drawn from the global RNG, so its noise depends on the process count and order (not reproducible per image).
#: Per request: image k (group k) of a prompt -> seed 42 + k.
_CONTROLNETPP_SEEDS = ("ControlNet++ eval/eval.py @ ecccfe20: seed_torch(42) once per process, a prompt's 4 images "
                       "(groups 0-3) drawn in one batch from the global RNG (noise depends on the process count and "
                       "order); here image k (group k) of a prompt -> seed 42 + k")
#: MagicBrush edit_cli_single_multi_turn.py @ ef17546a (OSU-NLP-Group/MagicBrush) seeds every image with ONE seed
#: (``random.randint(0, 100000)`` unless ``--seed``; ``torch.manual_seed(seed)`` before each image); its scorer
#: evaluation/image_eval.py takes given images. Not followed: one seed for every request gives every same-size edit
#: the same initial noise, and the reference's value is random per run anyway.
_MAGICBRUSH_SEEDS = ("MagicBrush edit_cli_single_multi_turn.py @ ef17546a uses one seed for every image "
                     "(random.randint(0, 100000) unless --seed); not followed: a seed per request, from its id")
#: Emu Edit: no public generation script; the test set (and its published generations) carry no seeds.
_EMU_SEEDS = "Emu Edit: no generation script or seeds published; a seed per request, from its id"
#: GEdit-Bench (stepfun-ai/Step1X-Edit, GEdit-Bench/) scores given images; Step1X-Edit's own inference.py @ 055f8081
#: generates every image with one ``--seed`` (default 42). Not followed, for the reason given for MagicBrush.
_GEDIT_SEEDS = ("GEdit-Bench scores given images; Step1X-Edit inference.py @ 055f8081 uses one --seed (default 42) "
                "for every image; not followed: a seed per request, from its id")

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
        seed_rule="per_image_index",
        settings={
            "seed_reference": _DREAMBENCH_SEEDS,
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
        seed_rule="per_image_index",
        settings={"reference": "all", "seed_reference": _DREAMBENCH_SEEDS, **_KOSMOS_G_CROPS},
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
        seed_rule="from_request_id",
        settings={"split": "test", "reference": "source", "seed_reference": _EMU_SEEDS, **_MAGICBRUSH_CROPS,
                  "inferred": ["CLIP ViT-B/32", "DINO ViT-S/16", "seed per request id (base 0)",
                               "MagicBrush image_eval.py preprocessing"]},
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
        seed_rule="from_request_id",
        settings={"split": "test", "turns": "single", "reference": "source", "seed_reference": _MAGICBRUSH_SEEDS,
                  **_MAGICBRUSH_CROPS, "inferred": ["single turn", "seed per request id (base 0)"]},
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
        seed_rule="from_request_id",
        settings={"reference": "ground truth target", "turns": "single", "seed_reference": _MAGICBRUSH_SEEDS,
                  **_MAGICBRUSH_CROPS,
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
        seed_rule="per_image_index",
        settings={
            "seed_reference": _CONTROLNETPP_SEEDS,
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
        seed_rule="from_request_id",
        settings={"color_tolerance": 48, "success_threshold": 0.5,
                  "seed_reference": "procedural world, no reference: a seed per request, from its id"},
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
        seed_rule="from_request_id",
        settings={"language": "en", "subset": "full", "seed_reference": _GEDIT_SEEDS,
                  "inferred": ["judge model (paper: not stated)", "language EN", "seed per request id (base 0)"]},
    )
)


def get_protocol(name: str) -> EvalProtocol:
    """The protocol called ``name``; a KeyError lists the known names."""
    if name not in PROTOCOLS:
        raise KeyError(f"unknown protocol {name!r}; known: {sorted(PROTOCOLS)}")
    return PROTOCOLS[name]


def list_protocols() -> list[str]:
    return sorted(PROTOCOLS)
