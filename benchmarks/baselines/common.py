"""What every baseline generator shares: local weights-folder checks and fingerprints, device / dtype, per-request
CPU generators, grouping of a harness batch into pipeline calls, and the :class:`DiffusersBaseline` base."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping, Sequence

import torch
from PIL import Image

from lit_cologen.models.weights import missing_in
from lit_cologen.utils.dtypes import dtype_from_name

from ..harness import GenerationRequest
from ..metrics.weights import MissingWeightsError, sha256_file

__all__ = ["BaselineWeightsError", "WeightsMismatchError", "check_model_folder", "read_json", "weights_fingerprint",
           "expand_path", "resolve_device", "request_generators", "group_consecutive", "DiffusersBaseline",
           "row_label"]

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


class BaselineWeightsError(MissingWeightsError):
    """A baseline's local weights folder / file is missing or incomplete; the message names it and what is missing."""


class WeightsMismatchError(ValueError):
    """A weights folder exists but is not what the baseline needs (another model, incompatible adapter shapes)."""


# ----------------------------------------------------------------------------------------------------------- folders


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def expand_path(path: str | os.PathLike | None, what: str) -> Path:
    """``~`` and ``$VAR`` / ``${VAR}`` expanded; an unset variable or an empty value is an error naming ``what``."""
    if path is None or str(path).strip() == "":
        raise BaselineWeightsError(f"{what}: no weights folder configured (pass weights=DIR)")
    text = os.path.expanduser(os.path.expandvars(str(path)))
    if re.search(r"\$\{?[A-Za-z_]", text):
        raise BaselineWeightsError(
            f"{what}: {path!r} names an environment variable that is not set; set it or pass the folder directly"
        )
    return Path(text)


def check_model_folder(
    path: str | os.PathLike | None,
    what: str,
    layout: Mapping[str, Sequence[str]],
    *,
    pipeline_class: str | Sequence[str] | None = None,
    hint: str = "",
) -> Path:
    """Check a diffusers-layout folder before loading anything; returns it as a Path.

    Args:
        path: the local folder (``~`` / ``$VAR`` expanded).
        what: what the folder is for (named in errors), e.g. ``"OmniGen weights"``.
        layout: subfolder (``""`` = the folder itself) -> files it must hold (``"a|b"``: one of them; globs allowed).
        pipeline_class: expected ``_class_name`` of ``model_index.json`` (one or several); another class is a
            :class:`WeightsMismatchError`.
        hint: where such a folder comes from (appended to errors).

    Raises:
        BaselineWeightsError: the folder does not exist, or lacks subfolders / files (all listed in one message).
        WeightsMismatchError: ``model_index.json`` names another pipeline class.
    """
    root = expand_path(path, what)
    tail = f" {hint}".rstrip() if hint else ""
    if not root.is_dir():
        kind = "is a file, expected a folder" if root.exists() else "does not exist"
        raise BaselineWeightsError(f"{what}: weights folder {root} {kind}.{tail}")
    if pipeline_class is not None and (root / "model_index.json").is_file():
        expected = [pipeline_class] if isinstance(pipeline_class, str) else list(pipeline_class)
        found = read_json(root / "model_index.json").get("_class_name")
        if found not in expected:
            raise WeightsMismatchError(
                f"{what}: {root} holds a {found} (model_index.json), expected {' or '.join(expected)}.{tail}"
            )
    problems = []
    for sub, required in layout.items():
        folder = root / sub if sub else root
        if sub and not folder.is_dir():
            problems.append(f"missing subfolder '{sub}/'")
            continue
        missing = missing_in(folder, required)
        if missing:
            where = f"subfolder '{sub}/'" if sub else "the folder"
            problems.append(f"{where} lacks {', '.join(missing)}")
    if problems:
        raise BaselineWeightsError(f"{what}: weights folder {root} is incomplete: " + "; ".join(problems) + f".{tail}")
    return root


def weights_fingerprint(path: str | os.PathLike, *, hash_weights: bool = False) -> dict[str, Any]:
    """What a run records about a weights folder or file.

    Always: the path, and for every config / weights file (recursively) its size; configs (``*.json``) are hashed
    (cheap). ``hash_weights``: also sha256 of every weights file (minutes for a 30 GB folder; cached per process).
    """
    p = Path(path)
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    out: dict[str, Any] = {"path": str(p.resolve()), "files": {}}
    for f in files:
        rel = f.name if p.is_file() else f.relative_to(p).as_posix()
        if f.suffix == ".json":
            out["files"][rel] = {"size": f.stat().st_size, "sha256": sha256_file(f)}
        elif f.suffix in _WEIGHT_SUFFIXES:
            entry: dict[str, Any] = {"size": f.stat().st_size}
            if hash_weights:
                entry["sha256"] = sha256_file(f)
            out["files"][rel] = entry
    return out


# ----------------------------------------------------------------------------------------------------------- devices


def resolve_device(device: str | None) -> str:
    """``None`` / ``"auto"`` -> ``cuda`` when available, else ``cpu``."""
    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def request_generators(requests: Sequence[GenerationRequest]) -> list[torch.Generator]:
    """One CPU ``torch.Generator`` per request, seeded with ``request.seed``.

    Latent noise drawn from CPU generators (diffusers' ``randn_tensor`` draws on the generator's device and moves
    it) is the same on every device and for any grouping of requests into pipeline calls.
    """
    return [torch.Generator(device="cpu").manual_seed(int(r.seed)) for r in requests]


def group_consecutive(items: Sequence[Any], key: Callable[[Any], Hashable], max_size: int | None = None) -> list[list[Any]]:
    """Runs of consecutive items with equal ``key`` (at most ``max_size`` each), in order."""
    groups: list[list[Any]] = []
    last: Any = object()
    for item in items:
        k = key(item)
        if groups and k == last and (max_size is None or len(groups[-1]) < max_size):
            groups[-1].append(item)
        else:
            groups.append([item])
        last = k
    return groups


# ----------------------------------------------------------------------------------------------------------- base


class DiffusersBaseline:
    """Base of the baseline generators: a diffusers pipeline loaded lazily from checked local folders.

    Subclasses set ``name`` and implement :meth:`check` (folder checks, cheap, run in ``__init__``),
    :meth:`load` (returns the pipeline), :meth:`group_key` (requests with equal keys share one pipeline call) and
    :meth:`generate_group` (one pipeline call -> images). ``settings()`` returns what ``describe()`` records.

    Grouping: the harness hands over a batch; consecutive requests with the same key (same reference image and size)
    become one pipeline call with one CPU generator per request, so each image depends on its own seed only. Before
    each call the global torch RNG is seeded with the group's first seed (pipelines that draw from the global RNG,
    e.g. VAE posterior sampling of input images, stay reproducible for a given grouping).
    """

    name = "baseline"
    run_root: str | None = None

    def __init__(self, *, device: str | None = None, dtype: str | torch.dtype | None = None, max_group: int | None = None,
                 resize_to_request: bool = True, offload: bool = False, progress: bool = False,
                 hash_weights: bool = False):
        self.device = resolve_device(device)
        self.dtype = dtype_from_name(dtype, self.device)  # None / "auto": bfloat16 on CUDA, float32 elsewhere
        self.max_group = max_group
        self.resize_to_request = resize_to_request
        self.offload = offload
        self.progress = progress
        self.hash_weights = hash_weights
        self._pipe = None
        self.check()

    # -- subclass hooks
    def check(self) -> None:
        """Validate the weights folders (raise BaselineWeightsError / WeightsMismatchError)."""

    def load(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def group_key(self, request: GenerationRequest) -> Hashable:
        return (tuple(request.sources), request.width, request.height)

    def generate_group(self, requests: list[GenerationRequest]) -> list[Image.Image]:  # pragma: no cover - abstract
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        return {}

    def weights(self) -> dict[str, str]:
        """Weights folders / files used: role -> path (fingerprinted in ``describe()``)."""
        return {}

    # -- shared
    @property
    def pipe(self):
        """The pipeline (loaded on first use, placed on ``device`` or with model CPU offload)."""
        if self._pipe is None:
            pipe = self.load()
            if hasattr(pipe, "set_progress_bar_config"):
                pipe.set_progress_bar_config(disable=not self.progress)
            if self.offload and self.device.startswith("cuda"):
                pipe.enable_model_cpu_offload()
            else:
                pipe.to(self.device)
            self._pipe = pipe
        return self._pipe

    def describe(self) -> dict[str, Any]:
        import diffusers

        return {
            "baseline": self.name,
            "settings": self.settings(),
            "device": self.device,
            "dtype": str(self.dtype).replace("torch.", ""),
            "max_group": self.max_group,
            "resize_to_request": self.resize_to_request,
            "diffusers": diffusers.__version__,
            "weights": {k: weights_fingerprint(v, hash_weights=self.hash_weights) for k, v in self.weights().items()},
        }

    def generate(self, requests: list[GenerationRequest]) -> list[Image.Image]:
        out: list[Image.Image] = []
        for group in group_consecutive(requests, self.group_key, self.max_group):
            torch.manual_seed(int(group[0].seed))
            images = self.generate_group(group)
            if len(images) != len(group):
                raise RuntimeError(f"{self.name}: pipeline returned {len(images)} images for {len(group)} requests")
            for req, img in zip(group, images):
                img = img.convert("RGB")
                if self.resize_to_request and img.size != (req.width, req.height):
                    img = img.resize((req.width, req.height), Image.Resampling.BICUBIC)
                out.append(img)
        return out

    def sources(self, request: GenerationRequest) -> list[Image.Image]:
        """The request's source images (paths relative to the run folder the harness set)."""
        return request.load_sources(self.run_root)


def row_label(method: str, protocol: str) -> str:
    """Label of a re-run baseline's row in ``cologen bench table``: ``"OmniGen (rerun, dreambench/omnigen)"``.

    (``tables.render`` marks every measured row "(ours)": ours = measured by this suite.)
    """
    return f"{method} (rerun, {protocol})"
