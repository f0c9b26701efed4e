"""GEdit-Bench (Table 8, ``gedit/full``): generation over its instructions, and VLM-judged scores.

**Needs a judge model.** GEdit-Bench scores edits with a vision-language judge (VIEScore: the paper's evaluator is
not stated; GEdit uses GPT-4.1 or Qwen2.5-VL). Nothing is downloaded: the judge is either any object with the
:class:`Judge` interface, or a local transformers image-text-to-text model folder (``--backbone judge=FOLDER``)
driven by :class:`TransformersVLMJudge`. Numbers from different judges are not comparable; the judge's weights
hash goes into the results.

Data: the benchmark's files (HF ``stepfun-ai/GEdit-Bench``, published as the ``datasets`` library's Arrow files;
parquet exports too: ``key``, ``task_type``, ``instruction``, ``instruction_language``, ``input_image``; optional
``Intersection_exist``), read locally with ``lit_cologen.data.evalsets.load_gedit_bench``. ``language`` picks
``en`` / ``cn`` rows; the full set is every row of that language.

Scores per image (VIEScore): semantic consistency SC = min(editing success, no over-editing), perceptual quality
PQ = min(naturalness, no artifacts), each 0-10; overall O = sqrt(SC * PQ). The reported G_SC, G_PQ, G_O are means
over images (GEdit averages per task type first; both are recorded: ``metrics`` = image mean,
``extra["task_mean"]`` = mean of the per-task means).
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from typing import Protocol, Sequence, runtime_checkable

from PIL import Image

from ..harness import GenerationRequest, RequestList, RunFolder, ScoreContext, ScoreOutput, save_image_atomic
from ..metrics.weights import MissingWeightsError, hash_folder, require_folder
from ..protocols import get_protocol
from .common import MetricTable, subsets_of

__all__ = ["Judge", "TransformersVLMJudge", "build_requests", "parse_scores", "score", "SC_PROMPT", "PQ_PROMPT"]


@runtime_checkable
class Judge(Protocol):
    """``judge(source, output, instruction)`` -> ``{"SC": [scores 0-10], "PQ": [scores 0-10]}`` for one edit."""

    def judge(self, source: Image.Image, output: Image.Image, instruction: str) -> dict[str, list[float]]: ...


SC_PROMPT = (
    "You are an expert judge of image edits. The first image is the original, the second is the edited image. "
    "The editing instruction was: \"{instruction}\".\n"
    "Give two scores from 0 to 10: first, how well the edited image follows the instruction (0 = not at all, "
    "10 = perfectly); second, how little the image was over-edited (0 = the edited image does not resemble the "
    "original at all, 10 = only what the instruction asks was changed).\n"
    'Answer only with JSON: {{"score": [success, overediting], "reasoning": "..."}}'
)
PQ_PROMPT = (
    "You are an expert judge of image quality. Rate this AI-generated image with two scores from 0 to 10: "
    "first its naturalness (0 = unnatural, wrong sense of distance, shadow or lighting; 10 = natural), second the "
    "absence of artifacts (0 = heavy distortion, watermarks, scratches, blurred faces or unusual body parts; "
    "10 = no artifacts).\n"
    'Answer only with JSON: {{"score": [naturalness, artifacts], "reasoning": "..."}}'
)


def parse_scores(text: str, n: int = 2) -> list[float]:
    """The ``score`` list of a judge's JSON answer (or the first ``n`` numbers in the text), clipped to 0-10."""
    m = re.search(r"\{.*\}", text, flags=re.S)
    if m:
        try:
            vals = json.loads(m.group(0)).get("score")
            if isinstance(vals, (int, float)):
                vals = [vals]
            if isinstance(vals, list) and vals and all(isinstance(v, (int, float)) for v in vals):
                return [min(max(float(v), 0.0), 10.0) for v in vals[:n]]
        except (json.JSONDecodeError, AttributeError):
            pass
    nums = re.findall(r"-?\d+(?:\.\d+)?", text)
    if len(nums) < n:
        raise ValueError(f"judge answer has no {n} scores: {text[:200]!r}")
    return [min(max(float(v), 0.0), 10.0) for v in nums[:n]]


class TransformersVLMJudge:
    """A local transformers image-text-to-text model (e.g. a Qwen2.5-VL folder) as a VIEScore-style judge."""

    def __init__(self, model, processor, weights_info: dict | None = None, max_new_tokens: int = 256):
        self.model = model.eval()
        self.processor = processor
        self.max_new_tokens = max_new_tokens
        self._weights_info = weights_info or {}

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, device: str = "cpu", dtype: str = "auto") -> "TransformersVLMJudge":
        from transformers import AutoModelForImageTextToText, AutoProcessor

        p = require_folder(folder, "GEdit judge model",
                           hint="Expected a local transformers image-text-to-text model folder (e.g. Qwen2.5-VL).")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AutoModelForImageTextToText.from_pretrained(str(p), dtype=dtype, local_files_only=True).to(device)
            processor = AutoProcessor.from_pretrained(str(p), local_files_only=True)
        return cls(model, processor, {"path": str(p), "sha256": hash_folder(p)})

    def weights(self) -> dict:
        return dict(self._weights_info)

    def _ask(self, images: Sequence[Image.Image], prompt: str) -> str:
        import torch

        messages = [{"role": "user", "content": [*({"type": "image"} for _ in images), {"type": "text", "text": prompt}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = self.processor(images=list(images), text=text, return_tensors="pt").to(self.model.device)
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]

    def judge(self, source: Image.Image, output: Image.Image, instruction: str) -> dict[str, list[float]]:
        sc = parse_scores(self._ask([source, output], SC_PROMPT.format(instruction=instruction)))
        pq = parse_scores(self._ask([output], PQ_PROMPT))
        return {"SC": sc, "PQ": pq}


def build_requests(
    path: str | os.PathLike, out_dir: str | os.PathLike, *, language: str = "en", limit: int | None = None,
    subset: bool = False,
) -> RequestList:
    """``gedit/full`` requests from the local GEdit-Bench files (Arrow as published, or parquet), read with
    ``lit_cologen.data.evalsets.load_gedit_bench`` (checked against 606 rows per language; ``subset`` / ``limit``
    as there); input images written to ``out_dir/inputs``. Each request's seed comes from its id
    (``gedit-<language>-<key>``; ``seed_rule`` ``from_request_id``)."""
    from lit_cologen.data.evalsets import load_gedit_bench

    proto = get_protocol("gedit/full")
    run = RunFolder(out_dir)
    records = load_gedit_bench(path, language=language, subset=subset, limit=limit)
    seeds = proto.request_seeds([rec.key for rec in records])  # from_request_id: one seed per key, all distinct
    reqs = []
    for rec, seed in zip(records, seeds):
        rel = f"inputs/{rec.key}-source.png"
        im = rec.source()
        if not run.resolve(rel).is_file():
            save_image_atomic(im, run.resolve(rel))
        reqs.append(GenerationRequest(
            id=rec.key, task="edit", prompt=rec.instruction, seed=int(seed), protocol=proto.name,
            sources=[rel], width=im.width, height=im.height,
            fields={"subset": str(rec.task), "language": language, "intersection": rec.meta["intersection"]},
        ))
    return RequestList(reqs, eval_set=records.count.as_dict())


def score(ctx: ScoreContext) -> ScoreOutput:
    """Judge every edit; G_SC, G_PQ, G_O (0-10) overall and per task type."""
    if not ctx.backbones.available("judge"):
        raise MissingWeightsError(
            "gedit/full needs a judge model: pass --backbone judge=FOLDER (a local transformers image-text-to-text "
            "model) or register a Judge: Backbones.register('judge', judge)"
        )
    judge = ctx.backbones.get("judge")
    subsets = sorted({s for r in ctx.requests for s in subsets_of(r)})
    table = MetricTable(["G_SC", "G_PQ", "G_O"], subsets)
    for batch in ctx.batches(desc="judge gedit"):
        for r in batch:
            s = judge.judge(ctx.open(r, r.sources[0]), ctx.output(r), r.prompt)
            sc, pq = min(s["SC"]), min(s["PQ"])
            member = [subsets_of(r)]
            table.add("G_SC", [r.id], [sc], member)
            table.add("G_PQ", [r.id], [pq], member)
            table.add("G_O", [r.id], [math.sqrt(sc * pq)], member)
    out = table.output()
    task_means = {m: [v[m] for s, v in out.subsets.items() if m in v] for m in ("G_SC", "G_PQ", "G_O")}
    out.extra["task_mean"] = {m: sum(v) / len(v) for m, v in task_means.items() if v}
    out.extra["judge"] = type(judge).__name__
    return out
