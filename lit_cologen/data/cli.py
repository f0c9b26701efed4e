"""`cologen data ...`: Shapes-5 shards, shard indexes, and the builders for the paper's datasets.

    cologen data shapes5 --out data/shards/shapes5 --n-per-task 1000 --resolution 64
    cologen data build magicbrush --root RAW/MagicBrush --out data/shards/edit --opt max_side=512
    cologen data index data/shards/edit

(`cologen data encode`, which needs the model's codec and text encoders, is registered in the same group by
the training package's CLI.) ``python -m lit_cologen.data.cli`` runs these commands without the `cologen` entry.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from lit_cologen.cliutil import lazy_command, lazy_type

# Building the parser imports nothing heavy (`cologen data build --help` stays fast): the commands import their
# modules when they run. The two lists below repeat names defined in those modules (tests/test_cli_help.py checks
# that they agree).
#: ``lit_cologen.data.builders.BUILDERS``, sorted
BUILDER_NAMES: tuple[str, ...] = ("ade20k-inpaint", "coco-inpaint", "edit-folder", "lvis", "magicbrush", "multigen",
                                  "omniedit", "refcoco", "refcoco+", "refcocog", "subject200k")
#: ``lit_cologen.data.schema.TASKS``
TASK_NAMES: tuple[str, ...] = ("inpaint", "ground", "control", "subject", "edit")


def _parse_option(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--opt expects KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        pass
    if value.startswith("[") and value.endswith("]"):  # [seg, depth]: a list of bare words
        import yaml

        try:
            return key, yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise argparse.ArgumentTypeError(f"--opt {key}: cannot read {value!r} as a list ({exc})") from None
    return key, value


class _BuildLog(logging.Handler):
    """Shows the builders' INFO lines (which split and files they read) and counts skipped rows by reason."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.skipped: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        reason = getattr(record, "skip_reason", None)
        if reason is not None:
            self.skipped[reason] = self.skipped.get(reason, 0) + 1
        elif record.levelno >= logging.INFO:
            print(f"cologen data build: {record.getMessage()}", file=sys.stderr)


def _cmd_build(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    from tqdm import tqdm

    from lit_cologen.data.builders import DataSourceError, build
    from lit_cologen.data.shards import ShardWriter, update_index

    options = dict(args.opt or [])
    out = Path(args.out)
    fresh = not out.exists()
    report = _BuildLog()
    logger = logging.getLogger("lit_cologen.data.builders")
    logger.addHandler(report)
    old_level, logger.propagate = logger.level, False
    logger.setLevel(logging.INFO)
    started, written = time.time(), 0
    print(f"cologen data build: {args.name} on {args.root}, options {options or '{}'}", file=sys.stderr)
    try:
        samples = build(args.name, args.root, **options)  # layout, split and option checks: before any output
        try:
            with ShardWriter(args.out, prefix=args.prefix or args.name, maxcount=args.maxcount) as writer:
                for sample in tqdm(samples, desc=f"build {args.name}", unit="sample"):
                    writer.write(sample)
                    written += 1
        except DataSourceError as err:  # a bad row: stopped here
            hint = "" if options.get("on_error") == "skip" else (
                " (to skip unreadable rows instead of stopping, add --opt on_error=skip)")
            raise DataSourceError(f"{err}{hint}") from None
        finally:
            if fresh and out.is_dir() and not any(out.iterdir()):
                shutil.rmtree(out)  # leave no empty output folder behind
    finally:
        logger.removeHandler(report)
        logger.setLevel(old_level)
        logger.propagate = True
    shards = dict(writer.shards)  # complete only after the writer closed its last shard
    update_index(args.out, shards, {args.prefix or args.name: {"builder": args.name, "root": str(args.root), "options": options}})
    skipped = sum(report.skipped.values())
    why = f" ({', '.join(f'{n} {k}' for k, n in sorted(report.skipped.items()))})" if skipped else ""
    print(f"{written} samples in {len(shards)} shard(s) -> {args.out} ({time.time() - started:.1f} s); "
          f"skipped {skipped} row(s){why}")
    return 0


def add_shard_cli(subparsers) -> None:
    """Register ``shapes5`` and ``index`` (their code: lit_cologen/data/shards.py); each sets ``func(args) -> int``."""
    p = subparsers.add_parser("shapes5", help="write Shapes-5 WebDataset shards (one task per shard) + index.json")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n-per-task", type=int, default=1000, help="samples per task (default 1000)")
    p.add_argument("--split", default="train", help="'train' or a held-out split name such as 'eval' (default train)")
    p.add_argument("--resolution", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the procedural generator (default 0)")
    p.add_argument("--tasks", default=",".join(TASK_NAMES), help="comma-separated tasks (default: all five)")
    p.add_argument("--maxcount", type=int, default=1000, help="samples per shard at most (default 1000)")
    p.add_argument("--maxsize", type=lazy_type("lit_cologen.data.shards", "_parse_size"), default=1 << 30,
                   help="bytes per shard at most, e.g. 500M (default 1G)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes, one task each (default 1)")
    p.add_argument("--start", type=int, default=0, help="first sample index (default 0)")
    p.set_defaults(func=lazy_command("lit_cologen.data.shards", "_cmd_shapes5"))
    q = subparsers.add_parser("index", help="rebuild index.json for a folder of shards (reads task.txt members only)")
    q.add_argument("dir", help="folder holding the *.tar shards")
    q.set_defaults(func=lazy_command("lit_cologen.data.shards", "_cmd_index"))


def add_data_cli(sub) -> None:
    """Register `shapes5`, `index` (shards.py) and `build` (the dataset builders); `encode` is registered in the
    same group by the training package's CLI (training code may use data code, not the other way round)."""
    add_shard_cli(sub)
    p = sub.add_parser("build", help="convert a local copy of one of the paper's datasets into shards")
    p.add_argument("name", choices=BUILDER_NAMES, help="builder (see data/BUILDERS.md)")
    p.add_argument("--root", required=True, help="the dataset's local folder (or file)")
    p.add_argument("--out", required=True, help="output folder for the shards + index.json")
    p.add_argument("--prefix", default=None, help="shard file prefix (default: the builder name)")
    p.add_argument("--maxcount", type=int, default=1000, help="samples per shard at most")
    p.add_argument("--opt", action="append", type=_parse_option, metavar="KEY=VALUE",
                   help="builder option (repeatable), e.g. max_side=512, on_error=skip, split=train, "
                        "allow_eval_split=true, cond_types=[seg,depth]. VALUE is read as JSON when it parses (numbers, "
                        "true / false, null, [lists]), else as a string; a list option given one bare value is a "
                        "one-element list (cond_types=seg). Each builder's options: data/BUILDERS.md")
    p.set_defaults(func=_cmd_build)


def main(argv: list[str] | None = None) -> int:
    """``python -m lit_cologen.data.cli shapes5 | index | build ...``: the data commands without the `cologen` entry."""
    parser = argparse.ArgumentParser(prog="python -m lit_cologen.data.cli", description="lit-cologen data tools")
    add_data_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
