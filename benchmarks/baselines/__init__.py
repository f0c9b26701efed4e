"""Baselines re-run under our protocols: OmniGen (diffusers ``OmniGenPipeline``) and IP-Adapter (FLUX / SDXL).

Each baseline is a :class:`benchmarks.harness.Generator`, so it goes through the same ``generate`` (resumable,
seeded, sharded) and ``score`` code as CoLoGen, and ``cologen bench table`` puts its measured rows beside ours and
the paper's. Weights load from local folders only (``HF_HUB_OFFLINE``); a missing or mismatched folder raises an
error naming the folder and what is missing before anything heavy is loaded.

* :mod:`benchmarks.baselines.omnigen`: ``make`` / :class:`~benchmarks.baselines.omnigen.OmniGenBaseline`
  (editing, control, DreamBench) with OmniGen's own prompt conventions.
* :mod:`benchmarks.baselines.ip_adapter`: ``make_flux`` / ``make_sdxl`` (DreamBench; Table 7's FLUX IP-Adapter).

Configs (``experiments/baselines/*.yaml``) fix the weights folder, scales, steps and the protocol's seeds; run one
with ``python -m benchmarks.baselines.omnigen CONFIG --out RUN`` (or ``...ip_adapter``, same runner), which calls
``cologen bench generate`` with the config's suite options and ``--generator-arg config=CONFIG``. The same
generator also works from the plain CLI::

    cologen bench generate dreambench --out runs/omnigen-db --generator benchmarks.baselines.omnigen:make \\
        --generator-arg config=experiments/baselines/omnigen_dreambench.yaml --generator-arg weights=DIR

Shared pieces here: folder checks (:func:`check_model_folder`, :class:`BaselineWeightsError`,
:class:`WeightsMismatchError`), the common generator base (:class:`DiffusersBaseline`: device / dtype, lazy
loading, per-request CPU generators, grouping of a harness batch into pipeline calls, output resizing,
``describe()`` for ``run.json``), configs (:func:`load_config`, :func:`generator_kwargs`, :func:`run_config`) and
:func:`row_label` for table rows.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping, Sequence

import torch
from PIL import Image

from ..harness import GenerationRequest
from lit_cologen.models.components import missing_in

from ..metrics.weights import MissingWeightsError, sha256_file

__all__ = [
    "BaselineWeightsError",
    "WeightsMismatchError",
    "check_model_folder",
    "read_json",
    "weights_fingerprint",
    "expand_path",
    "resolve_device",
    "resolve_dtype",
    "request_generators",
    "group_consecutive",
    "DiffusersBaseline",
    "load_config",
    "generator_kwargs",
    "config_argv",
    "missing_environment",
    "run_config",
    "row_label",
    "import_factory",
    "main",
]

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


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """``None`` / ``"auto"`` -> bfloat16 on CUDA, float32 elsewhere; names as in ``_DTYPES``."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "", "auto"):
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if str(dtype) not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[str(dtype)]


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
        self.dtype = resolve_dtype(dtype, self.device)
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


# ----------------------------------------------------------------------------------------------------------- configs


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """A baseline config (``experiments/baselines/*.yaml``): ``suite``, ``protocol``, ``seeds``, ``generate``
    (options of ``cologen bench generate``), ``runs`` (optional: one sub-run per entry), ``generator`` (``factory`` +
    its keyword arguments), ``label``, ``table``."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"baseline config {p} does not exist")
    cfg = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    for key in ("suite", "generator"):
        if key not in cfg:
            raise ValueError(f"{p}: baseline config lacks '{key}'")
    if "factory" not in cfg["generator"]:
        raise ValueError(f"{p}: generator.factory (package.module:function) is required")
    cfg["_path"] = str(p.resolve())
    return cfg


def generator_kwargs(config: str | os.PathLike | Mapping[str, Any] | None, overrides: Mapping[str, Any],
                     factory: str | None = None) -> dict[str, Any]:
    """The factory's keyword arguments: the config's ``generator`` section (without ``factory``), then ``overrides``.

    ``factory``: when given, the config's ``generator.factory`` must name it (a FLUX config passed to the SDXL
    factory is an error).
    """
    if config is None:
        return dict(overrides)
    cfg = load_config(config) if not isinstance(config, Mapping) else dict(config)
    gen = dict(cfg["generator"])
    named = gen.pop("factory", None)
    if factory is not None and named is not None and named.split(":")[-1] != factory.split(":")[-1]:
        raise ValueError(f"config {cfg.get('_path', '')} is for {named}, not {factory}")
    gen.update(overrides)
    return gen


def _check_seeds(cfg: Mapping[str, Any]) -> None:
    from ..protocols import get_protocol

    if "seeds" not in cfg or "protocol" not in cfg:
        return
    proto = get_protocol(cfg["protocol"])
    n = cfg.get("generate", {}).get("images_per_prompt") or proto.images_per_prompt
    if list(cfg["seeds"]) != list(proto.seeds[:n]):
        raise ValueError(f"{cfg.get('_path')}: seeds {cfg['seeds']} differ from protocol {proto.name}'s "
                         f"{list(proto.seeds[:n])} (the protocol fixes the seeds)")


#: renamed environment variables (old name -> the one the configs use); the old names are not read, only named in
#: the missing-variable error when they are still set
RENAMED_ENV: dict[str, str] = {"FLUX_WEIGHTS": "FLUX_DEV_PATH", "MAGICBRUSH_DIR": "MAGICBRUSH_DATA"}


def _unset_vars(value: Any) -> list[str]:
    """The ``$VAR`` / ``${VAR}`` names in ``value`` that the environment does not define."""
    text = os.path.expandvars(os.path.expanduser(str(value)))
    return re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text)


def _flag_given(flag: str, argv: Sequence[str]) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def missing_environment(config: str | os.PathLike | Mapping[str, Any], *, weights: str | None = None,
                        generator_args: Mapping[str, Any] | None = None, extra: Sequence[str] = (),
                        generator: bool = True) -> list[dict[str, Any]]:
    """Every environment variable a baseline config names that is not set, each once:
    ``{"variable": "OMNIGEN_WEIGHTS", "where": ["generator.weights"], "flag": "--weights DIR"}``.

    A setting replaced by ``weights`` / ``generator_args`` (``--weights`` / ``--set``) or by a flag in ``extra``
    (the ``cologen bench generate`` arguments after ``--``) does not need its variable. ``generator``: include the
    ``generator`` section (read by the generator when it loads; the printed commands only need the suite options).
    """
    cfg = load_config(config) if not isinstance(config, Mapping) else config
    overrides = dict(generator_args or {})
    if weights is not None:
        overrides["weights"] = weights
    found: dict[str, dict[str, Any]] = {}

    def note(var: str, where: str, flag: str) -> None:
        entry = found.setdefault(var, {"variable": var, "where": [], "flag": flag})
        if where not in entry["where"]:
            entry["where"].append(where)

    if generator:
        for k, v in (cfg.get("generator") or {}).items():
            if k == "factory" or k in overrides or not isinstance(v, str):
                continue
            for var in _unset_vars(v):
                note(var, f"generator.{k}", "--weights DIR" if k == "weights" else f"--set {k}=PATH")
    runs = cfg.get("runs") or [{}]
    every = " (for every run)" if len(runs) > 1 else ""
    for run in runs:
        opts = {**(cfg.get("generate") or {}), **{k: v for k, v in run.items() if k != "name"}}
        for k, v in opts.items():
            flag = "--" + k.replace("_", "-")
            if isinstance(v, bool) or v is None or _flag_given(flag, extra):
                continue
            where = f"runs[{run['name']}].{k}" if k in run and run.get("name") else f"generate.{k}"
            for var in _unset_vars(v):
                note(var, where, f"-- {flag} PATH{every}")
    return list(found.values())


def _missing_environment_error(path: str, missing: list[dict[str, Any]]) -> ValueError:
    lines = [f"{path} needs {len(missing)} environment variable(s) that are not set; set each, or pass the flag "
             f"named after it instead:"]
    for m in missing:
        line = f"  ${m['variable']} ({', '.join(m['where'])}): or {m['flag']}"
        old = [o for o, new in RENAMED_ENV.items() if new == m["variable"] and os.environ.get(o)]
        if old:
            line += f" (${old[0]} is set: that is the old name, no longer read; rename it to ${m['variable']})"
        lines.append(line)
    return ValueError("\n".join(lines))


def config_argv(config: str | os.PathLike, out: str | os.PathLike, *, weights: str | None = None,
                generator_args: Mapping[str, Any] | None = None, extra: Sequence[str] = ()) -> list[list[str]]:
    """The ``cologen bench generate`` argument lists a config stands for (one per entry of ``runs``, else one).

    With ``runs``, sub-run ``name`` goes to ``OUT/<name>``. ``weights`` / ``generator_args`` override the config's
    generator settings (as ``--generator-arg``); ``extra`` is appended (e.g. ``["--limit", "8"]``).
    """
    cfg = load_config(config)
    from ..cli import SUITES

    if cfg["suite"] not in SUITES:
        raise ValueError(f"{cfg['_path']}: unknown suite {cfg['suite']!r}; known: {sorted(SUITES)}")
    if cfg.get("protocol") and SUITES[cfg["suite"]] != cfg["protocol"]:
        raise ValueError(f"{cfg['_path']}: suite {cfg['suite']} follows {SUITES[cfg['suite']]}, not {cfg['protocol']}")
    _check_seeds(cfg)
    missing = missing_environment(cfg, weights=weights, generator_args=generator_args, extra=extra, generator=False)
    if missing:  # all of them in one error (every run of the config)
        raise _missing_environment_error(cfg["_path"], missing)
    overrides = dict(generator_args or {})
    if weights is not None:
        overrides["weights"] = weights
    runs = cfg.get("runs") or [{}]
    argvs = []
    for run in runs:
        opts = {**(cfg.get("generate") or {}), **{k: v for k, v in run.items() if k != "name"}}
        target = Path(out) / run["name"] if run.get("name") else Path(out)
        argv = ["generate", cfg["suite"], "--out", str(target), "--generator", cfg["generator"]["factory"],
                "--generator-arg", f"config={cfg['_path']}"]
        for k, v in overrides.items():
            argv += ["--generator-arg", f"{k}={v if isinstance(v, str) else json.dumps(v)}"]
        for k, v in opts.items():
            flag = "--" + k.replace("_", "-")
            if isinstance(v, bool):
                argv += [flag] if v else []
            elif v is not None:
                value = os.path.expandvars(os.path.expanduser(str(v)))
                if _unset_vars(v):  # replaced by the same flag in `extra` (missing_environment checked the rest)
                    continue
                argv += [flag, value]
        argvs.append(argv + list(extra))
    return argvs


def run_config(config: str | os.PathLike, out: str | os.PathLike, *, weights: str | None = None,
               generator_args: Mapping[str, Any] | None = None, extra: Sequence[str] = (),
               dry_run: bool = False) -> list[list[str]]:
    """Run ``cologen bench generate`` for every (sub-)run of a config; returns the argument lists.

    ``dry_run``: only print the commands.
    """
    from ..cli import main as bench_main

    cfg = load_config(config)
    missing = missing_environment(cfg, weights=weights, generator_args=generator_args, extra=extra)
    if missing and not dry_run:  # every unset variable of every run in one error, before anything runs
        raise _missing_environment_error(cfg["_path"], missing)
    argvs = config_argv(config, out, weights=weights, generator_args=generator_args, extra=extra)
    if missing:  # dry run (config_argv refused unset suite options): the generator's settings would fail to load
        print(f"note: {_missing_environment_error(cfg['_path'], missing)}", file=sys.stderr)
    for argv in argvs:
        print("cologen bench " + " ".join(_quote(a) for a in argv), flush=True)
        if not dry_run:
            code = bench_main(argv)
            if code:
                raise SystemExit(code)
    return argvs


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


def row_label(method: str, protocol: str) -> str:
    """Label of a re-run baseline's row in ``cologen bench table``: ``"OmniGen (rerun, dreambench/omnigen)"``.

    (``tables.render`` marks every measured row "(ours)": ours = measured by this suite.)
    """
    return f"{method} (rerun, {protocol})"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.baselines.omnigen CONFIG --out RUN [--weights DIR] [--set k=v] [-- extra args]``."""
    from ..cli import parse_kv

    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(prog="python -m benchmarks.baselines.<omnigen|ip_adapter>",
                                description="generate a baseline's images for a suite from an experiments/baselines config")
    p.add_argument("config", help="experiments/baselines/*.yaml")
    p.add_argument("--out", required=True, help="run folder (with 'runs' in the config: one sub-folder per run)")
    p.add_argument("--weights", help="override generator.weights (the base model folder)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a generator setting (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the cologen bench generate commands only")
    args = p.parse_args(argv)
    try:
        run_config(args.config, args.out, weights=args.weights, generator_args=parse_kv(args.set, "--set"),
                   extra=extra, dry_run=args.dry_run)
    except (ValueError, FileNotFoundError) as err:  # config / weights problems: the message says what to fix
        raise SystemExit(f"error: {err}") from None
    return 0


def import_factory(spec: str) -> Callable[..., Any]:
    mod, name = spec.split(":", 1)
    return getattr(importlib.import_module(mod), name)
