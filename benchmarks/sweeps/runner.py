"""Run a sweep: the shared prefix once, then every point (train its own steps, evaluate), then collect.

Folders::

    <output_dir>/sweep_plan.json            the expanded sweep (points, steps, budgets), written before any compute
    <output_dir>/sweep_results.json         every point's state, budget, training summary and benchmark results
    <output_dir>/points/<point>/<k>_<step>/ the point's own steps (run_step layout: config.yaml, tb/, final/ ...)
    <output_dir>/points/<point>/eval/<name>/  a harness run folder (manifest.jsonl, images/, results.json ...)
    <output_dir>/points/<point>/error.txt   the traceback of a failed point (removed when it succeeds)
    <prefix.dir>/<k>_<step>/                the shared prefix steps
    <output_dir>/seed-<s>/points/<point>/   the same for training seed s, unless s is the default seed (the steps'
    <prefix.dir>/seed-<s>/<k>_<step>/       own train.seed), whose runs keep the folders above (see grid.py)

Training seeds: every selected point is trained and evaluated once per seed (seed by seed: all points of the first
seed, then the next), each seed over its own shared prefix; `seed_index` (``--seed-index``) runs one seed only.
``sweep_results.json`` keeps every seed's run of a point under ``seeds`` and, per evaluation and metric, the mean
over seeds with its 95 % t-interval across seeds under ``aggregate`` (:func:`aggregate_results`); the top-level
``steps`` / ``results`` / ``error`` of a point are its first seed's (with one seed: exactly what they were before
seeds existed), ``status`` is over all seeds.

`run_step` skips finished steps (final/done.json) and resumes interrupted ones (checkpoints/last.ckpt), so a killed
sweep rerun with the same command continues where it stopped. A step folder is locked (fcntl) while it trains, so
array jobs that reach an unfinished shared prefix wait for one of them to train it instead of racing. A finished
prefix folder whose saved config.yaml differs from what the sweep expects is refused (never silently reused).
Evaluation re-runs only when the evaluated model (its final/done.json) or the evaluation settings change.

Multi-GPU points (train.devices > 1): Lightning's DDP children and srun tasks of rank > 0 re-run the same command;
they skip locking, evaluation and collection (rank 0 evaluates on all images). Train the shared prefix first
(`--prefix-only`, as the `--print-commands` recipe does) before starting multi-GPU points in parallel.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import math
import shlex
import shutil
import traceback
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from benchmarks.stats import mean_interval
from benchmarks.sweeps.grid import load_sweep
from benchmarks.sweeps.spec import DEFAULT_GENERATOR, EvalSpec, Point, Sweep, step_samples
from lit_cologen.config import ConfigError
from lit_cologen.training.config import StepConfig
from lit_cologen.training.run_folder import saved_config_differences
from lit_cologen.utils.dist import launcher_rank

log = logging.getLogger("lit_cologen.sweep")
RESULTS_FILE = "sweep_results.json"
PLAN_FILE = "sweep_plan.json"
EVAL_MARKER = "sweep_eval.json"
ERROR_FILE = "error.txt"

__all__ = ["run_sweep", "collect", "plan_text", "commands_text", "step_state", "evaluate_point", "RESULTS_FILE",
           "PLAN_FILE", "file_lock", "per_image_stderr", "aggregate_results", "combined_status"]


# ---------------------------------------------------------------------------------------------------- utilities


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, data: Any) -> None:
    from benchmarks.harness import write_json_atomic

    write_json_atomic(path, data)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` (created); a no-op where fcntl is missing or in non-zero ranks."""
    if launcher_rank() != 0:
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _lock_path(folder: str | Path) -> Path:
    folder = Path(folder)
    return folder.parent / f".{folder.name}.lock"


def step_state(cfg: StepConfig) -> str:
    """mismatching (its folder's config.yaml records another configuration: the run would refuse it) | done |
    partial | todo: ``lit_cologen.training.run.step_status``, the check ``cologen curriculum --dry-run`` makes."""
    from lit_cologen.training.run import step_status

    return step_status(cfg)[0]


def _fingerprint(final: Path) -> str:
    """Identifies a trained model: its done.json and the size of its exported files."""
    h = hashlib.sha256()
    done = final / "done.json"
    h.update(done.read_bytes() if done.is_file() else b"missing")
    for p in sorted(final.rglob("*")):
        if p.is_file() and p.name != "done.json":
            h.update(f"{p.relative_to(final)}:{p.stat().st_size}".encode())
    return h.hexdigest()[:16]


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


# ---------------------------------------------------------------------------------------------------- training


def train_step(cfg: StepConfig, shared: bool, progress: bool) -> Path:
    """run_step under the step folder's lock; a step folder written before must hold the same config (a finished
    or partial run of another configuration is never reused or resumed silently)."""
    with file_lock(_lock_path(cfg.output_dir)):
        diff = saved_config_differences(cfg)
        if diff:
            where = ("shared prefix step folder", "delete it, or point prefix.dir elsewhere (prefix.dir=PATH)") if shared \
                else ("point step folder", "delete it, or set the sweep's output_dir elsewhere (output_dir=PATH)")
            raise ConfigError(f"{where[0]} {cfg.output_dir} was trained with another configuration "
                              f"({'; '.join(diff[:4])}); {where[1]}")
        from lit_cologen.training.run import run_step

        return run_step(cfg, enable_progress=progress)


def _seed_tag(sweep: Sweep, seed: Optional[int]) -> str:
    return f" (training seed {seed})" if len(sweep.seeds) > 1 or seed != sweep.default_seed else ""


def run_prefix(sweep: Sweep, progress: bool = True, seeds: Optional[Sequence[int]] = None) -> None:
    """Train the shared prefix of each of `seeds` (default: every training seed of the sweep)."""
    for seed in sweep.seeds if seeds is None else seeds:
        for cfg in sweep.prefix_configs(seed):
            log.info("sweep '%s': shared prefix step '%s'%s -> %s (%s)", sweep.name, cfg.name, _seed_tag(sweep, seed),
                     cfg.output_dir, step_state(cfg))
            train_step(cfg, shared=True, progress=progress)


# ---------------------------------------------------------------------------------------------------- evaluation


def generator_kwargs(ev: EvalSpec, point: Point) -> dict[str, Any]:
    """The generator factory's keyword arguments for `point` (placeholders filled)."""
    last = point.steps[-1]
    fill = {"{preset}": last.model.preset, "{base}": last.model.pretrained_path, "{adapters}": str(point.final),
            "{point_dir}": point.output_dir}
    kwargs: dict[str, Any] = {}
    if ev.generator == DEFAULT_GENERATOR:
        kwargs = {"preset": "{preset}", "base": "{base}", "adapters": "{adapters}", "device": ev.device}
    kwargs.update(ev.generator_args)
    out = {}
    for k, v in kwargs.items():
        if isinstance(v, str) and v in fill:
            v = fill[v]
        elif isinstance(v, str):
            for ph, val in fill.items():
                v = v.replace(ph, str(val))
        if v is not None:
            out[k] = v
    return out


def eval_dir(point: Point, ev: EvalSpec) -> Path:
    return Path(point.output_dir) / "eval" / ev.name


def eval_settings(ev: EvalSpec, kwargs: dict[str, Any]) -> dict[str, Any]:
    """What decides whether an evaluation is up to date (stored in the eval marker): the equivalent bench command
    lines (the same text as before the harness had a Python API, so existing evaluations stay up to date), the
    generator and its filled keyword arguments."""
    return {"generate": ev.generate_command("RUN"), "score": ev.score_command("RUN"), "generator": ev.generator,
            "generator_args": {k: str(v) for k, v in kwargs.items()}}


def evaluate_point(sweep: Sweep, point: Point, ev: EvalSpec, progress: bool = True) -> dict[str, Any]:
    """Generate + score `point` with `ev` through the harness; skipped when up to date. Returns results.json."""
    from benchmarks import api

    out = eval_dir(point, ev)
    kwargs = generator_kwargs(ev, point)
    settings = eval_settings(ev, kwargs)
    marker = {"fingerprint": _fingerprint(point.final), "settings": settings}
    with file_lock(_lock_path(out)):
        old = _read_json(out / EVAL_MARKER)
        results = _read_json(out / "results.json")
        if old == marker and results is not None:
            log.info("point '%s': evaluation '%s' up to date (%s)", point.name, ev.name, out)
            return results
        same = old is not None and {k: v for k, v in old.items() if k != "complete"} == marker
        if out.exists() and not same:  # another model or other settings: start over (same: resume generation)
            log.info("point '%s': evaluation '%s' is stale or has other settings: redone", point.name, ev.name)
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / EVAL_MARKER, {**marker, "complete": False})
        requests = api.build_requests(ev.suite, out, **ev.request_keywords())
        generator = api.load_generator(ev.generator, kwargs)
        # all images here (rank 0 of 1): after a multi-GPU step the process group may still be up, and the harness
        # would otherwise generate only this rank's shard
        api.generate(out, requests, generator, batch_size=ev.batch_size, progress=progress, rank=0, world_size=1,
                     info={"suite": ev.suite, "generator_spec": ev.generator,
                           "generator_args": settings["generator_args"], "sweep": sweep.name, "point": point.name,
                           "training_seed": point.seed})
        del generator
        results = api.score_run(out, ev.suite, progress=progress, **ev.score_keywords())
        _write_json(out / EVAL_MARKER, marker)
        return results


# ---------------------------------------------------------------------------------------------------- points


def run_point(sweep: Sweep, point: Point, progress: bool = True, evaluate: bool = True) -> dict[str, Any]:
    """Train the point's own steps (prefix steps must be done or are trained here), then evaluate it."""
    from lightning.pytorch.utilities import rank_zero_only

    for cfg, shared in zip(point.steps, point.shared):
        log.info("sweep '%s' point '%s'%s: step '%s' (%d experts, %d x %d) -> %s [%s]", sweep.name, point.name,
                 _seed_tag(sweep, point.seed), cfg.name, cfg.model.prw.num_experts, cfg.train.max_steps,
                 cfg.train.global_batch, cfg.output_dir, step_state(cfg))
        train_step(cfg, shared=shared, progress=progress)
    if not evaluate or rank_zero_only.rank != 0 or launcher_rank() != 0:
        return {}
    return {ev.name: evaluate_point(sweep, point, ev, progress) for ev in sweep.evals}


def run_sweep(sweep: Sweep, names: Optional[Sequence[str]] = None, index: Optional[int] = None,
              progress: bool = True, evaluate: bool = True, prefix_only: bool = False,
              fail_fast: bool = False, seed_index: Optional[int] = None) -> dict[str, Any]:
    """Run the selected points (all by default) for the selected training seeds (all by default: `seed_index`
    picks one), seed by seed, sequentially; returns the collected results (every seed's).

    A failing point is recorded (error.txt, status "failed") and the next one runs, unless `fail_fast`.
    """
    names = [p.name for p in sweep.select(names, index)]
    seeds = sweep.select_seeds(seed_index)
    if launcher_rank() == 0:
        _write_json(sweep.output_dir / PLAN_FILE, {**sweep.to_dict(), "written_at": _now()})
    if prefix_only:
        run_prefix(sweep, progress, seeds)
        return collect(sweep)
    for seed in seeds:
        run_prefix(sweep, progress, [seed])
        for name in names:
            point = sweep.run(name, seed)
            err = Path(point.output_dir) / ERROR_FILE
            try:
                run_point(sweep, point, progress, evaluate)
                err.unlink(missing_ok=True)
            except Exception as exc:  # noqa: BLE001 - recorded, the sweep goes on
                if fail_fast:
                    raise
                log.error("sweep '%s': point '%s'%s failed: %s", sweep.name, point.name, _seed_tag(sweep, seed), exc)
                err.parent.mkdir(parents=True, exist_ok=True)
                err.write_text(traceback.format_exc())
            if launcher_rank() == 0:
                collect(sweep)
    return collect(sweep)


# ---------------------------------------------------------------------------------------------------- results


def per_image_stderr(run_dir: str | Path) -> dict[str, Any]:
    """Standard error of the mean of every per-image metric, overall and per subset (from results_per_image.jsonl)."""
    from benchmarks.harness import RunFolder
    from benchmarks.suites.common import subsets_of

    run = RunFolder(run_dir)
    if not run.per_image_path.is_file():
        return {}
    try:
        subsets = {r.id: subsets_of(r) for r in run.read_manifest()}
    except (FileNotFoundError, ValueError):
        subsets = {}
    values: dict[str, list[float]] = {}
    by_subset: dict[str, dict[str, list[float]]] = {}
    for line in run.per_image_path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        for k, v in row.items():
            if k == "id" or not isinstance(v, (int, float)) or isinstance(v, bool) or v is None or math.isnan(v):
                continue
            values.setdefault(k, []).append(float(v))
            for s in subsets.get(row.get("id"), []):
                by_subset.setdefault(s, {}).setdefault(k, []).append(float(v))

    def se(xs: list[float]) -> Optional[float]:
        if len(xs) < 2:
            return None
        m = sum(xs) / len(xs)
        return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs))

    return {"all": {k: se(v) for k, v in values.items()},
            "subsets": {s: {k: se(v) for k, v in d.items()} for s, d in by_subset.items()}}


def live_error(point: Point) -> Optional[Path]:
    """The point's error.txt, unless a later success made it stale (a done.json or an evaluation of the point
    written after it); a stale one is removed, so a good rerun never keeps reporting the old failure."""
    err = Path(point.output_dir) / ERROR_FILE
    if not err.is_file():
        return None
    later = [p for p in Path(point.output_dir).rglob("*") if p.name in ("done.json", EVAL_MARKER)]
    if later and max(p.stat().st_mtime for p in later) > err.stat().st_mtime:
        err.unlink(missing_ok=True)
        return None
    return err


def point_status(point: Point, steps: list[dict], evals: dict[str, Any], n_evals: int) -> str:
    if live_error(point) is not None:
        return "failed"
    if any(s["state"] == "mismatching" for s in steps):
        return "mismatching"
    own = [s for s in steps if not s["shared"]]
    if all(s["state"] == "done" for s in steps):
        return "done" if len([e for e in evals.values() if not e.get("stale")]) >= n_evals else "trained"
    if any(s["state"] != "todo" for s in own):
        return "partial"
    return "pending"


def _run_record(sweep: Sweep, p: Point) -> dict[str, Any]:
    """One point trained with one seed: its steps, evaluations, status and error (what a point was before seeds)."""
    steps = []
    for cfg, shared in zip(p.steps, p.shared):
        done = _read_json(Path(cfg.output_dir) / "final" / "done.json") or {}
        steps.append({"name": cfg.name, "dir": cfg.output_dir, "shared": shared, "state": step_state(cfg),
                      "experts": cfg.model.prw.num_experts, "max_steps": cfg.train.max_steps,
                      "global_batch": cfg.train.global_batch, "samples": step_samples(cfg),
                      "rho": cfg.veteran.rho, "alpha": cfg.veteran.alpha,
                      # LoRA rank / alpha of the expert the step trains (its own: model.prw.new_expert_*)
                      "rank": cfg.model.prw.new_rank, "lora_alpha": cfg.model.prw.new_alpha,
                      "tasks": list(cfg.data.tasks),
                      "seconds": done.get("seconds"), "metrics": done.get("metrics", {})})
    evals: dict[str, Any] = {}
    for ev in sweep.evals:
        d = eval_dir(p, ev)
        res = _read_json(d / "results.json")
        marker = _read_json(d / EVAL_MARKER)
        if res is None or marker is None or marker.get("complete") is False:
            continue
        stale = not p.final.is_dir() or marker.get("fingerprint") != _fingerprint(p.final)
        evals[ev.name] = {"suite": ev.suite, "run_dir": str(d), "protocol": res.get("protocol"),
                          "image_count": res.get("image_count"), "metrics": res.get("metrics", {}),
                          "unavailable": res.get("unavailable") or {},
                          "metric_directions": res.get("metric_directions", {}), "subsets": res.get("subsets", {}),
                          "counts": res.get("counts", {}), "stderr": per_image_stderr(d), "stale": stale}
    err = live_error(p)
    return {"seed": p.seed, "output_dir": p.output_dir, "status": point_status(p, steps, evals, len(sweep.evals)),
            "steps": steps, "train_seconds": round(sum(s["seconds"] or 0 for s in steps if not s["shared"]), 1),
            "results": evals, "error": err.read_text()[-2000:] if err is not None else None}


def combined_status(states: Sequence[str]) -> str:
    """A point's status over its seeds: the common one, else failed / mismatching if any seed is, trained when
    every seed is trained or done, partial otherwise."""
    if len(set(states)) == 1:
        return states[0]
    for bad in ("failed", "mismatching"):
        if bad in states:
            return bad
    return "trained" if all(s in ("done", "trained") for s in states) else "partial"


def _number(v: Any) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v) else None


def _seed_stat(values: list[Optional[float]]) -> dict[str, Any]:
    stat = {"values": values, **mean_interval(values)}
    if stat["n"] < 2:
        stat["note"] = "one seed: no interval" if stat["n"] == 1 else "no seed evaluated"
    return stat


def aggregate_results(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per evaluation, across the seeds that have it (stale evaluations left out): ``seeds`` and, for every metric
    and every subset's metric, ``values`` (one per seed, in that order; None where a seed lacks it) with their
    :func:`benchmarks.stats.mean_interval` (mean, sd, t, half_width, ci95; ci95 None with one seed)."""
    out: dict[str, Any] = {}
    names = list(dict.fromkeys(n for r in records for n in r.get("results", {})))
    for name in names:
        used = [(r["seed"], r["results"][name]) for r in records
                if name in r.get("results", {}) and not r["results"][name].get("stale")]
        if not used:
            continue
        metrics = list(dict.fromkeys(k for _, res in used for k, v in res.get("metrics", {}).items()
                                     if _number(v) is not None))
        subsets = list(dict.fromkeys(s for _, res in used for s in res.get("subsets", {})))
        agg = {"seeds": [s for s, _ in used], "n_seeds": len(used),
               "metrics": {m: _seed_stat([_number(res.get("metrics", {}).get(m)) for _, res in used]) for m in metrics},
               "subsets": {}}
        for sub in subsets:
            keys = list(dict.fromkeys(k for _, res in used for k, v in (res.get("subsets", {}).get(sub) or {}).items()
                                      if _number(v) is not None))
            agg["subsets"][sub] = {k: _seed_stat([_number((res.get("subsets", {}).get(sub) or {}).get(k))
                                                  for _, res in used]) for k in keys}
        out[name] = agg
    return out


def collect(sweep: Sweep) -> dict[str, Any]:
    """Gather every point's state, budget, training summary and benchmark results, per training seed, with the
    across-seed aggregate, into sweep_results.json."""
    points = []
    multi = len(sweep.seeds) > 1
    for p in sweep.points:
        records = [_run_record(sweep, sweep.run(p.name, s)) for s in sweep.seeds]
        first = records[0]
        errors = [(r["seed"], r["error"]) for r in records if r["error"] is not None]
        error = (f"training seed {errors[0][0]}: {errors[0][1]}" if multi else errors[0][1]) if errors else None
        points.append({
            "index": p.index, "name": p.name, "label": p.label, "axes": p.axes, "overrides": p.overrides,
            "base": p.base, "dropped_steps": p.dropped, "apply_to": p.apply_to, "output_dir": p.output_dir,
            "chosen": p.name in sweep.chosen, "status": combined_status([r["status"] for r in records]),
            "budget": p.budget, "steps": first["steps"], "train_seconds": first["train_seconds"],
            "results": first["results"], "error": error, "seed": first["seed"], "seeds": records,
            "aggregate": aggregate_results(records),
        })
    prefixes = {sd: {"dir": str(sweep.seed_root(sd)[1]), "steps": [
        {"name": c.name, "dir": c.output_dir, "state": step_state(c), "samples": step_samples(c),
         "seconds": (_read_json(Path(c.output_dir) / "final" / "done.json") or {}).get("seconds")}
        for c in sweep.prefix_configs(sd)]} for sd in sweep.seeds}
    data = {
        "sweep": sweep.name, "kind": sweep.kind, "description": sweep.description, "config": sweep.path,
        "output_dir": str(sweep.output_dir),
        "prefix": prefixes[sweep.seeds[0]],
        "axes": [a.to_dict() for a in sweep.axes], "chosen": sweep.chosen, "budget": sweep.budget,
        "eval": [e.to_dict() for e in sweep.evals], "report": sweep.report, "train_overrides": sweep.train_overrides,
        "seeds": list(sweep.seeds), "default_seed": sweep.default_seed,
        "seed_dirs": {str(sd): {"points_root": str(sweep.seed_root(sd)[0]), "prefix": prefixes[sd]}
                      for sd in sweep.seeds},
        "points": points, "updated_at": _now(),
    }
    with file_lock(sweep.output_dir / f".{RESULTS_FILE}.lock"):
        _write_json(sweep.output_dir / RESULTS_FILE, data)
    return data


# ---------------------------------------------------------------------------------------------------- text output


def _state_text(cfg: StepConfig) -> str:
    """A step's state for the dry run: the same check the real run makes (a mismatch lists what differs)."""
    diff = saved_config_differences(cfg)
    return f"CONFIG MISMATCH, the run will refuse it: {'; '.join(diff[:3])}" if diff else step_state(cfg)


def plan_text(sweep: Sweep) -> str:
    """What `--dry-run` prints: prefix, points, steps with budgets and states, evaluation."""
    lines = [f"sweep '{sweep.name}' ({sweep.kind}): {len(sweep.points)} points; config {sweep.path}; "
             f"output {sweep.output_dir}"]
    if sweep.description:
        lines.append(f"  {sweep.description}")
    if sweep.axes:
        lines.append("axes: " + "; ".join(f"{a.name} = {'/'.join(a.keys)} in {[v if len(v) > 1 else v[0] for v in a.values]}"
                                          for a in sweep.axes))
    if sweep.train_overrides:
        lines.append(f"training overrides (every step): {' '.join(sweep.train_overrides)}")
    lines.append(_seeds_line(sweep))
    first = sweep.seeds[0]
    prefix = sweep.prefix_configs(first)
    if prefix:
        lines.append(f"shared prefix ({sweep.seed_root(first)[1]}):"
                     + (f" seed {first}" if len(sweep.seeds) > 1 else ""))
        for c in prefix:
            lines.append(f"  {Path(c.output_dir).name:<14} {c.train.max_steps:>7} x {c.train.global_batch:<4} "
                         f"= {step_samples(c):>10} samples  experts {c.model.prw.num_experts}  [{_state_text(c)}]")
        for seed in sweep.seeds[1:]:
            lines.append(f"shared prefix, seed {seed} ({sweep.seed_root(seed)[1]}): "
                         + ", ".join(f"{Path(c.output_dir).name} [{_state_text(c)}]" for c in sweep.prefix_configs(seed)))
    b = sweep.budget
    lines.append(f"budget: {b['match']}" + (f" (reference point '{b.get('reference')}')" if b.get("reference") else ""))
    for p in sweep.points:
        mark = " *chosen*" if p.name in sweep.chosen else ""
        over = " ".join(f"{k}={v}" for k, v in p.overrides.items())
        lines.append(f"[{p.index}] {p.name}{mark}: {p.label if p.label != p.name else ''} {over}".rstrip())
        if p.dropped:
            lines.append(f"    dropped steps: {p.dropped}")
        for c in p.own_steps:
            lines.append(f"    {Path(c.output_dir).name:<14} {c.train.max_steps:>7} x {c.train.global_batch:<4} "
                         f"= {step_samples(c):>10} samples  experts {c.model.prw.num_experts}  rho {c.veteran.rho} "
                         f"alpha {c.veteran.alpha} rank {c.model.prw.new_rank}  [{_state_text(c)}]")
        lines.append(f"    total {p.samples} samples after the prefix (factor {p.budget.get('factor')})")
        if len(sweep.seeds) > 1:
            for seed in sweep.seeds:
                q = sweep.run(p.name, seed)
                lines.append(f"    seed {seed}: {q.output_dir}  "
                             + ", ".join(f"{Path(c.output_dir).name} [{_state_text(c)}]" for c in q.own_steps))
    for ev in sweep.evals:
        lines.append(f"eval '{ev.name}': cologen bench {' '.join(ev.generate_command('<point>/eval/' + ev.name))}")
    if not sweep.evals:
        lines.append("eval: none")
    return "\n".join(lines)


def _seeds_line(sweep: Sweep) -> str:
    if len(sweep.seeds) == 1:
        seed = sweep.seeds[0]
        where = ("its folders as without seeds" if seed == sweep.default_seed
                 else f"folders under {sweep.seed_root(seed)[0]} and {sweep.seed_root(seed)[1]}")
        return (f"training seed: {seed} (one seed, train.seed of every step; {where}); intervals are over the "
                f"evaluated images only (training-seed variation not covered)")
    parts = []
    for seed in sweep.seeds:
        root, prefix = sweep.seed_root(seed)
        parts.append(f"seed {seed}: " + ("the sweep's own folders (default seed)" if seed == sweep.default_seed
                                         else f"{root}/points/<point>/, prefix {prefix}/"))
    return (f"training seeds: {sweep.seeds} (train.seed of every step, the shared prefix included; each point "
            f"trained and evaluated once per seed; 95 % t-intervals across seeds): " + "; ".join(parts))


def commands_text(sweep: Sweep, config: str, overrides: Sequence[str] = ()) -> str:
    """Per-point commands: one process per GPU on a machine, or a SLURM array after the prefix job; with several
    training seeds, one per (point, seed) (``--point-index I --seed-index J``)."""
    extra = "".join(f" {shlex.quote(o)}" for o in overrides)
    seeds_flag = f" --seeds {','.join(str(x) for x in sweep.seeds)}" if sweep.seeds != [sweep.default_seed] else ""
    base = f"cologen sweep {shlex.quote(config)}{extra}{seeds_flag} --no-progress"
    k = len(sweep.seeds)
    if k > 1:
        return _commands_text_seeds(sweep, base)
    n = len(sweep.points)
    steps = [c for p in sweep.points for c in p.steps]
    devices = max((c.train.devices for c in steps), default=1)
    nodes = max((c.train.num_nodes for c in steps), default=1)
    gpus = devices * nodes
    lines = [f"# sweep '{sweep.name}': {n} points; each point trains on up to {gpus} GPU(s) "
             f"(train.devices {devices} x train.num_nodes {nodes})", "# 1) the shared prefix, once:",
             f"{base} --prefix-only", ""]
    if gpus == 1:
        lines.append("# 2a) one point per GPU on one machine:")
        lines += [f"CUDA_VISIBLE_DEVICES={p.index % 8} {base} --point-index {p.index} &   # {p.name}"
                  for p in sweep.points]
        lines.append("wait")
        slurm, run = "--gres=gpu:1", ""
    else:
        lines.append(f"# 2a) one point per {gpus}-GPU allocation (or one after another on one machine):")
        lines += [f"{base} --point-index {p.index}   # {p.name}" for p in sweep.points]
        # Lightning under SLURM expects one task per GPU, started by srun (rank > 0 tasks neither lock nor evaluate)
        slurm, run = f"--nodes={nodes} --ntasks-per-node={devices} --gres=gpu:{devices}", "srun "
    lines += ["", "# 2b) or a SLURM array, after the prefix job:",
              f"jid=$(sbatch --parsable {slurm} --wrap {shlex.quote(run + base + ' --prefix-only')})",
              f"sbatch --dependency=afterok:$jid --array=0-{n - 1} {slurm} "
              f"--wrap {shlex.quote(run + base + ' --point-index $SLURM_ARRAY_TASK_ID')}", "",
              "# 3) gather the results and render the report:",
              f"{base} --collect", f"cologen report {shlex.quote(str(sweep.output_dir))}"]
    return "\n".join(lines)


def _commands_text_seeds(sweep: Sweep, base: str) -> str:
    n, k = len(sweep.points), len(sweep.seeds)
    steps = [c for s in sweep.seeds for p in sweep.runs(s) for c in p.steps]
    devices = max((c.train.devices for c in steps), default=1)
    nodes = max((c.train.num_nodes for c in steps), default=1)
    gpus = devices * nodes
    lines = [f"# sweep '{sweep.name}': {n} points x {k} training seeds {sweep.seeds} = {n * k} runs; each trains on up "
             f"to {gpus} GPU(s) (train.devices {devices} x train.num_nodes {nodes})",
             "# 1) the shared prefix of every seed, once:", f"{base} --prefix-only", ""]
    runs = [(p, j, seed) for j, seed in enumerate(sweep.seeds) for p in sweep.points]
    if gpus == 1:
        lines.append("# 2a) one run per GPU on one machine:")
        lines += [f"CUDA_VISIBLE_DEVICES={i % 8} {base} --point-index {p.index} --seed-index {j} &   # {p.name}, seed {seed}"
                  for i, (p, j, seed) in enumerate(runs)]
        lines.append("wait")
        slurm, run = "--gres=gpu:1", ""
    else:
        lines.append(f"# 2a) one run per {gpus}-GPU allocation (or one after another on one machine):")
        lines += [f"{base} --point-index {p.index} --seed-index {j}   # {p.name}, seed {seed}" for p, j, seed in runs]
        slurm, run = f"--nodes={nodes} --ntasks-per-node={devices} --gres=gpu:{devices}", "srun "
    task = f" --point-index $((SLURM_ARRAY_TASK_ID % {n})) --seed-index $((SLURM_ARRAY_TASK_ID / {n}))"
    lines += ["", f"# 2b) or a SLURM array over (point, seed) after the prefix job: task t = point t % {n}, "
                  f"seed index t / {n}",
              f"jid=$(sbatch --parsable {slurm} --wrap {shlex.quote(run + base + ' --prefix-only')})",
              f"sbatch --dependency=afterok:$jid --array=0-{n * k - 1} {slurm} --wrap {shlex.quote(run + base + task)}",
              "", "# 3) gather the results and render the report:",
              f"{base} --collect", f"cologen report {shlex.quote(str(sweep.output_dir))}"]
    return "\n".join(lines)


def summary_text(data: dict[str, Any]) -> str:
    """One line per point: status, samples, seconds and the headline metrics (several seeds: the mean over seeds
    +- the 95 % t-interval half-width, and the number of seeds)."""
    lines = [f"sweep '{data['sweep']}' -> {Path(data['output_dir']) / RESULTS_FILE}"]
    for p in data["points"]:
        metrics = []
        if len(p.get("seeds") or []) > 1:
            for name, agg in (p.get("aggregate") or {}).items():
                for k in ("concept", "localization"):
                    st = agg["metrics"].get(k)
                    if st and st["mean"] is not None:
                        hw = f" ± {st['half_width']:.3f}" if st["half_width"] is not None else ""
                        metrics.append(f"{name}:{k}={st['mean']:.3f}{hw} (n={st['n']})")
        else:
            for name, r in p["results"].items():
                for k in ("concept", "localization"):
                    if k in r["metrics"]:
                        metrics.append(f"{name}:{k}={r['metrics'][k]:.3f}")
        lines.append(f"  [{p['index']}] {p['name']:<24} {p['status']:<8} samples {p['budget'].get('samples')}"
                     f"  train {p['train_seconds']}s  {' '.join(metrics)}")
    return "\n".join(lines)


def load_and_run(config: str, overrides: Sequence[str] = (), **kwargs) -> dict[str, Any]:
    return run_sweep(load_sweep(config, overrides), **kwargs)
