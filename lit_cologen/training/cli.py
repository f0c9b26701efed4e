"""`cologen train CONFIG [key=value ...]`, `cologen curriculum CONFIG [key=value ...]` and `cologen data encode`.

Both print a summary at the end of each step (``run.format_summary``). Ctrl-C (SIGINT) or SIGTERM saves
checkpoints/last.ckpt at the end of the current step and exits with 128 + the signal number (130, 143) after one
line saying that rerunning the same command resumes. ``cologen curriculum --dry-run`` prints the steps (iterations,
batch, samples, folder, status) and trains nothing; ``cologen curriculum --estimate`` prints their cost (GPU-hours,
wall-clock hours: lit_cologen/training/estimate.py) and trains nothing. ``cologen data encode``
(lit_cologen/training/encode.py) is registered in the ``data`` group of lit_cologen/cli.py by :func:`add_encode_cli`.

Building these parsers imports nothing heavy: the commands import their modules when they run.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from lit_cologen.cliutil import lazy_command, module_doc


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


def _report(text: str) -> None:
    print(text, flush=True)


def _interrupted(err) -> int:
    """One line on stderr for an interrupted step; the exit status 128 + signal."""
    print(f"cologen: {err}", file=sys.stderr, flush=True)
    return err.exit_code


def _train(args: argparse.Namespace) -> int:
    from lit_cologen.training.config import load_step_config
    from lit_cologen.training.interrupt import TrainingInterrupted
    from lit_cologen.training.run import run_step

    _setup_logging()
    cfg = load_step_config(args.config, args.overrides)  # fails on a bad key before any compute
    try:
        run_step(cfg, enable_progress=not args.no_progress, extend=args.extend, report=_report)
    except TrainingInterrupted as err:
        return _interrupted(err)
    except KeyboardInterrupt:  # before training started (model / data set-up): there is nothing to save
        print(f"cologen: step '{cfg.name}' interrupted (SIGINT) before training started: nothing new was saved; "
              f"rerun the same command to start (or resume) it", file=sys.stderr, flush=True)
        return 128 + signal.SIGINT
    return 0


def _curriculum(args: argparse.Namespace) -> int:
    from lit_cologen.training.interrupt import TrainingInterrupted
    from lit_cologen.training.run import plan_curriculum, run_curriculum
    from lit_cologen.training.summary import format_plan

    if args.only:  # `--only a b key=value`: argparse hands the override to --only (as `cologen sweep` does)
        args.overrides = list(args.overrides) + [o for o in args.only if "=" in o]
        args.only = [o for o in args.only if "=" not in o]
    _check_estimate_flags(args)
    if args.estimate:
        from lit_cologen.training.estimate import run_estimate

        return run_estimate(args)
    if args.dry_run:
        spec, rows = plan_curriculum(args.config, args.overrides, only=args.only)
        print(format_plan(spec, rows, args.config))
        return 0
    _setup_logging()
    try:
        run_curriculum(args.config, args.overrides, enable_progress=not args.no_progress, only=args.only,
                       report=_report)
    except TrainingInterrupted as err:
        return _interrupted(err)
    except KeyboardInterrupt:
        print("cologen: curriculum interrupted (SIGINT) outside training: nothing new was saved; rerun the same "
              "command to continue (finished steps are skipped)", file=sys.stderr, flush=True)
        return 128 + signal.SIGINT
    return 0


def _check_estimate_flags(args: argparse.Namespace) -> None:
    """--gpus / --step-ms / --measure / --measure-steps only with --estimate; --estimate not with --dry-run."""
    from lit_cologen.config import ConfigError

    given = [flag for flag, value in (("--gpus", args.gpus), ("--step-ms", args.step_ms), ("--measure", args.measure),
                                      ("--measure-steps", args.measure_steps)) if value not in (None, False)]
    if given and not args.estimate:
        raise ConfigError(f"{', '.join(given)}: only with --estimate (the cost of the curriculum up front)")
    if args.estimate and args.dry_run:
        raise ConfigError("--estimate and --dry-run: give one (--estimate prints the steps with their cost)")
    if args.measure_steps is not None and not args.measure:
        raise ConfigError("--measure-steps: only with --measure")


def add_train_cli(sub) -> None:
    p = sub.add_parser("train", help="run one training step from a step YAML (resumes if interrupted)")
    p.add_argument("config", help="step YAML (experiments/cologen/step*.yaml, experiments/presets/*.yaml, ...)")
    p.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. train.max_steps=100 optim.lr=3e-4")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar: one line every train.log_every steps instead (the default when stdout / "
                        "stderr is not a terminal)")
    p.add_argument("--extend", action="store_true",
                   help="train a finished or interrupted step further: only a larger train.max_steps may differ "
                        "from the folder's config.yaml (any other difference is refused)")
    p.set_defaults(func=_train)

    c = sub.add_parser("curriculum", help="run the steps of a curriculum YAML in order (skip finished, resume)")
    c.add_argument("config", help="curriculum YAML (experiments/cologen/curriculum*.yaml)")
    c.add_argument("overrides", nargs="*", help="dotlist overrides applied to every step (common)")
    c.add_argument("--only", nargs="*", help="run only these step names (an unknown name is an error)")
    c.add_argument("--no-progress", action="store_true",
                   help="no progress bar: one line every train.log_every steps instead (as for train)")
    c.add_argument("--dry-run", action="store_true",
                   help="print each step (iterations, global batch, accumulation, samples, output folder, status: "
                        "done / partial / todo / mismatching) and exit without training")
    c.add_argument("--estimate", action="store_true",
                   help="print each step's cost (iterations, global / per-device batch, accumulation, samples, step "
                        "time, GPU-hours, wall-clock hours) and the totals, and exit without training; needs "
                        "--step-ms or --measure")
    c.add_argument("--gpus", type=int, default=None,
                   help="with --estimate: GPUs to train on (default: each step's train.devices x train.num_nodes); "
                        "accumulation is recomputed as global batch / (data.batch_size x GPUs)")
    time_of = c.add_mutually_exclusive_group()
    time_of.add_argument("--step-ms", type=float, default=None,
                         help="with --estimate: ms of one micro-batch step (at data.batch_size) on one GPU, e.g. from "
                              "`python -m benchmarks.train_step`")
    time_of.add_argument("--measure", action="store_true",
                         help="with --estimate: time a few steps of each distinct step shape on this machine's device "
                              "(random base of the preset's shape, synthetic encoded batches) and use those")
    c.add_argument("--measure-steps", type=int, default=None, help="with --measure: timed steps per shape (default 3)")
    c.set_defaults(func=_curriculum)


def add_encode_cli(sub) -> None:
    """Register `cologen data encode` (its code: lit_cologen/training/encode.py) on the ``data`` group's sub-parsers."""
    p = sub.add_parser("encode", help="encode image shards into VAE-latent shards + a text-embedding cache",
                       description=module_doc("lit_cologen.training.encode"),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shards", nargs="+", help="input shard specs (folders, globs, brace patterns)")
    p.add_argument("--out", required=True, help="output folder (encoded shards, index.json, encoded.json, text_cache/)")
    p.add_argument("--preset", required=True, help="model preset whose codec / text encoders to use")
    p.add_argument("--pretrained", default=None, help="weights folder (FLUX presets; a trained tiny pipeline folder)")
    p.add_argument("--resolution", type=int, required=True, help="training resolution (data.resolution)")
    p.add_argument("--buckets", default=None, help="aspect-ratio buckets as data.buckets: 'auto' or HxW,HxW,... "
                   "(default: square --resolution); train with the same data.buckets")
    p.add_argument("--bucket-step", type=int, default=None,
                   help="bucket sides are multiples of this (data.bucket_step, default 16)")
    p.add_argument("--batch-size", type=int, default=16, help="images per codec / text-encoder batch (default 16)")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--dtype", default=None, choices=["bf16", "fp32"], help="default: bf16 for FLUX on cuda, else fp32")
    p.set_defaults(func=lazy_command("lit_cologen.training.encode", "_cmd_encode"))
