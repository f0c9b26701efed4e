"""`cologen demo` (`make demo`): the whole suite on CPU with the tiny preset and the procedural Shapes-5 world.

1. writes Shapes-5 WebDataset shards (train split);
2. trains the five-step curriculum (after a base pre-training step, text-to-image + self-source, that stands in for
   FLUX.1's own pre-training) and the co-training baseline from the same base, with the same sample budget;
3. evaluates four models with the exact `shapes5` suite on the held-out split: untrained (random init), the base
   alone (no experts), staged (CoLoGen) and co-training; and the staged model on the real DreamBench prompts and
   reference images with *random-init* CLIP / DINO backbones (the path works; the numbers mean nothing);
4. writes `report.md` with the results tables (staged vs co-training, concept vs localization), routing plots and
   a sample grid per task, and prints where it is.

Everything is resumable: a finished step, generation or score is not redone. ``--seeds K`` trains both arms once per
training seed (``seed-<s>/`` folders) and reports across-seed intervals (``benchmarks/demo_seeds.py``);
``--device cuda`` runs the same study at the one-GPU size (``benchmarks/demo_profiles.py``).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from benchmarks.demo_profiles import PROFILES, DemoProfile, profile_for, seed_prefix
from benchmarks.demo_report import routing_plot, sample_grid, write_report
from benchmarks.demo_routing import inference_routing
from lit_cologen.errors import UserError

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIGS = REPO / "experiments" / "demo"
log = logging.getLogger("lit_cologen.demo")


def _dreambench_root() -> Optional[Path]:
    from lit_cologen.data.evalsets import default_dreambench_path

    path = default_dreambench_path()
    return path if path is not None and (path / "prompts_and_classes.txt").is_file() else None


def quiet_console() -> None:
    """Only the demo's own lines on the console: Lightning's INFO lines ("GPU available: ...", "`Trainer.fit`
    stopped: ...") are raised to WARNING for the demo's process, and the known harmless library warnings are
    silenced by the suite's own filter list (warnings and errors still show)."""
    from lit_cologen.training.trainer import quiet_known_library_warnings

    quiet_known_library_warnings()
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)


class DemoProgress:
    """One progress line for the whole demo: the stage, its step / image, the iterations of the whole run, the
    elapsed time and the ETA.

    On a terminal the line is redrawn in place (at most every 0.25 s); otherwise (a log file, a pipe, CI) it is
    printed as a plain line when a stage starts and every ``every_s`` seconds. Stages are planned up front
    (``add``) with a prior cost per unit (seconds on an idle 2-core CPU); the ETA scales the remaining prior cost
    by the measured ratio of elapsed time to the prior cost of the work done, so it adapts to a loaded machine.
    """

    def __init__(self, stream=None, every_s: float = 15.0, enabled: bool = True):
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every_s, self.enabled = float(every_s), enabled
        self.stages: dict[str, list] = {}  # key -> [label, units, unit_cost, done]
        self.t0 = time.perf_counter()
        self._last_draw = 0.0
        self._drawn = False
        self.current: Optional[str] = None
        self._busy_s = 0.0  # time spent inside started stages (the ETA's denominator)
        self._since: Optional[float] = None

    # --------------------------------------------------------------- plan
    def add(self, key: str, label: str, units: int, unit_cost: float) -> None:
        if key not in self.stages:
            self.stages[key] = [label, max(1, int(units)), float(unit_cost), 0]

    def skip(self, key: str) -> None:
        """A stage that needs no work (already finished in an earlier run): out of the plan and of the ETA."""
        self.stages.pop(key, None)

    # --------------------------------------------------------------- progress
    def start(self, key: str) -> None:
        self._stop_clock()
        self.current = key
        self._since = time.perf_counter()
        self._draw(force=True)

    def _stop_clock(self) -> None:
        if self._since is not None:
            self._busy_s += time.perf_counter() - self._since
            self._since = None

    def update(self, key: str, done: int) -> None:
        stage = self.stages.get(key)
        if stage is None:
            return
        stage[3] = min(stage[1], max(0, int(done)))
        self.current = key
        self._draw()

    def advance(self, key: str, n: int = 1) -> None:
        stage = self.stages.get(key)
        if stage is not None:
            self.update(key, stage[3] + n)

    def finish(self, key: str) -> None:
        stage = self.stages.get(key)
        if stage is not None:
            stage[3] = stage[1]
        self._stop_clock()

    def message(self, text: str) -> None:
        """A line of its own (section start / end), above the progress line."""
        if self.tty and self._drawn:
            self.stream.write("\r\033[K")
            self._drawn = False
        self.stream.write(text + "\n")
        self.stream.flush()
        if self.tty and self.current is not None:
            self._draw(force=True)

    def close(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    # --------------------------------------------------------------- numbers
    def eta_seconds(self) -> Optional[float]:
        done_cost = sum(s[3] * s[2] for s in self.stages.values())
        left_cost = sum((s[1] - s[3]) * s[2] for s in self.stages.values())
        busy = self._busy_s + (time.perf_counter() - self._since if self._since is not None else 0.0)
        if done_cost <= 0 or busy <= 0:
            return None
        return left_cost * busy / done_cost

    def line(self) -> str:
        from lit_cologen.training.callbacks import format_duration

        keys = list(self.stages)
        done = sum(s[3] for s in self.stages.values())
        total = sum(s[1] for s in self.stages.values())
        cost_done = sum(s[3] * s[2] for s in self.stages.values())
        cost_all = sum(s[1] * s[2] for s in self.stages.values()) or 1.0
        parts = ["[demo]"]
        if self.current in self.stages:
            label, units, _, d = self.stages[self.current]
            parts.append(f"{keys.index(self.current) + 1}/{len(keys)} {label} {d}/{units}")
        eta = self.eta_seconds()
        parts.append(f"| {done}/{total} it {100 * cost_done / cost_all:.0f}% | "
                     f"{format_duration(time.perf_counter() - self.t0)} elapsed | "
                     f"ETA {format_duration(eta) if eta is not None else '?'}")
        return " ".join(parts)

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.tty:
            if force or now - self._last_draw >= 0.25:
                self.stream.write("\r\033[K" + self.line())
                self.stream.flush()
                self._drawn, self._last_draw = True, now
        elif force or now - self._last_draw >= self.every_s:
            self.stream.write(self.line() + "\n")
            self.stream.flush()
            self._last_draw = now


def _train_callback(progress: DemoProgress, key: str):
    import lightning as L

    class _StepProgress(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            progress.update(key, trainer.global_step)

    return _StepProgress()


#: prior cost (seconds, idle 2-core CPU) of one training sample: without / with source tokens; of one image and
#: sampling step at evaluation. Only their ratios matter for the ETA (it rescales by the measured speed).
TRAIN_SAMPLE_COST = (0.008, 0.014)
EVAL_STEP_COST = 0.004


def plan_steps(path: Path, overrides: list[str], progress: Optional[DemoProgress], label: str,
               scale: float = 1.0) -> list:
    """The curriculum's step configs, each registered with ``progress`` as a stage ``label:name``."""
    from lit_cologen.training.run import selected_steps

    _, steps, selected = selected_steps(path, overrides, None, scale)
    cfgs = [steps[k] for k in selected]
    if progress is not None:
        for cfg in cfgs:
            cost = TRAIN_SAMPLE_COST[bool(cfg.train.use_source)] * cfg.train.global_batch
            progress.add(f"{label}:{cfg.name}", f"{label} {cfg.name} step", cfg.train.max_steps, cost)
    return cfgs


def run_steps(path: Path, overrides: list[str], progress: Optional[DemoProgress], label: str,
              scale: float = 1.0) -> list[Path]:
    """Run a curriculum's steps in order (a finished step is skipped, an interrupted one resumes), reporting to
    ``progress``; the per-step summaries go to the ``lit_cologen.demo`` logger (DEBUG), not the console."""
    from lit_cologen.training.run import run_step
    from lit_cologen.training.run_folder import DONE_FILE

    finals = []
    for cfg in plan_steps(path, overrides, progress, label, scale):
        key = f"{label}:{cfg.name}"
        if (Path(cfg.output_dir) / "final" / DONE_FILE).is_file() and progress is not None:
            progress.skip(key)
        elif progress is not None:
            progress.start(key)
        callbacks = [_train_callback(progress, key)] if progress is not None else []
        finals.append(run_step(cfg, extra_callbacks=callbacks, enable_progress=False, report=log.debug))
        if progress is not None:
            progress.finish(key)
    return finals


class Timer:
    def __init__(self, progress: Optional[DemoProgress] = None):
        self.sections: dict[str, float] = {}
        self.progress = progress

    def _say(self, text: str) -> None:
        if self.progress is not None:
            self.progress.message(text)
        else:
            print(text, flush=True)

    def __call__(self, name: str):
        timer = self

        class _Section:
            def __enter__(self):
                self.t0 = time.perf_counter()
                timer._say(f"[demo] {name} ...")

            def __exit__(self, *exc):
                timer.sections[name] = timer.sections.get(name, 0.0) + time.perf_counter() - self.t0
                timer._say(f"[demo] {name}: {timer.sections[name]:.0f} s")

        return _Section()


def build_shards(out: Path, n_per_task: int, resolution: int) -> Path:
    from lit_cologen.data.shards import write_shapes5_shards

    shards = out / "shards" / "train"
    if not (shards / "index.json").is_file():
        write_shapes5_shards(shards, n_per_task, split="train", resolution=resolution, seed=0, maxcount=500)
    return shards


def base_overrides(out: Path, shards: Path, profile: DemoProfile = PROFILES["cpu"]) -> list[str]:
    return [f"output_dir={out / 'runs' / 'base'}", f"data.train_shards=[{shards}]", *profile.overrides]


def run_dirs(out: Path, seed: int = 0) -> tuple[Path, Path]:
    """The staged and co-training run folders of a training seed (seed 0 at the top level, see seed_prefix)."""
    root = out / seed_prefix(seed) / "runs"
    return root / "staged", root / "cotraining"


def expert_overrides(out: Path, shards: Path, base: Path, seed: int = 0,
                     profile: DemoProfile = PROFILES["cpu"]) -> tuple[list[str], list[str]]:
    """Overrides of the staged curriculum and of co-training: their folders, the shards, the base weights, the
    training seed and the profile's size."""
    common = [f"data.train_shards=[{shards}]", f"model.pretrained_path={base}", f"train.seed={seed}",
              *profile.overrides]
    staged, co = run_dirs(out, seed)
    return [f"output_dir={staged}", *common], [f"output_dir={co}", *common]


def _seed_label(arm: str, seed: int) -> str:
    return arm if seed == 0 else f"{arm} seed {seed}"


def train(out: Path, shards: Path, scale: float, progress: Optional[DemoProgress], base: Path, seed: int = 0,
          profile: DemoProfile = PROFILES["cpu"]) -> tuple[Path, Path]:
    """The staged curriculum, then co-training, both from the base ``base``, for one training seed; ``scale``
    shrinks every step."""
    staged_over, co_over = expert_overrides(out, shards, base, seed, profile)
    run_steps(DEMO_CONFIGS / "curriculum.yaml", staged_over, progress, _seed_label("staged", seed), scale)
    run_steps(DEMO_CONFIGS / "cotraining.yaml", co_over, progress, _seed_label("co-training", seed), scale)
    return run_dirs(out, seed)


class _CountingGenerator:
    """A harness generator that reports every generated batch to a :class:`DemoProgress` stage."""

    def __init__(self, inner, progress: Optional[DemoProgress], key: str):
        self.__dict__.update(inner=inner, progress=progress, key=key)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __setattr__(self, name, value):
        setattr(self.inner, name, value)

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def generate(self, requests):
        images = self.inner.generate(requests)
        if self.progress is not None:
            self.progress.advance(self.key, len(requests))
        return images


def evaluate_shapes5(out: Path, models: dict[str, dict[str, Any]], per_task: int, resolution: int,
                     steps: int, progress: Optional[DemoProgress] = None, batch_size: int = 32,
                     key_suffix: str = "", tasks: Optional[Sequence[str]] = None) -> dict[str, dict]:
    """Generate + score the held-out Shapes-5 split for each model (in ``out/eval/<name>``); returns name ->
    results. ``models``: name -> keyword arguments of ``cologen_generator.make``; ``tasks``: a subset of the five
    (default all)."""
    from benchmarks.cologen_generator import make
    from benchmarks.harness import generate, score
    from benchmarks.metrics.backbones import Backbones
    from benchmarks.suites import shapes5

    results = {}
    for name, kwargs in models.items():
        run_dir = out / "eval" / name.replace(" ", "_")
        key = f"eval:{name}{key_suffix}"
        if not (run_dir / "results.json").is_file():
            if progress is not None:
                progress.start(key)
            subset = {"tasks": tuple(tasks)} if tasks is not None else {}
            requests = shapes5.build_requests(run_dir, per_task=per_task, split="eval", resolution=resolution, **subset)
            generate(run_dir, requests, _CountingGenerator(make(steps=steps, **kwargs), progress, key),
                     batch_size=batch_size, progress=False)
            score(run_dir, Backbones(), protocol="shapes5", progress=False)
            if progress is not None:
                progress.finish(key)
        elif progress is not None:
            progress.skip(key)
        results[name] = json.loads((run_dir / "results.json").read_text())
    return results


def evaluate_dreambench(out: Path, staged_dir: Path, resolution: int, steps: int, guidance: float = 1.0,
                        base: Optional[Path] = None, progress: Optional[DemoProgress] = None,
                        generator_args: Optional[dict[str, Any]] = None) -> Optional[dict]:
    """The real DreamBench prompts/images (one prompt per subject) through the staged model, scored with small
    random-init CLIP / DINO backbones loaded through the protocol's own loaders: the path runs on the real data;
    the numbers carry no meaning (real weights cannot be downloaded here)."""
    root = _dreambench_root()
    if root is None:
        return None
    from benchmarks.cologen_generator import make
    from benchmarks.harness import generate, score
    from benchmarks.metrics.backbones import Backbones
    from benchmarks.metrics.random_init import save_random_clip, save_random_dino
    from benchmarks.suites import dreambench

    weights = out / "eval" / "random-init-backbones"
    if not (weights / "ViT-B-32.pt").is_file():
        weights.mkdir(parents=True, exist_ok=True)
        save_random_clip(weights / "ViT-B-32.pt", preset="tiny")
        save_random_dino(weights / "dino-vits16", preset="tiny")
    run_dir = out / "eval" / "dreambench_staged"
    key = "eval:dreambench"
    if not (run_dir / "results.json").is_file():
        if progress is not None:
            progress.start(key)
        requests = dreambench.build_requests(root, subjects=None, prompts_per_subject=1, images_per_prompt=1,
                                             resolution=resolution)
        generator = make(run=str(staged_dir), base=str(base) if base else None, steps=steps, guidance=guidance,
                         **(generator_args or {}))
        generate(run_dir, requests, _CountingGenerator(generator, progress, key), batch_size=32, progress=False)
        score(run_dir, Backbones(weights_dir=weights), protocol="dreambench/omnigen", progress=False)
        if progress is not None:
            progress.finish(key)
    elif progress is not None:
        progress.skip(key)
    return json.loads((run_dir / "results.json").read_text())


def run_demo(out: str | Path = "outputs/demo", scale: Optional[float] = None, eval_per_task: int = 48,
             sample_steps: int = 8, shards_per_task: int = 2000, progress: bool = True, dreambench: bool = True,
             train_base: bool = False, guidance: float = 1.0, seeds: Optional[int] = None, device: str = "cpu",
             profile: Optional[DemoProfile] = None) -> Path:
    """The whole demo in ``out`` (resumable).

    Args:
        scale: fraction of the configs' training steps (default: the profile's).
        train_base: retrain the text-to-image base in ``out`` (scaled by ``scale``) instead of loading the committed
            one (experiments/demo/base, `python -m benchmarks.demo_base`); profiles without a committed base always
            train theirs.
        seeds: training seeds 0..K-1 (default: the profile's); each seed trains both arms from the one base.
        device: ``cpu`` (the default size) or ``cuda`` (the one-GPU study); ``profile`` overrides it.
    """
    from benchmarks.demo_base import BASE_CONFIG, COMMITTED_BASE

    prof = profile or profile_for(device)
    _check_device(prof)
    scale = prof.scale if scale is None else float(scale)
    seed_list = list(range(prof.seeds if seeds is None else int(seeds)))
    if not seed_list:
        raise UserError(f"cologen demo: --seeds must be >= 1, got {seeds}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    quiet_console()
    started = time.perf_counter()
    prog = DemoProgress(enabled=progress)
    timer = Timer(prog)
    resolution = prof.resolution
    n_shards = max(16, int(shards_per_task * min(1.0, scale * 4)))
    shards_dir = out / "shards" / "train"
    if (shards_dir / "index.json").is_file():
        prog.skip("shards")
    else:
        prog.add("shards", "shards", 1, 5 * n_shards * 0.0013)
    retrain = train_base or not prof.committed_base or not (COMMITTED_BASE / "transformer" / "config.json").is_file()
    if retrain:
        plan_steps(BASE_CONFIG, base_overrides(out, shards_dir, prof), prog, "base", scale)
    base = out / "runs" / "base" / "0_base" / "final" if retrain else COMMITTED_BASE
    for seed in seed_list:
        staged_over, co_over = expert_overrides(out, shards_dir, base, seed, prof)
        plan_steps(DEMO_CONFIGS / "curriculum.yaml", staged_over, prog, _seed_label("staged", seed), scale)
        plan_steps(DEMO_CONFIGS / "cotraining.yaml", co_over, prog, _seed_label("co-training", seed), scale)
    gen_args = {"preset": prof.preset, "device": prof.device, "guidance": guidance}
    models = {"untrained": {}, "base only": {"base": str(base)}}
    for seed in seed_list:
        staged_dir, co_dir = run_dirs(out, seed)
        arms = {"staged": {"run": str(staged_dir), "base": str(base)},
                "co-training": {"run": str(co_dir), "base": str(base)}}
        for name in (models | arms if seed == 0 else arms):
            prog.add(f"eval:{name}{_seed_key(seed)}", f"eval {_seed_label(name, seed)} image", 5 * eval_per_task,
                     sample_steps * EVAL_STEP_COST)
    if dreambench and _dreambench_root() is not None:
        prog.add("eval:dreambench", "dreambench image", 30, sample_steps * EVAL_STEP_COST)
    with timer("shards"):
        if "shards" in prog.stages:
            prog.start("shards")
        shards = build_shards(out, n_shards, resolution)
        prog.finish("shards")
    with timer("training (staged + co-training)"):
        if retrain:
            run_steps(BASE_CONFIG, base_overrides(out, shards, prof), prog, "base", scale)
        for seed in seed_list:
            train(out, shards, scale, prog, base, seed, prof)
    with timer("shapes5 evaluation"):
        results, per_seed = evaluate_seeds(out, seed_list, models, base, gen_args, eval_per_task, sample_steps,
                                           prog, prof)
    staged_dir = run_dirs(out, 0)[0]
    db = None
    if dreambench:
        with timer("dreambench (real data, random-init backbones)"):
            db = evaluate_dreambench(out, staged_dir, resolution, sample_steps, guidance, base, prog,
                                     {"preset": prof.preset, "device": prof.device})
    prog.current = None
    with timer("report"):
        routing = inference_routing(staged_dir, base, prof.preset, prof.device, resolution=resolution)
        plots = {"routing": routing_plot(staged_dir, out / "routing.png"),
                 "grid": sample_grid(out, list(results), eval_per_task, out / "samples.png")}
        settings = _settings(prof, scale, seed_list, retrain, eval_per_task, sample_steps, guidance)
        report = write_report(out, results, db, timer, plots, settings, wall=time.perf_counter() - started,
                              per_seed=per_seed, routing=routing)
    prog.close()
    print(f"[demo] report: {report} ({time.perf_counter() - started:.0f} s)", flush=True)
    return report


def evaluate_seeds(out: Path, seed_list: list[int], models: dict[str, dict], base: Path, gen_args: dict[str, Any],
                   eval_per_task: int, sample_steps: int, prog: Optional[DemoProgress],
                   prof: DemoProfile) -> tuple[dict[str, dict], dict[int, dict[str, dict]]]:
    """Evaluate ``models`` (seed-independent: untrained, base only) once and both arms of every training seed.
    Returns seed 0's results per model and every seed's metrics per model."""
    per_seed: dict[int, dict[str, dict]] = {}
    results: dict[str, dict] = {}
    for seed in seed_list:
        staged_dir, co_dir = run_dirs(out, seed)
        arms = {"staged": {"run": str(staged_dir), "base": str(base)},
                "co-training": {"run": str(co_dir), "base": str(base)}}
        todo = {**models, **arms} if seed == 0 else arms
        res = evaluate_shapes5(out / seed_prefix(seed), {n: {**kw, **gen_args} for n, kw in todo.items()},
                               eval_per_task, prof.resolution, sample_steps, prog, prof.eval_batch, _seed_key(seed))
        if seed == 0:
            results = res
        per_seed[seed] = {n: r["metrics"] for n, r in res.items()}
    return results, per_seed


def _settings(prof: DemoProfile, scale: float, seed_list: list[int], retrain: bool, eval_per_task: int,
              sample_steps: int, guidance: float) -> dict[str, Any]:
    from benchmarks.demo_base import BASE_CONFIG, COMMITTED_BASE

    return {"device profile": prof.name, "preset": prof.preset, "resolution": prof.resolution,
            "training scale": scale, "training seeds": seed_list,
            "base": f"trained here ({BASE_CONFIG.relative_to(REPO)}; one base shared by every seed)" if retrain
            else f"committed ({COMMITTED_BASE.relative_to(REPO)}, `python -m benchmarks.demo_base`)",
            "held-out samples per task": eval_per_task, "sampling steps": sample_steps,
            "embedded guidance at sampling": guidance,
            "torch threads": _torch_threads(),
            "configs": "experiments/demo/curriculum.yaml, experiments/demo/cotraining.yaml"
            + (f" + {' '.join(prof.overrides)}" if prof.overrides else "")}


def _seed_key(seed: int) -> str:
    return "" if seed == 0 else f":seed-{seed}"


def _check_device(profile: DemoProfile) -> None:
    """Refuse a CUDA profile on a machine without a visible GPU (never fall back to the CPU quietly)."""
    if profile.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("cologen demo --device cuda: no CUDA device is visible (torch.cuda.is_available() is "
                            "False); run it on a GPU machine, or use --device cpu")


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def add_demo_cli(sub) -> None:
    p = sub.add_parser("demo", help="the embedded default: train + evaluate on CPU (tiny preset, Shapes-5), write a report")
    p.add_argument("--out", default="outputs/demo", help="output folder: shards, runs, evaluations, report.md "
                                                           "(default outputs/demo; a rerun resumes there)")
    p.add_argument("--scale", type=float, default=None,
                   help="fraction of the training steps (default: 1.0 on cpu, 2.0 on cuda; CI uses ~0.01)")
    p.add_argument("--seeds", type=int, default=None,
                   help="training seeds 0..K-1, each arm trained once per seed, reported with 95 %% intervals across "
                        "seeds (default: 1 on cpu, 3 on cuda)")
    p.add_argument("--device", choices=sorted(PROFILES), default="cpu",
                   help="cpu: tiny preset, 32 px, the committed base (default); cuda: the one-GPU study (small "
                        "preset, 64 px, twice the steps, 3 seeds, its base trained in the run)")
    p.add_argument("--eval-per-task", type=int, default=48, help="held-out Shapes-5 samples evaluated per task (default 48)")
    p.add_argument("--sample-steps", type=int, default=8, help="Euler sampling steps of every evaluated image (default 8)")
    p.add_argument("--guidance", type=float, default=1.0,
                   help="embedded guidance at sampling (default 1.0: the value the demo trains with)")
    p.add_argument("--train-base", action="store_true",
                   help="retrain the text-to-image base here (scaled by --scale) instead of loading the committed "
                        "experiments/demo/base")
    p.add_argument("--no-dreambench", action="store_true",
                   help="skip the DreamBench run (real prompts and references, random-init CLIP / DINO)")
    p.add_argument("--no-progress", action="store_true", help="no progress line")
    p.set_defaults(func=lambda a: run_demo(a.out, a.scale, a.eval_per_task, a.sample_steps,
                                           progress=not a.no_progress, dreambench=not a.no_dreambench,
                                           train_base=a.train_base, guidance=a.guidance, seeds=a.seeds,
                                           device=a.device) and 0)
