"""DreamBench (Table 4, 5, 7): requests from the DreamBooth dataset folder, and the CLIP-T / CLIP-I / DINO scorer.

Dataset folder (``$COLOGEN_DREAMBENCH``, the DreamBooth ``dataset/`` folder), read with
``lit_cologen.data.evalsets.load_dreambench``: one sub-folder per subject with photos ``00.jpg``, ``01.jpg``, ...;
``prompts_and_classes.txt`` maps subjects to class nouns and lists the 25 object and 25 live-subject prompt
templates; live subjects are the cats and dogs (9 of 30).

Prompts are the templates with the class noun and no rare token (``a backpack in the jungle``, the loader's
``prompt_class``), as OmniGen's protocol; the same text is used for CLIP-T. A generator that wants a subject token
can build its own prompt from ``fields["template"]`` / ``fields["class_noun"]``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from lit_cologen.data.evalsets import load_dreambench

from ..harness import GenerationRequest, Generator, RequestList, ScoreContext, ScoreOutput, generate, write_json_atomic
from ..harness import score as score_run
from ..metrics.similarity import paired_cosine
from ..protocols import get_protocol
from .common import MetricTable, eval_set_of, subsets_of

__all__ = ["build_requests", "score", "score_all_references", "run_dreambench"]


def build_requests(
    root: str | os.PathLike,
    protocol: str = "dreambench/omnigen",
    subjects: Sequence[str] | int | None = None,
    prompts_per_subject: int | None = None,
    images_per_prompt: int | None = None,
    resolution: int | None = None,
    subset: bool = False,
) -> RequestList:
    """The requests of the DreamBench protocol (750 prompts x 4 images by default; image k of a prompt has seed
    ``proto.seeds[k]`` = k, id ``<subject>-p<prompt>-s<k>``).

    ``subjects``: names, or a count (the first N by name), or None (all 30); ``prompts_per_subject`` /
    ``images_per_prompt``: the first N (a CI-sized run); ``resolution``: override the protocol's size.
    ``subset``: a DreamBench folder with fewer than the published 30 subjects is intended. A selection by
    ``subjects`` / ``prompts_per_subject`` marks the run a subset.
    """
    proto = get_protocol(protocol)
    records = load_dreambench(root, references="all", subset=subset)
    names = list(dict.fromkeys(r.subject for r in records))
    if isinstance(subjects, int):
        chosen = names[:subjects]
    elif subjects:
        unknown = [n for n in subjects if n not in names]
        if unknown:
            raise KeyError(f"unknown DreamBench subjects {unknown}; known: {names}")
        chosen = list(subjects)
    else:
        chosen = names
    seeds = proto.image_seeds(images_per_prompt)  # per_image_index: image k of every prompt -> seed k
    size = resolution or proto.resolution or 512
    by_subject: dict[str, list] = {}
    for rec in records:
        by_subject.setdefault(rec.subject, []).append(rec)
    reqs = []
    for name in chosen:
        prompts = sorted(by_subject[name], key=lambda r: r.prompt_index)[: prompts_per_subject or None]
        for rec in prompts:
            refs = [str(Path(p).resolve()) for p in rec.references]
            reference = next((p for p in refs if Path(p).stem == "00"), refs[0])
            for k, seed in enumerate(seeds):
                reqs.append(
                    GenerationRequest(
                        id=f"{rec.subject}-p{rec.prompt_index:02d}-s{k}",
                        task="subject",
                        prompt=rec.prompt_class,
                        seed=int(seed),
                        protocol=proto.variant_of or proto.name,
                        sources=[reference],
                        width=size,
                        height=size,
                        fields={
                            "subject": rec.subject,
                            "class_noun": rec.class_noun,
                            "subset": "live" if rec.live else "object",
                            "subsets": [f"subject/{rec.subject}"],
                            "template": rec.template,
                            "prompt_index": rec.prompt_index,
                            "image_index": k,
                            "clip_t_text": rec.prompt_class,
                            "references": refs,
                        },
                    )
                )
    prompts = len({(r.id.rsplit("-s", 1)[0]) for r in reqs})
    return RequestList(reqs, eval_set=eval_set_of(records.count, found=prompts, selected=prompts < len(records)))


class _EmbeddingCache:
    """Embeddings of images / texts computed once (references, prompts)."""

    def __init__(self, ctx: ScoreContext):
        self.ctx = ctx
        self.cache: dict[tuple[str, str], torch.Tensor] = {}

    def images(self, encoder, key: str, req: GenerationRequest, paths: Sequence[str], crop: str) -> torch.Tensor:
        todo = [p for p in dict.fromkeys(paths) if (key, p) not in self.cache]
        if todo:
            embs = encoder.encode_images([self.ctx.open(req, p) for p in todo], crop_offset=crop).cpu()
            self.cache.update({(key, p): e for p, e in zip(todo, embs)})
        return torch.stack([self.cache[(key, p)] for p in paths])

    def texts(self, encoder, key: str, texts: Sequence[str]) -> torch.Tensor:
        todo = [t for t in dict.fromkeys(texts) if (key, "text:" + t) not in self.cache]
        if todo:
            embs = encoder.encode_texts(todo).cpu()
            self.cache.update({(key, "text:" + t): e for t, e in zip(todo, embs)})
        return torch.stack([self.cache[(key, "text:" + t)] for t in texts])


def _score(ctx: ScoreContext, all_references: bool) -> ScoreOutput:
    clip_enc = ctx.backbones.clip("clip_b32")
    dino_enc = ctx.backbones.dino("dino_vits16")
    subsets = ["object", "live"] + sorted({s for r in ctx.requests for s in subsets_of(r)} - {"object", "live"})
    table = MetricTable(["clip_t", "clip_i", "dino"], subsets)
    cache = _EmbeddingCache(ctx)
    clip_crop, dino_crop = ctx.protocol.crop_offset("clip"), ctx.protocol.crop_offset("dino")
    for batch in ctx.batches(desc="score dreambench"):
        outputs = [ctx.output(r) for r in batch]
        ids = [r.id for r in batch]
        membership = [subsets_of(r) for r in batch]
        out_clip = clip_enc.encode_images(outputs, crop_offset=clip_crop).cpu()
        out_dino = dino_enc.encode_images(outputs, crop_offset=dino_crop).cpu()
        texts = [r.fields.get("clip_t_text", r.prompt) for r in batch]
        table.add("clip_t", ids, paired_cosine(out_clip, cache.texts(clip_enc, "clip", texts)), membership)
        clip_i, dino = [], []
        for r, oc, od in zip(batch, out_clip, out_dino):
            refs = list(r.fields.get("references") or r.sources) if all_references else [r.sources[0]]
            rc = cache.images(clip_enc, "clip", r, refs, clip_crop)
            rd = cache.images(dino_enc, "dino", r, refs, dino_crop)
            clip_i.append(paired_cosine(oc.expand_as(rc), rc).mean())
            dino.append(paired_cosine(od.expand_as(rd), rd).mean())
        table.add("clip_i", ids, torch.stack(clip_i), membership)
        table.add("dino", ids, torch.stack(dino), membership)
    subjects = sorted({r.fields.get("subject") for r in ctx.requests})
    return table.output(extra={"subjects": len(subjects), "reference": "all" if all_references else "single"})


def score(ctx: ScoreContext) -> ScoreOutput:
    """``dreambench/omnigen``: CLIP-T, CLIP-I and DINO against the single reference (``sources[0]``)."""
    return _score(ctx, all_references=False)


def score_all_references(ctx: ScoreContext) -> ScoreOutput:
    """``dreambench/omnigen-allrefs``: CLIP-I and DINO averaged over all the subject's photos."""
    return _score(ctx, all_references=True)


def run_dreambench(
    root: str | os.PathLike,
    generator: Generator,
    out_dir: str | os.PathLike,
    backbones: Any,
    *,
    protocol: str = "dreambench/omnigen",
    subjects: Sequence[str] | int | None = None,
    prompts_per_subject: int | None = None,
    images_per_prompt: int | None = None,
    resolution: int | None = None,
    batch_size: int = 4,
    score_batch_size: int = 16,
    progress: bool = False,
    also_all_references: bool = False,
) -> dict[str, Any]:
    """Generate and score DreamBench end to end; returns the results dict (``out_dir/results.json``).

    With ``also_all_references`` the all-reference variant is written to ``out_dir/results_allrefs.json`` too.
    """
    reqs = build_requests(root, protocol, subjects, prompts_per_subject, images_per_prompt, resolution)
    generate(out_dir, reqs, generator, batch_size=batch_size, progress=progress,
             info={"dataset": str(Path(root).resolve()),
                   "subset_of_protocol": bool(subjects or prompts_per_subject or images_per_prompt)})
    results = score_run(out_dir, backbones, protocol=protocol, batch_size=score_batch_size, progress=progress)
    if also_all_references:
        allrefs = score_run(out_dir, backbones, protocol="dreambench/omnigen-allrefs", batch_size=score_batch_size,
                            progress=progress, write=False)
        write_json_atomic(Path(out_dir) / "results_allrefs.json", allrefs)
    return results
