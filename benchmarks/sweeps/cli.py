"""`cologen sweep CONFIG [...]` and `cologen report RUN_DIR [...]`.

    cologen sweep experiments/ablations/alpha_tiny.yaml --dry-run          # expand + validate, print the plan
    cologen sweep experiments/ablations/alpha_tiny.yaml                    # run every point (skip done, resume)
    cologen sweep experiments/ablations/alpha_tiny.yaml --only alpha-0.5   # some points
    cologen sweep experiments/ablations/alpha.yaml --print-commands        # one-per-GPU / SLURM array commands
    cologen sweep experiments/ablations/alpha.yaml --point-index $SLURM_ARRAY_TASK_ID
    cologen sweep experiments/ablations/alpha_tiny.yaml --collect          # only gather sweep_results.json
    cologen sweep experiments/ablations/alpha_tiny.yaml --seeds 0,1,2      # every point once per training seed
    cologen sweep experiments/ablations/alpha.yaml --seeds 0,1,2 --point-index 3 --seed-index 1   # one (point, seed)
    cologen sweep CONFIG output_dir=/tmp/x eval.per_task=4 train.max_steps=2 --dry-run   # flags before or after overrides
    cologen report runs/ablations/alpha-tiny                               # PNG + report.md
"""

from __future__ import annotations

import argparse
import logging
import sys

from lit_cologen.cliutil import intermixed


def _sweep(args: argparse.Namespace) -> int:
    from benchmarks.sweeps.grid import load_sweep, parse_seeds
    from benchmarks.sweeps.runner import collect, commands_text, plan_text, run_sweep, summary_text

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.only:  # `--only a b key=value`: argparse hands the override to --only
        args.overrides = list(args.overrides) + [o for o in args.only if "=" in o]
        args.only = [o for o in args.only if "=" not in o]
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    sweep = load_sweep(args.config, args.overrides, seeds=seeds)  # every point (every seed) validated before compute
    run_seeds = sweep.select_seeds(args.seed_index)
    if args.dry_run:
        print(plan_text(sweep))
        return 0
    if args.print_commands:
        print(commands_text(sweep, args.config, args.overrides))
        return 0
    if args.collect:
        data = collect(sweep)
    else:
        data = run_sweep(sweep, names=args.only, index=args.point_index, progress=not args.no_progress,
                         evaluate=not args.no_eval, prefix_only=args.prefix_only, fail_fast=args.fail_fast,
                         seed_index=args.seed_index)
    print(summary_text(data))
    selected = {p.name for p in sweep.select(args.only, args.point_index)} if not args.prefix_only else set()
    multi = len(sweep.seeds) > 1
    failed = [f"{p['name']} (seed {r['seed']})" if multi else p["name"] for p in data["points"] if p["name"] in selected
              for r in p.get("seeds") or [p] if r.get("seed") in run_seeds and r["status"] == "failed"]
    if failed:
        print(f"failed points: {failed} (see <point>/error.txt; rerun to retry)", file=sys.stderr)
        return 1
    return 0


def _report(args: argparse.Namespace) -> int:
    from benchmarks.sweeps.report import render_report

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    path = render_report(args.run_dir, out_dir=args.out, metrics=args.metric)
    print(f"report: {path}")
    return 0


def add_sweep_cli(sub) -> None:
    s = intermixed(sub.add_parser(
        "sweep", help="run an ablation sweep (grid of points over a shared prefix) + evaluate each point"))
    s.add_argument("config", help="sweep YAML (experiments/ablations/*.yaml)")
    s.add_argument("overrides", nargs="*",
                   help="KEY=VALUE, before or after the flags (after --only too): sweep keys (output_dir, prefix.dir, "
                        "eval.per_task, budget.match, ...) or training keys applied to every step of every point "
                        "(train.max_steps=2, data.val_samples=8, ...)")
    s.add_argument("--only", nargs="+", metavar="POINT", help="run only these points (names from --dry-run)")
    s.add_argument("--point-index", type=int, help="run only point number N (e.g. $SLURM_ARRAY_TASK_ID)")
    s.add_argument("--seeds", metavar="S,S,...",
                   help="training seeds, e.g. 0,1,2 (replaces the file's `seeds`; default: the steps' train.seed): "
                        "every point is trained (train.seed=S on every step, the shared prefix too) and evaluated "
                        "once per seed; the report gives 95 %% t-intervals across seeds")
    s.add_argument("--seed-index", type=int, metavar="J",
                   help="run only the J-th training seed (with --point-index: one (point, seed) run)")
    s.add_argument("--dry-run", action="store_true", help="expand and validate; print points, steps and budgets")
    s.add_argument("--print-commands", action="store_true", help="print per-point commands (one-per-GPU, SLURM array)")
    s.add_argument("--prefix-only", action="store_true", help="train the shared prefix steps and stop")
    s.add_argument("--collect", action="store_true", help="only gather the points' results into sweep_results.json")
    s.add_argument("--no-eval", action="store_true", help="train only")
    s.add_argument("--fail-fast", action="store_true", help="stop at the first failing point")
    s.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    s.set_defaults(func=_sweep)

    r = sub.add_parser("report", help="plots + markdown report of a sweep, a folder of sweeps, or a curriculum run")
    r.add_argument("run_dir", help="a sweep output folder (sweep_results.json), a folder of sweeps, or a curriculum folder")
    r.add_argument("--out", help="report folder (default RUN_DIR/report)")
    r.add_argument("--metric", action="append", help="metric(s) for the Figure-4 plots, e.g. edit/concept (repeatable)")
    r.set_defaults(func=_report)
