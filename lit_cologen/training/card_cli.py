"""`cologen card RUN_DIR [--results PATH ...]`: (re)write the model card (README.md) of a finished step's final/.

The card (lit_cologen/training/model_card.py) holds the Hugging Face metadata (base_model, library_name, tags,
pipeline_tag, license), the step's config summary and the results.json files (written by `cologen bench score`)
found under the step's eval/ folder and in the given paths. Building this parser imports nothing heavy.
"""

from __future__ import annotations

import argparse

from lit_cologen.cliutil import lazy_command


def add_card_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "card", help="(re)write a training run's model card (final/README.md) with its evaluation results",
        description="Rewrite RUN_DIR's final/README.md: Hugging Face metadata, the training config summary and every "
                    "results.json under RUN_DIR/eval/ and in --results (protocol, eval-set size, metrics, backbone "
                    "hashes). Only README.md changes.")
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="a step's output folder, its final/ folder, or a curriculum folder (its last finished step)")
    p.add_argument("--results", nargs="+", default=[], metavar="PATH",
                   help="results.json files, or folders searched for them (e.g. a `cologen bench` output folder)")
    p.set_defaults(func=lazy_command("lit_cologen.training.model_card", "card_command"))
