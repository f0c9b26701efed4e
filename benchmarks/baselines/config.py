"""Baseline configs (``experiments/baselines/*.yaml``): loading one, the generator factory's keyword arguments, the
environment variables it needs, the ``cologen bench generate`` commands it stands for, and the runner
(``python -m benchmarks.baselines.omnigen CONFIG --out RUN``)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

__all__ = ["load_config", "generator_kwargs", "config_argv", "missing_environment", "run_config", "import_factory",
           "main", "RENAMED_ENV"]


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
    from ..api import SUITES

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
