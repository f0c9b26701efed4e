"""Instruction editing (Table 2, Table 5 MagicBrush rows): Emu Edit and MagicBrush test requests and scorers.

Datasets are read with ``lit_cologen.data.evalsets`` (``load_emu_edit``: HF ``facebook/emu_edit_test_set``
parquet; ``load_magicbrush_test``: parquet or the official test folder). The suite writes each item's images into
the run folder (``inputs/<key>-source.png``, ``inputs/<key>-target.png``) so the manifest is self-contained.

Scorers:
* :func:`score_emu` (``editing/emu``, ``editing/magicbrush``; Emu Edit definitions): CLIP_i = cos(CLIP(source),
  CLIP(output)); CLIP_out = cos(CLIP(output), CLIP text(output caption)); L1 = mean |source - output| on [0, 1]
  pixels with the output resized to the source (PIL bicubic); DINO = cos(DINO(source), DINO(output)); and
  CLIP_dir = cos(CLIP(output) - CLIP(source), CLIP text(output caption) - CLIP text(input caption)).
* :func:`score_ground_truth` (``editing/magicbrush-gt``; MagicBrush's ``image_eval.py``): L1, L2 (output resized
  to the ground-truth size), CLIP-I, DINO (output at its own size) vs the ground truth, CLIP-T vs the output caption.

CLIP and DINO preprocessing follows ``image_eval.py``: ``clip.load``'s transform and the torchvision DINO transform,
both torchvision ``CenterCrop`` (``settings["clip_crop_offset"] = settings["dino_crop_offset"] = "round"``).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch
from PIL import Image

from ..harness import GenerationRequest, RequestList, RunFolder, ScoreContext, ScoreOutput, save_image_atomic
from ..metrics.pixel import l1_distance, l2_distance, load_images01
from ..metrics.similarity import paired_cosine
from ..protocols import get_protocol
from .common import MetricTable, subsets_of

__all__ = ["build_emu_requests", "build_magicbrush_requests", "requests_from_records", "score_emu", "score_ground_truth"]


def _write_input(run: RunFolder, name: str, image: Image.Image) -> str:
    """Write ``inputs/<name>.png`` once (atomic); return its run-relative path."""
    rel = f"inputs/{name}.png"
    path = run.resolve(rel)
    if not path.is_file():
        save_image_atomic(image, path)
    return rel


def requests_from_records(
    records: Sequence[Any], out_dir: str | os.PathLike, protocol: str, seed: int | None = None
) -> list[GenerationRequest]:
    """Requests for editing records (``lit_cologen.data.evalsets.EditEvalRecord``), inputs written into ``out_dir``.

    One image per record, seeded from its key (``seed_rule`` ``from_request_id``: ``proto.request_seeds``; ``seed``
    is the base added to each key's hash, default the protocol's ``seeds[0]``), so two requests never share a seed.
    Output size = source size. ``fields``: ``target_caption`` (output caption), ``input_caption``, ``target``
    (ground-truth path, when the record has one), ``subset`` (Emu Edit task type), ``dataset``, record ``meta``.
    """
    proto = get_protocol(protocol)
    run = RunFolder(out_dir)
    records = list(records)
    seeds = proto.request_seeds([rec.key for rec in records], base=seed)
    reqs = []
    for rec, rec_seed in zip(records, seeds):
        src = rec.source().convert("RGB")
        fields: dict[str, Any] = {
            "dataset": rec.dataset,
            "instruction": rec.instruction,
            "target_caption": rec.output_caption,
            "input_caption": rec.input_caption,
            "meta": {k: v for k, v in rec.meta.items() if isinstance(v, (str, int, float, bool)) or v is None},
        }
        if rec.task:
            fields["subset"] = str(rec.task)
        tgt = rec.target()
        if tgt is not None:
            fields["target"] = _write_input(run, f"{rec.key}-target", tgt.convert("RGB"))
        reqs.append(
            GenerationRequest(
                id=rec.key,
                task="edit",
                prompt=rec.instruction,
                seed=int(rec_seed),
                protocol=proto.variant_of or proto.name,
                sources=[_write_input(run, f"{rec.key}-source", src)],
                width=src.width,
                height=src.height,
                fields=fields,
            )
        )
    return reqs


def build_emu_requests(
    path: str | os.PathLike, out_dir: str | os.PathLike, *, split: str = "test", limit: int | None = None,
    drop_identical_captions: bool = False, subset: bool = False,
) -> RequestList:
    """``editing/emu`` requests from local Emu Edit parquet files.

    The whole split is loaded and checked against its published size (``subset``: a smaller set on disk is
    intended); with ``limit``, only the first ``limit`` rows are read and the run is marked a subset.
    """
    from lit_cologen.data.evalsets import load_emu_edit

    records = load_emu_edit(path, split=split, drop_identical_captions=drop_identical_captions, subset=subset,
                            limit=limit)
    return RequestList(requests_from_records(records, out_dir, "editing/emu"), eval_set=records.count.as_dict())


def build_magicbrush_requests(
    path: str | os.PathLike, out_dir: str | os.PathLike, *, turns: str = "all", captions: str | None = "global",
    limit: int | None = None, subset: bool = False,
) -> RequestList:
    """``editing/magicbrush`` requests (single turn: every turn edited from its ground-truth input); the test set is
    checked against its published size (``subset``: smaller on disk on purpose; ``limit``: the first N, a subset)."""
    from lit_cologen.data.evalsets import load_magicbrush_test

    records = load_magicbrush_test(path, turns=turns, captions=captions, subset=subset, limit=limit)
    return RequestList(requests_from_records(records, out_dir, "editing/magicbrush"), eval_set=records.count.as_dict())


def _subset_names(ctx: ScoreContext) -> list[str]:
    return sorted({s for r in ctx.requests for s in subsets_of(r)})


def _texts(enc, texts: Sequence[str | None]) -> tuple[torch.Tensor | None, list[int]]:
    idx = [i for i, t in enumerate(texts) if t]
    if not idx:
        return None, idx
    return enc.encode_texts([texts[i] for i in idx]).cpu(), idx


def _image_encoders(ctx: ScoreContext, clip_enc, dino_enc):
    """``images -> [B, D]`` (CPU) for CLIP and DINO with the protocol's centre-crop rules (MagicBrush: torchvision)."""
    clip_crop, dino_crop = ctx.protocol.crop_offset("clip"), ctx.protocol.crop_offset("dino")
    return (lambda ims: clip_enc.encode_images(ims, crop_offset=clip_crop).cpu(),
            lambda ims: dino_enc.encode_images(ims, crop_offset=dino_crop).cpu())


def score_emu(ctx: ScoreContext) -> ScoreOutput:
    """Emu Edit metrics (output vs source, output vs output caption); see the module docstring."""
    clip_enc = ctx.backbones.clip("clip_b32")
    dino_enc = ctx.backbones.dino("dino_vits16")
    clip_img, dino_img = _image_encoders(ctx, clip_enc, dino_enc)
    table = MetricTable(["clip_i", "clip_out", "l1", "dino", "clip_dir"], _subset_names(ctx))
    for batch in ctx.batches(desc=f"score {ctx.protocol.name}"):
        ids = [r.id for r in batch]
        member = [subsets_of(r) for r in batch]
        outs = [ctx.output(r) for r in batch]
        srcs = [ctx.open(r, r.sources[0]) for r in batch]
        c_out, c_src = clip_img(outs), clip_img(srcs)
        table.add("clip_i", ids, paired_cosine(c_src, c_out), member)
        table.add("dino", ids, paired_cosine(dino_img(srcs), dino_img(outs)), member)
        l1 = [l1_distance(load_images01([o], size=s.size), load_images01([s]))[0] for o, s in zip(outs, srcs)]
        table.add("l1", ids, torch.stack(l1), member)
        caps = [r.fields.get("target_caption") for r in batch]
        t_out, idx = _texts(clip_enc, caps)
        if t_out is not None:
            table.add("clip_out", [ids[i] for i in idx], paired_cosine(c_out[idx], t_out), [member[i] for i in idx])
        pairs = [i for i in idx if batch[i].fields.get("input_caption")]
        if pairs:
            t_in = clip_enc.encode_texts([batch[i].fields["input_caption"] for i in pairs]).cpu()
            t_tg = t_out[[idx.index(i) for i in pairs]]
            d_img = c_out[pairs] - c_src[pairs]
            table.add("clip_dir", [ids[i] for i in pairs], paired_cosine(d_img, t_tg - t_in), [member[i] for i in pairs])
    no_caption = sum(1 for r in ctx.requests if not r.fields.get("target_caption"))
    no_input = sum(1 for r in ctx.requests if not r.fields.get("input_caption"))
    why = {"clip_out": f"{no_caption} of {len(ctx.requests)} requests have no target caption (MagicBrush: the "
                       "parquet export has none; use the official test folder with captions=global)",
           "clip_dir": f"{max(no_caption, no_input)} of {len(ctx.requests)} requests lack an input or target caption"}
    return table.output(extra={"rows_without_target_caption": no_caption}, unavailable=why)


def score_ground_truth(ctx: ScoreContext) -> ScoreOutput:
    """MagicBrush's own protocol (``image_eval.py``): the output vs the ground-truth target. L1 / L2 on the output
    resized to the ground truth's size (PIL bicubic); CLIP-I, DINO and CLIP-T encode the output at its own size."""
    clip_enc = ctx.backbones.clip("clip_b32")
    dino_enc = ctx.backbones.dino("dino_vits16")
    no_gt = [r.id for r in ctx.requests if not r.fields.get("target")]
    if no_gt:
        raise ValueError(f"{ctx.protocol.name}: {len(no_gt)} rows have no ground-truth target (first: {no_gt[:3]})")
    clip_img, dino_img = _image_encoders(ctx, clip_enc, dino_enc)
    table = MetricTable(["l1", "l2", "clip_i", "dino", "clip_t"], _subset_names(ctx))
    for batch in ctx.batches(desc=f"score {ctx.protocol.name}"):
        ids = [r.id for r in batch]
        member = [subsets_of(r) for r in batch]
        gts = [ctx.open(r, r.fields["target"]) for r in batch]
        outs = [ctx.output(r) for r in batch]  # encoded at their own size, as image_eval.py does
        pix = [(load_images01([o], size=g.size), load_images01([g])) for o, g in zip(outs, gts)]  # resized for L1 / L2
        table.add("l1", ids, torch.cat([l1_distance(o, g) for o, g in pix]), member)
        table.add("l2", ids, torch.cat([l2_distance(o, g) for o, g in pix]), member)
        c_out = clip_img(outs)
        table.add("clip_i", ids, paired_cosine(c_out, clip_img(gts)), member)
        table.add("dino", ids, paired_cosine(dino_img(outs), dino_img(gts)), member)
        t, idx = _texts(clip_enc, [r.fields.get("target_caption") for r in batch])
        if t is not None:
            table.add("clip_t", [ids[i] for i in idx], paired_cosine(c_out[idx], t), [member[i] for i in idx])
    return table.output()
