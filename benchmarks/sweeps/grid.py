"""A sweep YAML -> its points -> each point's list of validated StepConfigs.

A sweep names a base curriculum, the *prefix* steps every point shares (trained once, in one folder), and what each
point changes in the steps after the prefix::

    name: alpha-tiny
    kind: figure4                       # figure4 (metric vs swept value) | table5 (rows) | grid (plain table)
    base: experiments/cologen/curriculum_tiny.yaml
    output_dir: runs/ablations/alpha-tiny
    prefix:
      steps: [base, inpaint, ground, control, subject]   # the first steps of the curriculum, shared by all points
      dir: runs/cologen-tiny            # where they live (default <output_dir>/prefix); sweeps may share one
    overrides: [data.val_samples=20]    # dotlist applied to every step of every point (prefix included)
    steps: {edit: {train: {max_steps: 100}}}   # per-step overrides for every point
    apply_to: [edit]                    # steps the point / grid values go to (default: every step after the prefix)
    grid:                               # cartesian product over the entries; one entry may tie several keys
      veteran.alpha: [0.0, 0.5, 1.0]                       # short form: axis "alpha", point names alpha-0.0, ...
      - {name: rank, keys: [model.prw.rank, model.prw.lora_alpha], values: [[4, 8], [8, 16]]}   # list form
    points:                             # explicit variants (x the grid): another curriculum, dropped steps, ...
      wo_rc_rl: {label: "w/o R_c & w/o R_l", drop_steps: [inpaint, ground]}
      cotraining: {label: "Co-training", base: experiments/cologen/cotraining_tiny.yaml}
    chosen: {alpha: 0.5}                # the paper's setting (highlighted), or a point name
    budget: {match: total_samples, reference: cologen}   # none | per_task | total_samples
    eval: {suite: shapes5, tasks: [edit], per_task: 16, resolution: 32, generator_args: {steps: 8}}
    report: {metrics: [edit/concept, edit/localization]}
    seeds: [0, 1, 2]                    # training seeds (train.seed of every step); default: the steps' train.seed

Point folders: ``<output_dir>/points/<point>/<k>_<step>`` (k = the step's index in the point's curriculum), the
prefix steps in ``<prefix.dir>/<k>_<step>``; ``init_from`` / the tiny base's ``pretrained_path`` are rewired to
the shared folders. Every point's prefix steps must resolve to the same configuration (checked), and a step that
starts from another step's experts must keep its LoRA structure (model.prw.rank, lora_alpha, routing, blocks: the
configuration of the loaded experts) -- both fail before any compute, naming the point and the key. The expert a
step adds may have its own rank: sweep ``model.prw.new_expert_rank`` / ``new_expert_alpha`` in that step (e.g.
``apply_to: [edit]`` over a shared prefix, as the paper's Fig. 4b).

Budgets (``budget.match``): the samples of a step = ``train.max_steps x train.global_batch``; a point's budget = the
sum over its steps after the shared prefix. ``none`` / ``per_task``: every step keeps its curriculum budget (the
totals are still recorded); ``total_samples``: every step after the prefix is scaled by
``reference total / point total`` (max_steps rounded, >= 1), so every point trains on the same number of samples
as the ``reference`` point and keeps its own steps' proportions.

Training seeds (``seeds``, or ``cologen sweep CONFIG --seeds 0,1,2``, which overrides the file): every point is
trained once per seed, with ``train.seed=<s>`` on every one of its steps, the shared prefix included (one prefix per
seed). Without ``seeds`` the sweep has one seed, the ``train.seed`` its steps resolve to (the *default seed*: 0
unless the curriculum or an override sets it), and nothing changes. Folders: the default seed keeps exactly the
folders above (so a sweep trained before seeds existed is its default seed's run, and adding seeds later reuses
it); any other seed ``s`` gets a ``seed-<s>/`` level in both roots::

    <output_dir>/points/<point>/...                 the default seed (as without seeds)
    <output_dir>/seed-<s>/points/<point>/...        seed s (its own steps and evaluations)
    <prefix.dir>/<k>_<step>                         the default seed's shared prefix
    <prefix.dir>/seed-<s>/<k>_<step>                seed s's shared prefix

``Sweep.points`` are the first listed seed's points (the arms: names, labels, budgets are the same for every seed);
``Sweep.runs(seed)`` every seed's. A sweep given ``seeds`` whose steps resolve to different ``train.seed`` values is
refused (the default seed would be ambiguous). Only ``train.seed`` varies: the data order (``data.seed``) and the
evaluation images and their sampling seeds are the same for every training seed, so per-seed results pair up.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from benchmarks.sweeps.spec import (
    BUDGET_MODES,
    KINDS,
    Axis,
    EvalSpec,
    Point,
    Sweep,
    SweepFile,
    nested_overrides,
    parse_value,
    resolve_path,
    safe_name,
    schema_message,
    step_samples,
)
from lit_cologen.config import ConfigError, load_config
from lit_cologen.training.config import StepConfig, load_curriculum
from lit_cologen.training.run_folder import config_differences, semantic_config

__all__ = ["load_sweep", "split_overrides", "semantic_config", "config_differences", "parse_seeds", "check_seeds"]

# `key=value` command-line overrides whose first component is one of these change the sweep spec; any other key is a
# training override applied to every step of every point
SPEC_OVERRIDE_ROOTS = ("name", "kind", "description", "output_dir", "prefix", "budget", "chosen", "eval", "report",
                       "apply_to", "base", "steps", "points", "seeds")

# ---------------------------------------------------------------------------------------------------- parsing


def _parse_axes(grid: Any, where: str) -> list[Axis]:
    if grid is None:
        return []
    entries: list[tuple[str, Any]] = []
    if isinstance(grid, dict):
        entries = list(grid.items())
    elif isinstance(grid, list):
        for i, e in enumerate(grid):
            if not isinstance(e, dict):
                raise ConfigError(f"config key 'grid[{i}]' in {where}: expected a mapping {{key: values}} or "
                                  f"{{name, keys, values}}")
            if "keys" in e or "values" in e:
                unknown = set(e) - {"name", "keys", "values"}
                if unknown:
                    raise ConfigError(f"config key 'grid[{i}].{sorted(unknown)[0]}' in {where}: unknown (name, keys, values)")
                keys = e.get("keys")
                keys = [keys] if isinstance(keys, str) else keys
                entries.append((",".join(keys or []), {"name": e.get("name"), "values": e.get("values")}))
            else:
                entries.extend(e.items())
    else:
        raise ConfigError(f"config key 'grid' in {where}: expected a mapping or a list")
    axes = []
    for key, spec in entries:
        name = None
        if isinstance(spec, dict):
            name, spec = spec.get("name"), spec.get("values")
        keys = [k.strip() for k in str(key).split(",") if k.strip()]
        if not keys:
            raise ConfigError(f"config key 'grid' in {where}: an entry names no key")
        if not isinstance(spec, list) or not spec:
            raise ConfigError(f"config key 'grid.{key}' in {where}: needs a non-empty list of values")
        values = []
        for v in spec:
            row = list(v) if len(keys) > 1 else [v]
            if len(keys) > 1 and (not isinstance(v, list) or len(v) != len(keys)):
                raise ConfigError(f"config key 'grid.{key}' in {where}: each value must list {len(keys)} values "
                                  f"(one per key {keys}), got {v!r}")
            values.append(row)
        axes.append(Axis(safe_name(name or keys[0].split(".")[-1]), keys, values))
    names = [a.name for a in axes]
    if len(set(names)) != len(names):
        raise ConfigError(f"config key 'grid' in {where}: two axes are named alike ({names}); name them (list form)")
    return axes


def _evals(specs: list[EvalSpec], where: str) -> list[EvalSpec]:
    """The evaluations (an entry with ``suite: none`` is left out); names must differ."""
    out = [e for e in specs if str(e.suite) != "none"]
    names = [e.name for e in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"config key 'eval' in {where}: two evaluations share a name ({names}); set eval[].name")
    return out


def _load_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"sweep file not found: {path}")
    try:
        raw = OmegaConf.load(path)
    except (OmegaConfBaseException, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: {err}") from None
    if not isinstance(raw, DictConfig):
        raise ConfigError(f"{path}: a sweep file is a mapping")
    return raw


def _apply_spec_overrides(raw: DictConfig, overrides: Sequence[str], where: str) -> DictConfig:
    for o in overrides:
        key, value = o.split("=", 1)
        try:
            OmegaConf.update(raw, key, parse_value(value), merge=True, force_add=True)
        except OmegaConfBaseException as err:
            raise ConfigError(f"override '{o}' of {where}: {err}") from None
    return raw


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """(sweep-spec overrides, training overrides) of `key=value` arguments."""
    spec, train = [], []
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"override {o!r}: expected KEY=VALUE")
        (spec if o.split("=", 1)[0].split(".")[0] in SPEC_OVERRIDE_ROOTS else train).append(o)
    return spec, train


# ---------------------------------------------------------------------------------------------------- expansion


def _curriculum_for_point(base: Path, drop: Sequence[str], train_overrides: Sequence[str],
                          step_overrides: dict[str, Any], apply_to: Optional[Sequence[str]], prefix: Sequence[str],
                          point_overrides: DictConfig, max_steps: dict[str, int], where: str,
                          seed: Optional[int] = None) -> tuple[DictConfig, list[str]]:
    """The point's curriculum YAML (overrides merged into each step entry, so they win over step-level values)."""
    cur = OmegaConf.load(base)
    names = [str(s.name) for s in cur.get("steps", [])]
    for d in drop:
        if d not in names:
            raise ConfigError(f"{where}: drop_steps names '{d}', not a step of {base} ({names})")
        if d in prefix:
            raise ConfigError(f"{where}: cannot drop '{d}', a shared prefix step")
    kept = [s for s in cur.steps if str(s.name) not in drop]
    own = [str(s.name) for s in kept if str(s.name) not in prefix]
    targets = list(apply_to) if apply_to is not None else own
    for t in targets:
        if t not in own:
            raise ConfigError(f"{where}: apply_to names '{t}', not one of the point's own (non-prefix) steps {own}")
    try:
        glob = OmegaConf.from_dotlist(list(train_overrides)) if train_overrides else None
    except OmegaConfBaseException as err:
        raise ConfigError(f"{where}: training overrides {list(train_overrides)}: {err}") from None
    steps = []
    for s in kept:
        name = str(s.name)
        entry = s
        if glob is not None:
            entry = OmegaConf.merge(entry, glob)
        if name in step_overrides:
            entry = OmegaConf.merge(entry, OmegaConf.create(step_overrides[name]))
        if name in targets and len(point_overrides):
            entry = OmegaConf.merge(entry, point_overrides)
        if name in max_steps:
            entry = OmegaConf.merge(entry, {"train": {"max_steps": int(max_steps[name])}})
        if seed is not None:  # the training seed wins over every other setting of train.seed
            entry = OmegaConf.merge(entry, {"train": {"seed": int(seed)}})
        steps.append(entry)
    cur.steps = steps
    return cur, targets


def _load_point_steps(cur: DictConfig, point_dir: Path, where: str) -> list[StepConfig]:
    with tempfile.TemporaryDirectory(prefix="cologen-sweep-") as tmp:
        path = Path(tmp) / "curriculum.yaml"
        OmegaConf.save(cur, path)
        try:
            _spec, steps = load_curriculum(path, [f"output_dir={point_dir}"], label=f"{where}: its curriculum")
        except ConfigError as err:
            msg = str(err).replace(str(path), "its curriculum")
            raise ConfigError(msg if where in msg else f"{where}: {msg}") from None
    return steps


def _share_prefix(steps: list[StepConfig], prefix: Sequence[str], prefix_dir: Path, where: str) -> list[bool]:
    names = [c.name for c in steps]
    if names[: len(prefix)] != list(prefix):
        raise ConfigError(f"{where}: the prefix {list(prefix)} must be the first steps of the curriculum, got {names}")
    remap = {}
    for c in steps[: len(prefix)]:
        new = prefix_dir / Path(c.output_dir).name
        remap[str(Path(c.output_dir) / "final")] = str(new / "final")
        c.output_dir = str(new)
    for c in steps:
        if c.init_from in remap:
            c.init_from = remap[c.init_from]
        if c.model.pretrained_path in remap:
            c.model.pretrained_path = remap[c.model.pretrained_path]
    return [i < len(prefix) for i in range(len(steps))]


def _check_structure(steps: list[StepConfig], where: str) -> None:
    """A step that loads another step's experts must keep the expert bank's structure."""
    by_final = {str(Path(c.output_dir) / "final"): c for c in steps}
    for c in steps:
        src = by_final.get(str(c.init_from)) if c.init_from else None
        if src is None:
            continue
        for key, a, b in (("rank", c.model.prw.rank, src.model.prw.rank), ("lora_alpha", c.model.prw.alpha, src.model.prw.alpha),
                          ("routing", c.model.prw.routing, src.model.prw.routing),
                          ("blocks", c.model.prw.blocks, src.model.prw.blocks), ("preset", c.model.preset, src.model.preset)):
            if a != b:
                hint = (" (model.prw.rank / lora_alpha describe the loaded experts; to give the expert this step "
                        "adds its own rank, set model.prw.new_expert_rank / new_expert_alpha instead)"
                        ) if key in ("rank", "lora_alpha") else ""
                raise ConfigError(f"{where}: step '{c.name}' sets model.prw.{key}={a!r} but starts from step "
                                  f"'{src.name}' trained with {b!r}{hint}")


def _resolve_chosen(chosen: Any, axes: list[Axis], points: list[Point], where: str) -> list[str]:
    if chosen is None:
        return []
    if isinstance(chosen, str):
        names = [chosen]
    elif isinstance(chosen, list):
        names = [str(c) for c in chosen]
    elif isinstance(chosen, dict):
        def matches(p: Point) -> bool:
            for key, want in chosen.items():
                axis = next((a for a in axes if key == a.name or key in a.keys), None)
                if axis is None:
                    raise ConfigError(f"config key 'chosen.{key}' in {where}: not a grid axis ({[a.name for a in axes]})")
                got = p.overrides.get(key, p.axes.get(axis.name))
                if isinstance(got, (int, float)) and isinstance(want, (int, float)):
                    if not math.isclose(float(got), float(want), rel_tol=1e-9, abs_tol=1e-12):
                        return False
                elif got != want:
                    return False
            return True

        names = [p.name for p in points if matches(p)]
        if not names:
            raise ConfigError(f"config key 'chosen' in {where}: no point has {dict(chosen)}")
    else:
        raise ConfigError(f"config key 'chosen' in {where}: a point name or a mapping {{axis: value}}")
    known = {p.name for p in points}
    for n in names:
        if n not in known:
            raise ConfigError(f"config key 'chosen' in {where}: no point named {n!r}")
    return names


def _scaled_max_steps(steps: Sequence[StepConfig], factor: float, target: int) -> dict[str, int]:
    """max_steps x factor per step, rounded so the samples add up as close to `target` as whole iterations allow
    (largest remainders first); every step keeps at least one iteration."""
    exact = [c.train.max_steps * factor for c in steps]
    its = [max(1, math.floor(e)) for e in exact]
    deficit = target - sum(i * c.train.global_batch for i, c in zip(its, steps))
    for j in sorted(range(len(steps)), key=lambda j: exact[j] - math.floor(exact[j]), reverse=True):
        if deficit >= steps[j].train.global_batch / 2:
            its[j] += 1
            deficit -= steps[j].train.global_batch
    return {c.name: i for c, i in zip(steps, its)}


def _read_spec(path: Path, overrides: Sequence[str]) -> tuple[dict[str, Any], list[str], list[str]]:
    """(the sweep file resolved, with the sweep-spec overrides applied; the keys those set; the training overrides)."""
    where = str(path)
    raw = _load_yaml(path)
    spec_over, train_over = split_overrides(overrides)
    raw = _apply_spec_overrides(raw, spec_over, where)
    try:
        spec = OmegaConf.to_container(raw, resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{where}: {err}") from None
    return spec, [o.split("=", 1)[0] for o in spec_over], list(train_over)


def _schema_data(spec: dict[str, Any], where: str) -> dict[str, Any]:
    """The sweep file in the schema's one form: ``points`` a mapping (a list of names is one), ``eval`` a list
    (``none`` / ``false`` / nothing: no evaluation), empty sections left to their defaults."""
    data = dict(spec)
    for key in ("prefix", "overrides", "steps", "budget", "report"):
        if key in data and not data[key]:
            del data[key]
    points = data.get("points") or {}
    if isinstance(points, list):
        points = {str(p): {} for p in points}
    if not isinstance(points, dict):
        raise ConfigError(f"config key 'points' in {where}: a mapping name -> {{label, base, drop_steps, overrides, steps}}")
    data["points"] = points
    ev = data.get("eval")
    data["eval"] = [] if ev is None or ev == "none" or ev is False else ev if isinstance(ev, list) else [ev]
    return data


def _check_spec(data: dict[str, Any], where: str, command_line_keys: Sequence[str]) -> SweepFile:
    """The sweep file through its schema (:func:`lit_cologen.config.load_config`), then the checks of its values."""
    try:
        cfg = load_config(SweepFile, data=data, command_line_keys=command_line_keys)
    except ConfigError as err:
        raise ConfigError(schema_message(str(err), where)) from None
    if cfg.kind not in KINDS:
        raise ConfigError(f"config key 'kind' in {where}: must be one of {KINDS}, got {cfg.kind!r}")
    if cfg.base is None:
        raise ConfigError(f"config key 'base' in {where}: name the base curriculum YAML")
    if cfg.budget.match not in BUDGET_MODES:
        raise ConfigError(f"config key 'budget.match' in {where}: one of {BUDGET_MODES}, got {cfg.budget.match!r}")
    return cfg


def _draft(vname: Optional[str], vspec: dict[str, Any], base: Path, axes: list[Axis], combo: tuple,
           step_overrides: dict[str, Any], apply_to: Any) -> dict[str, Any]:
    """One point before loading: its name, label, curriculum, axis values and overrides."""
    parts = ([str(vname)] if vname else []) + [a.label(i) for a, i in zip(axes, combo)]
    pname = safe_name("_".join(parts) or "default")
    dotted: dict[str, Any] = {str(k): v for k, v in (vspec.get("overrides") or {}).items()}
    axis_values = {}
    for a, i in zip(axes, combo):
        dotted.update(a.assignment(i))
        axis_values[a.name] = a.values[i][0]
    steps_over = dict(step_overrides)
    for sname, sover in (vspec.get("steps") or {}).items():
        steps_over[sname] = OmegaConf.to_container(OmegaConf.merge(steps_over.get(sname, {}), sover))
    return dict(name=pname, label=str(vspec.get("label", pname)), base=base, axes=axis_values, dotted=dotted,
                steps_over=steps_over, apply_to=vspec.get("apply_to", apply_to),
                drop=[str(d) for d in vspec.get("drop_steps") or []])


def _draft_points(points: dict[str, Any], cfg: SweepFile, step_overrides: dict[str, Any], axes: list[Axis],
                  path: Path) -> list[dict[str, Any]]:
    """Every point (each variant of ``points`` x the grid), in order; names must differ."""
    where = str(path)
    combos = list(itertools.product(*[range(len(a.values)) for a in axes])) if axes else [()]
    base_default = resolve_path(str(cfg.base), path.parent)
    drafts = []
    for vname, vspec in list(points.items()) or [(None, {})]:
        vspec = dict(vspec or {})
        base = resolve_path(str(vspec["base"]), path.parent) if vspec.get("base") else base_default
        if vspec.get("overrides") is not None and not isinstance(vspec.get("overrides"), dict):
            raise ConfigError(f"config key 'points.{vname}.overrides' in {where}: a mapping {{dotted.key: value}}")
        drafts += [_draft(vname, vspec, base, axes, combo, step_overrides, cfg.apply_to) for combo in combos]
    names = [d["name"] for d in drafts]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: point names collide: {sorted(n for n in names if names.count(n) > 1)}")
    return drafts


@dataclass
class _Expansion:
    """What every point of a sweep shares when its steps are built."""

    where: str
    output_dir: Path
    prefix_dir: Path
    prefix_steps: list[str]
    train_overrides: list[str]
    seed: Optional[int] = None  # set: train.seed of every step

    def build(self, d: dict[str, Any], max_steps: dict[str, int], index: int) -> Point:
        """The point of draft ``d``: its curriculum loaded and validated (``max_steps``: budget-scaled steps)."""
        pwhere = f"sweep {self.where}, point '{d['name']}'"
        cur, targets = _curriculum_for_point(d["base"], d["drop"], self.train_overrides, d["steps_over"],
                                             d["apply_to"], self.prefix_steps, nested_overrides(d["dotted"]), max_steps, pwhere,
                                             self.seed)
        point_dir = self.output_dir / "points" / d["name"]
        steps = _load_point_steps(cur, point_dir, pwhere)
        shared = _share_prefix(steps, self.prefix_steps, self.prefix_dir, pwhere)
        _check_structure(steps, pwhere)
        return Point(index=index, name=d["name"], label=d["label"], base=str(d["base"]), axes=d["axes"],
                     overrides=d["dotted"], apply_to=list(targets), dropped=d["drop"], steps=steps, shared=shared,
                     output_dir=str(point_dir), seed=steps[0].train.seed if self.seed is None else self.seed)


def _match_budgets(points: list[Point], drafts: list[dict], budget: dict[str, Any], ex: _Expansion) -> list[Point]:
    """``budget.match``: total_samples rebuilds every point with its steps scaled to the reference's samples;
    every point records its budget."""
    before = {p.name: p.samples for p in points}
    if budget["match"] == "total_samples":
        ref_name = budget.get("reference") or (points[0].name if points else None)
        if ref_name not in before:
            raise ConfigError(f"config key 'budget.reference' in {ex.where}: no point {ref_name!r}")
        budget["reference"] = ref_name
        target = before[ref_name]
        scaled = []
        for d, p in zip(drafts, points):
            factor = target / before[p.name] if before[p.name] else 1.0
            if abs(factor - 1.0) > 1e-12:
                p = ex.build(d, _scaled_max_steps(p.own_steps, factor, target), len(scaled))
            scaled.append(p)
        points = scaled
    for p in points:
        factor = p.samples / before[p.name] if before[p.name] else 1.0
        p.budget = {"match": budget["match"], "reference": budget.get("reference"),
                    "samples_unscaled": before[p.name], "samples": p.samples, "factor": round(factor, 6),
                    "steps": {c.name: {"max_steps": c.train.max_steps, "global_batch": c.train.global_batch,
                                       "samples": step_samples(c)} for c in p.own_steps}}
    return points


def _check_shared_prefix(points: list[Point], prefix_steps: list[str], where: str) -> None:
    """Every point must resolve its shared prefix steps identically."""
    for p in points[1:]:
        for a, b in zip(points[0].steps[: len(prefix_steps)], p.steps[: len(prefix_steps)]):
            diff = config_differences(a, b)
            if diff:
                raise ConfigError(f"sweep {where}: point '{p.name}' changes the shared prefix step '{a.name}' "
                                  f"({'; '.join(diff[:4])}); move the change out of the prefix or share fewer steps")


MAX_SEED = 2**32 - 1  # the range Lightning's seed_everything accepts


def check_seeds(seeds: Any, what: str) -> list[int]:
    """A list of training seeds: non-empty, integers in [0, 2^32 - 1], each once; ConfigError naming `what`."""
    if not isinstance(seeds, (list, tuple)) or not seeds:
        raise ConfigError(f"{what}: a non-empty list of training seeds (integers), got {seeds!r}")
    out: list[int] = []
    for v in seeds:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{what}: training seeds are integers, got {v!r}")
        if not 0 <= v <= MAX_SEED:
            raise ConfigError(f"{what}: training seed {v} is outside 0..{MAX_SEED}")
        if v in out:
            raise ConfigError(f"{what}: training seed {v} is listed twice")
        out.append(int(v))
    return out


def parse_seeds(text: str, flag: str = "--seeds") -> list[int]:
    """``'0,1,2'`` -> ``[0, 1, 2]`` (the ``--seeds`` flag); a one-line ConfigError naming the flag otherwise."""
    parts = [t.strip() for t in str(text).split(",")]
    if not any(parts) or not all(parts):
        raise ConfigError(f"{flag} {text!r}: expected comma-separated training seeds, e.g. {flag} 0,1,2")
    values = []
    for t in parts:
        if not re.fullmatch(r"[0-9]+", t):
            raise ConfigError(f"{flag} {text!r}: {t!r} is not a non-negative integer (e.g. {flag} 0,1,2)")
        values.append(int(t))
    return check_seeds(values, f"{flag} {text!r}")


def _resolve_seeds(points: list[Point], file_seeds: Optional[list[int]], seeds: Optional[Sequence[int]],
                   where: str, command_line_keys: Sequence[str]) -> tuple[int, list[int]]:
    """(the default seed: the steps' own train.seed, the sweep's training seeds)."""
    own = sorted({c.train.seed for p in points for c in p.steps})
    default = points[0].steps[0].train.seed if points else 0
    if seeds is not None:
        chosen = check_seeds(list(seeds), "--seeds")
    elif file_seeds is not None:
        origin = " (set on the command line)" if "seeds" in command_line_keys else f" in {where}"
        chosen = check_seeds(list(file_seeds), f"config key 'seeds'{origin}")
    else:
        return default, [default]
    if len(own) > 1:
        raise ConfigError(f"sweep {where}: training seeds {chosen} given, but the steps set different train.seed "
                          f"values {own}; set one train.seed for every step (or give no seeds)")
    return default, chosen


def load_sweep(path: str | Path, overrides: Sequence[str] = (), seeds: Optional[Sequence[int]] = None) -> Sweep:
    """Parse and expand a sweep YAML; every point's steps are validated before any compute. `seeds` (the
    ``--seeds`` flag) replaces the file's ``seeds``; each seed's points are expanded and validated too."""
    path = Path(path)
    where = str(path)
    spec, cli_keys, train_over = _read_spec(path, overrides)
    data = _schema_data(spec, where)
    cfg = _check_spec(data, where, cli_keys)
    name = str(cfg.name if cfg.name is not None else path.stem)
    output_dir = Path(str(cfg.output_dir if cfg.output_dir is not None else f"runs/sweeps/{name}"))
    ex = _Expansion(where=where, output_dir=output_dir, prefix_dir=Path(str(cfg.prefix.dir or output_dir / "prefix")),
                    prefix_steps=[str(s) for s in cfg.prefix.steps], train_overrides=list(cfg.overrides) + train_over)
    step_overrides = dict(spec.get("steps") or {})
    budget = {"match": cfg.budget.match, **({"reference": cfg.budget.reference} if cfg.budget.reference else {})}
    axes = _parse_axes(spec.get("grid"), where)
    evals = _evals(cfg.eval, where)

    # pass 1: expand, load and validate every point (budgets before scaling)
    drafts = _draft_points(data["points"], cfg, step_overrides, axes, path)
    points = [ex.build(d, {}, i) for i, d in enumerate(drafts)]
    known_steps = {c.name for p in points for c in p.steps}
    for sname in step_overrides:
        if sname not in known_steps:
            raise ConfigError(f"config key 'steps.{sname}' in {where}: no point has a step named '{sname}'")
    points = _match_budgets(points, drafts, budget, ex)  # pass 2: budgets
    _check_shared_prefix(points, ex.prefix_steps, where)
    chosen = _resolve_chosen(spec.get("chosen"), axes, points, where)
    default_seed, seed_list = _resolve_seeds(points, cfg.seeds, seeds, where, cli_keys)
    seed_points = {s: points if s == default_seed else _seed_points(points, drafts, ex, s, where) for s in seed_list}
    return Sweep(name=name, kind=cfg.kind, path=str(path), output_dir=output_dir, prefix_dir=ex.prefix_dir,
                 prefix_steps=ex.prefix_steps, axes=axes, points=seed_points[seed_list[0]], chosen=chosen,
                 budget=budget, evals=evals, report=dict(spec.get("report") or {}),
                 description=str(spec.get("description", "")), train_overrides=ex.train_overrides, spec=spec,
                 seeds=seed_list, default_seed=default_seed, seed_points=seed_points)


def _seed_points(points: list[Point], drafts: list[dict], ex: _Expansion, seed: int, where: str) -> list[Point]:
    """The points of another training seed: the default seed's (budget-matched) steps with train.seed=<seed>, in
    ``seed-<seed>/`` folders below the sweep's output and prefix folders."""
    exs = dataclasses.replace(ex, output_dir=ex.output_dir / f"seed-{seed}", prefix_dir=ex.prefix_dir / f"seed-{seed}",
                              seed=seed)
    out = []
    for d, p in zip(drafts, points):
        q = exs.build(d, {c.name: c.train.max_steps for c in p.own_steps}, p.index)
        q.budget = copy.deepcopy(p.budget)
        out.append(q)
    _check_shared_prefix(out, exs.prefix_steps, f"{where} (training seed {seed})")
    return out
