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

**Audit.** Judged scores are reported to drift by about +-0.1 between runs on the same images, and a judge may
refuse (content filters), so every judged run records, with ``results.json``:

* ``results.json["judge"]``: the judge's class, ``model_id`` and ``revision`` (``judge_identity``: the commit of a
  Hugging Face cache snapshot or of a ``snapshot_download(local_dir=...)`` folder; otherwise a content hash of the
  folder's weights and config files, or ``"unknown"`` for a judge object that does not say), where each came from,
  the sha256 of the two prompts, and the decoding settings.
* ``judge_raw.jsonl`` (written atomically): per image, the raw text of each judge answer (SC, PQ), the scores read
  from it, and its status: ``scored``, ``parse_failure`` (no scores in the text) or ``refusal`` (no scores, and
  the text declines: ``REFUSAL_PATTERN``, or the judge raised ``JudgeRefusal``, e.g. an API content filter).
* ``results.json["judge_counts"]``: images, judged, excluded, parse_failures, refusals (images; an image with a
  refused answer counts as a refusal) and the same per answer (SC / PQ).

An image whose SC or PQ answer gave no scores is **excluded from every mean** (G_SC, G_PQ and G_O stay over the
same images) and counted; it is never scored as 0. Deviation from the reference: GEdit-Bench's VIEScore re-asks
the judge once when an answer does not parse, and if the second answer has no JSON / score list either it
*guesses* a random integer 0-10 as the score (``mllm_output_to_dict(give_up_parsing=True)``); some evaluation
forks score a judge error (a content filter) as 0. Here nothing is re-asked (the local judge decodes greedily: a
second ask returns the same text) and nothing is guessed: failures are counted, kept in ``judge_raw.jsonl``, and
left out of the means.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence, runtime_checkable

from PIL import Image

from ..harness import GenerationRequest, RequestList, RunFolder, ScoreContext, ScoreOutput, save_image_atomic
from ..metrics.weights import MissingWeightsError, hash_folder, require_folder
from ..protocols import get_protocol
from .common import MetricTable, subsets_of

__all__ = ["Judge", "JudgeAnswer", "JudgeRefusal", "TransformersVLMJudge", "build_requests", "judge_identity",
           "parse_scores", "read_answer", "score", "PQ_PROMPT", "REFUSAL_PATTERN", "SC_PROMPT"]

#: written beside results.json: one JSON row per judged image (raw answers, scores, status)
JUDGE_RAW_FILE = "judge_raw.jsonl"


@runtime_checkable
class Judge(Protocol):
    """``judge(source, output, instruction)`` -> ``{"SC": answer, "PQ": answer}`` for one edit.

    Each answer is the judge's raw text (read by the scorer with ``read_answer``: recorded, parsed, failures and
    refusals counted) or, for a judge that reads its own answers, a list of scores 0-10 (recorded with no raw
    text). A judge that is refused an answer (an API content filter) raises ``JudgeRefusal``.
    """

    def judge(self, source: Image.Image, output: Image.Image, instruction: str) -> dict[str, str | list[float]]: ...


class JudgeRefusal(Exception):
    """Raised by a judge that got no answer because the judging service declined (e.g. a content filter); its
    message is recorded as the raw answer, and the image counts as a refusal."""


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


#: a reply that declines to judge (matched only when the reply has no JSON ``score``): model refusals and the
#: wording of content filters
REFUSAL_PATTERN = re.compile(
    r"\b(I'?\s?a?m sorry|I apologi[sz]e|I (?:can ?not|can't|cannot|am unable to|am not able to|won't|will not)\b"
    r"|I'm (?:unable|not able) to|unable to (?:assist|help|evaluate|provide|comply)|can't (?:assist|help) with"
    r"|content (?:policy|filter|management policy)|safety (?:system|policy|guidelines)|violat\w* (?:our|the) polic)",
    re.IGNORECASE,
)

_JSON_OBJECT = re.compile(r"\{.*\}", flags=re.S)


def _json_scores(text: str, n: int) -> Optional[list[float]]:
    """The ``score`` list of the JSON object in ``text`` (clipped to 0-10, at most ``n``), or None."""
    m = _JSON_OBJECT.search(text)
    if not m:
        return None
    try:
        vals = json.loads(m.group(0)).get("score")
    except (json.JSONDecodeError, AttributeError):
        return None
    if isinstance(vals, (int, float)) and not isinstance(vals, bool):
        vals = [vals]
    if isinstance(vals, list) and vals and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
        return [min(max(float(v), 0.0), 10.0) for v in vals[:n]]
    return None


def _number_scores(text: str, n: int) -> Optional[list[float]]:
    nums = re.findall(r"-?\d+(?:\.\d+)?", text)
    return [min(max(float(v), 0.0), 10.0) for v in nums[:n]] if len(nums) >= n else None


def parse_scores(text: str, n: int = 2) -> list[float]:
    """The ``score`` list of a judge's JSON answer (or the first ``n`` numbers in the text), clipped to 0-10;
    ValueError when there is neither (``read_answer`` also tells refusals apart)."""
    scores = _json_scores(text, n)
    if scores is None:
        scores = _number_scores(text, n)
    if scores is None:
        raise ValueError(f"judge answer has no {n} scores: {text[:200]!r}")
    return scores


@dataclass
class JudgeAnswer:
    """One judge answer as read: ``raw`` (the text; None when the judge gave scores, not text), ``scores`` (None
    unless ``status`` is ``scored``) and ``status``: scored | parse_failure | refusal."""

    raw: Optional[str]
    scores: Optional[list[float]]
    status: str

    def as_row(self) -> dict[str, Any]:
        return {"raw": self.raw, "scores": self.scores, "status": self.status}


def read_answer(answer: str | Sequence[float], n: int = 2) -> JudgeAnswer:
    """Read one answer of a :class:`Judge`: a JSON ``score`` list is used as is; a text without one that declines
    (``REFUSAL_PATTERN``) is a refusal, checked before the bare-numbers fallback, so that "I can't rate image 2 of 2"
    gives no scores; then the first ``n`` numbers; otherwise a parse failure. A list of numbers is taken as the
    judge's own scores (clipped to 0-10)."""
    if not isinstance(answer, str):
        vals = list(answer)
        if vals and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            return JudgeAnswer(None, [min(max(float(v), 0.0), 10.0) for v in vals], "scored")
        return JudgeAnswer(json.dumps(vals, default=str), None, "parse_failure")
    scores = _json_scores(answer, n)
    if scores is not None:
        return JudgeAnswer(answer, scores, "scored")
    if REFUSAL_PATTERN.search(answer):
        return JudgeAnswer(answer, None, "refusal")
    scores = _number_scores(answer, n)
    return JudgeAnswer(answer, scores, "scored") if scores is not None else JudgeAnswer(answer, None, "parse_failure")


_COMMIT = re.compile(r"[0-9a-f]{40}")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _hub_id_in_config(folder: Path) -> Optional[str]:
    """``_name_or_path`` of the folder's config.json when it reads as a Hub id (``org/name``, not a local path)."""
    try:
        name = json.loads((folder / "config.json").read_text()).get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(name, str) and _HUB_ID.fullmatch(name) and not Path(name).exists():
        return name
    return None


def _local_dir_commit(folder: Path) -> Optional[str]:
    """The commit ``huggingface_hub.snapshot_download(local_dir=...)`` recorded for the folder's config.json
    (``.cache/huggingface/download/config.json.metadata``: commit, etag, time), unless the file changed since."""
    meta = folder / ".cache" / "huggingface" / "download" / "config.json.metadata"
    try:
        commit, _etag, stamp = meta.read_text().splitlines()[:3]
        if (folder / "config.json").stat().st_mtime - 1 > float(stamp):
            return None  # edited after the download: the commit no longer describes it
    except (OSError, ValueError):
        return None
    return commit.strip() if _COMMIT.fullmatch(commit.strip()) else None


def judge_identity(folder: str | os.PathLike, file_hashes: Optional[dict[str, str]] = None) -> dict[str, str]:
    """``model_id``, ``revision`` and where each came from, for a local judge model folder.

    * a Hugging Face cache snapshot (``.../models--ORG--NAME/snapshots/COMMIT``): ``ORG/NAME`` and ``COMMIT``;
    * a ``snapshot_download(local_dir=...)`` folder: the commit in its download metadata;
    * otherwise ``content-sha256:...``, a hash over the sha256 of every weights / config file (``file_hashes``, as
      ``hash_folder`` gives them), or ``"unknown"`` when there are none.

    ``model_id`` outside the cache: the config's ``_name_or_path`` when it is a Hub id, else ``"unknown"``.
    """
    p = Path(folder).resolve()
    parts = p.parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--") and _COMMIT.fullmatch(parts[-1]):
        return {"model_id": parts[-3][len("models--"):].replace("--", "/"), "model_id_source": "hf_cache_snapshot",
                "revision": parts[-1], "revision_source": "hf_cache_snapshot"}
    hub_id = _hub_id_in_config(p)
    ident = {"model_id": hub_id or "unknown", "model_id_source": "config_name_or_path" if hub_id else "unknown"}
    commit = _local_dir_commit(p)
    if commit is not None:
        return {**ident, "revision": commit, "revision_source": "hf_local_dir_metadata"}
    if file_hashes:
        digest = hashlib.sha256(json.dumps(dict(sorted(file_hashes.items()))).encode()).hexdigest()
        return {**ident, "revision": f"content-sha256:{digest}", "revision_source": "content_hash"}
    return {**ident, "revision": "unknown", "revision_source": "unknown"}


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
        hashes = hash_folder(p)
        return cls(model, processor, {"path": str(p), "sha256": hashes, **judge_identity(p, hashes)})

    def weights(self) -> dict:
        """The folder, its files' sha256, ``model_id`` / ``revision`` (``judge_identity``) and the decoding."""
        return {**self._weights_info, "decoding": {"do_sample": False, "max_new_tokens": self.max_new_tokens}}

    def _ask(self, images: Sequence[Image.Image], prompt: str) -> str:
        import torch

        messages = [{"role": "user", "content": [*({"type": "image"} for _ in images), {"type": "text", "text": prompt}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = self.processor(images=list(images), text=text, return_tensors="pt").to(self.model.device)
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]

    def judge(self, source: Image.Image, output: Image.Image, instruction: str) -> dict[str, str]:
        """The raw answers (the scorer reads them: ``read_answer``)."""
        return {"SC": self._ask([source, output], SC_PROMPT.format(instruction=instruction)),
                "PQ": self._ask([output], PQ_PROMPT)}


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


def _judge_record(judge: Any, used: dict[str, Any]) -> dict[str, Any]:
    """results.json's ``judge``: what judged (class, model id, revision and their sources, path), with which
    prompts and decoding. ``used``: the judge's entry in ``Backbones.used()`` (its ``weights()`` or registered info)."""
    info = dict(used)

    def pick(key: str) -> tuple[str, str]:
        if info.get(key):
            return str(info[key]), str(info.get(f"{key}_source", "registered_info"))
        if getattr(judge, key, None):
            return str(getattr(judge, key)), "judge_attribute"
        return "unknown", "unknown"

    (model_id, model_id_source), (revision, revision_source) = pick("model_id"), pick("revision")
    prompts = hashlib.sha256((SC_PROMPT + "\n" + PQ_PROMPT).encode()).hexdigest()
    return {
        "class": type(judge).__name__,
        "model_id": model_id, "model_id_source": model_id_source,
        "revision": revision, "revision_source": revision_source,
        "path": info.get("path"),
        "decoding": info.get("decoding"),
        "prompts_sha256": prompts if isinstance(judge, TransformersVLMJudge) else None,
        "raw_outputs": JUDGE_RAW_FILE,
    }


def _image_status(answers: dict[str, JudgeAnswer]) -> str:
    statuses = {a.status for a in answers.values()}
    return "refusal" if "refusal" in statuses else "parse_failure" if "parse_failure" in statuses else "scored"


def score(ctx: ScoreContext) -> ScoreOutput:
    """Judge every edit; G_SC, G_PQ, G_O (0-10) overall and per task type, over the images whose two answers gave
    scores; the rest are counted (``judge_counts``) and their raw answers kept (``judge_raw.jsonl``)."""
    if not ctx.backbones.available("judge"):
        raise MissingWeightsError(
            "gedit/full needs a judge model: pass --backbone judge=FOLDER (a local transformers image-text-to-text "
            "model) or register a Judge: Backbones.register('judge', judge)"
        )
    judge = ctx.backbones.get("judge")
    subsets = sorted({s for r in ctx.requests for s in subsets_of(r)})
    table = MetricTable(["G_SC", "G_PQ", "G_O"], subsets)
    rows: list[dict[str, Any]] = []
    images: Counter = Counter()
    per_answer: dict[str, Counter] = {"SC": Counter(), "PQ": Counter()}
    for batch in ctx.batches(desc="judge gedit"):
        for r in batch:
            try:
                given = judge.judge(ctx.open(r, r.sources[0]), ctx.output(r), r.prompt)
                answers = {k: read_answer(given[k]) for k in ("SC", "PQ")}
            except JudgeRefusal as refusal:
                answers = {k: JudgeAnswer(str(refusal), None, "refusal") for k in ("SC", "PQ")}
            status = _image_status(answers)
            images[status] += 1
            for k, a in answers.items():
                per_answer[k][a.status] += 1
            rows.append({"id": r.id, "subsets": subsets_of(r), "instruction": r.prompt, "status": status,
                         **{k: a.as_row() for k, a in answers.items()}})
            if status != "scored":  # excluded from every mean, never scored as 0
                table.per_key.setdefault(r.id, {"id": r.id})["judge_status"] = status
                continue
            sc, pq = min(answers["SC"].scores), min(answers["PQ"].scores)
            member = [subsets_of(r)]
            table.add("G_SC", [r.id], [sc], member)
            table.add("G_PQ", [r.id], [pq], member)
            table.add("G_O", [r.id], [math.sqrt(sc * pq)], member)
            table.per_key[r.id]["judge_status"] = "scored"
    excluded = images["parse_failure"] + images["refusal"]
    reason = (f"no image was judged: {images['parse_failure']} parse failure(s), {images['refusal']} refusal(s) "
              f"(see {JUDGE_RAW_FILE})")
    out = table.output(unavailable={m: reason for m in ("G_SC", "G_PQ", "G_O")})
    task_means = {m: [v[m] for s, v in out.subsets.items() if m in v] for m in ("G_SC", "G_PQ", "G_O")}
    out.extra["task_mean"] = {m: sum(v) / len(v) for m, v in task_means.items() if v}
    out.record["judge"] = _judge_record(judge, ctx.backbones.used().get("judge", {}))
    out.record["judge_counts"] = {
        "images": len(rows), "judged": images["scored"], "excluded": excluded,
        "parse_failures": images["parse_failure"], "refusals": images["refusal"],
        "answers": {k: {s: c[s] for s in ("scored", "parse_failure", "refusal")} for k, c in per_answer.items()},
        "policy": "an image whose SC or PQ answer gave no scores is excluded from G_SC, G_PQ and G_O and counted "
                  "(never scored 0, never re-asked or guessed: the GEdit-Bench reference re-asks once, then guesses "
                  "a random 0-10 score)",
    }
    out.files[JUDGE_RAW_FILE] = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
    return out
