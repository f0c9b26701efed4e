"""The evaluation harness: *generate* images into a fixed folder layout, then *score* any folder in that layout.

The two halves are separate (as ControlNet++'s ``eval/`` and DreamBench++ do), so our model and every baseline go
through the same scoring code: a baseline only has to fill ``images/`` for the rows of a manifest.

Folder layout of one run (``RUN``)::

    RUN/
      manifest.jsonl        one JSON row per image to generate (written before generation, identical on all ranks)
      run.json              protocol name, generator description, request count, eval_set (written with the
                            manifest; eval_set: what the requests were drawn from, see RequestList)
      images/<id>.png       the generated images (written atomically: tmp file + rename)
      inputs/...            inputs a suite extracted from a dataset (sources, conditions, labels), if any
      results.json          written by `score` (atomically; carries run.json's eval_set: expected vs found)
      results_per_image.jsonl  per-image metric values written by `score`
      <scorer files>        files a scorer adds beside results.json (ScoreOutput.files; e.g. GEdit's judge_raw.jsonl)

A manifest row is :meth:`GenerationRequest.to_row` plus ``"image": "images/<id>.png"``::

    {"id": "backpack-p00-s0", "protocol": "dreambench/omnigen", "task": "subject",
     "prompt": "a backpack in the jungle", "seed": 0, "sources": ["/.../backpack/00.jpg"],
     "mask": null, "cond_type": null, "width": 512, "height": 512,
     "fields": {"subject": "backpack", "class_noun": "backpack", "subset": "object", ...},
     "image": "images/backpack-p00-s0.png"}

Relative paths in ``sources`` / ``mask`` / ``fields`` are relative to ``RUN``.

Generation is resumable (an image that exists and decodes is skipped), sharded across ranks (``rank`` /
``world_size`` arguments or the torch.distributed env vars ``RANK`` / ``WORLD_SIZE``), batched, seeded per request
(the protocol's ``seed_rule`` fixes each request's seed, recorded in the manifest and, with the rule, in
``results.json``; the harness also seeds the global RNGs with the batch's first seed before each call, so a
generator using the global RNG is reproducible under any sharding / resume), with a progress bar.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from PIL import Image

from lit_cologen.errors import UserError
from lit_cologen.utils.atomic import atomic_write, atomic_write_json
from lit_cologen.utils.dist import env_rank

__all__ = [
    "GenerationRequest",
    "RequestList",
    "Generator",
    "CopySourceGenerator",
    "RunFolder",
    "GenerateReport",
    "ScoreContext",
    "ScoreOutput",
    "generate",
    "score",
    "write_json_atomic",
    "batched",
    "image_is_complete",
    "check_eval_set",
    "eval_set_is_subset",
]

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


# ----------------------------------------------------------------------------------------------------------------------
# requests and generators
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class GenerationRequest:
    """One image to generate.

    Attributes:
        id: unique within a run; the output is ``images/<id>.png`` (letters, digits, ``_ . -``).
        task: ``inpaint`` | ``ground`` | ``control`` | ``subject`` | ``edit`` (CoLoGen's five tasks) or ``t2i``.
        prompt: the caption / instruction given to the generator.
        seed: the sampling seed fixed by the protocol's ``seed_rule`` (``benchmarks.protocols``): DreamBench image
            k of a prompt -> seed k, ControlNet++ group k -> 42 + k, one-image-per-request protocols (editing,
            GEdit, Shapes-5) -> a seed derived from the request id; never one seed for every image.
        protocol: the protocol name the run follows (``dreambench/omnigen``, ...).
        sources: source image paths (subject reference, image to edit, condition map, masked scene, ...).
        mask: optional single-channel mask path (255 = region to regenerate).
        cond_type: for ``control``: ``canny`` | ``depth`` | ``hed`` | ``lineart`` | ``seg``.
        width, height: output size in pixels the protocol asks for.
        fields: protocol data the scorer needs and a generator may use (class noun, subject, target caption,
            ground-truth paths, subset, group index, Shapes-5 scene graph, ...). JSON-serialisable.
    """

    id: str
    task: str
    prompt: str
    seed: int
    protocol: str
    sources: list[str] = field(default_factory=list)
    mask: str | None = None
    cond_type: str | None = None
    width: int = 512
    height: int = 512
    fields: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> "GenerationRequest":
        if not _ID_RE.match(self.id):
            raise ValueError(f"request id {self.id!r}: use letters, digits, '_', '.', '-' (it names a file)")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"request {self.id}: bad size {self.width}x{self.height}")
        return self

    def to_row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "GenerationRequest":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})

    def resolve(self, path: str, root: str | os.PathLike | None) -> Path:
        """A path of this request (source, mask, field) resolved against the run folder ``root``."""
        p = Path(path)
        return p if p.is_absolute() or root is None else Path(root) / p

    def load_sources(self, root: str | os.PathLike | None = None) -> list[Image.Image]:
        """The source images as RGB PIL images (paths relative to the run folder ``root``)."""
        return [Image.open(self.resolve(s, root)).convert("RGB") for s in self.sources]

    def load_mask(self, root: str | os.PathLike | None = None) -> Image.Image | None:
        return None if self.mask is None else Image.open(self.resolve(self.mask, root)).convert("L")


_EVAL_SET_KEYS = {"dataset": str, "split": str, "unit": str, "expected": (int, type(None)), "found": int,
                  "subset": bool}


class RequestList(list):
    """The requests a suite's ``build_*requests*`` returns, with what they were drawn from.

    A plain ``list`` of :class:`GenerationRequest` plus ``eval_set``: ``None`` (unknown) or a dict with keys

    * ``dataset`` (str): the evaluation set, e.g. ``"dreambench"``, ``"emu_edit"``, ``"magicbrush"``;
    * ``split`` (str): its split, e.g. ``"test"``;
    * ``unit`` (str): what is counted, e.g. ``"rows"``, ``"turns"``, ``"prompts"``, ``"subjects"``;
    * ``expected`` (int | None): the published size of the split in ``unit`` (None: no published size);
    * ``found`` (int): how many ``unit`` the loaded set / selection has;
    * ``subset`` (bool): the caller declared the set intentionally smaller than the published split.

    ``generate`` writes it into ``run.json`` and ``score`` copies it into ``results.json``, so a table can mark a
    row scored on a subset. Slicing / copying gives plain lists (the counts would no longer be true).
    """

    def __init__(self, requests: Iterable[GenerationRequest] = (), eval_set: dict[str, Any] | None = None):
        super().__init__(requests)
        self.eval_set = check_eval_set(eval_set)


def check_eval_set(eval_set: dict[str, Any] | None) -> dict[str, Any] | None:
    """Validate an ``eval_set`` dict (see :class:`RequestList`); returns a copy, or None."""
    if eval_set is None:
        return None
    if not isinstance(eval_set, dict):
        raise TypeError(f"eval_set must be a dict or None, not {type(eval_set).__name__}")
    missing = sorted(set(_EVAL_SET_KEYS) - set(eval_set))
    if missing:
        raise ValueError(f"eval_set is missing keys {missing}; give all of {sorted(_EVAL_SET_KEYS)}")
    for k, t in _EVAL_SET_KEYS.items():
        v = eval_set[k]
        if not isinstance(v, t) or (isinstance(v, bool) and t is not bool):  # bool is an int subclass
            raise TypeError(f"eval_set[{k!r}] = {v!r}: expected {getattr(t, '__name__', 'int or None')}")
    return dict(eval_set)


def eval_set_is_subset(eval_set: dict[str, Any] | None) -> bool:
    """True when ``eval_set`` says the requests cover less (or other) than the published split:
    ``subset`` declared, or ``found != expected`` (when an expected size is known). False for None (old runs)."""
    if not eval_set:
        return False
    if eval_set.get("subset"):
        return True
    expected = eval_set.get("expected")
    return expected is not None and eval_set.get("found") != expected


@runtime_checkable
class Generator(Protocol):
    """Anything that turns a batch of requests into images (the CoLoGen pipeline, OmniGen, IP-Adapter, ...).

    ``generate(requests)`` returns one PIL image per request, in order. The generator must honour each request's
    ``seed`` (e.g. ``torch.Generator().manual_seed(request.seed)``); the harness also seeds the global RNGs before
    each call. Source paths are absolute or relative to ``run_root`` (set by the harness before the first call when
    the generator has such an attribute).
    """

    def generate(self, requests: list[GenerationRequest]) -> list[Image.Image]: ...


class CopySourceGenerator:
    """Diagnostic baseline: returns the first source image (resized to the requested size).

    Not a model: it measures the copy-paste ceiling of similarity metrics (DreamBench CLIP-I / DINO of a model
    that pastes its reference; the "do nothing" editing L1 of 0), the pitfall anchors.md warns about.
    """

    run_root: str | None = None

    def generate(self, requests: list[GenerationRequest]) -> list[Image.Image]:
        out = []
        for r in requests:
            if not r.sources:
                raise ValueError(f"request {r.id} has no source image to copy")
            out.append(r.load_sources(self.run_root)[0].resize((r.width, r.height), Image.Resampling.BICUBIC))
        return out


def describe_generator(generator: Any) -> dict[str, Any]:
    """What a results file records about the generator (its ``describe()`` if it has one)."""
    info: dict[str, Any] = {"class": f"{type(generator).__module__}.{type(generator).__qualname__}"}
    if hasattr(generator, "describe"):
        info.update(generator.describe())
    return info


# ----------------------------------------------------------------------------------------------------------------------
# folder layout
# ----------------------------------------------------------------------------------------------------------------------


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Write JSON to ``path`` atomically (``lit_cologen.utils.atomic``: never half-written)."""
    atomic_write_json(path, obj, indent=indent)



def save_image_atomic(image: Image.Image, path: str | os.PathLike) -> None:
    """Save a PNG atomically (a killed process leaves either no file or a complete one)."""
    atomic_write(path, lambda f: image.save(f, format="PNG"))


def image_is_complete(path: str | os.PathLike) -> bool:
    """True if ``path`` exists and decodes fully (guards against files written by other tools, non-atomically)."""
    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0:
        return False
    try:
        with Image.open(p) as im:
            im.load()
        return True
    except Exception:
        return False


class RunFolder:
    """Paths and manifest I/O of one run folder (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    manifest_path = property(lambda self: self.root / "manifest.jsonl")
    run_json_path = property(lambda self: self.root / "run.json")
    images_dir = property(lambda self: self.root / "images")
    inputs_dir = property(lambda self: self.root / "inputs")
    results_path = property(lambda self: self.root / "results.json")
    per_image_path = property(lambda self: self.root / "results_per_image.jsonl")

    def image_path(self, request_id: str) -> Path:
        return self.images_dir / f"{request_id}.png"

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.root / p

    def write_manifest(self, requests: Sequence[GenerationRequest], info: dict[str, Any] | None = None) -> None:
        """Write ``manifest.jsonl`` (and ``run.json``) atomically; ids must be unique.

        ``run.json`` records ``eval_set`` from ``info`` or else from ``requests.eval_set`` (a :class:`RequestList`;
        None for a plain list)."""
        seen: set[str] = set()
        lines = []
        for r in requests:
            r.validate()
            if r.id in seen:
                raise ValueError(f"duplicate request id {r.id!r}")
            seen.add(r.id)
            row = r.to_row()
            row["image"] = f"images/{r.id}.png"
            lines.append(json.dumps(row, sort_keys=True))
        data = ("\n".join(lines) + "\n").encode() if lines else b""
        atomic_write(self.manifest_path, lambda f: f.write(data))
        protocols = sorted({r.protocol for r in requests})
        info = dict(info or {})
        info["eval_set"] = check_eval_set(info.get("eval_set", getattr(requests, "eval_set", None)))
        write_json_atomic(
            self.run_json_path,
            {"protocols": protocols, "num_requests": len(requests), **info},
        )

    def read_manifest(self) -> list[GenerationRequest]:
        if not self.manifest_path.is_file():
            raise FileNotFoundError(f"{self.root}: no manifest.jsonl (is this a run folder written by `generate`?)")
        out = []
        with open(self.manifest_path) as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        out.append(GenerationRequest.from_row(json.loads(line)))
                    except (json.JSONDecodeError, TypeError) as e:
                        raise ValueError(f"{self.manifest_path}:{n}: bad manifest row: {e}") from e
        return out

    def read_run_info(self) -> dict[str, Any]:
        return json.loads(self.run_json_path.read_text()) if self.run_json_path.is_file() else {}

    def load_image(self, request_id: str) -> Image.Image:
        return Image.open(self.image_path(request_id)).convert("RGB")


# ----------------------------------------------------------------------------------------------------------------------
# generate
# ----------------------------------------------------------------------------------------------------------------------


def batched(items: Sequence[Any], batch_size: int) -> Iterator[list[Any]]:
    """Consecutive chunks of at most ``batch_size`` items."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    for i in range(0, len(items), batch_size):
        yield list(items[i : i + batch_size])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) global RNGs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class GenerateReport:
    total: int  # requests in the manifest
    assigned: int  # requests of this rank's shard
    generated: int  # images written by this call
    skipped: int  # already complete (resume)
    rank: int
    world_size: int


class RunFolderMismatch(UserError, ValueError):
    """A run folder that holds the images of other requests or of another generator."""


#: What ``run.json`` records about who made the images; a resume must agree on all of it.
_GENERATOR_KEYS = ("generator", "generator_spec", "generator_args")


def _generator_changes(saved: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: saved != new`` for each ``_GENERATOR_KEYS`` entry that differs (flattened one level for readability)."""
    out = []
    for key in _GENERATOR_KEYS:
        a, b = (json.loads(json.dumps(_clean(d.get(key)), default=str)) for d in (saved, new))  # as run.json holds it
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k}: {a.get(k)!r} != {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            out.append(f"{key}: {a!r} != {b!r}")
    return out[:6]


def _manifest_matches(run: RunFolder, requests: Sequence[GenerationRequest]) -> bool:
    try:
        old = run.read_manifest()
    except FileNotFoundError:
        return True
    return [r.to_row() for r in old] == [r.to_row() for r in requests]


def generate(
    run_dir: str | os.PathLike,
    requests: Sequence[GenerationRequest],
    generator: Generator,
    *,
    batch_size: int = 4,
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    info: dict[str, Any] | None = None,
    limit: int | None = None,
) -> GenerateReport:
    """Write the manifest of ``requests`` into ``run_dir`` and generate this rank's missing images.

    Args:
        run_dir: the run folder (created).
        requests: every request of the run (all ranks pass the same list; each takes ``requests[rank::world]``).
            A :class:`RequestList` (what the suites' builders return) also gives ``eval_set``, recorded in
            ``run.json`` (and by :func:`score` in ``results.json``).
        generator: a :class:`Generator`.
        batch_size: requests per ``generator.generate`` call.
        rank, world_size: shard; default from torch.distributed / ``RANK`` / ``WORLD_SIZE``.
        overwrite: regenerate existing images, and allow replacing a manifest with different requests.
        info: extra data for ``run.json`` (e.g. generator settings).
        limit: generate at most this many images in this call (the rest stay for a later resume).
    """
    run = RunFolder(run_dir)
    eval_set = check_eval_set(getattr(requests, "eval_set", None) or (info or {}).get("eval_set"))
    requests = list(requests)
    rank, world_size = env_rank(rank, world_size)
    if not overwrite and not _manifest_matches(run, requests):
        raise RunFolderMismatch(
            f"{run.manifest_path} exists with different requests; use a new run folder or overwrite=True "
            "(--overwrite) to replace it"
        )
    run_info = {"generator": describe_generator(generator), "created": _now(), **(info or {}), "eval_set": eval_set}
    if not overwrite and run.manifest_path.is_file():
        changed = _generator_changes(run.read_run_info(), run_info)
        if changed:
            raise RunFolderMismatch(
                f"{run.root} was generated by another generator ({'; '.join(changed)}); its images would be reused "
                "as this generator's. Use a new run folder, or --overwrite (overwrite=True) to regenerate every image"
            )
    if not run.manifest_path.is_file() or overwrite:
        run.write_manifest(requests, run_info)  # identical content on every rank; atomic, so races are harmless
    elif eval_set is not None and run.read_run_info().get("eval_set") != eval_set:
        # a resume of the same requests with (newer) eval-set information: record it, keep the rest of run.json
        write_json_atomic(run.run_json_path, {**run.read_run_info(), "eval_set": eval_set})
    run.images_dir.mkdir(parents=True, exist_ok=True)
    if hasattr(generator, "run_root"):
        generator.run_root = str(run.root)

    shard = requests[rank::world_size]
    _remove_stale_tmp(run.images_dir, {r.id for r in shard})
    todo = [r for r in shard if overwrite or not image_is_complete(run.image_path(r.id))]
    skipped = len(shard) - len(todo)
    if limit is not None:
        todo = todo[: max(limit, 0)]

    bar = _progress(len(todo), desc=f"generate [{rank}/{world_size}]", enabled=progress and rank == 0)
    done = 0
    for batch in batched(todo, batch_size):
        seed_everything(batch[0].seed)
        images = generator.generate(batch)
        if len(images) != len(batch):
            raise RuntimeError(f"generator returned {len(images)} images for {len(batch)} requests")
        for req, img in zip(batch, images):
            if not isinstance(img, Image.Image):
                raise TypeError(f"generator returned {type(img).__name__} for {req.id}; expected a PIL image")
            save_image_atomic(img.convert("RGB"), run.image_path(req.id))
            done += 1
        bar.update(len(batch))
    bar.close()
    return GenerateReport(len(requests), len(shard), done, skipped, rank, world_size)


def _remove_stale_tmp(images_dir: Path, ids: set[str]) -> None:
    """Delete the ``.<id>.png.<random>.tmp`` files a killed run left for this rank's ids (other ranks' files, which
    may be in flight, are left alone)."""
    for p in images_dir.glob(".*.png.*.tmp"):
        stem = p.name[1:-len(".tmp")].rsplit(".", 1)[0]  # "<id>.png"
        if stem.endswith(".png") and stem[: -len(".png")] in ids:
            p.unlink(missing_ok=True)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------------------------------------------
# score
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class ScoreContext:
    """What a protocol's scorer gets: the run, its scorable requests, backbones and batching."""

    run: RunFolder
    requests: list[GenerationRequest]
    protocol: Any  # benchmarks.protocols.EvalProtocol
    backbones: Any  # benchmarks.metrics.Backbones
    batch_size: int = 16
    device: str = "cpu"
    progress: bool = True
    options: dict[str, Any] = field(default_factory=dict)

    def batches(self, requests: Sequence[GenerationRequest] | None = None,
                desc: str = "score") -> Iterator[list[GenerationRequest]]:
        reqs = self.requests if requests is None else list(requests)
        bar = _progress(len(reqs), desc=desc, enabled=self.progress)
        for b in batched(reqs, self.batch_size):
            yield b
            bar.update(len(b))
        bar.close()

    def output(self, request: GenerationRequest) -> Image.Image:
        return self.run.load_image(request.id)

    def path(self, request: GenerationRequest, path: str) -> Path:
        return request.resolve(path, self.run.root)

    def open(self, request: GenerationRequest, path: str, mode: str = "RGB") -> Image.Image:
        return Image.open(self.path(request, path)).convert(mode)


@dataclass
class ScoreOutput:
    """A scorer's result: headline means, per-subset means and counts, per-image values, extras, and
    ``unavailable``: {metric: why it could not be computed} (written to results.json, printed by the table).

    ``record``: top-level sections the scorer adds to results.json (e.g. GEdit's ``judge`` / ``judge_counts``; a
    key the harness writes itself is refused). ``files``: {file name: text} written atomically beside results.json
    (plain names, no folders), before it, so a results.json never names a file that is not there yet.
    """

    metrics: dict[str, float]
    subsets: dict[str, dict[str, float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    per_image: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)


#: the files of a run folder a scorer's ``ScoreOutput.files`` may not replace
_RUN_FILES = frozenset({"manifest.jsonl", "run.json", "results.json", "results_per_image.jsonl"})


def _clean(x: Any) -> Any:
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, torch.Tensor):
        return _clean(x.tolist())
    return x


def score(
    run_dir: str | os.PathLike,
    backbones: Any,
    *,
    protocol: str | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    allow_missing: bool = False,
    progress: bool = True,
    options: dict[str, Any] | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Score a run folder with its protocol (or a compatible variant) and write ``results.json`` atomically.

    Args:
        run_dir: a folder in the harness layout (written by :func:`generate` or by any baseline).
        backbones: a :class:`benchmarks.metrics.Backbones` (local weights).
        protocol: protocol name to score under; default: the manifest's. A variant (e.g.
            ``dreambench/omnigen-allrefs``) may score a folder generated under its base protocol.
        allow_missing: score the images present when some are missing (recorded), instead of failing.
        options: protocol-specific scoring options (recorded in the results).

    Returns the results dict (also written to ``run_dir/results.json`` when ``write``).
    """
    from .protocols import get_protocol

    run = RunFolder(run_dir)
    requests = run.read_manifest()
    if not requests:
        raise ValueError(f"{run.manifest_path} is empty")
    generated_under = sorted({r.protocol for r in requests})
    proto = get_protocol(protocol or generated_under[0])
    if len(generated_under) != 1 or not proto.can_score(generated_under[0]):
        raise ValueError(
            f"protocol {proto.name!r} cannot score a run generated under {generated_under} "
            f"(it scores runs of {sorted(proto.scores_runs_of())})"
        )
    missing = [r.id for r in requests if not image_is_complete(run.image_path(r.id))]
    if missing and not allow_missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(requests)} images missing in {run.images_dir} (first: {missing[:3]}); "
            "finish generation (it resumes) or pass allow_missing=True / --allow-missing"
        )
    missing_set = set(missing)
    present = [r for r in requests if r.id not in missing_set]
    ctx = ScoreContext(run, present, proto, backbones, batch_size, device, progress, dict(options or {}))
    out: ScoreOutput = proto.scorer()(ctx)
    run_info = run.read_run_info()

    results = {
        "protocol": proto.name,
        "generated_under": generated_under[0],
        "tables": list(proto.tables),
        "protocol_settings": proto.settings_dict(),
        "options": dict(options or {}),
        "backbones": backbones.used(),
        "seeds": sorted({r.seed for r in present}),
        "image_count": len(present),
        "prompt_count": len({(r.prompt, tuple(r.sources)) for r in present}),
        "missing_count": len(missing),
        "eval_set": run_info.get("eval_set"),  # from run.json: dataset, split, unit, expected, found, subset
        "metrics": out.metrics,
        "metric_directions": {k: proto.direction(k) for k in out.metrics},
        "unavailable": out.unavailable,  # metric -> why it could not be computed
        "subsets": out.subsets,
        "counts": out.counts,
        "extra": out.extra,
        "generator": run_info.get("generator", {}),
        "scored_at": _now(),
    }
    clash = sorted(set(out.record) & set(results))
    if clash:
        raise ValueError(f"scorer of {proto.name} records {clash} in results.json, which the harness writes itself")
    results.update(out.record)
    bad = sorted(n for n in out.files if n in _RUN_FILES or Path(n).name != n or n.startswith("."))
    if bad:
        raise ValueError(f"scorer of {proto.name} names files {bad}: plain new file names beside results.json only")
    results = _clean(results)
    if write:
        for name, text in out.files.items():
            atomic_write(run.root / name, lambda f, text=text: f.write(text.encode()))
        write_json_atomic(run.results_path, results)
        lines = "".join(json.dumps(_clean(row), sort_keys=True) + "\n" for row in out.per_image)
        atomic_write(run.per_image_path, lambda f: f.write(lines.encode()))
    return results


def iter_requests_by(requests: Iterable[GenerationRequest],
                     key: Callable[[GenerationRequest], Any]) -> dict[Any, list[GenerationRequest]]:
    """Group requests by ``key`` (insertion-ordered)."""
    out: dict[Any, list[GenerationRequest]] = {}
    for r in requests:
        out.setdefault(key(r), []).append(r)
    return out
