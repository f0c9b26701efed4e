"""The `cologen` command: one entry point for data, training, sampling, benchmarks and speed checks.

Each sub-command lives with the code it drives; this module only wires them into argparse. Building the parser
imports no heavy library (torch, lightning, diffusers, transformers, webdataset, PIL, numpy): the modules named in
_REGISTRY import those inside their command functions, so `--help` of every command stays fast
(tests/test_cli_help.py checks it).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from lit_cologen.cliutil import intermixed
from lit_cologen.errors import UserError

# (group, module, function that registers its sub-commands): group None puts them at the top level
# (`cologen train`), a name nests them (`cologen bench score ...`, `cologen data shapes5 ...`); entries naming the
# same group add to the same sub-parsers (`cologen data encode` comes from training, the rest of `data` from data)
_REGISTRY = (
    ("data", "lit_cologen.data.cli", "add_data_cli"),
    ("data", "lit_cologen.training.cli", "add_encode_cli"),
    (None, "lit_cologen.training.cli", "add_train_cli"),
    (None, "lit_cologen.training.card_cli", "add_card_cli"),
    (None, "lit_cologen.pipeline.cli", "add_sample_cli"),
    (None, "lit_cologen.app.cli", "add_app_cli"),
    (None, "benchmarks.demo", "add_demo_cli"),
    ("bench", "benchmarks.cli", "add_bench_cli"),
    (None, "benchmarks.sweeps.cli", "add_sweep_cli"),
    ("dev", "benchmarks.dev_cli", "add_dev_cli"),
)
_GROUP_HELP = {"data": "build and index WebDataset shards (Shapes-5, the paper's datasets)",
               "bench": "benchmarks: generate images, score a run folder, render the paper's tables",
               "dev": "developer tools: random-init weights in the published layouts, for dry runs"}


# sub-commands that own their whole argument list: `cologen speed ARGS` == `python -m benchmarks.speed ARGS`
# (module with a light `build_parser()`, module whose `main(argv)` runs it, help): the arguments are checked (and
# --help answered) before the heavy module is imported
_PASSTHROUGH = {"speed": ("benchmarks.speed_cli", "benchmarks.speed",
                          "training-step speed: CoLoGen vs a single-LoRA baseline")}

# commands whose flags may come before or after their KEY=VALUE overrides (`cologen train CONFIG --no-progress a=1`)
_INTERMIXED = ("train", "curriculum", "sweep")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cologen", description="lit-cologen: CoLoGen on FLUX.1 with Lightning",
        epilog="A user error (config key, path, dataset, weights) is printed as one line with exit status 2; "
               "add --debug anywhere on the command line for its traceback.")
    sub = parser.add_subparsers(dest="command", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}  # group name -> its sub-parsers, shared by its entries
    for group, module, fn in _REGISTRY:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:  # a real import error inside an existing module must surface
                raise
            continue
        target = sub
        if group is not None:
            if group not in groups:
                groups[group] = sub.add_parser(group, help=_GROUP_HELP[group]).add_subparsers(
                    dest=f"{group}_command", required=True)
            target = groups[group]
        getattr(mod, fn)(target)
    for name in _INTERMIXED:
        if name in sub.choices:
            intermixed(sub.choices[name])
    for name, (_parser, _module, help_text) in _PASSTHROUGH.items():
        sub.add_parser(name, help=f"{help_text} (see `cologen {name} --help`)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # nothing is downloaded, so the Hub's progress bars only draw "Loading weights" bars for local files
    # (transformers reads this switch); set HF_HUB_DISABLE_PROGRESS_BARS=0 to see them
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _PASSTHROUGH:
        parser_module, run_module, _help = _PASSTHROUGH[argv[0]]
        importlib.import_module(parser_module).build_parser().parse_args(argv[1:])  # --help / bad arguments exit here
        return int(importlib.import_module(run_module).main(argv[1:]) or 0)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except UserError as err:  # a config key, a path, a dataset layout, missing weights: one line, no traceback
        if debug:
            raise
        print(f"cologen: error: {err}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
