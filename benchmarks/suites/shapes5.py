"""Shapes-5 (``shapes5``): exact metrics on the procedural world, split into concept and localization.

Requests come from ``lit_cologen.data.shapes.make_sample`` (held-out split ``eval`` by default); the suite writes
each sample's source, target and mask into the run folder and keeps its ``meta`` (the exact scene graph) in the
request's ``fields["meta"]``. Scoring re-renders the scene graph (``shapes.render``) to get every object's exact
visible mask, then compares the output with the truth. Pixels "match" when every channel is within
``color_tolerance`` (48 of 255) of the expected colour.

Object template matching (the concept / localization split): the object's template is its visible pixels in the
target. Sliding it over the output, ``agreement(shift)`` = the fraction of template pixels matched at that shift.

* concept = max over shifts of the agreement (right colour, shape, size / identity, place ignored);
* localization = IoU of the object's box at the best shift with its true box (right place; ties go to the
  placement nearest the truth).

Per task (metric keys ``<task>/<name>``; ``concept`` / ``localization`` are also averaged over all tasks):

=========  ==============================================================================================
inpaint    ``masked_l1`` (0-1), ``masked_psnr`` (dB) inside the mask vs the target; concept / localization of
           the objects the mask touches
ground     localization = ``iou``: box IoU (box / instance modes) or pixel IoU (mask mode) of the drawn region
           (output vs source) with the true one; concept = ``color_ok``-fraction: drawn pixels with the asked
           colour (box) or the asked overlay (mask); ``preservation`` outside the true region
control    ``l1``, ``ssim``, ``edge_f1`` (kornia Canny of output vs target), ``seg_miou`` (pixels labelled by the
           objects' palette colours vs the true id map); concept / localization of every object
subject    concept = identity (the subject's textured template matched anywhere), localization as above,
           ``background``: target-background pixels reproduced, ``success``: both >= 0.5
edit       localization = IoU of the changed region (output vs source) with the true one; concept: the edited
           object's template (recolor / add / move), the true content of the changed region (remove), the
           new background (background); ``l1`` vs the target, ``preservation`` of unchanged pixels, ``success``
=========  ==============================================================================================
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from lit_cologen.data import shapes
from lit_cologen.data.schema import TASKS

from ..harness import GenerationRequest, RequestList, RunFolder, ScoreContext, ScoreOutput, save_image_atomic
from ..metrics.edges import binary_f1, canny_edges
from ..metrics.pixel import ssim
from ..metrics.segmentation import MeanIoU
from ..protocols import get_protocol
from .common import MetricTable

__all__ = ["build_requests", "score", "score_sample", "template_match", "DEFAULT_TOLERANCE"]

DEFAULT_TOLERANCE = 48


def _detail(sample) -> str:
    m = sample.meta
    return {
        "inpaint": lambda: m.get("mask_type", ""),
        "ground": lambda: m.get("ground", {}).get("mode", ""),
        "control": lambda: m.get("cond_type", ""),
        "subject": lambda: "",
        "edit": lambda: m.get("edit", {}).get("op", ""),
    }[sample.task]()


def build_requests(
    out_dir: str | os.PathLike,
    *,
    tasks: Sequence[str] = TASKS,
    per_task: int = 20,
    split: str = "eval",
    resolution: int = 64,
    seed: int = 0,
    start: int = 0,
    subset: bool = False,
) -> RequestList:
    """``shapes5`` requests: samples ``start .. start + per_task - 1`` of each task, inputs written to ``out_dir``.

    ``seed`` is the world seed of the samples (``shapes.make_sample``); each request's sampling seed comes from its
    id (``seed_rule`` ``from_request_id``), so no two requests share one.

    The world is procedural (no published size): ``eval_set`` records the request count, and ``subset`` as given."""
    proto = get_protocol("shapes5")
    run = RunFolder(out_dir)
    samples = [shapes.make_sample(task, index, split, resolution, seed)
               for task in tasks for index in range(start, start + per_task)]
    seeds = proto.request_seeds([s.key for s in samples])  # from_request_id: one seed per sample key, all distinct
    reqs = []
    for s, request_seed in zip(samples, seeds):

        def put(kind: str, im: Image.Image) -> str:
            rel = f"inputs/{s.key}-{kind}.png"
            if not run.resolve(rel).is_file():
                save_image_atomic(im, run.resolve(rel))
            return rel

        detail = _detail(s)
        reqs.append(
            GenerationRequest(
                id=s.key,
                task=s.task,
                prompt=s.prompt,
                seed=int(request_seed),
                protocol=proto.name,
                sources=[put("source", s.source)],
                mask=put("mask", s.mask) if s.mask is not None else None,
                cond_type=s.cond_type,
                width=resolution,
                height=resolution,
                fields={"target": put("target", s.target), "meta": s.meta, "subset": s.task,
                        "subsets": [f"{s.task}/{detail}"] if detail else []},
            )
        )
    return RequestList(reqs, eval_set={"dataset": "shapes5", "split": split, "unit": "requests", "expected": None,
                                       "found": len(reqs), "subset": subset})


# ------------------------------------------------------------------------------------------------------- primitives


def _match(a: np.ndarray, b: np.ndarray, tol: int) -> np.ndarray:
    """bool (H, W): every channel of ``a`` within ``tol`` of ``b`` (``b`` (H, W, 3) or (3,))."""
    return (np.abs(a.astype(np.int16) - np.asarray(b, dtype=np.int16)) <= tol).all(-1)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / u) if u else float("nan")


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask)
    return None if ys.size == 0 else (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def _box_iou(a, b) -> float:
    if a is None or b is None:
        return 0.0
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def template_match(
    output: np.ndarray, target: np.ndarray, mask: np.ndarray, tol: int = DEFAULT_TOLERANCE, max_colors: int = 64
) -> tuple[float, float, float]:
    """Slide an object's template over the output.

    Args:
        output, target: uint8 (H, W, 3); mask: bool (H, W), the object's visible pixels in ``target``.
    Returns:
        (concept, localization, agreement at the true place): the best agreement over all shifts (fraction of
        template pixels matched), the IoU of the best-shift box with the true box, the agreement at shift 0.
    """
    box = _bbox(mask)
    if box is None:
        return float("nan"), float("nan"), float("nan")
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    tmask = mask[y0:y1, x0:x1]
    tpl = target[y0:y1, x0:x1]
    colors, counts = np.unique(tpl[tmask].reshape(-1, 3), axis=0, return_counts=True)
    colors = colors[np.argsort(-counts)][:max_colors]
    total = float(tmask.sum())
    inp = np.stack([_match(output, c, tol) for c in colors]).astype(np.float32)  # [C, H, W]
    ker = np.stack([tmask & (tpl == c).all(-1) for c in colors]).astype(np.float32)  # [C, h, w]
    score = F.conv2d(torch.from_numpy(inp)[None], torch.from_numpy(ker)[None], padding=(h - 1, w - 1))[0, 0] / total
    score = score.numpy()  # [H + h - 1, W + w - 1]; index (i, j) = box top-left at (i - h + 1, j - w + 1)
    best = score.max()
    ti, tj = y0 + h - 1, x0 + w - 1
    cand = np.argwhere(score >= best - 1e-6)
    i, j = cand[np.argmin((cand[:, 0] - ti) ** 2 + (cand[:, 1] - tj) ** 2)]
    top, left = int(i) - h + 1, int(j) - w + 1
    loc = _box_iou((left, top, left + w, top + h), box) if best > 0 else 0.0  # not found: no place
    return float(best), float(loc), float(score[ti, tj])


def _object_scores(out: np.ndarray, tgt: np.ndarray, rendered, objects: Sequence[int], tol: int) -> tuple[float, float]:
    vals = [template_match(out, tgt, rendered.visible_mask(k), tol)[:2] for k in objects]
    vals = [v for v in vals if not np.isnan(v[0])]
    if not vals:
        return float("nan"), float("nan")
    return float(np.mean([v[0] for v in vals])), float(np.mean([v[1] for v in vals]))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)) if a.size else float("nan")
    return 100.0 if mse == 0 else float(10 * np.log10(255.0**2 / mse))


# ---------------------------------------------------------------------------------------------------------- scoring


def score_sample(
    task: str, output: np.ndarray, source: np.ndarray, target: np.ndarray, meta: dict[str, Any],
    mask: np.ndarray | None = None, tol: int = DEFAULT_TOLERANCE,
) -> dict[str, float]:
    """All Shapes-5 metrics of one output (uint8 (H, W, 3) arrays at the sample's resolution).

    Returns ``{"concept", "localization", <task metrics>}`` (NaN where a metric does not apply).
    """
    res = int(meta["resolution"])
    rendered = shapes.render(shapes.Scene.from_json(meta["scene"]), res)
    out, src, tgt = output, source, target
    m: dict[str, float] = {}
    n_obj = len(meta["scene"]["objects"])
    if task == "inpaint":
        region = mask > 127 if mask is not None else np.zeros(out.shape[:2], bool)
        diff = np.abs(out.astype(np.float64) - tgt.astype(np.float64))[region]
        m["masked_l1"] = float(diff.mean() / 255.0) if diff.size else float("nan")
        m["masked_psnr"] = _psnr(out[region], tgt[region])
        touched = [k for k in range(n_obj) if (rendered.visible_mask(k) & region).any()]
        m["concept"], m["localization"] = _object_scores(out, tgt, rendered, touched, tol)
    elif task == "ground":
        g = meta["ground"]
        truth = (src != tgt).any(-1)
        drawn = ~_match(out, src, tol)
        if g["mode"] == "mask":
            m["iou"] = _iou(drawn, truth) if truth.any() or drawn.any() else 1.0
            rgb = np.asarray(shapes.PALETTE[g["color"]], dtype=np.int32)
            expected = (src.astype(np.int32) + rgb + 1) // 2
        else:
            m["iou"] = _box_iou(_bbox(drawn), _bbox(truth))
            expected = np.broadcast_to(np.asarray(shapes.PALETTE[g["color"]]), out.shape)
        m["concept"] = float(_match(out, expected, tol)[drawn].mean()) if drawn.any() else 0.0
        m["localization"] = m["iou"]
        m["color_ok"] = float(m["concept"] >= 0.5)
        m["preservation"] = float(_match(out, src, tol)[~truth].mean()) if (~truth).any() else float("nan")
    elif task == "control":
        m["l1"] = float(np.abs(out.astype(np.float64) - tgt).mean() / 255.0)
        o01 = torch.from_numpy(np.array(out)).permute(2, 0, 1)[None].float() / 255
        t01 = torch.from_numpy(np.array(tgt)).permute(2, 0, 1)[None].float() / 255
        m["ssim"] = float(ssim(o01, t01)[0])
        m["edge_f1"] = float(binary_f1(canny_edges(o01), canny_edges(t01)))
        labels = np.zeros(out.shape[:2], dtype=np.int64)  # 0 = background, k + 1 = object k
        for k in reversed(range(n_obj)):
            color = meta["scene"]["objects"][k].get("color")
            if color in shapes.PALETTE:
                labels[_match(out, shapes.PALETTE[color], tol)] = k + 1
        miou = MeanIoU(n_obj + 1)
        miou.update(torch.from_numpy(labels)[None], torch.from_numpy(rendered.ids.astype(np.int64) + 1)[None])
        m["seg_miou"] = float(miou.compute())
        m["concept"], m["localization"] = _object_scores(out, tgt, rendered, range(n_obj), tol)
    elif task == "subject":
        k = int(meta["subject_object"])
        m["concept"], m["localization"], _ = template_match(out, tgt, rendered.visible_mask(k), tol)
        bg = rendered.ids < 0
        m["background"] = float(_match(out, tgt, tol)[bg].mean()) if bg.any() else float("nan")
        m["l1"] = float(np.abs(out.astype(np.float64) - tgt).mean() / 255.0)
        m["success"] = float(m["concept"] >= 0.5 and m["localization"] >= 0.5)
    elif task == "edit":
        e = meta["edit"]
        changed = (src != tgt).any(-1)
        changed_out = ~_match(out, src, tol)
        m["l1"] = float(np.abs(out.astype(np.float64) - tgt).mean() / 255.0)
        m["preservation"] = float(_match(out, src, tol)[~changed].mean()) if (~changed).any() else float("nan")
        m["localization"] = _iou(changed_out, changed) if changed.any() or changed_out.any() else 1.0
        if e["op"] in ("recolor", "add", "move"):
            m["concept"] = template_match(out, tgt, rendered.visible_mask(int(e["object"])), tol)[0]
        elif e["op"] == "remove":
            m["concept"] = float(_match(out, tgt, tol)[changed].mean()) if changed.any() else 1.0
        else:  # background
            bg = rendered.ids < 0
            m["concept"] = float(_match(out, tgt, tol)[bg].mean()) if bg.any() else float("nan")
        m["success"] = float(m["concept"] >= 0.5 and m["localization"] >= 0.5)
    else:
        raise ValueError(f"unknown Shapes-5 task {task!r}")
    return m


def score(ctx: ScoreContext) -> ScoreOutput:
    """Score a ``shapes5`` run: per-task exact metrics and the concept / localization split."""
    tol = int(ctx.options.get("color_tolerance", ctx.protocol.settings.get("color_tolerance", DEFAULT_TOLERANCE)))
    subsets = sorted({s for r in ctx.requests for s in [r.fields.get("subset", r.task)] + list(r.fields.get("subsets", []))})
    table = MetricTable(["concept", "localization"], subsets)
    for batch in ctx.batches(desc="score shapes5"):
        for r in batch:
            meta = r.fields["meta"]
            res = int(meta["resolution"])
            out = ctx.output(r)
            if out.size != (res, res):
                out = out.resize((res, res), Image.Resampling.NEAREST)
            arr = lambda im: np.array(im.convert("RGB"), dtype=np.uint8)  # noqa: E731
            mask = np.array(r.load_mask(ctx.run.root)) if r.mask else None
            vals = score_sample(r.task, arr(out), arr(ctx.open(r, r.sources[0])), arr(ctx.open(r, r.fields["target"])),
                                meta, mask, tol)
            member = [[r.fields.get("subset", r.task)] + list(r.fields.get("subsets", []))]
            for name, v in vals.items():
                key = name if name in ("concept", "localization") else f"{r.task}/{name}"
                table.add(key, [r.id], [v], member)
    return table.output(extra={"color_tolerance": tol})
