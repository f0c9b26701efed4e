"""`cologen train CONFIG [key=value ...]` and `cologen curriculum CONFIG [key=value ...]`."""

from __future__ import annotations

import argparse
import logging


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


def _train(args: argparse.Namespace) -> int:
    from lit_cologen.training.config import load_step_config
    from lit_cologen.training.run import run_step

    _setup_logging()
    cfg = load_step_config(args.config, args.overrides)  # fails on a bad key before any compute
    final = run_step(cfg, enable_progress=not args.no_progress, extend=args.extend)
    print(f"step '{cfg.name}' finished: {final}")
    return 0


def _curriculum(args: argparse.Namespace) -> int:
    from lit_cologen.training.run import run_curriculum

    _setup_logging()
    finals = run_curriculum(args.config, args.overrides, enable_progress=not args.no_progress, only=args.only)
    for f in finals:
        print(f"finished: {f}")
    return 0


def add_train_cli(sub) -> None:
    p = sub.add_parser("train", help="run one training step from a step YAML (resumes if interrupted)")
    p.add_argument("config", help="step YAML (experiments/cologen/step*.yaml, experiments/presets/*.yaml, ...)")
    p.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. train.max_steps=100 optim.lr=3e-4")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
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
    c.set_defaults(func=_curriculum)
