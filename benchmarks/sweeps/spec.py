"""The records of a sweep and the schema of its file: axes, evaluation specs, points (one run each, per training
seed), the sweep itself, and the dataclasses a sweep YAML is checked against (through ``lit_cologen.config.load_config``,
the same code that checks a step file). Parsing and expansion of a file into these records: :mod:`benchmarks.sweeps.grid`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf

from lit_cologen.config import ConfigError
from lit_cologen.training.config import StepConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
KINDS = ("figure4", "table5", "grid")
BUDGET_MODES = ("none", "per_task", "total_samples")
DEFAULT_GENERATOR = "benchmarks.cologen_generator:make"


# ---------------------------------------------------------------------------------------------------- small helpers


def format_value(v: Any) -> str:
    """A value as it appears in a point name: 0.5 -> '0.5', 1e-4 -> '0.0001', 8 -> '8', True -> 'true'."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(float(v)) if abs(v) >= 1e-4 or v == 0 else f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "+".join(format_value(x) for x in v)
    return str(v)


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+\-]", "-", name)


def parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def resolve_path(path: str | Path, relative_to: Path) -> Path:
    """A config path as given (cwd), else next to the sweep file, else under the repository root."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    for root in (relative_to, REPO_ROOT):
        if (root / p).exists():
            return root / p
    return p


def nested_overrides(dotted: dict[str, Any]) -> DictConfig:
    """{'veteran.alpha': 0.5} -> DictConfig {veteran: {alpha: 0.5}} (values of any type, lists included)."""
    cfg = OmegaConf.create({})
    for key, value in dotted.items():
        OmegaConf.update(cfg, key, value, merge=True, force_add=True)
    return cfg


def step_samples(cfg: StepConfig) -> int:
    return int(cfg.train.max_steps) * int(cfg.train.global_batch)


# ---------------------------------------------------------------------------------------------------- data classes


@dataclass
class Axis:
    """One grid entry: `keys` set together; `values[i]` holds one value per key."""

    name: str
    keys: list[str]
    values: list[list[Any]]

    def label(self, i: int) -> str:
        return f"{self.name}-{format_value(self.values[i][0])}"

    def assignment(self, i: int) -> dict[str, Any]:
        return dict(zip(self.keys, self.values[i]))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "keys": list(self.keys), "values": [v[0] for v in self.values],
                "tied_values": self.values if len(self.keys) > 1 else None}


@dataclass
class EvalSpec:
    """One evaluation of every point through the benchmark harness (`cologen bench generate` + `score`)."""

    suite: str
    name: str = ""
    tasks: Optional[list[str]] = None  # shapes5: tasks to evaluate
    per_task: Optional[int] = None  # shapes5: samples per task
    resolution: Optional[int] = None
    args: list[str] = field(default_factory=list)  # more `cologen bench generate` arguments (e.g. --data PATH)
    generator: str = DEFAULT_GENERATOR
    # factory keyword arguments; "{preset}", "{base}", "{adapters}", "{point_dir}" are filled per point
    generator_args: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 8
    device: str = "cpu"
    score_args: list[str] = field(default_factory=list)  # `cologen bench score` arguments (--weights-dir ...)

    def __post_init__(self) -> None:
        self.name = safe_name(self.name or self.suite)

    def generate_command(self, out: str | Path) -> list[str]:
        """The equivalent ``cologen bench generate`` arguments, for the record (the eval marker, the plan): the
        evaluation itself calls :mod:`benchmarks.api` with :meth:`request_keywords`."""
        argv = ["generate", self.suite, "--out", str(out), "--batch-size", str(self.batch_size), "--no-progress",
                "--device", self.device]
        if self.per_task is not None:
            argv += ["--per-task", str(self.per_task)]
        if self.resolution is not None:
            argv += ["--resolution", str(self.resolution)]
        if self.tasks:
            argv += ["--tasks", ",".join(self.tasks)]
        return argv + [str(a) for a in self.args]

    def score_command(self, run_dir: str | Path) -> list[str]:
        """The equivalent ``cologen bench score`` arguments, for the record (see :meth:`generate_command`)."""
        return ["score", self.suite, str(run_dir), "--no-progress", "--device", self.device] + [str(a) for a in self.score_args]

    def request_keywords(self) -> dict[str, Any]:
        """:func:`benchmarks.api.build_requests` keywords: the fields, then the free-form ``args`` (which win, as
        later options do on a command line)."""
        from benchmarks.cli import generate_keywords

        kw: dict[str, Any] = {"device": self.device}
        if self.per_task is not None:
            kw["per_task"] = int(self.per_task)
        if self.resolution is not None:
            kw["resolution"] = int(self.resolution)
        if self.tasks:
            kw["tasks"] = ",".join(self.tasks)
        return {**kw, **generate_keywords(self.args)}

    def score_keywords(self) -> dict[str, Any]:
        """:func:`benchmarks.api.score_run` keywords: ``device``, then the free-form ``score_args``."""
        from benchmarks.cli import score_keywords

        return {"device": self.device, **score_keywords(self.score_args)}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **{f.name: getattr(self, f.name) for f in fields(self) if f.name != "name"}}


# ---------------------------------------------------------------------------------------------------- file schema


@dataclass
class PrefixSpec:
    """``prefix``: the first steps of the curriculum every point shares, and their folder."""

    steps: list[str] = field(default_factory=list)
    dir: Optional[str] = None  # default <output_dir>/prefix


@dataclass
class BudgetSpec:
    """``budget``: how the points' sample budgets are matched (see the module docstring)."""

    match: str = "none"  # none | per_task | total_samples
    reference: Optional[str] = None  # total_samples: the point whose budget every point gets (default: the first)


@dataclass
class PointSpec:
    """One entry of ``points`` (an explicit variant, crossed with the grid)."""

    label: Optional[str] = None
    base: Optional[str] = None  # another curriculum
    drop_steps: list[str] = field(default_factory=list)
    overrides: Any = None  # {dotted.key: value} applied to the point's `apply_to` steps
    steps: dict[str, Any] = field(default_factory=dict)  # per-step overrides of this point
    apply_to: Optional[list[str]] = None


@dataclass
class SweepFile:
    """The schema of a sweep YAML, checked by :func:`lit_cologen.config.load_config` (unknown keys, types) like
    every other config file; ``grid`` and ``chosen`` take several forms and are checked when parsed."""

    name: Optional[str] = None  # default: the file's stem
    kind: str = "grid"  # figure4 | table5 | grid
    description: str = ""
    base: Optional[str] = None  # the base curriculum YAML (required)
    output_dir: Optional[str] = None  # default runs/sweeps/<name>
    prefix: PrefixSpec = field(default_factory=PrefixSpec)
    overrides: list[str] = field(default_factory=list)  # training dotlist for every step of every point
    steps: dict[str, Any] = field(default_factory=dict)  # per-step overrides for every point
    apply_to: Optional[list[str]] = None
    grid: Any = None
    points: dict[str, Optional[PointSpec]] = field(default_factory=dict)
    chosen: Any = None
    budget: BudgetSpec = field(default_factory=BudgetSpec)
    eval: list[EvalSpec] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    seeds: Optional[list[int]] = None  # training seeds (default: [the steps' train.seed]); see the module docstring


#: schema class -> (what its keys are called in errors, the key prefix of a list item's key)
_SCHEMA_WORDS = {"SweepFile": ("sweep key", ""), "PrefixSpec": ("prefix key", ""), "BudgetSpec": ("budget key", ""),
                 "PointSpec": ("point key", ""), "EvalSpec": ("eval key", "eval.")}


def schema_message(text: str, where: str) -> str:
    """A load_config error about a sweep file, in the sweep's words: an unknown key is an "unknown sweep key (known:
    ...)" (or point / eval / ... key), and the message names the file unless the key came from the command line."""
    m = re.match(r"config key '([^']*)'(.*?): Key '([^']*)' not in '(\w+)'(.*)$", text, re.S)
    if m and m.group(4) in _SCHEMA_WORDS:
        key, origin, _name, cls, rest = m.groups()
        what, prefix = _SCHEMA_WORDS[cls]
        known = ", ".join(f.name for f in fields(globals()[cls]))
        key = key if key.startswith(prefix) else prefix + key
        text = f"config key '{key}'{origin}: unknown {what} (known: {known}){rest}"
    m = re.match(r"config key '([^']*)'(.*)$", text, re.S)
    if m and not m.group(2).startswith(" (set on the command line)"):
        return f"config key '{m.group(1)}' in {where}{m.group(2)}"
    return text if m else f"{where}: {text}"


@dataclass
class Point:
    """One run of a sweep: its name, the values it sets, and its resolved steps (prefix steps shared)."""

    index: int
    name: str
    label: str
    base: str  # the curriculum it expands
    axes: dict[str, Any]  # axis name -> value (the first tied key's)
    overrides: dict[str, Any]  # dotted key -> value, applied to `apply_to`
    apply_to: list[str]
    dropped: list[str]
    steps: list[StepConfig]
    shared: list[bool]  # per step: lives in the shared prefix folder
    output_dir: str
    budget: dict[str, Any] = field(default_factory=dict)
    seed: Optional[int] = None  # the training seed (train.seed of every step)

    @property
    def own_steps(self) -> list[StepConfig]:
        return [c for c, s in zip(self.steps, self.shared) if not s]

    @property
    def final(self) -> Path:
        """The last step's final/ folder (the model this point evaluates)."""
        return Path(self.steps[-1].output_dir) / "final"

    @property
    def samples(self) -> int:
        return sum(step_samples(c) for c in self.own_steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index, "name": self.name, "label": self.label, "base": self.base, "axes": self.axes,
            "overrides": self.overrides, "apply_to": self.apply_to, "dropped_steps": self.dropped,
            "output_dir": self.output_dir, "budget": self.budget, "seed": self.seed,
            "steps": [{"name": c.name, "output_dir": c.output_dir, "shared": s, "experts": c.model.prw.num_experts,
                       "max_steps": c.train.max_steps, "global_batch": c.train.global_batch,
                       "samples": step_samples(c), "init_from": c.init_from}
                      for c, s in zip(self.steps, self.shared)],
        }


@dataclass
class Sweep:
    name: str
    kind: str
    path: str
    output_dir: Path
    prefix_dir: Path
    prefix_steps: list[str]
    axes: list[Axis]
    points: list[Point]
    chosen: list[str]
    budget: dict[str, Any]
    evals: list[EvalSpec]
    report: dict[str, Any]
    description: str = ""
    train_overrides: list[str] = field(default_factory=list)
    spec: dict[str, Any] = field(default_factory=dict)  # the resolved YAML (after overrides)
    seeds: list[int] = field(default_factory=lambda: [0])  # training seeds; points = the first one's
    default_seed: int = 0  # the steps' own train.seed: its runs keep the folders of a sweep without seeds
    seed_points: dict[int, list[Point]] = field(default_factory=dict)  # seed -> its points (same names, order)

    def runs(self, seed: Optional[int] = None) -> list[Point]:
        """The points trained with `seed` (default: the first seed, i.e. ``points``)."""
        if seed is None or not self.seed_points:
            return list(self.points)
        if seed not in self.seed_points:
            raise KeyError(f"sweep '{self.name}': no training seed {seed} (seeds: {self.seeds})")
        return list(self.seed_points[seed])

    def run(self, name: str, seed: Optional[int] = None) -> Point:
        """Point `name` trained with `seed`."""
        for p in self.runs(seed):
            if p.name == name:
                return p
        raise KeyError(f"sweep '{self.name}': no point {name!r} (points: {[p.name for p in self.points]})")

    def seed_root(self, seed: int) -> tuple[Path, Path]:
        """(the points' root, the prefix folder) of `seed`: the sweep's own for the default seed, else a
        ``seed-<s>/`` level below each."""
        if seed == self.default_seed:
            return self.output_dir, self.prefix_dir
        return self.output_dir / f"seed-{seed}", self.prefix_dir / f"seed-{seed}"

    def select_seeds(self, index: Optional[int] = None) -> list[int]:
        if index is None:
            return list(self.seeds)
        if not 0 <= index < len(self.seeds):
            raise ConfigError(f"--seed-index {index}: the sweep has seeds {self.seeds} (indices 0..{len(self.seeds) - 1})")
        return [self.seeds[index]]

    def point(self, name: str) -> Point:
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(f"sweep '{self.name}': no point {name!r} (points: {[p.name for p in self.points]})")

    def select(self, names: Optional[Sequence[str]] = None, index: Optional[int] = None) -> list[Point]:
        if index is not None:
            if not 0 <= index < len(self.points):
                raise ConfigError(f"--point-index {index}: the sweep has points 0..{len(self.points) - 1}")
            return [self.points[index]]
        if names:
            return [self.point(n) for n in names]
        return list(self.points)

    def prefix_configs(self, seed: Optional[int] = None) -> list[StepConfig]:
        """The shared prefix steps of `seed` (default: the first seed), from its first point (all points agree,
        checked at load)."""
        points = self.runs(seed)
        return [c for c, s in zip(points[0].steps, points[0].shared) if s] if points else []

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "description": self.description, "config": self.path,
            "output_dir": str(self.output_dir), "prefix": {"steps": self.prefix_steps, "dir": str(self.prefix_dir)},
            "axes": [a.to_dict() for a in self.axes], "chosen": self.chosen, "budget": self.budget,
            "eval": [e.to_dict() for e in self.evals], "report": self.report, "train_overrides": self.train_overrides,
            "points": [p.to_dict() for p in self.points], "seeds": list(self.seeds), "default_seed": self.default_seed,
            "runs_by_seed": {str(s): {"points_root": str(self.seed_root(s)[0]), "prefix_dir": str(self.seed_root(s)[1]),
                                      "points": [p.to_dict() for p in self.runs(s)]} for s in self.seeds},
        }


