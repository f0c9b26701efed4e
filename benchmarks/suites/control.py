"""Controllable generation (Table 3, 6): ControlNet++ eval requests and scorer (``control/controlnetpp``).

Data: ControlNet++'s eval sets exported to parquet, read with ``lit_cologen.data.evalsets.iter_multigen_eval``
(MultiGen-20M canny / hed / lineart / depth, Captioned ADE20K / COCO-Stuff for seg). For every item the suite
writes into the run folder ``inputs/<cond>/<index>-condition.png`` (the control map given to the generator),
``-label.png`` (what the metric compares with) and ``-image.png`` (the real image, for FID), and 4 requests
(groups 0-3, seeds 42-45) at 512 px.

Scores (ControlNet++ ``eval/``; outputs resized to the label size when they differ):

=========  ==========================================================================================
canny      ``canny/clip_score``: max(mean 100 cos(CLIP ViT-B/16 image, prompt), 0) (paper Table 3's CLIP-S;
           torchmetrics CLIPScore: per-image values unclamped, prompts cut at 77 tokens without EOT);
           ``canny/f1``: kornia Canny(0.1, 0.2) of the outputs vs the condition edges, F1 over a prompt's
           images together, averaged over prompts (ControlNet++'s F1)
depth      ``depth/rmse``: DPT-large depth of the output as generated (/max, 8 bit, bilinear to 512) vs the
           label depth (min-max to 0-255 at its stored size, 8 bit, then nearest to 512), per image;
           ``depth/ssim``: SSIM of the same two maps (paper Table 6)
hed        ``hed/ms_ssim`` (ControlNet++'s "SSIM") and ``hed/ssim``: HED of the output vs the condition
lineart    ``lineart/ms_ssim`` and ``lineart/ssim``: line art of the output (8 bit, inverted with the
           reference's uint8 ``1 - pred``) vs the condition
seg        ``seg_<dataset>/miou``: segmenter of the output vs the label map, dataset-level mIoU (ignore 255)
all        ``<cond>/clip_score`` (when the CLIP ViT-B/16 weights are given), ``<cond>/fid``: FID of each
           group vs the real images, mean over the groups (when the Inception weights are given)
=========  ==========================================================================================

Corrected variants (same runs): ``control/controlnetpp-keep-eot`` (CLIP-S prompts keep their EOT token) and
``control/controlnetpp-lineart-invert`` (line art inverted as ``255 - pred``).

Options: ``depth_pred_norm`` (``max`` as ControlNet++, or ``minmax``), ``fid`` (default true), ``skip_missing``.
A backbone needed for a condition present in the run must be configured, or scoring stops with an error naming
it; ``options={"skip_missing": True}`` records the skipped metrics instead (``extra["skipped"]``).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ..harness import (
    GenerationRequest,
    RequestList,
    RunFolder,
    ScoreContext,
    ScoreOutput,
    iter_requests_by,
    save_image_atomic,
)
from ..metrics.depth import depth_rmse, normalize_depth_label
from ..metrics.edges import binary_f1, canny_edges, invert_line_levels
from ..metrics.fid import fid_over_groups
from ..metrics.pixel import load_images01, ms_ssim, ssim
from ..metrics.segmentation import MeanIoU
from ..metrics.similarity import paired_cosine
from ..metrics.weights import MissingWeightsError
from ..protocols import get_protocol
from .common import MetricTable

__all__ = ["build_requests", "requests_from_records", "seg_labels", "AnnotatorDetector", "score"]

SEG_NUM_CLASSES = {"ade20k": 150, "cocostuff": 171}
MS_SSIM_MIN_SIDE = 161  # torchmetrics MS-SSIM with 5 scales and an 11 px kernel


class AnnotatorDetector:
    """Adapts a tensor annotator (``HEDAnnotator`` / ``LineartAnnotator``) to the data package's ``EdgeDetector``
    (PIL RGB -> PIL RGB), e.g. for ``iter_multigen_eval(..., detector=...)``."""

    def __init__(self, annotator: Callable[[torch.Tensor], torch.Tensor], name: str):
        self.annotator = annotator
        self.name = name

    def __call__(self, image: Image.Image) -> Image.Image:
        x = load_images01([image.convert("RGB")])
        y = self.annotator(x)[0, 0].clamp(0, 1)
        return Image.fromarray((y.cpu().numpy() * 255).round().astype(np.uint8), mode="L").convert("RGB")


def seg_labels(label: Image.Image, mode: str) -> Image.Image:
    """A dataset label map -> our convention: class ids 0..K-1, 255 = ignore (``L`` image).

    ``mode``: ``reduce_zero`` (ADE20K: 0 = "other" -> 255, others - 1, mmseg's ``reduce_zero_label``) or
    ``identity`` (labels already 0..K-1 / 255, COCO-Stuff-164k).
    """
    arr = np.asarray(label)
    if arr.ndim == 3:
        raise ValueError("seg label is an RGB image; convert the colour map to class ids first")
    arr = arr.astype(np.int64)
    if mode == "reduce_zero":
        arr = np.where(arr == 0, 255, arr - 1)
        arr = np.where(arr == 254, 255, arr)
    elif mode != "identity":
        raise ValueError(f"seg label mode must be reduce_zero | identity, got {mode!r}")
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")


def requests_from_records(
    records: Sequence[Any],
    out_dir: str | os.PathLike,
    *,
    seg_dataset: str | None = None,
    seg_label_mode: str | None = None,
    images_per_prompt: int | None = None,
    resolution: int | None = None,
) -> list[GenerationRequest]:
    """Requests for ``ControlEvalRecord`` s (``image()``, ``condition()``, ``label()``), inputs written to ``out_dir``.

    Group k of every prompt (id ``<base>-g<k>``) has seed ``proto.seeds[k]`` = 42 + k (``seed_rule``
    ``per_image_index``; ControlNet++'s own handling is in ``settings["seed_reference"]``)."""
    proto = get_protocol("control/controlnetpp")
    run = RunFolder(out_dir)
    seeds = proto.image_seeds(images_per_prompt)  # per_image_index: group k of every prompt -> seed 42 + k
    size = resolution or proto.resolution or 512
    reqs = []
    for rec in records:
        cond = rec.cond_type
        dataset = "multigen20m"
        if cond == "seg":
            if seg_dataset not in SEG_NUM_CLASSES:
                raise ValueError(f"seg records need seg_dataset in {sorted(SEG_NUM_CLASSES)}, got {seg_dataset!r}")
            dataset = seg_dataset
        base = f"{cond}-{rec.index:05d}" if cond != "seg" else f"seg_{dataset}-{rec.index:05d}"
        paths = {}
        for kind, getter in (("image", rec.image), ("condition", rec.condition), ("label", rec.label)):
            rel = f"inputs/{cond}/{base}-{kind}.png"
            if not run.resolve(rel).is_file():
                im = getter()
                if im is None:
                    continue
                if kind == "label" and cond == "seg":
                    im = seg_labels(im, seg_label_mode or ("reduce_zero" if dataset == "ade20k" else "identity"))
                elif kind == "label" and cond in ("canny", "hed", "lineart", "depth"):
                    im = im.convert("L")
                save_image_atomic(im, run.resolve(rel))
            paths[kind] = rel
        if "label" not in paths:
            raise ValueError(f"{rec.key}: no label to score against")
        subset = cond if cond != "seg" else f"seg_{dataset}"
        for k, seed in enumerate(seeds):
            reqs.append(
                GenerationRequest(
                    id=f"{base}-g{k}",
                    task="control",
                    prompt=rec.prompt,
                    seed=int(seed),
                    protocol=proto.name,
                    sources=[paths["condition"]],
                    cond_type=cond,
                    width=size,
                    height=size,
                    fields={"group": k, "prompt_id": base, "label": paths["label"], "real": paths["image"],
                            "dataset": dataset, "subset": subset},
                )
            )
    return reqs


def build_requests(
    path: str | os.PathLike,
    cond_type: str,
    out_dir: str | os.PathLike,
    *,
    split: str | None = "validation",
    limit: int | None = None,
    detector: Any = None,
    seg_dataset: str | None = None,
    seg_label_mode: str | None = None,
    images_per_prompt: int | None = None,
    subset: bool = False,
    **columns: Any,
) -> RequestList:
    """``control/controlnetpp`` requests of one condition type from a local ControlNet++ eval parquet export.

    ``detector``: for hed / lineart, a PIL -> PIL detector (e.g. ``AnnotatorDetector(HEDAnnotator.from_file(...))``);
    ``columns``: column overrides passed to ``iter_multigen_eval`` (``image_column``, ``prompt_column``, ...).
    The whole split is checked against its published size (``subset``: smaller on disk on purpose); ``limit`` reads
    the first N rows only and marks the run a subset.
    """
    from lit_cologen.data.evalsets import load_multigen_eval

    records = load_multigen_eval(path, cond_type, split=split, detector=detector, subset=subset, limit=limit,
                                 **columns)
    reqs = requests_from_records(records, out_dir, seg_dataset=seg_dataset, seg_label_mode=seg_label_mode,
                                 images_per_prompt=images_per_prompt)
    return RequestList(reqs, eval_set=records.count.as_dict())


# ---------------------------------------------------------------------------------------------------------- scoring


def _outputs_at(ctx: ScoreContext, batch: Sequence[GenerationRequest], labels: Sequence[Image.Image]) -> list[Image.Image]:
    outs = [ctx.output(r) for r in batch]
    return [o if o.size == label.size else o.resize(label.size, Image.Resampling.BICUBIC)
            for o, label in zip(outs, labels)]


def score(ctx: ScoreContext) -> ScoreOutput:
    """Score a ``control/controlnetpp`` run (see the module docstring for the metrics)."""
    skipped: dict[str, str] = {}
    backbone = _backbone_lookup(ctx, skipped)
    groups = iter_requests_by(ctx.requests, lambda r: r.fields.get("subset", r.cond_type))
    table = MetricTable([], [])
    direct: dict[str, float] = {}
    extra: dict[str, Any] = {"fid_groups": {}}
    for subset, reqs in groups.items():
        _score_subset(ctx, subset, reqs, backbone, table, direct, skipped)
        if bool(ctx.options.get("fid", True)):
            inception = backbone("inception", f"{subset}/fid", required=False)
            if inception is not None:
                fids = _fid(ctx, reqs, inception)
                if fids:
                    direct[f"{subset}/fid"] = fids["mean"]
                    extra["fid_groups"][subset] = fids
                else:
                    skipped[f"{subset}/fid"] = "fewer than 2 images per group"
    out = table.output(metrics=direct, extra=extra, unavailable=skipped)
    for k in [k for k in out.metrics if k.endswith("/clip_score")]:  # CLIPScore.compute(): max(mean, 0)
        out.metrics[k] = max(out.metrics[k], 0.0)
    out.extra["skipped"] = skipped
    out.counts.update({f"{s}/prompts": len({r.fields['prompt_id'] for r in rs}) for s, rs in groups.items()})
    return out


def _backbone_lookup(ctx: ScoreContext, skipped: dict[str, str]):
    """``backbone(key, metric, required=True)``: the configured backbone, or None with ``skipped[metric]`` set; a
    required one that is missing raises unless the option ``skip_missing`` is set."""
    skip_missing = bool(ctx.options.get("skip_missing", False))

    def backbone(key: str, metric: str, required: bool = True):
        if ctx.backbones.available(key):
            return ctx.backbones.get(key)
        if required and not skip_missing:
            raise MissingWeightsError(
                f"{metric} needs the {key!r} backbone: pass --backbone {key}=PATH (or options skip_missing=True)"
            )
        skipped[metric] = f"backbone {key!r} not configured"
        return None

    return backbone


def _condition_scorer(ctx: ScoreContext, subset: str, cond: str, first: GenerationRequest, backbone) -> dict[str, Any]:
    """The backbone (and mIoU accumulator) the condition ``cond`` of ``subset`` is scored with; {} when not set."""
    if cond == "depth":
        estimator = backbone("dpt_large", "depth/rmse")
        if estimator is not None:  # ControlNet++ divides the prediction by its max; "minmax" is the option
            estimator.pred_norm = str(ctx.options.get("depth_pred_norm", "max"))
        return {"estimator": estimator}
    if cond in ("hed", "lineart"):
        return {"annot": backbone(cond, f"{cond}/ssim")}
    if cond == "seg":
        dataset = first.fields["dataset"]
        return {"segmenter": backbone(f"seg_{dataset}", f"{subset}/miou"), "miou": MeanIoU(SEG_NUM_CLASSES[dataset])}
    return {}


def _score_subset(ctx: ScoreContext, subset: str, reqs: Sequence[GenerationRequest], backbone, table: MetricTable,
                  direct: dict[str, float], skipped: dict[str, str]) -> None:
    """Per-image metrics of one subset into ``table`` (mIoU, a dataset-level metric, into ``direct``), in batches of
    whole prompts, so a prompt's images are scored together (canny F1)."""
    cond = reqs[0].cond_type
    clip = backbone("clip_b16", f"{subset}/clip_score", required=(cond == "canny"))
    scorer = _condition_scorer(ctx, subset, cond, reqs[0], backbone)
    by_prompt = iter_requests_by(reqs, lambda r: r.fields["prompt_id"])
    prompts = list(by_prompt)
    per_batch = max(1, ctx.batch_size // max(len(by_prompt[prompts[0]]), 1))
    for i in range(0, len(prompts), per_batch):
        batch = [r for p in prompts[i:i + per_batch] for r in by_prompt[p]]
        labels = [ctx.open(r, r.fields["label"], "L") for r in batch]
        outs = _outputs_at(ctx, batch, labels)
        if clip is not None:
            table.add(f"{subset}/clip_score", [r.id for r in batch], _clip_scores(ctx, clip, batch, outs),
                      [[] for _ in batch])
        _score_batch(ctx, cond, scorer, prompts[i:i + per_batch], batch, labels, outs, table, skipped)
    if cond == "seg" and scorer["segmenter"] is not None:
        direct[f"{subset}/miou"] = float(scorer["miou"].compute())


def _score_batch(ctx: ScoreContext, cond: str, scorer: dict[str, Any], prompt_ids: Sequence[Any],
                 batch: Sequence[GenerationRequest], labels: Sequence[Image.Image], outs: Sequence[Image.Image],
                 table: MetricTable, skipped: dict[str, str]) -> None:
    """The condition's own metric of one batch (canny F1 per prompt; depth RMSE / SSIM; HED / lineart SSIM and
    MS-SSIM; segmentation mIoU accumulated in ``scorer["miou"]``)."""
    ids = [r.id for r in batch]
    none = [[] for _ in batch]
    if cond == "canny":
        pred = canny_edges(load_images01(outs))
        target = (load_images01(labels, mode="L") > 0.5).float()
        for p in prompt_ids:
            sel = [j for j, r in enumerate(batch) if r.fields["prompt_id"] == p]
            table.add("canny/f1", [p], binary_f1(pred[sel], target[sel]).reshape(1), [[]])
    elif cond == "depth" and scorer["estimator"] is not None:
        pred, target = _depth_maps(ctx, scorer["estimator"], batch, labels)
        table.add("depth/rmse", ids, depth_rmse(pred, target), none)
        table.add("depth/ssim", ids, ssim(pred[:, None] / 255.0, target[:, None] / 255.0), none)
    elif cond in ("hed", "lineart") and scorer["annot"] is not None:
        pred = _line_maps(ctx, cond, scorer["annot"], outs)
        target = load_images01(labels, mode="L")
        table.add(f"{cond}/ssim", ids, ssim(pred, target), none)
        if min(target.shape[-2:]) >= MS_SSIM_MIN_SIDE:
            table.add(f"{cond}/ms_ssim", ids, ms_ssim(pred, target), none)
        else:
            skipped[f"{cond}/ms_ssim"] = f"images smaller than {MS_SSIM_MIN_SIDE} px"
    elif cond == "seg" and scorer["segmenter"] is not None:
        for o, label in zip(outs, labels):
            scorer["miou"].update(scorer["segmenter"]([o], label.size),
                                  torch.from_numpy(np.asarray(label, dtype=np.int64))[None])


def _depth_maps(ctx: ScoreContext, estimator, batch: Sequence[GenerationRequest],
                labels: Sequence[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
    """ControlNet++ ``eval/eval.py``: DPT depth of each generated image as it is (/max, 8 bit, bilinear to the eval
    resolution = the request's size); the label min-max normalised to 0-255 at its stored size, 8 bit, then nearest
    to that resolution (normalised before the resize). -> ``pred``, ``target`` ``[B, H, W]`` float, 0-255."""
    sizes = [(r.width, r.height) for r in batch]
    outs = [ctx.output(r) for r in batch]
    if len(set(sizes)) == 1:
        pred = estimator(outs, sizes[0])
    else:
        pred = torch.cat([estimator([o], s) for o, s in zip(outs, sizes)])
    target = torch.stack([torch.from_numpy(normalize_depth_label(label, size=s).astype(np.float32))
                          for label, s in zip(labels, sizes)])
    return pred, target


def _clip_scores(ctx: ScoreContext, clip, batch: Sequence[GenerationRequest], outs: Sequence[Image.Image]) -> torch.Tensor:
    """Per-image ``100 cos(CLIP image, CLIP text(prompt))`` ``[B]``, unclamped (torchmetrics ``_clip_score_update``;
    ``CLIPScore.compute()`` clamps the mean, done in :func:`score`). Prompts over 77 tokens are cut per the
    protocol's ``clip_text_truncation`` (``drop_eot``: torchmetrics' cut, the reference)."""
    img = clip.encode_images(outs, crop_offset=ctx.protocol.crop_offset("clip")).cpu()
    txt = clip.encode_texts([r.prompt for r in batch], truncation=ctx.protocol.settings["clip_text_truncation"]).cpu()
    return 100.0 * paired_cosine(img, txt)


def _line_maps(ctx: ScoreContext, cond: str, annot, outs: Sequence[Image.Image]) -> torch.Tensor:
    """Re-extracted maps ``[B, 1, H, W]`` in [0, 1] of the outputs, in the labels' polarity. HED: the 8-bit soft edges;
    line art: the 8-bit uninverted map inverted per the protocol's ``lineart_invert`` (ControlNet++ ``eval_edge.py``:
    ``uint8_one_minus``)."""
    x = load_images01(outs)
    if cond == "lineart":
        return invert_line_levels(annot.levels(x).cpu(), ctx.protocol.settings["lineart_invert"])
    return annot(x).cpu()


def _fid(ctx: ScoreContext, reqs: Sequence[GenerationRequest], inception) -> dict[str, float]:
    """FID of each group (``fields["group"]``) vs the real images (one per prompt), mean over groups."""
    size = (reqs[0].width, reqs[0].height)
    reals = list({r.fields["prompt_id"]: r for r in reqs}.values())
    groups = iter_requests_by(reqs, lambda r: r.fields["group"])
    if len(reals) < 2 or any(len(g) < 2 for g in groups.values()):
        return {}

    def batches(rs, load):
        for i in range(0, len(rs), ctx.batch_size):
            yield load_images01([load(r) for r in rs[i:i + ctx.batch_size]], size=size)

    real_b = batches(reals, lambda r: ctx.open(r, r.fields["real"]))
    group_b = {f"group_{g}": batches(rs, ctx.output) for g, rs in sorted(groups.items())}
    return fid_over_groups(inception, real_b, group_b)
